"""Pruning: unstructured magnitude pruning and structured channel pruning.

- **Unstructured** (`torch.nn.utils.prune`): zeroes the smallest weights, globally or per layer, and
  makes the zeros permanent. The tensors keep their shape, so a dense kernel does exactly the same
  work: there is *no* speed-up from sparsity on ONNX Runtime's dense CPU kernels. What shrinks is
  the artifact once compressed (gzip bytes — what is shipped over the air).
- **Structured** (torch-pruning's dependency graph): removes whole channels/filters, so the
  convolutions, BatchNorms, residual additions, concatenations, depthwise convolutions and the
  flatten→Linear boundary that depend on them shrink consistently. The exported ONNX has fewer MACs
  and runs faster. Importance: L1, L2, BatchNorm scale or first-order Taylor. Target: a ratio, or a
  budget (MACs, parameters, or measured latency on a device class). An iterative schedule prunes in
  steps with (seeded) fine-tuning between and after.
- **Sensitivity analysis**: accuracy against the pruning ratio of each layer alone, no fine-tuning;
  `suggest_layer_ratios` turns it into per-layer ratios.
"""

from __future__ import annotations

import copy
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgecompress.data import Dataset
from edgecompress.errors import ConfigError, ModelError
from edgecompress.train import TrainConfig, accuracy, fit, seed_everything
from edgecompress.zoo import check_model_fits, count_parameters

log = logging.getLogger(__name__)

IMPORTANCES = ("l1", "l2", "bn", "taylor")
BUDGET_METRICS = ("macs", "params", "latency")
SCOPES = ("global", "layer")
_PRUNABLE = (nn.Conv2d, nn.Conv1d, nn.Linear)


def _check_ratio(name: str, value: float) -> None:
    if not 0.0 < float(value) < 1.0:
        raise ConfigError(f"{name} must be in (0, 1), got {value}")


def _modules_by_name(model: nn.Module, names: Sequence[str], what: str) -> dict[str, nn.Module]:
    """Resolve module names, naming the first that does not exist (and what does)."""
    modules = dict(model.named_modules())
    out = {}
    for name in names:
        if name not in modules or not name:
            prunable = [n for n, m in modules.items() if isinstance(m, _PRUNABLE)]
            raise ConfigError(
                f"{what}: the model has no layer named {name!r}; prunable layers are {prunable}"
            )
        out[name] = modules[name]
    return out


def output_layers(model: nn.Module, num_classes: int) -> list[nn.Module]:
    """The classifier layers (Linear with `num_classes` outputs): never pruned, the output must keep its classes."""
    return [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == num_classes]


# --- unstructured ---------------------------------------------------------------------------------


@dataclass
class UnstructuredConfig:
    sparsity: float = 0.8  # fraction of weights set to zero
    scope: str = "global"  # global: one threshold over all layers; layer: the same fraction in every layer
    keep_layers: tuple[str, ...] = ()
    finetune: TrainConfig | None = None  # fine-tune with the masks in place, then make them permanent

    def validate(self) -> None:
        _check_ratio("sparsity", self.sparsity)
        if self.scope not in SCOPES:
            raise ConfigError(f"scope {self.scope!r} not in {SCOPES}")
        if self.finetune:
            self.finetune.validate()

    def as_params(self) -> dict[str, Any]:
        return {
            "sparsity": self.sparsity,
            "scope": self.scope,
            "keep_layers": ",".join(self.keep_layers),
            "finetune_epochs": self.finetune.epochs if self.finetune else 0,
        }


def layer_sparsity(model: nn.Module) -> dict[str, dict[str, float]]:
    """Per prunable layer: weights, zeros and the fraction that is zero."""
    report = {}
    for name, module in model.named_modules():
        if isinstance(module, _PRUNABLE):
            w = module.weight.detach()
            zeros = int((w == 0).sum())
            report[name] = {"weights": int(w.numel()), "zeros": zeros, "sparsity": zeros / max(1, w.numel())}
    return report


