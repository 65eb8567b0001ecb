"""KFP component: quantize a model (static/dynamic INT8, FP16, mixed precision or QAT) and check it
against its parent."""

from kfp import dsl

from edgecompress.settings import component_image


@dsl.component(base_image=component_image(), install_kfp_package=False)
def quantize(
    model: dsl.Input[dsl.Model],
    dataset: dsl.Input[dsl.Dataset],
    quantized_model: dsl.Output[dsl.Model],
    check: dsl.Output[dsl.Metrics],
    method: str = "static",
    calibration_samples: int = 256,
    calibration_method: str = "minmax",
    quant_format: str = "qdq",
    per_channel: bool = True,
    activation_type: str = "uint8",
    weight_type: str = "int8",
    reduce_range: str = "auto",
    nodes_to_exclude: str = "",
    mixed_exclude: int = 0,
    target_accuracy: float = -1.0,
    qat_epochs: int = 2,
    qat_lr: float = 0.0001,
    qat_max_train_samples: int = 0,
    seed: int = 0,
    device_class: str = "rpi4-emulated",
    farm_url: str = "",
    bench_min_runs: int = 200,
    bench_min_duration_s: float = 1.0,
    pipeline_run_id: str = "",
    pipeline_name: str = "edge-compression",
    experiment: str = "edgecompress",
    track: bool = True,
):
    """`method`: static | dynamic | fp16 | mixed | qat. Calibration samples are a seeded draw from the
    training split. `reduce_range`: auto (7-bit weights on x86 CPUs without VNNI) | on | off.
    `target_accuracy` < 0 and `qat_max_train_samples` = 0 mean unset. `check` holds the comparison with
    the parent on the validation split and the latency on `device_class` (empty: not measured)."""
    from edgecompress.quantize import QuantConfig
    from edgecompress.step import Lineage
    from edgecompress.steps import quantize_step

    extra = {} if reduce_range == "auto" else {"reduce_range": reduce_range == "on"}
    config = QuantConfig(
        method=method,
        calibration_samples=calibration_samples,
        calibration_method=calibration_method,
        quant_format=quant_format,
        per_channel=per_channel,
        activation_type=activation_type,
        weight_type=weight_type,
        seed=seed,
        nodes_to_exclude=tuple(n for n in nodes_to_exclude.split(",") if n),
        mixed_exclude=mixed_exclude,
        target_accuracy=target_accuracy if target_accuracy >= 0 else None,
        qat_epochs=qat_epochs,
        qat_lr=qat_lr,
        qat_max_train_samples=qat_max_train_samples or None,
        **extra,
    )
    info = quantize_step(
        model.path,
        dataset.path,
        quantized_model.path,
        config,
        Lineage(pipeline_run_id, pipeline_name, experiment, track),
        device_class or None,
        {"min_runs": bench_min_runs, "min_duration_s": bench_min_duration_s},
        farm_url or None,
    )
    quantized_model.metadata.update(
        {k: info.get(k) for k in ("technique", "onnx_bytes", "onnx_sha256", "dataset_sha256")}
    )
    quantized_model.metadata["mlflow_model_id"] = info.get("mlflow_model_id") or ""
    quantized_model.metadata["parent_model_id"] = info.get("parent_model_id") or ""
    quantized_model.metadata["top1_agreement"] = info["parent_agreement"]["top1_agreement"]
    for key, value in info["parent_agreement"].items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            check.log_metric(key, value)
