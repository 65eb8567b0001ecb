"""The accuracy gate: accept a compressed child only where it keeps accuracy and is faster than its
parent, register it with an alias per device class it earned, and say why when it does not.

The rule, with its uncertainty (the gate decides on the decision part of the decision split:
validation past its selection part by default, `edgecompress.data.decision_range`; the test split is
measured and reported, never decides):

- Accuracy: the drop is paired (parent and child on the same images), with Tango's score interval
  (`edgecompress.stats`) and McNemar's exact test. Rule `upper` (the default): the interval's upper
  bound is within `max_accuracy_drop`; rule `point` (opt-in, and reports say it ignores the
  uncertainty): the drop itself is. A split too small for any child to pass the rule is refused.
- Speed, per device class: parent and child are measured in alternating rounds on the same device
  (interleaved, so drift in the machine's load hits both; on an emulated class both models run in one
  process per round, alternating every ~20 ms, `runtime.runner.benchmark_paired`); the speed-up is the
  geometric mean of the per-round ratios with a t interval. A class passes only if the interval's lower bound exceeds
  `min_speedup`: a 1.02x "speed-up" inside the noise is not a speed-up. A class whose timings mean
  nothing (QEMU) never earns a speed verdict.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from edgecompress import lineage
from edgecompress.edge import Measurement
from edgecompress.errors import ConfigError
from edgecompress.io import field_values, write_json
from edgecompress.reports import markdown_table
from edgecompress.rules import AccuracyRule, Reason, reasons_from_json, reasons_json
from edgecompress.runtime.devices import DEFAULT_DEVICE_CLASSES, parse_device_classes
from edgecompress.stats import MIN_LATENCY_ROUNDS, min_decision_images, paired_difference_interval
from edgecompress.stats import speedup_interval as _speedup_interval
from edgecompress.step import Lineage, write_report


@dataclass
class GateConfig:
    """The gate's rule and how it measures."""

    rule: AccuracyRule = field(default_factory=AccuracyRule, metadata={"flatten": True})
    min_speedup: float = field(
        default=1.0,
        metadata={
            "help": "a device class passes when the speed-up's 95 % lower bound exceeds this (0: speed not required)"
        },
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
        default=MIN_LATENCY_ROUNDS,
        metadata={"help": f"interleaved parent/child rounds per device class (≥ {MIN_LATENCY_ROUNDS})"},
    )
    promotion_max_slowdown: float = field(
        default=0.03,
        metadata={
            "help": "promotion against a production model: the challenger counts as slower only when the "
            "upper 95 % bound of its speed-up is below 1 − this (0.03: shown 3 % slower; 0: any resolved "
            "slowdown refuses)"
        },
    )

    def validate_rule(self) -> None:
        """The accuracy rule's settings (the target-ISA check shares them)."""
        self.rule.validate()
        if self.decision_split not in ("val", "test"):
            raise ConfigError(
                f"decision_split must be val or test (train is what the model fitted), got {self.decision_split!r}"
            )

    def validate(self) -> None:
        self.validate_rule()
        if not self.min_speedup >= 0:
            raise ConfigError(f"min_speedup must be ≥ 0 (0: speed is not required), got {self.min_speedup}")
        if not 0 <= self.promotion_max_slowdown < 1:
            raise ConfigError(
                f"promotion_max_slowdown must be in [0, 1), a fraction (0.03 = 3 % slower), got "
                f"{self.promotion_max_slowdown}"
            )
        if self.latency_rounds < MIN_LATENCY_ROUNDS:
            raise ConfigError(
                f"latency_rounds must be ≥ {MIN_LATENCY_ROUNDS} (fewer interleaved rounds cannot resolve a "
                f"speed-up), got {self.latency_rounds}"
            )
        for name in parse_device_classes(self.device_classes):
            Measurement(name, **{k: getattr(self.measurement, k) for k in _BENCH}).validate()


_BENCH = ("farm_url", "bench_min_runs", "bench_min_duration_s", "bench_warmup_runs")


