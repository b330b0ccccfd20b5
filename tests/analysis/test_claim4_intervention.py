"""Claim 4's intervention rule, both ways, on synthetic interventions (answer known)."""

import math

import numpy as np
import pytest

from landscape.analysis.claims import (
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    SMALLEST_EFFECT,
    intervention_rule,
    intervention_share_lost,
)
from landscape.runfile import schema as sc


def _part(share, start=2.0, gained=0.5):
    """An intervention whose valley-removed arm loses ``share`` of a ``gained`` decrease."""
    arm = dict(batch_loss=np.zeros(4), river=1.0, valley=0.1, valley_path=0.5)
    end = start - gained
    return sc.Intervention(
        steps=4, valley_k=3, valley_source="edge", projects="adam_update", loss_start=start,
        unchanged=sc.InterventionArm(loss_end=end, **arm),
        removed=sc.InterventionArm(loss_end=end + share * gained, **arm))


def test_share_lost_is_the_fraction_of_the_progress():
    assert intervention_share_lost(_part(0.3)) == pytest.approx(0.3)
    assert math.isnan(intervention_share_lost(_part(0.3, gained=0.0)))


def _judge(single, looped):
    seeds = list(range(3, 3 + len(single)))
    return intervention_rule(seeds, [_part(x) for x in single], [_part(y) for y in looped])


def test_the_rule_comes_out_all_three_ways():
    # Looped loses about 0.4 more of its progress on every seed: holds
    verdict, d = _judge([0.10, 0.12, 0.08, 0.11], [0.52, 0.50, 0.49, 0.53])
    assert verdict == HOLDS and d["paired"]["seeds"] == [3, 4, 5, 6]
    assert set(d["intervention"][3]) == {"single", "looped"} and d["power"]["pilot"] is None
    # Looped loses less than Single (interval below the smallest effect): does not hold
    verdict, _ = _judge([0.50, 0.52, 0.49, 0.51], [0.10, 0.12, 0.11, 0.09])
    assert verdict == FAILS
    # noisy differences around the smallest effect: cannot tell
    verdict, _ = _judge([0.1, 0.5, 0.1], [0.5, 0.1, 0.25])
    assert verdict == INCONCLUSIVE
    assert SMALLEST_EFFECT["4"] == 0.10


def test_a_seed_without_progress_is_left_out_and_named():
    seeds = [3, 4, 5]
    single = [_part(0.1), _part(0.1, gained=0.0), _part(0.12)]
    looped = [_part(0.5), _part(0.5), _part(0.55)]
    verdict, d = intervention_rule(seeds, single, looped)
    assert d["left_out"] == [4] and d["paired"]["seeds"] == [3, 5]
    verdict, d = intervention_rule(seeds[:1], single[:1], looped[:1])
    assert verdict == INCONCLUSIVE and "fewer than 2" in d["missing"]


# --- judge_theory reads the intervention; per-step hopping beside ---------------------------

P, ETA, SPACING = 12, 0.1, 32
LAMS = np.array([15.0, 12.0, 5.0])  # eta * lambda > 1 for the first two: they hop every step


def _window(start=32, n=64):
    """Gradient descent on a quadratic valley (coordinates 0-2) with a steady river drift
    (coordinate 5): valley coordinate i of step t is -eta lam_i (1 - eta lam_i)^t."""
    from landscape.runfile.windows import Window

    t = np.arange(n)[:, None]
    d = np.zeros((n, P))
    d[:, :3] = -ETA * LAMS * (1 - ETA * LAMS) ** t
    d[:, 5] = 0.01
    return Window(start=start, steps=np.arange(start, start + n), updates=d.astype(np.float32),
                  loss=np.linspace(2.0, 1.9, n), lr=np.full(n, ETA), loops=np.ones(n, int),
                  requested=n, planned=n)


def _valley():
    basis = np.eye(P)[:3].astype(np.float32)
    return sc.OptimiserValley(
        edge=40.0, factor=0.5, near_edge=True, all_near=False, k=3, note="near the edge",
        pre_values=LAMS, basis=basis, raw_k=3, angles_raw_edge=np.zeros(3),
        edge_eigvals=LAMS, edge_kappa=3.0, edge_force=float(np.sum(1 / LAMS)), edge_cv=0.3)


class _Run:
    """Just what claim 4 reads of a run: seed, checkpoints, windows and stored parts."""

    def __init__(self, arch, seed, shares, windows=True):
        from helpers import tiny_recipe

        self.recipe = tiny_recipe(model={"loops": {"looped": 3}.get(arch, 1)},
                                  train={"seed": seed})
        self.name, self.path = f"{arch}_s{seed}", f"{arch}_s{seed}.h5"
        self.steps = np.arange(0, 160, SPACING)
        self._parts = {(32, "optimiser_valley"): _valley()} if windows else {}
        for start, share in shares.items():
            self._parts[(start, "intervention")] = _part(share)
        self._windows = [_window()] if windows else []
        self.probed_steps = sorted({s for s, _ in self._parts} | {32})
        self.attrs, self.metrics, self.shift_step = {"steps_per_epoch": SPACING}, {}, None

    def part(self, name, step=-1):
        return self._parts.get((step, name))

    def windows(self):
        return self._windows


def _groups(single, looped, seeds=(3, 4, 5), **kw):
    return {"markov": {"single": [_Run("single", s, {32: x}, **kw) for s, x in
                                  zip(seeds, single)],
                       "looped": [_Run("looped", s, {32: y}, **kw) for s, y in
                                  zip(seeds, looped)]}}


