"""Latency-aware structured pruning (after NetAdapt and HALP): channels go where the device says they cost.

1. The latency table, measured on the device class: for each prunable unit (a layer and the layers
   whose output channels are pruned with it, `coupled_units`: a MobileNet's expand and depthwise convs,
   convs summed by a residual link) and each kept fraction (`latency_points`, plus 1.0), the **whole
   model's** p50 with only that unit's output channels pruned (Torch-Pruning's dependency graph, as the
   final prune does). The whole model and not the
   layer alone, because a layer's width also sets the next layer's input width, and because timing a
   layer in a session of its own measures its own per-call overhead instead of its share of the model
   (what `edgecompress profile` shows: the parts of a small model are a few µs each). The unpruned
   model is measured again before each layer's points, and a layer's entries are read against that
   nearest baseline, so slow drift of a shared machine does not land on one layer.
   Cached per (device class, model fingerprint: architecture and shapes, not weights, since float
   latency does not depend on them) as JSON under the cache folder, and logged to the MLflow run.
2. The allocation, greedy: from every layer at 1.0, repeatedly take the move (a layer from its current
   kept fraction to a smaller one in the table) with the most measured latency saved per unit of
   importance lost, until the predicted latency meets the target. Importance lost: the summed scores
   of the channels the move removes (the least important first), by the config's criterion (Taylor
   needs gradients, so L2 here) as Torch-Pruning scores a group: normalised to mean 1 within the
   group, so a unit is one average channel of its layer and layers compare. Predicted latency: the
   baseline minus each layer's measured saving, i.e. additive across layers (NetAdapt's assumption);
   the pruned model is then measured, and predicted vs measured is in the report.
3. The closed loop (NetAdapt measures each proposal): the allocation is pruned without fine-tuning and
   measured (against a `latency_ratio` target, as a ratio to the parent in interleaved rounds); while it misses the target by more than `latency_tolerance`, it is allocated again for
   the target scaled by target / measured (at most `latency_refinements` times), and the attempt
   nearest the target from below is kept. On the Fashion-MNIST CNN the additive prediction alone
   left the child 47 % over its target (benchmarks/profile/pruning/2026-12-06-fashion-mnist-cnn-matched).
4. `prune_for_latency`: the allocated per-layer ratios go through the ordinary `prune_structured` path
   (layer_ratios, the other layers kept), with its schedule and fine-tuning.

`latency_method="netadapt"` replaces 1-3 with NetAdapt's own loop (`netadapt_plan`): every proposal
is measured on the current pruned model, at widths aligned to the kernels' block width, so neighbouring
layers' interaction and alignment are measured instead of predicted; each measurement is a ratio to the
parent in paired rounds, so a phase of the machine cannot favour one proposal; it costs tens of
measurements instead of one table.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgecompress.errors import ConfigError, ModelError

log = logging.getLogger(__name__)

CACHE_ENV = "EDGECOMPRESS_CACHE_DIR"
# v2: one row per unit of coupled layers (`coupled_units`); v1 tables had one per layer
TABLE_SCHEMA = "edgecompress.latency-table/v2"
# paired rounds per NetAdapt measurement (each one process running parent and proposal in alternating
# blocks; two so that neither always leads): a proposal's ratio to its parent, not its own p50
NETADAPT_ROUNDS = 2


def default_cache_dir() -> Path:
    root = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "edgecompress")
    return Path(root) / "latency-tables"


def model_fingerprint(model: nn.Module, input_shape: Sequence[int]) -> str:
    """What float latency depends on: the architecture (module tree), every tensor's shape, the input."""
    h = hashlib.sha256()
    h.update(repr(model).encode())
    h.update(repr(tuple(input_shape)).encode())
    for name, t in model.state_dict().items():
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
    return h.hexdigest()


