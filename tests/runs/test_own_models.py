"""Own models (landscape.runs.own_models): the built-in losses against numpy, floating
inputs at the parameters' dtype, and trust.

A run file is data: the code it may name without trust, as an attacker would edit it.

Each test hand-edits a recorded run's ``model`` attribute (JSON: ``factory``, ``kwargs``)
or ``loss`` and opens it without trust: nothing named may run, the error is one line,
``landscape probe`` exits 2.
"""

import json
import os
import shutil
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from any_model import cnn, mlp, vectors
from click.testing import CliRunner
from own_model import build, data, train
from torch import nn

from landscape.cli import main
from landscape.curvature.hessian import HessianOperator
from landscape.curvature.objective import ParamLayout
from landscape.errors import LandscapeError
from landscape.runs import own_models as custom
from landscape.runs.own_models import cast_batch, make_custom_loss_fn, probe_arrays
from landscape.runs.run import Run

TESTS = Path(__file__).parent


@pytest.fixture(autouse=True)
def _importable(monkeypatch):
    """The CLI and the hostile names import own_model/own_marker as a user's package."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS),
                                                      os.environ.get("PYTHONPATH", "")]))


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A tiny run of own_model:build (2 checkpoints), recorded once; copy it to edit it."""
    path = tmp_path_factory.mktemp("recorded") / "mine.h5"
    train(path, 1)
    return path


def _copy(src: Path, folder: Path) -> Path:
    dst = folder / src.name
    shutil.copy2(src, dst)
    shutil.copytree(f"{src}.d", f"{dst}.d")
    return dst


def _edit(path: Path, **attrs) -> Path:
    """Set root attrs as a hand-editing attacker would (dicts as JSON text)."""
    with h5py.File(path, "r+") as f:
        for k, v in attrs.items():
            f.attrs[k] = json.dumps(v) if isinstance(v, dict) else v
    return path


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _refused(path: Path, factory_shown: str) -> None:
    """Run.model, Run.loss_fn and `landscape probe` refuse, in one line, before any code."""
    for call in (Run.model, Run.loss_fn, Run.require_code):
        with pytest.raises(LandscapeError, match="--trust-code") as e:
            call(Run.open(path))
        assert "\n" not in str(e.value) and factory_shown in str(e.value)
    r = _cli("probe", path, "--steps", "last", "--no-geometry", "-q")
    assert r.exit_code == 2, r.output
    assert r.output.startswith("error: ") and r.output.count("\n") == 1, r.output
    assert "--trust-code" in r.output


# --- names that walked out of the package on the old prefix rule ---------------------------


def test_a_shell_command_named_under_a_package_module_never_runs(recorded, tmp_path):
    marker = tmp_path / "pwned"
    path = _edit(_copy(recorded, tmp_path), model={
        "factory": "landscape.runfile.store:os.system", "kwargs": {"command": f"touch {marker}"}})
    _refused(path, "landscape.runfile.store:os.system")
    assert not marker.exists(), "a command named in a run file ran without trust"