def test_claim4_reads_the_intervention_both_ways():
    from landscape.analysis.claims import UNDERPOWERED, judge_theory

    c = judge_theory(_groups([0.10, 0.12, 0.08], [0.52, 0.50, 0.55]))
    assert c.verdict == HOLDS, c.value
    d = c.details
    assert d["paired"]["seeds"] == [3, 4, 5] and d["paired"]["signs"]["positive"] == 3
    assert d["intervention"][4]["looped"]["start"] == 32 and "power" in d
    assert d["simulator"]["algebra_ok"] and "no vote" in d["between_checkpoints"]["label"]
    # per step: two of the three valley modes flip at every step and are seen to; summed
    # over the checkpoints' spacing (an even number of steps) no hop is left
    ps = d["per_step"][3]["looped"]
    assert ps["hop_fraction"] == pytest.approx(2 / 3)
    assert ps["spaced_hop_fraction"] == 0.0
    assert ps["river_per_step"] == pytest.approx(0.01, rel=1e-5)
    amp = np.sqrt(np.mean((ETA * LAMS * np.abs(1 - ETA * LAMS) ** np.arange(64)[:, None]) ** 2,
                          axis=1)).mean()
    assert ps["amplitude"] == pytest.approx(amp, rel=1e-5)
    assert judge_theory(_groups([0.50, 0.52, 0.49], [0.10, 0.12, 0.11])).verdict == FAILS
    assert judge_theory(_groups([0.1, 0.5, 0.1], [0.5, 0.1, 0.25])).verdict == INCONCLUSIVE
    two = judge_theory(_groups([0.10, 0.12], [0.52, 0.50], seeds=(3, 4)))
    assert two.verdict == UNDERPOWERED and two.details["would_be"] == HOLDS


def test_claim4_without_interventions_is_inconclusive_never_a_pass():
    from landscape.analysis.claims import judge_theory

    groups = _groups([0.1, 0.1, 0.1], [0.9, 0.9, 0.9])
    for runs in groups["markov"].values():
        for r in runs:
            r._parts = {k: v for k, v in r._parts.items() if k[1] != "intervention"}
    c = judge_theory(groups)
    assert c.verdict == INCONCLUSIVE and "no intervention part" in c.details["missing"]
    assert c.details["paired"] is None and c.details["power"]["seeds_used"] == 0
    assert c.details["per_step"][5]["single"]["hop_fraction"] == pytest.approx(2 / 3)
    # windows without the optimiser's valley at their start are not measured
    bare = judge_theory(_groups([0.1, 0.1, 0.1], [0.5, 0.5, 0.5], windows=False))
    assert bare.details["per_step"][3] == {"single": None, "looped": None}
    assert bare.verdict == HOLDS  # the rule reads the interventions, not the windows


def test_claim4_pairs_each_seed_at_the_latest_start_both_models_have():
    from landscape.analysis.claims import judge_theory

    groups = _groups([0.1, 0.1, 0.1], [0.5, 0.5, 0.5])
    for r in groups["markov"]["single"]:  # Single also continued from a later start
        r._parts[(64, "intervention")] = _part(0.9)
        r.probed_steps = sorted({*r.probed_steps, 64})
    c = judge_theory(groups)
    assert c.verdict == HOLDS and c.details["intervention"][3]["single"]["start"] == 32
    for r in groups["markov"]["looped"]:
        r._parts[(64, "intervention")] = _part(0.85)
        r.probed_steps = sorted({*r.probed_steps, 64})
    later = judge_theory(groups)  # now 64 is common: 0.85 - 0.9, below the smallest effect
    assert later.details["intervention"][3]["single"]["start"] == 64
    assert later.verdict == FAILS


def test_claim4_end_to_end_on_tiny_runs_with_windows_and_interventions(tmp_path):
    import json

    from helpers import grouped, tiny_recipe

    from landscape.analysis.claims import UNDERPOWERED, judge_theory, to_json
    from landscape.probe import GeometrySettings, HessianSettings, ProbeSettings, probe
    from landscape.runs.run import Run
    from landscape.train.trainer import train

    hs = HessianSettings(k_top=3, k_bottom=0, slq_runs=2, slq_steps=8, trace_hvps=3,
                         exact="never")
    gs = GeometrySettings(grid=3, width_points=3, width_dirs=1, spread_k=2, spread_dirs=2,
                          valley_k=4, fallback_k=3, intervention_steps=8)
    runs = {}
    for arch, loops in (("single", 1), ("looped", 3)):
        r = tiny_recipe(model={"d_model": 4, "n_heads": 1, "loops": loops},
                        train={"seed": 3, "window_steps": 8, "window_at": [8],
                               "intervene_at": [8]})
        path = train(r, tmp_path / f"{arch}.h5")
        probe(path, ProbeSettings(steps="8", hessian=hs, geometry=gs))
        runs[arch] = Run.open(path)
    c = judge_theory(grouped(single=runs["single"], looped=runs["looped"]))
    assert c.verdict == UNDERPOWERED  # one seed: no interval
    d = json.loads(to_json([c]))[0]["details"]
    for arch in ("single", "looped"):
        iv = d["intervention"]["3"][arch]
        assert iv["start"] == 8 and iv["steps"] == 8 and iv["valley"] == "edge"
        ps = d["per_step"]["3"][arch]
        assert 0 <= ps["hop_fraction"] <= 1 and ps["amplitude"] > 0
        assert ps["windows"][0]["start"] == 8 and ps["windows"][0]["steps"] == 8
    assert "between_checkpoints" in d and d["simulator"]["algebra_ok"]
