"""The claim rules on synthetic runs that should and should not pass."""

from types import SimpleNamespace

import numpy as np
import pytest
from helpers import tiny_recipe

from landscape.analysis import claims
from landscape.analysis.claims import FAILS, HOLDS, INCONCLUSIVE, UNDERPOWERED
from landscape.runfile import schema


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
               probes=None, flops=None, model=None, shift=None):
    epochs = np.arange(len(complex_acc), dtype=float)
    model = model or {"loops": 3 if arch == "looped" else 1}
    shift = {"enabled": arch == "shift", **(shift or {})}
    wall_curve = np.linspace(0, wall or len(epochs), len(epochs))
    simple = np.asarray(simple_acc) if np.ndim(simple_acc) else np.full(len(epochs), simple_acc)
    events = [] if shift_step is None else [{"kind": "shift", "step": shift_step,
                                             "reason": "criterion"}]
    return FakeRun(
        recipe=tiny_recipe(model=model, shift=shift, train={"seed": seed}), path=f"{arch}.h5",
        metrics={"epoch": epochs, "step": epochs * 10, "complex.acc": np.asarray(complex_acc),
                 "simple.acc": simple, "wall": wall_curve,
                 "flops": wall_curve * 1e6 if flops is None else np.asarray(flops, dtype=float)},
        ceilings={"simple": {"acc": 0.99}, "complex": {"acc": 0.70}}, shift_step=shift_step,
        attrs={"steps_per_epoch": 10}, probes=probes or {}, events=events,
        layout=SimpleNamespace(size=100 * (3 if model.get("layers", 1) > 1 else 1)),
        probed_steps=sorted({s for s, _ in (probes or {})}))


STALL = [0.50, 0.60, 0.62, 0.62, 0.62, 0.62]
RISE = [0.50, 0.60, 0.63, 0.66, 0.68, 0.69]


def groups(**archs):
    return {"markov": {a: (r if isinstance(r, list) else [r]) for a, r in archs.items()}}


SEEDS = (0, 1, 2)


def seeded(arch, acc, seeds=SEEDS, **kw):
    return [markov_run(arch, acc, seed=s, **kw) for s in seeds]


def test_claim1_holds_on_the_papers_pattern():
    c = claims.judge_sample_level(groups(single=seeded("single", STALL),
                                         looped=seeded("looped", RISE)))
    gap = np.mean(RISE[-3:]) - np.mean(STALL[-3:])  # final: the mean of the last 3
    assert c.verdict == HOLDS and c.details["gap"] == [pytest.approx(gap)] * 3
    assert c.details["looped_simple_first"]
    assert c.details["order"]["looped"][0] == {"simple": 0.0, "complex": 2.0}
    assert "fixed budget" in c.value


def test_claim1_fails_when_looped_is_not_better_and_is_inconclusive_when_single_rises():
    c = claims.judge_sample_level(groups(single=seeded("single", RISE),
                                         looped=seeded("looped", STALL)))
    assert c.verdict == FAILS
    rising = [0.5, 0.55, 0.58, 0.60, 0.63, 0.66]  # no stall: the rule cannot say "holds"
    c = claims.judge_sample_level(groups(single=seeded("single", rising),
                                         looped=seeded("looped", RISE)))
    assert c.verdict == INCONCLUSIVE


def test_claim1_needs_simple_learnt_first():
    late = [0.1, 0.2, 0.3, 0.4, 0.98, 0.98]  # simple reaches 90 % after complex does
    c = claims.judge_sample_level(groups(single=seeded("single", STALL),
                                         looped=seeded("looped", RISE, simple_acc=late)))
    assert not c.details["looped_simple_first"] and c.verdict == INCONCLUSIVE


