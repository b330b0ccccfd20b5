"""The claim rules on synthetic runs that should and should not pass."""

from types import SimpleNamespace

import numpy as np
import pytest
from helpers import tiny_recipe

from landscape import claims
from landscape.claims import FAILS, HOLDS, INCONCLUSIVE
from landscape.probe import schema


class FakeRun(SimpleNamespace):
    """Just what the claim rules read from a Run: metrics and typed probe parts."""

    def part(self, name, step=-1):
        if name in ("river_progress", "qk_alignment"):
            return getattr(self, "run_probes", {}).get(name)
        return self.probes.get((step, name))


def valley_part(label, kappa, count, force):
    return schema.Valley(source="exact", eps=1e-3, tau=0.1, lambda_max=kappa, dim=100,
                         river_dim=1.0, valley_dim=1.0, negative_dim=0.0, valley_min=1.0,
                         kappa=kappa, small_count=count, small_force=force, label=label)


def widths_part(width, quadratic):
    w, q = np.asarray(width, dtype=float), np.asarray(quadratic, dtype=float)
    return schema.Widths(delta=0.02, lam=np.ones(len(w)), alphas=np.zeros((len(w), 3)),
                         losses=np.zeros((len(w), 3)), left=-w / 2, right=w / 2, width=w,
                         quadratic=q, ratio=w / q)


def markov_run(arch, complex_acc, seed=0, simple_acc=0.98, wall=None, shift_step=None,
               probes=None):
    epochs = np.arange(len(complex_acc), dtype=float)
    model = {"loops": 3 if arch == "looped" else 1}
    shift = {"enabled": arch == "shift"}
    return FakeRun(
        recipe=tiny_recipe(model=model, shift=shift, train={"seed": seed}), path=f"{arch}.h5",
        metrics={"epoch": epochs, "step": epochs * 10, "complex.acc": np.asarray(complex_acc),
                 "simple.acc": np.full(len(epochs), simple_acc),
                 "wall": np.linspace(0, wall or len(epochs), len(epochs))},
        ceilings={"simple": {"acc": 0.99}, "complex": {"acc": 0.70}}, shift_step=shift_step,
        attrs={"steps_per_epoch": 10}, probes=probes or {},
        probed_steps=sorted({s for s, _ in (probes or {})}))


STALL = [0.50, 0.60, 0.62, 0.62, 0.62, 0.62]
RISE = [0.50, 0.60, 0.63, 0.66, 0.68, 0.69]


def groups(**archs):
    return {"markov": {a: (r if isinstance(r, list) else [r]) for a, r in archs.items()}}


def test_claim1_holds_on_the_papers_pattern():
    c = claims.judge_sample_level(groups(single=markov_run("single", STALL),
                                         looped=markov_run("looped", RISE)))
    assert c.verdict == HOLDS and c.details["gap"] == [pytest.approx(0.07)]


def test_claim1_fails_when_looped_is_not_better_and_is_inconclusive_when_single_rises():
    c = claims.judge_sample_level(groups(single=markov_run("single", RISE),
                                         looped=markov_run("looped", STALL)))
    assert c.verdict == FAILS
    rising = [0.5, 0.55, 0.58, 0.60, 0.63, 0.66]  # no stall: the rule cannot say "holds"
    c = claims.judge_sample_level(groups(single=markov_run("single", rising),
                                         looped=markov_run("looped", RISE)))
    assert c.verdict == INCONCLUSIVE


def test_claim1_needs_every_seed():
    single = [markov_run("single", STALL, seed=s) for s in (0, 1)]
    looped = [markov_run("looped", RISE, seed=0), markov_run("looped", STALL, seed=1)]
    assert claims.judge_sample_level(groups(single=single, looped=looped)).verdict == FAILS


def test_claim5_shift():
    looped = markov_run("looped", RISE, wall=100)
    fast = markov_run("shift", [*RISE[:-1], 0.685], wall=60, shift_step=20)
    slow = markov_run("shift", RISE, wall=120, shift_step=20)
    short = markov_run("shift", STALL, wall=60, shift_step=20)
    assert claims.judge_shift(groups(looped=looped, shift=fast)).verdict == HOLDS
    assert claims.judge_shift(groups(looped=looped, shift=slow)).verdict == FAILS
    assert claims.judge_shift(groups(looped=looped, shift=short)).verdict == FAILS


