"""`edgecompress prune`, `edgecompress distill` and `edgecompress sensitivity`: the same library
calls the prune and distill components make, on a Model artifact of your own."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edgecompress.cli.steps import _common, _lineage, _print


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prune", help="structured channel pruning or unstructured magnitude pruning of a Model artifact",
        description="Structured: physically removes channels along torch-pruning's dependency graph (fewer MACs, "
        "faster). Unstructured: zeroes the smallest weights (smaller gzip artifact, no dense-kernel speed-up).",
    )  # fmt: skip
    p.add_argument(
        "--model",
        type=Path,
        required=True,
        help="Model artifact directory with module.pt (e.g. from `train`)",
    )
    p.add_argument("--dataset", type=Path, required=True, help="Dataset artifact (.npz)")
    p.add_argument("--output", type=Path, required=True, help="pruned Model artifact directory to write")
    p.add_argument(
        "--report", type=Path, help="HTML report (per-layer channels or sparsity, schedule, sensitivity)"
    )
    p.add_argument(
        "--method", default="structured", choices=["structured", "unstructured"], help="default: structured"
    )
    p.add_argument(
        "--ratio", type=float, default=0.5, help="structured: fraction of channels removed, in (0, 1)"
    )
    p.add_argument(
        "--importance", default="l2", choices=["l1", "l2", "bn", "taylor"], help="channel importance"
    )
    p.add_argument(
        "--global-pruning", action="store_true", help="rank channels across layers (default: per layer)"
    )
    p.add_argument(
        "--layer-ratio",
        action="append",
        default=[],
        metavar="LAYER=RATIO",
        help="per-layer ratio override (repeatable), e.g. features.0=0.25",
    )
    p.add_argument(
        "--layer-ratios-from",
        type=Path,
        metavar="SENSITIVITY_JSON",
        help="set per-layer ratios from `edgecompress sensitivity` output (needs --max-drop)",
    )
    p.add_argument(
        "--max-drop",
        type=float,
        default=0.01,
        help="with --layer-ratios-from or --sensitivity: largest tolerated accuracy drop per layer (fraction)",
    )
    p.add_argument(
        "--keep-layer",
        action="append",
        default=[],
        metavar="LAYER",
        help="never prune this layer (repeatable)",
    )
    p.add_argument(
        "--budget-metric",
        default="",
        choices=["", "macs", "params", "latency"],
        help="prune until this metric is within --budget (replaces --ratio)",
    )
    p.add_argument(
        "--budget", type=float, default=0.0, help="MACs, parameters, or p50 milliseconds on --device-class"
    )
    p.add_argument("--device-class", default="rpi4-emulated", help="device class for a latency budget")
    p.add_argument("--steps", type=int, default=1, help="iterative schedule: prune in this many steps")
    p.add_argument("--finetune-epochs-between", type=int, default=0, help="fine-tuning epochs between steps")
    p.add_argument(
        "--finetune-epochs-after", type=int, default=2, help="fine-tuning epochs after the last step"
    )
    p.add_argument("--sparsity", type=float, default=0.8, help="unstructured: fraction of weights zeroed")
    p.add_argument(
        "--scope",
        default="global",
        choices=["global", "layer"],
        help="unstructured: one threshold or per layer",
    )
    p.add_argument("--lr", type=float, default=1e-3, help="fine-tuning learning rate")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--augment", action="store_true", help="flips and shifts while fine-tuning")
    p.add_argument(
        "--sensitivity",
        default="",
        metavar="RATIOS",
        help="structured: run a sensitivity analysis at these ratios first (e.g. 0.25,0.5,0.75) for the report",
    )
    p.add_argument(
        "--auto-layer-ratios",
        action="store_true",
        help="with --sensitivity: per-layer ratios = the largest tested ratio within --max-drop",
    )
    p.add_argument("--seed", type=int, default=0)
    _common(p)
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser(
        "distill", help="knowledge distillation from a teacher Model artifact into a student",
        description="Hinton soft-target distillation (temperature, alpha) with an optional 1×1-projected feature "
        "loss. The student is a Model artifact (e.g. a pruned model) or a zoo/user spec.",
    )  # fmt: skip
    p.add_argument(
        "--teacher", type=Path, required=True, help="teacher Model artifact directory (with module.pt)"
    )
    p.add_argument(
        "--student",
        required=True,
        help="a Model artifact directory (e.g. pruned), or a zoo family / module:factory / JSON spec",
    )
    p.add_argument("--dataset", type=Path, required=True, help="Dataset artifact (.npz)")
    p.add_argument("--output", type=Path, required=True, help="distilled Model artifact directory to write")
    p.add_argument("--report", type=Path, help="HTML report: teacher vs scratch student vs distilled student")
    p.add_argument("--temperature", type=float, default=4.0, help="softmax temperature T (> 0)")
    p.add_argument("--alpha", type=float, default=0.9, help="weight of the soft-target loss, in [0, 1]")
    p.add_argument("--feature-weight", type=float, default=0.0, help="weight of the feature loss (0 = off)")
    p.add_argument("--feature-pairs", default="auto", help="auto, or 'student.layer=teacher.layer;…'")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--augment", action="store_true")
    p.add_argument(
        "--no-compare", action="store_true", help="skip training the scratch student for the report"
    )
    p.add_argument("--seed", type=int, default=0)
    _common(p)
    p.set_defaults(func=cmd_distill)

    p = sub.add_parser(
        "sensitivity", help="per-layer pruning sensitivity (accuracy vs ratio, no fine-tuning)",
        description="Prune each layer alone at each ratio and measure validation accuracy; writes JSON (usable by "
        "`prune --layer-ratios-from`) and optionally a PNG plot.",
    )  # fmt: skip
    p.add_argument("--model", type=Path, required=True, help="Model artifact directory with module.pt")
    p.add_argument("--dataset", type=Path, required=True, help="Dataset artifact (.npz)")
    p.add_argument("--output", type=Path, required=True, help="JSON to write")
    p.add_argument("--plot", type=Path, help="PNG plot to write")
    p.add_argument("--ratios", default="0.25,0.5,0.75", help="comma-separated ratios in (0, 1)")
    p.add_argument("--importance", default="l2", choices=["l1", "l2", "bn", "taylor"])
    p.add_argument("--samples", type=int, default=1000, help="validation samples per measurement")
    p.add_argument(
        "--keep-layer", action="append", default=[], metavar="LAYER", help="skip this layer (repeatable)"
    )
    p.set_defaults(func=cmd_sensitivity)


def cmd_prune(a: argparse.Namespace) -> int:
    from edgecompress.errors import ConfigError
    from edgecompress.prune import (
        parse_layer_ratios,
        parse_ratios,
        prune_configs,
        prune_step,
        suggest_layer_ratios,
    )

    layer_ratios = parse_layer_ratios(",".join(a.layer_ratio))
    if a.layer_ratios_from:
        try:
            sens = json.loads(Path(a.layer_ratios_from).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(
                f"--layer-ratios-from {a.layer_ratios_from}: cannot read sensitivity JSON: {exc}"
            ) from exc
        layer_ratios = {**suggest_layer_ratios(sens, a.max_drop), **layer_ratios}
    structured, unstructured = prune_configs(
        ratio=a.ratio, importance=a.importance, global_pruning=a.global_pruning, layer_ratios=layer_ratios,
        keep_layers=a.keep_layer, budget_metric=a.budget_metric, budget=a.budget, device_class=a.device_class,
        steps=a.steps, finetune_epochs_between=a.finetune_epochs_between, finetune_epochs_after=a.finetune_epochs_after,
        sparsity=a.sparsity, scope=a.scope, lr=a.lr, batch_size=a.batch_size, augment=a.augment, seed=a.seed,
    )  # fmt: skip
    sens_ratios = parse_ratios(a.sensitivity)
    if a.auto_layer_ratios and not sens_ratios:
        raise ConfigError("--auto-layer-ratios needs --sensitivity RATIOS")
    info = prune_step(
        a.model,
        a.dataset,
        a.output,
        a.method,
        structured,
        unstructured,
        sens_ratios,
        a.max_drop if a.auto_layer_ratios else 0.0,
        a.report,
        _lineage(a),
    )
    prune = info["prune"]
    return _print(
        {
            "technique": info["technique"],
            "val_accuracy": prune["val_accuracy"],
            "stats": info["stats"],
            "channels": prune.get("channels"),
            "weight_sparsity": prune.get("weight_sparsity"),
            "budget": prune.get("budget"),
            "mlflow_model_id": info.get("mlflow_model_id"),
        }
    )


def cmd_distill(a: argparse.Namespace) -> int:
    from edgecompress.distill import distill_config, distill_step

    config = distill_config(
        temperature=a.temperature,
        alpha=a.alpha,
        feature_weight=a.feature_weight,
        feature_pairs=a.feature_pairs,
        epochs=a.epochs,
        batch_size=a.batch_size,
        lr=a.lr,
        augment=a.augment,
        seed=a.seed,
    )
    info = distill_step(
        a.teacher, a.dataset, a.student, a.output, config, not a.no_compare, a.report, _lineage(a)
    )
    return _print(
        {
            "technique": info["technique"],
            "comparison": info["distill"]["comparison"],
            "params": info["params"],
            "mlflow_model_id": info.get("mlflow_model_id"),
        }
    )


def cmd_sensitivity(a: argparse.Namespace) -> int:
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
