import multiprocessing as mp

import h5py
import numpy as np
import pytest

from landscape import store
from landscape.errors import LandscapeError


def _new(path):
    with store.writer_lock(path, "test"):
        store.create_run(path, attrs={"recipe": {"name": "x"}}, task_attrs={"info": {"a": 1}},
                         task_arrays={"ic": np.arange(3.0)}, layout={"names": ["w"]},
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
