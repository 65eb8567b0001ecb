"""Pruning sensitivity: validation accuracy when each layer alone loses a fraction of its channels (no
fine-tuning), the per-layer ratios that analysis suggests for a tolerated drop, and its plot. The model
passed in is never changed (every trial prunes a copy).

The analysis is three steps, so that it can fan out (the `sensitivity` pipeline: one KFP task per
unit under `dsl.ParallelFor`): `sensitivity_units` lists the work units (groups of layers),
`sensitivity_unit` measures one, `combine_sensitivity` joins the units' results. `sensitivity` runs all
three in one process (the `prune` step's analysis) and gives the same result.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from edgecompress.data import Dataset, selection_size
from edgecompress.errors import ConfigError
from edgecompress.progress import progress_bar
from edgecompress.prune.common import IMPORTANCES, _check_ratio, _modules_by_name, parse_names, parse_ratios
from edgecompress.prune.importance import check_importance
from edgecompress.prune.structured import (
    StructuredConfig,
    _check_importance_fits,
    _pruner,
    _pruner_step,
    check_traceable,
    prunable_layers,
)
from edgecompress.train import accuracy

log = logging.getLogger(__name__)


def sensitivity_trials(model: nn.Module, num_classes: int, ratios: Sequence[float], keep_layers=()) -> int:
    """How many prune-and-measure trials the analysis runs: prunable layers x ratios."""
    return len(prunable_layers(model, num_classes, keep_layers)) * len(ratios)


DEFAULT_RATIOS = (0.25, 0.5, 0.75)


def sensitivity_units(
    model: nn.Module,
    dataset: Dataset,
    layers: Sequence[str] | None = None,
    keep_layers: Sequence[str] = (),
    layers_per_unit: int = 1,
) -> list[list[str]]:
    """The analysis's work units: the layers it tries (prunable layers, or `layers`), in groups of
    `layers_per_unit`, in the model's order. Each unit is measured on its own (`sensitivity_unit`, a
    task of the fan-out) and `combine_sensitivity` joins them into what `sensitivity` returns."""
    if layers_per_unit < 1:
        raise ConfigError(f"layers per sensitivity unit must be ≥ 1, got {layers_per_unit}")
    check_traceable(model, dataset.input_shape)
    names = list(layers) if layers else prunable_layers(model, dataset.num_classes, keep_layers)
    _modules_by_name(model, names, "sensitivity layers")
    return [names[i : i + layers_per_unit] for i in range(0, len(names), layers_per_unit)]


def sensitivity_unit(
    model: nn.Module,
    dataset: Dataset,
    unit: Sequence[str],
    ratios: Sequence[float] = DEFAULT_RATIOS,
    importance: str = "l2",
    samples: int = 1000,
    progress: bool = False,
) -> dict[str, Any]:
    """One work unit: validation accuracy when each layer of `unit` alone is pruned by each ratio (no
    fine-tuning), with the baseline it is compared with. `combine_sensitivity` joins units."""
    for r in ratios:
        _check_ratio("sensitivity ratio", r)
    check_importance(importance)
    input_shape, num_classes = dataset.input_shape, dataset.num_classes
    check_traceable(model, input_shape)
    _check_importance_fits(model, importance)
    names = list(unit)
    _modules_by_name(model, names, "sensitivity layers")
    # validation's selection part only: the gate decides on the rest (edgecompress.data.decision_range)
    x, y = dataset.split("val", min(samples, selection_size(dataset.size("val"))))
    base = accuracy(model, x, y)
    table: dict[str, dict[str, float]] = {}
    total, done, started = len(names) * len(ratios), 0, time.monotonic()
    log.info(
        "sensitivity analysis: %d layers x %d ratios = %d trials (each prunes a copy and measures %d "
        "validation images)",
        len(names),
        len(ratios),
        total,
        len(x),
    )
    probe = None  # the safety probe's answer is the same for every trial: found once, then reused
    with progress_bar(enabled=progress) as bar:
        task = bar.add_task("sensitivity", total=total)
        for name in names:
            table[name] = {}
            for r in ratios:
                trial = copy.deepcopy(model)
                cfg = StructuredConfig(
                    ratio=r, importance=importance, layer_ratios={name: r}, max_ratio=max(ratios)
                )
                # every other layer at ratio 0: only `name` (and what must follow it) loses channels
                pruner = _pruner(trial, input_shape, num_classes, cfg, 0.0, 1, probe)
                if probe is None:
                    probe = pruner.probe
                    for message in pruner.skipped:
                        log.warning("%s", message)
                _pruner_step(pruner, trial, dataset, cfg)
                table[name][str(r)] = accuracy(trial, x, y)
                done += 1
                left = (time.monotonic() - started) / done * (total - done)
                bar.update(task, advance=1, description=f"sensitivity (~{_duration(left)} left)")
            log.info(
                "sensitivity %d/%d trials (%s), about %s left",
                done,
                total,
                name,
                _duration((time.monotonic() - started) / done * (total - done)),
            )
    return {
        "baseline_accuracy": base,
        "ratios": list(ratios),
        "samples": len(x),
        "importance": importance,
        "accuracy": table,
        "skipped": list(probe.unsafe.values()) if probe else [],
        "seconds": time.monotonic() - started,
    }


# What every unit of one analysis must agree on (same model, same data, same settings).
_SHARED = ("baseline_accuracy", "ratios", "samples", "importance")


def combine_sensitivity(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The units' results (in the order `sensitivity_units` listed them) joined into one analysis, as
    `sensitivity` returns it; `seconds` is the units' summed time (their work, not the wall time of
    a fan-out). Units that disagree on the baseline or settings came from different analyses: refused."""
    if not parts:
        raise ConfigError("combine sensitivity: no unit results")
    first = parts[0]
    table: dict[str, dict[str, float]] = {}
    skipped: list[str] = []
    for i, part in enumerate(parts):
        missing = [k for k in (*_SHARED, "accuracy") if k not in part]
        if missing:
            raise ConfigError(f"combine sensitivity: unit {i} has no {missing}")
        differ = [k for k in _SHARED if part[k] != first[k]]
        if differ:
            raise ConfigError(
                f"combine sensitivity: unit {i} differs from unit 0 in {differ} "
                f"({[part[k] for k in differ]} vs {[first[k] for k in differ]}): not one analysis"
            )
        twice = sorted(set(part["accuracy"]) & set(table))
        if twice:
            raise ConfigError(f"combine sensitivity: layers {twice} are in two units")
        table.update(part["accuracy"])
        skipped += [m for m in part.get("skipped", []) if m not in skipped]
    return {
        **{k: first[k] for k in _SHARED},
        "accuracy": table,
        "skipped": skipped,
        "seconds": sum(float(p.get("seconds", 0.0)) for p in parts),
    }