def test_claim1_reads_the_paired_differences_and_three_seeds():
    single = seeded("single", STALL)
    looped = [*seeded("looped", RISE, seeds=(0, 1)), markov_run("looped", STALL, seed=2)]
    c = claims.judge_sample_level(groups(single=single, looped=looped))
    assert c.verdict == INCONCLUSIVE  # 2 of 3 seeds with the gap: the interval reaches 0
    paired = c.details["paired"]
    assert paired["signs"] == {"positive": 2, "negative": 0, "n": 3}
    assert paired["lo"] < 0 < paired["hi"] and paired["smallest_effect"] == claims.GAP
    # no gap on any seed: the interval [0, 0] lies below the smallest effect of interest
    c = claims.judge_sample_level(groups(single=seeded("single", STALL),
                                         looped=seeded("looped", STALL)))
    assert c.verdict == FAILS
    assert c.details["power"]["seeds_used"] == 3 and 0 < c.details["power"]["power"] < 1
    c = claims.judge_sample_level(groups(single=seeded("single", STALL, seeds=(0, 1)),
                                         looped=seeded("looped", RISE, seeds=(0, 1))))
    assert c.verdict == UNDERPOWERED and c.details["would_be"] == HOLDS


def test_claim1_reports_the_controls_beside():
    deep = [0.50, 0.60, 0.64, 0.67, 0.69, 0.70]
    g = groups(single=seeded("single", STALL), looped=seeded("looped", RISE),
               untied=seeded("untied", deep, model={"layers": 3}),
               linear_single=seeded("ls", STALL, model={"attention": "linear"}),
               linear_looped=seeded("ll", RISE, model={"attention": "linear", "loops": 3}))
    c = claims.judge_sample_level(g)
    ctl = c.details["controls"]
    assert ctl["looped_minus_untied"]["values"] == [pytest.approx(-0.01)] * 3
    assert ctl["looped_minus_untied"]["untied_parameters"] == 300
    gap = np.mean(RISE[-3:]) - np.mean(STALL[-3:])
    assert ctl["linear_gap"]["values"] == [pytest.approx(gap)] * 3
    assert "depth matches recursion" in c.value
    share = (np.mean(deep[-3:]) - np.mean(STALL[-3:])) / (np.mean(RISE[-3:]) - np.mean(STALL[-3:]))
    assert ctl["looped_minus_untied"]["untied_share"] == [pytest.approx(share)] * 3
    assert set(c.details["order"]) >= {"untied", "linear_single", "linear_looped"}
    assert c.verdict == HOLDS  # the controls are reported, the rule is Single vs Looped


def test_claim1_reports_the_no_gap_languages_on_the_same_seeds():
    g = groups(single=seeded("single", STALL), looped=seeded("looped", RISE))
    g["markov_fixed1"] = {"single": seeded("single", STALL),
                          "looped": [markov_run("looped", STALL[:-1] + [x], seed=s)
                                     for s, x in zip(SEEDS, (0.625, 0.615, 0.62))]}
    g["markov_modes"] = {"single": seeded("single", STALL), "looped": seeded("looped", RISE)}
    g["markov_modes"]["looped"].append(markov_run("looped", RISE, seed=9))  # not a claim seed
    ctl = claims.judge_sample_level(g).details["controls"]["languages"]
    assert ctl["fixed1"]["no_gap"] and ctl["fixed1"]["paired"]["signs"]["n"] == 3
    assert not ctl["modes"]["no_gap"]  # a gap on a control language is reported as such
    assert ctl["modes"]["paired"]["seeds"] == [0, 1, 2]
    text = claims.judge_sample_level(g).value
    assert "no-gap language fixed1" in text and "a gap cannot be excluded" in text


def test_power_plan_and_planned_seeds_follow_the_pilot():
    plan = claims.power_plan("5", 5)
    assert plan["seeds_used"] == 5 and plan["sd"] > claims.PILOTS["5"].sd  # the upper end
    assert plan["power"] < plan["power_at_measured_sd"]
    assert claims.planned_seeds("5", budget=5) == 5  # the calculation asks for more
    assert claims.planned_seeds("5", budget=2) == claims.MIN_SEEDS
    assert claims.power_plan("6", 3)["pilot"] is None


