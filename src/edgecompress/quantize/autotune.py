"""Accuracy-aware quantization auto-tuning: never ship a slower or broken INT8 model.

Given an accuracy criterion (maximum drop, absolute or relative, on the validation split) and an
objective (latency on a device class, or size), the tuner tries configurations from cheap to
expensive — post-training variants, then mixed precision, then quantization-aware training — and
stops at the first that meets the criterion *and* beats the parent on the objective, measured on
the target device class. If none does, it returns the best candidate marked as not passed, with a
report that says why each trial failed. A result slower (or larger) than its parent is never a
success.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import onnx

from edgecompress.data import Dataset, selection_size
from edgecompress.edge import Measurement
from edgecompress.errors import ConfigError, EdgeCompressError
from edgecompress.quantize.check import check_against_parent
from edgecompress.quantize.config import QuantConfig
from edgecompress.quantize.methods import quantize_model
from edgecompress.quantize.mixed import probe_accuracy
from edgecompress.reports import figure_png, html_page, html_table, markdown_table, png_img_tag
from edgecompress.rules import AccuracyRule, Reason, has_code, reasons_from_json, reasons_json

log = logging.getLogger(__name__)

OBJECTIVES = ("latency", "size")


@dataclass
class Criterion:
    """The largest accuracy drop allowed: the shared accuracy rule (`edgecompress.rules`), judged on the
    point estimate (autotune chooses on validation's selection part; the gate then decides with the
    interval on images autotune never saw), absolute (0.003 = 0.3 points) or relative to the parent."""

    rule: AccuracyRule = field(
        default_factory=lambda: AccuracyRule(accuracy_rule="point"),
        metadata={
            "flatten": True,
            "exclude": ("accuracy_rule", "confidence"),
            "rename": {"max_accuracy_drop": "max_drop"},
        },
    )
    relative: bool = field(default=False, metadata={"help": "max_drop is relative to the parent's accuracy"})

    @classmethod
    def of(cls, max_drop: float, relative: bool = False) -> Criterion:
        return cls(AccuracyRule(max_drop, accuracy_rule="point"), relative)

    @property
    def max_drop(self) -> float:
        return self.rule.max_accuracy_drop

    def validate(self) -> None:
        self.rule.validate(name="max_drop")

    def allowed_drop(self, parent_accuracy: float) -> float:
        return self.max_drop * parent_accuracy if self.relative else self.max_drop

    def describe(self) -> str:
        return (
            f"drop ≤ {self.max_drop * 100:g} % of the parent's accuracy"
            if self.relative
            else f"drop ≤ {self.max_drop * 100:g} points"
        )


@dataclass
class AutotuneConfig:
    criterion: Criterion = field(default_factory=Criterion, metadata={"flatten": True})
    objective: str = field(default="latency", metadata={"help": "what must improve", "choices": OBJECTIVES})
    measurement: Measurement = field(default_factory=Measurement, metadata={"flatten": True})
    min_gain: float = field(
        default=1.0,
        metadata={"help": "the child must beat its parent by more than this factor on the objective"},
    )
    calibration_samples: int = field(default=256, metadata={"help": "calibration samples of every PTQ trial"})
    seed: int = field(default=0, metadata={"help": "seed of the calibration draw and of QAT"})
    include_mixed: bool = field(default=True, metadata={"help": "try mixed precision"})
    include_qat: bool = field(default=True, metadata={"help": "try quantization-aware training"})
    qat_epochs: int = field(default=2, metadata={"help": "QAT fine-tuning epochs"})
    qat_lr: float = field(default=1e-4, metadata={"help": "QAT learning rate"})
    qat_max_train_samples: int | None = field(
        default=None, metadata={"help": "QAT: at most this many training samples (0: all)"}
    )
    probe_samples: int = field(default=1000, metadata={"help": "mixed: validation samples of the probe"})

    @property
    def device_class(self) -> str:
        return self.measurement.device_class

    def validate(self) -> None:
        self.criterion.validate()
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"objective {self.objective!r} not in {OBJECTIVES}")
        if self.min_gain < 1.0:
            raise ConfigError(
                f"min_gain must be ≥ 1 (a result no better than its parent is never a success), got {self.min_gain}"
            )
        self.measurement.validate()

    def plan(self, has_module: bool, target_accuracy: float) -> list[QuantConfig]:
        """Trials in order: cheap post-training variants, then mixed precision, then QAT."""
        base = QuantConfig(
            calibration_samples=self.calibration_samples,
            seed=self.seed,
            probe_samples=self.probe_samples,
            target=self.measurement.device_class,
        ).resolved()
        trials = [
            base,
            replace(base, calibration_method="percentile"),
            replace(base, calibration_method="entropy"),
            replace(base, per_channel=False),
            replace(base, weight_bits=4),  # int4 weights: MatMulNBits / int4 QDQ (a candidate, measured)
            replace(base, method="dynamic"),
        ]
        if self.objective == "size":
            trials.append(replace(base, method="fp16"))
        if self.include_mixed:
            trials.append(replace(base, method="mixed", target_accuracy=target_accuracy))
        if self.include_qat and has_module:
            trials.append(
                replace(
                    base,
                    method="qat",
                    qat_epochs=self.qat_epochs,
                    qat_lr=self.qat_lr,
                    qat_max_train_samples=self.qat_max_train_samples,
                )
            )
        return trials


def reuse_per_op(qcfg: QuantConfig, decided: dict[str, Any]) -> QuantConfig:
    """A later static trial with an earlier trial's op-group decisions: its float nodes excluded, no
    new measurement (its own check against the parent still measures the result)."""
    if decided["all_float"]:
        return qcfg  # nothing paid on this class: the trial measures again (and is judged like any other)
    floats = tuple(n for n in decided["float_nodes"] if n not in qcfg.nodes_to_exclude)
    return replace(qcfg, objective="size", nodes_to_exclude=(*qcfg.nodes_to_exclude, *floats))


# Reasons that say the trial did not beat its parent on the objective (the rest are about accuracy).
GAIN_CODES = ("latency_not_meaningful", "not_faster", "not_smaller")


@dataclass
class Judgement:
    """Whether a trial passes, on accuracy and on the objective, and every reason it does not."""

    reasons: list[Reason]

    @property
    def accuracy_ok(self) -> bool:
        return not has_code(self.reasons, "accuracy_drop_too_large")

    @property
    def gain_ok(self) -> bool:
        return not has_code(self.reasons, *GAIN_CODES)

    @property
    def passed(self) -> bool:
        return not self.reasons


def judge(check: dict[str, Any], allowed_drop: float, config: AutotuneConfig) -> Judgement:
    """Whether a trial passes, on accuracy and on the objective, and every reason it does not.

    Accuracy is the selection part's point estimate (autotune chooses; the gate then decides with an
    interval on images autotune never saw). Latency is judged like the gate: interleaved rounds, and
    the speed-up's lower bound must exceed `min_gain`; a class whose timings mean nothing (QEMU) never
    passes on latency."""
    reasons = []
    broken = config.criterion.rule.breaks({"drop": check["accuracy_drop"]}, "", allowed_drop)
    if broken:
        reasons.append(broken)
    if config.objective == "latency":
        if not check["timing_meaningful"]:
            reasons.append(
                Reason(
                    "latency_not_meaningful",
                    f"no latency verdict on {config.device_class}: its timings are not meaningful (QEMU)",
                )
            )
        elif not check["speedup_ci_low"] > config.min_gain:
            reasons.append(
                Reason(
                    "not_faster",
                    f"not faster than its parent on {config.device_class} by more than {config.min_gain:g}× with "
                    f"95 % confidence: {check['speedup']:.2f}× [{check['speedup_ci_low']:.2f}, "
                    f"{check['speedup_ci_high']:.2f}] over {check['latency_rounds']} interleaved rounds "
                    f"(p50 {check['p50_ms']:.4f} ms vs {check['parent_p50_ms']:.4f} ms)",
                )
            )
    elif not check["size_ratio"] > config.min_gain:
        reasons.append(
            Reason(
                "not_smaller",
                f"not smaller than its parent: {check['onnx_bytes']} vs {check['parent_onnx_bytes']} bytes",
            )
        )
    return Judgement(reasons)


@dataclass
class AutotuneTrial:
    """One configuration tried: its quantization settings, the check against the parent (`check`,
    absent where quantizing failed: `error`), the judgement and its reasons (codes and messages)."""

    index: int
    name: str
    method: str
    config: dict[str, Any]
    reasons: list[Reason] = field(default_factory=list)
    path: str | None = None
    check: dict[str, Any] | None = None
    details: dict[str, Any] | None = None
    error: str | None = None
    seconds: float = 0.0

    @property
    def judgement(self) -> Judgement:
        return Judgement(self.reasons)

    @property
    def passed(self) -> bool:
        return self.check is not None and self.judgement.passed

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "index": self.index,
            "name": self.name,
            "method": self.method,
            "config": self.config,
        }
        if self.check is not None:
            j = self.judgement
            if self.path is not None:  # the step drops the trials' scratch paths from its artifact
                out["path"] = self.path
            out.update(check=self.check, accuracy_ok=j.accuracy_ok, gain_ok=j.gain_ok)
            out["details"] = self.details
        if self.error is not None:
            out["error"] = self.error
        return {**out, "passed": self.passed, **reasons_json(self.reasons), "seconds": self.seconds}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AutotuneTrial:
        keys = ("index", "name", "method", "config", "path", "check", "details", "error", "seconds")
        return cls(**{k: data[k] for k in keys if k in data}, reasons=reasons_from_json(data))


def _rank(trial: AutotuneTrial, objective: str) -> tuple:
    """Best-of-failures order: meets accuracy first, then beats the parent, then objective, then accuracy."""
    c, j = trial.check, trial.judgement
    gain = c.get("speedup_ci_low", 0.0) if objective == "latency" else c["size_ratio"]
    return (not j.accuracy_ok, not j.gain_ok, -gain, c["accuracy_drop"])


def autotune(
    parent_onnx: Path,
    dataset: Dataset,
    config: AutotuneConfig,
    module: Any = None,
    workdir: Path | None = None,
    trial_hook: Any = None,
) -> dict[str, Any]:
    """Run the trials; returns the result dict with `pick_path` (an ONNX file in `workdir`).

    `trial_hook(index, trial)` is called after each trial (the step logs it to MLflow)."""
    config.validate()
    workdir = Path(workdir or tempfile.mkdtemp(prefix="edgecompress-autotune-"))
    workdir.mkdir(parents=True, exist_ok=True)
    # accuracy on validation's selection part only: the gate decides on the rest
    parent_accuracy = probe_accuracy(Path(parent_onnx), dataset, selection_size(dataset.size("val")))
    allowed = config.criterion.allowed_drop(parent_accuracy)
    plan = config.plan(module is not None, parent_accuracy - allowed)
    trials: list[AutotuneTrial] = []
    pick: AutotuneTrial | None = None
    # whether int8 attention MatMuls are faster is a property of the graph and the target, not of the
    # calibration: the first trial that measures it decides for the later ones
    attention: dict[str, Any] | None = None
    # so is each op group's precision (objective latency): measured once per weight width, reused
    per_op: dict[int, dict[str, Any]] = {}
    for i, qcfg in enumerate(plan):
        reused = (
            attention is not None and qcfg.attention_matmuls == "auto" and qcfg.method in ("static", "mixed")
        )
        if reused:
            qcfg = replace(qcfg, attention_matmuls=attention["chosen"])
        decided = (
            per_op.get(qcfg.weight_bits) if qcfg.method == "static" and qcfg.objective == "latency" else None
        )
        if decided is not None:
            qcfg = reuse_per_op(qcfg, decided)
        start = time.monotonic()
        trial = AutotuneTrial(i, qcfg.label(), qcfg.method, qcfg.as_params())
        try:
            proto, details = quantize_model(Path(parent_onnx), dataset, qcfg, module)
            path = workdir / f"trial-{i}.onnx"
            onnx.save_model(proto, str(path))
            measure = config.measurement if config.objective == "latency" else None
            # parent and trial in interleaved rounds: load on the machine drifts between trials
            check = check_against_parent(Path(parent_onnx), path, dataset, "val", measure)
            trial.path, trial.check = str(path), check
            trial.reasons = judge(check, allowed, config).reasons
            trial.details = {k: v for k, v in details.items() if k != "history"}
            if details.get("per_op", {}).get("measured") and qcfg.weight_bits not in per_op:
                per_op[qcfg.weight_bits] = {**details["per_op"], "measured_in_trial": i}
            elif decided is not None:
                trial.details["per_op"] = {
                    "quantized_groups": decided["final"]["quantized_groups"],
                    "all_float": decided["all_float"],
                    "measured_in_trial": decided["measured_in_trial"],
                }
            if attention is None and "attention_matmuls" in details:
                attention = {**details["attention_matmuls"], "measured_in_trial": i}
            elif reused:
                trial.details["attention_matmuls"] = {
                    "chosen": attention["chosen"],
                    "measured_in_trial": attention["measured_in_trial"],
                }
        except EdgeCompressError as exc:
            trial.reasons, trial.error = [Reason("error", f"error: {exc}")], str(exc)
        trial.seconds = time.monotonic() - start
        verdict = "PASS" if trial.passed else "; ".join(r.message for r in trial.reasons)
        log.info("autotune trial %d %s: %s", i, trial.name, verdict)
        trials.append(trial)
        if trial_hook is not None:
            trial_hook(i, trial)
        if trial.passed:
            pick = trial
            break
    candidates = [t for t in trials if t.check is not None]
    if not candidates:
        failed = " | ".join(f"{t.name}: {t.reasons[0].message}" for t in trials)
        raise ConfigError(f"every quantization trial failed: {failed}")
    if pick is None:
        pick = min(candidates, key=lambda t: _rank(t, config.objective))
    criterion = config.criterion
    first = candidates[0].check
    return {
        "passed": pick.passed,
        "pick": pick.name,
        "pick_index": pick.index,
        "pick_path": pick.path,
        "criterion": {
            "max_drop": criterion.max_drop,
            "relative": criterion.relative,
            "allowed_drop": allowed,
            "description": criterion.describe(),
        },
        "objective": config.objective,
        "device_class": config.device_class,
        "min_gain": config.min_gain,
        "parent": {
            "accuracy": parent_accuracy,
            "onnx_bytes": Path(parent_onnx).stat().st_size,
            "p50_ms": first.get("parent_p50_ms", float("nan")),
            "emulated": first.get("emulated"),
        },
        "trials": [t.to_json() for t in trials],
    }


# --- reports --------------------------------------------------------------------------------------


def _trial_rows(result: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for t in result["trials"]:
        c = t.get("check", {})
        rows.append(
            [
                t["index"],
                t["name"],
                c.get("accuracy", float("nan")),
                c.get("accuracy_drop", float("nan")) * 100,
                c.get("top1_agreement", float("nan")),
                c.get("onnx_bytes", 0),
                c.get("p50_ms", float("nan")),
                c.get("speedup", float("nan")),
                c.get("size_ratio", float("nan")),
                t["seconds"],
                "PASS" if t["passed"] else "; ".join(t["reasons"]),
            ]
        )
    return rows


_HEADERS = [
    "#",
    "trial",
    "val accuracy",
    "drop (points)",
    "top-1 agreement",
    "ONNX bytes",
    "p50 ms",
    "speed-up",
    "size ratio",
    "seconds",
    "verdict",
]


def _verdict_lines(result: dict[str, Any]) -> list[str]:
    p = result["parent"]
    where = f"{result['device_class']}{' (emulated)' if p['emulated'] else ''}"
    lines = [
        f"Criterion: {result['criterion']['description']} (allowed {result['criterion']['allowed_drop'] * 100:.2f} "
        f"points from the parent's {p['accuracy']:.4f}); objective: {result['objective']} on {where}, parent p50 "
        f"{p['p50_ms']:.4f} ms, {p['onnx_bytes']} bytes."
    ]
    if result["passed"]:
        lines.append(
            f"Picked trial {result['pick_index']} ({result['pick']}): the first that met the criterion and beat "
            "the parent."
        )
    else:
        lines.append(
            f"No trial passed. Returned the closest, trial {result['pick_index']} ({result['pick']}), marked "
            "NOT PASSED: do not deploy it as an improvement. Why each failed is in the table."
        )
    return lines


def trials_png(result: dict[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = "speedup" if result["objective"] == "latency" else "size_ratio"
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for t in result["trials"]:
        if "check" not in t:
            continue
        c = t["check"]
        ax.scatter(
            c.get(key, 0),
            c["accuracy_drop"] * 100,
            color="tab:green" if t["passed"] else "tab:red",
            marker="*" if t["index"] == result["pick_index"] else "o",
            s=140 if t["index"] == result["pick_index"] else 40,
        )
        ax.annotate(
            t["name"],
            (c.get(key, 0), c["accuracy_drop"] * 100),
            fontsize=7,
            xytext=(4, 3),
            textcoords="offset points",
        )
    ax.axhline(result["criterion"]["allowed_drop"] * 100, color="grey", ls="--", lw=1, label="allowed drop")
    ax.axvline(result["min_gain"], color="grey", ls=":", lw=1, label="parent")
    ax.set_xlabel("speed-up over parent (p50)" if key == "speedup" else "size ratio (parent / child)")
    ax.set_ylabel("accuracy drop (points, val)")
    ax.set_title(f"auto-tuning trials on {result['device_class']} (green: passed, ★: pick)")
    ax.legend(fontsize=8)
    return figure_png(fig)


def report_markdown(result: dict[str, Any]) -> str:
    lines = [f"# Quantization auto-tuning: **{'PASSED' if result['passed'] else 'NOT PASSED'}**", ""]
    lines += _verdict_lines(result) + ["", markdown_table(_HEADERS, _trial_rows(result)), ""]
    return "\n".join(lines)


def report_html(result: dict[str, Any]) -> str:
    summary = "".join(f"<p>{line}</p>" for line in _verdict_lines(result))
    return html_page(
        f"Quantization auto-tuning: {'PASSED' if result['passed'] else 'NOT PASSED'}",
        [
            ("Verdict", summary),
            ("Trials", html_table(_HEADERS, _trial_rows(result))),
            ("Accuracy vs gain", png_img_tag(trials_png(result), "trials plot")),
        ],
    )


def mlflow_trial_logger(pipeline_run_id: str):
    """A trial hook that records each trial as a child run of the active (autotune task) run."""

    def hook(index: int, trial: AutotuneTrial) -> None:
        import mlflow

        tags = {
            "edgecompress.task": "autotune-trial",
            "edgecompress.pipeline_run_id": pipeline_run_id,
            "edgecompress.trial.passed": str(trial.passed).lower(),
            "edgecompress.trial.reasons": "; ".join(r.message for r in trial.reasons)[:5000] or "passed",
            "edgecompress.trial.reason_codes": ",".join(r.code for r in trial.reasons)[:5000] or "passed",
        }
        with mlflow.start_run(run_name=f"trial-{index}-{trial.method}", nested=True, tags=tags):
            mlflow.log_params({f"quantize.{k}": str(v)[:6000] for k, v in trial.config.items()})
            check = trial.check or {}
            mlflow.log_metrics({k: float(v) for k, v in check.items() if isinstance(v, int | float)})
            mlflow.log_metric("seconds", trial.seconds)

    return hook