def test_a_folder_named_for_deletion_is_never_deleted(recorded, tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("mine")
    path = _edit(_copy(recorded, tmp_path), model={
        "factory": "landscape.runfile.store:shutil.rmtree", "kwargs": {"path": str(victim)}})
    _refused(path, "landscape.runfile.store:shutil.rmtree")
    assert (victim / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("factory, kwargs", [
    ("landscape.runs.own_models:importlib.import_module", {"name": "own_marker"}),
    ("landscape.hf:json.loads", {"s": "{}"}),
    ("landscape:__builtins__.exec", {}),
    ("landscape.runfile.store:os.remove", {"path": "MARKER"}),
    ("landscape.hf:causal_lm.__call__", {"config": {}}),   # attributes of an alias
    ("landscape.hf:read_config", {"config": "/etc/hostname"}),  # ours, not allow-listed
    ("landscape.hf:causal_lm ", {"config": {}}),           # near-misses of the exact name
    ("landscape.runs.huggingface.causal_lm:x", {}),
    ("landscape.hf:Causal_lm", {}),
])
def test_only_exact_allowed_names_run_without_trust(recorded, tmp_path, monkeypatch,
                                                   factory, kwargs):
    marker = tmp_path / "MARKER"
    marker_env = tmp_path / "imported"
    monkeypatch.setenv("LANDSCAPE_MARKER", str(marker_env))
    monkeypatch.chdir(tmp_path)
    marker.write_text("still here")
    path = _edit(_copy(recorded, tmp_path), model={"factory": factory, "kwargs": kwargs})
    _refused(path, factory.strip())
    assert marker.read_text() == "still here" and not marker_env.exists()


def test_a_loss_named_under_a_package_module_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    model, (x, y) = build(), data(4)
    arrays = {"inputs": x.numpy(), "targets": y.numpy()}
    with pytest.raises(LandscapeError, match="loss landscape.runfile.store:os.system.*trust"):
        custom.make_custom_loss_fn(model, "landscape.runfile.store:os.system", "pair", arrays,
                                   trust_code=False)
    path_loss = "landscape.runfile.store:os.system"
    assert not custom.is_own_code(path_loss, "loss") and not marker.exists()


def test_a_name_with_a_line_break_is_refused_in_one_line(recorded, tmp_path):
    path = _edit(_copy(recorded, tmp_path), model={
        "factory": "own_model:build\nerror: all fine", "kwargs": {}})
    with pytest.raises(LandscapeError) as e:
        Run.open(path).model()
    assert "\n" not in str(e.value) and "--trust-code" in str(e.value)


# --- the allow-list: aliases that keep working --------------------------------------------


def test_the_allow_list_names_exact_aliases_of_our_own_functions():
    from landscape.runs import huggingface as hf

    mod = "landscape.runs.huggingface"
    assert custom.OWN_CODE == {"factory": {
        "landscape.hf:causal_lm": (mod, "causal_lm"),
        "landscape.hf:masked_lm": (mod, "masked_lm"),
        "landscape.hf:sequence_classifier": (mod, "sequence_classifier")}, "loss": {}}
    for name, fn in (("causal_lm", hf.causal_lm), ("masked_lm", hf.masked_lm),
                     ("sequence_classifier", hf.sequence_classifier)):
        assert custom.load_object(f"landscape.hf:{name}", "factory", trust_code=False) is fn
        assert custom.is_own_code(f"landscape.hf:{name}")
    assert not custom.is_own_code("landscape.hf:masked_lm ")  # exact names only


def test_an_alias_keeps_old_run_files_loading_when_its_function_moves(recorded, tmp_path,
                                                                      monkeypatch):
    """An alias resolves through its table entry, whatever module its name spells."""
    alias = "landscape.models_of_old:tiny"   # a module that does not exist (any more)
    monkeypatch.setitem(custom.OWN_CODE["factory"], alias, ("own_model", "build"))
    path = _edit(_copy(recorded, tmp_path), model={"factory": alias, "kwargs": {"d": 8}})
    run = Run.open(path)                     # no trust: the alias is on the list
    run.require_code()
    model = run.model(0)
    torch.testing.assert_close(dict(model.named_parameters())["head.weight"],
                               run.params(0)["head.weight"])
    assert torch.isfinite(run.loss_fn()(run.params(0)))


# --- info and plot read data only ---------------------------------------------------------


def test_info_and_plot_never_import_code_a_run_file_names(recorded, tmp_path, monkeypatch):
    from landscape.probe import HessianSettings, ProbeSettings, probe

    marker = tmp_path / "imported"
    monkeypatch.setenv("LANDSCAPE_MARKER", str(marker))
    path = _copy(recorded, tmp_path)
    probe(path, ProbeSettings(steps="last", geometry=None, hessian=HessianSettings(
        k_top=2, k_bottom=1, slq_runs=2, slq_steps=8, trace_hvps=6)), trust_code=True)
    for factory, loss in (("own_marker:build", "own_marker:build"),
                          ("landscape.runs.own_models:importlib.import_module", "next_token")):
        _edit(path, model={"factory": factory, "kwargs": {"name": "own_marker"}}, loss=loss)
        r = _cli("info", path)
        assert r.exit_code == 0 and factory in r.output, r.output
        r = _cli("plot", path, "--figure", "spectra", "--format", "png", "--out",
                 tmp_path / "figs")
        assert r.exit_code == 0 and "wrote 1 figure" in r.output, r.output
        assert not marker.exists(), f"{factory} was imported by info or plot"


# --- arguments are inline JSON; the size is checked before allocation ---------------------


hf_only = pytest.mark.skipif(
    __import__("importlib").util.find_spec("transformers") is None,
    reason="the hf extra is not installed (pip install 'looped-landscape[hf]')")
GPT2 = {"model_type": "gpt2", "vocab_size": 13, "n_positions": 6, "n_embd": 8,
        "n_layer": 1, "n_head": 2, "bos_token_id": 0, "eos_token_id": 0}


@pytest.fixture(scope="module")
def gpt2_run(tmp_path_factory):
    """A tiny GPT-2 recorded through the alias landscape.hf:causal_lm (no trust needed)."""
    import landscape
    from landscape.runs import huggingface as hf

    path = tmp_path_factory.mktemp("gpt2") / "gpt2.h5"
    model = hf.causal_lm(GPT2)
    ids = torch.randint(0, 13, (4, 6), generator=torch.Generator().manual_seed(0))
    with landscape.Recorder(path, model, probe={"input_ids": ids,
                                                "attention_mask": torch.ones_like(ids)}) as rec:
        rec.checkpoint(0)
    return path


@hf_only
def test_a_run_naming_the_alias_loads_without_trust(gpt2_run):
    run = Run.open(gpt2_run)
    assert run.spec["factory"] == "landscape.hf:causal_lm"
    assert isinstance(run.spec["kwargs"]["config"], dict)
    assert torch.isfinite(run.loss_fn()(run.params(0)))


@hf_only
@pytest.mark.parametrize("config", ["outside", "folder", "/etc/hostname", 3, ["gpt2"]])
def test_the_alias_takes_its_configuration_inline_never_a_path(gpt2_run, tmp_path, config):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "config.json").write_text(json.dumps(GPT2))  # a config that would fit
    named = {"outside": str(outside / "config.json"), "folder": str(outside)}
    config = named.get(config, config) if isinstance(config, str) else config
    path = _edit(_copy(gpt2_run, tmp_path), model={"factory": "landscape.hf:causal_lm",
                                                   "kwargs": {"config": config}})
    with pytest.raises(LandscapeError, match="configuration itself") as e:
        Run.open(path).model()
    assert "\n" not in str(e.value)
    r = _cli("probe", path, "--steps", "last", "--no-geometry", "-q")
    assert r.exit_code == 2 and r.output.count("\n") == 1, r.output


@hf_only
@pytest.mark.parametrize("change, message", [
    ({"n_embd": 100_000, "n_head": 10, "vocab_size": 50_000}, "parameters vs"),  # ~240 B
    ({"n_layer": 100_000}, "submodules"),
    ({"n_positions": 7}, "wpe.weight"),
])
def test_a_model_larger_than_its_checkpoints_is_refused_before_allocation(
        gpt2_run, tmp_path, change, message):
    path = _edit(_copy(gpt2_run, tmp_path), model={
        "factory": "landscape.hf:causal_lm", "kwargs": {"config": {**GPT2, **change}}})
    t0 = time.perf_counter()
    with pytest.raises(LandscapeError, match=message) as e:
        Run.open(path).model()
    assert "\n" not in str(e.value)
    assert time.perf_counter() - t0 < 30
    r = _cli("probe", path, "--steps", "last", "--no-geometry", "-q")
    assert r.exit_code == 2 and r.output.count("\n") == 1, r.output


def test_recording_stores_a_configuration_path_inline(tmp_path):
    pytest.importorskip("transformers")
    import landscape
    from landscape.runs import huggingface as hf

    (tmp_path / "config.json").write_text(json.dumps(GPT2))
    model = hf.causal_lm(GPT2)
    ids = torch.randint(0, 13, (4, 6), generator=torch.Generator().manual_seed(0))
    with landscape.Recorder(tmp_path / "r.h5", model, probe={"input_ids": ids},
                            factory="landscape.hf:causal_lm",
                            factory_kwargs={"config": str(tmp_path)}) as rec:
        rec.checkpoint(0)
    (tmp_path / "config.json").unlink()
    run = Run.open(tmp_path / "r.h5")
    assert run.spec["kwargs"]["config"]["n_embd"] == 8
    run.model(0)  # the file alone rebuilds it


def test_an_own_factory_with_huge_buffers_is_refused_before_allocation(recorded, tmp_path,
                                                                       monkeypatch):
    """Buffers (e.g. a causal mask sized by the configuration) count as well."""

    def masked(d=8):
        model = build(d=d)
        model.register_buffer("mask", torch.ones(2**20, 2**20), persistent=False)  # 4 TiB
        return model

    monkeypatch.setattr(custom, "_masked_for_test", masked, raising=False)
    monkeypatch.setitem(custom.OWN_CODE["factory"], "landscape.test:masked",
                        ("landscape.runs.own_models", "_masked_for_test"))
    path = _edit(_copy(recorded, tmp_path), model={"factory": "landscape.test:masked",
                                                   "kwargs": {"d": 8}})
    with pytest.raises(LandscapeError, match="buffer entries") as e:
        Run.open(path).model()
    assert "\n" not in str(e.value)


# --- the built-in losses, against numpy ---------------------------------------------------


class _Logits(torch.nn.Module):
    """Logits ``[N, T, V]`` from token ids, returned inside an object as HuggingFace does."""

    def __init__(self, vocab=5):
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, vocab, dtype=torch.float64)

    def forward(self, input_ids=None, attention_mask=None):
        return {"logits": self.emb(input_ids)}


