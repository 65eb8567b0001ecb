"""KFP component: hardware-aware neural architecture search (optuna, latency measured on a device class)."""

from kfp import dsl

from edgecompress.settings import component_image


@dsl.component(base_image=component_image(), install_kfp_package=False)
def nas(
    dataset: dsl.Input[dsl.Dataset],
    searched_model: dsl.Output[dsl.Model],
    pareto_front: dsl.Output[dsl.Artifact],
    metrics: dsl.Output[dsl.Metrics],
    report: dsl.Output[dsl.HTML],
    reference_model: dsl.Input[dsl.Model] = None,
    search_space: str = "default",
    strategy: str = "tpe",
    n_trials: int = 24,
    timeout_s: float = 0.0,
    search_epochs: int = 3,
    train_samples: int = 10000,
    holdout_samples: int = 5000,
    eta: int = 3,
    final_epochs: int = 10,
    batch_size: int = 128,
    lr: float = 3e-3,
    augment: bool = False,
    device_class: str = "rpi4-emulated",
    farm_url: str = "",
    max_params: int = 0,
    max_macs: int = 0,
    max_latency_ms: float = 0.0,
    accuracy_tolerance: float = 0.0,
    storage: str = "",
    study_name: str = "",
    seed: int = 0,
    pipeline_run_id: str = "",
    pipeline_name: str = "edge-compression",
    experiment: str = "edgecompress",
    track: bool = True,
):
    """Searches `search_space` (a preset name, or the YAML/JSON text of a space) for the most accurate
    architecture that meets `max_params`/`max_macs`/`max_latency_ms` (p50, batch 1, measured on
    `device_class` through the farm at `farm_url`, or local emulation when empty). `strategy`: tpe |
    nsga2 (optuna, multi-objective) | random. Budget: `n_trials` and `timeout_s` (0 = none). Trials
    train `search_epochs` on `train_samples` images, are scored on `holdout_samples` held out from the
    training split, and are stopped early by successive halving (`eta`; 1 = off). The Pareto front is
    re-measured; the pick (the fastest front member within `accuracy_tolerance` of the best accuracy)
    is retrained `final_epochs` on the whole training split. `reference_model` (e.g. the trained model)
    is measured alongside and becomes the pick's parent in lineage. `storage`: an optuna storage URL
    shared across runs (resumes the study `study_name`); empty keeps the study in the Model artifact."""
    from edgecompress.nas import Constraints, NasConfig, nas_step
    from edgecompress.step import Lineage

    config = NasConfig(
        strategy=strategy, n_trials=n_trials, timeout_s=timeout_s, search_epochs=search_epochs,
        train_samples=train_samples, holdout_samples=holdout_samples, eta=eta, final_epochs=final_epochs,
        batch_size=batch_size, lr=lr, augment=augment, seed=seed, accuracy_tolerance=accuracy_tolerance,
    )  # fmt: skip
    constraints = Constraints(device_class, max_params, max_macs, max_latency_ms)
    info = nas_step(
        dataset.path, searched_model.path, pareto_front.path, report.path, search_space, constraints, config,
        storage, study_name, farm_url or None, reference_model.path if reference_model is not None else None,
        Lineage(pipeline_run_id, pipeline_name, experiment, track), progress=False,
    )  # fmt: skip
    summary = info["nas_summary"]
    final = summary["pick"]["final"]
    searched_model.metadata.update(
        {k: info.get(k) for k in ("technique", "params", "onnx_bytes", "onnx_sha256", "dataset_sha256")}
    )
    searched_model.metadata["mlflow_model_id"] = info.get("mlflow_model_id") or ""
    searched_model.metadata["parent_model_id"] = info.get("parent_model_id") or ""
    searched_model.metadata["val_accuracy"] = final["val_accuracy"]
    searched_model.metadata[f"{device_class}_p50_ms"] = final["p50_ms"]
    pareto_front.metadata["front_size"] = len(summary["front"])
    metrics.log_metric("val_accuracy", final["val_accuracy"])
    metrics.log_metric("test_accuracy", final["test_accuracy"])
    metrics.log_metric("p50_ms", final["p50_ms"])
    metrics.log_metric("trials_finished", summary["budget"]["trials_finished"])
    metrics.log_metric("front_size", len(summary["front"]))
    if summary.get("reference"):
        metrics.log_metric("reference_p50_ms", summary["reference"]["p50_ms"])