def speedup_interval(
    parent_ms: list[float], child_ms: list[float], confidence: float = 0.95
) -> dict[str, Any]:
    """The speed-up of paired rounds (round i: parent and child back to back): `edgecompress.stats`."""
    return _speedup_interval(parent_ms, child_ms, confidence)


def accuracy_drop_interval(
    parent_correct: np.ndarray, child_correct: np.ndarray, confidence: float = 0.95
) -> dict[str, Any]:
    """The paired drop (parent − child accuracy on the same images), Tango's score interval, and
    McNemar's exact p-value on the discordant pairs."""
    from scipy.stats import binomtest

    p, c = np.asarray(parent_correct, bool), np.asarray(child_correct, bool)
    if len(p) != len(c) or len(p) == 0:
        raise ValueError("paired correctness on the same, non-empty set of images is needed")
    only_parent, only_child = int((p & ~c).sum()), int((~p & c).sum())
    lo, hi = paired_difference_interval(only_parent, only_child, len(p), confidence)
    discordant = only_parent + only_child
    p_value = float(binomtest(only_parent, discordant, 0.5).pvalue) if discordant else 1.0
    return {
        "drop": (only_parent - only_child) / len(p),
        "ci_low": lo,
        "ci_high": hi,
        "samples": int(len(p)),
        "parent_only_correct": only_parent,
        "child_only_correct": only_child,
        "mcnemar_p": p_value,
        "method": "Tango score interval for paired proportions",
    }


def check_decision_data(labels: np.ndarray, config: GateConfig, where: str) -> None:
    """Refuse decision data on which the rule cannot be resolved: fewer than two classes, or fewer
    images than it takes for even an identical child to pass (`stats.min_decision_images`)."""
    config.validate_rule()
    rule = config.rule
    classes = len(np.unique(labels))
    if classes < 2:
        raise ConfigError(
            f"{where}: the decision images hold {classes} class(es); an accuracy decision needs at least 2"
        )
    needed = min_decision_images(rule.max_accuracy_drop, rule.confidence)
    if len(labels) < needed:
        raise ConfigError(
            f"{where}: {len(labels)} decision images cannot resolve a {rule.max_accuracy_drop * 100:g}-point "
            f"accuracy rule: even a child identical to its parent has a {rule.confidence:.0%} upper bound "
            f"above it. It needs at least {needed} images (a larger validation split, or a larger "
            f"max_accuracy_drop)"
        )


def accuracy_breaks_rule(accuracy: dict[str, float], config: GateConfig) -> Reason | None:
    """Why a paired accuracy drop (`accuracy_drop_interval`) breaks the gate's accuracy rule, or None.
    The gate, the target-ISA check and promotion all decide with it (`AccuracyRule.breaks`)."""
    return config.rule.breaks(accuracy, config.decision_split)


def speed_passes(speed: dict[str, Any], min_speedup: float) -> bool:
    """A class passes on speed when speed is not required, or when its timings mean something and the
    speed-up's lower bound exceeds `min_speedup`."""
    return min_speedup <= 0 or (speed.get("timing_meaningful", True) and speed["ci_low"] > min_speedup)


