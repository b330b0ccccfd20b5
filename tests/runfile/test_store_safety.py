"""A run file is data: hand-edited (hostile) indexes, planted symlinks and a full disk.

Each test does what an attacker (or an unlucky disk) would: it edits the index with h5py,
plants links beside the run, or limits the file size, then checks that the store refuses
in one line and that no file outside the run's folder is read, written or deleted.
"""

import os
import resource
import signal
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

from landscape.errors import LandscapeError
from landscape.runfile import store

BIG = np.full((1, 20_000), 3.0, np.float32)  # 80 kB: a file of its own in RUN.h5.d


def _run(path, part=True):
    """A tiny run with one trajectory segment and (``part``) a probe part in a file."""
    with store.writer_lock(path, "test"):
        store.create_run(path, attrs={"recipe": {"name": "x"}, "total_steps": 0},
                         task_attrs={"vocab_size": 4, "max_len": 4}, task_arrays={},
                         layout={"names": ["w"], "shapes": [[BIG.shape[1]]]},
                         probe_set={"ids": np.arange(2)})
        store.commit(path, lambda tx: (tx.append("trajectory/params", BIG),
                                       tx.append("trajectory/step", np.array([0]))))
        if part:
            store.commit(path, lambda tx: tx.put("probe/step_0/hessian/top",
                                                 {"vectors": BIG, "values": np.ones(2)}))
    return path


def _victim(tmp_path, name="victim.npy"):
    """A user's file outside the run's folder, which must survive everything."""
    v = tmp_path / "outside" / name
    v.parent.mkdir(exist_ok=True)
    np.save(v, np.arange(20_000, dtype=np.float32))
    return v


def _set_sidecar(path, group, name):
    with h5py.File(path, "r+") as f:
        f[group].attrs["sidecar"] = name


def _set_segment(path, name):
    with h5py.File(path, "r+") as f:
        f["trajectory/params/files"][0] = name.encode()


# --- names are names, not paths ----------------------------------------------------------


@pytest.mark.parametrize("how", ["absolute", "dotdot"])
def test_a_replaced_part_naming_an_outside_file_deletes_nothing(tmp_path, how):
    p = _run(tmp_path / "r.h5")
    victim = _victim(tmp_path)
    name = str(victim) if how == "absolute" else f"../outside/{victim.name}"
    _set_sidecar(p, "probe/step_0/hessian/top/vectors", name)  # a stale part, replaced:
    before = p.read_bytes()
    with pytest.raises(LandscapeError) as e, store.writer_lock(p, "probe"):
        store.commit(p, lambda tx: tx.put("probe/step_0/hessian/top", {"vectors": BIG}))
    assert victim.exists()
    assert "damaged" in str(e.value) and "\n" not in str(e.value)
    assert p.read_bytes() == before  # the refused commit changed nothing


def test_a_deleted_part_naming_an_outside_file_deletes_nothing(tmp_path):
    p = _run(tmp_path / "r.h5")
    victim = _victim(tmp_path)
    with store.writer_lock(p, "probe"):  # edited after the writer's clean-up checked it
        _set_sidecar(p, "probe/step_0/hessian/top/vectors", str(victim))
        before = p.read_bytes()
        with pytest.raises(LandscapeError, match="damaged"):
            store.commit(p, lambda tx: tx.delete("probe/step_0"))
    assert victim.exists() and p.read_bytes() == before


@pytest.mark.parametrize("how", ["absolute", "dotdot", "symlink", "folder"])
def test_a_segment_outside_the_folder_is_not_read(tmp_path, how):
    p = _run(tmp_path / "r.h5")
    victim = _victim(tmp_path)
    if how in ("symlink", "folder"):  # a plain name, but not a plain file of the folder
        link = store.sidecar_dir(p) / "trajectory.params-0123456789ab.npy"
        link.symlink_to(victim) if how == "symlink" else link.mkdir()  # (a FIFO: the same)
        name = link.name
    else:
        name = str(victim) if how == "absolute" else f"../outside/{victim.name}"
    _set_segment(p, name)
    with pytest.raises(LandscapeError, match=r"r\.h5.*damaged") as e:
        store.read_params(p, 0)
    assert "\n" not in str(e.value)


