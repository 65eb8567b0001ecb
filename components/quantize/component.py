"""KFP component: post-training static INT8 quantization with ONNX Runtime (QDQ, calibrated)."""

from kfp import dsl

from edgecompress.settings import component_image


@dsl.component(base_image=component_image(), install_kfp_package=False)
def quantize(
    model: dsl.Input[dsl.Model],
    dataset: dsl.Input[dsl.Dataset],
    quantized_model: dsl.Output[dsl.Model],
    calibration_samples: int = 256,
    calibration_method: str = "minmax",
    quant_format: str = "qdq",
    per_channel: bool = True,
    activation_type: str = "uint8",
    weight_type: str = "int8",
    seed: int = 0,
    pipeline_run_id: str = "",
    pipeline_name: str = "edge-compression",
    experiment: str = "edgecompress",
    track: bool = True,
):
    """Calibration samples are a seeded draw from the training split."""
    from edgecompress.quantize import StaticQuantConfig
    from edgecompress.steps import Lineage, quantize_step

    config = StaticQuantConfig(
        calibration_samples=calibration_samples,
        calibration_method=calibration_method,
        quant_format=quant_format,
        per_channel=per_channel,
        activation_type=activation_type,
        weight_type=weight_type,
        seed=seed,
    )
    info = quantize_step(
        model.path,
        dataset.path,
        quantized_model.path,
        config,
        Lineage(pipeline_run_id, pipeline_name, experiment, track),
    )
    quantized_model.metadata.update(
        {k: info.get(k) for k in ("technique", "onnx_bytes", "onnx_sha256", "dataset_sha256")}
    )
    quantized_model.metadata["mlflow_model_id"] = info.get("mlflow_model_id") or ""
    quantized_model.metadata["parent_model_id"] = info.get("parent_model_id") or ""
    quantized_model.metadata["top1_agreement"] = info["parent_agreement"]["top1_agreement"]
