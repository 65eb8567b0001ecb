"""KFP component: accuracy-aware quantization auto-tuning (PTQ variants → mixed precision → QAT)."""

from kfp import dsl

from edgecompress.settings import component_image


@dsl.component(base_image=component_image(), install_kfp_package=False)
def autotune(
    model: dsl.Input[dsl.Model],
    dataset: dsl.Input[dsl.Dataset],
    tuned_model: dsl.Output[dsl.Model],
    results: dsl.Output[dsl.Artifact],
    report: dsl.Output[dsl.HTML],
    metrics: dsl.Output[dsl.Metrics],
    max_drop: float = 0.01,
    relative: bool = False,
    objective: str = "latency",
    device_class: str = "rpi4-emulated",
    farm_url: str = "",
    min_gain: float = 1.0,
    calibration_samples: int = 256,
    include_mixed: bool = True,
    include_qat: bool = True,
    qat_epochs: int = 2,
    qat_lr: float = 0.0001,
    qat_max_train_samples: int = 0,
    bench_min_runs: int = 200,
    bench_min_duration_s: float = 1.0,
    seed: int = 0,
    pipeline_run_id: str = "",
    pipeline_name: str = "edge-compression",
    experiment: str = "edgecompress",
    track: bool = True,
) -> bool:
    """Stops at the first trial that keeps accuracy within `max_drop` (absolute, or relative to the
    parent) AND beats the parent on `objective` (latency on `device_class`, or size) by more than
    `min_gain`. Returns whether one passed; when none did, `tuned_model` is the closest trial, marked
    `autotune_passed = false`, and the report says why each trial failed. Each trial is a child run
    in MLflow."""
    from edgecompress.autotune import AutotuneConfig, Criterion
    from edgecompress.step import Lineage
    from edgecompress.steps import autotune_step

    config = AutotuneConfig(
        Criterion(max_drop, relative),
        objective,
        device_class,
        farm_url or None,
        min_gain,
        calibration_samples,
        seed,
        include_mixed=include_mixed,
        include_qat=include_qat,
        qat_epochs=qat_epochs,
        qat_lr=qat_lr,
        qat_max_train_samples=qat_max_train_samples or None,
        bench_min_runs=bench_min_runs,
        bench_min_duration_s=bench_min_duration_s,
    )
    out = autotune_step(
        model.path,
        dataset.path,
        tuned_model.path,
        results.path,
        config,
        report.path,
        lineage_ctx=Lineage(pipeline_run_id, pipeline_name, experiment, track),
    )
    result = out["autotune_result"]
    tuned_model.metadata.update(
        {k: out.get(k) for k in ("technique", "onnx_bytes", "onnx_sha256", "dataset_sha256")}
    )
    tuned_model.metadata["mlflow_model_id"] = out.get("mlflow_model_id") or ""
    tuned_model.metadata["parent_model_id"] = out.get("parent_model_id") or ""
    tuned_model.metadata["autotune_passed"] = result["passed"]
    tuned_model.metadata["autotune_pick"] = result["pick"]
    results.metadata["passed"] = result["passed"]
    metrics.log_metric("trials", len(result["trials"]))
    for key, value in result["trials"][result["pick_index"]]["check"].items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            metrics.log_metric(key, value)
    return result["passed"]
