"""Your own model: the Recorder, `landscape import`, trust, and bad input."""

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from own_model import VOCAB, D, build, build_kw, build_norm, data, masked_loss, train

import landscape
from landscape.cli import main
from landscape.errors import LandscapeError
from landscape.runfile import store
from landscape.runs.own_models import make_custom_loss_fn
from landscape.runs.run import Run

TESTS = Path(__file__).parents[1]


def _env(**extra):
    path = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", **extra}


@pytest.fixture(autouse=True)
def _importable(monkeypatch):
    """Subprocesses and the CLI import own_model by name, as a user's package would be."""
    monkeypatch.setenv("PYTHONPATH", _env()["PYTHONPATH"])


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _state(path):
    """Everything on disk that belongs to a run, by file."""
    files = [Path(path), *sorted(store.sidecar_dir(path).glob("*"))]
    return {f.name: f.read_bytes() for f in files if f.exists()}


# --- the recorder -------------------------------------------------------------------------


def test_recorder_writes_a_run_that_run_reads(tmp_path):
    path = tmp_path / "mine.h5"
    train(path, 4)
    run = Run.open(path, trust_code=True)
    assert run.custom and run.status == "complete" and run.arch == "custom"
    assert run.steps.tolist() == [0, 1, 2, 3, 4]
    assert set(run.metrics) == {"step", "wall", "lr", "loss"}
    assert np.isnan(run.metrics["loss"][0]) and np.isfinite(run.metrics["loss"][1:]).all()
    # the last checkpoint equals the same loop run here, and so does Adam's second moment
    model = build()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for step in range(1, 5):
        x, y = data(8, seed=1000 + step)
        loss = torch.nn.functional.cross_entropy(model(x).reshape(-1, VOCAB), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    for n, p in run.model(-1).named_parameters():
        torch.testing.assert_close(p, dict(model.named_parameters())[n], rtol=0, atol=0)
    v, n_steps = run.adam_state(-1)
    expect = torch.cat([opt.state[p]["exp_avg_sq"].reshape(-1) for p in model.parameters()])
    np.testing.assert_array_equal(v, expect.numpy())
    assert n_steps == 4 and run.adam_betas == (0.9, 0.999) and run.lr_at(-1) == 1e-2
    # its loss is the mean next-token loss on the stored probe set
    x, y = data(8, seed=99)
    direct = torch.nn.functional.cross_entropy(model(x).reshape(-1, VOCAB), y.reshape(-1))
    torch.testing.assert_close(run.loss_fn(step=-1)(run.params(-1)), direct)


def test_dict_batches_and_keyword_forwards(tmp_path):
    model = build_kw()
    x, _ = data(10)
    mask = torch.ones_like(x)
    mask[:3, 4:] = 0  # padded tails
    probe = {"input_ids": x, "attention_mask": mask}
    with landscape.Recorder(tmp_path / "kw.h5", model, probe=probe, loss="next_token",
                            factory="own_model:build_kw") as rec:
        rec.checkpoint(0)
    with landscape.Recorder(tmp_path / "custom.h5", model, probe=probe,
                            loss="own_model:masked_loss", factory="own_model:build_kw") as rec:
        rec.checkpoint(0)
    expect = masked_loss(model, probe)
    params = {n: p.detach() for n, p in model.named_parameters()}
    for name in ("kw.h5", "custom.h5"):
        run = Run.open(tmp_path / name, trust_code=True)
        assert run.probe_set().keys() == {"input_ids", "attention_mask"}
        got = run.loss_fn()(params)
        tol = 1e-6 if name == "kw.h5" else 0.03  # the custom loss is a per-chunk mean
        torch.testing.assert_close(got, expect, rtol=tol, atol=tol)
    # one chunk: the custom loss's own mean exactly
    fn = make_custom_loss_fn(model, "own_model:masked_loss", "dict",
                             {k: v.numpy() for k, v in probe.items()}, trust_code=True)
    torch.testing.assert_close(fn(params), expect)


def test_a_second_recorder_continues_and_refuses_another_model(tmp_path):
    path = tmp_path / "r.h5"
    train(path, 2)
    with pytest.raises(LandscapeError, match="recorded with model"):
        landscape.Recorder(path, build(d=4), probe=data(8, seed=99),
                           factory="own_model:build", factory_kwargs={"d": 4})
    with pytest.raises(LandscapeError, match="another probe set"):
        landscape.Recorder(path, build(), probe=data(8, seed=3), factory="own_model:build",
                           factory_kwargs={"d": D})
    rec = landscape.Recorder(path, build(), probe=data(8, seed=99), factory="own_model:build",
                             factory_kwargs={"d": D})
    assert rec.last_step == 2
    with pytest.raises(LandscapeError, match="being written"):
        landscape.Recorder(path, build(), probe=data(8, seed=99), factory="own_model:build",
                           factory_kwargs={"d": D})
    with pytest.raises(LandscapeError, match="not after the last recorded step 2"):
        rec.checkpoint(2)
    rec.checkpoint(7)
    rec.close()
    assert Run.open(path).steps.tolist() == [0, 1, 2, 7]


@pytest.mark.slow
def test_sigkill_mid_loop_then_continue_is_bit_identical(tmp_path):
    ref = tmp_path / "ref.h5"
    train(ref, 30, kind="norm")  # BatchNorm: the buffers must continue exactly too
    out = tmp_path / "cut.h5"
    rng = random.Random(5)
    kills, counts = 0, []
    for _ in range(12):
        proc = subprocess.Popen([sys.executable, str(TESTS / "own_model.py"), str(out), "30",
                                 "0.02", "norm"], env=_env(), stderr=subprocess.PIPE)
        try:
            _, err = proc.communicate(timeout=rng.uniform(0.5, 2.5))
            assert proc.returncode == 0, err.decode()
            break
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
            kills += 1
        if out.exists():  # always readable; never fewer checkpoints than before
            counts.append(len(Run.open(out).steps))
    else:
        assert subprocess.run([sys.executable, str(TESTS / "own_model.py"), str(out), "30",
                               "0", "norm"], env=_env()).returncode == 0
    assert kills >= 2 and counts == sorted(counts)
    a, b = Run.open(ref), Run.open(out)
    assert b.status == "complete" and b.steps.tolist() == list(range(31))
    np.testing.assert_array_equal(a.trajectory(), b.trajectory())
    np.testing.assert_array_equal(a.adam_state(-1)[0], b.adam_state(-1)[0])
    np.testing.assert_array_equal(a.metrics["loss"], b.metrics["loss"])
    assert a.stored_buffers == b.stored_buffers and "bn.running_var" in b.stored_buffers
    for step in (0, 15, 30):
        for n, t in a.buffers(step).items():
            torch.testing.assert_close(b.buffers(step)[n], t, rtol=0, atol=0)
    assert store.writer_holding(out) is None


# --- import -------------------------------------------------------------------------------


def _checkpoints(folder, steps, suffix=".pt"):
    folder.mkdir()
    model = build()
    saved = {}
    for s in steps:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01 * s)
        sd = {k: v.clone() for k, v in model.state_dict().items()}
        if suffix == ".pt":
            torch.save(sd, folder / f"ckpt_step{s}.pt")
        else:
            from safetensors.torch import save_file

            save_file(sd, str(folder / f"model-{s}.safetensors"))
        saved[s] = sd
    x, y = data(8)
    torch.save({"inputs": x, "targets": y}, folder.parent / "probe.pt")
    return saved


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_import_a_folder_of_state_dicts_by_step(tmp_path, suffix):
    if suffix == ".safetensors":
        pytest.importorskip("safetensors", reason="the hf extra (safetensors) is not installed")
    saved = _checkpoints(tmp_path / "ckpts", [10, 2, 100], suffix)
    out = tmp_path / "imp.h5"
    r = _cli("import", tmp_path / "ckpts", "--model", "own_model:build", "--kwargs",
             '{"d": 8}', "--probe", tmp_path / "probe.pt", "--out", out)
    assert r.exit_code == 0, r.output
    assert "imported 3 checkpoints" in r.output and "own_model:build(d=8)" in r.output
    run = Run.open(out, trust_code=True)
    assert run.steps.tolist() == [2, 10, 100] and run.attrs["source"] == "import"
    for s in (2, 100):
        for n, p in run.model(s).named_parameters():
            torch.testing.assert_close(p, saved[s][n], rtol=0, atol=0)
    # run again: nothing new to import, nothing changed
    before = _state(out)
    r = _cli("import", tmp_path / "ckpts", "--model", "own_model:build", "--kwargs",
             '{"d": 8}', "--probe", tmp_path / "probe.pt", "--out", out, "-q")
    assert r.exit_code == 0 and "imported 0 checkpoints" in r.output
    assert {k: v for k, v in _state(out).items() if k != "imp.h5"} == {
        k: v for k, v in before.items() if k != "imp.h5"}