def sensitivity(
    model: nn.Module,
    dataset: Dataset,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    importance: str = "l2",
    layers: Sequence[str] | None = None,
    samples: int = 1000,
    keep_layers: Sequence[str] = (),
    progress: bool = True,
) -> dict[str, Any]:
    """Validation accuracy when one layer alone is pruned by each ratio (no fine-tuning), in one
    process: every layer as one work unit (the fan-out measures the units of `sensitivity_units` as
    separate tasks and `combine_sensitivity` gives the same result).

    Cost: one model copy, one Torch-Pruning step and one pass over `samples` validation images per
    layer and ratio. Progress (a bar on a terminal, log lines elsewhere) gives the estimated time left."""
    units = sensitivity_units(model, dataset, layers, keep_layers, layers_per_unit=10**9)
    names = units[0] if units else []
    return combine_sensitivity(
        [sensitivity_unit(model, dataset, names, ratios, importance, samples, progress)]
    )


@dataclass
class SensitivityConfig:
    """The fanned-out sensitivity analysis (the `sensitivity` pipeline's units, unit and combine tasks)."""

    ratios: tuple[float, ...] = field(
        default=DEFAULT_RATIOS, metadata={"help": "the ratios tried on each layer, comma-separated"}
    )
    importance: str = field(default="l2", metadata={"help": "channel importance", "choices": IMPORTANCES})
    samples: int = field(
        default=1000, metadata={"help": "validation images (of its selection part) each trial measures"}
    )
    keep_layers: tuple[str, ...] = field(default=(), metadata={"help": "comma-separated layers never tried"})
    layers_per_unit: int = field(
        default=1, metadata={"help": "layers per work unit (one task each in the fan-out)"}
    )
    max_drop: float = field(
        default=0.0,
        metadata={"help": "> 0: suggest per layer the largest tried ratio within this accuracy drop"},
    )

    def validate(self) -> None:
        for r in parse_ratios(self.ratios):
            _check_ratio("sensitivity ratio", r)
        if not parse_ratios(self.ratios):
            raise ConfigError("sensitivity ratios: give at least one ratio in (0, 1)")
        check_importance(self.importance)
        if self.samples < 1:
            raise ConfigError(f"sensitivity samples must be ≥ 1, got {self.samples}")
        if self.layers_per_unit < 1:
            raise ConfigError(f"layers per sensitivity unit must be ≥ 1, got {self.layers_per_unit}")
        if not 0 <= self.max_drop < 1:
            raise ConfigError(f"sensitivity max_drop must be in [0, 1), got {self.max_drop}")


def _load(model_dir: Path, dataset_path: Path):
    from edgecompress.data import load_dataset
    from edgecompress.step import load_parent

    dataset = load_dataset(Path(dataset_path))
    _, module = load_parent(Path(model_dir), dataset, "model to analyse")
    return module, dataset