def test_a_sidecar_outside_the_folder_is_not_read(tmp_path):
    p = _run(tmp_path / "r.h5")
    _set_sidecar(p, "probe/step_0/hessian/top/vectors", str(_victim(tmp_path)))
    with pytest.raises(LandscapeError, match="damaged"):
        store.read_group(p, "probe/step_0/hessian/top")


@pytest.mark.parametrize("name", ["../payload.npy", "/tmp/payload.npy", "notes.txt", ""])
def test_copy_run_refuses_names_that_are_not_the_stores(tmp_path, name):
    (tmp_path / "src").mkdir()
    src = _run(tmp_path / "src" / "r.h5")
    (tmp_path / "src" / "payload.npy").write_bytes(b"from the source")  # ../ of its folder
    _set_segment(src, name)
    dst = tmp_path / "dst" / "r.h5"
    dst.parent.mkdir()
    with pytest.raises(LandscapeError, match="damaged"):
        store.copy_run(src, dst)
    assert sorted(os.listdir(tmp_path / "dst")) == []  # nothing written, not even a .tmp


def test_copy_run_keeps_a_destination_folder_that_is_not_a_runs(tmp_path):
    src = _run(tmp_path / "src.h5")
    dst = tmp_path / "dst.h5"
    folder = store.sidecar_dir(dst)
    folder.mkdir()
    (folder / "thesis.tex").write_text("years of work")
    with pytest.raises(LandscapeError, match="not"):
        store.copy_run(src, dst)
    assert (folder / "thesis.tex").read_text() == "years of work"
    assert not dst.exists()


def test_copy_run_replaces_a_runs_own_folder(tmp_path):
    src = _run(tmp_path / "src.h5")
    dst = store.copy_run(src, tmp_path / "dst.h5")
    store.copy_run(src, dst)  # again: the destination's own files replaced
    np.testing.assert_array_equal(store.read_params(dst, 0), BIG[0])
    assert len(list(store.sidecar_dir(dst).iterdir())) == 2


def test_copy_run_onto_itself_is_refused(tmp_path):
    p = _run(tmp_path / "r.h5")
    with pytest.raises(LandscapeError, match="itself"):
        store.copy_run(p, p)
    np.testing.assert_array_equal(store.read_params(p, 0), BIG[0])


def test_new_files_have_plain_names(tmp_path):
    p = _run(tmp_path / "r.h5", part=False)
    with store.writer_lock(p, "test"):
        store.commit(p, lambda tx: tx.put("probe_set", {"../../x y\u00e9": np.ones(20_000)}))
    names = os.listdir(store.sidecar_dir(p))
    assert all(store.is_store_name(n) for n in names), names
    assert all(set(n) <= set("abcdefghijklmnopqrstuvwxyz0123456789._-") for n in names)


# --- locks and clean-up touch only their own files ---------------------------------------


@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_a_lock_that_is_a_link_is_refused_and_its_target_kept(tmp_path, link):
    p = _run(tmp_path / "r.h5")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    lock = store.lock_path(p)
    lock.symlink_to(victim) if link == "symlink" else os.link(victim, lock)
    with pytest.raises(LandscapeError, match="lock") as e:
        with store.writer_lock(p, "probe"):
            pass
    assert "\n" not in str(e.value)
    assert victim.read_text() == "precious"
    assert store.writer_holding(p) is None  # nor does a reader follow it


def test_clean_up_keeps_files_that_are_not_the_stores(tmp_path):
    p = _run(tmp_path / "r.h5")
    folder = store.sidecar_dir(p)
    np.save(folder / "user_results.npy", np.ones(3))
    (folder / "subdir-0123456789ab.npy").mkdir()  # our pattern, but a folder
    orphan = folder / "trajectory.params-0123456789ab.npy"
    orphan.write_bytes(b"left by a killed commit")
    with store.writer_lock(p, "test"):
        pass
    assert (folder / "user_results.npy").exists()
    assert (folder / "subdir-0123456789ab.npy").is_dir()
    assert not orphan.exists()