def prune_unstructured(
    model: nn.Module, config: UnstructuredConfig, dataset: Dataset | None = None, progress: bool = True
) -> dict[str, Any]:
    """Magnitude-prune `model` in place; fine-tune with the masks if configured; make the zeros permanent."""
    from torch.nn.utils import prune as torch_prune

    config.validate()
    keep = _modules_by_name(model, config.keep_layers, "keep_layers")
    targets = [(m, "weight") for m in model.modules() if isinstance(m, _PRUNABLE) and m not in keep.values()]
    if not targets:
        raise ConfigError("no prunable layers (Conv/Linear) are left once keep_layers are excluded")
    if config.scope == "global":
        torch_prune.global_unstructured(
            targets, pruning_method=torch_prune.L1Unstructured, amount=config.sparsity
        )
    else:
        for module, name in targets:
            torch_prune.l1_unstructured(module, name, amount=config.sparsity)
    history = None
    if config.finetune:
        if dataset is None:
            raise ConfigError("fine-tuning needs a dataset")
        history = fit(
            model, dataset, config.finetune, description="fine-tune (masked)", progress=progress
        ).as_dict()
    for module, name in targets:
        torch_prune.remove(module, name)  # weight = weight_orig * mask, permanently
    model.eval()
    per_layer = layer_sparsity(model)
    total = sum(v["weights"] for v in per_layer.values())
    zeros = sum(v["zeros"] for v in per_layer.values())
    return {
        "method": "unstructured",
        "config": config.as_params(),
        "per_layer": per_layer,
        "weight_sparsity": zeros / max(1, total),
        "finetune_history": history,
        "note": "sparse weights keep their dense shape: no speed-up on dense kernels; the gzip artifact shrinks",
    }


# --- structured -----------------------------------------------------------------------------------


@dataclass
class StructuredConfig:
    ratio: float = 0.5  # fraction of channels removed per layer (or overall, with global_pruning)
    importance: str = "l2"
    global_pruning: bool = False
    layer_ratios: dict[str, float] = field(
        default_factory=dict
    )  # per-layer overrides (e.g. from sensitivity)
    keep_layers: tuple[str, ...] = ()
    budget_metric: str = ""  # "", macs, params, latency: then `budget` replaces `ratio` as the target
    budget: float = 0.0  # absolute: MACs, parameters, or p50 milliseconds on `device_class`
    device_class: str = "rpi4-emulated"
    max_ratio: float = 0.9  # the budget search never removes more than this
    steps: int = 1  # iterative schedule: prune in this many steps
    finetune_between: TrainConfig | None = None  # fine-tuning after each step but the last
    finetune_after: TrainConfig | None = None  # fine-tuning after the last step
    round_to: int | None = None  # keep channel counts multiples of this (SIMD-friendly)
    seed: int = 0

    def validate(self) -> None:
        if self.importance not in IMPORTANCES:
            raise ConfigError(f"importance {self.importance!r} not in {IMPORTANCES}")
        if self.budget_metric:
            if self.budget_metric not in BUDGET_METRICS:
                raise ConfigError(f"budget_metric {self.budget_metric!r} not in {BUDGET_METRICS}")
            if not self.budget > 0:
                raise ConfigError(
                    f"budget must be > 0 for budget_metric {self.budget_metric!r}, got {self.budget}"
                )
            if self.budget_metric == "latency":
                from edgecompress.farm.devices import emulated_device_class

                emulated_device_class(self.device_class)
        else:
            _check_ratio("ratio", self.ratio)
        _check_ratio("max_ratio", self.max_ratio)
        for name, r in self.layer_ratios.items():
            _check_ratio(f"layer_ratios[{name!r}]", r)
        if self.steps < 1:
            raise ConfigError(f"steps must be ≥ 1, got {self.steps}")
        for cfg in (self.finetune_between, self.finetune_after):
            if cfg:
                cfg.validate()

    def as_params(self) -> dict[str, Any]:
        d = asdict(self)
        d["layer_ratios"] = dict(self.layer_ratios)
        d["keep_layers"] = ",".join(self.keep_layers)
        d["finetune_between"] = self.finetune_between.epochs if self.finetune_between else 0
        d["finetune_after"] = self.finetune_after.epochs if self.finetune_after else 0
        return d


def _importance(name: str):
    import torch_pruning as tp

    return {
        "l1": lambda: tp.importance.GroupMagnitudeImportance(p=1),
        "l2": lambda: tp.importance.GroupMagnitudeImportance(p=2),
        "bn": lambda: tp.importance.BNScaleImportance(),
        "taylor": lambda: tp.importance.GroupTaylorImportance(),
    }[name]()


def check_traceable(model: nn.Module, input_shape: Sequence[int]) -> None:
    """Raise ModelError when torch-pruning cannot build a dependency graph reaching every Conv/Linear."""
    import torch_pruning as tp

    example = torch.zeros(1, *input_shape)
    try:
        graph = tp.DependencyGraph().build_dependency(model.eval(), example_inputs=example)
    except Exception as exc:
        raise ModelError(
            f"torch-pruning cannot trace the model ({type(model).__name__}): "
            f"{type(exc).__name__}: {str(exc)[:300]}"
        ) from exc
    unreached = [
        n for n, m in model.named_modules() if isinstance(m, _PRUNABLE) and m not in graph.module2node
    ]
    if unreached:
        raise ModelError(
            f"torch-pruning cannot trace the model ({type(model).__name__}): layers {unreached} are not "
            "reached from its output through autograd (detach, numpy or in-place tricks in forward?); "
            "channel pruning would leave them inconsistent"
        )


