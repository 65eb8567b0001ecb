"""The edge-compression pipeline: train → compress (a chain of steps) → evaluate parent and child →
edge-benchmark both on each device class → accuracy gate (register or reject).

The compression chain is a compile-time choice (`build_pipeline(chain=[...])`, `edgecompress run
--chain …`, `edgecompress compile --chain …`): each step in it is its own task whose output model's
parent is the previous step's model. Every step's settings are pipeline parameters.
"""

# No `from __future__ import annotations` here or in components: KFP reads the annotations.
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kfp import dsl

from edgecompress.components.accuracy_gate.component import accuracy_gate
from edgecompress.components.autotune.component import autotune
from edgecompress.components.distill.component import distill
from edgecompress.components.edge_benchmark.component import edge_benchmark
from edgecompress.components.evaluate.component import evaluate
from edgecompress.components.load_dataset.component import load_dataset
from edgecompress.components.nas.component import nas
from edgecompress.components.prune.component import prune
from edgecompress.components.quantize.component import quantize
from edgecompress.components.train.component import train
from edgecompress.pipelines.platform import apply_platform_config

PIPELINE_NAME = "edge-compression"
DEFAULT_CHAIN = ("quantize",)


@dataclass
class ChainContext:
    """What a chain step can connect to: the dataset, the trained (teacher) model, the pipeline's
    parameters, and the lineage keyword arguments every component takes."""

    dataset: Any
    teacher: Any
    params: dict[str, Any]
    lineage: dict[str, Any]


# A chain step: (previous step's model output, context) -> this step's model output
StepBuilder = Callable[[Any, ChainContext], Any]


def _quantize_step(parent: Any, ctx: ChainContext) -> Any:
    p = ctx.params
    task = quantize(
        model=parent,
        dataset=ctx.dataset,
        method=p["quant_method"],
        calibration_samples=p["calibration_samples"],
        calibration_method=p["calibration_method"],
        per_channel=p["per_channel"],
        seed=p["seed"],
        device_class=p["autotune_device_class"],
        farm_url=p["farm_url"],
        **ctx.lineage,
    )
    task.set_display_name("quantize")
    task.set_caching_options(False)  # its check includes a latency measurement
    return task.outputs["quantized_model"]


def _autotune_step(parent: Any, ctx: ChainContext) -> Any:
    """Accuracy-aware quantization: the same accuracy budget as the gate, latency on one device class."""
    p = ctx.params
    task = autotune(
        model=parent,
        dataset=ctx.dataset,
        max_drop=p["max_accuracy_drop"],
        objective=p["autotune_objective"],
        device_class=p["autotune_device_class"],
        farm_url=p["farm_url"],
        min_gain=p["min_speedup"],
        calibration_samples=p["calibration_samples"],
        include_qat=p["autotune_qat"],
        qat_epochs=p["autotune_qat_epochs"],
        bench_min_runs=p["bench_min_runs"],
        bench_min_duration_s=p["bench_min_duration_s"],
        seed=p["seed"],
        **ctx.lineage,
    )
    task.set_display_name("autotune")
    task.set_caching_options(False)  # trials are judged on latency measurements
    return task.outputs["tuned_model"]


# --- prune and distill (parameters prefixed prune_ / distill_) ---------------------------------


def _prune_step(parent: Any, ctx: ChainContext) -> Any:
    p = ctx.params
    task = prune(
        model=parent, dataset=ctx.dataset, method=p["prune_method"], ratio=p["prune_ratio"],
        importance=p["prune_importance"], global_pruning=p["prune_global"], layer_ratios=p["prune_layer_ratios"],
        keep_layers=p["prune_keep_layers"], budget_metric=p["prune_budget_metric"], budget=p["prune_budget"],
        device_class=p["prune_device_class"], steps=p["prune_steps"],
        finetune_epochs_between=p["prune_finetune_epochs_between"], finetune_epochs_after=p["prune_finetune_epochs_after"],
        sparsity=p["prune_sparsity"], scope=p["prune_scope"], lr=p["prune_lr"], batch_size=p["batch_size"],
        augment=p["augment"], sensitivity_ratios=p["prune_sensitivity_ratios"],
        sensitivity_max_drop=p["prune_sensitivity_max_drop"], seed=p["seed"], **ctx.lineage,
    )  # fmt: skip
    task.set_display_name("prune")
    return task.outputs["pruned_model"]


