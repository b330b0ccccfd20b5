"""A run file is data: the code it may name without trust, as an attacker would edit it.

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
import pytest
import torch
from click.testing import CliRunner
from own_model import build, data, train

from landscape.cli import main
from landscape.errors import LandscapeError
from landscape.runs import own_models as custom
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