def _shift_group(shift_curves, looped_curve=RISE, seeds=SEEDS, shift_wall=60, shift_flops=None,
                 extra=()):
    looped = seeded("looped", looped_curve, seeds=seeds, wall=100)
    shift = [markov_run("shift", c, seed=s, wall=shift_wall, shift_step=20, flops=shift_flops)
             for s, c in zip(seeds, shift_curves)]
    return groups(looped=looped, shift=[*shift, *extra])


def test_claim5_by_time_to_target():
    early = [0.50, 0.62, 0.68, 0.68, 0.68, 0.68]  # reaches Looped's final - 1 point sooner
    c = claims.judge_shift(_shift_group([early] * 3))
    assert c.verdict == HOLDS
    tt = c.details["time_to_target"]
    target = np.mean(RISE[-3:]) - 0.01
    assert c.details["target"][0] == pytest.approx(target)
    assert tt["looped"][0].seconds == pytest.approx(100 * 4 / 5)  # RISE reaches at epoch 4
    assert tt["shift"][0].seconds == pytest.approx(60 * 2 / 5)
    assert tt["shift"][0].flops == pytest.approx(60 * 2 / 5 * 1e6)
    assert c.details["ratio"]["flops"]["high"] < 1
    assert c.details["switch_drop"][0].drop == pytest.approx(0.68 - 0.68)
    final = c.details["paired"]["final"]["flops"]
    assert final["differences"] == [pytest.approx(np.log((100 * 4 / 5) / (60 * 2 / 5)))] * 3
    assert final["decision"] == HOLDS and final["ratio"]["mean"] == pytest.approx(0.3)
    rising = c.details["targets"][0]["rising"]
    assert rising == pytest.approx(0.9 * np.mean(RISE[-3:]))
    # the rising target: RISE reaches 0.616 at epoch 2, the early SHIFT at epoch 1
    assert c.details["paired"]["rising"]["seconds"]["ratio"]["mean"] == \
        pytest.approx((60 * 1 / 5) / (100 * 2 / 5))
    assert c.details["power"]["seeds_used"] == 3


def test_claim5_fails_when_shift_is_slower_or_never_gets_there():
    late = [0.50, 0.55, 0.58, 0.60, 0.62, 0.69]  # reaches it only at the end, more time
    c = claims.judge_shift(_shift_group([late] * 3, shift_wall=150))
    assert c.verdict == FAILS and c.details["ratio"]["seconds"]["low"] > 1
    c = claims.judge_shift(_shift_group([STALL] * 3))
    assert c.verdict == FAILS
    assert c.details["time_to_target"]["shift"][0].flops == np.inf


def test_claim5_mixed_is_inconclusive_and_two_seeds_underpowered():
    early = [0.50, 0.62, 0.68, 0.68, 0.68, 0.68]
    late = [0.50, 0.55, 0.58, 0.60, 0.62, 0.69]
    c = claims.judge_shift(_shift_group([early, late, late], shift_wall=100))
    assert c.verdict == INCONCLUSIVE
    c = claims.judge_shift(_shift_group([early] * 2, seeds=(0, 1)))
    assert c.verdict == UNDERPOWERED and c.details["would_be"] == HOLDS


def test_claim5_ablation_and_drop():
    early = [0.50, 0.62, 0.68, 0.68, 0.68, 0.68]
    dip = [0.50, 0.62, 0.55, 0.60, 0.68, 0.69]  # switch at step 20 (epoch 2): a dip after it
    extra = [markov_run("shift", dip, seed=0, wall=80, shift_step=10,
                        shift={"delta_1": d1, "window": w})
             for d1 in (0.003, 0.03) for w in (3, 8)]
    c = claims.judge_shift(_shift_group([early] * 3, extra=extra))
    grid = c.details["ablation"]
    assert len(grid) == 5 and {g.seed for g in grid} == {0}
    assert {(g.delta_1, g.window) for g in grid} >= {(0.003, 3), (0.03, 8)}
    dipped = [g for g in grid if g.delta_1 == 0.003 and g.window == 3][0]
    assert dipped.drop == pytest.approx(0.62 - 0.55)
    assert dipped.flops_ratio == pytest.approx((80 * 4 / 5) / (100 * 4 / 5))
    assert c.verdict == HOLDS  # the main setting is the one all seeds share


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
    no_flops = markov_run("shift", RISE, shift_step=20)
    del no_flops.metrics["flops"]
    c = claims.judge_shift(groups(looped=markov_run("looped", RISE), shift=no_flops))
    assert c.verdict == INCONCLUSIVE and "FLOP" in c.details["missing"]


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


