"""The gate decides with its uncertainty: constructed cases for the speed-up and accuracy rules, and
the real gate step on two real models."""

import json

import numpy as np
import pytest

from edgecompress.errors import ConfigError
from edgecompress.gate import GateConfig, accuracy_drop_interval, decide, gate_step, speedup_interval
from edgecompress.measure import Measurement

RNG = np.random.default_rng(7)


def _rounds(parent_ms: float, child_ms: float, noise: float, n: int = 10):
    drift = RNG.normal(0, noise, n)  # the machine's load moves both models in a round
    return list(parent_ms * (1 + drift + RNG.normal(0, noise / 3, n))), list(
        child_ms * (1 + drift + RNG.normal(0, noise / 3, n))
    )


def _accuracy(drop: float = 0.0, spread: float = 0.001):
    return {"drop": drop, "ci_low": drop - spread, "ci_high": drop + spread}


def test_a_child_1_02x_faster_within_the_noise_is_rejected():
    parent, child = _rounds(0.100, 0.098, noise=0.08)
    speed = speedup_interval(parent, child, seed=1)
    assert speed["ci_low"] < 1.0 < speed["ci_high"]
    out = decide(_accuracy(), {"rpi4-emulated": speed}, GateConfig())
    assert out["accepted_device_classes"] == [] and "not faster than 1×" in out["reasons"][0]


def test_a_clearly_faster_child_passes():
    parent, child = _rounds(0.100, 0.050, noise=0.05)
    speed = speedup_interval(parent, child, seed=1)
    assert 1.7 < speed["ci_low"] <= speed["speedup"] <= speed["ci_high"] < 2.4
    out = decide(_accuracy(0.002), {"rpi4-emulated": speed}, GateConfig())
    assert out["accepted_device_classes"] == ["rpi4-emulated"] and out["reasons"] == []


def test_a_drop_only_significant_under_the_strict_rule():
    """Drop 0.6 point, interval [0.2, 1.4]: within 1 point as a point estimate, not at its upper bound."""
    speed = {"rpi4-emulated": {"speedup": 2.0, "ci_low": 1.8, "ci_high": 2.2}}
    acc = {"drop": 0.006, "ci_low": 0.002, "ci_high": 0.014}
    assert decide(acc, speed, GateConfig(accuracy_rule="point"))["accepted_device_classes"] == [
        "rpi4-emulated"
    ]
    strict = decide(acc, speed, GateConfig(accuracy_rule="upper"))
    assert (
        strict["accepted_device_classes"] == []
        and "upper 95% bound of the drop 1.40 points" in strict["reasons"][0]
    )


def test_paired_accuracy_interval_and_mcnemar():
    parent = RNG.random(2000) < 0.95
    child = parent.copy()
    flip = np.flatnonzero(parent)[:40]  # the child loses 40 images the parent got right
    child[flip] = False
    out = accuracy_drop_interval(parent, child, seed=0)
    assert out["drop"] == pytest.approx(40 / 2000) and out["ci_low"] > 0 and out["mcnemar_p"] < 1e-6
    same = accuracy_drop_interval(parent, parent, seed=0)
    assert same["drop"] == same["ci_low"] == same["ci_high"] == 0 and same["mcnemar_p"] == 1.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"decision_split": "train"}, "decision_split"),
        ({"accuracy_rule": "median"}, "accuracy_rule"),
        ({"latency_rounds": 1}, "latency_rounds"),
        ({"device_classes": ["toaster"]}, "toaster"),
    ],
)
def test_bad_gate_settings(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        GateConfig(**kwargs).validate()


def test_gate_step_on_real_models(trained_model, digits_artifact, tmp_path):
    from edgecompress.evaluate import evaluate_step
    from edgecompress.quantize import QuantConfig, quantize_step
    from edgecompress.step import Lineage

    off = Lineage(enabled=False)
    quantize_step(
        trained_model, digits_artifact, tmp_path / "child", QuantConfig(calibration_samples=64), off
    )
    for role, model in (("parent", trained_model), ("child", tmp_path / "child")):
        evaluate_step(model, digits_artifact, tmp_path / f"{role}.json", lineage_ctx=off)
    config = GateConfig(
        device_classes=["rpi4-emulated"], latency_rounds=4, max_accuracy_drop=0.05,
        measurement=Measurement(bench_min_runs=20, bench_min_duration_s=0.05, bench_warmup_runs=2),
    )  # fmt: skip
    # The target-ISA check's result (its file format), rejecting the class: the gate must withhold it.
    isa = {
        "rejected_device_classes": ["rpi4-emulated"],
        "skipped": False,
        "classes": {"rpi4-emulated": {"checked": True, "reasons": ["on aarch64: accuracy drop 3.00 points"]}},
    }
    (tmp_path / "isa.json").write_text(json.dumps(isa))
    out = gate_step(trained_model, tmp_path / "child", digits_artifact, tmp_path / "parent.json",
                    tmp_path / "child.json", config, tmp_path / "gate.json", tmp_path / "gate.md", off,
                    isa_check_path=tmp_path / "isa.json")  # fmt: skip
    assert out["accepted_device_classes"] == [] and out["verdict"] == "rejected"
    assert "isa-check rpi4-emulated: on aarch64: accuracy drop 3.00 points" in out["reasons"]
    assert out["isa_check"]["rejected_device_classes"] == ["rpi4-emulated"]
    saved = json.loads((tmp_path / "gate.json").read_text())
    assert saved["decision_split"] == "val" and saved["accuracy"]["samples"] > 200
    cls = saved["device_classes"]["rpi4-emulated"]
    assert len(cls["rounds"]["parent_ms"]) == 4 and cls["ci_low"] <= cls["speedup"] <= cls["ci_high"]
    assert cls["faster"] == (cls["ci_low"] > 1.0) and out["verdict"] in ("accepted", "rejected")
    assert "lower 95% bound of the interleaved speed-up" in (tmp_path / "gate.md").read_text()