# --- trust --------------------------------------------------------------------------------


def test_code_named_in_a_file_runs_only_with_trust(tmp_path, monkeypatch):
    marker = tmp_path / "MARKER"
    monkeypatch.setenv("LANDSCAPE_MARKER", str(marker))
    path = tmp_path / "theirs.h5"
    # someone else's file naming a factory whose module writes a marker when imported
    script = ("import sys, own_model, landscape; m = own_model.build(); "
              "r = landscape.Recorder(sys.argv[1], m, probe=own_model.data(4), "
              "factory='own_marker:build'); r.checkpoint(0); r.close()")
    subprocess.run([sys.executable, "-c", script, str(path)], env=_env(
        LANDSCAPE_MARKER=str(tmp_path / "writer_marker")), check=True)
    assert not marker.exists()
    run = Run.open(path)  # reading needs no code
    assert run.steps.tolist() == [0] and run.flat_params(0).shape == (run.layout.size,)
    with pytest.raises(LandscapeError, match="names code to run.*own_marker:build.*--trust-code"):
        run.model(0)
    with pytest.raises(LandscapeError, match="--trust-code"):
        run.loss_fn()
    for args in (["info", path], ["probe", path, "--steps", "last", "--no-geometry"]):
        r = _cli(*args)
        if args[0] == "info":
            assert r.exit_code == 0 and "own_marker:build" in r.output
        else:
            assert r.exit_code == 2, r.output
            assert r.output.count("\n") == 1 and "--trust-code" in r.output
    assert not marker.exists(), "code named in a file ran without trust"
    Run.open(path, trust_code=True).model(0)
    assert marker.exists()


# --- bad input ----------------------------------------------------------------------------