@dataclass
class Decision:
    """The gate's verdict from the measured intervals: per class whether it passes on speed, the
    classes accepted, and every reason a class did not pass."""

    accuracy_ok: bool
    faster: dict[str, bool]
    accepted_device_classes: list[str]
    reasons: list[Reason]

    def to_json(self) -> dict[str, Any]:
        return {
            "accuracy_ok": self.accuracy_ok,
            "faster": dict(self.faster),
            "accepted_device_classes": list(self.accepted_device_classes),
            **reasons_json(self.reasons),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Decision:
        return cls(
            bool(data["accuracy_ok"]),
            dict(data["faster"]),
            list(data["accepted_device_classes"]),
            reasons_from_json(data),
        )


def decide(accuracy: dict[str, float], speed: dict[str, dict[str, Any]], config: GateConfig) -> Decision:
    """The verdict from the measured intervals, and every reason a class did not pass."""
    accuracy_reason = accuracy_breaks_rule(accuracy, config)
    reasons = [accuracy_reason] if accuracy_reason else []
    faster = {c: speed_passes(s, config.min_speedup) for c, s in speed.items()}
    unmeaningful = [c for c, ok in faster.items() if not ok and not speed[c].get("timing_meaningful", True)]
    slow = [c for c, ok in faster.items() if not ok and c not in unmeaningful]
    if unmeaningful:
        reasons.append(
            Reason(
                "speed_not_meaningful",
                "no speed verdict on " + ", ".join(unmeaningful) + ": its timings are not meaningful (QEMU); "
                "such a class can pass only with min_speedup 0",
            )
        )
    if slow:
        per_class = ", ".join(
            f"{c} ({speed[c]['speedup']:.2f}×, CI [{speed[c]['ci_low']:.2f}, {speed[c]['ci_high']:.2f}])"
            for c in slow
        )
        reasons.append(
            Reason(
                "speed_not_faster",
                f"not faster than {config.min_speedup:g}× with {config.rule.confidence:.0%} confidence on {per_class}",
            )
        )
    accuracy_ok = accuracy_reason is None
    passed = [c for c, ok in faster.items() if ok] if accuracy_ok else []
    return Decision(accuracy_ok, faster, passed, reasons)


def rule_text(config: GateConfig) -> str:
    accuracy = config.rule.describe(config.decision_split)
    speed = (
        "speed not required"
        if config.min_speedup <= 0
        else f"per device class, the lower {config.rule.confidence:.0%} bound of the interleaved speed-up > "
        f"{config.min_speedup:g}× (no speed verdict where timings are not meaningful, e.g. QEMU)"
    )
    return f"{accuracy}; {speed}"


def decision_correctness(
    onnx_paths: dict[str, Path], dataset: Any, config: GateConfig, where: str = "gate"
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Per model, whether it is right on each decision image (the decision part of the decision
    split), and which images those are. Refuses decision data too small for the rule."""
    from edgecompress.data import decision_range
    from edgecompress.evaluate import evaluate_onnx

    split = config.decision_split
    size = dataset.size(split)
    if size == 0:
        raise ConfigError(f"{where}: the dataset {dataset.name!r} has no {split!r} split to decide on")
    part = decision_range(split, size)
    y = dataset.labels(split)[part.start : part.stop]
    check_decision_data(y, config, f"{where} on {dataset.name!r} {split}[{part.start}:{part.stop}]")
    correct = {}
    for role, path in onnx_paths.items():
        _, _, logits = evaluate_onnx(Path(path), dataset, split)
        correct[role] = logits[part.start : part.stop].argmax(1) == y
    images = {
        "split": split,
        "start": part.start,
        "stop": part.stop,
        "images": len(y),
        "selection_images": part.start,
        "why": "validation's first part is where calibration and selection looked; decisions use the rest"
        if part.start
        else "the whole split",
    }
    return correct, images


@dataclass
class IsaClassResult:
    """One device class's outcome: whether it was checked (else `details["why_not"]`), its verdict,
    the reasons (codes and messages), and what was measured (`details`: accuracies, agreement, logit
    differences, the paired drop, the target's CPU and runtime)."""

    checked: bool
    verdict: str | None = None  # accepted | rejected, where checked
    reasons: list[Reason] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = {**self.details, "checked": self.checked}
        if self.verdict is not None:
            out["verdict"] = self.verdict
        return {**out, **reasons_json(self.reasons)} if self.checked else out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> IsaClassResult:
        details = {
            k: v for k, v in data.items() if k not in ("checked", "verdict", "reasons", "reason_codes")
        }
        return cls(bool(data.get("checked")), data.get("verdict"), reasons_from_json(data), details)


@dataclass
class IsaResult:
    """The target-ISA check's result (`edgecompress.isa` builds it; its JSON is that step's `results`
    artifact, which the gate reads back through this type: here, so that the gate need not import isa)."""

    host_isa: str
    decision_split: str
    samples: int
    split_size: int
    rule: str
    skipped: bool
    classes: dict[str, IsaClassResult] = field(default_factory=dict)
    wall_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)  # subsample step, dataset, parent-on-target sample

    @property
    def rejected_device_classes(self) -> list[str]:
        return [c for c, r in self.classes.items() if r.verdict == "rejected"]

    def summary(self) -> dict[str, Any]:
        """What the gate's result says of the check."""
        checked = [c for c, r in self.classes.items() if r.checked]
        return {
            "rejected_device_classes": self.rejected_device_classes,
            "skipped": self.skipped,
            "checked": checked,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            **field_values(self, exclude=("extra",)),
            "classes": {c: r.to_json() for c, r in self.classes.items()},
            "rejected_device_classes": self.rejected_device_classes,
            **self.extra,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> IsaResult:
        classes = {c: IsaClassResult.from_json(r) for c, r in data.get("classes", {}).items()}
        for c in data.get("rejected_device_classes", []):  # the list decides where a class says nothing
            if c in classes and classes[c].verdict is None:
                classes[c].verdict = "rejected"
        known = {f.name for f in fields(cls) if f.name != "extra"} | {"rejected_device_classes"}
        return cls(
            host_isa=data.get("host_isa", ""),
            decision_split=data.get("decision_split", ""),
            samples=int(data.get("samples", 0)),
            split_size=int(data.get("split_size", 0)),
            rule=data.get("rule", ""),
            skipped=bool(data.get("skipped", False)),
            classes=classes,
            wall_s=float(data.get("wall_s", 0.0)),
            extra={k: v for k, v in data.items() if k not in known},
        )


@dataclass
class GateResult:
    """The gate's result: the verdict, the rule, the reasons (codes and messages), the measured
    intervals, per class the speed-up and whether it passes, and where the child was registered. Its
    JSON (`to_json`) is the gate's `results` artifact, read by reports, the CLI and promotion."""

    verdict: str
    rule: str
    reasons: list[Reason]
    decision_split: str
    decision_images: dict[str, Any]
    accuracy: dict[str, Any]
    accuracy_rule: AccuracyRule
    min_speedup: float
    accepted_device_classes: list[str]
    device_classes: dict[str, dict[str, Any]]
    parent: dict[str, Any]
    child: dict[str, Any]
    registered: dict[str, Any] | None = None
    isa_check: dict[str, Any] | None = None
    # the edge-benchmark tasks' summaries per role and class (collected_benchmarks): reported only
    benchmarks: dict[str, dict[str, dict[str, Any]]] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "rule": self.rule,
            **reasons_json(self.reasons),
            "decision_split": self.decision_split,
            "decision_images": self.decision_images,
            "accuracy": self.accuracy,
            "accuracy_drop": self.accuracy["drop"],
            **asdict(self.accuracy_rule),
            "min_speedup": self.min_speedup,
            "accepted_device_classes": self.accepted_device_classes,
            "device_classes": self.device_classes,
            "parent": self.parent,
            "child": self.child,
            "registered": self.registered,
            "isa_check": self.isa_check,
            "benchmarks": self.benchmarks,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GateResult:
        rule = AccuracyRule(**{f.name: data[f.name] for f in fields(AccuracyRule)})
        given = [f.name for f in fields(cls) if f.name not in ("reasons", "accuracy_rule", "benchmarks")]
        plain = {name: data[name] for name in given}
        # results written before the benchmarks fanned out have none
        benchmarks = data.get("benchmarks")
        return cls(**plain, reasons=reasons_from_json(data), accuracy_rule=rule, benchmarks=benchmarks)


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
    benchmarks: dict[str, dict[str, dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """Decide on the child, register it per device class it earned, tag it with the verdict, the rule
    and the intervals. The evaluations (test split) are reported next to the decision. A failed
    gate is a result, not an error: the run completes and says so. With `isa_check_path` (the
    target-ISA check's result, `edgecompress.isa`), a class the check rejected is not accepted.
    `benchmarks` (`collected_benchmarks` per role: the edge-benchmark tasks' stand-alone results) are
    reported next to the decision and never change it (the interleaved rounds decide)."""
    from edgecompress.data import load_dataset
    from edgecompress.export import load_model_package

    config.validate()
    ctx = lineage_ctx or Lineage()
    dataset = load_dataset(Path(dataset_path))
    parent, child = load_model_package(Path(parent_dir)), load_model_package(Path(child_dir))
    ctx.check()
    p_eval, c_eval = (json.loads(Path(p).read_text()) for p in (parent_eval_path, child_eval_path))
    correct, images = decision_correctness(
        {"parent": parent.onnx_path, "child": child.onnx_path}, dataset, config
    )
    accuracy = accuracy_drop_interval(correct["parent"], correct["child"], config.rule.confidence)
    per_class, speed = {}, {}
    for cls in parse_device_classes(config.device_classes):
        meter = Measurement(cls, **{k: getattr(config.measurement, k) for k in _BENCH})
        per_class[cls] = meter.compare(
            parent.onnx_path, child.onnx_path, config.latency_rounds, config.rule.confidence
        )
        speed[cls] = per_class[cls]
    decision = decide(accuracy, speed, config)
    for cls, ok in decision.faster.items():
        per_class[cls]["faster"] = ok
    isa = IsaResult.from_json(json.loads(Path(isa_check_path).read_text())) if isa_check_path else None
    if isa is not None:
        withhold_isa_rejected(decision, isa, per_class)
    result = GateResult(
        verdict="accepted" if decision.accepted_device_classes else "rejected",
        rule=rule_text(config),
        reasons=decision.reasons,
        decision_split=config.decision_split,
        decision_images=images,
        accuracy=accuracy,
        accuracy_rule=config.rule,
        min_speedup=config.min_speedup,
        accepted_device_classes=decision.accepted_device_classes,
        device_classes=per_class,
        parent=_summary_row(p_eval),
        child=_summary_row(c_eval),
        isa_check=None if isa is None else isa.summary(),
        benchmarks=benchmarks,
    )
    child_id = child.info.get("mlflow_model_id")
    with ctx.task("accuracy-gate", {"rule": result.rule, "child_model_id": child_id}):
        if ctx.enabled and child_id:
            _record(result, child_id, c_eval["model"].get("technique", ""), config.registered_model_name)
        out = result.to_json()
        write_json(Path(results_path), out)
        if report_path is not None:
            write_report(report_path, gate_markdown(out))
    return out


def collected_benchmarks(parts: Sequence[str] | None, role: str) -> dict[str, dict[str, Any]]:
    """The edge-benchmark tasks' JSON outputs (`dsl.Collected`: one JSON list of per-class summaries
    per task) as one record per device class; a class measured twice or a part that is not such a
    list is refused, naming it."""
    out: dict[str, dict[str, Any]] = {}
    for i, part in enumerate(parts or []):
        try:
            rows = json.loads(part)
        except (TypeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{role} benchmarks, part {i}: not JSON ({exc})") from exc
        if not isinstance(rows, list) or not all(isinstance(r, dict) and "device_class" in r for r in rows):
            raise ConfigError(f"{role} benchmarks, part {i}: expected a list of per-class summaries")
        for row in rows:
            if row["device_class"] in out:
                raise ConfigError(f"{role} benchmarks: device class {row['device_class']!r} measured twice")
            out[row["device_class"]] = row
    return out


def withhold_isa_rejected(decision: Decision, isa: IsaResult, per_class: dict[str, dict[str, Any]]) -> None:
    """No class the target-ISA check rejected is accepted; its reasons become the gate's."""
    for cls in isa.rejected_device_classes:
        if cls in per_class:
            per_class[cls]["isa_check"] = "rejected"
            decision.reasons += [
                Reason("isa_check_rejected", f"isa-check {cls}: {r.message}")
                for r in isa.classes[cls].reasons
            ]
    rejected = set(isa.rejected_device_classes)
    decision.accepted_device_classes = [c for c in decision.accepted_device_classes if c not in rejected]


def _record(result: GateResult, child_id: str, technique: str, name: str) -> None:
    """The verdict, rule and intervals as tags on the child; registration per class it earned."""
    acc = result.accuracy
    tags = {
        "edgecompress.gate": result.verdict,
        "edgecompress.gate_reason": "; ".join(r.message for r in result.reasons) or "passed",
        "edgecompress.gate_reason_codes": ",".join(r.code for r in result.reasons) or "passed",
        "edgecompress.gate_rule": result.rule,
        "edgecompress.gate_accuracy_drop": f"{acc['drop']:.5f} [{acc['ci_low']:.5f}, {acc['ci_high']:.5f}]",
        "edgecompress.gate_accepted_classes": ",".join(result.accepted_device_classes),
    }
    for cls, v in result.device_classes.items():
        tags[f"edgecompress.gate_speedup.{cls}"] = (
            f"{v['speedup']:.3f} [{v['ci_low']:.3f}, {v['ci_high']:.3f}]"
        )
    lineage.set_model_tags(child_id, tags)
    if result.accepted_device_classes:
        version = lineage.register(
            child_id, name, result.accepted_device_classes, tags={"edgecompress.technique": technique}
        )
        aliases = [lineage.alias_name(c) for c in result.accepted_device_classes]
        result.registered = {"name": name, "version": version, "aliases": aliases}


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


def _images_text(result: dict[str, Any]) -> str:
    im = result.get("decision_images")
    if not im:
        return f"{result['decision_split']} ({result['accuracy']['samples']} images)"
    return (
        f"{im['split']} images {im['start']}–{im['stop'] - 1} ({im['images']} images; the first "
        f"{im['selection_images']} are the selection part, never used to decide)"
        if im["selection_images"]
        else f"{im['split']} ({im['images']} images)"
    )


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
        f"Accuracy drop on {_images_text(result)} (paired): "
        f"{acc['drop'] * 100:+.2f} points, {result['confidence']:.0%} CI "
        f"[{acc['ci_low'] * 100:+.2f}, {acc['ci_high'] * 100:+.2f}] ({acc.get('method', 'bootstrap')}), "
        f"{acc['parent_only_correct']} images only the parent got right, {acc['child_only_correct']} only the "
        f"child, McNemar p = {acc['mcnemar_p']:.3g}.",
        "",
        markdown_table(
            ["model", "technique", f"{p['split']} accuracy", "params", "MACs", "ONNX bytes", "gzip bytes"],
            rows,
        ),
        "",
        markdown_table(
            [
                "device class",
                "emulated",
                "parent p50 ms",
                "child p50 ms",
                "speed-up",
                "CI low",
                "CI high",
                "passes",
            ],
            [
                [
                    k,
                    v["emulated"] if v.get("timing_meaningful", True) else "qemu: timing not meaningful",
                    v["parent_p50_ms"],
                    v["child_p50_ms"],
                    v["speedup"],
                    v["ci_low"],
                    v["ci_high"],
                    v["faster"],
                ]
                for k, v in result["device_classes"].items()
            ],
        ),
    ]
    methods = {
        f"{v['latency_rounds']['pairing']}"
        for v in result["device_classes"].values()
        if isinstance(v.get("latency_rounds"), dict) and v["latency_rounds"].get("pairing")
    }
    lines += ["", *(f"Latency rounds: {m}." for m in sorted(methods))] if methods else []
    bench = result.get("benchmarks") or {}
    if bench:
        classes = sorted({c for rows in bench.values() for c in rows})
        lines += [
            "",
            "Stand-alone edge benchmarks (one task per device class; reported, not decided on):",
            "",
            markdown_table(
                ["device class", *(f"{role} p50 ms" for role in bench)],
                [[c, *(rows.get(c, {}).get("p50_ms", "—") for rows in bench.values())] for c in classes],
            ),
        ]
    if result.get("registered"):
        reg = result["registered"]
        lines += [
            "",
            f"Registered as `{reg['name']}` version {reg['version']} with aliases {', '.join(reg['aliases'])}.",
        ]
    return "\n".join(lines) + "\n"