def _check_importance_fits(model: nn.Module, importance: str) -> None:
    if importance == "bn" and not any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()
    ):
        raise ConfigError(
            f"importance 'bn' needs BatchNorm layers; {type(model).__name__} has none (use l1, l2 or taylor)"
        )


def _pruner(
    model: nn.Module,
    input_shape: Sequence[int],
    num_classes: int,
    config: StructuredConfig,
    ratio: float,
    steps: int,
):
    import torch_pruning as tp

    keep = list(_modules_by_name(model, config.keep_layers, "keep_layers").values())
    layer_ratios = {
        m: config.layer_ratios[n]
        for n, m in _modules_by_name(model, list(config.layer_ratios), "layer_ratios").items()
    }
    try:
        return tp.pruner.MetaPruner(
            model, torch.zeros(1, *input_shape), importance=_importance(config.importance),
            global_pruning=config.global_pruning, pruning_ratio=ratio, pruning_ratio_dict=layer_ratios or None,
            max_pruning_ratio=max(config.max_ratio, ratio, *layer_ratios.values()), iterative_steps=steps,
            ignored_layers=keep + output_layers(model, num_classes), round_to=config.round_to,
        )  # fmt: skip
    except Exception as exc:
        raise ModelError(
            f"torch-pruning cannot trace the model ({type(model).__name__}): "
            f"{type(exc).__name__}: {str(exc)[:300]}"
        ) from exc


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


def _pruner_step(pruner, model: nn.Module, dataset: Dataset | None, config: StructuredConfig) -> None:
    if config.importance == "taylor":
        if dataset is None:
            raise ConfigError("Taylor importance needs a dataset (it uses loss gradients)")
        _taylor_gradients(model, dataset, config.seed)
    try:
        pruner.step()
    except Exception as exc:
        raise ModelError(
            f"torch-pruning failed to prune {type(model).__name__}: {type(exc).__name__}: {str(exc)[:300]}"
        ) from exc
    model.zero_grad(set_to_none=True)


def measure_latency_ms(
    model: nn.Module,
    input_shape: Sequence[int],
    device_class: str = "rpi4-emulated",
    min_runs: int = 100,
    min_duration_s: float = 0.3,
) -> float:
    """p50 latency (batch 1) of the model exported to ONNX, on an emulated device class."""
    from edgecompress.edge import benchmark_locally
    from edgecompress.export import export_onnx

    with tempfile.TemporaryDirectory(prefix="edgecompress-prune-") as tmp:
        path = Path(tmp) / "model.onnx"
        export_onnx(model, tuple(input_shape), path)
        result = benchmark_locally(
            path, device_class, {"min_runs": min_runs, "min_duration_s": min_duration_s}
        )
    return float(result["latency_ms"]["p50"])


def model_cost(
    model: nn.Module, input_shape: Sequence[int], metric: str, device_class: str = "rpi4-emulated"
) -> float:
    if metric == "params":
        return float(count_parameters(model))
    if metric == "macs":
        import torch_pruning as tp

        macs, _ = tp.utils.count_ops_and_params(model.eval(), torch.zeros(1, *input_shape))
        return float(macs)
    return measure_latency_ms(model, input_shape, device_class)