def _log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_next_token_is_the_mean_over_unmasked_shifted_tokens_in_any_chunks():
    torch.manual_seed(0)
    model = _Logits()
    ids = np.random.default_rng(0).integers(0, 5, size=(3, 4))
    mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]])
    logp = _log_softmax(model.emb.weight.detach().numpy()[ids])  # [N, T, V]
    terms = [-logp[n, t, ids[n, t + 1]] for n in range(3) for t in range(3) if mask[n, t + 1]]
    want = float(np.mean(terms))
    form, arrays = custom.probe_arrays({"input_ids": ids, "attention_mask": mask})
    params = dict(model.named_parameters())
    for chunk in (1, 2, 64):
        fn = custom.make_custom_loss_fn(model, "next_token", form, arrays, trust_code=False,
                                        chunk=chunk)
        assert float(fn(params).detach()) == pytest.approx(want, rel=1e-12), chunk


def test_cross_entropy_and_mse_on_a_pair():
    torch.manual_seed(1)
    lin = torch.nn.Linear(3, 4, dtype=torch.float64)
    x = np.random.default_rng(1).normal(size=(5, 3))
    y = np.array([0, 3, 1, 1, 2])
    z = x @ lin.weight.detach().numpy().T + lin.bias.detach().numpy()
    params = dict(lin.named_parameters())
    ce = custom.make_custom_loss_fn(lin, "cross_entropy", *custom.probe_arrays((x, y)),
                                    trust_code=False, chunk=2)
    assert float(ce(params).detach()) == pytest.approx(-_log_softmax(z)[np.arange(5), y].mean())
    t = np.random.default_rng(2).normal(size=(5, 4))
    mse = custom.make_custom_loss_fn(lin, "mse", *custom.probe_arrays((x, t)),
                                     trust_code=False, chunk=2)
    assert float(mse(params).detach()) == pytest.approx(((z - t) ** 2).mean())


