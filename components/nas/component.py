"""KFP component: hardware-aware neural architecture search (optuna, latency measured on a device class)."""

from edgecompress.components import stamp_model
from edgecompress.components.factory import technique_component
from edgecompress.nas import Constraints, NasConfig, NasStepOptions, nas_step
from edgecompress.params import build
from edgecompress.step import Lineage

# The component's settings: every flat field of these, with their defaults (edgecompress.params).
SURFACES = (NasStepOptions, NasConfig, Constraints, Lineage)


def record_outputs(result, constraints, searched_model, pareto_front, metrics) -> None:
    """The NAS step's `StepResult` on its KFP artifacts (also the fan-out's finish task)."""
    summary = result.extra["nas_summary"]
    final = summary["pick"]["final"]
    stamp_model(searched_model, result, val_accuracy=final["val_accuracy"])
    searched_model.metadata[f"{constraints.device_class}_p50_ms"] = final["p50_ms"]
    pareto_front.metadata["front_size"] = len(summary["front"])
    metrics.log_metric("val_accuracy", final["val_accuracy"])
    metrics.log_metric("test_accuracy", final["test_accuracy"])
    metrics.log_metric("p50_ms", final["p50_ms"])
    metrics.log_metric("trials_finished", summary["budget"]["trials_finished"])
    metrics.log_metric("front_size", len(summary["front"]))
    if summary.get("reference"):
        metrics.log_metric("reference_p50_ms", summary["reference"]["p50_ms"])


def run(dataset, searched_model, pareto_front, metrics, report, reference_model=None, **settings) -> None:
    options, constraints = build(NasStepOptions, settings), build(Constraints, settings)
    result = nas_step(
        dataset.path, searched_model.path, pareto_front.path, report.path, options.search_space, constraints,
        build(NasConfig, settings), options.storage, options.study_name, options.farm_url,
        reference_model.path if reference_model is not None else None, build(Lineage, settings), progress=False,
    )  # fmt: skip
    record_outputs(result, constraints, searched_model, pareto_front, metrics)


nas = technique_component(
    "nas",
    run,
    inputs={"dataset": "Dataset"},
    outputs={"searched_model": "Model", "pareto_front": "Artifact", "metrics": "Metrics", "report": "HTML"},
    optional_inputs={"reference_model": "Model"},
    surfaces=SURFACES,
    doc="""Searches `search_space` (a preset name, or the YAML/JSON text of a space) for the most accurate
    architecture that meets `max_params`/`max_macs`/`max_latency_ms` (p50, batch 1, measured on
    `device_class` through the farm at `farm_url`, or local emulation when empty). `strategy`: tpe |
    nsga2 (optuna, multi-objective) | random. Budget: `n_trials` and `timeout_s` (0 = none). Trials
    train `search_epochs` on `train_samples` images, are scored on `holdout_samples` held out from the
    training split, and are stopped early by successive halving (`eta`; 1 = off). The Pareto front is
    re-measured; the pick (the fastest front member within `accuracy_tolerance` of the best accuracy)
    is retrained `final_epochs` on the whole training split. `reference_model` (e.g. the trained model)
    is measured alongside and becomes the pick's parent in lineage. `storage`: an optuna storage URL
    shared across runs (resumes the study `study_name`); empty keeps the study in the Model artifact.""",
)
