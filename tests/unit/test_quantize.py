import pytest

from edgecompress.data import load_dataset
from edgecompress.errors import ConfigError
from edgecompress.export import load_model_package
from edgecompress.quantize import StaticQuantConfig, calibration_sample, quantize_static


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
