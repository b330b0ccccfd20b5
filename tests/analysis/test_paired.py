"""Tests for landscape.analysis.paired: the paired interval against scipy, the decision
both ways, the power against simulation, the spread's upper end by coverage."""

import math

import numpy as np
import pytest
from scipy import stats as sst

from landscape.analysis import paired as P
from landscape.errors import LandscapeError


def test_the_interval_is_scipys_one_sample_t_interval_of_the_differences():
    a, b = [0.61, 0.58, 0.64, 0.60], [0.66, 0.67, 0.65, 0.69]
    p = P.paired([3, 4, 5, 6], a, b)
    ci = sst.ttest_1samp(np.subtract(b, a), 0.0).confidence_interval(0.95)
    assert (p.lo, p.hi) == pytest.approx((ci.low, ci.high), rel=1e-12)
    assert p.mean == pytest.approx(np.mean(np.subtract(b, a)))
    assert (p.positive, p.negative, p.n) == (4, 0, 4)


def test_the_interval_covers_the_true_difference_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(3000):
        a = rng.normal(0, 1, 5)
        b = a + 0.3 + rng.normal(0, 0.2, 5)
        p = P.paired(range(5), a, b)
        hits += p.lo <= 0.3 <= p.hi
    assert hits / 3000 == pytest.approx(0.95, abs=0.015)


@pytest.mark.parametrize("diffs, want", [
    ([0.05, 0.06, 0.07, 0.06], "holds"),            # clearly above 0
    ([0.001, -0.002, 0.0, 0.001], "does not hold"),  # every effect >= 0.02 excluded
    ([0.05, -0.04, 0.06], "inconclusive"),           # too spread to tell
    ([-0.05, -0.06, -0.07], "does not hold"),        # the other sign
])
def test_the_decision_comes_out_each_way(diffs, want):
    p = P.paired(range(len(diffs)), np.zeros(len(diffs)), diffs)
    assert p.decision(0.02) == want


def test_one_pair_has_no_interval_and_decides_nothing():
    p = P.paired([7], [0.5], [0.9])
    assert p.lo == -math.inf and p.hi == math.inf and p.decision(0.02) == "inconclusive"
    assert "no interval" in p.text()


@pytest.mark.parametrize("n, effect, sd", [(3, 0.06, 0.02), (5, 0.02, 0.03), (8, 0.01, 0.02)])
def test_power_matches_a_simulation_of_the_rule(n, effect, sd):
    rng = np.random.default_rng(n)
    trials = 4000
    said = sum(P.paired(range(n), np.zeros(n), rng.normal(effect, sd, n)).decision(0.001)
               == "holds" for _ in range(trials))
    assert P.power(n, effect, sd) == pytest.approx(said / trials, abs=0.025)


def test_seeds_needed_grows_as_the_effect_shrinks_and_stops_at_the_cap():
    big = P.seeds_needed(effect=0.06, sd=0.02)
    small = P.seeds_needed(effect=0.03, sd=0.02)
    assert big is not None and small is not None and big < small <= P.MAX_SEEDS
    assert P.power(big, 0.06, 0.02) >= P.TARGET_POWER > P.power(big - 1, 0.06, 0.02)
    assert P.seeds_needed(effect=0.001, sd=0.02) is None
    assert P.power(1, 1.0, 0.1) == 0.0


def test_the_spreads_upper_end_covers_the_true_spread():
    rng = np.random.default_rng(1)
    covered = np.mean([P.sd_upper(rng.normal(0, 2.0, 3)) >= 2.0 for _ in range(3000)])
    assert covered == pytest.approx(0.975, abs=0.01)  # the upper end of a 95 % interval
    x = [1.0, 1.2, 0.9]
    assert P.sd_upper(x) > np.std(x, ddof=1)


def test_log_ratios_pair_ratios_on_a_log_scale():
    zeros, lr = P.log_ratios([10.0, 20.0], [7.0, 16.0])
    p = P.paired([0, 1], zeros, lr)
    assert p.differences == pytest.approx((math.log(0.7), math.log(0.8)))
    with pytest.raises(LandscapeError, match="> 0"):
        P.log_ratios([1.0, 0.0], [1.0, 1.0])


def test_the_plan_and_the_json_say_what_was_assumed():
    plan = P.plan(effect=0.02, sd=P.sd_upper([0.01, 0.03, 0.02]), sd_source="pilot, 3 seeds",
                  seeds_used=3)
    d = plan.as_dict()
    assert d["seeds_used"] == 3 and 0 <= d["power"] < P.TARGET_POWER and d["cap"] == 8
    out = P.paired([0, 1, 2], [1, 1, 1], [2, 2.2, 1.8]).as_dict(smallest_effect=0.5)
    assert out["decision"] == "holds" and out["signs"] == {"positive": 3, "negative": 0, "n": 3}


@pytest.mark.parametrize("args", [
    ([0, 1], [1.0], [1.0, 2.0]),          # lengths differ
    ([0, 0], [1.0, 1.0], [1.0, 2.0]),     # a seed twice
    ([0, 1], [1.0, np.nan], [1.0, 2.0]),  # not finite
])
def test_bad_inputs_are_one_line_errors(args):
    with pytest.raises(LandscapeError):
        P.paired(*args)
