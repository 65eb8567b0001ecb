import onnx
import pytest
from onnx import numpy_helper

from edgecompress.data import load_dataset
from edgecompress.errors import ConfigError
from edgecompress.export import load_model_package
from edgecompress.quantize import StaticQuantConfig, calibration_sample, quantize_static, quantize_step
from edgecompress.step import Lineage


def test_static_int8_is_qdq_smaller_and_agrees(trained_model, digits_artifact, tmp_path):
    info = quantize_step(
        trained_model,
        digits_artifact,
        tmp_path / "q",
        StaticQuantConfig(calibration_samples=64, objective="size"),  # the format, not the per-op choice
        Lineage(enabled=False),
    ).info
    proto = onnx.load(str(tmp_path / "q" / "model.onnx"))
    ops = {n.op_type for n in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    parent = load_model_package(trained_model)
    assert info["onnx_bytes"] < parent.info["onnx_bytes"]

    def weight_bytes(path):
        return sum(numpy_helper.to_array(i).nbytes for i in onnx.load(str(path)).graph.initializer)

    # the weights themselves are stored in a quarter of the space (graph overhead dominates tiny models)
    assert weight_bytes(tmp_path / "q" / "model.onnx") < weight_bytes(parent.onnx_path) / 3.3
    assert info["parent_agreement"]["top1_agreement"] > 0.95
    assert info["technique"] == "static-int8"


def test_calibration_draw_is_reproducible_and_from_train(digits_artifact):
    ds = load_dataset(digits_artifact)
    a, b = calibration_sample(ds, 32, seed=3), calibration_sample(ds, 32, seed=3)
    assert (a == b).all() and len(a) == 32


def test_bad_quantization_settings(trained_model, digits_artifact):
    ds = load_dataset(digits_artifact)
    onnx_path = load_model_package(trained_model).onnx_path
    with pytest.raises(ConfigError, match="calibration_samples"):
        quantize_static(onnx_path, ds, StaticQuantConfig(calibration_samples=0))
    with pytest.raises(ConfigError, match="calibration_method"):
        quantize_static(onnx_path, ds, StaticQuantConfig(calibration_method="magic"))
