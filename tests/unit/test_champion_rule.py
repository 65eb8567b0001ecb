"""Champion/challenger's speed rule: "not slower" is a non-inferiority test with a stated margin,
so that a retrain of the same architecture is not refused for a fraction of a percent that the
interleaved rounds resolve (CI saw 0.995× [0.991, 0.999] on a 9 µs digits model), while a
challenger shown to be slower by more than the margin still is."""

from __future__ import annotations

import pytest

from edgecompress.drift.champion import rule_text, slower_than_champion
from edgecompress.errors import ConfigError
from edgecompress.gate import GateConfig


def _speed(ci_low: float, ci_high: float) -> dict:
    return {
        "speedup": (ci_low + ci_high) / 2, "ci_low": ci_low, "ci_high": ci_high, "rounds": 8,
        "champion_p50_ms": 0.0094, "challenger_p50_ms": 0.0095,
    }  # fmt: skip


def test_a_resolved_half_percent_is_not_slower_by_default():
    assert slower_than_champion(_speed(0.991, 0.999), "jetson-orin-nano-emulated", GateConfig()) is None


def test_a_challenger_shown_slower_than_the_margin_is_refused_with_its_numbers():
    why = slower_than_champion(_speed(0.80, 0.90), "rpi4-emulated", GateConfig())
    assert why is not None and "rpi4-emulated" in why and "[0.800, 0.900] wholly below 0.97×" in why
    assert "8 interleaved rounds" in why


def test_the_interval_decides_not_the_point():
    # point 0.955 (below 0.97) but the interval reaches the floor: not shown slower
    assert slower_than_champion(_speed(0.94, 0.971), "rpi4-emulated", GateConfig()) is None
    assert slower_than_champion(_speed(0.94, 0.969), "rpi4-emulated", GateConfig()) is not None


def test_margin_zero_refuses_any_resolved_slowdown():
    strict = GateConfig(promotion_max_slowdown=0.0)
    assert slower_than_champion(_speed(0.991, 0.999), "rpi4-emulated", strict) is not None
    assert slower_than_champion(_speed(0.995, 1.004), "rpi4-emulated", strict) is None
    assert "not wholly below 1×" in rule_text(strict)


def test_rule_text_states_the_margin():
    assert "not wholly below 0.97×" in rule_text(GateConfig())


@pytest.mark.parametrize("bad", [-0.01, 1.0, float("nan")])
def test_an_impossible_margin_is_refused(bad):
    with pytest.raises(ConfigError, match="promotion_max_slowdown"):
        GateConfig(promotion_max_slowdown=bad).validate()
