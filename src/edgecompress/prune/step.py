"""The pruning pipeline step: `PruneConfig` is every pruning setting (and builds the structured and
unstructured configs from them); `prune_step` prunes a Model artifact (optional sensitivity analysis first), saves the
child with lineage and, if asked, writes the HTML report that `prune_report` renders.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgecompress.errors import ConfigError
from edgecompress.params import Codec
from edgecompress.prune.common import (
    BUDGET_METRICS,
    IMPORTANCES,
    SCOPES,
    _check_ratio,
    _modules_by_name,
    parse_attention_heads,
    parse_layer_ratios,
    parse_names,
    parse_ratios,
)
from edgecompress.prune.sensitivity import (
    DEFAULT_RATIOS,
    sensitivity,
    sensitivity_section,
    suggest_layer_ratios,
)
from edgecompress.prune.structured import (
    StructuredConfig,
    _check_importance_fits,
    check_traceable,
    prune_structured,
)
from edgecompress.prune.unstructured import UnstructuredConfig, prune_unstructured
from edgecompress.runtime.devices import DEFAULT_DEVICE_CLASS
from edgecompress.step import write_report
from edgecompress.train import TrainConfig, accuracy

METHODS = ("structured", "unstructured")


def _layer_ratios_flat(ratios: dict[str, float]) -> str:
    return ",".join(f"{name}={r:g}" for name, r in ratios.items())


LAYER_RATIOS = Codec(str, parse_layer_ratios, _layer_ratios_flat)
ATTENTION_HEADS = Codec(
    str, parse_attention_heads, lambda heads: ",".join(f"{n}={h}" for n, h in heads.items())
)


@dataclass
class PruneConfig:
    """Every pruning setting, one definition each (the prune component, `edgecompress prune` and the
    pipeline's `prune_*` parameters come from here)."""

    method: str = field(
        default="structured",
        metadata={"help": "structured (channels) or unstructured (weights)", "choices": METHODS},
    )
    ratio: float = field(
        default=0.5, metadata={"help": "structured: fraction of channels removed, in (0, 1)"}
    )
    importance: str = field(default="l2", metadata={"help": "channel importance", "choices": IMPORTANCES})
    global_pruning: bool = field(
        default=False, metadata={"help": "rank channels across layers (else per layer)"}
    )
    layer_ratios: dict[str, float] = field(
        default_factory=dict, metadata={"codec": LAYER_RATIOS, "help": "per-layer ratios: name=0.3,… or JSON"}
    )
    keep_layers: tuple[str, ...] = field(default=(), metadata={"help": "comma-separated layers never pruned"})
    budget_metric: str = field(
        default="",
        metadata={
            "help": "prune until this metric is within budget (replaces ratio)",
            "choices": ("", *BUDGET_METRICS),
        },
    )
    budget: float = field(default=0.0, metadata={"help": "MACs, parameters, or p50 ms on device_class"})
    device_class: str = field(
        default=DEFAULT_DEVICE_CLASS, metadata={"help": "device class of a latency budget"}
    )
    target_latency_ms: float = field(
        default=0.0,
        metadata={"help": "structured: latency-aware per-layer ratios until p50 on device_class ≤ this (ms)"},
    )
    latency_ratio: float = field(
        default=0.0,
        metadata={"help": "structured: latency-aware, to this fraction of the unpruned measured p50"},
    )
    steps: int = field(default=1, metadata={"help": "iterative schedule: prune in this many steps"})
    finetune_epochs_between: int = field(default=0, metadata={"help": "fine-tuning epochs between steps"})
    finetune_epochs_after: int = field(default=2, metadata={"help": "fine-tuning epochs after the last step"})
    sparsity: float = field(default=0.8, metadata={"help": "unstructured: fraction of weights zeroed"})
    scope: str = field(
        default="global", metadata={"help": "unstructured: one threshold or per layer", "choices": SCOPES}
    )
    lr: float = field(default=1e-3, metadata={"help": "fine-tuning learning rate"})
    batch_size: int = field(default=128, metadata={"help": "fine-tuning batch size"})
    augment: bool = field(default=False, metadata={"help": "flips and shifts while fine-tuning"})
    sensitivity: bool = field(
        default=False,
        metadata={
            "help": "structured: run the per-layer sensitivity analysis first, for the report (always run "
            "when sensitivity_max_drop > 0, which uses it). Cost: one pruned copy and one validation pass "
            "per prunable layer and sensitivity ratio (40 layers x 3 ratios = 120 trials), often several "
            "times the prune itself; progress shows the time left"
        },
    )
    sensitivity_ratios: tuple[float, ...] = field(
        default=DEFAULT_RATIOS,
        metadata={"help": "structured: the ratios the sensitivity analysis tries on each layer"},
    )
    sensitivity_max_drop: float = field(
        default=0.0,
        metadata={
            "help": "> 0: per-layer ratios = the largest tested ratio within this drop (runs the "
            "sensitivity analysis)"
        },
    )
    prune_heads: bool = field(
        default=True,
        metadata={"help": "structured: remove whole attention heads (else q/k/v keep their width)"},
    )
    attention_heads: dict[str, int] = field(
        default_factory=dict,
        metadata={
            "codec": ATTENTION_HEADS,
            "help": "structured: head counts of attention modules that keep theirs in no known attribute: "
            "name=4,… or JSON",
        },
    )
    seed: int = field(default=0, metadata={"help": "seed of fine-tuning"})

    def finetune(self, epochs: int) -> TrainConfig | None:
        if epochs < 0:
            raise ConfigError(f"fine-tuning epochs must be ≥ 0, got {epochs}")
        if not epochs:
            return None
        return TrainConfig(
            epochs=epochs, batch_size=self.batch_size, lr=self.lr, augment=self.augment, seed=self.seed
        )

    def structured(self) -> StructuredConfig:
        return StructuredConfig(
            ratio=self.ratio,
            importance=self.importance,
            global_pruning=self.global_pruning,
            layer_ratios=parse_layer_ratios(self.layer_ratios),
            keep_layers=parse_names(self.keep_layers),
            budget_metric=self.budget_metric,
            budget=self.budget,
            device_class=self.device_class,
            target_latency_ms=self.target_latency_ms,
            latency_ratio=self.latency_ratio,
            steps=self.steps,
            finetune_between=self.finetune(self.finetune_epochs_between),
            finetune_after=self.finetune(self.finetune_epochs_after),
            seed=self.seed,
            prune_heads=self.prune_heads,
            attention_heads=parse_attention_heads(self.attention_heads),
        )

    def unstructured(self) -> UnstructuredConfig:
        return UnstructuredConfig(
            sparsity=self.sparsity,
            scope=self.scope,
            keep_layers=parse_names(self.keep_layers),
            finetune=self.finetune(self.finetune_epochs_after),
        )

    def step_arguments(self) -> dict[str, Any]:
        """The keyword arguments of `prune_step` that this config sets."""
        analysis = self.method == "structured" and (self.sensitivity or self.sensitivity_max_drop > 0)
        return {
            "method": self.method,
            "structured": self.structured(),
            "unstructured": self.unstructured(),
            "sensitivity_ratios": parse_ratios(self.sensitivity_ratios) if analysis else (),
            "sensitivity_max_drop": self.sensitivity_max_drop,
        }


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
    """Prune a Model artifact. Structured: the sensitivity analysis first where `sensitivity_ratios`
    are given (`PruneConfig.step_arguments` gives them when asked, or when `sensitivity_max_drop` > 0
    sets per-layer ratios from it), then the iterative schedule."""
    from edgecompress.data import load_dataset
    from edgecompress.evaluate import model_stats
    from edgecompress.step import Lineage, inherited_info, load_parent, log_child, save_torch_child

    ctx = lineage_ctx or Lineage()
    if method not in METHODS:
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
            sens = sensitivity(
                module,
                dataset,
                sensitivity_ratios,
                structured.importance,
                keep_layers=keep,
                progress=progress,
            )
            if sensitivity_max_drop > 0:
                structured.layer_ratios = {
                    **suggest_layer_ratios(sens, sensitivity_max_drop),
                    **structured.layer_ratios,
                }
        if method == "structured":
            from edgecompress.prune.latency import prune_for_latency

            prune = prune_for_latency if structured.latency_target else prune_structured
            child, report = prune(
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
            write_report(report_path, prune_report(report, stats))
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
    from edgecompress.reports import html_page, html_table

    p, c = stats["parent"], stats["child"]
    keys = ("params", "nonzero_params", "macs", "onnx_bytes", "gzip_bytes")
    summary = html_table(
        ["", "val accuracy", *keys],
        [
            ["parent", report["val_accuracy"]["parent"], *(p[k] for k in keys)],
            ["pruned", report["val_accuracy"]["child"], *(c[k] for k in keys)],
            [
                "pruned / parent",
                report["val_accuracy"]["child"] - report["val_accuracy"]["parent"],
                *(c[k] / p[k] if p[k] else float("nan") for k in keys),
            ],
        ],
    )
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
                        "params (ONNX)",
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
        if report.get("latency_aware"):
            from edgecompress.prune.latency import latency_section_html

            sections.append(("Latency-aware allocation", latency_section_html(report["latency_aware"])))
        sens = report.get("sensitivity")
        if sens:
            sections.append(sensitivity_section(sens))
    return html_page(f"Pruning ({report['method']})", sections)
