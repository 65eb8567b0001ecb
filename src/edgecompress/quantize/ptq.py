"""Post-training quantization with ONNX Runtime: static (calibrated), dynamic, and FP16 storage."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgecompress.data import Dataset
from edgecompress.errors import ConfigError, ModelError
from edgecompress.export import check_onnx_fits, validate_onnx
from edgecompress.quantize.config import MIN_OPSET, QUANTIZABLE_OPS, QuantConfig

log = logging.getLogger(__name__)


def calibration_sample(dataset: Dataset, n: int, seed: int) -> np.ndarray:
    """A seeded draw from the training split (never from validation or test)."""
    if dataset.size("train") == 0:
        raise ConfigError("the calibration set is empty: the dataset's training split has no samples")
    return dataset.sample("train", n, seed)


class _Reader:
    """ONNX Runtime CalibrationDataReader over an in-memory array."""

    def __init__(self, input_name: str, x: np.ndarray, batch_size: int = 1) -> None:
        self._batches = iter([{input_name: x[i : i + batch_size]} for i in range(0, len(x), batch_size)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def preprocess(onnx_path: Path, out_path: Path) -> Path:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(onnx_path), str(out_path), skip_symbolic_shape=False)
    except Exception as exc:
        log.warning("ONNX Runtime pre-processing failed (%s); quantizing the model as it is", exc)
        out_path.write_bytes(Path(onnx_path).read_bytes())
    return out_path


def opset_of(proto: onnx.ModelProto) -> int:
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)


def check_quantizable(onnx_path: Path, dataset: Dataset | None = None) -> onnx.ModelProto:
    """The model loads, its opset is one ONNX Runtime can quantize, and the data fits its input."""
    proto = validate_onnx(onnx_path)
    if dataset is not None:
        check_onnx_fits(proto, dataset.input_shape, str(onnx_path))
    opset = opset_of(proto)
    if opset < MIN_OPSET:
        raise ModelError(
            f"{onnx_path} uses opset {opset}; ONNX Runtime quantization needs opset ≥ {MIN_OPSET} "
            "(13+ for per-channel QDQ): re-export the model with a newer opset"
        )
    return proto


def quantizable_nodes(onnx_path: Path) -> list[tuple[str, str]]:
    """(name, op type) of the nodes static quantization would turn into INT8 kernels, after pre-processing."""
    with tempfile.TemporaryDirectory(prefix="edgecompress-quant-") as tmp:
        proto = onnx.load(str(preprocess(Path(onnx_path), Path(tmp) / "pre.onnx")))
    return [(n.name, n.op_type) for n in proto.graph.node if n.op_type in QUANTIZABLE_OPS]


def activation_matmuls(proto: onnx.ModelProto) -> list[str]:
    """MatMul nodes whose inputs are both activations (attention: q x k^T and weights x v), not a
    weight (an initializer, a Constant, or either of those through Transpose/DequantizeLinear)."""
    constant = {i.name for i in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type == "Constant" or (
            node.op_type in ("Transpose", "DequantizeLinear", "Cast") and node.input[0] in constant
        ):
            constant.update(node.output)
    return [
        n.name for n in proto.graph.node if n.op_type == "MatMul" and not any(i in constant for i in n.input)
    ]


def quantize_static(onnx_path: Path, dataset: Dataset, config: QuantConfig | None = None) -> onnx.ModelProto:
    """Return the calibrated INT8 model (the caller decides where it goes, atomically). Attention
    MatMuls are quantized unless `attention_matmuls` is "float" (then they are excluded and their
    outputs are left unquantized, so ONNX Runtime cannot fuse them into QLinearMatMul)
    (`quantize_static_measured` decides "auto" by measurement; here it quantizes them, ONNX Runtime's
    default)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static as ort_quantize_static

    config = (config or QuantConfig()).resolved()
    config.validate()
    proto = check_quantizable(onnx_path, dataset)
    x = calibration_sample(dataset, config.calibration_samples, config.seed)
    qtype = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
    method = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[config.calibration_method]
    with tempfile.TemporaryDirectory(prefix="edgecompress-quant-") as tmp:
        pre = preprocess(Path(onnx_path), Path(tmp) / "pre.onnx")
        out = Path(tmp) / "int8.onnx"
        exclude = list(config.nodes_to_exclude)
        kept_float = activation_matmuls(onnx.load(str(pre))) if config.attention_matmuls == "float" else []
        exclude += [n for n in kept_float if n not in exclude]
        try:
            ort_quantize_static(
                str(pre),
                str(out),
                _Reader(proto.graph.input[0].name, x),
                quant_format=QuantFormat.QDQ if config.quant_format == "qdq" else QuantFormat.QOperator,
                per_channel=config.per_channel,
                reduce_range=config.reduce_range,
                activation_type=qtype[config.activation_type],
                weight_type=qtype[config.weight_type],
                calibrate_method=method,
                nodes_to_exclude=exclude or None,
                extra_options={"CalibTensorRangeSymmetric": config.activation_type == "int8"},
            )
        except Exception as exc:
            raise ModelError(
                f"ONNX Runtime static quantization of {onnx_path} failed: {str(exc)[:400]}"
            ) from exc
        return _unquantize_outputs(onnx.load(str(out)), kept_float)