def _distill_step(parent: Any, ctx: ChainContext) -> Any:
    """The teacher is the trained model; the student is the previous step's model (e.g. the pruned
    one), or a fresh `distill_student_spec` when distill comes first in the chain."""
    p = ctx.params
    student = {} if parent is ctx.teacher else {"student": parent}
    task = distill(
        teacher=ctx.teacher, dataset=ctx.dataset, student_spec=p["distill_student_spec"],
        temperature=p["distill_temperature"], alpha=p["distill_alpha"], feature_weight=p["distill_feature_weight"],
        feature_pairs=p["distill_feature_pairs"], epochs=p["distill_epochs"], batch_size=p["batch_size"],
        lr=p["distill_lr"], augment=p["augment"], compare_scratch=p["distill_compare_scratch"], seed=p["seed"],
        **student, **ctx.lineage,
    )  # fmt: skip
    task.set_display_name("distill")
    return task.outputs["distilled_model"]


def _nas_step(parent: Any, ctx: ChainContext) -> Any:
    """Search an architecture for `nas_device_class`; the trained model is the reference it is
    measured against and its lineage parent. Later steps (distill from the trained teacher, quantize)
    take the retrained pick."""
    p = ctx.params
    task = nas(
        dataset=ctx.dataset, reference_model=parent, search_space=p["nas_search_space"], strategy=p["nas_strategy"],
        n_trials=p["nas_trials"], timeout_s=p["nas_timeout_s"], search_epochs=p["nas_search_epochs"],
        train_samples=p["nas_train_samples"], holdout_samples=p["nas_holdout_samples"], eta=p["nas_eta"],
        final_epochs=p["nas_final_epochs"], batch_size=p["batch_size"], lr=p["lr"], augment=p["augment"],
        device_class=p["nas_device_class"], farm_url=p["farm_url"], max_params=p["nas_max_params"],
        max_macs=p["nas_max_macs"], max_latency_ms=p["nas_max_latency_ms"],
        accuracy_tolerance=p["nas_accuracy_tolerance"], storage=p["nas_storage"], seed=p["seed"], **ctx.lineage,
    )  # fmt: skip
    task.set_display_name("nas")
    task.set_caching_options(False)  # trials are judged on latency measurements
    return task.outputs["searched_model"]


STEP_BUILDERS: dict[str, StepBuilder] = {
    "quantize": _quantize_step,
    "autotune": _autotune_step,
    "prune": _prune_step,
    "distill": _distill_step,
    "nas": _nas_step,
}


