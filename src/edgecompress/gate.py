"""The accuracy gate: accept a compressed child only where it keeps accuracy and is faster than its
parent, register it with an alias per device class it earned, and say why when it does not.

The rule, with its uncertainty (the gate decides on the decision split, validation by default; the
test split is measured and reported, never decides):

- Accuracy: the drop is paired (parent and child on the same images) with a bootstrap 95 % interval
  and McNemar's exact test. Rule `point`: the drop itself is within `max_accuracy_drop`; rule
  `upper` (stricter): the interval's upper bound is.
- Speed, per device class: parent and child are measured in alternating rounds on the same device
  (interleaved, so drift in the machine's load hits both); the speed-up is the ratio of the rounds'
  median p50s with a bootstrap interval over rounds. A class passes only if the interval's lower
  bound exceeds `min_speedup`: a 1.02x "speed-up" inside the noise is not a speed-up.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecompress import lineage
from edgecompress.errors import ConfigError
from edgecompress.farm.devices import DEFAULT_DEVICE_CLASSES, parse_device_classes
from edgecompress.io import write_json, write_text
from edgecompress.measure import Measurement
from edgecompress.profiles import timing_note
from edgecompress.reports import markdown_table
from edgecompress.step import Lineage

ACCURACY_RULES = ("point", "upper")


@dataclass
class GateConfig:
    """The gate's rule and how it measures."""

    max_accuracy_drop: float = field(
        default=0.01, metadata={"help": "largest accuracy drop accepted, a fraction (0.01 = 1 point)"}
    )
    accuracy_rule: str = field(
        default="point",
        metadata={
            "help": "point: the paired drop is within max_accuracy_drop; upper: its 95 % upper bound is",
            "choices": ACCURACY_RULES,
        },
    )
    min_speedup: float = field(
        default=1.0,
        metadata={"help": "a device class passes when the speed-up's 95 % lower bound exceeds this"},
    )
    registered_model_name: str = field(
        default="edgecompress-model", metadata={"help": "MLflow registry name of an accepted child"}
    )
    decision_split: str = field(
        default="val", metadata={"help": "the split the gate decides on", "choices": ("val", "test")}
    )
    device_classes: list[str] = field(
        default_factory=lambda: list(DEFAULT_DEVICE_CLASSES),
        metadata={"help": "device classes, comma-separated"},
    )
    measurement: Measurement = field(
        default_factory=Measurement, metadata={"flatten": True, "exclude": ("device_class",)}
    )
    latency_rounds: int = field(
        default=8, metadata={"help": "interleaved parent/child rounds per device class"}
    )
    confidence: float = field(default=0.95, metadata={"help": "level of the intervals"})
    bootstrap_samples: int = field(default=2000, metadata={"help": "bootstrap resamples per interval"})
    seed: int = field(default=0, metadata={"help": "seed of the bootstrap"})

    def validate(self) -> None:
        if not 0 <= self.max_accuracy_drop < 1:
            raise ConfigError(f"max_accuracy_drop must be in [0, 1), got {self.max_accuracy_drop}")
        if not self.min_speedup >= 0:
            raise ConfigError(f"min_speedup must be ≥ 0 (0: speed is not required), got {self.min_speedup}")
        if self.decision_split not in ("val", "test"):
            raise ConfigError(
                f"decision_split must be val or test (train is what the model fitted), got {self.decision_split!r}"
            )
        if self.accuracy_rule not in ACCURACY_RULES:
            raise ConfigError(f"accuracy_rule must be one of {ACCURACY_RULES}, got {self.accuracy_rule!r}")
        if self.latency_rounds < 3:
            raise ConfigError(
                f"latency_rounds must be ≥ 3 (an interval needs rounds), got {self.latency_rounds}"
            )
        if not 0.5 < self.confidence < 1 or self.bootstrap_samples < 100:
            raise ConfigError("confidence must be in (0.5, 1) and bootstrap_samples ≥ 100")
        for name in parse_device_classes(self.device_classes):
            Measurement(name, **{k: getattr(self.measurement, k) for k in _BENCH}).validate()


_BENCH = ("farm_url", "bench_min_runs", "bench_min_duration_s", "bench_warmup_runs")


def _interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1 - confidence) / 2
    lo, hi = np.quantile(samples, [tail, 1 - tail])
    return float(lo), float(hi)