def _single_unit(model, input_shape, num_classes, config, members: Sequence[str], keep: float) -> nn.Module:
    """A copy of `model` with only the coupled layers `members` pruned to `keep` of their output channels
    (one layer of a coupled group cannot be pruned alone: its partners, kept, would keep it whole)."""
    from edgecompress.prune.structured import _pruner, _pruner_step

    trial = copy.deepcopy(model)
    cfg = replace(
        config,
        layer_ratios=dict.fromkeys(members, 1.0 - keep),
        budget_metric="",
        target_latency_ms=0.0,
        latency_ratio=0.0,
    )
    others = [
        n
        for n, m in trial.named_modules()
        if isinstance(m, nn.Conv2d | nn.Conv1d | nn.Linear) and n not in members
    ]
    cfg = replace(cfg, keep_layers=tuple(config.keep_layers) + tuple(others))
    pruner = _pruner(trial, input_shape, num_classes, cfg, 1.0 - keep, 1)
    _pruner_step(
        pruner, trial, None, replace(cfg, importance="l2" if cfg.importance == "taylor" else cfg.importance)
    )
    return trial.eval()


def build_latency_table(
    model: nn.Module, input_shape: Sequence[int], num_classes: int, config: Any, meter: Any = None
) -> dict[str, Any]:
    """Measure the table (see the module's doc). `meter`: a `Measurement` (default: the class's
    emulation with the budget search's short measurements)."""
    from edgecompress.prune.structured import (
        BUDGET_BENCH_MIN_DURATION_S,
        BUDGET_BENCH_MIN_RUNS,
        channel_counts,
    )

    if meter is None:
        from edgecompress.edge import Measurement

        meter = Measurement(config.device_class, None, BUDGET_BENCH_MIN_RUNS, BUDGET_BENCH_MIN_DURATION_S)
    shape = tuple(input_shape)
    points = sorted(
        {float(k) for k in config.latency_points if k >= 1.0 - config.max_ratio - 1e-9}, reverse=True
    )
    channels = channel_counts(model)
    layers: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    bases = []
    for name, members in pruned_units(model, input_shape, num_classes, config.keep_layers).items():
        base = float(meter.module_latency(model, shape)["p50_ms"])
        bases.append(base)
        entries = [{"keep": 1.0, "channels": channels[name], "p50_ms": base}]
        for keep in points:
            try:
                trial = _single_unit(model, input_shape, num_classes, config, members, keep)
            except (ModelError, ConfigError) as exc:
                skipped[name] = str(exc)[:300]
                break
            kept = channel_counts(trial)[name]
            if kept >= channels[name]:
                skipped[name] = "pruning it removes no channel (a group kept whole, or too few channels)"
                break
            entries.append(
                {
                    "keep": keep,
                    "channels": kept,
                    "p50_ms": float(meter.module_latency(trial, shape)["p50_ms"]),
                }
            )
        if name not in skipped:
            layers[name] = {"channels": channels[name], "points": entries, "members": members}
    if not layers:
        raise ModelError(f"no layer of {type(model).__name__} can be pruned alone: {skipped}")
    return {
        "schema": TABLE_SCHEMA,
        "device_class": meter.device_class,
        "emulated": True,
        "method": "whole model with one unit's output channels pruned (a layer and those coupled to it), "
        "interleaved baselines",
        "base_p50_ms": float(sorted(bases)[len(bases) // 2]),
        "points": points,
        "layers": layers,
        "skipped": skipped,
    }


def latency_table(model, input_shape, num_classes, config, meter=None) -> tuple[dict[str, Any], Path, bool]:
    """The cached table for (device class, model fingerprint), measured on a miss. Returns the table,
    its file, and whether it came from the cache."""
    from edgecompress import lineage
    from edgecompress.io import write_json

    folder = Path(config.latency_cache) if config.latency_cache else default_cache_dir()
    fingerprint = model_fingerprint(model, input_shape)
    path = folder / f"{config.device_class}-{fingerprint[:24]}.json"
    wanted = {
        "fingerprint": fingerprint,
        "device_class": config.device_class,
        "points": sorted(
            {float(k) for k in config.latency_points if k >= 1.0 - config.max_ratio - 1e-9}, reverse=True
        ),
        "keep_layers": list(config.keep_layers),
    }
    hit = False
    table = None
    if path.exists():
        try:
            cached = json.loads(path.read_text())
            if cached.get("schema") == TABLE_SCHEMA and all(cached.get(k) == v for k, v in wanted.items()):
                table, hit = cached, True
        except (OSError, json.JSONDecodeError):
            table = None
    if table is None:
        table = {**build_latency_table(model, input_shape, num_classes, config, meter), **wanted}
        write_json(path, table)
    log.info("latency table %s (%s): %s", path, "cache hit" if hit else "measured", sorted(table["layers"]))
    lineage.log_report(path)  # in the task's MLflow run, next to the pruning report
    return table, path, hit


def layer_importance(
    model: nn.Module, input_shape: Sequence[int], layers: Sequence[str], importance: str
) -> dict[str, list[float]]:
    """Per output channel of each layer: its group's importance (Torch-Pruning, the config's criterion;
    L2 for Taylor, which needs gradients)."""
    from edgecompress.prune.importance import make_importance
    from edgecompress.prune.structured import output_width

    model, graph = _dependency_graph(model, input_shape)
    criterion = make_importance("l2" if importance == "taylor" else importance)
    modules = dict(model.named_modules())
    out = {}
    for name in layers:
        scores = criterion(_out_channel_group(graph, modules[name]))
        out[name] = [
            float(s) for s in (scores if scores is not None else torch.ones(output_width(modules[name])))
        ]
    return out


def coupled_units(
    model: nn.Module, input_shape: Sequence[int], layers: Sequence[str]
) -> dict[str, list[str]]:
    """The layers whose output channels are pruned together (an expand conv and its depthwise conv, the
    convs summed by residual links), one unit per group, named by its first layer: NetAdapt moves a unit
    as one, since cutting one member cuts them all and two members asked for different widths cannot both
    be given theirs."""
    model, graph = _dependency_graph(model, input_shape)
    modules = dict(model.named_modules())
    names = {m: n for n, m in modules.items()}
    units: dict[str, list[str]] = {}
    placed: set[str] = set()
    for name in layers:
        if name in placed:
            continue
        group = _out_channel_group(graph, modules[name])
        members = {
            names.get(dep.target.module) for dep, _ in group if graph.is_out_channel_pruning_fn(dep.handler)
        }
        units[name] = [n for n in layers if n in members or n == name]
        placed.update(units[name])
    return units


def pruned_units(
    model: nn.Module, input_shape: Sequence[int], num_classes: int, keep_layers: Sequence[str] = ()
) -> dict[str, list[str]]:
    """The units a latency-aware plan may prune: `coupled_units` of the prunable layers, less every unit
    with a member the user keeps."""
    from edgecompress.prune.structured import prunable_layers

    units = coupled_units(model, input_shape, prunable_layers(model, num_classes))
    return {n: members for n, members in units.items() if not set(members) & set(keep_layers)}


def _dependency_graph(model: nn.Module, input_shape: Sequence[int]):
    import torch_pruning as tp

    from edgecompress.prune.attention import unwrapped_parameters

    model = copy.deepcopy(model).eval()
    graph = tp.DependencyGraph().build_dependency(
        model,
        example_inputs=torch.zeros(1, *input_shape),
        unwrapped_parameters=list(unwrapped_parameters(model).items()),
    )
    return model, graph


def _out_channel_group(graph, module: nn.Module):
    """Torch-Pruning's group for every output channel of `module`: what pruning them touches."""
    import torch_pruning as tp

    from edgecompress.prune.structured import output_width

    fn = tp.prune_linear_out_channels if isinstance(module, nn.Linear) else tp.prune_conv_out_channels
    return graph.get_pruning_group(module, fn, idxs=list(range(output_width(module))))


def _lost(scores: list[float], kept_from: int, kept_to: int) -> float:
    """Summed importance of the channels between `kept_to` and `kept_from` (least important first)."""
    s = sorted(scores)
    return sum(s[len(s) - kept_from : len(s) - kept_to])


def allocate(table: dict[str, Any], importance: dict[str, list[float]], target_ms: float) -> dict[str, Any]:
    """Greedy allocation (see the module's doc): per layer the kept fraction, the moves in order, and
    the predicted latency. Raises ConfigError when even the smallest widths do not meet the target."""
    base = table["base_p50_ms"]
    state = {name: 0 for name in table["layers"]}  # index into the layer's points (0: unpruned)

    def saving(name: str, i: int) -> float:
        pts = table["layers"][name]["points"]
        return pts[0]["p50_ms"] - pts[i]["p50_ms"]  # against the layer's own (nearest) baseline

    def predicted() -> float:
        return base - sum(saving(n, i) for n, i in state.items())

    moves = []
    while predicted() > target_ms:
        best = None
        for name, i in state.items():
            pts = table["layers"][name]["points"]
            for j in range(i + 1, len(pts)):
                gain = saving(name, j) - saving(name, i)
                if gain <= 0:
                    continue
                lost = _lost(importance[name], pts[i]["channels"], pts[j]["channels"])
                score = gain / max(lost, 1e-12)
                if best is None or score > best[0]:
                    best = (score, name, j, gain, lost)
        if best is None:
            raise ConfigError(
                f"latency target {target_ms:.4f} ms not reachable on {table['device_class']}: with every "
                f"layer at its smallest measured width the predicted p50 is {predicted():.4f} ms "
                f"(unpruned {base:.4f} ms); allow more (max_ratio, latency_points) or a looser target"
            )
        score, name, j, gain, lost = best
        state[name] = j
        moves.append(
            {
                "layer": name,
                "keep": table["layers"][name]["points"][j]["keep"],
                "saved_ms": gain,
                "importance_lost": lost,
                "ms_per_importance": score,
                "predicted_ms": predicted(),
            }
        )
    keep = {name: table["layers"][name]["points"][i]["keep"] for name, i in state.items()}
    return {
        "target_ms": target_ms,
        "base_p50_ms": base,
        "predicted_ms": predicted(),
        "keep": keep,
        "layer_ratios": {n: round(1.0 - k, 6) for n, k in keep.items() if k < 1.0},
        "moves": moves,
    }


def latency_aware_config(
    model: nn.Module,
    input_shape,
    num_classes: int,
    config: Any,
    meter: Any = None,
    aim_ms: float | None = None,
):
    """The per-layer ratios for the config's latency target (or `aim_ms`, what the allocation is asked
    for when the closed loop corrects its prediction): (config to prune with, report section)."""

    table, path, hit = latency_table(model, input_shape, num_classes, config, meter)
    target = config.target_latency_ms or config.latency_ratio * table["base_p50_ms"]
    importance = layer_importance(model, input_shape, list(table["layers"]), config.importance)
    alloc = allocate(table, importance, aim_ms or target)
    alloc["target_ms"] = target
    if not alloc["layer_ratios"]:
        raise ConfigError(
            f"the model already meets the latency target {target:.4f} ms on {config.device_class} "
            f"(measured {table['base_p50_ms']:.4f} ms); nothing to prune"
        )
    # every member of a unit at its unit's ratio
    members = {n: layer.get("members", [n]) for n, layer in table["layers"].items()}
    ratios = {m: r for n, r in alloc["layer_ratios"].items() for m in members[n]}
    alloc["coupled"] = {n: ms for n, ms in members.items() if len(ms) > 1}
    run = layer_ratios_config(model, num_classes, config, ratios)
    section = {"table": table, "table_file": str(path), "cache_hit": hit, "allocation": alloc}
    return run, section


def _unit_label(name: str, members: Sequence[str]) -> str:
    """A unit as the reports name it: its first layer, and how many are pruned with it."""
    return f"{name} (+{len(members) - 1} coupled)" if len(members) > 1 else name


def latency_section_html(section: dict[str, Any]) -> str:
    """The pruning report's part: the measured table, the allocation, predicted vs measured."""
    from edgecompress.reports import html_table

    if section.get("method") == "netadapt":
        return _netadapt_html(section)
    table, alloc = section["table"], section["allocation"]
    rows = [
        [
            _unit_label(name, layer.get("members", [name])),
            p["keep"],
            p["channels"],
            p["p50_ms"],
            layer["points"][0]["p50_ms"] - p["p50_ms"],
        ]
        for name, layer in table["layers"].items()
        for p in layer["points"]
    ]
    moves = [
        [
            i + 1,
            m["layer"],
            m["keep"],
            m["saved_ms"],
            m["importance_lost"],
            m["ms_per_importance"],
            m["predicted_ms"],
        ]
        for i, m in enumerate(alloc["moves"])
    ]
    where = "cache" if section["cache_hit"] else "measured now"
    ratio = alloc.get("measured_ratio")
    as_ratio = f" ({ratio:.3f} of the parent's p50 in interleaved rounds)" if ratio is not None else ""
    return (
        f"<p>Device class {table['device_class']} (emulated); table {where} ({section['table_file']}): "
        f"{table['method']}. Unpruned p50 {table['base_p50_ms']:.4f} ms; target {alloc['target_ms']:.4f} ms; "
        f"predicted {alloc['predicted_ms']:.4f} ms; measured after pruning {alloc.get('measured_ms', float('nan')):.4f} ms"
        f"{as_ratio}.</p>"
        + html_table(["layer", "kept fraction", "channels", "p50 ms", "saved ms"], rows)
        + "<p>Closed loop (each allocation pruned without fine-tuning and measured; the aim corrected by "
        "target / measured while it misses by more than the tolerance)</p>"
        + html_table(
            ["attempt", "aimed ms", "predicted ms", "measured ms", "measured ratio to the parent"],
            [
                [i + 1, a["aim_ms"], a["predicted_ms"], a["measured_ms"], a.get("measured_ratio") or "—"]
                for i, a in enumerate(alloc.get("refinements", []))
            ],
        )
        + "<p>Allocation (greedy: most measured ms saved per unit of importance lost first)</p>"
        + html_table(
            [
                "#",
                "layer",
                "to kept fraction",
                "saved ms",
                "importance lost",
                "ms / importance",
                "predicted ms",
            ],
            moves,
        )
    )


def prune_for_latency(
    model: nn.Module,
    input_shape: Sequence[int],
    num_classes: int,
    config: Any,
    dataset: Any = None,
    progress: bool = True,
    recover: Any = None,
    plan: tuple[Any, dict[str, Any], list[dict[str, Any]]] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """`prune_structured` to the config's latency target: the table, the allocation, the prune with its
    ratios (schedule and fine-tuning, or `recover`, as configured), then the pruned model measured on
    the class. `plan` (from `latency_plan`) reuses an allocation already measured, so that several
    recoveries of one model (`recovery=auto`) prune exactly the same channels."""
    from edgecompress.prune.structured import measured_latency_ratio, model_cost, prune_structured

    config.validate()
    allocated, section, refinements = plan or latency_plan(model, input_shape, num_classes, config, dataset)
    section = copy.deepcopy(section)
    child, report = prune_structured(model, input_shape, num_classes, allocated, dataset, progress, recover)
    alloc = section["allocation"]
    alloc["measured_ms"] = model_cost(child, input_shape, "latency", config.device_class)
    # short measurements (the budget search's): a point, not a claim; the report shows both. A ratio
    # target is judged as a ratio to the parent, measured now in interleaved rounds
    if config.target_latency_ms:
        alloc["met"] = alloc["measured_ms"] <= alloc["target_ms"] * (1 + config.latency_tolerance)
    else:
        alloc["measured_ratio"] = measured_latency_ratio(model, child, input_shape, config.device_class)
        alloc["met"] = alloc["measured_ratio"] <= config.latency_ratio * (1 + config.latency_tolerance)
    alloc["refinements"] = refinements
    report["config"] = {**config.as_params(), "allocated_layer_ratios": dict(allocated.layer_ratios)}
    report["latency_aware"] = section
    return child, report


def latency_plan(
    model: nn.Module,
    input_shape: Sequence[int],
    num_classes: int,
    config: Any,
    dataset: Any = None,
    finetune: Any = None,
):
    """The closed loop: allocate, prune a copy without fine-tuning, measure it; while it misses the
    target by more than `latency_tolerance` (the table's prediction is additive across layers, and a
    layer's width also changes its neighbours' kernels), allocate again for the aim scaled by
    target / measured. A `latency_ratio` target is measured as one: the untuned child against the parent
    in interleaved rounds (`measured_latency_ratio`), since the table's unpruned p50 may have been
    measured long before (a cached table) on a machine that has drifted since.
    Returns the allocation whose measured p50 is nearest the target from below (else the fastest), its
    report section and every attempt (aim, predicted, measured)."""
    from edgecompress.prune.structured import measured_latency_ratio, model_cost, prune_structured

    if config.latency_method == "netadapt":
        return netadapt_plan(model, input_shape, num_classes, config, dataset, finetune)
    parent = copy.deepcopy(model).eval()
    attempts, best, aim, cached = [], None, None, None
    for attempt in range(max(1, config.latency_refinements + 1)):
        try:
            allocated, section = latency_aware_config(parent, input_shape, num_classes, config, aim_ms=aim)
        except ConfigError:
            if attempt == 0:
                raise
            break  # the corrected aim is past what the table allows: keep the best so far
        # whether the table existed before this plan: later attempts always find the one attempt 0 measured
        cached = section["cache_hit"] if cached is None else cached
        section["cache_hit"] = cached
        target = section["allocation"]["target_ms"]
        untuned = replace(allocated, finetune_between=None, finetune_after=None, steps=1)
        trial, _ = prune_structured(parent, input_shape, num_classes, untuned, None, False)
        ratio = None
        if config.target_latency_ms:
            measured = model_cost(trial, input_shape, "latency", config.device_class)
        else:  # a ratio, measured against the parent now: the table's base may be an old (cached) one
            ratio = measured_latency_ratio(parent, trial, input_shape, config.device_class)
            measured = ratio * section["table"]["base_p50_ms"]
        attempts.append(
            {
                "aim_ms": aim or target,
                "predicted_ms": section["allocation"]["predicted_ms"],
                "measured_ms": measured,
                "measured_ratio": ratio,
                "layer_ratios": dict(allocated.layer_ratios),
            }
        )
        under = measured <= target * (1 + config.latency_tolerance)
        key = (under, -abs(measured - target) if under else -measured)
        if best is None or key > best[0]:
            section["allocation"]["kept_attempt"] = attempt
            best = (key, allocated, section)
        if abs(measured - target) <= config.latency_tolerance * target:
            break
        aim = (aim or target) * target / measured
    _, allocated, section = best
    return allocated, section, attempts


def width_grid(channels: int, config: Any) -> list[int]:
    """The widths NetAdapt may give a layer, widest first: multiples of `round_to` (else 8; a layer
    under 16 channels steps by a quarter of its width), no fewer than `max_ratio` allows."""
    step = config.round_to or 8
    if channels < 2 * step:
        step = max(1, channels // 4)
    least = max(1, channels - int(channels * config.max_ratio))
    return [w for w in range((channels - 1) // step * step, 0, -step) if w >= least]


def _width_ratios(widths: dict[str, int], channels: dict[str, int]) -> dict[str, float]:
    # Torch-Pruning keeps int(n·(1 − r)) channels: a hair under (n − w)/n keeps exactly w
    return {n: (channels[n] - w) / channels[n] - 1e-9 for n, w in widths.items() if w < channels[n]}


def _cut(parent, input_shape, num_classes, config, widths, channels, probe=None):
    """A copy of the parent with each layer in `widths` cut to that many output channels, the rest whole
    (no fine-tuning; one pruner step, the safety probe reused): (copy, probe)."""
    from edgecompress.prune.structured import _pruner, _pruner_step

    trial = copy.deepcopy(parent)
    cfg = replace(
        config,
        layer_ratios=_width_ratios(widths, channels),
        global_pruning=False,
        round_to=None,
        importance="l2" if config.importance == "taylor" else config.importance,
    )
    pruner = _pruner(trial, input_shape, num_classes, cfg, 0.0, 1, probe)
    _pruner_step(pruner, trial, None, cfg)
    return trial.eval(), pruner.probe


def layer_ratios_config(model: nn.Module, num_classes: int, config: Any, ratios: dict[str, float], **also):
    """What an allocation prunes with: `prune_structured`'s config with these per-layer ratios, every
    other layer kept whole, the latency target cleared (it is met) and `also` replaced."""
    from edgecompress.prune.structured import prunable_layers

    others = [n for n in prunable_layers(model, num_classes) if n not in ratios]
    return replace(
        config,
        layer_ratios=dict(ratios),
        keep_layers=tuple(config.keep_layers) + tuple(others),
        target_latency_ms=0.0,
        latency_ratio=0.0,
        global_pruning=False,
        ratio=max(ratios.values()),
        **also,
    )


def choose_proposal(proposals: list[dict[str, Any]], target: float, tolerance: float) -> dict[str, Any]:
    """NetAdapt's pick among one iteration's proposals: the best validation accuracy after the short
    fine-tune where the proposals were scored (`val_accuracy`; ties to the least importance lost per
    ms), else the least importance lost per ms saved; where some land within `tolerance` under the
    target, only those compete (and the search ends there: a child far faster than asked has paid
    accuracy for speed nobody asked for)."""
    window = [p for p in proposals if target * (1 - tolerance) <= p["measured_ms"] <= target]
    return min(window or proposals, key=lambda p: (-p.get("val_accuracy", 0.0), p["importance_per_ms"]))


def _short_finetune(config: Any, finetune: Any, dataset: Any) -> Any:
    """NetAdapt's short-term fine-tune of a proposal (None where the config asks for none): one pass
    over `netadapt_finetune_samples` training images with `finetune`'s settings (else the final
    fine-tune's; the defaults where there is none)."""
    from edgecompress.train import TrainConfig

    if not config.netadapt_finetune_samples:
        return None
    if dataset is None:
        raise ConfigError(
            "netadapt_finetune_samples needs a dataset: each proposal is fine-tuned on its training split "
            "and scored on its validation split"
        )
    base = finetune or config.finetune_after or TrainConfig()
    return replace(base, epochs=1, max_train_samples=config.netadapt_finetune_samples)


def _proposals(layers, grids, widths, current, wanted, cut_and_measure, importance, score):
    """One NetAdapt iteration: per layer, its widest narrower width whose whole model, measured on the
    class, saves `wanted` ms; scored by `score(model)` (validation accuracy after the short fine-tune)
    when there is one."""
    proposals = []
    for name in layers:
        for w in (w for w in grids[name] if w < widths[name]):
            ms, trial = cut_and_measure({**widths, name: w})
            if current - ms >= wanted:
                lost = _lost(importance[name], widths[name], w)
                proposal = {
                    "layer": name,
                    "channels": w,
                    "measured_ms": ms,
                    "importance_lost": lost,
                    "importance_per_ms": lost / (current - ms),
                }
                if score is not None:
                    proposal["val_accuracy"] = score(trial)
                proposals.append(proposal)
                break
    return proposals


def _each_member(units: dict[str, list[str]], unit_widths: dict[str, int]) -> dict[str, int]:
    """Per-unit widths as per-layer widths: every member of a unit at its unit's width."""
    return {m: w for n, w in unit_widths.items() for m in units[n]}


def netadapt_plan(
    model: nn.Module,
    input_shape: Sequence[int],
    num_classes: int,
    config: Any,
    dataset: Any = None,
    finetune: Any = None,
):
    """NetAdapt (Yang et al., 2018), measured directly: each iteration asks for what is left to the
    target over the iterations left; per layer, its widths are walked down until the whole *current*
    model, measured on the class, saves that much; `choose_proposal` picks among them (by validation
    accuracy after a short fine-tune with `netadapt_finetune_samples`, as the paper does). Every
    proposal is measured as a ratio to the parent in paired rounds (`measured_latency_ratio`: both in one
    process, alternating), and its ms are that ratio times the parent's p50 measured once at the start:
    a phase of the machine's speed moves both models of a pair, so it cannot make one proposal look
    faster than it is, nor end the search early (one-model measurements did, on a CI machine: a child
    measured at the target was 1.14x faster where 1.33x was asked). Layers pruned together
    (`coupled_units`: an expand conv and its depthwise conv, convs summed by a residual link) move as
    one unit. Returns (config to prune with, report section,
    iterations) as `latency_plan` does. `finetune`: the training settings of the short fine-tune where
    the config's own are cleared (a recovery that replaces them)."""
    from edgecompress.prune.structured import channel_counts, measured_latency_ratio, model_cost
    from edgecompress.train import fit

    short = _short_finetune(config, finetune, dataset)
    parent = copy.deepcopy(model).eval()
    channels = channel_counts(parent)
    units = pruned_units(parent, input_shape, num_classes, config.keep_layers)
    grids = {n: width_grid(channels[n], config) for n in units}
    layers = [n for n in units if grids[n]]
    if not layers:
        raise ModelError(f"no layer of {type(model).__name__} has a narrower width to prune to")
    importance = layer_importance(parent, input_shape, layers, config.importance)

    state = {"probe": None, "measurements": 0}
    base = model_cost(parent, input_shape, "latency", config.device_class)

    def cut_and_measure(cut_to: dict[str, int]) -> tuple[float, nn.Module]:
        """p50 of the parent cut to these widths (no fine-tuning; the safety probe reused), as its
        paired ratio to the parent times the parent's p50."""
        trial, state["probe"] = _cut(
            parent, input_shape, num_classes, config, _each_member(units, cut_to), channels, state["probe"]
        )
        state["measurements"] += 1
        ratio = measured_latency_ratio(parent, trial, input_shape, config.device_class, NETADAPT_ROUNDS)
        return ratio * base, trial

    def score(trial: nn.Module) -> float:
        history = fit(trial, dataset, short, description="netadapt proposal", progress=False)
        return history.epochs[-1]["val_accuracy"]

    target = config.target_latency_ms or config.latency_ratio * base
    widths = {n: channels[n] for n in layers}
    current, moves = base, []
    for it in range(config.netadapt_iterations):
        if current <= target:
            break
        wanted = (current - target) / (config.netadapt_iterations - it)
        proposals = _proposals(
            layers, grids, widths, current, wanted, cut_and_measure, importance, score if short else None
        )
        if not proposals:
            break  # no layer saves what this iteration asks: keep the last model that did
        pick = choose_proposal(proposals, target, config.latency_tolerance)
        moves.append(
            {
                "iteration": it + 1,
                "from_channels": widths[pick["layer"]],
                **pick,
                "start_ms": current,
                "target_ms": target,
                "aim_ms": current - wanted,
                "saved_ms": current - pick["measured_ms"],
                "proposals": proposals,
            }
        )
        log.info(
            "netadapt %d: %s %d -> %d channels, %.4f -> %.4f ms (target %.4f)",
            it + 1,
            pick["layer"],
            widths[pick["layer"]],
            pick["channels"],
            current,
            pick["measured_ms"],
            target,
        )
        widths[pick["layer"]] = pick["channels"]
        current = pick["measured_ms"]
    if not moves:
        raise ConfigError(
            f"latency target {target:.4f} ms not reachable on {config.device_class} by NetAdapt: no layer's "
            f"narrower width saves {(base - target) / config.netadapt_iterations:.4f} ms of the unpruned "
            f"{base:.4f} ms; allow more (max_ratio) or a looser target"
        )
    final = cut_and_measure(widths)[0]
    # exact widths: no rounding of the channel counts
    allocated = layer_ratios_config(
        parent, num_classes, config, _width_ratios(_each_member(units, widths), channels), round_to=None
    )
    alloc = {
        "target_ms": target,
        "base_p50_ms": base,
        "predicted_ms": final,  # NetAdapt predicts nothing: the allocation's own measurement
        "keep": {m: w / channels[m] for m, w in _each_member(units, widths).items()},
        "channels": _each_member(units, widths),
        "coupled": {n: units[n] for n in layers if len(units[n]) > 1},
        "layer_ratios": dict(allocated.layer_ratios),
        "moves": moves,
        "measurements": state["measurements"],
    }
    section = {
        "method": "netadapt",
        "device_class": config.device_class,
        "table": None,
        "table_file": "",
        "cache_hit": False,
        "allocation": alloc,
        "grids": grids,
    }
    return allocated, section, moves


def _netadapt_html(section: dict[str, Any]) -> str:
    from edgecompress.reports import html_table

    alloc = section["allocation"]
    cols = [
        "iteration",
        "layer",
        "channels",
        "start ms",
        "aimed ms",
        "measured ms",
        "importance lost",
        "importance / ms",
    ]
    scored = any("val_accuracy" in m for m in alloc["moves"])
    coupled = alloc.get("coupled", {})  # reports before units were moved as one have none
    rows = [
        [
            m["iteration"],
            _unit_label(m["layer"], coupled.get(m["layer"], [m["layer"]])),
            f"{m['from_channels']} → {m['channels']}",
            m["start_ms"],
            m["aim_ms"],
            m["measured_ms"],
            m["importance_lost"],
            m["importance_per_ms"],
            *([m["val_accuracy"]] if scored else []),
        ]
        for m in alloc["moves"]
    ]
    rule = (
        "the best validation accuracy after a short fine-tune of each proposal"
        if scored
        else "the least importance"
    )
    return (
        f"<p>NetAdapt on {section.get('device_class', 'the device class')} (emulated), measured directly: "
        f"{alloc['measurements']} whole-model measurements. Unpruned p50 {alloc['base_p50_ms']:.4f} ms; target "
        f"{alloc['target_ms']:.4f} ms; the allocation measured {alloc['predicted_ms']:.4f} ms before "
        f"fine-tuning and {alloc.get('measured_ms', float('nan')):.4f} ms after pruning. Each iteration "
        f"takes the layer whose narrower width saves the asked ms for {rule}.</p>"
        + html_table(cols + (["val accuracy"] if scored else []), rows)
        + html_table(["layer", "channels"], [[n, c] for n, c in alloc["channels"].items()])
    )
