"""The pruning pipeline step: `PruneConfig` is every pruning setting (the structured and unstructured
configs nested, plus fine-tuning and the sensitivity analysis); `prune_step` prunes a Model artifact
(optional sensitivity analysis first) through the step runner (`edgecompress.step.run_step`) and, if
asked, writes the HTML report that `prune_report` renders.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgecompress.errors import ConfigError
from edgecompress.prune.common import (
    _check_ratio,
    _modules_by_name,
    parse_ratios,
)
from edgecompress.prune.recovery import RecoveryConfig, check_teacher, prune_and_recover
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
from edgecompress.step import Child, Lineage, Parent, StepInputs, StepResult, run_step, write_report
from edgecompress.train import TrainConfig, accuracy

METHODS = ("structured", "unstructured")
# TrainConfig fields that fine-tuning after pruning does not expose (their defaults apply)
_NOT_FINETUNE = ("epochs", "weight_decay", "label_smoothing", "max_train_samples")


@dataclass
class PruneConfig:
    """Every pruning setting, one definition each (the prune component, `edgecompress prune` and the
    pipeline's `prune_*` parameters come from here). The structured and unstructured settings are
    their own configs, nested and flattened (`ratio`, `sparsity`, …); `keep_layers` is the structured
    config's and applies to both methods; fine-tuning (`lr`, `batch_size`, `augment`, `seed`) is a
    `TrainConfig` whose epochs are `finetune_epochs_between` / `finetune_epochs_after` (on `device`:
    cpu, cuda); structured pruning's recovery in those epochs (fine-tuning, KD from the unpruned parent,
    or `auto`: both, the better on validation) is `recovery` (`prune.recovery`). Build one from flat
    values with `edgecompress.params.build(PruneConfig, {...})`."""

    method: str = field(
        default="structured",
        metadata={"help": "structured (channels) or unstructured (weights)", "choices": METHODS},
    )
    structured: StructuredConfig = field(default_factory=StructuredConfig, metadata={"flatten": True})
    unstructured: UnstructuredConfig = field(
        default_factory=UnstructuredConfig, metadata={"flatten": True, "exclude": ("keep_layers",)}
    )
    finetune_epochs_between: int = field(default=0, metadata={"help": "fine-tuning epochs between steps"})
    finetune_epochs_after: int = field(default=2, metadata={"help": "fine-tuning epochs after the last step"})
    finetune: TrainConfig = field(
        default_factory=lambda: TrainConfig(epochs=1, batch_size=128, lr=1e-3),
        metadata={"flatten": True, "exclude": _NOT_FINETUNE},
    )
    recovery: RecoveryConfig = field(default_factory=RecoveryConfig, metadata={"flatten": True})
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

    def validate(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"prune method {self.method!r} must be 'structured' or 'unstructured'")
        self.method_config().validate()
        self.recovery.validate()
        if self.method == "unstructured" and self.recovery.recovery == "kd":
            raise ConfigError(
                "recovery 'kd' is for structured pruning; for an unstructured (sparse) child use the distill "
                "step, which keeps its zeros (keep_sparsity); recovery auto or finetune fine-tunes it"
            )
        for r in self.analysis_ratios():
            _check_ratio("sensitivity ratio", r)
        if not 0 <= self.sensitivity_max_drop < 1:
            raise ConfigError(f"sensitivity_max_drop must be in [0, 1), got {self.sensitivity_max_drop}")

    def finetune_config(self, epochs: int) -> TrainConfig | None:
        if epochs < 0:
            raise ConfigError(f"fine-tuning epochs must be ≥ 0, got {epochs}")
        return dataclasses.replace(self.finetune, epochs=epochs) if epochs else None

    def method_config(self) -> StructuredConfig | UnstructuredConfig:
        """The chosen method's config, its fine-tuning (and the structured seed) filled in."""
        after = self.finetune_config(self.finetune_epochs_after)
        if self.method == "unstructured":
            return dataclasses.replace(
                self.unstructured, keep_layers=self.structured.keep_layers, finetune=after
            )
        between = self.finetune_config(self.finetune_epochs_between)
        return dataclasses.replace(
            self.structured, finetune_between=between, finetune_after=after, seed=self.finetune.seed
        )

    def analysis_ratios(self) -> tuple[float, ...]:
        """The sensitivity analysis's ratios where it runs (structured, asked for or needed), else ()."""
        analysis = self.method == "structured" and (self.sensitivity or self.sensitivity_max_drop > 0)
        return parse_ratios(self.sensitivity_ratios) if analysis else ()