def test_links_inside_the_folder_are_removed_not_followed(tmp_path):
    p = _run(tmp_path / "r.h5")
    victim = _victim(tmp_path)
    link = store.sidecar_dir(p) / "trajectory.params-0123456789ab.npy"
    link.symlink_to(victim)
    with store.writer_lock(p, "test"):
        pass
    assert not link.is_symlink() and victim.exists()


def test_a_symlinked_folder_is_never_cleaned(tmp_path):
    p = _run(tmp_path / "r.h5", part=False)
    other = tmp_path / "elsewhere"
    other.mkdir()
    mine = other / "trajectory.params-0123456789ab.npy"
    np.save(mine, np.ones(3))
    folder = store.sidecar_dir(p)
    for item in folder.iterdir():
        item.rename(other / item.name)
    folder.rmdir()
    folder.symlink_to(other)
    with pytest.raises(LandscapeError, match="link") as e:
        with store.writer_lock(p, "test"):
            pass
    assert "\n" not in str(e.value)
    assert mine.exists() and len(list(other.iterdir())) == 2


def test_a_new_run_refuses_a_folder_holding_other_files(tmp_path):
    p = tmp_path / "r.h5"
    folder = store.sidecar_dir(p)
    folder.mkdir()
    np.save(folder / "user_results.npy", np.ones(3))
    with pytest.raises(LandscapeError, match="r.h5.d") as e:
        _run(p)
    assert "\n" not in str(e.value)
    assert (folder / "user_results.npy").exists() and not p.exists()


def test_a_new_run_reuses_a_folder_of_orphans(tmp_path):
    """A writer killed while creating the run left files of its own: they go."""
    p = tmp_path / "r.h5"
    folder = store.sidecar_dir(p)
    folder.mkdir()
    (folder / "trajectory.params-0123456789ab.npy.tmp").write_bytes(b"half")
    _run(p)
    assert not (folder / "trajectory.params-0123456789ab.npy.tmp").exists()
    np.testing.assert_array_equal(store.read_params(p, 0), BIG[0])


# --- a full disk -------------------------------------------------------------------------


def test_a_full_disk_is_one_line_and_leaves_no_partial_file(tmp_path, monkeypatch):
    import shutil

    p = _run(tmp_path / "r.h5", part=False)
    before, files = p.read_bytes(), set(os.listdir(store.sidecar_dir(p)))
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(store.shutil, "disk_usage",
                        lambda _: usage._replace(free=50_000))
    with store.writer_lock(p, "test"), pytest.raises(LandscapeError) as e:
        store.commit(p, lambda tx: tx.append("trajectory/params", BIG))
    assert str(e.value).startswith("no space left on device writing r.h5.d/trajectory.params")
    assert "50,000 free" in str(e.value) or "50000 free" in str(e.value)
    assert p.read_bytes() == before
    assert set(os.listdir(store.sidecar_dir(p))) == files
    assert not store._tmp_path(p).exists()


def test_a_short_write_is_one_line_and_leaves_no_partial_file(tmp_path, monkeypatch):
    """What numpy raises when the disk fills mid-array (no errno): a short write."""
    p = _run(tmp_path / "r.h5", part=False)
    files = set(os.listdir(store.sidecar_dir(p)))

    def short(fh, arr, allow_pickle):
        fh.write(b"\x93NUMPY partial")
        raise OSError(f"{arr.nbytes} requested and 106368 written")

    monkeypatch.setattr(store.np.lib.format, "write_array", short)
    with store.writer_lock(p, "test"), pytest.raises(LandscapeError, match="no space left"):
        store.commit(p, lambda tx: tx.append("trajectory/params", BIG))
    assert set(os.listdir(store.sidecar_dir(p))) == files


