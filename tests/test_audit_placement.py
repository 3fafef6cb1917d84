"""Placement skill of an attribution against occlusion: hand-computed cases."""
import math

import numpy as np
import pytest

from unmask.audit.placement import content_mask, misplacement, placement_skill


def test_all_mass_on_most_effective_token_is_skill_one():
    occl = np.array([0.0, 0.5, -2.0, 0.1, 0.0])      # [CLS] a b c [SEP]
    scores = np.array([9.0, 0.0, 3.0, 0.0, 9.0])      # specials are ignored whatever their score
    content = content_mask([None, 0, 0, 0, None])
    assert placement_skill(scores, occl, content) == pytest.approx(1.0)


def test_uniform_attribution_is_skill_zero_and_misplaced_mass_is_negative():
    occl = np.array([0.0, 1.0, 0.2, 0.2, 0.0])
    content = content_mask([None, 0, 0, 0, None])
    assert placement_skill(np.array([0, 1, 1, 1, 0.0]), occl, content) == pytest.approx(0.0)
    # imp = [1, .2, .2], chance = 1.4 / 3; all on the 0.2 tokens: placed = 0.2
    skill = placement_skill(np.array([0, 0, 1, -1, 0.0]), occl, content)
    chance = 1.4 / 3
    assert skill == pytest.approx((0.2 - chance) / (1 - chance))
    assert skill < 0


def test_undefined_inputs_are_skipped_and_misplacement_averages_the_rest():
    content = content_mask([None, 0, 0, None])
    flat = placement_skill(np.array([0, 1, 2, 0.0]), np.array([0, 1, 1, 0.0]), content)  # all matter equally
    assert flat is None
    assert placement_skill(np.array([0, 0, 0, 0.0]), np.array([0, 1, 2, 0.0]), content) is None
    assert placement_skill(np.array([0, 1.0, 0]), np.array([0, 1.0, 0]), content_mask([None, 0, None])) is None
    good = (np.array([0, 0, 1.0, 0]), np.array([0, 0.5, 1.0, 0]), content)        # skill 1
    bad = (np.array([0, 1.0, 0, 0]), np.array([0, 0.5, 1.0, 0]), content)         # placed .5, chance .75 -> -1
    value = misplacement(*zip(good, bad, (np.array([0, 1, 2, 0.0]), np.array([0, 1, 1, 0.0]), content)))
    assert value == pytest.approx(1 - (1.0 + -1.0) / 2)
    assert math.isnan(misplacement([], [], []))


def test_fire_value_inverts_the_tail():
    from unmask.audit.calibration import Calibration, StatCalibration, fire_values

    cal = Calibration({"gradient.misplacement": StatCalibration(0.9, 0.02, 14),
                       "gradient.unfaithfulness": StatCalibration(0.8, 0.1, 14),   # reported, not tested
                       "any.misplacement": StatCalibration(0.9, 0.02, 56)})       # pooled, not tested
    values = fire_values(cal, 1e-3)
    assert list(values) == ["gradient.misplacement"]
    v = values["gradient.misplacement"]
    assert cal.stats["gradient.misplacement"].tail(v, 0.05) == pytest.approx(1e-3, rel=1e-6)
    assert v > 0.9 + 3 * 0.05  # the floor (0.05), not the 0.02 spread, sets the scale