def speedup_interval(
    parent_ms: list[float],
    child_ms: list[float],
    confidence: float = 0.95,
    samples: int = 2000,
    seed: int = 0,
) -> dict[str, float]:
    """Speed-up = median parent round p50 / median child round p50, with a bootstrap interval over
    paired rounds (round i measured parent then child, back to back)."""
    parent, child = np.asarray(parent_ms, float), np.asarray(child_ms, float)
    if len(parent) != len(child) or len(parent) < 2:
        raise ValueError("paired rounds are needed: as many parent as child rounds, at least two")
    idx = np.random.default_rng(seed).integers(0, len(parent), size=(samples, len(parent)))
    ratios = np.median(parent[idx], axis=1) / np.median(child[idx], axis=1)
    lo, hi = _interval(ratios, confidence)
    return {"speedup": float(np.median(parent) / np.median(child)), "ci_low": lo, "ci_high": hi}


def accuracy_drop_interval(
    parent_correct: np.ndarray,
    child_correct: np.ndarray,
    confidence: float = 0.95,
    samples: int = 2000,
    seed: int = 0,
) -> dict[str, float]:
    """The paired drop (parent − child accuracy on the same images), its bootstrap interval over
    images, and McNemar's exact p-value on the discordant pairs."""
    from scipy.stats import binomtest

    p, c = np.asarray(parent_correct, bool), np.asarray(child_correct, bool)
    if len(p) != len(c) or len(p) == 0:
        raise ValueError("paired correctness on the same, non-empty set of images is needed")
    diff = p.astype(float) - c.astype(float)
    idx = np.random.default_rng(seed).integers(0, len(diff), size=(samples, len(diff)))
    lo, hi = _interval(diff[idx].mean(axis=1), confidence)
    only_parent, only_child = int((p & ~c).sum()), int((~p & c).sum())
    discordant = only_parent + only_child
    p_value = float(binomtest(only_parent, discordant, 0.5).pvalue) if discordant else 1.0
    return {
        "drop": float(diff.mean()), "ci_low": lo, "ci_high": hi, "samples": int(len(diff)),
        "parent_only_correct": only_parent, "child_only_correct": only_child, "mcnemar_p": p_value,
    }  # fmt: skip


def accuracy_breaks_rule(accuracy: dict[str, float], config: GateConfig) -> str | None:
    """Why a paired accuracy drop (`accuracy_drop_interval`) breaks the gate's accuracy rule, or None.
    The gate and the target-ISA check (`edgecompress.isa`) both decide with it."""
    bound = accuracy["drop"] if config.accuracy_rule == "point" else accuracy["ci_high"]
    if bound <= config.max_accuracy_drop + 1e-12:
        return None
    what = "drop" if config.accuracy_rule == "point" else f"upper {config.confidence:.0%} bound of the drop"
    return (
        f"accuracy {what} {bound * 100:.2f} points > allowed {config.max_accuracy_drop * 100:.2f} "
        f"(drop {accuracy['drop'] * 100:.2f}, {config.confidence:.0%} CI "
        f"[{accuracy['ci_low'] * 100:.2f}, {accuracy['ci_high'] * 100:.2f}] on {config.decision_split})"
    )


def decide(
    accuracy: dict[str, float], speed: dict[str, dict[str, float]], config: GateConfig
) -> dict[str, Any]:
    """The verdict from the measured intervals, and every reason a class did not pass."""
    accuracy_reason = accuracy_breaks_rule(accuracy, config)
    accuracy_ok = accuracy_reason is None
    reasons = [accuracy_reason] if accuracy_reason else []
    faster = {c: s["ci_low"] > config.min_speedup for c, s in speed.items()}
    slow = [c for c, ok in faster.items() if not ok]
    if slow:
        reasons.append(
            f"not faster than {config.min_speedup:g}× with {config.confidence:.0%} confidence on "
            + ", ".join(
                f"{c} ({speed[c]['speedup']:.2f}×, CI [{speed[c]['ci_low']:.2f}, {speed[c]['ci_high']:.2f}])"
                for c in slow
            )  # fmt: skip
        )
    passed = [c for c, ok in faster.items() if ok] if accuracy_ok else []
    return {
        "accuracy_ok": accuracy_ok,
        "faster": faster,
        "accepted_device_classes": passed,
        "reasons": reasons,
    }


