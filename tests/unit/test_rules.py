"""One accuracy rule (issue 27): its range check and default are defined once (`rules.AccuracyRule`) and
the gate, the target-ISA check, autotune, the local pipeline runner and `edgecompress run` all use it;
reasons are codes plus messages; device-class defaults and help come from the profiles."""

from __future__ import annotations

import argparse

import pytest

from edgecompress.errors import ConfigError
from edgecompress.gate import GateConfig
from edgecompress.isa import IsaCheckConfig
from edgecompress.params import build, flat_values, surface
from edgecompress.quantize.autotune import AutotuneConfig
from edgecompress.rules import AccuracyRule, Reason, reasons_from_json, reasons_json

DROP = {"drop": 0.004, "ci_low": -0.002, "ci_high": 0.013}


def test_the_rule_decides_on_the_bound_it_names():
    assert AccuracyRule(0.01, "point").breaks(DROP, "val") is None
    reason = AccuracyRule(0.01, "upper").breaks(DROP, "val")
    assert reason.code == "accuracy_drop_too_large"
    assert reason.message == (
        "accuracy upper 95% bound of the drop 1.30 points > allowed 1.00 (drop 0.40, 95% CI [-0.20, 1.30] on val)"
    )
    assert AccuracyRule(0.02).breaks(DROP, "val") is None


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (AccuracyRule(0.0), r"max_accuracy_drop must be in \(0, 1\)"),
        (AccuracyRule(1.0), r"max_accuracy_drop must be in \(0, 1\)"),
        (AccuracyRule(accuracy_rule="median"), "accuracy_rule must be one of"),
        (AccuracyRule(confidence=1.0), "confidence"),
    ],
)
def test_one_range_check(rule, message):
    with pytest.raises(ConfigError, match=message):
        rule.validate()


def test_every_decision_shares_the_rule_and_its_default():
    default = AccuracyRule()
    assert GateConfig().rule == default and IsaCheckConfig().gate.rule == default
    assert AutotuneConfig().criterion.rule.max_accuracy_drop == default.max_accuracy_drop
    # the flat surfaces keep their names: the gate's and the ISA check's, and autotune's max_drop
    for config, names in (
        (GateConfig, {"max_accuracy_drop", "accuracy_rule", "confidence"}),
        (IsaCheckConfig, {"max_accuracy_drop", "accuracy_rule", "confidence"}),
        (AutotuneConfig, {"max_drop"}),
    ):
        flat = {p.name for p in surface(config)}
        assert names <= flat and not ({"max_accuracy_drop", "max_drop"} - names) & flat


def test_flat_values_build_back_at_any_depth():
    """IsaCheckConfig → GateConfig → AccuracyRule: three levels, and a renamed one (autotune's max_drop)."""
    isa = build(IsaCheckConfig, {"max_accuracy_drop": 0.03, "accuracy_rule": "point", "confidence": 0.9})
    assert isa.gate.rule == AccuracyRule(0.03, "point", 0.9)
    assert build(IsaCheckConfig, flat_values(isa)) == isa
    tune = build(AutotuneConfig, {"max_drop": 0.2, "relative": True})
    assert tune.criterion.max_drop == 0.2 and tune.criterion.relative
    assert flat_values(tune)["max_drop"] == 0.2 and build(AutotuneConfig, flat_values(tune)) == tune


def test_reasons_round_trip_beside_the_messages_readers_read():
    reasons = [Reason("speed_not_faster", "not faster than 1×"), Reason("isa_check_rejected", "isa-check x")]
    data = reasons_json(reasons)
    assert data == {
        "reasons": ["not faster than 1×", "isa-check x"],
        "reason_codes": ["speed_not_faster", "isa_check_rejected"],
    }
    assert reasons_from_json(data) == reasons
    assert Reason.from_json(reasons[0].to_json()) == reasons[0]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"max_accuracy_drop": 0.0}, "max_accuracy_drop must be in"),
        ({"max_accuracy_drop": 1.5}, "max_accuracy_drop must be in"),
        ({"accuracy_rule": "median"}, "accuracy_rule"),
        ({"confidence": 0.2}, "confidence"),
    ],
)
def test_the_local_runner_refuses_a_bad_rule_before_any_task(arguments, message):
    from edgecompress.pipelines.local import validate_arguments

    with pytest.raises(ConfigError, match=message):
        validate_arguments({"dataset": "digits", **arguments})


def _run_options() -> dict[str, argparse.Action]:
    from edgecompress.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {a.dest: a for a in sub.choices["run"]._actions}


def test_edgecompress_run_takes_the_rule_default_and_the_profiles_classes():
    from edgecompress.runtime.devices import DEFAULT_DEVICE_CLASSES, profile

    options = _run_options()
    assert options["max_accuracy_drop"].default == AccuracyRule().max_accuracy_drop
    assert options["device_classes"].default == ",".join(DEFAULT_DEVICE_CLASSES)
    assert all(profile(c).emulated is True for c in DEFAULT_DEVICE_CLASSES)  # runs without a farm
