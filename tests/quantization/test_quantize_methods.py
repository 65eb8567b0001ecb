"""Every quantization method on real data (digits), checked against its float parent."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from edgecompress.data import load_dataset
from edgecompress.edge import Measurement
from edgecompress.errors import ConfigError
from edgecompress.export import load_model_package, onnx_logits
from edgecompress.quantize import QuantConfig, quantize_model, quantize_step
from edgecompress.runtime.devices import needs_reduce_range
from edgecompress.stats import MIN_LATENCY_ROUNDS
from edgecompress.step import Lineage

FAST_BENCH = Measurement("rpi4-emulated", bench_min_runs=30, bench_min_duration_s=0.05)


def _ops(path):
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def _weight_bytes(path):
    return sum(numpy_helper.to_array(i).nbytes for i in onnx.load(str(path)).graph.initializer)


def _optimized_ops(path, tmp_path):
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    opts.log_severity_level = 3
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return _ops(tmp_path / "optimized.onnx")


def test_static_qdq_is_smaller_and_checked_against_parent_including_latency(
    trained_model, digits_artifact, tmp_path
):
    info = quantize_step(
        trained_model,
        digits_artifact,
        tmp_path / "q",
        QuantConfig(calibration_samples=64, objective="size"),  # the format, not the per-op choice
        Lineage(enabled=False),
        FAST_BENCH,
    ).info
    check = info["parent_agreement"]
    assert info["technique"] == "static-int8"
    assert {"QuantizeLinear", "DequantizeLinear"} <= _ops(tmp_path / "q" / "model.onnx")
    assert check["split"] == f"val[:{check['samples']}] (selection part)" and check["samples"] > 0
    assert check["top1_agreement"] > 0.9 and check["max_abs_logit_error"] > 0
    assert abs(check["accuracy_drop"] - (check["parent_accuracy"] - check["accuracy"])) < 1e-12
    assert check["onnx_bytes"] == (tmp_path / "q" / "model.onnx").stat().st_size
    assert check["emulated"] is True and check["p50_ms"] > 0 and check["parent_p50_ms"] > 0
    # the speed-up and its interval come from interleaved rounds (edgecompress.stats), not one pair
    assert check["speedup_ci_low"] <= check["speedup"] <= check["speedup_ci_high"]
    assert check["latency_rounds"] == MIN_LATENCY_ROUNDS and check["timing_meaningful"] is True
    # smaller: the weights themselves in a quarter of the space (graph overhead dominates tiny models)
    parent = load_model_package(trained_model)
    assert info["onnx_bytes"] < parent.info["onnx_bytes"]
    assert _weight_bytes(tmp_path / "q" / "model.onnx") < _weight_bytes(parent.onnx_path) / 3.3
    assert check["top1_agreement"] > 0.95


@pytest.mark.parametrize(
    ("config", "expected_ops"),
    [
        (
            QuantConfig(
                method="static",
                quant_format="qoperator",
                per_channel=False,
                calibration_method="entropy",
                calibration_samples=32,
                objective="size",  # these check formats: every group quantized, none measured
            ),
            {"QLinearConv"},
        ),
        (
            QuantConfig(
                method="static",
                calibration_method="percentile",
                activation_type="int8",
                calibration_samples=32,
                objective="size",
            ),
            {"QuantizeLinear", "DequantizeLinear"},
        ),
        (QuantConfig(method="dynamic"), {"DynamicQuantizeLinear"}),
    ],
    ids=["qoperator-per-tensor-entropy", "qdq-s8s8-percentile", "dynamic"],
)
def test_ptq_variants(trained_model, digits_artifact, config, expected_ops, tmp_path):
    info = quantize_step(trained_model, digits_artifact, tmp_path / "q", config, Lineage(enabled=False)).info
    assert expected_ops <= _ops(tmp_path / "q" / "model.onnx")
    assert info["quant_config"]["method"] == config.method
    assert info["parent_agreement"]["top1_agreement"] > 0.85


def test_fp16_halves_weights_and_keeps_float32_io(trained_model, digits_artifact, tmp_path):
    info = quantize_step(
        trained_model,
        digits_artifact,
        tmp_path / "h",
        QuantConfig(method="fp16"),
        Lineage(enabled=False),
    ).info
    proto = onnx.load(str(tmp_path / "h" / "model.onnx"))
    big = [i for i in proto.graph.initializer if np.prod(i.dims) > 16]
    assert big and all(i.data_type == onnx.TensorProto.FLOAT16 for i in big)
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert proto.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert info["parent_agreement"]["top1_agreement"] >= 0.99
    assert info["parent_agreement"]["max_abs_logit_error"] < 0.05


def test_mixed_precision_keeps_the_most_sensitive_node_in_float(trained_model, digits_artifact):
    ds = load_dataset(digits_artifact)
    onnx_path = load_model_package(trained_model).onnx_path
    proto, details = quantize_model(
        onnx_path, ds, QuantConfig(method="mixed", mixed_exclude=1, calibration_samples=32, probe_samples=200)
    )
    ranking = details["sensitivity"]
    assert [r["recovered"] for r in ranking] == sorted((r["recovered"] for r in ranking), reverse=True)
    assert details["excluded_nodes"] == [ranking[0]["node"]]
    excluded = next(n for n in proto.graph.node if n.name == ranking[0]["node"])
    producers = {o: n.op_type for n in proto.graph.node for o in n.output}
    assert producers.get(excluded.input[1]) != "DequantizeLinear"  # float weights, not quantized ones


def test_qat_exports_qdq_that_runs_as_int8_and_matches_torch(trained_model, digits_artifact, tmp_path):
    ds = load_dataset(digits_artifact)
    package = load_model_package(trained_model)
    config = QuantConfig(method="qat", qat_epochs=1, qat_lr=3e-4, calibration_samples=64)
    proto, details = quantize_model(package.onnx_path, ds, config, package.load_module())
    path = tmp_path / "qat.onnx"
    onnx.save(proto, str(path))
    assert {"QuantizeLinear", "DequantizeLinear"} <= _ops(path)
    int8 = [i for i in proto.graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert len(int8) >= 3  # every conv/linear weight stored as INT8
    assert {"QLinearConv"} <= _optimized_ops(path, tmp_path)  # ONNX Runtime runs it with INT8 kernels
    assert details["torch_vs_onnx_top1_agreement"] >= 0.98
    x, y = ds.split("val")
    float_acc = np.mean(onnx_logits(package.onnx_path, x).argmax(1) == y)
    assert np.mean(onnx_logits(path, x).argmax(1) == y) > float_acc - 0.05


def test_reduce_range_default_follows_the_target_profile_not_this_cpu():
    """Issue 14 changed the rule: 'auto' is decided by the target device class (tests/unit/test_profiles.py
    shows two build CPUs giving the same model), no longer by the CPU that quantizes."""
    assert QuantConfig().reduce_range is None
    assert QuantConfig().resolved().reduce_range == needs_reduce_range(QuantConfig().target)


@pytest.mark.parametrize(
    "setting",
    [
        {"per_channel": False},
        {"activation_type": "int8"},
        {"weight_type": "uint8"},
        {"quant_format": "qoperator"},
    ],
)
def test_qat_refuses_settings_its_fixed_scheme_would_ignore(setting):
    """QAT's fake-quant modules fix the scheme; a config asking for another one is an error, not a
    silently different model (e.g. the S8S8 benchmark row's settings handed to QAT)."""
    with pytest.raises(ConfigError, match="QAT exports"):
        QuantConfig(method="qat", **setting).validate()
    QuantConfig(method="qat").validate()  # the scheme it does export