def test_claim3_labels():
    def valley(label, kappa, count, force):
        return {(10, "valley"): valley_part(label, kappa, count, force)}

    u = markov_run("single", STALL, probes=valley("U", 1.5, 3, 2.0))
    v = markov_run("looped", RISE, probes=valley("V", 50.0, 30, 40.0))
    c = claims.judge_landscape(groups(single=u, looped=v))
    assert c.verdict == HOLDS and c.details["assumption_1"]
    vv = markov_run("single", STALL, probes=valley("V", 60.0, 40, 50.0))
    c = claims.judge_landscape(groups(single=vv, looped=v))
    assert c.verdict == FAILS and not c.details["assumption_1"]
    assert c.details["width_ratio"] == {} and "parabola" not in c.value  # no widths probed


def test_claim3_reports_width_ratios_beside_without_changing_the_verdict():
    def probed(arch, label, width):
        run = markov_run(arch, STALL, probes={
            (10, "valley"): valley_part(label, 50.0, 3, 2.0),
            (10, "widths"): widths_part([width, 9.0], [0.5, 9.0])})
        z = np.zeros(1)
        run.run_probes = {"river_progress": schema.RiverProgress(
            steps=np.array([0, 10]), progress=np.array([0.0, 1.0]), river_steps=z,
            off_river_steps=z, probed_steps=np.array([10]), signed=False)}
        return run

    c = claims.judge_landscape(groups(single=probed("single", "V", 0.5),
                                      looped=probed("looped", "V", 0.8)))
    assert c.verdict == FAILS  # the rule is kappa's; the widths are only reported
    assert c.details["width_ratio"] == {"single": pytest.approx(1.0),
                                        "looped": pytest.approx(1.6)}
    assert "single 1.00, looped 1.60" in c.value


def test_missing_data_is_inconclusive_never_a_pass():
    for judge in claims.JUDGES:
        if judge is claims.judge_theory:
            continue
        assert judge({}).verdict == INCONCLUSIVE, judge.__name__
    no_probes = groups(single=markov_run("single", STALL), looped=markov_run("looped", RISE))
    assert claims.judge_landscape(no_probes).verdict == INCONCLUSIVE
    unpaired = groups(single=markov_run("single", STALL, seed=0),
                      looped=markov_run("looped", RISE, seed=1))
    c = claims.judge_sample_level(unpaired)
    assert c.verdict == INCONCLUSIVE and "share a seed" in c.details["missing"]
    no_wall = markov_run("shift", RISE, shift_step=20)
    del no_wall.metrics["wall"]
    c = claims.judge_shift(groups(looped=markov_run("looped", RISE), shift=no_wall))
    assert c.verdict == INCONCLUSIVE and "wall" in c.details["missing"]


def test_theory_claim_is_measured_by_the_simulator():
    c = claims.judge_theory({})
    assert c.details["closed_form_rel_error"] < 1e-8
    assert c.verdict == HOLDS  # the simulator is deterministic
    assert c.details["v_progress"] > c.details["u_progress"]
    assert c.details["v_loss"] < c.details["u_loss"]


def test_report_lists_every_claim():
    md = claims.to_markdown(claims.judge_all([]))
    for i in range(1, 7):
        assert f"### Claim {i}:" in md and f"| {i} |" in md
    assert md.count("### Claim") == 6


def test_claim4_reports_the_stored_qk_alignment_beside():
    run = markov_run("single", STALL)
    assert "Q/K" not in claims.judge_theory(groups(single=run)).value  # not probed: not shown
    run.run_probes = {"qk_alignment": schema.QkAlignment(
        steps=np.array([8, 16]), loops=np.array([1, 3]), cosine=np.array([0.2, 0.6]))}
    c = claims.judge_theory(groups(single=run))
    assert c.details["qk_cosine"] == [0.2, 0.6]
    assert "Q/K gradient cosine Single vs Looped 0.400 (min 0.200, max 0.600" in c.value
