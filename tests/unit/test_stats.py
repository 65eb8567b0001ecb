"""The shared decision statistics hold their stated level where the old ones did not: Tango's score
interval at few discordant pairs, and the t interval on paired latency rounds at the minimum rounds."""

import math

import numpy as np
import pytest

from edgecompress.stats import (
    MIN_LATENCY_ROUNDS,
    min_decision_images,
    paired_difference_interval,
    speedup_interval,
)


def test_no_discordant_pair_does_not_collapse_to_zero():
    """d9a55b6's bootstrap said [0, 0] here; the exact one-sided 97.5 % bound at n = 270 is 1.36 pt."""
    lo, hi = paired_difference_interval(0, 0, 270)
    assert hi >= 0.013 and lo <= -0.013
    assert hi == pytest.approx(1.96**2 / (270 + 1.96**2), rel=1e-3)


def test_one_lost_image_bound_is_near_the_exact_one():
    """One image lost of 270: the bootstrap gave 1.11 pt, Clopper-Pearson's exact bound is 2.05 pt."""
    _, hi = paired_difference_interval(1, 0, 270)
    assert 0.0195 < hi < 0.0215


def test_interval_is_ordered_and_contains_the_point():
    for b, c, n in [(0, 0, 10), (3, 1, 50), (20, 0, 270), (0, 7, 100), (40, 40, 2000), (10, 0, 10)]:
        lo, hi = paired_difference_interval(b, c, n)
        assert -1 <= lo <= (b - c) / n <= hi <= 1


def test_counts_out_of_range_are_refused():
    with pytest.raises(ValueError):
        paired_difference_interval(5, 6, 10)


@pytest.mark.parametrize(("n", "p_parent_only", "p_child_only"), [(270, 0.006, 0.002), (120, 0.02, 0.0)])
def test_accuracy_interval_covers_at_its_level(n, p_parent_only, p_child_only):
    """Seeded simulation: the true drop is above the upper bound (a bad child accepted) at most ~2.5 %."""
    rng = np.random.default_rng(11)
    truth, trials = p_parent_only - p_child_only, 1500
    above = 0
    for _ in range(trials):
        b, c, _ = rng.multinomial(n, [p_parent_only, p_child_only, 1 - p_parent_only - p_child_only])
        above += paired_difference_interval(int(b), int(c), n)[1] < truth - 1e-12
    assert above / trials <= 0.025 + 3 * math.sqrt(0.025 * 0.975 / trials)


def test_min_decision_images_is_where_an_identical_child_can_pass():
    for drop in (0.005, 0.01, 0.02, 0.05):
        n = min_decision_images(drop)
        assert paired_difference_interval(0, 0, n)[1] <= drop + 1e-12
        assert paired_difference_interval(0, 0, n - 1)[1] > drop
    assert min_decision_images(0.01) == 381


def _equal_rounds(rng, rounds, spikes):
    """Two equally fast models timed in alternating rounds: a shared per-round load factor, lognormal
    jitter per measurement and, with `spikes`, an occasional slow measurement of either model."""
    load = rng.lognormal(0, 0.15, rounds)
    parent = 0.05 * load * rng.lognormal(0, 0.05, rounds)
    child = 0.05 * load * rng.lognormal(0, 0.05, rounds)
    if spikes:
        parent *= np.where(rng.random(rounds) < 0.1, 1.5, 1.0)
        child *= np.where(rng.random(rounds) < 0.1, 1.5, 1.0)
    return parent, child


@pytest.mark.parametrize("spikes", [False, True])
def test_false_faster_rate_at_the_minimum_rounds(spikes):
    """Seeded simulation of equal models: 'faster' (lower bound > 1) at most the nominal 2.5 % (+ 3 SE).
    d9a55b6's percentile bootstrap called them faster ~13 % of the time at 3 rounds, 4.5 % at 4."""
    rng = np.random.default_rng(5)
    trials = 3000
    faster = 0
    for _ in range(trials):
        parent, child = _equal_rounds(rng, MIN_LATENCY_ROUNDS, spikes)
        faster += speedup_interval(parent, child)["ci_low"] > 1.0
    rate = faster / trials
    assert rate <= 0.025 + 3 * math.sqrt(0.025 * 0.975 / trials), rate


def test_a_real_speed_up_is_found_at_the_minimum_rounds():
    rng = np.random.default_rng(6)
    parent, child = _equal_rounds(rng, MIN_LATENCY_ROUNDS, False)
    out = speedup_interval(parent, child / 1.5)
    assert (
        1.3 < out["ci_low"] <= out["speedup"] <= out["ci_high"] < 1.7 and out["rounds"] == MIN_LATENCY_ROUNDS
    )