def rule_text(config: GateConfig) -> str:
    accuracy = (
        f"paired accuracy drop on {config.decision_split} ≤ {config.max_accuracy_drop * 100:g} points"
        if config.accuracy_rule == "point"
        else f"upper {config.confidence:.0%} bound of the paired drop on {config.decision_split} "
        f"≤ {config.max_accuracy_drop * 100:g} points"
    )
    return (
        f"{accuracy}; per device class, the lower {config.confidence:.0%} bound of the interleaved "
        f"speed-up > {config.min_speedup:g}×"
    )


def gate_step(
    parent_dir: Path,
    child_dir: Path,
    dataset_path: Path,
    parent_eval_path: Path,
    child_eval_path: Path,
    config: GateConfig,
    results_path: Path,
    report_path: Path | None = None,
    lineage_ctx: Lineage | None = None,
    isa_check_path: Path | None = None,
) -> dict[str, Any]:
    """Decide on the child, register it per device class it earned, tag it with the verdict, the rule
    and the intervals. The evaluations (test split) are reported next to the decision. A failed
    gate is a result, not an error: the run completes and says so. With `isa_check_path` (the
    target-ISA check's result, `edgecompress.isa`), a class the check rejected is not accepted."""
    from edgecompress.data import load_dataset
    from edgecompress.evaluate import evaluate_onnx
    from edgecompress.export import load_model_package

    config.validate()
    ctx = lineage_ctx or Lineage()
    dataset = load_dataset(Path(dataset_path))
    if dataset.size(config.decision_split) == 0:
        raise ConfigError(f"the dataset {dataset.name!r} has no {config.decision_split!r} split to decide on")
    parent, child = load_model_package(Path(parent_dir)), load_model_package(Path(child_dir))
    ctx.check()
    p_eval, c_eval = (json.loads(Path(p).read_text()) for p in (parent_eval_path, child_eval_path))
    y = dataset.labels(config.decision_split)
    correct = {}
    for role, package in (("parent", parent), ("child", child)):
        _, _, logits = evaluate_onnx(package.onnx_path, dataset, config.decision_split)
        correct[role] = logits.argmax(1) == y
    accuracy = accuracy_drop_interval(correct["parent"], correct["child"], config.confidence,
                                      config.bootstrap_samples, config.seed)  # fmt: skip
    per_class, speed = {}, {}
    for cls in parse_device_classes(config.device_classes):
        meter = Measurement(cls, **{k: getattr(config.measurement, k) for k in _BENCH})
        rounds = meter.interleaved(parent.onnx_path, child.onnx_path, config.latency_rounds)
        speed[cls] = speedup_interval(rounds["parent_ms"], rounds["child_ms"], config.confidence,
                                      config.bootstrap_samples, config.seed)  # fmt: skip
        per_class[cls] = {
            "parent_p50_ms": float(np.median(rounds["parent_ms"])), "child_p50_ms": float(np.median(rounds["child_ms"])),
            **speed[cls], "rounds": rounds, "emulated": rounds["emulated"],
            "timing_meaningful": timing_note(cls) is None,  # false under QEMU: numerics only
        }  # fmt: skip
    decision = decide(accuracy, speed, config)
    for cls, ok in decision["faster"].items():
        per_class[cls]["faster"] = ok
    isa = json.loads(Path(isa_check_path).read_text()) if isa_check_path else None
    if isa:
        for cls in isa.get("rejected_device_classes", []):
            if cls in per_class:
                per_class[cls]["isa_check"] = "rejected"
                decision["reasons"] += [f"isa-check {cls}: {r}" for r in isa["classes"][cls]["reasons"]]
        decision["accepted_device_classes"] = [
            c for c in decision["accepted_device_classes"] if c not in isa.get("rejected_device_classes", [])
        ]
    verdict = "accepted" if decision["accepted_device_classes"] else "rejected"
    child_id = child.info.get("mlflow_model_id")
    result = {
        "verdict": verdict, "rule": rule_text(config), "reasons": decision["reasons"],
        "decision_split": config.decision_split, "accuracy": accuracy, "accuracy_drop": accuracy["drop"],
        "max_accuracy_drop": config.max_accuracy_drop, "accuracy_rule": config.accuracy_rule,
        "min_speedup": config.min_speedup, "confidence": config.confidence,
        "accepted_device_classes": decision["accepted_device_classes"], "device_classes": per_class,
        "parent": _summary_row(p_eval), "child": _summary_row(c_eval), "registered": None,
        "isa_check": None if isa is None else {
            "rejected_device_classes": isa.get("rejected_device_classes", []), "skipped": isa.get("skipped", False),
            "checked": [c for c, r in isa.get("classes", {}).items() if r.get("checked")]},
    }  # fmt: skip
    with ctx.task("accuracy-gate", {"rule": result["rule"], "child_model_id": child_id}):
        if ctx.enabled and child_id:
            _record(result, child_id, c_eval["model"].get("technique", ""), config.registered_model_name)
        write_json(Path(results_path), result)
        if report_path is not None:
            write_text(Path(report_path), gate_markdown(result))
    return result


