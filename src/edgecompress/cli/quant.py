"""`edgecompress quantize` (every method) and `edgecompress autotune` (accuracy-aware): the same library
calls the `quantize` and `autotune` components make. Their options are the config dataclasses' fields
(`edgecompress.params`), so a setting has the same name and default here, in the component and in
the pipeline (`quantize_<name>`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edgecompress.cli.steps import _lineage, step_command
from edgecompress.edge import Measurement
from edgecompress.params import from_args
from edgecompress.quantize.autotune import AutotuneConfig
from edgecompress.quantize.config import QuantConfig


def register(sub: argparse._SubParsersAction) -> None:
    calibration = "Dataset artifact (.npz); calibration comes from its training split"
    step_command(sub, cmd_quantize, QuantConfig, Measurement, dataset=calibration)
    p = step_command(
        sub, cmd_autotune, AutotuneConfig, dataset=calibration, report="HTML report (table + plot)"
    )
    p.add_argument("--results", type=Path, required=True, help="trials JSON to write")
    p.add_argument("--markdown", type=Path, help="Markdown report")


def cmd_quantize(a: argparse.Namespace) -> int:
    """quantize a model: static/dynamic INT8, FP16, mixed precision or QAT

    Quantize a Model artifact and check it against its parent (validation accuracy, top-1 agreement, max
    abs logit error, size, latency on a device class; an empty --device-class skips the latency check)."""
    from edgecompress.quantize import quantize_step

    info = quantize_step(
        a.model, a.dataset, a.output, from_args(QuantConfig, a), _lineage(a), from_args(Measurement, a)
    ).info
    print(
        json.dumps(
            {k: info.get(k) for k in ("technique", "onnx_bytes", "mlflow_model_id", "parent_agreement")},
            indent=2,
            default=str,
        )
    )
    return 0


def cmd_autotune(a: argparse.Namespace) -> int:
    """accuracy-aware quantization: the first config that keeps accuracy AND is faster/smaller

    Try PTQ variants, then mixed precision, then QAT; stop at the first that meets the accuracy criterion
    and beats the parent on the objective. Exit status 1 when none passed (the closest is still written,
    marked not passed)."""
    from edgecompress.quantize import autotune_step
    from edgecompress.quantize.autotune import report_markdown

    cfg = from_args(AutotuneConfig, a)
    out = autotune_step(a.model, a.dataset, a.output, a.results, cfg, a.report, a.markdown, _lineage(a))
    print(report_markdown(out.extra["autotune_result"]))
    return 0 if out.extra["autotune_result"]["passed"] else 1