def prune_step(
    model_dir: Path,
    dataset_path: Path,
    output_dir: Path,
    config: PruneConfig | None = None,
    report_path: Path | None = None,
    lineage_ctx: Lineage | None = None,
    progress: bool = True,
) -> StepResult:
    """Prune a Model artifact. Structured: the sensitivity analysis first where the config asks for it
    (or `sensitivity_max_drop` > 0 sets per-layer ratios from it), then the iterative schedule.
    `StepResult.extra["stats"]`: the parent's and the child's ONNX statistics."""
    from edgecompress.evaluate import model_stats

    config = config or PruneConfig()
    method = config.method

    def prepare(inputs: StepInputs) -> None:
        module, method_cfg = inputs.modules["model"], config.method_config()
        names = list(method_cfg.keep_layers)
        if method == "structured":
            names += list(method_cfg.layer_ratios)
        _modules_by_name(module, names, "layer names")
        if method == "structured":
            check_traceable(module, inputs.dataset.input_shape)
            _check_importance_fits(module, method_cfg.importance)
            if config.recovery.recovery == "kd":
                check_teacher(module, inputs.dataset)

    def make(inputs: StepInputs) -> Child:
        module, dataset, method_cfg = inputs.modules["model"], inputs.dataset, config.method_config()
        sens, ratios = None, config.analysis_ratios()
        if ratios:
            sens = sensitivity(
                module,
                dataset,
                ratios,
                method_cfg.importance,
                keep_layers=method_cfg.keep_layers,
                progress=progress,
            )
            if config.sensitivity_max_drop > 0:
                method_cfg.layer_ratios = {
                    **suggest_layer_ratios(sens, config.sensitivity_max_drop),
                    **method_cfg.layer_ratios,
                }
        if method == "structured":
            from edgecompress.prune.latency import prune_for_latency

            prune = prune_for_latency if method_cfg.latency_target else prune_structured
            child, report = prune_and_recover(
                module,
                dataset.input_shape,
                dataset.num_classes,
                method_cfg,
                config.recovery,
                dataset,
                progress,
                prune,
            )
        else:
            child = copy.deepcopy(module)
            report = prune_unstructured(child, method_cfg, dataset, progress)
            report["recovery"] = {
                "asked": config.recovery.recovery,
                "chosen": "finetune" if config.finetune_epochs_after else "none (no recovery epochs)",
                "budget_epochs": config.finetune_epochs_after,
                "note": "unstructured pruning recovers by fine-tuning only (KD recovery is structured)",
            }
        report["sensitivity"] = sens
        x_val, y_val = dataset.split("val")
        report["val_accuracy"] = {
            "parent": accuracy(module, x_val, y_val),
            "child": accuracy(child, x_val, y_val),
        }

        def finish(package, made: Child) -> None:
            stats = {
                "parent": model_stats(inputs.packages["model"].onnx_path).as_dict(),
                "child": model_stats(package.onnx_path).as_dict(),
            }
            if report_path is not None:
                write_report(report_path, prune_report(report, stats))
            made.metrics.update({k: stats["child"][k] for k in ("macs", "gzip_bytes", "sparsity")})
            made.extra["stats"] = stats

        metrics = {
            "val_accuracy": report["val_accuracy"]["child"],
            "parent_val_accuracy": report["val_accuracy"]["parent"],
        }
        rec = report.get("recovery") or {}
        metrics.update({f"recovery_val_accuracy_{m}": v for m, v in rec.get("val_accuracy", {}).items()})
        # the decision, on the LoggedModel (not `prune.*`: those are the config's flat parameters)
        params = {f"recovery.{k}": rec[k] for k in ("chosen", "budget_epochs", "rule") if k in rec}
        return Child(
            child,
            {"prune": _jsonable(report)},
            metrics,
            name=f"{dataset.name}-pruned",
            finish=finish,
            params=params,
        )

    return run_step(
        "prune",
        config,
        dataset_path,
        output_dir,
        make,
        parents={"model": Parent(model_dir, role="model to prune")},
        lineage_ctx=lineage_ctx,
        prepare=prepare,
        technique=f"prune-{method}",
    )


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
                s.get("val_accuracy_finetuned", s.get("val_accuracy_recovered", "")),
                s.get("recovery", "finetune"),
                s.get("epochs", ""),
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
                        "val acc (after recovery)",
                        "recovery",
                        "epochs",
                    ],
                    sched,
                ),
            )
        )
        rec = report.get("recovery") or {}
        if rec.get("val_accuracy"):
            sections.append(("Recovery (chosen on validation)", _recovery_html(rec)))
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


def _recovery_html(rec: dict[str, Any]) -> str:
    from edgecompress.reports import html_table

    rows = [
        [mode, acc, rec["epochs_run"][mode], "yes" if mode == rec["chosen"] else ""]
        for mode, acc in rec["val_accuracy"].items()
    ]
    return html_table(["recovery", "val accuracy", "epochs", "kept"], rows) + (
        f"<p>Asked: {rec['asked']}. Rule: {rec['rule']}. Budget: {rec['budget_epochs']} epochs "
        f"({rec['epochs_per_step']} per step); KD T={rec['kd']['temperature']}, α={rec['kd']['alpha']}; "
        f"teacher (the unpruned parent) val accuracy {rec['teacher_val_accuracy']:.4f}.</p>"
    )