def test_bad_models_probe_sets_and_losses_are_one_line_errors(tmp_path):
    model, probe = build(), data(8)
    cases = [
        (dict(factory="no_such_module:build"), "cannot import factory no_such_module:build"),
        (dict(factory="own_model:nothing"), "own_model has no 'nothing'"),
        (dict(factory="own_model:not_a_module"), "returned dict, not a torch.nn.Module"),
        (dict(factory="own_model:build", factory_kwargs={"d": 4}), "parameters differ"),
        (dict(factory="own_model:build", probe=(probe[0], probe[1].float())),
         "'targets': need integer"),
        (dict(factory="own_model:build", probe=(probe[0], probe[1][:, :3])),
         "inputs \\[N, T, ...\\] and targets"),
        (dict(factory="own_model:build", probe=(probe[0][:4], probe[1])), "same number"),
        (dict(factory="own_model:build", loss="own_model:per_token_loss"), "not a scalar"),
        (dict(factory="own_model:build", loss="hinge"), "one of next_token"),
        (dict(), "give factory="),
    ]
    for kwargs, message in cases:
        kw = {"probe": probe, **kwargs}
        with pytest.raises(LandscapeError, match=message):
            landscape.Recorder(tmp_path / "bad.h5", model, **kw)
        assert not (tmp_path / "bad.h5").exists()
    # the same parameters, but a factory whose BatchNorm keeps no running statistics
    with pytest.raises(LandscapeError, match="buffers differ .*bn.running_mean"):
        landscape.Recorder(tmp_path / "bad.h5", build_norm(), probe=probe,
                           factory="own_model:build_norm", factory_kwargs={"track": False})
    assert not (tmp_path / "bad.h5").exists()


def test_bad_imports_leave_the_run_unharmed(tmp_path):
    _checkpoints(tmp_path / "ckpts", [1, 2])
    out = tmp_path / "imp.h5"
    args = ["--probe", tmp_path / "probe.pt", "--out", out]
    assert _cli("import", tmp_path / "ckpts", "--model", "own_model:build", *args).exit_code == 0
    before = _state(out)
    other = tmp_path / "other"
    other.mkdir()
    sd = build().state_dict()
    sd.pop("mix.bias")
    sd["extra.weight"] = torch.zeros(2)
    sd["head.weight"] = torch.zeros(3, 3)
    torch.save(sd, other / "step_5.pt")
    torch.save({"x": torch.zeros(1)}, tmp_path / "bad_probe.pt")
    nameless = tmp_path / "nameless"
    nameless.mkdir()
    torch.save(build().state_dict(), nameless / "final.pt")
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    torch.save({"obj": object()}, pickled / "step_9.pt")
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (["import", other, "--model", "own_model:build", *args],
         "missing: mix.bias; unexpected: extra.weight; mis-shaped (file vs model): "
         "head.weight (3, 3) vs (11, 8)"),
        (["import", nameless, "--model", "own_model:build", *args], "final.pt has no step"),
        (["import", pickled, "--model", "own_model:build", *args], "weights_only=True"),
        (["import", empty, "--model", "own_model:build", *args], "holds no .pt"),
        (["import", tmp_path / "ckpts", "--model", "own_model:nope", *args], "has no 'nope'"),
        (["import", tmp_path / "ckpts", "--model", "own_model:build", "--kwargs", "[1]",
          *args], "JSON object"),
        (["import", tmp_path / "ckpts", "--model", "own_model:build", "--probe",
          tmp_path / "bad_probe.pt", "--out", out], "needs 'input_ids'"),
    ]
    for argv, message in cases:
        r = _cli(*argv)
        assert r.exit_code == 2, (argv, r.output)
        assert r.output.startswith("error: ") and r.output.count("\n") == 1, r.output
        assert message in r.output, r.output
        assert _state(out) == before  # the run and its committed checkpoints unharmed
    assert Run.open(out).steps.tolist() == [1, 2]


def test_run_files_of_the_first_layout_still_open(trained_runs, tmp_path):
    """Format 1 runs (one HDF5 file) are read; tested by rewriting a run in that layout."""
    import h5py

    src = trained_runs["single"]
    old = tmp_path / "old.h5"
    store.copy_run(src, old)
    with h5py.File(old, "a") as f:
        f.attrs["format_version"] = 1
        for name in ("params", "adam_v"):
            rows = store.read_params(src, slice(None), name=name)
            del f[f"trajectory/{name}"]
            f[f"trajectory/{name}"] = rows
        for key in list(f["probe_set"]):
            f["probe_set"][key].attrs.pop("sidecar", None)
        for key, arr in store.read_probe_set(src).items():
            del f[f"probe_set/{key}"]
            f[f"probe_set/{key}"] = arr
    import shutil

    shutil.rmtree(store.sidecar_dir(old))
    a, b = Run.open(src), Run.open(old)
    np.testing.assert_array_equal(a.trajectory(), b.trajectory())
    torch.testing.assert_close(a.loss_fn()(a.params()), b.loss_fn()(b.params()))


# --- probing a model of your own ----------------------------------------------------------


def _dense_hessian(run, step):
    """Float64 Hessian of the recorded loss, from the model's own forward (not ours)."""
    from torch.func import functional_call

    model = build().double()
    x, y = (torch.as_tensor(a) for a in (run.probe_set()["inputs"], run.probe_set()["targets"]))
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    flat = torch.from_numpy(run.flat_params(step)).double()

    def loss(v):
        parts = torch.split(v, [int(np.prod(s)) for s in shapes])
        params = {n: t.reshape(s) for n, t, s in zip(names, parts, shapes)}
        logits = functional_call(model, params, (x,))
        return torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1))

    return torch.autograd.functional.hessian(loss, flat)


