"""reproduce on tiny jobs: every figure, every claim, resumable; landscape plot."""

import json

import pytest
from click.testing import CliRunner

from landscape import reproduce as rep
from landscape.cli import main
from landscape.draw.figures import FIGURES
from landscape.errors import LandscapeError
from landscape.probe import GeometrySettings, HessianSettings, ProbeSettings
from landscape.runfile import store
from landscape.runs.run import Run
from landscape.train.archs import ARCHS

PROBE = ProbeSettings(
    steps="spaced:4",
    hessian=HessianSettings(k_top=4, k_bottom=2, slq_runs=3, slq_steps=20, trace_hvps=20,
                            exact="never"),
    geometry=GeometrySettings(grid=5, width_points=7, width_dirs=2, shared_plane="init"))
MARKOV = ({"task": {"n_train": 128, "n_test": 64, "seq_len": 12}, "model": {"d_model": 8},
           "train": {"batch_size": 16, "epochs": 6, "probe_size": 16, "threads": 1}},)
ALGO = ({"task": {"n_train": 256, "n_test": 32, "train_max_len": 4}, "model": {"d_model": 8},
         "train": {"steps": 40, "eval_every": 10, "checkpoint_every": 10, "threads": 1}},)
JOBS = [rep.Job(f"m_{a}", f"{a}.toml", None, MARKOV, PROBE)
        for a in ("single_attn", "looped_attn", "shift")]
JOBS += [rep.Job("m_shift_ablation", "shift.toml", None, (*MARKOV, {"shift": {"delta_1": 0.05}}))]
JOBS += [rep.Job(f"p_{a}", "parity.toml", None, ALGO, arch=a) for a in ARCHS]


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
    out = tmp_path_factory.mktemp("rep")
    said = []
    result = rep.reproduce("tiny", out, jobs=JOBS, report=said.append)
    result.said = said
    return out, result


def test_every_figure_and_claim(reproduced):
    out, result = reproduced
    assert sorted(result.trained) == sorted(j.name for j in JOBS)
    assert set(result.figures) == set(FIGURES) - {"blocks"}  # no per-block probes here
    for name, paths in result.figures.items():
        assert not isinstance(paths, str), f"{name}: {paths}"
        for p in paths:
            assert p.stat().st_size > 1000, p
    report = (out / "REPORT.md").read_text()
    assert report.count("### Claim") == 6
    # every figure passed the reader's checks (landscape.draw.checks); a failure is said
    assert "figures" in result.said and not [m for m in result.said if "figure check" in m]
    data = json.loads((out / "claims.json").read_text())
    assert [c["id"] for c in data] == ["1", "2", "3", "4", "5", "6"]
    assert {c["verdict"] for c in data} <= {"holds", "does not hold", "inconclusive",
                                            "inconclusive (underpowered)"}
    assert "| m_shift |" in report and "| p_looped |" in report
    per_seed = json.loads((out / "per_seed.json").read_text())
    assert list(per_seed) == ["1", "2", "3", "4", "5", "6"]
    assert per_seed["1"]["verdict"] == data[0]["verdict"]
    assert per_seed["1"]["paired"] == data[0]["details"]["paired"]
    assert set(per_seed["6"]) >= {"gate", "paired", "per_length", "selection"}
    # each claim shows its figure beside its verdict, before the next claim starts
    for cid, image in (("1", "fig2_sample_dynamics"), ("2", "fig3_spectra"),
                       ("6", "length_generalization")):
        section = report.split(f"### Claim {cid}:")[1].split("### Claim")[0]
        assert f"![{image}](figures/{image}.png)" in section, section


def _no_figures(monkeypatch):
    """Skip drawing (test_every_figure_and_claim covers it): these tests are about reuse."""
    monkeypatch.setattr(rep.figures, "render", lambda *args, **kwargs: {})


def test_second_call_reuses_runs_and_probes(reproduced, monkeypatch):
    out, first = reproduced
    before = {p: p.read_bytes() for p in (out / "runs").glob("*.h5")}
    _no_figures(monkeypatch)
    again = rep.reproduce("tiny", out, jobs=JOBS)
    assert again.trained == []
    assert {p: p.read_bytes() for p in (out / "runs").glob("*.h5")} == before
    assert [c.verdict for c in again.claims] == [c.verdict for c in first.claims]


