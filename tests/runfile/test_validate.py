"""Hand-edited run files, as an attacker or a broken disk would leave them (issue 18).

Each case edits a copy of one tiny run with h5py (or numpy for a ``.npy``) and checks that
``landscape info``, ``Run.open`` and ``landscape probe`` end in one line, ``RUN.h5 is
damaged: ...``, and exit status 2 (never a traceback, never a silent cast).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers import tiny_recipe

from landscape.cli import main
from landscape.errors import LandscapeError
from landscape.runfile import store
from landscape.runs.run import Run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One tiny run (3 checkpoints, a per-step window of steps 4..9, not complete so it can
    be resumed) for every case."""
    from landscape.train.trainer import train

    path = train(tiny_recipe(train={"epochs": 2, "window_steps": 6, "window_at": [4]}),
                 tmp_path_factory.mktemp("v") / "r.h5")
    with h5py.File(path, "a") as f:
        f.attrs["status"] = "training"
    return path


def _copy(src, tmp_path):
    dst = tmp_path / "bad.h5"
    shutil.copyfile(src, dst)
    shutil.copytree(store.sidecar_dir(src), store.sidecar_dir(dst))
    return dst


def _replace(f, name, data):
    del f[name]
    f[name] = data


def _segment(path, i=0):
    with h5py.File(path, "r") as f:
        name = f["trajectory/params/files"][i].decode()
    return store.sidecar_dir(path) / name


def _npy(path, arr):
    np.save(_segment(path), arr)


W = "windows/start_4"


def _window_npy(path, arr):
    with h5py.File(path, "r") as f:
        name = f[f"{W}/updates/files"][0].decode()
    np.save(store.sidecar_dir(path) / name, arr)


def _shift_event(f, event):
    f.create_dataset("events", data=np.array([json.dumps(event)], dtype=object),
                     dtype=h5py.string_dtype())


def _external_metric(f, path):
    outside = path.parent / "outside.bin"
    outside.write_bytes(np.arange(3.0).tobytes())
    del f["metrics/lr"]
    f.create_dataset("metrics/lr", shape=(3,), dtype="<f8", external=[(str(outside), 0, 24)])


def _external_link(f, path):
    other = path.parent / "other.h5"
    with h5py.File(other, "w") as g:
        g["x"] = np.arange(3.0)
    del f["metrics/lr"]
    f["metrics/lr"] = h5py.ExternalLink(str(other), "/x")


def _fewer_steps(f):
    for key in ("step", "loops", "adam_step"):
        _replace(f, f"trajectory/{key}", f[f"trajectory/{key}"][:2])