@pytest.mark.parametrize("source", ["recorder", "import"])
def test_probe_of_your_own_model_matches_the_dense_hessian(tmp_path, source):
    from landscape.probe import GeometrySettings, HessianSettings, ProbeSettings, probe

    path = tmp_path / "mine.h5"
    if source == "recorder":
        train(path, 3)
    else:
        _checkpoints(tmp_path / "ckpts", [0, 5, 9])
        x, y = data(8, seed=99)
        torch.save({"inputs": x, "targets": y}, tmp_path / "probe.pt")
        r = _cli("import", tmp_path / "ckpts", "--model", "own_model:build", "--probe",
                 tmp_path / "probe.pt", "--out", path, "-q")
        assert r.exit_code == 0, r.output
    settings = ProbeSettings(
        steps="spaced:2",
        hessian=HessianSettings(k_top=3, k_bottom=2, slq_runs=2, slq_steps=10, trace_hvps=10,
                                exact="always", dtype="float64"),
        geometry=GeometrySettings(grid=3, width_points=5, width_dirs=1))
    with pytest.raises(LandscapeError, match="--trust-code"):
        probe(path, settings)
    steps = probe(path, settings, trust_code=True)
    run = Run.open(path)  # stored results read without trust
    for step in steps:
        dense = torch.linalg.eigvalsh(_dense_hessian(run, step)).numpy()
        h = run.hessian(step)
        np.testing.assert_allclose(h["exact"].eigvals, dense, atol=1e-10)
        np.testing.assert_allclose(h["top"].values, dense[::-1][:3], rtol=1e-7)
        np.testing.assert_allclose(h["top"].bottom_values, dense[:2], rtol=1e-6, atol=1e-9)
        assert "valley" in run.geometry(step)
    sharp = run.hessian(steps[-1])["sharpness"]
    if source == "recorder":  # Adam's preconditioned sharpness from the recorded moments
        assert sharp.lr == 1e-2 and np.isfinite(sharp.adam_lambda_max)
    else:
        assert np.isnan(sharp.lr) and np.isnan(sharp.adam_lambda_max)


def _time_axes(figs):
    """The time-axis labels and checkpoint titles of the figures a model of your own gets."""
    spectra = figs["spectra"]["fig3_spectra"].axes
    return {
        "spectra": {ax.get_xlabel() for ax in spectra if ax.get_ylabel() == "entropy (nats)"},
        "spectra_titles": {ax.get_title().split()[0] for ax in spectra
                           if ax.get_xlabel() == "eigenvalue"},
        "valley": {ax.get_xlabel() for ax in figs["valley"]["valley_stats"].axes[:3]},
        "sharpness": {ax.get_xlabel() for ax in figs["sharpness"]["sharpness"].axes},
        "slices": {f.axes[0].get_title().split(", ")[-1].split()[0]
                   for k, f in figs["slices"].items() if "pca" not in k},
    }


def test_figures_of_a_recorded_run_count_steps_and_refuse_a_mix_with_epochs(tmp_path,
                                                                            trained_runs):
    from landscape.analysis import series
    from landscape.draw import figures
    from landscape.probe import GeometrySettings, HessianSettings, ProbeSettings, probe

    path = tmp_path / "mine.h5"
    train(path, 6, every=3)  # checkpoints at steps 0, 3, 6: no epochs
    probe(path, ProbeSettings(
        steps="spaced:3", geometry=GeometrySettings(grid=3, width_points=5, width_dirs=1),
        hessian=HessianSettings(k_top=3, k_bottom=2, slq_runs=2, slq_steps=10, trace_hvps=10,
                                exact="always", dtype="float64")), trust_code=True)
    run = Run.open(path, trust_code=True)
    assert series.time_unit(run) == "step"
    groups = series.group_runs([run])
    figs = {n: figures.FIGURES[n](groups) for n in ("spectra", "valley", "sharpness", "slices")}
    assert _time_axes(figs) == {"spectra": {"step"}, "spectra_titles": {"step"},
                                "valley": {"step"}, "sharpness": {"step"}, "slices": {"step"}}
    entropy_ax = next(ax for ax in figs["spectra"]["fig3_spectra"].axes
                      if ax.get_ylabel() == "entropy (nats)")
    entropy_line = entropy_ax.get_lines()[-1]
    np.testing.assert_array_equal(entropy_line.get_xdata(), [0, 3, 6])  # steps, as labelled

    trained = Run.open(trained_runs["single"])
    assert series.time_unit(trained) == "epoch"
    mixed = {"custom": {"mine": [run], "single": [trained]}}
    for name in ("spectra", "valley"):
        with pytest.raises(LandscapeError, match="epochs .* and in steps"):
            figures.FIGURES[name](mixed)
    assert series.shared_time_unit([run, run], "x") == "step"


# --- buffers (BatchNorm's running statistics) ---------------------------------------------


NORM_BUFFERS = ("scale", "bn.running_mean", "bn.running_var", "bn.num_batches_tracked")