def sensitivity_units_step(model_dir: Path, dataset_path: Path, config: SensitivityConfig) -> list[str]:
    """The work units of a model's analysis as JSON strings (`{"index": i, "layers": [...]}`), the
    items a fan-out iterates over."""
    config.validate()
    module, dataset = _load(model_dir, dataset_path)
    units = sensitivity_units(
        module, dataset, keep_layers=parse_names(config.keep_layers), layers_per_unit=config.layers_per_unit
    )
    return [json.dumps({"index": i, "layers": layers}) for i, layers in enumerate(units)]


def _decode(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except (TypeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{what}: not JSON ({exc}): {str(text)[:80]!r}") from exc


def sensitivity_unit_step(model_dir: Path, dataset_path: Path, unit: str, config: SensitivityConfig) -> str:
    """One unit (a JSON string from `sensitivity_units_step`) measured: its result as a JSON string."""
    config.validate()
    item = _decode(unit, "sensitivity unit")
    if not (
        isinstance(item, dict) and isinstance(item.get("index"), int) and isinstance(item.get("layers"), list)
    ):
        raise ConfigError(f'sensitivity unit {unit!r}: expected {{"index": N, "layers": [names]}}')
    module, dataset = _load(model_dir, dataset_path)
    result = sensitivity_unit(
        module, dataset, item["layers"], parse_ratios(config.ratios), config.importance, config.samples
    )
    return json.dumps({"index": item["index"], **result})


def sensitivity_combine_step(
    parts: Sequence[str], config: SensitivityConfig, results_path: Path, report_path: Path | None = None
) -> dict[str, Any]:
    """The units' JSON results (in any order: each names its index) joined into the analysis, with
    the suggested per-layer ratios when `max_drop` > 0; written as JSON and an HTML report."""
    from edgecompress.io import write_json
    from edgecompress.reports import html_page
    from edgecompress.step import write_report

    config.validate()
    decoded = [_decode(p, f"sensitivity unit result {i}") for i, p in enumerate(parts)]
    indices = sorted(d.get("index", -1) if isinstance(d, dict) else -1 for d in decoded)
    if indices != list(range(len(decoded))):
        raise ConfigError(
            f"combine sensitivity: unit indices {indices}, expected 0..{len(decoded) - 1} once each "
            "(a unit's result missing, doubled or not a unit result)"
        )
    result = combine_sensitivity(sorted(decoded, key=lambda d: d["index"]))
    result.pop("index", None)
    result["units"] = len(decoded)
    result["max_drop"] = config.max_drop
    result["suggested_layer_ratios"] = (
        suggest_layer_ratios(result, config.max_drop) if config.max_drop > 0 else {}
    )
    write_json(Path(results_path), result)
    if report_path is not None:
        title = f"Pruning sensitivity ({len(decoded)} units)"
        write_report(report_path, html_page(title, [sensitivity_section(result)]))
    return result


def sensitivity_section(result: dict[str, Any]) -> tuple[str, str]:
    """The report section of an analysis: the table per layer and ratio, and the plot."""
    from edgecompress.reports import html_table, png_img_tag

    rows = [[n, *(accs[str(r)] for r in result["ratios"])] for n, accs in result["accuracy"].items()]
    table = html_table(["layer", *(f"ratio {r}" for r in result["ratios"])], rows)
    base = f"<p>Unpruned validation accuracy {result['baseline_accuracy']:.4f} on {result['samples']} samples.</p>"
    if result.get("max_drop"):
        suggested = (
            json.dumps(result["suggested_layer_ratios"]) if result["suggested_layer_ratios"] else "none"
        )
        base += (
            f"<p>Suggested per-layer ratios (the largest tried ratio within a drop of {result['max_drop']}): "
            f"<code>{suggested}</code></p>"
        )
    return (
        "Sensitivity (each layer alone, no fine-tuning)",
        base + table + png_img_tag(sensitivity_png(result), "sensitivity"),
    )


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def suggest_layer_ratios(result: dict[str, Any], max_drop: float) -> dict[str, float]:
    """Per layer, the largest tested ratio whose accuracy drop (alone, no fine-tune) is ≤ max_drop."""
    out = {}
    for name, accs in result["accuracy"].items():
        ok = [float(r) for r, a in accs.items() if result["baseline_accuracy"] - a <= max_drop]
        if ok:
            out[name] = max(ok)
    return out


def sensitivity_png(result: dict[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgecompress.reports import figure_png

    fig, ax = plt.subplots(figsize=(6.5, 4))
    ratios = [0.0] + [float(r) for r in result["ratios"]]
    for name, accs in result["accuracy"].items():
        ax.plot(
            ratios,
            [result["baseline_accuracy"]] + [accs[str(r)] for r in result["ratios"]],
            marker="o",
            label=name,
        )
    ax.set_xlabel("fraction of the layer's channels removed (alone, no fine-tuning)")
    ax.set_ylabel(f"validation accuracy ({result['samples']} samples)")
    ax.set_title(f"pruning sensitivity per layer ({result['importance']} importance)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return figure_png(fig)