def ratio_for_budget(
    model: nn.Module,
    input_shape: Sequence[int],
    num_classes: int,
    config: StructuredConfig,
    dataset: Dataset | None = None,
    increment: float = 0.05,
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
    pruner = _pruner(trial, input_shape, num_classes, config, config.max_ratio, steps)
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


def prune_structured(
    model: nn.Module,
    input_shape: Sequence[int],
    num_classes: int,
    config: StructuredConfig,
    dataset: Dataset | None = None,
    progress: bool = True,
) -> tuple[nn.Module, dict[str, Any]]:
    """Remove channels from (a copy of) `model` by the config's target and schedule. Returns the
    pruned model and a report: cost before/after, per-step validation accuracy, budget trace."""
    config.validate()
    seed_everything(config.seed)
    model = copy.deepcopy(model).eval()
    check_model_fits(model, input_shape, num_classes)
    check_traceable(model, input_shape)
    _check_importance_fits(model, config.importance)
    _modules_by_name(model, list(config.keep_layers) + list(config.layer_ratios), "layer names")
    if (config.finetune_between or config.finetune_after) and dataset is None:
        raise ConfigError("fine-tuning needs a dataset")
    before = {m: model_cost(model, input_shape, m) for m in ("params", "macs")}
    trace: list[dict[str, float]] = []
    ratio = config.ratio
    if config.budget_metric:
        ratio, trace = ratio_for_budget(model, input_shape, num_classes, config, dataset)
    pruner = _pruner(model, input_shape, num_classes, config, ratio, config.steps)
    x_val, y_val = dataset.split("val") if dataset is not None else (None, None)
    schedule = []
    for step in range(1, config.steps + 1):
        _pruner_step(pruner, model, dataset, config)
        entry: dict[str, Any] = {
            "step": step,
            "ratio": ratio * step / config.steps,
            "params": count_parameters(model),
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
        schedule.append(entry)
        log.info("prune step %d/%d: %s", step, config.steps, entry)
    model.eval()
    check_model_fits(model, input_shape, num_classes)
    after = {m: model_cost(model, input_shape, m) for m in ("params", "macs")}
    report: dict[str, Any] = {
        "method": "structured", "config": config.as_params(), "ratio": ratio, "before": before, "after": after,
        "macs_reduction": before["macs"] / max(1.0, after["macs"]),
        "params_reduction": before["params"] / max(1.0, after["params"]),
        "schedule": schedule, "budget_trace": trace, "channels": channel_counts(model),
    }  # fmt: skip
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


def channel_counts(model: nn.Module) -> dict[str, int]:
    return {
        n: (m.out_channels if isinstance(m, nn.Conv2d | nn.Conv1d) else m.out_features)
        for n, m in model.named_modules()
        if isinstance(m, _PRUNABLE)
    }


# --- sensitivity ----------------------------------------------------------------------------------


def prunable_layers(model: nn.Module, num_classes: int, keep_layers: Sequence[str] = ()) -> list[str]:
    out_layers = output_layers(model, num_classes)
    return [
        n
        for n, m in model.named_modules()
        if isinstance(m, _PRUNABLE) and m not in out_layers and n not in keep_layers
    ]


def sensitivity(
    model: nn.Module,
    dataset: Dataset,
    ratios: Sequence[float] = (0.25, 0.5, 0.75),
    importance: str = "l2",
    layers: Sequence[str] | None = None,
    samples: int = 1000,
    keep_layers: Sequence[str] = (),
) -> dict[str, Any]:
    """Validation accuracy when one layer alone is pruned by each ratio (no fine-tuning)."""
    for r in ratios:
        _check_ratio("sensitivity ratio", r)
    if importance not in IMPORTANCES:
        raise ConfigError(f"importance {importance!r} not in {IMPORTANCES}")
    input_shape, num_classes = dataset.input_shape, dataset.num_classes
    check_traceable(model, input_shape)
    _check_importance_fits(model, importance)
    names = list(layers) if layers else prunable_layers(model, num_classes, keep_layers)
    _modules_by_name(model, names, "sensitivity layers")
    x, y = dataset.split("val", samples)
    base = accuracy(model, x, y)
    table: dict[str, dict[str, float]] = {}
    for name in names:
        table[name] = {}
        for r in ratios:
            trial = copy.deepcopy(model)
            cfg = StructuredConfig(
                ratio=r, importance=importance, layer_ratios={name: r}, max_ratio=max(ratios)
            )
            # every other layer at ratio 0: only `name` (and what must follow it) loses channels
            pruner = _pruner(trial, input_shape, num_classes, cfg, 0.0, 1)
            _pruner_step(pruner, trial, dataset, cfg)
            table[name][str(r)] = accuracy(trial, x, y)
    return {
        "baseline_accuracy": base,
        "ratios": list(ratios),
        "samples": len(x),
        "importance": importance,
        "accuracy": table,
    }


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


# --- flat parameters (component and CLI) -------------------------------------------------------


def parse_layer_ratios(text: str | dict[str, float]) -> dict[str, float]:
    """`{"features.0": 0.3}` (JSON), `features.0=0.3,features.3=0.5`, or empty."""
    import json

    if isinstance(text, dict):
        return {str(k): float(v) for k, v in text.items()}
    text = text.strip()
    if not text:
        return {}
    if text.startswith("{"):
        try:
            return parse_layer_ratios(json.loads(text))
        except (json.JSONDecodeError, TypeError, ValueError) as exc:
            raise ConfigError(f"layer_ratios is not a JSON object of layer → ratio: {exc}") from exc
    out = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise ConfigError(f"layer_ratios item {item!r} must look like 'layer.name=0.3'")
    return out


def parse_names(text: str | Sequence[str]) -> tuple[str, ...]:
    items = text.split(",") if isinstance(text, str) else list(text)
    return tuple(n.strip() for n in items if n.strip())


def parse_ratios(text: str | Sequence[float]) -> tuple[float, ...]:
    items = [t for t in text.split(",") if t.strip()] if isinstance(text, str) else list(text)
    try:
        return tuple(float(t) for t in items)
    except ValueError as exc:
        raise ConfigError(f"ratios {text!r} must be comma-separated numbers in (0, 1)") from exc


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


# --- pipeline step ------------------------------------------------------------------------------


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
    import json

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