def _exact(steps):
    from landscape.probe import HessianSettings, ProbeSettings

    return ProbeSettings(steps=steps, geometry=None, hessian=HessianSettings(
        k_top=2, k_bottom=1, slq_runs=2, slq_steps=10, trace_hvps=10, exact="always",
        dtype="float64"))


def _norm_dense(flat, buffers, probe):
    """Loss and float64 Hessian of NormLM in eval mode with ``buffers``, by its own forward."""
    from torch.func import functional_call

    model = build_norm().double().eval()
    with torch.no_grad():
        for n, b in model.named_buffers():
            if n in buffers:
                b.copy_(buffers[n])
    x, y = torch.as_tensor(probe["inputs"]), torch.as_tensor(probe["targets"])
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]

    def loss(v):
        parts = torch.split(v, [int(np.prod(s)) for s in shapes])
        params = {n: t.reshape(s) for n, t, s in zip(names, parts, shapes)}
        logits = functional_call(model, params, (x,))
        return torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1))

    v = torch.from_numpy(np.asarray(flat)).double()
    return loss(v), torch.autograd.functional.hessian(loss, v)


def _record_norm(path, steps):
    """NormLM trained in train mode and recorded at every step; its buffers at each step."""
    model = build_norm()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-2)
    before = {n: b.clone() for n, b in model.named_buffers()}
    seen = {}
    with landscape.Recorder(path, model, probe=data(8, seed=99),
                            factory="own_model:build_norm") as rec:
        for n, b in model.named_buffers():  # its check forward left them as they were
            torch.testing.assert_close(b, before[n], rtol=0, atol=0)
        for step in range(steps + 1):
            if step:
                x, y = data(8, seed=1000 + step)
                loss = torch.nn.functional.cross_entropy(model(x).reshape(-1, VOCAB),
                                                         y.reshape(-1))
                opt.zero_grad()
                loss.backward()
                opt.step()
            seen[step] = {n: b.detach().clone() for n, b in model.named_buffers()}
            rec.checkpoint(step, optimizer=opt)
    return seen


def _check_exact(run, step, buffers, initial):
    """The probe's spectrum at ``step`` is the dense one with ``buffers``, not with ``initial``."""
    loss, dense_h = _norm_dense(run.flat_params(step), buffers, run.probe_set())
    dense = torch.linalg.eigvalsh(dense_h).numpy()
    h = run.hessian(step)
    np.testing.assert_allclose(h["exact"].eigvals, dense, atol=1e-10)
    np.testing.assert_allclose(h["top"].values, dense[::-1][:2], rtol=1e-7)
    torch.testing.assert_close(run.loss_fn(step=step)(run.params(step, torch.float64)), loss,
                               rtol=1e-12, atol=0)
    _, other = _norm_dense(run.flat_params(step), initial, run.probe_set())
    gap = np.abs(torch.linalg.eigvalsh(other).numpy() - dense).max()
    assert gap > 0.05 * np.abs(dense).max(), gap  # other buffers: another Hessian


def test_buffers_are_stored_per_checkpoint_and_probed_at_their_checkpoint(tmp_path):
    from landscape.probe import probe

    path = tmp_path / "bn.h5"
    seen = _record_norm(path, 4)
    run = Run.open(path, trust_code=True)
    assert run.stored_buffers == NORM_BUFFERS  # "shift" is not persistent: not stored
    for step in range(5):
        got = run.buffers(step)
        assert tuple(got) == NORM_BUFFERS
        for n, t in got.items():
            assert t.dtype == seen[step][n].dtype
            torch.testing.assert_close(t, seen[step][n], rtol=0, atol=0)
    assert int(run.buffers(4)["bn.num_batches_tracked"]) == 4
    assert not torch.equal(seen[4]["bn.running_var"], seen[0]["bn.running_var"])
    rebuilt = dict(run.model(2).named_buffers())
    for n, t in seen[2].items():  # "shift" as the factory builds it, the others stored
        torch.testing.assert_close(rebuilt[n], t, rtol=0, atol=0)
    assert run.buffer_note() is None
    assert probe(path, _exact("2,4"), trust_code=True) == [2, 4]
    run = Run.open(path, trust_code=True)
    for step in (2, 4):
        _check_exact(run, step, seen[step], seen[0])
    r = _cli("info", path)
    assert r.exit_code == 0 and "buffers stored per checkpoint: 4" in r.output
    assert "note:" not in r.output


def _norm_checkpoints(folder, steps):
    """state_dicts of NormLM whose BatchNorm statistics differ at every step."""
    folder.mkdir()
    model = build_norm()
    g = torch.Generator().manual_seed(7)
    saved = {}
    for s in steps:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=g))
            model.bn.running_mean.copy_(0.3 * torch.randn(6, generator=g))
            model.bn.running_var.copy_(0.2 + torch.rand(6, generator=g))
            model.bn.num_batches_tracked.fill_(s)
        saved[s] = {k: v.clone() for k, v in model.state_dict().items()}
        torch.save(saved[s], folder / f"step_{s}.pt")
    x, y = data(8, seed=99)
    torch.save({"inputs": x, "targets": y}, folder.parent / "probe.pt")
    return saved