def test_killed_call_continues(tmp_path, monkeypatch):
    jobs = JOBS[:2]
    real, calls = rep.probe, {"n": 0}

    def dies_in_second_probe(path, settings, report=None):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(path, settings, report)

    monkeypatch.setattr(rep, "probe", dies_in_second_probe)
    _no_figures(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        rep.reproduce("tiny", tmp_path, jobs=jobs)
    monkeypatch.setattr(rep, "probe", real)
    result = rep.reproduce("tiny", tmp_path, jobs=jobs)
    assert result.trained == []  # both runs were already trained
    assert all(Run.open(p).probed_steps for p in result.runs)
    assert (tmp_path / "REPORT.md").exists()


def test_plot_command(reproduced, tmp_path):
    out, _ = reproduced
    runs = sorted(str(p) for p in (out / "runs").glob("m_*.h5"))
    res = CliRunner().invoke(main, ["plot", *runs, "--figure", "spectra", "--figure",
                                    "algorithmic", "--format", "png", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "fig3_spectra.png").stat().st_size > 1000
    assert "algorithmic: skipped" in res.output  # no algorithmic runs given
    looped = [r for r in runs if "looped" in r]
    res = CliRunner().invoke(main, ["plot", *looped, "--figure", "spectra", "--format", "png",
                                    "--out", str(tmp_path / "one")])
    assert res.exit_code == 0, res.output  # one run's spectra draw alone
    assert (tmp_path / "one" / "fig3_spectra.png").stat().st_size > 1000
    res = CliRunner().invoke(main, ["plot", runs[0], "--figure", "switch", "--out",
                                    str(tmp_path)])
    assert res.exit_code == 2 and "no figure could be drawn" in res.output
    res = CliRunner().invoke(main, ["plot", runs[0], "--figure", "nope"])
    assert res.exit_code == 2 and "unknown figure 'nope'" in res.output


@pytest.mark.parametrize("preset", sorted(rep.PRESETS))
def test_every_preset_job_finds_its_shipped_recipe(preset):
    recipes = [job.load() for job in rep.PRESETS[preset]]
    assert len({r.name for r in recipes}) == len(recipes)
    assert {r.arch for r in recipes} >= set(ARCHS)


def test_unknown_preset(tmp_path):
    with pytest.raises(LandscapeError, match="unknown preset"):
        rep.reproduce("huge", tmp_path)


def test_figure_scripts_run_alone(reproduced, tmp_path, monkeypatch):
    import runpy
    import sys
    from pathlib import Path

    out, _ = reproduced
    scripts = sorted((Path(__file__).parents[1] / "figures").glob("[!_]*.py"))
    monkeypatch.syspath_prepend(str(scripts[0].parent))
    for script in scripts:
        dest = tmp_path / script.stem
        argv = [str(script), str(out), "--out", str(dest)]
        if script.stem == "gallery":
            argv += ["--dpi", "60"]
        else:
            argv += ["--format", "png"]
        monkeypatch.setattr(sys, "argv", argv)
        runpy.run_path(str(script), run_name="__main__")
        assert any(dest.glob("*.png")), script.name


def test_workers_give_the_same_runs(reproduced, tmp_path, monkeypatch):
    import numpy as np

    out, _ = reproduced
    jobs = [JOBS[0], JOBS[3]]
    _no_figures(monkeypatch)
    result = rep.reproduce("tiny", tmp_path, jobs=jobs, workers=2)
    assert sorted(result.trained) == sorted(j.name for j in jobs)
    for job in jobs:
        a, b = Run.open(out / "runs" / f"{job.name}.h5"), Run.open(tmp_path / "runs" /
                                                                  f"{job.name}.h5")
        np.testing.assert_array_equal(a.trajectory(), b.trajectory())


def test_a_failing_job_stops_the_workers_with_a_clear_message(tmp_path):
    bad = rep.Job("bad", "parity.toml", None, (*ALGO, {"train": {"lr": 1e30, "grad_clip": 0.0}}))
    with pytest.raises(LandscapeError, match="loss became nan"):
        rep.reproduce("tiny", tmp_path, jobs=[bad, JOBS[3]], workers=2)


def test_unprobed_seeds_do_not_hide_the_probed_one(reproduced, tmp_path):
    from landscape.draw.figures import render

    out, _ = reproduced
    runs = [Run.open(p) for p in sorted((out / "runs").glob("m_*.h5"))]
    extra = tmp_path / "m_single_copy.h5"  # an unprobed run of Single-Attn, listed first
    store.copy_run(out / "runs" / "m_single_attn.h5", extra)
    import h5py

    with h5py.File(extra, "a") as f:
        del f["probe"]
    runs.insert(0, Run.open(extra))  # group_runs must still put the probed run first
    done = render(runs, ["valley", "spectra"], tmp_path / "figs", ("png",))
    assert all(not isinstance(v, str) for v in done.values()), done


def test_the_seed_draws_the_language_unless_held():
    jobs = rep.PRESETS["paper"]
    markov = [j for j in jobs if j.name.startswith("markov_")]
    assert {j.load().task.seed for j in markov} == {j.load().train.seed for j in markov}
    assert all(j.load().task.seed == j.load().train.seed for j in markov)
    assert len({j.load().task.seed for j in markov}) > 1
    held = rep.hold_language(jobs, 7)
    assert {j.load().task.seed for j in held if j.name.startswith("markov_")} == {7}
    assert [j.load() for j in held if not j.name.startswith("markov_")] == [
        j.load() for j in jobs if not j.name.startswith("markov_")]
    with pytest.raises(LandscapeError):
        rep.hold_language(jobs, -1)


def test_paper_preset_probes_the_spectral_runs_densely_in_the_divergence_window():
    # claims 2-4: fresh seeds of their own, spectra from initialisation to the last epoch
    # trained with >= 4 checkpoints in its last third, >= MIN_CHECKPOINTS fitted after epoch 0
    from landscape.analysis import claims, series

    spec = [j for j in rep.PRESETS["paper"] if j.name.startswith(series.SPECTRAL_PREFIX)]
    seeds = rep.PAPER_SEEDS_2_4
    assert sorted(j.name for j in spec) == sorted(
        f"{series.SPECTRAL_PREFIX}{a}_s{s}" for a in ("single_attn", "looped_attn")
        for s in seeds)
    assert min(seeds) >= rep.SPECTRAL_SEED > 2 and not set(seeds) & set(rep.PAPER_SEEDS_1_5)
    assert len(seeds) == claims.planned_seeds("3.kappa", rep.SPECTRAL_SEED_BUDGET) >= 3
    for job in spec:
        r = job.load()
        assert r.model.d_model == 24 and r.task.seed == r.train.seed in seeds
        assert job.probe.hessian.exact == "always" and set(job.claims) == {"2", "3", "4"}
        per_epoch = r.task.n_train // r.train.batch_size
        steps = [int(s) for s in job.probe.steps.split(",")]
        assert all(s % per_epoch == 0 for s in steps)
        epochs = [s // per_epoch for s in steps]
        assert epochs[0] == 0 and epochs[-1] == r.train.epochs  # the run's end
        assert len([e for e in epochs if e >= 2 * r.train.epochs / 3]) >= 4
        assert len([e for e in epochs if e > 0]) >= claims.MIN_CHECKPOINTS
        assert len([e for e in epochs if 0 < e <= 10]) >= 4  # the collapse seen before


def test_report_states_claim_1s_gap_at_the_spectral_runs_size():
    import numpy as np
    from helpers import StoredRun

    from landscape.analysis import series

    def run(arch, seed, final):
        r = StoredRun(arch, seed, {})
        r.name = f"{series.SPECTRAL_PREFIX}{arch}_attn_s{seed}"
        wobble = 0.01 if arch == "single" else -0.02  # the last evaluation alone would differ
        r.metrics = {"complex.acc": np.array([0.1, final - wobble, final, final + wobble])}
        return r

    runs = [run("single", s, 0.60) for s in (0, 1, 2)]
    runs += [run("looped", s, 0.60 + g) for s, g in zip((0, 1, 2), (0.04, 0.05, 0.06))]
    text = " ".join(rep._spectral_gap(runs))
    assert "0.050 [" in text and "seed 0: +0.040" in text and "seed 2: +0.060" in text
    assert rep._spectral_gap(runs[:3]) == []  # no Looped spectral run: nothing to state


def test_paper_preset_judges_claims_1_5_6_on_fresh_paired_seeds():
    from landscape.analysis import claims

    jobs = rep.select_claims(rep.PRESETS["paper"], ("1", "5", "6"))
    assert all(j.probe is None for j in jobs)  # probes serve claims 2-4 only
    assert not [j for j in jobs if j.name.startswith("markov_spectral_")]
    seeds = {j.load().train.seed for j in jobs}
    assert min(seeds) >= rep.FRESH_SEED  # seeds 0-2 were seen when the rules were written
    main = {j.name for j in jobs}
    for s in rep.PAPER_SEEDS_1_5:  # claim 1's controls on every seed of the main runs
        assert {f"markov_{a}_s{s}" for a in ("single_attn", "looped_attn", "shift", "untied")} \
            <= main
        assert {f"markov_{lang}_{a}_s{s}" for lang in ("fixed1", "modes")
                for a in ("single", "looped")} <= main
    assert len(rep.PAPER_SEEDS_1_5) == max(claims.planned_seeds("1", rep.SEED_BUDGET),
                                           claims.planned_seeds("5", rep.SEED_BUDGET))
    names = [j.name for j in jobs]
    for s in rep.PAPER_SEEDS_1_5:  # SHIFT and Looped of a seed side by side on two workers
        assert names.index(f"markov_shift_s{s}") == names.index(f"markov_looped_attn_s{s}") + 1
    for lang in ("fixed1", "modes"):
        r = next(j for j in jobs if j.name == f"markov_{lang}_looped_s3").load()
        assert r.arch == "looped" and r.task.n_modes == (4 if lang == "modes" else 1)
    length = [j for j in jobs if j.name.startswith("length_")]
    assert len(length) == 3 * len(rep.PAPER_SEEDS_6) * 5 and len(rep.PAPER_SEEDS_6) >= 3
    for j in length:
        r = j.load()
        assert r.task.online and r.task.curriculum_steps > 0 and r.train.steps >= 20000
        assert r.train.stop_acc == 0.95 and r.task.train_max_len >= 8
        assert max(r.task.eval_lengths) == 3 * r.task.train_max_len
    singles = {j.load().model.positions for j in length if "_single_" in j.name}
    assert singles == {"none", "rope", "learned"}
    assert not [j for j in rep.select_claims(rep.PRESETS["paper"], ("2",))
                if j.name.startswith("length_")]


@pytest.mark.parametrize("bad", [(), ("7",), ("1", "x")])
def test_select_claims_refuses_what_is_not_a_claim(bad):
    with pytest.raises(LandscapeError, match="--claims takes claim numbers"):
        rep.select_claims(rep.PRESETS["quick"], bad)


def test_cli_claims_option_refuses_bad_lists_before_any_work(tmp_path):
    res = CliRunner().invoke(main, ["reproduce", "--claims", "1,9", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "claim numbers" in res.output
    assert not (tmp_path / "o").exists()


def test_paper_preset_claims_2_4_are_the_spectral_runs_with_windows_and_interventions():
    jobs = rep.select_claims(rep.PRESETS["paper"], ("2", "3", "4"))
    assert jobs and all(j.name.startswith("markov_spectral_") for j in jobs)
    assert {j.load().train.seed for j in jobs} == set(rep.PAPER_SEEDS_2_4)
    for j in jobs:
        r = j.load()
        probed = {int(s) for s in j.probe.steps.split(",")}
        assert r.train.window_steps == 64 and set(r.train.window_at) <= probed
        assert r.train.intervene_at == r.train.window_at  # each start is a probed checkpoint
        assert max(r.train.window_at) + 64 <= r.train.epochs * 32


def test_a_figure_that_fails_a_check_is_said(reproduced, monkeypatch):
    out, _ = reproduced
    monkeypatch.setattr(rep.checks, "problems", lambda fig: {"texts cut off": ["a title"]})
    said = []
    rep.reproduce("tiny", out, jobs=JOBS[:3], report=said.append)
    assert any(m.endswith("figure check failed, texts cut off: ['a title']") for m in said)
