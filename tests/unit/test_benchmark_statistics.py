"""The statistics every benchmark report uses: mean with a t-interval and the target verdict."""

import pytest

from benchmarks.common import VERDICTS, exact_value, format_interval, mean_interval, verdict


def test_mean_interval_of_three_seeds_matches_the_t_distribution():
    interval = mean_interval([0.90, 0.92, 0.94])
    assert interval["mean"] == pytest.approx(0.92)
    # sd 0.02, sem 0.011547, t(0.975, 2) = 4.3027
    assert interval["high"] - interval["mean"] == pytest.approx(4.3027 * 0.011547, rel=1e-3)
    assert interval["n"] == 3 and interval["values"] == [0.90, 0.92, 0.94]


def test_one_value_has_no_interval_and_says_n_equals_one():
    assert mean_interval([0.5]) == {
        "mean": 0.5, "low": None, "high": None, "n": 1, "values": [0.5], "confidence": 0.95,
    }  # fmt: skip
    with pytest.raises(ValueError):
        mean_interval([])


@pytest.mark.parametrize(
    ("mean", "low", "high", "expected"),
    [
        (-0.3, -0.4, -0.2, "met"),
        (-0.45, -0.7, -0.2, "undecided"),  # the mean meets it, the interval crosses: not met
        (-0.6, -0.8, -0.4, "undecided"),
        (-0.9, -1.1, -0.7, "missed"),
        (-0.3, -0.5, -0.2, "met"),  # a bound on the threshold meets "≥"
    ],
)
def test_verdict_for_an_accuracy_drop_that_must_stay_above_minus_half_a_point(mean, low, high, expected):
    assert verdict({"mean": mean, "low": low, "high": high, "n": 3}, -0.5, higher_is_better=True) == expected


def test_verdict_for_a_lower_is_better_target():
    assert (
        verdict({"mean": 0.04, "low": 0.02, "high": 0.06, "n": 20}, 0.05, higher_is_better=False)
        == "undecided"
    )
    assert verdict({"mean": 0.03, "low": 0.02, "high": 0.05, "n": 20}, 0.05, higher_is_better=False) == "met"
    assert (
        verdict({"mean": 0.07, "low": 0.06, "high": 0.08, "n": 20}, 0.05, higher_is_better=False) == "missed"
    )


def test_strict_targets_need_the_whole_interval_beyond_the_threshold():
    """ "beats by more than 0": an interval touching 0 has not shown it; one wholly at or below has missed."""
    assert verdict({"mean": 0.3, "low": 0.0, "high": 0.6, "n": 3}, 0.0, True, strict=True) == "undecided"
    assert verdict({"mean": 0.3, "low": 0.01, "high": 0.6, "n": 3}, 0.0, True, strict=True) == "met"
    assert verdict({"mean": -0.3, "low": -0.6, "high": 0.0, "n": 3}, 0.0, True, strict=True) == "missed"


def test_one_run_is_undecided_and_prints_no_interval():
    """A single seed gives a point, not an interval: never met or missed, never a zero-width interval,
    also where a committed JSON stored n = 1 as low == high == mean."""
    assert verdict(mean_interval([-0.3]), -0.5, higher_is_better=True) == "undecided"
    assert verdict(mean_interval([-0.9]), -0.5, higher_is_better=True) == "undecided"
    stored = {"mean": 0.07, "low": 0.07, "high": 0.07, "n": 1, "values": [0.07], "confidence": 0.95}
    assert verdict(stored, 0.0, higher_is_better=True) == "undecided"
    assert format_interval(stored, unit=" pt") == "0.07 pt (n=1)"
    assert format_interval(mean_interval([93.11])) == "93.11 (n=1)"


def test_an_exact_value_is_decided_on_itself():
    assert verdict(exact_value(3.76), 2.0, higher_is_better=True) == "met"
    assert verdict(exact_value(1.5), 2.0, higher_is_better=True) == "missed"
    assert format_interval(exact_value(3.76), unit="x") == "3.76x (exact)"


def test_every_verdict_is_one_of_three():
    for low, high in [(0.0, 1.0), (0.6, 0.9), (0.1, 0.2), (0.5, 0.5)]:
        assert verdict({"mean": (low + high) / 2, "low": low, "high": high, "n": 5}, 0.5, True) in VERDICTS


def test_format_interval_scales_to_points():
    cell = format_interval({"mean": -0.0032, "low": -0.0055, "high": -0.0009, "n": 3}, scale=100, unit=" pt")
    assert cell == "-0.32 [-0.55, -0.09] pt (n=3)"


def test_no_committed_report_prints_a_zero_width_interval():
    """Issue 25: n=1 rows printed `93.04 [93.04, 93.04] (n=1)`; a figure without spread says why instead."""
    import re
    from pathlib import Path

    reports = sorted((Path(__file__).resolve().parents[2] / "benchmarks").glob("**/results.md"))
    assert len(reports) >= 9
    zero_width = re.compile(r"([-+]?\d+\.\d+)[^\s\[|]* \[\+?\1, \+?\1\]")
    for path in reports:
        found = zero_width.findall(path.read_text())
        assert not found, f"{path}: zero-width interval(s) {found[:3]}"


def test_an_interval_narrower_than_the_digits_shown_says_so():
    assert format_interval({"mean": 3.7218, "low": 3.72175, "high": 3.72179, "n": 3}, unit="x") == (
        "3.72x (95 % interval within ±0.005, n=3)"
    )
    assert (
        format_interval({"mean": 3.73, "low": 3.73, "high": 3.73, "n": 3}) == "3.73 (identical values, n=3)"
    )