def _record(result: dict[str, Any], child_id: str, technique: str, name: str) -> None:
    """The verdict, rule and intervals as tags on the child; registration per class it earned."""
    acc = result["accuracy"]
    tags = {
        "edgecompress.gate": result["verdict"],
        "edgecompress.gate_reason": "; ".join(result["reasons"]) or "passed",
        "edgecompress.gate_rule": result["rule"],
        "edgecompress.gate_accuracy_drop": f"{acc['drop']:.5f} [{acc['ci_low']:.5f}, {acc['ci_high']:.5f}]",
        "edgecompress.gate_accepted_classes": ",".join(result["accepted_device_classes"]),
    }
    for cls, v in result["device_classes"].items():
        tags[f"edgecompress.gate_speedup.{cls}"] = (
            f"{v['speedup']:.3f} [{v['ci_low']:.3f}, {v['ci_high']:.3f}]"
        )
    lineage.set_model_tags(child_id, tags)
    if result["accepted_device_classes"]:
        version = lineage.register(
            child_id, name, result["accepted_device_classes"], tags={"edgecompress.technique": technique}
        )
        aliases = [lineage.alias_name(c) for c in result["accepted_device_classes"]]
        result["registered"] = {"name": name, "version": version, "aliases": aliases}


def _summary_row(evaluation: dict[str, Any]) -> dict[str, Any]:
    stats = evaluation["stats"]
    return {
        "technique": evaluation["model"].get("technique"),
        "model_id": evaluation["model"].get("mlflow_model_id"),
        "accuracy": evaluation["accuracy"],
        "split": evaluation.get("split", "test"),
        "params": stats["params"],
        "macs": stats["macs"],
        "onnx_bytes": stats["onnx_bytes"],
        "gzip_bytes": stats["gzip_bytes"],
    }


def gate_markdown(result: dict[str, Any]) -> str:
    p, c = result["parent"], result["child"]
    rows = [
        [label, r["technique"], r["accuracy"], r["params"], r["macs"], r["onnx_bytes"], r["gzip_bytes"]]
        for label, r in (("parent", p), ("child", c))
    ]
    acc = result["accuracy"]
    lines = [f"# Accuracy gate: **{result['verdict'].upper()}**", "", f"Rule: {result['rule']}.", ""]
    lines += [f"- {r}" for r in result["reasons"]] or ["- passed every check"]
    lines += [
        "",
        f"Accuracy drop on {result['decision_split']} (paired, {acc['samples']} images): "
        f"{acc['drop'] * 100:+.2f} points, {result['confidence']:.0%} CI "
        f"[{acc['ci_low'] * 100:+.2f}, {acc['ci_high'] * 100:+.2f}], McNemar p = {acc['mcnemar_p']:.3g}.",
        "",
        markdown_table(
            ["model", "technique", f"{p['split']} accuracy", "params", "MACs", "ONNX bytes", "gzip bytes"], rows
        ),
        "",
        markdown_table(
            ["device class", "emulated", "parent p50 ms", "child p50 ms", "speed-up", "CI low", "CI high", "passes"],
            [
                [k, v["emulated"] if v.get("timing_meaningful", True) else "qemu: timing not meaningful", v["parent_p50_ms"], v["child_p50_ms"], v["speedup"], v["ci_low"], v["ci_high"],
                 v["faster"]]
                for k, v in result["device_classes"].items()
            ],
        ),
    ]  # fmt: skip
    if result.get("registered"):
        reg = result["registered"]
        lines += [
            "",
            f"Registered as `{reg['name']}` version {reg['version']} with aliases {', '.join(reg['aliases'])}.",
        ]
    return "\n".join(lines) + "\n"
