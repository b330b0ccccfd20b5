"""Seed intervals against printed t-tables and by their coverage, and the comparison rule."""

import json
import math

import numpy as np
import pytest

from landscape.analysis.stats import compare, interval
from landscape.errors import LandscapeError

# two-sided 95 % Student-t quantiles t(0.975, df), as printed in statistical tables
T975 = {1: 12.706, 2: 4.303, 4: 2.776, 9: 2.262}


@pytest.mark.parametrize("df", sorted(T975))
def test_interval_half_width_is_the_t_quantile_times_the_standard_error(df):
    x = np.random.default_rng(df).normal(3.0, 2.0, df + 1)
    iv = interval(x)
    se = np.std(x, ddof=1) / math.sqrt(len(x))
    assert iv.mean == pytest.approx(x.mean())
    assert (iv.hi - iv.mean) / se == pytest.approx(T975[df], abs=1e-3)
    assert (iv.mean - iv.lo) / se == pytest.approx(T975[df], abs=1e-3)
    assert iv.n == df + 1 and iv.level == 0.95


def test_intervals_cover_the_true_mean_at_their_level():
    rng = np.random.default_rng(0)
    trials = 4000
    for level, n in ((0.95, 3), (0.8, 5)):
        hits = sum(iv.lo <= 1.0 <= iv.hi for iv in
                   (interval(rng.normal(1.0, 0.5, n), level) for _ in range(trials)))
        sd = math.sqrt(level * (1 - level) / trials)
        assert abs(hits / trials - level) < 4 * sd, (level, hits / trials)


def test_interval_and_compare_both_ways():
    a, b = interval([1.0, 1.1, 0.9]), interval([2.0, 2.1, 1.9])
    assert compare(b, a) == 1 and compare(a, b) == -1
    assert compare(interval([1.0, 3.0, 2.0]), interval([1.5, 2.5, 2.0])) == 0
    one = interval([5.0])
    assert one.n == 1 and one.lo == -math.inf and compare(one, a) == 0
    assert interval([np.nan, 1.0, 2.0]).n == 2
    assert interval([]).n == 0 and compare(interval([]), a) == 0


def test_missing_seeds_stay_visible_and_the_forms_are_plain():
    iv = interval([1.0, np.nan, 3.0])
    assert iv.n == 2 and iv.mean == 2.0 and math.isnan(iv.values[1])
    d = json.loads(json.dumps(iv.as_dict()))
    assert d["n"] == 2 and d["values"][1] == "nan"
    assert json.loads(json.dumps(interval([4.0]).as_dict()))["lo"] == "-inf"
    assert iv.text(".2f").endswith("(2 seeds)") and iv.text(".2f").startswith("2.00 [")
    assert interval([4.0]).text() == "4 (1 seed, no interval)"
    assert interval([np.nan]).text() == "missing"


@pytest.mark.parametrize("level", [0.0, 1.0, 1.5])
def test_level_outside_zero_one_is_refused(level):
    with pytest.raises(LandscapeError, match="level must be in"):
        interval([1.0, 2.0], level)
