import multiprocessing as mp

import h5py
import numpy as np
import pytest

from landscape.errors import LandscapeError
from landscape.runfile import store


def _new(path, width=5):
    """A run skeleton whose rows are ``width`` parameters (the layout has to say so)."""
    with store.writer_lock(path, "test"):
        store.create_run(path, attrs={"recipe": {"name": "x"}, "total_steps": 0},
                         task_attrs={"info": {"a": 1}, "vocab_size": 4, "max_len": 4},
                         task_arrays={"ic": np.arange(3.0)},
                         layout={"names": ["w"], "shapes": [[width]]},
                         probe_set={"ids": np.arange(2)})
    return path


def test_create_and_read(tmp_path):
    p = _new(tmp_path / "r.h5")
    s = store.read_summary(p)
    assert s["attrs"]["recipe"] == {"name": "x"}
    assert s["task_attrs"]["info"] == {"a": 1}
    np.testing.assert_array_equal(s["task_arrays"]["ic"], np.arange(3.0))
    assert s["attrs"]["status"] == "training"
    with pytest.raises(LandscapeError, match="already exists"):
        _new(p)


def test_commit_appends_atomically(tmp_path):
    p = _new(tmp_path / "r.h5")
    with store.writer_lock(p, "test"):
        store.commit(p, lambda tx: tx.append("trajectory/params", np.ones((2, 5), np.float32)))
        store.commit(p, lambda tx: tx.append("trajectory/params", np.zeros((1, 5), np.float32)))
        before = p.read_bytes()

        def broken(tx):
            tx.append("trajectory/params", np.ones((1, 5), np.float32))
            raise RuntimeError("killed mid-change")

        with pytest.raises(RuntimeError):
            store.commit(p, broken)
    assert p.read_bytes() == before  # a failed change leaves the file byte-identical
    assert not store._tmp_path(p).exists()
    rows = store.read_params(p, slice(None))
    np.testing.assert_array_equal(rows, [[1] * 5, [1] * 5, [0] * 5])
    np.testing.assert_array_equal(store.read_params(p, np.array([2, 0])), [[0] * 5, [1] * 5])


def test_put_and_read_group(tmp_path):
    p = _new(tmp_path / "r.h5")
    with store.writer_lock(p, "test"):
        store.commit(p, lambda tx: tx.put("probe/step_5/hessian", {"eig": np.arange(3.0),
                                          "sub": {"x": np.ones(2)}}, {"k": 3, "d": {"a": 1}}))
        store.commit(p, lambda tx: tx.put("probe/step_5/hessian", {"eig": np.arange(4.0)}))
    g = store.read_group(p, store.probe_group(5, "hessian"))
    np.testing.assert_array_equal(g["eig"], np.arange(4.0))  # replaced
    assert g["attrs"] == {"k": 3, "d": {"a": 1}}
    assert store.read_summary(p)["probes"] == {5: ["hessian"]}
    assert store.read_group(p, "probe/step_6/hessian") is None


def test_check_run_file_errors(tmp_path):
    with pytest.raises(LandscapeError, match="does not exist"):
        store.check_run_file(tmp_path / "missing.h5")
    with pytest.raises(LandscapeError, match="directory"):
        store.check_run_file(tmp_path)
    txt = tmp_path / "notes.h5"
    txt.write_text("hello")
    with pytest.raises(LandscapeError, match="not an HDF5 file"):
        store.check_run_file(txt)
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = 1
    with pytest.raises(LandscapeError, match="not a landscape run file"):
        store.check_run_file(foreign)
    good = _new(tmp_path / "good.h5")
    data = good.read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(LandscapeError, match="truncated|corrupted|not an HDF5"):
        store.check_run_file(cut)


def _hold(path, ready, done):
    with store.writer_lock(path, "training"):
        ready.set()
        done.wait(10)


def test_writer_lock_excludes_other_processes(tmp_path):
    p = _new(tmp_path / "r.h5")
    ctx = mp.get_context("fork")
    ready, done = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold, args=(p, ready, done))
    proc.start()
    try:
        assert ready.wait(10)
        assert "training (pid" in store.writer_holding(p)
        with pytest.raises(LandscapeError, match="being written by training"):
            with store.writer_lock(p, "probe"):
                pass
    finally:
        done.set()
        proc.join(10)
    assert store.writer_holding(p) is None
    with store.writer_lock(p, "probe"):  # free again once the holder is gone
        pass


def test_killed_holder_releases_lock(tmp_path):
    p = _new(tmp_path / "r.h5")
    ctx = mp.get_context("fork")
    ready, done = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold, args=(p, ready, done))
    proc.start()
    assert ready.wait(10)
    proc.kill()
    proc.join(10)
    assert store.writer_holding(p) is None


# --- the sidecar folder: commits cost what they add -------------------------------------


def _big(n, value=1.0, width=40_000):
    return np.full((n, width), value, np.float32)


