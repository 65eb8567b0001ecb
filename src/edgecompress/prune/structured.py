"""Structured channel pruning on torch-pruning's dependency graph. `prune_structured` returns a pruned
copy (the input is left alone) and a report; the target is a ratio or a budget (MACs, parameters, or p50
latency on an emulated device class, found by `ratio_for_budget`), reached in `steps` with seeded
fine-tuning between and after. The pruner plumbing (`_pruner`, `_pruner_step`, `_check_importance_fits`)
is shared with the sensitivity analysis.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from edgecompress.data import Dataset
from edgecompress.errors import ConfigError, ModelError
from edgecompress.prune.attention import (
    AttentionLayout,
    find_attention,
    unsafe_groups,
    unwrapped_parameters,
)
from edgecompress.prune.common import (
    _PRUNABLE,
    ATTENTION_HEADS,
    BUDGET_METRICS,
    IMPORTANCES,
    LAYER_RATIOS,
    _check_ratio,
    _modules_by_name,
    output_layers,
)
from edgecompress.prune.importance import check_importance, make_importance
from edgecompress.prune.internal import InternalWidthPruner, find_sandwiches
from edgecompress.runtime.devices import DEFAULT_DEVICE_CLASS
from edgecompress.stats import MIN_LATENCY_ROUNDS
from edgecompress.train import TrainConfig, accuracy, fit, seed_everything
from edgecompress.zoo import check_model_fits

log = logging.getLogger(__name__)

SCHEDULES = ("linear", "geometric")
LATENCY_METHODS = ("table", "netadapt")
# recover(model, step) after each pruning step, in place; returns what to add to the step's row
Recover = Callable[[nn.Module, int], dict[str, Any]]


def schedule_ratios(ratio: float, steps: int, schedule: str = "linear") -> list[float]:
    """The cumulative pruning ratios after steps 0..K (Torch-Pruning's scheduler signature): linear
    removes r·k/K of each layer's channels by step k; geometric keeps (1 - r)^(k/K) of them, so every
    step removes the same fraction of the channels still there (smaller steps late, when fewer are left)."""
    if schedule == "geometric":
        return [1.0 - (1.0 - ratio) ** (k / steps) for k in range(steps + 1)]
    if schedule == "linear":
        return [ratio * k / steps for k in range(steps + 1)]
    raise ConfigError(f"schedule {schedule!r} must be one of {SCHEDULES}")


@dataclass
class StructuredConfig:
    """Structured pruning's settings. `PruneConfig` nests it (its flat fields are the CLI options and
    component parameters of `prune`); the fine-tuning `TrainConfig`s and `seed` are filled from
    `PruneConfig`'s fine-tuning settings."""

    ratio: float = field(
        default=0.5,
        metadata={"help": "structured: fraction of channels removed, in (0, 1)"},
    )
    importance: str = field(default="l2", metadata={"help": "channel importance", "choices": IMPORTANCES})
    global_pruning: bool = field(
        default=False, metadata={"help": "rank channels across layers (else per layer)"}
    )
    layer_ratios: dict[str, float] = field(
        default_factory=dict,
        metadata={"codec": LAYER_RATIOS, "help": "per-layer ratios: name=0.3,… or JSON"},
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
    max_ratio: float = field(default=0.9, metadata={"flat": False})  # the budget search's upper bound
    steps: int = field(default=1, metadata={"help": "iterative schedule: prune in this many steps"})
    schedule: str = field(
        default="linear",
        metadata={
            "help": "the steps' cumulative ratios: linear (r·k/K removed) or geometric (kept channels "
            "(1-r)^(k/K): each step removes the same fraction of what is left)",
            "choices": SCHEDULES,
        },
    )
    # fine-tuning after each step but the last, and after the last step (None: none)
    finetune_between: TrainConfig | None = field(default=None, metadata={"flat": False})
    finetune_after: TrainConfig | None = field(default=None, metadata={"flat": False})
    round_to: int | None = field(default=None, metadata={"flat": False})  # channel counts multiples of this
    seed: int = field(default=0, metadata={"flat": False})
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
    # latency-aware allocation (prune.latency): a p50 target on `device_class`, in ms or as a fraction of
    # the measured unpruned p50, met by per-layer ratios from a measured latency table (replaces `ratio`)
    # kept fractions the table measures per layer
    latency_points: tuple[float, ...] = field(default=(0.75, 0.5, 0.25), metadata={"flat": False})
    # folder of latency tables ("": $EDGECOMPRESS_CACHE_DIR or ~/.cache/edgecompress)
    latency_cache: str = field(default="", metadata={"flat": False})
    # closed loop: the allocated child is measured (no fine-tuning) and, while it misses the target by
    # more than latency_tolerance, re-allocated against the target scaled by the prediction's error
    latency_refinements: int = field(default=3, metadata={"flat": False})
    latency_tolerance: float = field(default=0.05, metadata={"flat": False})
    latency_method: str = field(
        default="table",
        metadata={
            "help": "latency-aware: table (one table measured from the unpruned model, greedy allocation, "
            "closed loop) or netadapt (each iteration measures every layer's proposal on the current "
            "pruned model: slower, but sees how neighbouring widths interact)",
            "choices": LATENCY_METHODS,
        },
    )
    # netadapt: the latency reduction is spread over this many iterations; widths are multiples of
    # round_to (else 8, the block width ONNX Runtime's NCHWc convolutions run fastest at)
    netadapt_iterations: int = field(default=8, metadata={"flat": False})
    netadapt_finetune_samples: int = field(
        default=0,
        metadata={
            "help": "netadapt: fine-tune each iteration's proposals on this many training images and pick "
            "the one with the best validation accuracy (NetAdapt's rule; needs a dataset); 0: pick the "
            "least importance lost per ms saved, with no training"
        },
    )

    @property
    def latency_target(self) -> bool:
        return bool(self.target_latency_ms or self.latency_ratio)

    def validate(self) -> None:
        check_importance(self.importance)
        if self.budget_metric:
            if self.budget_metric not in BUDGET_METRICS:
                raise ConfigError(f"budget_metric {self.budget_metric!r} not in {BUDGET_METRICS}")
            if not self.budget > 0:
                raise ConfigError(
                    f"budget must be > 0 for budget_metric {self.budget_metric!r}, got {self.budget}"
                )
            if self.budget_metric == "latency":
                from edgecompress.runtime.devices import emulated_device_class

                emulated_device_class(self.device_class)
        else:
            _check_ratio("ratio", self.ratio)
        _check_ratio("max_ratio", self.max_ratio)
        for name, r in self.layer_ratios.items():
            _check_ratio(f"layer_ratios[{name!r}]", r)
        if self.steps < 1:
            raise ConfigError(f"steps must be ≥ 1, got {self.steps}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule {self.schedule!r} must be one of {SCHEDULES}")
        for name, heads in self.attention_heads.items():
            if int(heads) < 1:
                raise ConfigError(f"attention_heads[{name!r}] must be ≥ 1, got {heads}")
        for cfg in (self.finetune_between, self.finetune_after):
            if cfg:
                cfg.validate()
        self._validate_latency_target()

    def _validate_latency_target(self) -> None:
        if not self.target_latency_ms >= 0 or not 0 <= self.latency_ratio < 1:
            raise ConfigError(
                f"target_latency_ms must be ≥ 0 and latency_ratio in [0, 1), got {self.target_latency_ms}, "
                f"{self.latency_ratio}"
            )
        if not self.latency_target:
            return
        if self.target_latency_ms and self.latency_ratio:
            raise ConfigError("give target_latency_ms or latency_ratio, not both")
        if self.budget_metric or self.layer_ratios or self.global_pruning:
            raise ConfigError(
                "a latency target (target_latency_ms / latency_ratio) sets the per-layer ratios itself: "
                "it cannot be combined with budget_metric, layer_ratios or global_pruning"
            )
        for keep in self.latency_points:
            _check_ratio("latency_points (kept fractions)", keep)
        if self.latency_method not in LATENCY_METHODS:
            raise ConfigError(f"latency_method {self.latency_method!r} must be one of {LATENCY_METHODS}")
        if self.netadapt_iterations < 1:
            raise ConfigError(f"netadapt_iterations must be ≥ 1, got {self.netadapt_iterations}")
        if self.netadapt_finetune_samples < 0:
            raise ConfigError(f"netadapt_finetune_samples must be ≥ 0, got {self.netadapt_finetune_samples}")
        from edgecompress.runtime.devices import emulated_device_class

        emulated_device_class(self.device_class)

    def as_params(self) -> dict[str, Any]:
        d = asdict(self)
        d["layer_ratios"] = dict(self.layer_ratios)
        d["attention_heads"] = dict(self.attention_heads)
        d["keep_layers"] = ",".join(self.keep_layers)
        d["finetune_between"] = self.finetune_between.epochs if self.finetune_between else 0
        d["finetune_after"] = self.finetune_after.epochs if self.finetune_after else 0
        return d


def check_traceable(model: nn.Module, input_shape: Sequence[int]) -> None:
    """Raise ModelError when torch-pruning cannot build a dependency graph reaching every Conv/Linear."""
    import torch_pruning as tp

    example = torch.zeros(1, *input_shape)
    try:
        graph = tp.DependencyGraph().build_dependency(
            model.eval(),
            example_inputs=example,
            unwrapped_parameters=list(unwrapped_parameters(model).items()),
        )
    except Exception as exc:
        raise _untraceable(model, exc) from exc
    inside_mha = {
        id(m) for mha in model.modules() if isinstance(mha, nn.MultiheadAttention) for m in mha.modules()
    }
    unreached = [
        n
        for n, m in model.named_modules()
        if isinstance(m, _PRUNABLE) and m not in graph.module2node and id(m) not in inside_mha
    ]
    if unreached:
        raise ModelError(
            f"torch-pruning cannot trace the model ({type(model).__name__}): layers {unreached} are not "
            "reached from its output through autograd (detach, numpy or in-place tricks in forward?); "
            "channel pruning would leave them inconsistent"
        )


class ChannelShuffleError(ModelError):
    """Torch-Pruning cannot trace a channel shuffle: `prune_structured` prunes internal widths instead."""


def _untraceable(model: nn.Module, exc: Exception) -> ModelError:
    """The error for a model Torch-Pruning cannot trace, naming the cause where it is known."""
    import traceback

    where = {frame.name for frame in traceback.extract_tb(exc.__traceback__)}
    said = f"{type(exc).__name__}: {str(exc)[:300]}"
    if "update_reshape_index_mapping" in where:
        # ShuffleNet's channel_shuffle: view (N, groups, C/groups, H, W), transpose, view back
        return ChannelShuffleError(
            f"torch-pruning cannot trace the model ({type(model).__name__}): a view/reshape in its forward "
            "regroups the channel axis (a channel shuffle, as ShuffleNet's: view to (N, groups, C/groups, H, "
            "W), transpose, view back), and Torch-Pruning 1.6.1 cannot map channel indices through it "
            f"({said}); removing channels would misalign the layers after it. Use --method unstructured "
            "(weights zeroed, shapes kept), or distil into a narrower model of the same family (e.g. "
            "--student torchvision.models:shufflenet_v2_x0_5)"
        )
    return ModelError(f"torch-pruning cannot trace the model ({type(model).__name__}): {said}")


def _check_importance_fits(model: nn.Module, importance: str) -> None:
    check_importance(importance).check_fits(model)


@dataclass
class Probe:
    """What the safety probe found for one model and config: the layers kept whole (name -> why) and
    the width attributes found to follow each attention module's head count (name -> attributes)."""

    unsafe: dict[str, str]
    widths: dict[str, list[str]]


class _Pruner:
    """Torch-Pruning's MetaPruner plus what it leaves to the caller: how many heads each step removes,
    and, after each step, the attention modules' head counts (and inner widths) set to what is left.

    Torch-Pruning's local head pruning removes ceil(cumulative ratio x *current* heads) per step, so
    iterative schedules (and the budget search's many small steps) compound and end with no head at
    all (4 heads: 3, 2, 1, 0 by ratio 0.2). Here each step's removal is set per attention module from
    its *initial* heads, as a single step would prune them, and never below one head."""

    def __init__(self, meta, layouts: list[AttentionLayout], probe: Probe) -> None:
        self.meta, self.layouts, self.probe = meta, layouts, probe
        self.skipped = list(probe.unsafe.values())
        self.initial_heads = {layout.name: layout.heads for layout in layouts}

    def _schedule_heads(self) -> None:
        ratio = self.meta.per_step_head_pruning_ratio[self.meta.current_step + 1]
        for layout in self.layouts:
            first, now = self.initial_heads[layout.name], self.meta.num_heads[layout.projections[0]]
            keep = max(1, first - math.ceil(ratio * first - 1e-9))
            remove = max(0, now - keep)
            # Torch-Pruning removes ceil(r x now) heads: r = (remove - 1/2) / now removes exactly `remove`
            step_ratio = (remove - 0.5) / now if remove else 0.0
            for projection in layout.projections:
                self.meta.head_pruning_ratio_dict[projection] = [step_ratio] * (self.meta.iterative_steps + 1)

    def step(self) -> None:
        if not self.meta.global_pruning:
            self._schedule_heads()
        self.meta.step()
        for layout in self.layouts:
            heads = self.meta.num_heads[layout.projections[0]]
            if heads < 1:  # global ranking can empty one module while keeping another's heads
                raise ModelError(
                    f"pruning removed every attention head of {layout.name!r} (global ranking at ratio "
                    f"{self.meta.per_step_head_pruning_ratio[self.meta.current_step]:.2f}); use local pruning "
                    "or a lower ratio"
                )
            layout.set_heads(heads)


def _pruner(
    model: nn.Module,
    input_shape: Sequence[int],
    num_classes: int,
    config: StructuredConfig,
    ratio: float,
    steps: int,
    probe: Probe | None = None,
) -> _Pruner:
    """The pruner of `model` at `ratio` in `steps`. The safety probe (`unsafe_groups`: one pruned copy
    and forward per channel group) runs unless `probe` (from a pruner of the same model and config,
    e.g. the previous sensitivity trial) gives its answer already."""
    import torch_pruning as tp

    keep = list(_modules_by_name(model, config.keep_layers, "keep_layers").values())
    _modules_by_name(model, list(config.attention_heads), "attention_heads")
    layer_ratios = {
        m: config.layer_ratios[n]
        for n, m in _modules_by_name(model, list(config.layer_ratios), "layer_ratios").items()
    }
    example = torch.zeros(1, *input_shape)
    try:
        layouts, mha = find_attention(model, config.attention_heads)
        if not config.prune_heads:
            keep += [p for layout in layouts for p in layout.projections] + mha
            layouts = []
        # nn.MultiheadAttention's width must stay a multiple of its heads: one slice per head
        slices = {m: m.num_heads for m in mha}
        unwrapped = unwrapped_parameters(model)
        ignored = keep + output_layers(model, num_classes)
        if probe is None:
            started = time.monotonic()
            unsafe = unsafe_groups(model, example, num_classes, ignored, layouts, slices, unwrapped)
            log.info(
                "safety probe (each non-convolutional channel group pruned on a copy and run): %.1f s, "
                "%d group(s) kept whole",
                time.monotonic() - started,
                len(unsafe),
            )
        else:
            modules = dict(model.named_modules())
            unsafe = {modules[name]: message for name, message in probe.unsafe.items()}
            for layout in layouts:
                layout.width_attributes = list(probe.widths.get(layout.name, layout.width_attributes))
        ignored += list(unsafe)
        meta = tp.pruner.MetaPruner(
            model,
            example,
            importance=make_importance(config.importance),
            global_pruning=config.global_pruning,
            pruning_ratio=ratio,
            pruning_ratio_dict=layer_ratios or None,
            max_pruning_ratio=max(config.max_ratio, ratio, *layer_ratios.values()),
            iterative_steps=steps,
            iterative_pruning_ratio_scheduler=lambda r, k: schedule_ratios(r, k, config.schedule),
            ignored_layers=ignored,
            round_to=config.round_to,
            num_heads={p: layout.heads for layout in layouts for p in layout.projections},
            prune_num_heads=True,
            prune_head_dims=False,
            head_pruning_ratio=ratio,
            in_channel_groups=dict(slices),
            out_channel_groups=dict(slices),
            unwrapped_parameters=list(unwrapped.items()),
        )
    except Exception as exc:
        raise _untraceable(model, exc) from exc
    names = {id(m): n for n, m in model.named_modules()}
    found = Probe(
        {names[id(m)]: message for m, message in unsafe.items()},
        {layout.name: list(layout.width_attributes) for layout in layouts},
    )
    return _Pruner(meta, layouts, found)


def _taylor_gradients(
    model: nn.Module, dataset: Dataset, seed: int, batches: int = 4, batch_size: int = 128
) -> None:
    """First-order Taylor importance needs loss gradients on real data."""
    x, y = dataset.split("train")
    idx = np.random.default_rng(seed).choice(len(x), size=min(len(x), batches * batch_size), replace=False)
    model.train()
    model.zero_grad()
    loss_fn = nn.CrossEntropyLoss()
    for i in range(0, len(idx), batch_size):
        b = np.sort(idx[i : i + batch_size])
        loss_fn(model(torch.from_numpy(x[b])), torch.from_numpy(y[b])).backward()
    model.eval()


def _pruner_step(
    pruner: _Pruner, model: nn.Module, dataset: Dataset | None, config: StructuredConfig
) -> None:
    if check_importance(config.importance).needs_gradients:
        if dataset is None:
            raise ConfigError(f"importance {config.importance!r} needs a dataset (it uses loss gradients)")
        _taylor_gradients(model, dataset, config.seed)
    try:
        pruner.step()
    except ModelError:  # already says what went wrong, and where
        raise
    except Exception as exc:
        raise ModelError(
            f"torch-pruning failed to prune {type(model).__name__}: {type(exc).__name__}: {str(exc)[:300]}"
        ) from exc
    model.zero_grad(set_to_none=True)


# A latency budget is searched with many short measurements (the budget search measures each ratio).
BUDGET_BENCH_MIN_RUNS, BUDGET_BENCH_MIN_DURATION_S = 100, 0.3


def model_cost(
    model: nn.Module, input_shape: Sequence[int], metric: str, device_class: str = DEFAULT_DEVICE_CLASS
) -> float:
    if metric in ("params", "macs"):  # counted as the evaluation counts them: on the ONNX export
        # (MACs: attention MatMuls too; parameters: after BatchNorm folding, what is deployed)
        from edgecompress.evaluate import module_macs, module_params

        count = module_params if metric == "params" else module_macs
        try:
            return float(count(model, tuple(input_shape)))
        except ModelError as exc:  # a pruned model whose forward no longer runs: named, not a traceback
            raise ModelError(
                f"the pruned {type(model).__name__} no longer runs on inputs of shape {tuple(input_shape)}: {exc}"
            ) from exc
    from edgecompress.edge import Measurement

    meter = Measurement(device_class, None, BUDGET_BENCH_MIN_RUNS, BUDGET_BENCH_MIN_DURATION_S)
    return float(meter.module_latency(model, tuple(input_shape))["p50_ms"])


# interleaved rounds a latency ratio is measured in (each round: reference and model, the order flipped):
# the project's minimum for any latency decision. With 4, two measurements of the same child on an
# AVX2-only EPYC VM, whose per-round p50 of one model moves between 0.14 and 0.20 ms, gave 0.61 and 0.79.
LATENCY_RATIO_ROUNDS = MIN_LATENCY_ROUNDS


def measured_latency_ratio(
    reference: nn.Module,
    model: nn.Module,
    input_shape: Sequence[int],
    device_class: str = DEFAULT_DEVICE_CLASS,
    rounds: int = LATENCY_RATIO_ROUNDS,
) -> float:
    """`model`'s p50 as a share of `reference`'s, measured now in interleaved rounds (median of the
    per-round ratios): what a ratio target asks about, free of the drift between a reference measured
    earlier and a model measured now."""
    return float(
        statistics.median(latency_ratios(reference, model, tuple(input_shape), device_class, rounds))
    )


def latency_ratios(
    reference: nn.Module, model: nn.Module, input_shape: tuple[int, ...], device_class: str, rounds: int
) -> list[float]:
    """`model`'s p50 / `reference`'s, one ratio per round; each round runs both in one process,
    alternating (`Measurement.modules_interleaved`), so both see the same moments of the device."""
    from edgecompress.edge import Measurement

    meter = Measurement(device_class, None, BUDGET_BENCH_MIN_RUNS, BUDGET_BENCH_MIN_DURATION_S)
    r = meter.modules_interleaved(reference, model, input_shape, rounds)
    return [1.0 / x for x in r["ratios"]]  # `ratios` are first / second: reference / model


def ratio_for_budget(
    model: nn.Module,
    input_shape: Sequence[int],
    num_classes: int,
    config: StructuredConfig,
    dataset: Dataset | None = None,
    increment: float = 0.05,
    probe: Probe | None = None,
) -> tuple[float, list[dict[str, float]]]:
    """Smallest ratio (in `increment` steps, up to `max_ratio`) whose pruned copy meets the budget."""
    trace = []
    base = model_cost(model, input_shape, config.budget_metric, config.device_class)
    trace.append({"ratio": 0.0, "cost": base})
    if base <= config.budget:
        raise ConfigError(
            f"the model already meets the {config.budget_metric} budget {config.budget:g} "
            f"({base:g}); nothing to prune"
        )
    steps = max(1, int(round(config.max_ratio / increment)))
    trial = copy.deepcopy(model)
    # the search walks ratios in equal increments (max_ratio·i/steps): the linear schedule, whatever
    # schedule the found ratio is then pruned on
    linear = dataclasses.replace(config, schedule="linear")
    pruner = _pruner(trial, input_shape, num_classes, linear, config.max_ratio, steps, probe)
    for i in range(1, steps + 1):
        _pruner_step(pruner, trial, dataset, config)
        ratio = config.max_ratio * i / steps
        cost = model_cost(trial, input_shape, config.budget_metric, config.device_class)
        trace.append({"ratio": ratio, "cost": cost})
        if cost <= config.budget:
            return ratio, trace
    raise ConfigError(
        f"{config.budget_metric} budget {config.budget:g} not reachable: at max_ratio "
        f"{config.max_ratio} the model still costs {trace[-1]['cost']:g} (unpruned {base:g})"
    )


def _check_prune_inputs(
    model, input_shape, num_classes, config, dataset, recover
) -> ChannelShuffleError | None:
    """Refuse what `prune_structured` cannot do, before any work; returns the channel-shuffle error of a
    model that shuffles channels (it can be pruned only at one uniform ratio), else None."""
    config.validate()
    if config.latency_target:
        raise ConfigError(
            "a latency target (target_latency_ms / latency_ratio) is met by prune.latency.prune_for_latency, "
            "which measures the latency table and prunes with the per-layer ratios it allocates"
        )
    check_model_fits(model, input_shape, num_classes)
    try:
        check_traceable(model, input_shape)
        shuffle = None
    except ChannelShuffleError as exc:
        shuffle = exc
    _check_importance_fits(model, config.importance)
    _modules_by_name(model, list(config.keep_layers) + list(config.layer_ratios), "layer names")
    if (config.finetune_between or config.finetune_after or recover) and dataset is None:
        raise ConfigError("fine-tuning needs a dataset")
    if recover and (config.finetune_between or config.finetune_after):
        raise ConfigError("give a recovery or fine-tuning between/after the steps, not both")
    return shuffle


def prune_structured(
    model: nn.Module,
    input_shape: Sequence[int],
    num_classes: int,
    config: StructuredConfig,
    dataset: Dataset | None = None,
    progress: bool = True,
    recover: Recover | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Remove channels from (a copy of) `model` by the config's target and schedule. Returns the
    pruned model and a report: cost before/after, per-step validation accuracy, budget trace.
    `recover` (in place, after every step) replaces the config's fine-tuning between and after
    (`prune.recovery`: fine-tuning or KD from the unpruned parent at a fixed epoch budget)."""
    seed_everything(config.seed)
    model = copy.deepcopy(model).eval()  # the checks run the copy, never the caller's model
    shuffle = _check_prune_inputs(model, input_shape, num_classes, config, dataset, recover)
    before = {m: model_cost(model, input_shape, m) for m in ("params", "macs")}
    trace: list[dict[str, float]] = []
    ratio = config.ratio
    if shuffle is not None:
        if (
            config.budget_metric
            or config.layer_ratios
            or config.global_pruning
            or config.latency_target
            or config.schedule != "linear"
        ):
            raise ModelError(
                f"{shuffle}. Internal-width pruning (what structured pruning does on such a model) takes a "
                "uniform ratio only, on the linear schedule: no budget, layer_ratios, global ranking or "
                "geometric schedule"
            ) from shuffle
        keep = list(_modules_by_name(model, config.keep_layers, "keep_layers").values())
        pruner = InternalWidthPruner(
            find_sandwiches(model, keep),
            ratio,
            config.steps,
            config.importance,
            f"torch-pruning cannot trace {type(model).__name__} (a channel shuffle regroups the channel axis)",
        )
        log.warning("%s", pruner.note)
    elif config.budget_metric:
        # the safety probe runs once: the budget search and the schedule prune the same model and config
        probe = _pruner(copy.deepcopy(model), input_shape, num_classes, config, ratio, 1).probe
        ratio, trace = ratio_for_budget(model, input_shape, num_classes, config, dataset, probe=probe)
        pruner = _pruner(model, input_shape, num_classes, config, ratio, config.steps, probe)
    else:
        pruner = _pruner(model, input_shape, num_classes, config, ratio, config.steps)
    for message in pruner.skipped:  # each skipped layer said once, not once per pruner built
        log.warning("%s", message)
    x_val, y_val = dataset.split("val") if dataset is not None else (None, None)
    schedule = []
    cumulative = schedule_ratios(ratio, config.steps, config.schedule)
    for step in range(1, config.steps + 1):
        _pruner_step(pruner, model, dataset, config)
        entry: dict[str, Any] = {
            "step": step,
            "ratio": cumulative[step],
            "params": model_cost(model, input_shape, "params"),
            "macs": model_cost(model, input_shape, "macs"),
        }
        if x_val is not None:
            entry["val_accuracy_pruned"] = accuracy(model, x_val, y_val)
        ft = config.finetune_after if step == config.steps else config.finetune_between
        if ft:
            ft_cfg = copy.copy(ft)
            ft_cfg.seed = ft.seed + step  # seeded, but a different data order per step
            hist = fit(
                model,
                dataset,
                ft_cfg,
                description=f"fine-tune after prune step {step}/{config.steps}",
                progress=progress,
            )
            entry["val_accuracy_finetuned"] = hist.final_val_accuracy
        if recover:
            entry.update(recover(model, step))
        schedule.append(entry)
        log.info("prune step %d/%d: %s", step, config.steps, entry)
    model.eval()
    check_model_fits(model, input_shape, num_classes)
    after = {m: model_cost(model, input_shape, m) for m in ("params", "macs")}
    report: dict[str, Any] = {
        "method": "structured",
        "config": config.as_params(),
        "ratio": ratio,
        "before": before,
        "after": after,
        "macs_reduction": before["macs"] / max(1.0, after["macs"]),
        "params_reduction": before["params"] / max(1.0, after["params"]),
        "schedule": schedule,
        "budget_trace": trace,
        "channels": channel_counts(model),
        "attention_heads": {layout.name: layout.heads for layout in pruner.layouts},
        "skipped": pruner.skipped,
    }
    if shuffle is not None:
        report["internal_widths"] = {"why": pruner.note, "blocks": [x.name for x in pruner.sandwiches]}
    if config.budget_metric:
        achieved = model_cost(model, input_shape, config.budget_metric, config.device_class)
        report["budget"] = {
            "metric": config.budget_metric,
            "budget": config.budget,
            "achieved": achieved,
            "met": achieved <= config.budget,
            "device_class": config.device_class,
        }
    return model, report


def output_width(module: nn.Module) -> int:
    """Output channels of a conv, output features of a linear layer."""
    return module.out_channels if isinstance(module, nn.Conv2d | nn.Conv1d) else module.out_features


def channel_counts(model: nn.Module) -> dict[str, int]:
    return {n: output_width(m) for n, m in model.named_modules() if isinstance(m, _PRUNABLE)}


def prunable_layers(model: nn.Module, num_classes: int, keep_layers: Sequence[str] = ()) -> list[str]:
    out_layers = output_layers(model, num_classes)
    return [
        n
        for n, m in model.named_modules()
        if isinstance(m, _PRUNABLE) and m not in out_layers and n not in keep_layers
    ]
