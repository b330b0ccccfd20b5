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