def test_import_stores_the_buffers_of_each_state_dict_and_names_a_missing_one(tmp_path):
    saved = _norm_checkpoints(tmp_path / "ckpts", [3, 8])
    out = tmp_path / "imp.h5"
    args = ["--model", "own_model:build_norm", "--probe", tmp_path / "probe.pt", "--out", out]
    r = _cli("import", tmp_path / "ckpts", *args, "-q")
    assert r.exit_code == 0, r.output
    run = Run.open(out, trust_code=True)
    assert run.stored_buffers == NORM_BUFFERS
    for s in (3, 8):
        for n, t in run.buffers(s).items():
            torch.testing.assert_close(t, saved[s][n], rtol=0, atol=0)
    r = _cli("probe", out, "--steps", "8", "--no-geometry", "--exact", "always", "--dtype",
             "float64", "--k", "2", "--k-bottom", "1", "--slq-runs", "2", "--slq-steps", "10",
             "--trace-hvps", "10", "--trust-code", "-q")
    assert r.exit_code == 0 and "note:" not in r.output, r.output
    initial = dict(build_norm().named_buffers())
    _check_exact(Run.open(out, trust_code=True), 8, saved[8], initial)
    # a state_dict without a buffer the module has: named, nothing recorded
    before = _state(out)
    other = tmp_path / "other"
    other.mkdir()
    sd = dict(saved[8])
    sd.pop("bn.running_var")
    torch.save(sd, other / "step_20.pt")
    r = _cli("import", other, *args)
    assert r.exit_code == 2 and r.output.count("\n") == 1, r.output
    assert r.output.startswith("error: ") and "missing: bn.running_var" in r.output
    assert _state(out) == before


def test_run_files_without_buffers_still_probe_with_the_factorys_and_say_so(tmp_path):
    import h5py

    path = tmp_path / "old.h5"
    seen = _record_norm(path, 3)
    with h5py.File(path, "a") as f:  # as written before buffers were stored
        del f["trajectory/buffers"]
    run = Run.open(path, trust_code=True)
    assert run.stored_buffers == () and run.buffers(2) is None
    for n, t in run.model(2).named_buffers():  # the factory's
        torch.testing.assert_close(t, seen[0][n], rtol=0, atol=0)
    note = run.buffer_note()
    assert "carry no buffers" in note and "bn.running_mean" in note
    r = _cli("info", path)  # no code run: the names come from the resume state
    assert r.exit_code == 0 and r.output.count("note:") == 1, r.output
    assert "bn.running_mean" in r.output
    r = _cli("probe", path, "--steps", "3", "--no-geometry", "--exact", "always", "--dtype",
             "float64", "--k", "2", "--k-bottom", "1", "--slq-runs", "2", "--slq-steps", "10",
             "--trace-hvps", "10", "--trust-code", "-q")
    assert r.exit_code == 0, r.output
    assert r.output.count("note:") == 1 and "bn.running_mean" in r.output
    # probed with the factory's buffers: the dense Hessian with the initial statistics
    loss, dense_h = _norm_dense(run.flat_params(3), seen[0], run.probe_set())
    np.testing.assert_allclose(Run.open(path).hessian(3)["exact"].eigvals,
                               torch.linalg.eigvalsh(dense_h).numpy(), atol=1e-10)
    # without a resume state and without trust nothing tells: the note says "if"
    bare = tmp_path / "bare.h5"
    store.copy_run(path, bare)
    with h5py.File(bare, "a") as f:
        del f["resume"]
    assert "if the model has buffers" in Run.open(bare).buffer_note()
    # continued by a Recorder: buffers from the next checkpoint on
    model = build_norm()
    with landscape.Recorder(path, model, probe=data(8, seed=99),
                            factory="own_model:build_norm") as rec:
        rec.restore(model)
        for n, t in model.named_buffers():  # from the resume state
            torch.testing.assert_close(t, seen[3][n], rtol=0, atol=0)
        with torch.no_grad():
            model.bn.running_mean.add_(1.0)
        rec.checkpoint(9)
    run = Run.open(path, trust_code=True)
    assert run.buffers(3) is None and run.stored_buffers == NORM_BUFFERS
    torch.testing.assert_close(run.buffers(9)["bn.running_mean"], model.bn.running_mean)
    assert "before step 9" in run.buffer_note()


