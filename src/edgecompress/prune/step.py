"""The pruning pipeline step: `prune_configs` builds both configs from the flat parameters a component or
CLI command takes; `prune_step` prunes a Model artifact (optional sensitivity analysis first), saves the
child with lineage and, if asked, writes the HTML report that `prune_report` renders.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgecompress.errors import ConfigError
from edgecompress.prune.common import _check_ratio, _modules_by_name, parse_layer_ratios, parse_names
from edgecompress.prune.sensitivity import sensitivity, sensitivity_png, suggest_layer_ratios
from edgecompress.prune.structured import (
    StructuredConfig,
    _check_importance_fits,
    check_traceable,
    prune_structured,
)
from edgecompress.prune.unstructured import UnstructuredConfig, prune_unstructured
from edgecompress.train import TrainConfig, accuracy


def prune_configs(
    *,
    ratio: float = 0.5,
    importance: str = "l2",
    global_pruning: bool = False,
    layer_ratios: str | dict[str, float] = "",
    keep_layers: str | Sequence[str] = "",
    budget_metric: str = "",
    budget: float = 0.0,
    device_class: str = "rpi4-emulated",
    steps: int = 1,
    finetune_epochs_between: int = 0,
    finetune_epochs_after: int = 0,
    sparsity: float = 0.8,
    scope: str = "global",
    lr: float = 1e-3,
    batch_size: int = 128,
    augment: bool = False,
    seed: int = 0,
) -> tuple[StructuredConfig, UnstructuredConfig]:
    """Both configs from the flat parameters a component or a CLI command takes."""

    def ft(epochs: int) -> TrainConfig | None:
        if epochs < 0:
            raise ConfigError(f"fine-tuning epochs must be ≥ 0, got {epochs}")
        return (
            TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, augment=augment, seed=seed)
            if epochs
            else None
        )

    keep = parse_names(keep_layers)
    structured = StructuredConfig(
        ratio=ratio, importance=importance, global_pruning=global_pruning, layer_ratios=parse_layer_ratios(layer_ratios),
        keep_layers=keep, budget_metric=budget_metric, budget=budget, device_class=device_class, steps=steps,
        finetune_between=ft(finetune_epochs_between), finetune_after=ft(finetune_epochs_after), seed=seed,
    )  # fmt: skip
    unstructured = UnstructuredConfig(
        sparsity=sparsity, scope=scope, keep_layers=keep, finetune=ft(finetune_epochs_after)
    )
    return structured, unstructured


def prune_step(
    model_dir: Path,
    dataset_path: Path,
    output_dir: Path,
    method: str = "structured",
    structured: StructuredConfig | None = None,
    unstructured: UnstructuredConfig | None = None,
    sensitivity_ratios: Sequence[float] = (),
    sensitivity_max_drop: float = 0.0,
    report_path: Path | None = None,
    lineage_ctx=None,
    progress: bool = True,
) -> dict[str, Any]:
    """Prune a Model artifact. Structured: optional sensitivity analysis first (and, with
    `sensitivity_max_drop` > 0, per-layer ratios from it), then the iterative schedule."""
    from edgecompress.data import load_dataset
    from edgecompress.evaluate import model_stats
    from edgecompress.io import write_text
    from edgecompress.step import Lineage, inherited_info, load_parent, log_child, save_torch_child

    ctx = lineage_ctx or Lineage()
    if method not in ("structured", "unstructured"):
        raise ConfigError(f"prune method {method!r} must be 'structured' or 'unstructured'")
    structured = structured or StructuredConfig()
    unstructured = unstructured or UnstructuredConfig()
    (structured if method == "structured" else unstructured).validate()
    for r in sensitivity_ratios:
        _check_ratio("sensitivity ratio", r)
    if not 0 <= sensitivity_max_drop < 1:
        raise ConfigError(f"sensitivity_max_drop must be in [0, 1), got {sensitivity_max_drop}")
    dataset = load_dataset(Path(dataset_path))
    parent, module = load_parent(Path(model_dir), dataset, "model to prune")
    keep = structured.keep_layers if method == "structured" else unstructured.keep_layers
    _modules_by_name(
        module, list(keep) + (list(structured.layer_ratios) if method == "structured" else []), "layer names"
    )
    if method == "structured":
        check_traceable(module, dataset.input_shape)
        _check_importance_fits(module, structured.importance)
    ctx.check()
    technique = f"prune-{method}"
    cfg_params = (structured if method == "structured" else unstructured).as_params()
    params = {"technique": technique, **{f"prune.{k}": v for k, v in cfg_params.items()}}
    with ctx.task("prune", params):
        sens = None
        if method == "structured" and sensitivity_ratios:
            sens = sensitivity(module, dataset, sensitivity_ratios, structured.importance, keep_layers=keep)
            if sensitivity_max_drop > 0:
                structured.layer_ratios = {
                    **suggest_layer_ratios(sens, sensitivity_max_drop),
                    **structured.layer_ratios,
                }
        if method == "structured":
            child, report = prune_structured(
                module, dataset.input_shape, dataset.num_classes, structured, dataset, progress
            )
        else:
            child = copy.deepcopy(module)
            report = prune_unstructured(child, unstructured, dataset, progress)
        report["sensitivity"] = sens
        x_val, y_val = dataset.split("val")
        report["val_accuracy"] = {
            "parent": accuracy(module, x_val, y_val),
            "child": accuracy(child, x_val, y_val),
        }
        info = {
            **inherited_info(parent.info),
            "technique": technique,
            "parent_model_id": parent.info.get("mlflow_model_id"),
            "prune": _jsonable(report),
        }
        package = save_torch_child(child, dataset, Path(output_dir), info)
        stats = {
            "parent": model_stats(parent.onnx_path).as_dict(),
            "child": model_stats(package.onnx_path).as_dict(),
        }
        if report_path is not None:
            write_text(Path(report_path), prune_report(report, stats))
        log_child(
            package,
            f"{dataset.name}-pruned",
            technique,
            dataset,
            params,
            {
                "val_accuracy": report["val_accuracy"]["child"],
                "parent_val_accuracy": report["val_accuracy"]["parent"],
                "macs": stats["child"]["macs"],
                "gzip_bytes": stats["child"]["gzip_bytes"],
                "sparsity": stats["child"]["sparsity"],
            },
            ctx,
        )
    return {**package.info, "stats": stats}


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=float))


def prune_report(report: dict[str, Any], stats: dict[str, dict[str, Any]]) -> str:
    from edgecompress.reports import html_page, html_table, png_img_tag

    p, c = stats["parent"], stats["child"]
    keys = ("params", "nonzero_params", "macs", "onnx_bytes", "gzip_bytes")
    summary = html_table(["", "val accuracy", *keys], [
        ["parent", report["val_accuracy"]["parent"], *(p[k] for k in keys)],
        ["pruned", report["val_accuracy"]["child"], *(c[k] for k in keys)],
        ["pruned / parent", report["val_accuracy"]["child"] - report["val_accuracy"]["parent"],
         *(c[k] / p[k] if p[k] else float("nan") for k in keys)],
    ])  # fmt: skip
    sections = [("Summary", summary)]
    if report["method"] == "unstructured":
        note = (
            "<p><b>No speed-up:</b> unstructured sparsity keeps every tensor's dense shape, so ONNX Runtime's dense "
            "kernels do the same work. What shrinks is the compressed artifact (gzip bytes), i.e. what is "
            "shipped over the air.</p>"
        )
        rows = [[n, v["weights"], v["zeros"], v["sparsity"]] for n, v in report["per_layer"].items()]
        sections.append(
            ("Sparsity per layer", note + html_table(["layer", "weights", "zeros", "sparsity"], rows))
        )
    else:
        sections.append(
            (
                "Channels per layer after pruning",
                html_table(["layer", "output channels"], list(report["channels"].items())),
            )
        )
        sched = [
            [
                s["step"],
                s["ratio"],
                s["params"],
                s["macs"],
                s.get("val_accuracy_pruned", ""),
                s.get("val_accuracy_finetuned", ""),
            ]
            for s in report["schedule"]
        ]
        sections.append(
            (
                "Schedule",
                html_table(
                    [
                        "step",
                        "ratio",
                        "torch params",
                        "MACs",
                        "val acc (pruned)",
                        "val acc (after fine-tune)",
                    ],
                    sched,
                ),
            )
        )
        if report.get("budget"):
            b = report["budget"]
            sections.append(
                (
                    "Budget",
                    html_table(
                        ["metric", "budget", "achieved", "met", "ratio chosen"],
                        [[b["metric"], b["budget"], b["achieved"], b["met"], report["ratio"]]],
                    ),
                )
            )
        sens = report.get("sensitivity")
        if sens:
            rows = [[n, *(accs[str(r)] for r in sens["ratios"])] for n, accs in sens["accuracy"].items()]
            table = html_table(["layer", *(f"ratio {r}" for r in sens["ratios"])], rows)
            base = f"<p>Unpruned validation accuracy {sens['baseline_accuracy']:.4f} on {sens['samples']} samples.</p>"
            sections.append(
                (
                    "Sensitivity (each layer alone, no fine-tuning)",
                    base + table + png_img_tag(sensitivity_png(sens), "sensitivity"),
                )
            )
    return html_page(f"Pruning ({report['method']})", sections)
