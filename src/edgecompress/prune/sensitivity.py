"""Pruning sensitivity: validation accuracy when each layer alone loses a fraction of its channels (no
fine-tuning), the per-layer ratios that analysis suggests for a tolerated drop, and its plot. The model
passed in is never changed (every trial prunes a copy).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from typing import Any

from torch import nn

from edgecompress.data import Dataset, selection_size
from edgecompress.progress import progress_bar
from edgecompress.prune.common import _check_ratio, _modules_by_name
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


def sensitivity(
    model: nn.Module,
    dataset: Dataset,
    ratios: Sequence[float] = (0.25, 0.5, 0.75),
    importance: str = "l2",
    layers: Sequence[str] | None = None,
    samples: int = 1000,
    keep_layers: Sequence[str] = (),
    progress: bool = True,
) -> dict[str, Any]:
    """Validation accuracy when one layer alone is pruned by each ratio (no fine-tuning).

    Cost: one model copy, one Torch-Pruning step and one pass over `samples` validation images per
    layer and ratio. Progress (a bar on a terminal, log lines elsewhere) gives the estimated time left."""
    for r in ratios:
        _check_ratio("sensitivity ratio", r)
    check_importance(importance)
    input_shape, num_classes = dataset.input_shape, dataset.num_classes
    check_traceable(model, input_shape)
    _check_importance_fits(model, importance)
    names = list(layers) if layers else prunable_layers(model, num_classes, keep_layers)
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
