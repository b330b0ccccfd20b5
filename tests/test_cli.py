import subprocess
import sys
from pathlib import Path

import h5py
import pytest
from click.testing import CliRunner
from helpers import SMALL

from landscape.cli import main
from landscape.runs.run import Run

TINY = [*SMALL, "--epochs", "2", "-q"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_every_command_has_help_with_an_example():
    for name in main.commands:
        res = invoke(name, "--help")
        assert res.exit_code == 0, name
        assert "Example" in res.output, f"`landscape {name} --help` has no example"
    assert "Example" in invoke("--help").output


def test_python_dash_m_works():
    out = subprocess.run([sys.executable, "-m", "landscape", "--help"], capture_output=True,
                         text=True, check=True)
    assert "Usage: landscape" in out.stdout


def test_train_and_info(tmp_path):
    out = tmp_path / "r.h5"
    res = invoke("train", *TINY, "--model", "shift", "--set", "shift.at_step=4", "--out", out)
    assert res.exit_code == 0, res.output
    run = Run.open(out)
    assert run.recipe.arch == "shift" and run.shift_step == 4 and run.status == "complete"
    assert run.recipe.task.seq_len == 8 and run.recipe.train.epochs == 2
    res = invoke("info", out)
    assert res.exit_code == 0 and "shift: step 4" in res.output and "Bayes" in res.output


@pytest.mark.parametrize("recipe", [Path(__file__).parents[1] / "models" / "looped_attn.toml",
                                    "looped_attn"], ids=["file", "shipped name"])
def test_train_recipe_file_or_name_preset_and_every(tmp_path, recipe):
    out = tmp_path / "l.h5"
    res = invoke("train", recipe, "--preset", "quick", *TINY, "--every", "2", "--out", out)
    assert res.exit_code == 0, res.output
    run = Run.open(out)
    assert run.recipe.name == "looped_attn" and (run.loops == 3).all()
    assert run.steps.tolist() == [0, 2, 4, 6, 8]


def test_an_unknown_recipe_name_lists_the_shipped_ones(tmp_path):
    res = CliRunner().invoke(main, ["train", "loopy_attn", "--out", str(tmp_path / "x.h5")])
    assert res.exit_code == 2 and not (tmp_path / "x.h5").exists()
    assert res.output.count("\n") == 1 and "looped_attn" in res.output, res.output


def _bad(tmp_path):
    txt = tmp_path / "notes.txt"
    txt.write_text("not hdf5")
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = 1
    typo = tmp_path / "typo.toml"
    typo.write_text("[train]\nlrr = 0.1\n")
    return txt, foreign, typo


@pytest.mark.parametrize("case", ["missing", "text", "foreign", "typo", "task", "resume_foreign",
                                  "resume_no_out", "set", "truncated", "exists", "nan"])
def test_bad_input_is_one_line_and_exit_2(tmp_path, case):
    txt, foreign, typo = _bad(tmp_path)
    good = tmp_path / "good.h5"
    if case in ("truncated", "exists"):
        assert invoke("train", *TINY, "--out", good).exit_code == 0
    trunc = tmp_path / "trunc.h5"
    if case == "truncated":
        trunc.write_bytes(good.read_bytes()[:5000])
    args = {
        "missing": ["info", tmp_path / "nope.h5"],
        "text": ["info", txt],
        "foreign": ["info", foreign],
        "typo": ["train", typo, "--out", tmp_path / "t.h5"],
        "task": ["train", "--task", "sudoku", "--out", tmp_path / "t.h5"],
        "resume_foreign": ["train", "--resume", "--out", foreign],
        "resume_no_out": ["train", "--resume"],
        "set": ["train", "--set", "train.lr", "--out", tmp_path / "t.h5"],
        "truncated": ["info", trunc],
        "exists": ["train", *TINY, "--out", good],
        "nan": ["train", *TINY, "--set", "train.lr=1e30", "--set", "train.grad_clip=0",
                "--out", tmp_path / "n.h5"],
    }[case]
    before = {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    res = invoke(*args)
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    assert "Traceback" not in res.output
    for p, data in before.items():  # nothing already on disk is damaged
        assert p.read_bytes() == data, p


def test_probe_command(tmp_path):
    out = tmp_path / "r.h5"
    assert invoke("train", *TINY, "--out", out).exit_code == 0
    res = invoke("probe", out, "--steps", "last", "--k", "3", "--k-bottom", "1", "--slq-runs",
                 "2", "--slq-steps", "8", "--trace-hvps", "8", "--grid", "5", "-q")
    assert res.exit_code == 0, res.output
    run = Run.open(out)
    assert run.hessian(-1)["top"].values.shape == (3,)
    assert "slice_random" in run.geometry(-1)
    assert "probes: geometry, hessian" in invoke("info", out).output


@pytest.mark.parametrize("args, message", [
    (["--steps", "7"], "step 7 is not a checkpoint"),
    (["--k", "100000"], "exceeds the model's"),
    (["--grid", "4"], "--grid 4 must be odd"),
    (["--no-hessian", "--no-geometry"], "nothing to do"),
    (["--shared-plane", "nope.h5"], "nope.h5"),
    (["--no-geometry", "--shared-plane", "init"], "drop --no-geometry"),
])
def test_probe_bad_input(tmp_path, args, message):
    out = tmp_path / "r.h5"
    assert invoke("train", *TINY, "--out", out).exit_code == 0
    before = out.read_bytes()
    res = invoke("probe", out, *args, "-q")
    assert res.exit_code == 2 and message in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1
    assert out.read_bytes() == before


def test_a_closed_pipe_ends_info_quietly(trained_runs):
    # `landscape info RUN.h5 | head -0`: the reader is gone before anything is written
    proc = subprocess.Popen([sys.executable, "-m", "landscape", "info",
                             str(trained_runs["shift"])], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) in (0, 1) and err == "", err


# --- every flag checked before any work: one line, exit 2 --------------------------------

HUGE = "9" * 23
BAD_FLAGS = {
    # values the library took and failed on (a traceback, or after work had started)
    "seed huge": ["train", *TINY, "--seed", HUGE, "--out", "NEW"],
    "seed negative": ["train", *TINY, "--seed", "-1", "--out", "NEW"],
    "set seed huge": ["train", *TINY, "--set", f"train.seed={HUGE}", "--out", "NEW"],
    "epochs huge": ["train", *TINY, "--epochs", HUGE, "--out", "NEW"],
    "set grad_clip inf": ["train", *TINY, "--set", "train.grad_clip=inf", "--out", "NEW"],
    "set lr inf": ["train", *TINY, "--set", "train.lr=inf", "--out", "NEW"],
    "train device index": ["train", *TINY, "--device", "cuda:x", "--out", "NEW"],
    "steps comma": ["probe", "RUN", "--steps", ","],
    "steps spaced:x": ["probe", "RUN", "--steps", "spaced:x"],
    "steps spaced:": ["probe", "RUN", "--steps", "spaced:"],
    "probe device": ["probe", "RUN", "--device", "banana"],
    "probe device mps": ["probe", "RUN", "--device", "mps"],
    "probe device index": ["probe", "RUN", "--device", "cuda:x"],
    "delta nan": ["probe", "RUN", "--delta", "nan"],
    "delta inf": ["probe", "RUN", "--delta", "inf"],
    "grid huge": ["probe", "RUN", "--no-hessian", "--grid", "1000001"],
    "threads huge": ["probe", "RUN", "--threads", HUGE],
    "dpi huge": ["plot", "RUN", "--dpi", HUGE, "--out", "NEW"],
    "no format": ["plot", "RUN", "--format", ",", "--out", "NEW"],
    "width poster": ["plot", "RUN", "--width", "poster", "--out", "NEW"],
    "width negative": ["plot", "RUN", "--width", "-3", "--out", "NEW"],
    "width nan": ["plot", "RUN", "--width", "nan", "--out", "NEW"],
    "reproduce device": ["reproduce", "--device", "banana", "--out", "NEW"],
    "language seed huge": ["reproduce", "--language-seed", HUGE, "--out", "NEW"],
    "workers huge": ["reproduce", "--workers", HUGE, "--out", "NEW"],
    "escape in a message": ["train", "evil\x1b]0;title\x07\x1b[2J\r", "--out", "NEW"],
    # what click rejects itself (a four-line usage block before)
    "no such option": ["probe", "RUN", "--foo"],
    "no such group option": ["--foo"],
    "no such command": ["banana"],
    "missing argument": ["info"],
    "missing run files": ["plot"],
    "extra argument": ["info", "RUN", "RUN"],
    "missing option value": ["probe", "RUN", "--steps"],
    "bad int": ["train", "--epochs", "x"],
    "int out of range": ["probe", "RUN", "--k", "0"],
    "bad choice": ["train", "--model", "banana"],
    "bad probe choice": ["probe", "RUN", "--exact", "sometimes"],
    "bad float": ["probe", "RUN", "--delta", "wide"],
    "missing required option": ["import", "RUN", "--model", "x:y"],
    "flag with a value": ["train", "--resume=yes"],
    "out is a folder": ["train", *TINY, "--out", "."],
}


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test as soon as a command starts the work it was asked for."""
    import landscape.draw.figures
    import landscape.probe.driver
    import landscape.reproduce
    import landscape.runs.importer
    import landscape.train

    def started(*args, **kwargs):
        pytest.fail("work started before the flags were checked")

    for module, name in ((landscape.train.trainer, "train"), (landscape.reproduce, "reproduce"),
                         (landscape.draw.figures, "render"),
                         (landscape.runs.importer, "import_checkpoints")):
        monkeypatch.setattr(module, name, started)
    monkeypatch.setattr(landscape.probe.driver.Driver, "ensure", started)


@pytest.mark.parametrize("case", BAD_FLAGS)
def test_a_bad_flag_is_one_error_line_before_any_work(trained_runs, tmp_path, monkeypatch,
                                                      no_work, case):
    from landscape.runfile.store import copy_run

    run = tmp_path / "r.h5"
    copy_run(trained_runs["single"], run)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    monkeypatch.chdir(tmp_path)
    args = [{"RUN": str(run), "NEW": str(tmp_path / "new")}.get(a, a) for a in BAD_FLAGS[case]]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2, res.output
    lines = res.output.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    assert "Traceback" not in res.output and lines[0].isprintable(), res.output
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before  # nothing written, nothing changed


def test_a_usage_error_names_the_option_and_points_to_help():
    res = CliRunner().invoke(main, ["probe", "x.h5", "--zzz"])
    assert res.output == "error: no such option '--zzz' (see 'landscape probe --help')\n"
    res = CliRunner().invoke(main, ["banana"])
    assert res.output == "error: no such command 'banana' (see 'landscape --help')\n"
    assert invoke("probe", "--help").exit_code == 0  # help is not an error


def test_info_escapes_control_characters_read_from_the_file(trained_runs, tmp_path):
    import json

    from landscape.runfile.store import copy_run

    run = tmp_path / "r.h5"
    copy_run(trained_runs["single"], run)
    with h5py.File(run, "r+") as f:
        recipe = json.loads(f.attrs["recipe"])
        recipe["name"] = "evil\x1b[31m\x1b]0;pwned\x07\r\u2028"
        f.attrs["recipe"] = json.dumps(recipe)
    res = invoke("info", run)
    assert res.exit_code == 0, res.output
    assert r"evil\x1b[31m\x1b]0;pwned\x07\r\u2028" in res.output
    assert all(line.isprintable() for line in res.output.splitlines())


def test_printable_escapes_only_what_does_not_print():
    from landscape.cli import printable

    assert printable("looped_attn (Bayes 0.99) é ∑") == "looped_attn (Bayes 0.99) é ∑"
    assert printable("a\x1b[2Jb\tc\x00\x7f") == r"a\x1b[2Jb\tc\x00\x7f"


# --- the probe's progress bar ---------------------------------------------------------------


def test_probe_bar_text_shows_the_checkpoint_the_part_and_the_time_left():
    from landscape.cli import probe_bar_text
    from landscape.probe.driver import ProbeProgress

    ev = ProbeProgress(checkpoint=2, checkpoints=6, step=40, part="slq", seconds_left=192.0,
                       fraction=0.25)
    assert probe_bar_text(ev, width=8) == ("checkpoint 2/6 (step 40) [##------]  25% slq, "
                                           "about 3.2 min left")
    done = ProbeProgress(checkpoint=6, checkpoints=6, step=200, part="top", seconds_left=0.0,
                         fraction=1.0)
    assert probe_bar_text(done, width=4) == ("checkpoint 6/6 (step 200) [####] 100% top, "
                                             "about 0.0 s left")


def test_probe_bar_is_drawn_only_on_a_terminal_and_never_under_quiet(tmp_path, monkeypatch):
    import landscape.cli as cli

    out = tmp_path / "r.h5"
    assert invoke("train", *TINY, "--out", out).exit_code == 0
    args = ["probe", out, "--steps", "last", "--no-geometry", "--k", "2", "--k-bottom", "0",
            "--slq-runs", "1", "--slq-steps", "8", "--trace-hvps", "8", "--force"]
    plain = invoke(*args)  # CliRunner's stderr is not a terminal
    assert plain.exit_code == 0 and "checkpoint 1/1" not in plain.output
    assert "hessian SLQ" in plain.output  # the report lines are still there
    monkeypatch.setattr(cli, "_is_terminal", lambda: True)
    shown = invoke(*args)
    assert shown.exit_code == 0 and "checkpoint 1/1 (step" in shown.output
    assert "% top, about" in shown.output and "left" in shown.output
    quiet = invoke(*args, "-q")
    assert quiet.exit_code == 0 and "checkpoint 1/1" not in quiet.output


def test_the_probe_flags_take_their_defaults_from_the_settings():
    """One source: a default changed in landscape.probe.settings changes the flag's."""
    from landscape.probe.settings import GeometrySettings, HessianSettings, ProbeSettings

    flags = {p.name: p.default for p in main.commands["probe"].params}
    hs, gs, ps = HessianSettings(), GeometrySettings(), ProbeSettings()
    for name in ("k_top", "k_bottom", "slq_runs", "slq_steps", "trace_hvps", "exact",
                 "exact_max_params", "dtype", "backend"):
        assert flags[name] == getattr(hs, name), name
    for name in ("grid", "delta", "shared_plane", "valley_k", "intervention_steps"):
        assert flags[name] == getattr(gs, name), name
    assert (flags["steps"], flags["device"], flags["valley_curvature"]) == (
        ps.steps, ps.device, ps.valley_curvature)
    assert flags["curvatures"] == ",".join(ps.curvatures)