_COMMIT = textwrap.dedent("""
    import sys
    import numpy as np
    from landscape.runfile import store
    from landscape.errors import LandscapeError
    p, what = sys.argv[1], sys.argv[2]
    try:
        with store.writer_lock(p, "test"):
            def change(tx):
                if what == "array":  # 80 kB: a file in the folder
                    tx.append("trajectory/params", np.ones((1, 20_000), np.float32))
                else:  # ten 56 kB arrays, each small enough to go into the index itself
                    tx.put("metrics", {f"m{i}": np.ones(7_000) for i in range(10)})
            store.commit(p, change)
    except LandscapeError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
""")


def _limited(blocks):
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (blocks * 1024, blocks * 1024))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    return apply


@pytest.mark.parametrize("what", ["index", "array"])
def test_a_file_size_limit_is_one_line_not_a_crash(tmp_path, what):
    """``ulimit -f`` with SIGXFSZ ignored: the HDF5 library crashed writing the index."""
    p = _run(tmp_path / "r.h5", part=False)
    before, files = p.read_bytes(), set(os.listdir(store.sidecar_dir(p)))
    blocks = p.stat().st_size // 1024 + 8  # a copy of the index fits, no more
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    r = subprocess.run([sys.executable, "-c", _COMMIT, str(p), what], env=env,
                       capture_output=True, text=True, timeout=60,
                       preexec_fn=_limited(blocks))
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "limit" in lines[0], r.stderr
    assert p.read_bytes() == before
    assert set(os.listdir(store.sidecar_dir(p))) == files
    assert not store._tmp_path(p).exists()
    with store.writer_lock(p, "test"):  # and the run goes on where it was
        store.commit(p, lambda tx: tx.append("trajectory/params", BIG * 2))
    np.testing.assert_array_equal(store.read_params(p, slice(None))[:, 0], [3, 6])


@pytest.mark.slow
def test_probe_under_a_file_size_limit_is_one_line_and_resumes(trained_runs, tmp_path):
    """The case that ended in an h5py traceback and a segmentation fault (rc 139)."""
    p = store.copy_run(trained_runs["single"], tmp_path / "r.h5")
    before = p.read_bytes()
    cmd = [sys.executable, "-m", "landscape", "probe", str(p), "--steps", "last",
           "--no-geometry", "--k", "2", "--k-bottom", "0", "--slq-runs", "1", "--slq-steps",
           "2", "--trace-hvps", "2", "--exact", "never"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120,
                       preexec_fn=_limited(p.stat().st_size // 1024 + 2))
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: the file-size limit")
    assert p.read_bytes() == before and not store._tmp_path(p).exists()
    assert not [n for n in os.listdir(store.sidecar_dir(p)) if n.endswith(".tmp")]
    assert subprocess.run(cmd, env=env, capture_output=True, timeout=120).returncode == 0
    assert store.read_summary(p)["probes"]


def test_a_large_index_is_changed_on_disk_after_a_room_check(tmp_path, monkeypatch):
    """An index too large to change in memory (format 1, hundreds of MiB): on the disk."""
    import shutil

    p = _run(tmp_path / "r.h5", part=False)
    monkeypatch.setattr(store, "_IN_MEMORY_MAX", 0)
    with store.writer_lock(p, "test"):
        store.commit(p, lambda tx: tx.append("trajectory/params", BIG * 2))
    np.testing.assert_array_equal(store.read_params(p, slice(None))[:, 0], [3, 6])
    before = p.read_bytes()
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(store.shutil, "disk_usage", lambda _: usage._replace(free=len(before)))
    with store.writer_lock(p, "test"), pytest.raises(LandscapeError) as e:
        store.commit(p, lambda tx: tx.set_attrs({"status": "complete"}))
    assert str(e.value).startswith("no space left on device writing r.h5 (needs ")
    assert p.read_bytes() == before and not store._tmp_path(p).exists()