def test_a_probe_set_the_loss_cannot_read_is_refused():
    with pytest.raises(LandscapeError, match="same number"):
        custom.probe_arrays((np.zeros((3, 2)), np.zeros(4)))
    with pytest.raises(LandscapeError, match="numeric array"):
        custom.probe_arrays({"input_ids": np.array(["a", "b"])})
    form, arrays = custom.probe_arrays((np.zeros((2, 3)), np.zeros(2)))
    with pytest.raises(LandscapeError, match="'targets': need integer"):
        custom.check_probe_for_loss("cross_entropy", form, arrays)
    custom.check_probe_for_loss("mse", form, arrays)  # floating targets: fine for mse
    with pytest.raises(LandscapeError, match="needs 'input_ids'"):
        custom.check_probe_for_loss("next_token", "dict", {"x": np.zeros((2, 3), int)})


# --- floating inputs follow the parameters' dtype --------------------------------------


def _loss_fn(model, probe, loss):
    form, arrays = probe_arrays(probe)
    return make_custom_loss_fn(model, loss, form, arrays, trust_code=True, chunk=5)


def _params(model, dtype):
    return {n: p.detach().to(dtype) for n, p in model.named_parameters()}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_float_inputs_follow_the_parameters_dtype(dtype):
    model = mlp().eval()
    x, y = vectors(12)
    f = _loss_fn(model, (x, y), "cross_entropy")
    ref = mlp().to(dtype).eval()
    ref.load_state_dict(model.state_dict())
    want = nn.functional.cross_entropy(ref(x.to(dtype)), y)
    got = f(_params(model, dtype))
    assert got.dtype == dtype
    torch.testing.assert_close(got, want)
    with f.bind(_params(model, dtype)) as bound:  # the grids' path
        torch.testing.assert_close(bound(), want)