def test_buffer_layout_keeps_every_dtype_exactly_and_leaves_out_what_it_should():
    from landscape.runs.own_models import BufferLayout

    class Many(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(2, 2)
            g = torch.Generator().manual_seed(0)
            for name, dtype in (("h", torch.float16), ("b", torch.bfloat16),
                                ("d", torch.float64), ("i", torch.int32), ("u", torch.uint8)):
                vals = torch.randn(3, 2, generator=g) * 100
                self.register_buffer(name, vals.to(dtype))
            self.register_buffer("mask", torch.ones(2, 2, dtype=torch.bool))  # bool: not kept
            self.register_buffer("cache", torch.zeros(2), persistent=False)   # not in state_dict
            self.inner = torch.nn.Module()
            self.inner.register_buffer("f", torch.arange(4.0))

    model = Many()
    layout = BufferLayout.of(model)
    assert layout.names == ("h", "b", "d", "i", "u", "inner.f")
    assert layout.rows == ("float16", "float32", "float64", "int32", "uint8")
    rows = layout.flatten(model)
    assert {k: v.shape for k, v in rows.items()} == {
        "float16": (6,), "float32": (6 + 4,), "float64": (6,), "int32": (6,), "uint8": (6,)}
    back = layout.unflatten(rows)
    have = dict(model.named_buffers())
    for n, t in back.items():
        assert t.dtype == have[n].dtype
        torch.testing.assert_close(t, have[n], rtol=0, atol=0)
    assert BufferLayout.from_json(layout.to_json()) == layout
    with pytest.raises(LandscapeError, match="not a buffer layout"):
        BufferLayout.from_json({"names": ["x"], "shapes": [[1]], "dtypes": ["bool"]})
    model.h = torch.zeros(4, dtype=torch.float16)  # another shape than recorded
    with pytest.raises(LandscapeError, match="buffers changed .*h"):
        layout.flatten(model)


def test_a_recorded_norm_model_gives_its_split_objective_and_fisher(tmp_path):
    from landscape.curvature.fisher import FisherOperator
    from landscape.curvature.spectral import dense_matrix

    path = tmp_path / "norm.h5"
    train(path, 2, kind="norm")
    run = Run.open(path, trust_code=True)
    params = run.params(-1, dtype=torch.float64)
    objective = run.split_objective()
    assert objective.n_examples == 8
    assert float(objective.loss(params)) == pytest.approx(float(run.loss_fn()(params)),
                                                          rel=1e-12)
    eig = np.linalg.eigvalsh(dense_matrix(FisherOperator(objective, params)).numpy())
    assert eig[-1] > 0 and eig[-1] * 1e-12 > -eig[0]
    assert np.sum(eig > 1e-12 * eig[-1]) <= 8  # rank at most the 8 sequences


# --- the optimiser's own stability edge -------------------------------------------------


def _sgd_run(path, steps_and_settings):
    """Record checkpoints with SGD whose momentum/Nesterov change as ``(step, kwargs)`` say."""
    model = build()
    rec = landscape.Recorder(path, model, probe=data(8, seed=99), loss="next_token",
                             factory="own_model:build")
    for step, kwargs in steps_and_settings:
        opt = None if kwargs is None else torch.optim.SGD(model.parameters(), lr=0.05, **kwargs)
        rec.checkpoint(step, optimizer=opt)
    rec.close()


def test_the_recorder_stores_the_optimiser_where_it_changes(tmp_path):
    from landscape.curvature.stability import OptimizerRecord

    path = tmp_path / "sgd.h5"
    heavy = {"momentum": 0.9}
    _sgd_run(path, [(0, heavy), (1, heavy), (2, {"momentum": 0.9, "nesterov": True}),
                    (3, None)])
    changes = store.read_summary(path)["attrs"]["optimizers"]
    assert [c["from"] for c in changes] == [0, 2, 3]  # one entry per change, not per step
    run = Run.open(path)
    assert [run.optimizer_at(s).label for s in range(4)] == [
        "SGD (heavy ball 0.9)", "SGD (heavy ball 0.9)", "SGD (Nesterov 0.9)",
        "unknown optimiser"]
    assert run.optimizer_at(0) == OptimizerRecord("SGD", momentum=0.9)


def test_sharpness_is_compared_with_the_edge_of_the_optimiser_that_was_used(tmp_path):
    from landscape.probe import HessianSettings, ProbeSettings, probe

    path = tmp_path / "sgd.h5"
    _sgd_run(path, [(0, {"momentum": 0.9}), (1, {"momentum": 0.9})])
    probe(path, ProbeSettings(steps="last", geometry=None, hessian=HessianSettings(
        k_top=1, k_bottom=0, slq_runs=1, slq_steps=4, trace_hvps=4, exact="never")),
        trust_code=True)
    sharp = Run.open(path).part("sharpness", 1)
    assert sharp.threshold == pytest.approx((2 + 2 * 0.9) / 0.05)  # heavy ball, not 2/lr
    assert (sharp.optimizer, sharp.edge_on, sharp.edge_unknown) == (
        "SGD (heavy ball 0.9)", "hessian", "")
    assert np.isnan(sharp.adam_lambda_max) and np.isnan(sharp.adam_threshold)


def test_a_recorded_run_without_its_optimiser_has_an_unknown_edge(tmp_path):
    from landscape.probe import HessianSettings, ProbeSettings, probe

    path = tmp_path / "none.h5"
    _sgd_run(path, [(0, None)])
    probe(path, ProbeSettings(steps="last", geometry=None, hessian=HessianSettings(
        k_top=1, k_bottom=0, slq_runs=1, slq_steps=4, trace_hvps=4, exact="never")),
        trust_code=True)
    sharp = Run.open(path).part("sharpness", 0)
    assert np.isnan(sharp.threshold) and sharp.edge_unknown == "optimiser not recorded"


# --- figures of what was measured ---------------------------------------------------------


@pytest.mark.slow
def test_plot_of_a_recorded_run_draws_its_blocks_and_nothing_of_the_paper(tmp_path):
    from landscape.analysis import series

    path = tmp_path / "mine.h5"
    train(path, 4, every=4)  # checkpoints 0, 4
    probed = _cli("probe", path, "--trust-code", "--steps", "all", "--no-geometry", "--k", 2,
                  "--k-bottom", 0, "--slq-runs", 1, "--slq-steps", 8, "--trace-hvps", 8,
                  "--exact", "never", "--blocks", "-q")
    assert probed.exit_code == 0, probed.output
    run = Run.open(path, trust_code=True)
    s = series.block_series(run)
    model_blocks = ["pos", "emb", "mix", "norm", "head"]  # as named_parameters() orders them
    assert list(s.blocks) == model_blocks and s.epoch.tolist() == [0, 4]
    for i, step in enumerate(run.probed_steps):
        stored = run.part("blocks", step).groups
        assert s.top[i].tolist() == [float(np.max(stored[b].values)) for b in model_blocks]
        assert s.trace[i].tolist() == [stored[b].trace for b in model_blocks]

    out = tmp_path / "figs"
    drawn = _cli("plot", path, "--out", out, "--format", "png")
    assert drawn.exit_code == 0, drawn.output
    written = sorted(p.stem for p in out.glob("*.png"))
    assert written == ["blocks_mine", "fig3_spectra", "sharpness"]  # what was measured
    assert "skipped" not in drawn.output and "concept" not in drawn.output

    # without blocks: the figure is neither drawn nor listed
    bare = tmp_path / "bare.h5"
    train(bare, 2, every=2)
    assert _cli("probe", bare, "--trust-code", "--steps", "last", "--no-geometry", "--k", 2,
                "--k-bottom", 0, "--slq-runs", 1, "--slq-steps", 8, "--trace-hvps", 8,
                "--exact", "never", "-q").exit_code == 0
    drawn = _cli("plot", bare, "--out", tmp_path / "bare_figs", "--format", "png")
    assert drawn.exit_code == 0, drawn.output
    assert "blocks" not in drawn.output and "concept" not in drawn.output
    assert not list((tmp_path / "bare_figs").glob("blocks*"))
    # asked by name, it says what to run
    named = _cli("plot", bare, "--figure", "blocks", "--out", tmp_path / "x")
    assert named.exit_code != 0 and "--blocks" in named.output


def _recorded_window(path, total, crash_at=None, every=4):
    """A user's loop recording a per-step window over steps 2..7 (checkpoints every 4)."""
    model = build()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    rec = landscape.Recorder(path, model, probe=data(8, seed=99), factory="own_model:build",
                             factory_kwargs={"d": D})
    start = 0
    if rec.last_step is None:
        rec.checkpoint(0, optimizer=opt)
        rec.open_window(2, 6)
    else:
        start = rec.restore(model, opt)
    for step in range(start, total):
        if step == crash_at:  # the loop dies here: what is not committed is lost
            rec.__exit__(KeyboardInterrupt, None, None)
            return rec
        x, y = data(8, seed=step)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        loss = torch.nn.functional.cross_entropy(model(x).reshape(-1, VOCAB), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if 2 <= step < 8:
            rec.window_step(step, {n: p.detach() - before[n]
                                   for n, p in model.named_parameters()},
                            loss.item(), opt.param_groups[0]["lr"])
        if (step + 1) % every == 0:
            rec.checkpoint(step + 1, optimizer=opt)
    rec.close()
    return rec


def test_the_recorder_records_a_window_and_continues_it(tmp_path):
    full = tmp_path / "full.h5"
    _recorded_window(full, 10)
    run = Run.open(full)
    (w,) = run.windows()
    assert w.steps.tolist() == list(range(2, 8)) and w.complete and not w.cut
    assert w.updates.shape == (6, run.layout.size) and (w.lr == 1e-2).all()
    # steps 4..7's updates carry checkpoint 4 to checkpoint 8
    moved = run.flat_params(4).astype(np.float64) + w.updates[2:].astype(np.float64).sum(0)
    np.testing.assert_allclose(moved, run.flat_params(8), rtol=0, atol=2e-6)
    # a loop that dies at step 6 keeps the rows its last checkpoint (4) committed: steps 2
    # and 3; continued from there it records the rest, the same as without the crash
    cut = tmp_path / "cut.h5"
    _recorded_window(cut, 10, crash_at=6)
    (part,) = Run.open(cut).windows()
    assert part.steps.tolist() == [2, 3] and not part.complete
    _recorded_window(cut, 10)
    (again,) = Run.open(cut).windows()
    for field in ("steps", "updates", "loss", "lr"):
        np.testing.assert_array_equal(getattr(again, field), getattr(w, field), err_msg=field)


def test_window_steps_out_of_order_are_refused(tmp_path):
    model = build()
    rec = landscape.Recorder(tmp_path / "w.h5", model, probe=data(8, seed=99),
                             factory="own_model:build", factory_kwargs={"d": D})
    zero = torch.zeros(rec.layout.size)
    with pytest.raises(LandscapeError, match="without an open window"):
        rec.window_step(0, zero, 1.0, 0.1)
    rec.open_window(3, 2)
    with pytest.raises(LandscapeError, match="expects step 3 next"):
        rec.window_step(4, zero, 1.0, 0.1)
    with pytest.raises(LandscapeError, match="must be .* finite numbers"):
        rec.window_step(3, torch.zeros(5), 1.0, 0.1)
    with pytest.raises(LandscapeError, match="is not finished"):
        rec.open_window(9, 2)
    rec.window_step(3, zero, 1.0, 0.1)
    rec.window_step(4, zero, 1.0, 0.1)
    with pytest.raises(LandscapeError, match="window from step 3 has all its 2 steps"):
        rec.window_step(5, zero, 1.0, 0.1)
    rec.checkpoint(5)
    with pytest.raises(LandscapeError, match="overlaps the one that ends at step 5"):
        rec.open_window(4, 2)
    rec.close()
    (w,) = Run.open(tmp_path / "w.h5").windows()
    assert w.steps.tolist() == [3, 4] and w.complete
