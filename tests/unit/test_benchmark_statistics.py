"""The statistics every benchmark report uses: mean with a t-interval and the target verdict."""

import pytest

from benchmarks.common import format_interval, mean_interval, verdict


def test_mean_interval_of_three_seeds_matches_the_t_distribution():
    interval = mean_interval([0.90, 0.92, 0.94])
    assert interval["mean"] == pytest.approx(0.92)
    # sd 0.02, sem 0.011547, t(0.975, 2) = 4.3027
    assert interval["high"] - interval["mean"] == pytest.approx(4.3027 * 0.011547, rel=1e-3)
    assert interval["n"] == 3 and interval["values"] == [0.90, 0.92, 0.94]


def test_one_value_has_no_width_and_says_n_equals_one():
    assert mean_interval([0.5]) == {
        "mean": 0.5, "low": 0.5, "high": 0.5, "n": 1, "values": [0.5], "confidence": 0.95,
    }  # fmt: skip
    with pytest.raises(ValueError):
        mean_interval([])


@pytest.mark.parametrize(
    ("mean", "low", "high", "expected"),
    [
        (-0.3, -0.4, -0.2, "met"),
        (-0.45, -0.7, -0.2, "met (interval crosses threshold)"),
        (-0.6, -0.8, -0.4, "missed (within interval)"),
        (-0.9, -1.1, -0.7, "missed"),
    ],
)
def test_verdict_for_an_accuracy_drop_that_must_stay_above_minus_half_a_point(mean, low, high, expected):
    assert verdict({"mean": mean, "low": low, "high": high}, -0.5, higher_is_better=True) == expected


def test_verdict_for_a_lower_is_better_target():
    assert verdict({"mean": 0.04, "low": 0.02, "high": 0.06}, 0.05, higher_is_better=False) == (
        "met (interval crosses threshold)"
    )
    assert verdict({"mean": 0.07, "low": 0.06, "high": 0.08}, 0.05, higher_is_better=False) == "missed"


def test_one_run_is_never_a_plain_met_or_missed():
    """A single seed gives a point, not an interval: the verdict says the figure is unqualified."""
    assert verdict(mean_interval([-0.3]), -0.5, higher_is_better=True) == "met (one run: no interval)"
    assert verdict(mean_interval([-0.9]), -0.5, higher_is_better=True) == "missed (one run: no interval)"


def test_format_interval_scales_to_points():
    cell = format_interval({"mean": -0.0032, "low": -0.0055, "high": -0.0009, "n": 3}, scale=100, unit=" pt")
    assert cell == "-0.32 [-0.55, -0.09] pt (n=3)"