def test_batchnorm_buffers_and_images_in_float64_match_a_float64_model():
    model = cnn().eval()
    with torch.no_grad():  # statistics that are not the initial ones
        model.bn1.running_mean.uniform_(-0.5, 0.5)
        model.bn2.running_var.uniform_(0.5, 2.0)
    x = torch.randn(7, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.arange(7) % 3
    f = _loss_fn(model, (x, y), "cross_entropy")
    ref = cnn().double().eval()
    ref.load_state_dict(model.state_dict())
    torch.testing.assert_close(f(_params(model, torch.float64)),
                               nn.functional.cross_entropy(ref(x.double()), y))
    assert model.bn1.running_mean.dtype == torch.float32  # the module itself is untouched


def test_hessian_in_float64_on_float_inputs_matches_a_dense_reference():
    model = mlp(d_in=3, width=4, d_out=2).eval()
    x = torch.randn(9, 3, generator=torch.Generator().manual_seed(2))
    y = torch.tanh(x[:, :2])
    f = _loss_fn(model, (x, y), "mse")
    params = _params(model, torch.float64)
    layout = ParamLayout.of(params)
    op = HessianOperator(f, params, dtype=torch.float64)
    dense = torch.stack([op.matvec(e) for e in torch.eye(layout.size, dtype=torch.float64)])
    ref = mlp(d_in=3, width=4, d_out=2).double().eval()

    def reference(flat):
        out = torch.func.functional_call(ref, layout.unflatten(flat), (x.double(),))
        return ((out - y.double()) ** 2).mean()

    want = torch.autograd.functional.hessian(reference, layout.flatten(params))
    torch.testing.assert_close(dense, want)


def test_cast_batch_leaves_integers_and_masks_alone():
    batch = {"pixels": torch.randn(2, 3), "input_ids": torch.ones(2, 3, dtype=torch.long),
             "keep": torch.ones(2, 3, dtype=torch.bool)}
    out = cast_batch(batch, torch.float64)
    assert [v.dtype for v in out.values()] == [torch.float64, torch.long, torch.bool]
    assert cast_batch((batch["pixels"], batch["input_ids"]), None)[0].dtype == torch.float32


class _Tagger(nn.Module):
    """Token ids and a float feature per token in, logits per token out (a dict batch)."""

    def __init__(self, vocab=7, classes=4):
        super().__init__()
        self.emb = nn.Embedding(vocab, 5)
        self.feat = nn.Linear(1, 5)
        self.head = nn.Linear(5, classes)

    def forward(self, input_ids, feature):
        return self.head(torch.tanh(self.emb(input_ids) + self.feat(feature[..., None])))


def _tagged(labels_per_row):
    g = torch.Generator().manual_seed(4)
    ids = torch.randint(0, 7, (4, 5), generator=g)
    labels = torch.randint(0, 4, (4, 5), generator=g)
    labels[:, labels_per_row:] = -100
    return {"input_ids": ids, "feature": torch.randn(4, 5, generator=g), "labels": labels}


@pytest.mark.parametrize("scored", [5, 2])
def test_masked_lm_scores_only_labels_that_are_not_minus_100(scored):
    torch.manual_seed(0)
    model = _Tagger().eval()
    batch = _tagged(scored)
    f = _loss_fn(model, batch, "masked_lm")
    logits = model(batch["input_ids"], batch["feature"])
    labels = batch["labels"]
    keep = labels != -100
    want = nn.functional.cross_entropy(logits[keep], labels[keep])
    got = f(_params(model, torch.float64))  # float features at float64 parameters
    torch.testing.assert_close(got, want.double(), rtol=1e-5, atol=1e-6)
    if scored < 5:  # not the mean over every position (ignored ones count as 0 loss)
        naive = nn.functional.cross_entropy(logits.reshape(-1, 4), labels.reshape(-1),
                                            reduction="sum") / labels.numel()
        assert not np.isclose(float(got.detach()), float(naive.detach()))


def test_cross_entropy_over_labels_skips_minus_100():
    model = mlp().eval()
    x, y = vectors(10)
    y[::3] = -100
    form, arrays = probe_arrays((x, y))
    f = make_custom_loss_fn(model, "cross_entropy", form, arrays, trust_code=True, chunk=4)
    keep = y != -100
    want = nn.functional.cross_entropy(model(x)[keep], y[keep])
    torch.testing.assert_close(f(_params(model, torch.float32)), want)
