"""`edgecompress prune`, `edgecompress distill` and `edgecompress sensitivity`: the same library
calls the prune and distill components make, on a Model artifact of your own."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edgecompress.cli.steps import _lineage, _print, io_arguments, step_command
from edgecompress.distill import DistillConfig, DistillStepOptions
from edgecompress.entry import add_command
from edgecompress.params import add_options, from_args
from edgecompress.prune import PruneConfig
from edgecompress.prune.importance import importance_help, importance_names


def register(sub: argparse._SubParsersAction) -> None:
    p = step_command(
        sub,
        cmd_prune,
        PruneConfig,
        model="Model artifact directory with module.pt (e.g. from `train`)",
        output="pruned Model artifact directory to write",
        report="HTML report (per-layer channels or sparsity, schedule, sensitivity)",
    )
    p.add_argument(
        "--layer-ratios-from",
        type=Path,
        metavar="SENSITIVITY_JSON",
        help="per-layer ratios from `edgecompress sensitivity` output: the largest tested ratio within "
        "--sensitivity-max-drop",
    )
    p = step_command(
        sub,
        cmd_distill,
        DistillConfig,
        model=None,
        output="distilled Model artifact directory to write",
        report="HTML report: teacher vs scratch student vs distilled student",
    )
    p.add_argument(
        "--teacher", type=Path, required=True, help="teacher Model artifact directory (with module.pt)"
    )
    p.add_argument(
        "--student",
        required=True,
        help="a Model artifact directory (e.g. pruned), or a zoo family / module:factory / JSON spec",
    )
    add_options(p, DistillStepOptions, exclude=("student_spec",))  # --student takes a spec too

    p = add_command(sub, cmd_sensitivity)
    io_arguments(p, model="Model artifact directory with module.pt", output="JSON to write")
    p.add_argument("--plot", type=Path, help="PNG plot to write")
    p.add_argument("--ratios", default="0.25,0.5,0.75", help="comma-separated ratios in (0, 1)")
    p.add_argument("--importance", default="l2", choices=importance_names(), help=importance_help())
    p.add_argument("--samples", type=int, default=1000, help="validation samples per measurement")
    p.add_argument(
        "--keep-layer", action="append", default=[], metavar="LAYER", help="skip this layer (repeatable)"
    )


def cmd_prune(a: argparse.Namespace) -> int:
    """structured channel pruning or unstructured magnitude pruning of a Model artifact

    Structured: physically removes channels along torch-pruning's dependency graph (fewer MACs, faster).
    Unstructured: zeroes the smallest weights (smaller gzip artifact, no dense-kernel speed-up)."""
    from edgecompress.errors import ConfigError
    from edgecompress.prune import prune_step, suggest_layer_ratios

    config = from_args(PruneConfig, a)
    if a.layer_ratios_from:
        if not config.sensitivity_max_drop > 0:
            raise ConfigError(
                "--layer-ratios-from needs --sensitivity-max-drop > 0 (the per-layer accuracy budget)"
            )
        try:
            sens = json.loads(Path(a.layer_ratios_from).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(
                f"--layer-ratios-from {a.layer_ratios_from}: cannot read sensitivity JSON: {exc}"
            ) from exc
        config.structured.layer_ratios = {
            **suggest_layer_ratios(sens, config.sensitivity_max_drop),
            **config.structured.layer_ratios,
        }
        config.sensitivity_max_drop = 0.0  # spent on the file: no second, run-time suggestion
    result = prune_step(a.model, a.dataset, a.output, config, report_path=a.report, lineage_ctx=_lineage(a))
    info = result.info
    prune = info["prune"]
    return _print(
        {
            "technique": info["technique"],
            "val_accuracy": prune["val_accuracy"],
            "stats": result.extra["stats"],
            "channels": prune.get("channels"),
            "weight_sparsity": prune.get("weight_sparsity"),
            "budget": prune.get("budget"),
            "mlflow_model_id": info.get("mlflow_model_id"),
        }
    )


def cmd_distill(a: argparse.Namespace) -> int:
    """knowledge distillation from a teacher Model artifact into a student

    Hinton soft-target distillation (temperature, alpha) with an optional feature loss (hint:
    1×1-projected MSE; attention: attention transfer between matched stages). The student is a Model
    artifact (e.g. a pruned model) or a zoo/user spec."""
    from edgecompress.distill import distill_step

    info = distill_step(
        a.teacher,
        a.dataset,
        a.student,
        a.output,
        from_args(DistillConfig, a),
        from_args(DistillStepOptions, a).compare_scratch,
        a.report,
        _lineage(a),
    ).info
    return _print(
        {
            "technique": info["technique"],
            "comparison": info["distill"]["comparison"],
            "sparsity": info["distill"]["sparsity"],
            "params": info["params"],
            "mlflow_model_id": info.get("mlflow_model_id"),
        }
    )


def cmd_sensitivity(a: argparse.Namespace) -> int:
    """per-layer pruning sensitivity (accuracy vs ratio, no fine-tuning)

    Prune each layer alone at each ratio and measure validation accuracy; writes JSON (usable by `prune
    --layer-ratios-from`) and optionally a PNG plot."""
    from edgecompress.data import load_dataset
    from edgecompress.io import atomic_path, write_json
    from edgecompress.prune import parse_names, parse_ratios, sensitivity, sensitivity_png
    from edgecompress.step import load_parent

    dataset = load_dataset(a.dataset)
    _, module = load_parent(a.model, dataset)
    result = sensitivity(
        module,
        dataset,
        parse_ratios(a.ratios),
        a.importance,
        samples=a.samples,
        keep_layers=parse_names(a.keep_layer),
    )
    write_json(a.output, result)
    if a.plot:
        with atomic_path(a.plot) as tmp:
            tmp.write_bytes(sensitivity_png(result))
    return _print(result)