def _unquantize_outputs(proto: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """Drop the QuantizeLinear -> DequantizeLinear pairs on the outputs of the named nodes.

    Excluding a node from ONNX Runtime's QDQ quantizer keeps its own weights float, but a quantized
    consumer (Transpose, Softmax …) still puts a Q/DQ pair on its output, and with DQ inputs too the
    runtime fuses the pattern into an int8 QLinearMatMul anyway: the node would not stay float.
    """
    graph = proto.graph
    outputs = {n.output[0]: n.name for n in graph.node if n.name in set(names)}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    graph_outputs = {o.name for o in graph.output}
    drop: list[onnx.NodeProto] = []
    for tensor in outputs:
        for q in [n for n in consumers.get(tensor, []) if n.op_type == "QuantizeLinear"]:
            dqs = consumers.get(q.output[0], [])
            if q.output[0] in graph_outputs or not all(d.op_type == "DequantizeLinear" for d in dqs):
                continue
            for dq in dqs:
                if dq.output[0] in graph_outputs:
                    break
            else:
                for dq in dqs:
                    for user in consumers.get(dq.output[0], []):
                        for k, name in enumerate(user.input):
                            if name == dq.output[0]:
                                user.input[k] = tensor
                drop += [q, *dqs]
    for node in drop:
        graph.node.remove(node)
    return proto


# the auto choice measures both variants on the target's emulated class in the decisions' minimum of
# interleaved rounds (edgecompress.stats.MIN_LATENCY_ROUNDS), each this long
ATTENTION_BENCH_MIN_RUNS, ATTENTION_BENCH_MIN_DURATION_S = 30, 0.3


def quantize_static_measured(
    onnx_path: Path, dataset: Dataset, config: QuantConfig
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """Static INT8 where attention MatMuls are quantized only if that is faster: with
    `attention_matmuls="auto"` and MatMuls of two activations in the graph, both variants are built
    and timed in interleaved rounds on the target's emulated device class; int8 is kept only where its
    speed-up's 95 % lower bound is above 1 (the decisions' rule, `edgecompress.stats`), float otherwise. The measurement is returned as the method's details. On x86 without
    VNNI, ONNX Runtime's u8 x s8 activation MatMul is slower than float more often than not (measured
    in benchmarks/architectures); on a board with dot-product instructions it can win."""
    from edgecompress.runtime.devices import emulated_classes

    with tempfile.TemporaryDirectory(prefix="edgecompress-quant-") as tmp:
        names = activation_matmuls(onnx.load(str(preprocess(Path(onnx_path), Path(tmp) / "pre.onnx"))))
    if config.attention_matmuls != "auto" or not names:
        return quantize_static(onnx_path, dataset, config), {}
    details: dict[str, Any] = {"nodes": len(names), "device_class": config.target}
    if config.target not in emulated_classes():
        log.info("attention MatMuls quantized: target %s cannot be emulated here to compare", config.target)
        return quantize_static(onnx_path, dataset, config), {
            "attention_matmuls": {**details, "chosen": "int8"}
        }
    from edgecompress.edge import Measurement

    variants = {
        v: quantize_static(onnx_path, dataset, replace(config, attention_matmuls=v))
        for v in ("int8", "float")
    }
    meter = Measurement(config.target, None, ATTENTION_BENCH_MIN_RUNS, ATTENTION_BENCH_MIN_DURATION_S)
    with tempfile.TemporaryDirectory(prefix="edgecompress-quant-") as tmp:
        paths = {v: Path(tmp) / f"{v}.onnx" for v in variants}
        for v, proto in variants.items():
            onnx.save(proto, str(paths[v]))
        speed = meter.compare(paths["float"], paths["int8"])
    chosen = "int8" if speed["timing_meaningful"] and speed["ci_low"] > 1.0 else "float"
    details.update(
        float_p50_ms=speed["latency_rounds"]["parent_ms"], int8_p50_ms=speed["latency_rounds"]["child_ms"],
        speedup=speed["speedup"], speedup_ci=[speed["ci_low"], speed["ci_high"]], emulated=speed["emulated"],
        chosen=chosen,
    )  # fmt: skip
    log.info(
        "attention MatMuls (%d) in %s: int8 speed-up %.2fx on %s",
        len(names),
        chosen,
        details["speedup"],
        config.target,
    )
    return variants[chosen], {"attention_matmuls": details}


def quantize_dynamic(
    onnx_path: Path, config: QuantConfig | None = None, dataset: Dataset | None = None
) -> onnx.ModelProto:
    """Weights INT8, activations quantized per batch at run time (no calibration data needed)."""
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as ort_quantize_dynamic

    config = (config or QuantConfig(method="dynamic")).resolved()
    config.validate()
    check_quantizable(onnx_path, dataset)
    with tempfile.TemporaryDirectory(prefix="edgecompress-quant-") as tmp:
        pre = preprocess(Path(onnx_path), Path(tmp) / "pre.onnx")
        out = Path(tmp) / "int8.onnx"
        try:
            ort_quantize_dynamic(
                str(pre),
                str(out),
                per_channel=config.per_channel,
                reduce_range=config.reduce_range,
                weight_type={"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}[config.weight_type],
                nodes_to_exclude=list(config.nodes_to_exclude) or None,
            )
        except Exception as exc:
            raise ModelError(
                f"ONNX Runtime dynamic quantization of {onnx_path} failed: {str(exc)[:400]}"
            ) from exc
        return onnx.load(str(out))


def convert_fp16(onnx_path: Path) -> onnx.ModelProto:
    """Float16 weight storage with float32 inputs, outputs and arithmetic.

    Every float32 initializer with more than 16 elements is stored as float16 and followed by a Cast
    to float32, which ONNX Runtime folds once when the session loads. Small tensors (biases, shapes)
    stay float32. The model is half the size; on a CPU without float16 kernels it runs as fast as
    float, and on an accelerator with them the casts can be dropped by the runtime.
    """
    proto = check_quantizable(onnx_path)
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    graph = model.graph
    casts, keep = [], []
    for init in graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT or int(np.prod(init.dims)) <= 16:
            keep.append(init)
            continue
        half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), f"{init.name}_fp16")
        keep.append(half)
        casts.append(
            helper.make_node(
                "Cast", [half.name], [init.name], to=onnx.TensorProto.FLOAT, name=f"{init.name}_to_fp32"
            )
        )
    if not casts:
        raise ModelError(f"{onnx_path} has no float32 weights to store as float16")
    del graph.initializer[:]
    graph.initializer.extend(keep)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)
    onnx.checker.check_model(model)
    return model