def test_large_arrays_live_beside_the_index(tmp_path):
    p = _new(tmp_path / "r.h5")
    with store.writer_lock(p, "test"):
        for i in range(3):
            store.commit(p, lambda tx, i=i: tx.append("trajectory/params", _big(1, i)))
        store.commit(p, lambda tx: tx.put("probe/step_0/hessian/top",
                                          {"vectors": _big(2, 7.0), "values": np.arange(2.0)}))
    index = p.stat().st_size
    folder = store.sidecar_dir(p)
    assert len(list(folder.glob("*.npy"))) == 4  # 3 segments and the eigenvectors
    assert index < 100_000  # 4 x 160 kB of arrays, none of it in the index
    rows = store.read_params(p, slice(None))
    np.testing.assert_array_equal(rows[:, 0], [0, 1, 2])
    np.testing.assert_array_equal(store.read_params(p, 1), _big(1, 1)[0])
    np.testing.assert_array_equal(store.read_params(p, np.array([2, 0]))[:, 0], [2, 0])
    g = store.read_group(p, "probe/step_0/hessian/top")
    np.testing.assert_array_equal(g["vectors"], _big(2, 7.0))
    np.testing.assert_array_equal(g["values"], np.arange(2.0))


def test_replaced_and_failed_parts_leave_no_files(tmp_path):
    p = _new(tmp_path / "r.h5")
    folder = store.sidecar_dir(p)
    with store.writer_lock(p, "test"):
        store.commit(p, lambda tx: tx.put("resume", {"state": np.zeros(100_000, np.uint8)}))
        first = {f.name for f in folder.iterdir()}
        store.commit(p, lambda tx: tx.put("resume", {"state": np.ones(100_000, np.uint8)}))
        second = {f.name for f in folder.iterdir()}
        assert len(first) == len(second) == 1 and first != second  # superseded: deleted

        def broken(tx):
            tx.append("trajectory/params", _big(1))
            raise RuntimeError("failed mid-change")

        with pytest.raises(RuntimeError):
            store.commit(p, broken)
        assert {f.name for f in folder.iterdir()} == second
        store.commit(p, lambda tx: tx.delete("resume"))
    assert not folder.exists() or not any(folder.iterdir())
    assert store.read_resume(p) is None


def test_orphans_of_a_killed_commit_are_collected_by_the_next_writer(tmp_path):
    p = _new(tmp_path / "r.h5")
    with store.writer_lock(p, "test"):
        store.commit(p, lambda tx: tx.append("trajectory/params", _big(1)))
    folder = store.sidecar_dir(p)
    kept = {f.name for f in folder.iterdir()}
    (folder / "trajectory.params-0123456789ab.npy").write_bytes(b"half")
    (folder / "trajectory.params-cafecafecafe.npy.tmp").write_bytes(b"half")
    (folder / "notes.txt").write_text("not ours")
    with store.writer_lock(p, "test"):
        pass
    assert {f.name for f in folder.iterdir()} == kept | {"notes.txt"}
    np.testing.assert_array_equal(store.read_params(p, 0), _big(1)[0])


def test_missing_folder_is_one_clear_error(tmp_path):
    p = _new(tmp_path / "r.h5", width=_big(1).shape[1])

    def change(tx):
        tx.append("trajectory/step", np.array([0]))
        tx.append("trajectory/params", _big(1))

    with store.writer_lock(p, "test"):
        store.commit(p, change)
    alone = tmp_path / "copied.h5"
    alone.write_bytes(p.read_bytes())  # the index without its folder
    assert store.read_summary(alone)["steps"].shape == (1,)  # what needs no array still reads
    with pytest.raises(LandscapeError, match=r"copied.h5.d.*missing.*copy or move both"):
        store.read_params(alone, 0)


def test_format_1_files_are_still_read_and_written(tmp_path):
    """A run file of the first layout (everything inside the HDF5 file)."""
    p = tmp_path / "old.h5"
    with h5py.File(p, "w") as f:
        f.attrs.update({"format": store.FORMAT, "format_version": 1, "status": "complete",
                        "recipe": '{"name": "x"}', "total_steps": 10})
        for g in ("task", "metrics", "probe_set"):
            f.create_group(g)
        f["task"].attrs.update({"vocab_size": 4, "max_len": 4})
        f["probe_set/inputs"] = np.arange(6).reshape(2, 3)
        t = f.create_group("trajectory")
        t.attrs["layout"] = '{"names": ["w"], "shapes": [[4]]}'
        t["step"] = np.array([0, 10])
        t.create_dataset("params", data=np.arange(8, dtype=np.float32).reshape(2, 4),
                         maxshape=(None, 4), chunks=(1, 4), compression="gzip")
    assert store.read_summary(p)["steps"].tolist() == [0, 10]
    np.testing.assert_array_equal(store.read_params(p, np.array([1, 0])),
                                  [[4, 5, 6, 7], [0, 1, 2, 3]])
    with store.writer_lock(p, "test"):
        store.commit(p, lambda tx: tx.append("trajectory/params",
                                             np.full((1, 4), 9, np.float32)))
        store.commit(p, lambda tx: tx.put("probe/step_0/hessian", {"v": _big(1)}))
    np.testing.assert_array_equal(store.read_params(p, 2), [9] * 4)
    np.testing.assert_array_equal(store.read_group(p, "probe/step_0/hessian")["v"], _big(1))