def algo_run(arch, iid, beyond, seed=0, task="parity", positions=None, val=None, stop=None):
    """An algorithmic run: token accuracy ``iid`` in distribution, ``beyond`` at 12 and 16."""
    from landscape.train.recipe import load_recipe

    model = {"single": {"positions": positions or "none"},
             "looped": {"loop_rule": "size", "positions": "none"},
             "untied": {"layers": 8}}[arch]
    recipe = load_recipe(overrides=[{"task": {"name": task, "train_max_len": 8},
                                     "model": model, "train": {"seed": seed}}])
    steps = np.arange(4) * 100.0
    metrics = {"step": steps, "epoch": steps / 10, "iid.acc": np.full(4, iid),
               "val.acc": np.full(4, iid if val is None else val),
               "len_8.acc": np.full(4, iid), "len_12.acc": np.full(4, beyond),
               "len_16.acc": np.full(4, beyond / 2), "iid.seq_acc": np.full(4, iid)}
    events = [] if stop is None else [{"kind": "stop", "step": stop}]
    return FakeRun(recipe=recipe, metrics=metrics, path=f"{task}_{arch}.h5", events=events,
                   ceilings={}, attrs={"steps_per_epoch": 10}, probes={}, probed_steps=[],
                   shift_step=None)


def length_groups(single, looped, untied=None, seeds=SEEDS, tasks=("parity", "copy")):
    g = {}
    for t in tasks:
        g[t] = {"single": [algo_run("single", *single, seed=s, task=t) for s in seeds],
                "looped": [algo_run("looped", *looped, seed=s, task=t, stop=300) for s in seeds]}
        if untied:
            g[t]["untied"] = [algo_run("untied", *untied, seed=s, task=t) for s in seeds]
    return g


def test_claim6_holds_where_both_master_and_looped_extrapolates():
    c = claims.judge_length(length_groups(single=(0.99, 0.3), looped=(1.0, 0.9),
                                          untied=(0.97, 0.4)))
    assert c.verdict == HOLDS
    d = c.details
    assert d["gate"]["parity"]["single"][1] == {"mastered": True, "acc": 0.99, "step": None,
                                                "steps": 300}
    assert d["gate"]["parity"]["looped"][0]["step"] == 300
    assert d["per_length"]["parity"]["looped"][2][16] == 0.45
    assert d["paired"]["parity"]["differences"] == [pytest.approx(0.45)] * 3
    assert d["paired"]["parity"]["decision"] == HOLDS
    assert d["per_task"]["copy"]["untied"]["differences"] == [pytest.approx(0.375)] * 3
    assert d["steps"]["parity"]["single"] == {0: 300, 1: 300, 2: 300}
    iv = d["per_length_interval"]["parity"]["looped"][16]
    assert iv["mean"] == pytest.approx(0.45) and iv["n"] == 3
    assert "Looped n=8 1.00 [1.00, 1.00], n=12 0.90" in c.value


def test_claim6_does_not_hold_when_looped_does_not_extrapolate_better():
    c = claims.judge_length(length_groups(single=(0.99, 0.5), looped=(1.0, 0.5)))
    assert c.verdict == FAILS
    assert c.details["paired"]["copy"]["decision"] == FAILS


