"""Time to target, order of learning and intervals, on synthetic curves."""

import math

import numpy as np
import pytest
from scipy import stats

from landscape.analysis.targets import (
    drop_after,
    epoch_to_fraction,
    mean_ci,
    ratio_ci,
    time_to_target,
)


def test_time_to_target_is_the_cost_at_the_first_evaluation_that_reaches_it():
    cost = np.array([0.0, 5.0, 9.0, 20.0, 21.0])
    acc = np.array([0.2, 0.5, 0.69, 0.7, 0.6])
    assert time_to_target(cost, acc, 0.7) == 20.0
    assert time_to_target(cost, acc, 0.5) == 5.0  # reaching it exactly counts
    assert time_to_target(cost, acc, 0.71) == math.inf
    assert time_to_target(cost, acc, 0.0) == 0.0


def test_time_to_target_on_a_known_curve():
    # acc(t) = 1 - exp(-t / 10) sampled every 0.5 s: the target 0.8 is first seen at the
    # first sample with t >= 10 ln 5 = 16.09...
    t = np.arange(0, 40, 0.5)
    acc = 1 - np.exp(-t / 10)
    assert time_to_target(t, acc, 0.8) == pytest.approx(np.ceil(10 * np.log(5) / 0.5) * 0.5)


def test_epoch_to_fraction_of_final():
    acc = np.array([0.1, 0.3, 0.5, 0.55, 0.6])
    assert epoch_to_fraction(np.arange(5.0), acc, 0.9) == 3.0  # 0.54
    assert epoch_to_fraction(np.arange(5.0), acc, 0.9, final=0.5) == 2.0


def test_drop_after_a_switch():
    step = np.array([0, 10, 20, 30, 40, 50])
    acc = np.array([0.5, 0.6, 0.4, 0.45, 0.7, 0.2])
    d = drop_after(step, acc, 10)
    assert d == {"before": 0.6, "min_after": 0.4, "drop": pytest.approx(0.2)}
    assert drop_after(step, acc, 15)["before"] == 0.6  # between evaluations: the last before
    assert math.isnan(drop_after(step, acc, 50)["drop"])  # nothing after


def test_intervals():
    x = [1.0, 2.0, 4.0]
    ci = mean_ci(x)
    half = stats.t.ppf(0.975, 2) * np.std(x, ddof=1) / np.sqrt(3)
    assert ci["mean"] == pytest.approx(7 / 3) and ci["high"] - ci["mean"] == pytest.approx(half)
    assert mean_ci([3.0])["low"] == -math.inf and math.isnan(mean_ci([])["mean"])
    r = ratio_ci([1.0, 2.0, 4.0], [2.0, 4.0, 8.0])  # all exactly 0.5
    assert r["mean"] == pytest.approx(0.5) and r["low"] == pytest.approx(0.5)
    r = ratio_ci([1.0, math.inf], [2.0, 2.0])
    assert r["mean"] == math.inf and r["low"] == pytest.approx(0.5)