EDITS = {
    "format_version_text": lambda f, p: f.attrs.__setitem__("format_version", "abc"),
    "model_not_json": lambda f, p: (f.attrs.__delitem__("recipe"),
                                    f.attrs.__setitem__("model", "{not json")),
    "model_without_factory": lambda f, p: (f.attrs.__delitem__("recipe"),
                                           f.attrs.__setitem__("model", '{"kwargs": {}}')),
    "recipe_not_an_object": lambda f, p: f.attrs.__setitem__("recipe", "[1, 2]"),
    "recipe_bad_value": lambda f, p: f.attrs.__setitem__(
        "recipe", '{"model": {"d_model": "big"}}'),
    "metrics_text": lambda f, p: _replace(f, "metrics/step", np.array(["a", "b", "c"],
                                                                     dtype=object)),
    "metrics_2d": lambda f, p: _replace(f, "metrics/wall", np.ones((3, 2))),
    "steps_bytes": lambda f, p: _replace(f, "trajectory/step", np.array([b"0", b"8", b"16"])),
    "steps_float": lambda f, p: _replace(f, "trajectory/step", np.array([0.0, 8.5, 16.0])),
    "steps_decreasing": lambda f, p: _replace(f, "trajectory/step", np.array([0, 16, 8])),
    "fewer_steps_than_rows": lambda f, p: _fewer_steps(f),
    "loops_zero": lambda f, p: _replace(f, "trajectory/loops", np.zeros(3, np.int64)),
    "rows_negative": lambda f, p: f["trajectory/params/rows"].__setitem__(0, -5),
    "segment_dtype_object": lambda f, p: f["trajectory/params"].attrs.__setitem__("dtype", "O"),
    "segment_shape_negative": lambda f, p: f["trajectory/params"].attrs.__setitem__(
        "shape", "[-1]"),
    "segment_npy_wrong_shape": lambda f, p: _npy(p, np.zeros((1, 7), np.float32)),
    "segment_npy_complex": lambda f, p: _npy(p, np.zeros((1, 576), np.complex64)),
    "segment_npy_float64": lambda f, p: _npy(p, np.zeros((1, 576), np.float64)),
    "layout_wrong_width": lambda f, p: f["trajectory"].attrs.__setitem__(
        "layout", '{"names": ["w"], "shapes": [[5]]}'),
    "layout_not_json": lambda f, p: f["trajectory"].attrs.__setitem__("layout", "{"),
    "vocab_size_text": lambda f, p: f["task"].attrs.__setitem__("vocab_size", "abc"),
    "ceilings_text": lambda f, p: f["task"].attrs.__setitem__(
        "ceilings", '{"all": {"acc": "high", "loss": 0.1}}'),
    "events_not_json": lambda f, p: f.create_dataset(
        "events", data=np.array(["{oops"], dtype=object), dtype=h5py.string_dtype()),
    "shift_event_without_epoch": lambda f, p: _shift_event(f, {"kind": "shift", "step": 8}),
    "stop_event_step_text": lambda f, p: _shift_event(
        f, {"kind": "stop", "step": "late", "split": "iid", "acc": 0.96, "stop_acc": 0.95}),
    "probe_group_name": lambda f, p: f.create_group("probe/step_x/hessian"),
    "resume_step_text": lambda f, p: f["resume"].attrs.__setitem__("step", "late"),
    "task_array_complex": lambda f, p: _replace(f, "task/test_ic", np.ones(4, np.complex128)),
    "optimizers_not_from_row_0": lambda f, p: f.attrs.__setitem__(
        "optimizers", '[{"from": 1, "kind": "SGD"}]'),
    "optimizers_kind_not_text": lambda f, p: f.attrs.__setitem__(
        "optimizers", '[{"from": 0, "kind": 3}]'),
    "optimizers_momentum_text": lambda f, p: f.attrs.__setitem__(
        "optimizers", '[{"from": 0, "kind": "SGD", "momentum": "high"}]'),
    "window_updates_float64": lambda f, p: _window_npy(p, np.zeros((4, 576), np.float64)),
    "window_updates_wrong_width": lambda f, p: f[f"{W}/updates"].attrs.__setitem__(
        "shape", "[7]"),
    "window_steps_with_a_gap": lambda f, p: f[f"{W}/step"].__setitem__(1, 6),
    "window_loss_rows_missing": lambda f, p: _replace(f, f"{W}/loss", np.ones(2)),
    "window_lr_text": lambda f, p: _replace(f, f"{W}/lr", np.array(["a"] * 6, dtype=object)),
    "window_named_for_another_start": lambda f, p: f[W].attrs.__setitem__("start", 5),
    "window_planned_over_requested": lambda f, p: f[W].attrs.__setitem__("planned", 9),
    "window_without_loops": lambda f, p: f.__delitem__(f"{W}/loops"),
    "metric_stored_outside": _external_metric,
    "metric_linked_outside": _external_link,
}


@pytest.fixture(params=sorted(EDITS))
def damaged_run(request, tiny_run, tmp_path):
    path = _copy(tiny_run, tmp_path)
    with h5py.File(path, "a") as f:
        EDITS[request.param](f, path)
    return path


def _one_damaged_line(res):
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "is damaged" in lines[0], \
        res.output


def test_info_says_damaged(damaged_run):
    _one_damaged_line(CliRunner().invoke(main, ["info", str(damaged_run)]))


def test_run_open_says_damaged(damaged_run):
    with pytest.raises(LandscapeError, match="is damaged"):
        Run.open(damaged_run)


def test_probe_says_damaged(damaged_run):
    before = damaged_run.read_bytes()
    res = CliRunner().invoke(main, ["probe", str(damaged_run), "--steps", "last", "--k", "2",
                                    "--k-bottom", "1", "--slq-runs", "1", "--slq-steps", "4",
                                    "--trace-hvps", "4", "--no-geometry", "-q"])
    _one_damaged_line(res)
    assert damaged_run.read_bytes() == before


def test_the_untouched_run_is_not_damaged(tiny_run):
    assert len(Run.open(tiny_run).steps) == 3
    (window,) = Run.open(tiny_run).windows()
    assert window.steps.tolist() == list(range(4, 10)) and window.updates.shape == (6, 576)
    assert CliRunner().invoke(main, ["info", str(tiny_run)]).exit_code == 0


class _Payload:
    """Pickles to a call that would make a folder, if anything ever unpickled it."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def _torch_state_with_a_global():
    buf = io.BytesIO()
    torch.save({"model": os.getcwd}, buf)  # a function: weights_only refuses it
    return buf.getvalue()


@pytest.mark.parametrize("state", ["pickle", "zip_with_a_global", "zip_of_other_things"])
def test_a_resume_state_that_is_not_ours_is_refused(tiny_run, tmp_path, state):
    path = _copy(tiny_run, tmp_path)
    marker = tmp_path / "pwned"
    blob = {"pickle": lambda: pickle.dumps({"model": _Payload(marker)}),
            "zip_with_a_global": _torch_state_with_a_global,
            "zip_of_other_things": lambda: _torch_bytes({"model": 1})}[state]()
    with h5py.File(path, "a") as f:
        _replace(f, "resume/state", np.frombuffer(blob, np.uint8))
    res = CliRunner().invoke(main, ["train", "--resume", "--out", str(path)])
    _one_damaged_line(res)
    assert not marker.exists()


def _torch_bytes(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()