def build_pipeline(chain: Sequence[str] = DEFAULT_CHAIN, platform=None):
    """A pipeline function for one compression chain (its steps run in the order given). `platform`
    (an `edgecompress.platform.PlatformConfig`) sets the Kubernetes options of its tasks."""
    unknown = [s for s in chain if s not in STEP_BUILDERS]
    if not chain or unknown:
        from edgecompress.errors import ConfigError

        raise ConfigError(
            f"compression chain {list(chain)}: unknown steps {unknown}; available: {sorted(STEP_BUILDERS)}"
        )

    @dsl.pipeline(
        name=PIPELINE_NAME, description=f"train → {' → '.join(chain)} → evaluate → edge-benchmark → gate"
    )
    def edge_compression(
        dataset: str = "digits",
        model: str = "cnn",
        epochs: int = 10,
        batch_size: int = 64,
        lr: float = 3e-3,
        augment: bool = False,
        seed: int = 0,
        calibration_samples: int = 256,
        calibration_method: str = "minmax",
        per_channel: bool = True,
        quant_method: str = "static",
        autotune_objective: str = "latency",
        autotune_device_class: str = "rpi4-emulated",
        autotune_qat: bool = True,
        autotune_qat_epochs: int = 2,
        prune_method: str = "structured",
        prune_ratio: float = 0.5,
        prune_importance: str = "l2",
        prune_global: bool = False,
        prune_layer_ratios: str = "",
        prune_keep_layers: str = "",
        prune_budget_metric: str = "",
        prune_budget: float = 0.0,
        prune_device_class: str = "rpi4-emulated",
        prune_steps: int = 1,
        prune_finetune_epochs_between: int = 0,
        prune_finetune_epochs_after: int = 2,
        prune_sparsity: float = 0.8,
        prune_scope: str = "global",
        prune_lr: float = 1e-3,
        prune_sensitivity_ratios: str = "0.25,0.5,0.75",
        prune_sensitivity_max_drop: float = 0.0,
        distill_student_spec: str = '{"family": "cnn", "kwargs": {"widths": [16, 32, 64], "depths": [1, 1, 1]}}',
        distill_temperature: float = 4.0,
        distill_alpha: float = 0.9,
        distill_feature_weight: float = 0.0,
        distill_feature_pairs: str = "auto",
        distill_epochs: int = 5,
        distill_lr: float = 1e-3,
        distill_compare_scratch: bool = True,
        nas_search_space: str = "default",
        nas_strategy: str = "tpe",
        nas_trials: int = 12,
        nas_timeout_s: float = 0.0,
        nas_search_epochs: int = 2,
        nas_train_samples: int = 10000,
        nas_holdout_samples: int = 5000,
        nas_eta: int = 3,
        nas_final_epochs: int = 10,
        nas_device_class: str = "rpi4-emulated",
        nas_max_params: int = 0,
        nas_max_macs: int = 0,
        nas_max_latency_ms: float = 0.0,
        nas_accuracy_tolerance: float = 0.0,
        nas_storage: str = "",
        device_classes: list = ["rpi4-emulated", "jetson-orin-nano-emulated"],  # noqa: B006
        farm_url: str = "",
        bench_min_runs: int = 200,
        bench_min_duration_s: float = 1.0,
        max_accuracy_drop: float = 0.01,
        min_speedup: float = 1.0,
        registered_model_name: str = "edgecompress-model",
        experiment: str = "edgecompress",
        track: bool = True,
    ) -> dsl.Artifact:
        params = dict(locals())
        lineage = {
            "pipeline_run_id": dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            "pipeline_name": PIPELINE_NAME,
            "experiment": experiment,
            "track": track,
        }
        data = load_dataset(source=dataset, seed=seed, **lineage)
        data.set_caching_options(False)
        trained = train(
            dataset=data.outputs["dataset"],
            model_spec=model,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            augment=augment,
            seed=seed,
            **lineage,
        )
        parent = trained.outputs["model"]
        child = parent
        ctx = ChainContext(data.outputs["dataset"], parent, params, lineage)
        for step in chain:
            child = STEP_BUILDERS[step](child, ctx)
        evals, benches = {}, {}
        for role, model_out in (("parent", parent), ("child", child)):
            ev = evaluate(model=model_out, dataset=data.outputs["dataset"], **lineage)
            ev.set_display_name(f"evaluate-{role}")
            bench = edge_benchmark(
                model=model_out,
                device_classes=device_classes,
                farm_url=farm_url,
                min_runs=bench_min_runs,
                min_duration_s=bench_min_duration_s,
                **lineage,
            )
            bench.set_display_name(f"edge-benchmark-{role}")
            bench.set_caching_options(False)  # latency is a measurement, never a cached value
            evals[role], benches[role] = ev, bench
        gate = accuracy_gate(
            parent_evaluation=evals["parent"].outputs["results"], child_evaluation=evals["child"].outputs["results"],
            parent_benchmark=benches["parent"].outputs["results"], child_benchmark=benches["child"].outputs["results"],
            max_accuracy_drop=max_accuracy_drop, min_speedup=min_speedup,
            registered_model_name=registered_model_name, **lineage,
        )  # fmt: skip
        gate.set_caching_options(False)
        apply_platform_config(platform)
        return gate.outputs["results"]

    return edge_compression


edge_compression = build_pipeline()