def _commit_forever(path, n_done):
    """Append checkpoints and replace a resume blob until killed."""
    with store.writer_lock(path, "test"):
        i = len(store.read_summary(path)["steps"])
        while True:
            def change(tx, i=i):
                tx.append("trajectory/step", np.array([i]))
                tx.append("trajectory/params", _big(1, i, width=20_000))
                tx.put("resume", {"state": np.full(80_000, i % 251, np.uint8)}, {"step": i})
            store.commit(path, change)
            n_done.value = i + 1
            i += 1


@pytest.mark.slow
def test_sigkill_during_commits_loses_nothing_committed(tmp_path):
    import random
    import time

    p = _new(tmp_path / "r.h5", width=20_000)
    ctx = mp.get_context("fork")
    rng = random.Random(7)
    for _ in range(8):
        n_done = ctx.Value("i", 0)
        before = len(store.read_summary(p)["steps"])
        proc = ctx.Process(target=_commit_forever, args=(p, n_done))
        proc.start()
        t_end = time.perf_counter() + rng.uniform(0.1, 1.0)
        while time.perf_counter() < t_end:  # a reader meanwhile: always consistent
            s = store.read_summary(p)
            n = len(s["steps"])
            if n:  # the first n rows are those of the steps read
                rows = store.read_params(p, np.arange(n))
                np.testing.assert_array_equal(rows[:, 0], s["steps"])
        proc.kill()
        proc.join(10)
        s = store.read_summary(p)
        n = len(s["steps"])
        assert n >= before  # nothing committed lost
        if n:  # (a writer killed before its first commit leaves none)
            rows = store.read_params(p, slice(None))
            assert rows.shape == (n, 20_000)
            np.testing.assert_array_equal(rows[:, 0], np.arange(n))  # each step once, in order
        np.testing.assert_array_equal(s["steps"], np.arange(n))
        if s["resume_step"] is not None:
            assert s["resume_step"] == n - 1
            assert store.read_resume(p)[1][0] == (n - 1) % 251
    with store.writer_lock(p, "test"):  # orphans of the kills collected
        pass
    folder = store.sidecar_dir(p)
    named = {f.name for f in folder.iterdir()} if folder.exists() else set()
    n = len(store.read_summary(p)["steps"])
    assert n > 0, "no commit before any kill: nothing was tested"
    assert len(named) == n + 1  # one segment per commit and the one resume blob


def test_the_index_grows_by_what_a_commit_adds_to_it(tmp_path):
    """Commits cost what they add: the index must not grow with the number of commits."""
    p = _new(tmp_path / "r.h5")
    sizes = []
    with store.writer_lock(p, "test"):
        for i in range(120):
            def change(tx, i=i):
                tx.append("trajectory/step", np.array([i]))
                tx.append("trajectory/params", np.full((1, 8), i, np.float32))
                tx.append("metrics/loss", np.array([0.5]))
                tx.put("resume", {"state": np.full(100_000, i % 251, np.uint8)}, {"step": i})
                tx.set_attrs({"status": "training"})
            store.commit(p, change)
            sizes.append(p.stat().st_size)
    per_commit = (sizes[-1] - sizes[19]) / 100
    assert per_commit < 1000, per_commit  # bytes of index per commit (was 3.7 kB)
    np.testing.assert_array_equal(store.read_params(p, slice(None))[:, 0], np.arange(120))


def test_a_full_disk_leaves_the_run_intact_and_no_tmp_copy(tmp_path, monkeypatch):
    import errno

    p = _new(tmp_path / "r.h5")
    before = p.read_bytes()
    real = store._write_new

    def fill(where, needs, write, shown, durable):  # the disk fills writing the index
        def half(fh):
            fh.write(b"x" * 100)
            raise OSError(errno.ENOSPC, "No space left on device", str(where))
        real(where, needs, half if where == store._tmp_path(p) else write, shown, durable)

    monkeypatch.setattr(store, "_write_new", fill)
    with store.writer_lock(p, "test"), pytest.raises(LandscapeError) as e:
        store.commit(p, lambda tx: tx.append("trajectory/params", _big(1)))
    assert str(e.value).startswith("no space left on device writing r.h5 (needs ")
    assert p.read_bytes() == before
    assert not store._tmp_path(p).exists()  # the space the user must free is free
    assert not any(store.sidecar_dir(p).iterdir())  # nor the new segment