def test_claim6_leaves_out_seeds_that_do_not_master_and_needs_three_pairs():
    c = claims.judge_length(length_groups(single=(0.66, 0.5), looped=(1.0, 0.9)))
    assert c.verdict == INCONCLUSIVE
    assert c.details["gate"]["parity"]["single"][0]["mastered"] is False
    assert "0 seed(s) where both" in c.details["per_task"]["parity"]["reason"]
    assert "inconclusive" in c.value and "Single mastered on 0 of 3 seeds" in c.value
    # four seeds, one where Single does not master: three pairs remain, judged on them
    g = length_groups(single=(0.99, 0.3), looped=(1.0, 0.9), seeds=(0, 1, 2, 3))
    for t in g:
        g[t]["single"][3] = algo_run("single", 0.5, 0.0, seed=3, task=t)
    c = claims.judge_length(g)
    assert c.verdict == HOLDS and c.details["paired"]["parity"]["seeds"] == [0, 1, 2]
    c = claims.judge_length(length_groups(single=(0.99, 0.3), looped=(1.0, 0.9), seeds=(0, 1)))
    assert c.verdict == UNDERPOWERED and c.details["would_be"] == INCONCLUSIVE


def test_claim6_picks_singles_positions_on_validation_never_on_the_test_lengths():
    g = length_groups(single=(0.99, 0.3), looped=(1.0, 0.9), tasks=("parity",))
    for s in SEEDS:  # rope: better on val, worse beyond; learned: worse on val, best beyond
        g["parity"]["single"] += [algo_run("single", 0.99, 0.2, seed=s, positions="rope",
                                           val=0.995),
                                  algo_run("single", 0.99, 1.0, seed=s, positions="learned",
                                           val=0.97)]
    c = claims.judge_length(g)
    sel = c.details["selection"]["parity"][0]
    assert sel["chosen"] == "rope" and sel["split"] == "val"
    assert set(sel["candidates"]) == {"none", "rope", "learned"}
    assert c.details["paired"]["parity"]["differences"] == [pytest.approx(0.525)] * 3


def test_claim6_reports_the_markov_language_at_twice_its_length():
    g = length_groups(single=(0.99, 0.3), looped=(1.0, 0.9))
    long = {}
    for arch, acc in (("single", 0.5), ("looped", 0.6)):
        runs = []
        for s in SEEDS:
            r = markov_run(arch, RISE, seed=s)
            r.recipe = tiny_recipe(model={"loops": 3 if arch == "looped" else 1,
                                          "positions": "none"},
                                   task={"long_len": 24}, train={"seed": s})
            r.metrics["long.acc"] = np.full(6, acc)
            r.metrics["all.acc"] = np.full(6, 0.8)
            r.ceilings["long"] = {"acc": 0.7}
            runs.append(r)
        long[arch] = runs
    g["markov_long"] = long
    c = claims.judge_length(g)
    ml = c.details["markov_long"]
    assert ml["acc"] == {"single": [0.5] * 3, "looped": [0.6] * 3}
    assert ml["long_len"] == 24 and ml["ceiling"] == 0.7 and "24 tokens" in c.value


def test_claim3_reports_the_optimisers_valley_beside_without_a_vote():
    def run(seed, kappa, angles=(0.1, 0.5)):
        part = SimpleNamespace(angles_raw_edge=np.array(angles), edge_kappa=kappa, k=2,
                               near_edge=True, note="near the edge")
        return SimpleNamespace(recipe=tiny_recipe(train={"seed": seed}),
                               part=lambda name, step: part if name == "optimiser_valley"
                               else None)

    common = {s: (run(s, 2.0), run(s, 2.0 * f), 96) for s, f in zip(SEEDS, (3.0, 2.5, 3.5))}
    out = claims._optimiser_valley_report(common)["optimiser"]
    assert out["per_seed"][1]["looped"] == {"step": 96, "angles_raw_edge": [0.1, 0.5],
                                            "edge_kappa": 5.0, "k": 2, "near_edge": True,
                                            "note": "near the edge"}
    paired = out["edge_kappa_paired"]
    assert paired["differences"] == [pytest.approx(np.log(f)) for f in (3.0, 2.5, 3.5)]
    common[0] = (SimpleNamespace(recipe=tiny_recipe(), part=lambda name, step: None),
                 common[0][1], 96)  # a run without the part: that seed is left out
    assert list(claims._optimiser_valley_report(common)["optimiser"]["per_seed"]) == [1, 2]
    assert claims._optimiser_valley_report({}) == {}
