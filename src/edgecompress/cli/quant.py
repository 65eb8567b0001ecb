"""`edgecompress quantize` (every method) and `edgecompress autotune` (accuracy-aware): the same library
calls the `quantize` and `autotune` components make."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edgecompress.quantize import CALIBRATION_METHODS, METHODS, QUANT_FORMATS, QUANT_TYPES


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--experiment", default="edgecompress", help="MLflow experiment (default: edgecompress)")
    p.add_argument("--no-track", action="store_true", help="do not record lineage in MLflow")


def _reduce_range(value: str) -> bool | None:
    if value not in ("auto", "on", "off"):
        raise argparse.ArgumentTypeError("expected auto, on or off")
    return None if value == "auto" else value == "on"


def _quant_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", type=Path, required=True, help="Model artifact directory (or a bare .onnx file)"
    )
    p.add_argument(
        "--dataset",
        type=Path,
        required=True,
        help="Dataset artifact (.npz); calibration comes from its training split",
    )
    p.add_argument("--output", type=Path, required=True, help="Model artifact directory to write")
    p.add_argument(
        "--calibration-samples",
        type=int,
        default=256,
        help="calibration samples drawn from the training split (default 256)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration draw (default 0)")
    p.add_argument(
        "--device-class",
        default="rpi4-emulated",
        help="device class on which latency is compared with the parent (default rpi4-emulated)",
    )
    p.add_argument("--farm-url", default=None, help="device farm controller URL (default: local emulation)")
    p.add_argument(
        "--bench-min-runs", type=int, default=200, help="minimum timed runs per latency measurement"
    )
    p.add_argument(
        "--bench-min-duration-s", type=float, default=1.0, help="minimum seconds per latency measurement"
    )


def _qat_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--qat-epochs", type=int, default=2, help="QAT fine-tuning epochs (default 2)")
    p.add_argument("--qat-lr", type=float, default=1e-4, help="QAT learning rate (default 1e-4)")
    p.add_argument(
        "--qat-max-train-samples", type=int, default=None, help="QAT: use at most this many training samples"
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "quantize",
        help="quantize a model: static/dynamic INT8, FP16, mixed precision or QAT",
        description="Quantize a Model artifact and check it against its parent (validation accuracy, "
        "top-1 agreement, max abs logit error, size, latency on a device class).",
    )
    _quant_options(p)
    p.add_argument("--method", default="static", choices=METHODS, help="quantization method (default static)")
    p.add_argument(
        "--calibration-method",
        default="minmax",
        choices=CALIBRATION_METHODS,
        help="static calibration (default minmax)",
    )
    p.add_argument(
        "--format",
        dest="quant_format",
        default="qdq",
        choices=QUANT_FORMATS,
        help="static format (default qdq)",
    )
    p.add_argument("--per-tensor", action="store_true", help="per-tensor weights (default per-channel)")
    p.add_argument(
        "--activation-type", default="uint8", choices=QUANT_TYPES, help="activation type (default uint8)"
    )
    p.add_argument("--weight-type", default="int8", choices=QUANT_TYPES, help="weight type (default int8)")
    p.add_argument(
        "--reduce-range",
        type=_reduce_range,
        default=None,
        metavar="{auto,on,off}",
        help="7-bit weights; auto turns it on for x86 CPUs without VNNI, where full-range INT8 overflows (default auto)",
    )
    p.add_argument("--exclude", default="", help="comma-separated node names to keep in float")
    p.add_argument(
        "--mixed-exclude",
        type=int,
        default=0,
        help="mixed: keep this many most sensitive nodes in float (0: as many as --target-accuracy needs)",
    )
    p.add_argument("--target-accuracy", type=float, default=None, help="mixed: probe accuracy to reach")
    _qat_options(p)
    _common(p)
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser(
        "autotune",
        help="accuracy-aware quantization: the first config that keeps accuracy AND is faster/smaller",
        description="Try PTQ variants, then mixed precision, then QAT; stop at the first that meets the "
        "accuracy criterion and beats the parent on the objective. Exit status 1 when none passed "
        "(the closest is still written, marked not passed).",
    )
    _quant_options(p)
    p.add_argument(
        "--max-drop",
        type=float,
        default=0.01,
        help="largest allowed accuracy drop, a fraction (default 0.01 = 1 point)",
    )
    p.add_argument("--relative", action="store_true", help="--max-drop is relative to the parent's accuracy")
    p.add_argument(
        "--objective",
        default="latency",
        choices=["latency", "size"],
        help="what must improve (default latency)",
    )
    p.add_argument(
        "--min-gain",
        type=float,
        default=1.0,
        help="required speed-up / size ratio over the parent, > this (default 1)",
    )
    p.add_argument("--no-qat", action="store_true", help="skip the QAT trial")
    p.add_argument("--no-mixed", action="store_true", help="skip the mixed-precision trial")
    _qat_options(p)
    p.add_argument("--results", type=Path, required=True, help="trials JSON to write")
    p.add_argument("--report", type=Path, help="HTML report (table + plot)")
    p.add_argument("--markdown", type=Path, help="Markdown report")
    _common(p)
    p.set_defaults(func=cmd_autotune)


def _lineage(a: argparse.Namespace):
    from edgecompress.step import Lineage

    return Lineage(experiment=a.experiment, enabled=not a.no_track)


def _bench(a: argparse.Namespace) -> dict:
    return {"min_runs": a.bench_min_runs, "min_duration_s": a.bench_min_duration_s}


def cmd_quantize(a: argparse.Namespace) -> int:
    from edgecompress.quantize import QuantConfig
    from edgecompress.steps import quantize_step

    extra = {} if a.reduce_range is None else {"reduce_range": a.reduce_range}
    cfg = QuantConfig(
        method=a.method,
        calibration_samples=a.calibration_samples,
        calibration_method=a.calibration_method,
        quant_format=a.quant_format,
        per_channel=not a.per_tensor,
        activation_type=a.activation_type,
        weight_type=a.weight_type,
        seed=a.seed,
        nodes_to_exclude=tuple(n for n in a.exclude.split(",") if n),
        mixed_exclude=a.mixed_exclude,
        target_accuracy=a.target_accuracy,
        qat_epochs=a.qat_epochs,
        qat_lr=a.qat_lr,
        qat_max_train_samples=a.qat_max_train_samples,
        **extra,
    )
    info = quantize_step(
        a.model, a.dataset, a.output, cfg, _lineage(a), a.device_class, _bench(a), a.farm_url
    )
    print(
        json.dumps(
            {k: info.get(k) for k in ("technique", "onnx_bytes", "mlflow_model_id", "parent_agreement")},
            indent=2,
            default=str,
        )
    )
    return 0


def cmd_autotune(a: argparse.Namespace) -> int:
    from edgecompress.autotune import AutotuneConfig, Criterion
    from edgecompress.steps import autotune_step

    cfg = AutotuneConfig(
        Criterion(a.max_drop, a.relative),
        a.objective,
        a.device_class,
        a.farm_url,
        a.min_gain,
        a.calibration_samples,
        a.seed,
        include_mixed=not a.no_mixed,
        include_qat=not a.no_qat,
        qat_epochs=a.qat_epochs,
        qat_lr=a.qat_lr,
        qat_max_train_samples=a.qat_max_train_samples,
        bench_min_runs=a.bench_min_runs,
        bench_min_duration_s=a.bench_min_duration_s,
    )
    out = autotune_step(a.model, a.dataset, a.output, a.results, cfg, a.report, a.markdown, _lineage(a))
    from edgecompress.autotune import report_markdown

    print(report_markdown(out["autotune_result"]))
    return 0 if out["autotune_result"]["passed"] else 1
