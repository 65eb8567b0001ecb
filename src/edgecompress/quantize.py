"""Quantization with ONNX Runtime (post-training) and torch (quantization-aware training).

Methods (`QuantConfig.method`):
- `static`: INT8 calibrated on a reproducible sample of the training split; QDQ or QOperator format,
  per-tensor or per-channel weights, MinMax / Entropy / Percentile calibration. On x86 and Arm CPUs it
  is the variant that is actually faster than float.
- `dynamic`: weights INT8, activations quantized at run time; meant for Linear/RNN-heavy models
  (dynamic quantization of convolutions is several times *slower* than float here, DESIGN.md).
- `fp16`: weights stored as float16 (half the size); ONNX Runtime's CPU provider has no float16
  convolution kernels on x86, so they are cast back to float32 once, when the session loads:
  inputs, outputs and arithmetic stay float32.
- `mixed`: static INT8 with the most sensitive nodes left in float. Sensitivity is measured by
  accuracy probing: quantize everything except one node, see how much accuracy comes back.
- `qat`: fake-quant fine-tuning in torch (edgecompress.qat), exported as a QDQ model.

Pre-processing (shape inference and graph optimisation) runs first, as ONNX Runtime recommends.
Every function returns an `onnx.ModelProto`; callers write it atomically.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgecompress.data import Dataset
from edgecompress.errors import ConfigError, ModelError
from edgecompress.export import check_onnx_fits, onnx_logits, validate_onnx

log = logging.getLogger(__name__)

METHODS = ("static", "dynamic", "fp16", "mixed", "qat")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
QUANT_FORMATS = ("qdq", "qoperator")
QUANT_TYPES = ("int8", "uint8")
QUANTIZABLE_OPS = ("Conv", "Gemm", "MatMul")
MIN_OPSET = 10  # ONNX Runtime's quantizer; per-channel QDQ needs 13
TECHNIQUES = {
    "static": "static-int8",
    "dynamic": "dynamic-int8",
    "fp16": "fp16",
    "mixed": "mixed-int8",
    "qat": "qat-int8",
}


def cpu_needs_reduce_range() -> bool:
    """x86-64 CPUs with AVX2/AVX-512 but no VNNI multiply u8×s8 pairs into a saturating int16
    (vpmaddubsw): full-range INT8 weights overflow and accuracy silently drops (measured here: a
    5-point loss on a small CNN, and QDQ kernels disagreeing with the QDQ graph's own semantics).
    7-bit weights (`reduce_range`) avoid it; ONNX Runtime's documentation recommends the same."""
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return not any(f in flags for f in ("avx512_vnni", "avx_vnni", "amx_int8"))


@dataclass
class QuantConfig:
    method: str = "static"
    calibration_samples: int = 256
    calibration_method: str = "minmax"
    quant_format: str = "qdq"
    per_channel: bool = True
    activation_type: str = "uint8"
    weight_type: str = "int8"
    reduce_range: bool = field(default_factory=cpu_needs_reduce_range)
    nodes_to_exclude: tuple[str, ...] = ()
    seed: int = 0
    # mixed precision: keep this many of the most sensitive nodes in float (0: as many as needed to
    # reach `target_accuracy` on the probe set; at least one node stays quantized)
    mixed_exclude: int = 0
    target_accuracy: float | None = None
    probe_samples: int = 1000
    # quantization-aware training
    qat_epochs: int = 2
    qat_lr: float = 1e-4
    qat_batch_size: int = 128
    qat_max_train_samples: int | None = None
    qat_distill: float = 0.5  # weight of the distillation loss from the float parent (0: labels only)
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"quantization method {self.method!r} not in {METHODS}")
        if self.calibration_samples < 1:
            raise ConfigError(f"calibration_samples must be ≥ 1, got {self.calibration_samples}")
        if self.calibration_method not in CALIBRATION_METHODS:
            raise ConfigError(f"calibration_method {self.calibration_method!r} not in {CALIBRATION_METHODS}")
        if self.quant_format not in QUANT_FORMATS:
            raise ConfigError(f"quant_format {self.quant_format!r} not in {QUANT_FORMATS}")
        for t in (self.activation_type, self.weight_type):
            if t not in QUANT_TYPES:
                raise ConfigError(f"quantization type {t!r} not in {QUANT_TYPES}")
        if self.mixed_exclude < 0 or self.probe_samples < 1:
            raise ConfigError(
                f"mixed_exclude must be ≥ 0 and probe_samples ≥ 1, got {self.mixed_exclude}, {self.probe_samples}"
            )
        if self.target_accuracy is not None and not 0 <= self.target_accuracy <= 1:
            raise ConfigError(f"target_accuracy must be in [0, 1], got {self.target_accuracy}")
        if self.qat_epochs < 1 or not self.qat_lr > 0 or not 0 <= self.qat_distill <= 1:
            raise ConfigError(
                f"QAT needs epochs ≥ 1, lr > 0 and distill in [0, 1]; got {self.qat_epochs}, {self.qat_lr}, {self.qat_distill}"
            )

    @property
    def technique(self) -> str:
        return TECHNIQUES[self.method]

    def label(self) -> str:
        """A short human name, e.g. `static qdq per-channel minmax`."""
        if self.method in ("dynamic", "fp16"):
            return self.method
        if self.method == "qat":
            return f"qat {self.qat_epochs} ep"
        grain = "per-channel" if self.per_channel else "per-tensor"
        text = f"{self.method} {self.quant_format} {grain} {self.calibration_method}"
        if self.method == "mixed" and self.mixed_exclude:
            text += f" (-{self.mixed_exclude})"
        return text

    def as_params(self) -> dict[str, Any]:
        params = asdict(self)
        params["nodes_to_exclude"] = ",".join(self.nodes_to_exclude)
        params.pop("extra")
        return params


# Compatibility name: the static INT8 configuration is the default QuantConfig.
StaticQuantConfig = QuantConfig


def calibration_sample(dataset: Dataset, n: int, seed: int) -> np.ndarray:
    """A seeded draw from the training split (never from validation or test)."""
    x, _ = dataset.split("train")
    if len(x) == 0:
        raise ConfigError("the calibration set is empty: the dataset's training split has no samples")
    idx = np.sort(np.random.default_rng(seed).choice(len(x), size=min(n, len(x)), replace=False))
    return x[idx]


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


def quantize_static(onnx_path: Path, dataset: Dataset, config: QuantConfig | None = None) -> onnx.ModelProto:
    """Return the calibrated INT8 model (the caller decides where it goes, atomically)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static as ort_quantize_static

    config = config or QuantConfig()
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
        try:
            ort_quantize_static(
                str(pre), str(out), _Reader(proto.graph.input[0].name, x),
                quant_format=QuantFormat.QDQ if config.quant_format == "qdq" else QuantFormat.QOperator,
                per_channel=config.per_channel, reduce_range=config.reduce_range,
                activation_type=qtype[config.activation_type], weight_type=qtype[config.weight_type],
                calibrate_method=method, nodes_to_exclude=list(config.nodes_to_exclude) or None,
                extra_options={"CalibTensorRangeSymmetric": config.activation_type == "int8"},
            )  # fmt: skip
        except Exception as exc:
            raise ModelError(
                f"ONNX Runtime static quantization of {onnx_path} failed: {str(exc)[:400]}"
            ) from exc
        return onnx.load(str(out))


def quantize_dynamic(
    onnx_path: Path, config: QuantConfig | None = None, dataset: Dataset | None = None
) -> onnx.ModelProto:
    """Weights INT8, activations quantized per batch at run time (no calibration data needed)."""
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as ort_quantize_dynamic

    config = config or QuantConfig(method="dynamic")
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


# --- mixed precision ------------------------------------------------------------------------------


def probe_accuracy(proto_or_path: onnx.ModelProto | Path, dataset: Dataset, samples: int) -> float:
    """Accuracy on the first `samples` of the validation split (selection, never the test split)."""
    x, y = dataset.split("val", samples)
    with tempfile.TemporaryDirectory(prefix="edgecompress-probe-") as tmp:
        path = proto_or_path
        if isinstance(proto_or_path, onnx.ModelProto):
            path = Path(tmp) / "m.onnx"
            onnx.save_model(proto_or_path, str(path))
        return float(np.mean(onnx_logits(Path(path), x).argmax(1) == y))


def node_sensitivity(onnx_path: Path, dataset: Dataset, config: QuantConfig) -> list[dict[str, Any]]:
    """Per-node sensitivity by accuracy probing, most sensitive first.

    For each quantizable node: the probe accuracy of the static INT8 model with only that node left
    in float. `recovered` is how much accuracy that buys over quantizing everything.
    """
    base_cfg = replace(config, method="static", nodes_to_exclude=())
    full = probe_accuracy(quantize_static(onnx_path, dataset, base_cfg), dataset, config.probe_samples)
    rows = []
    for name, op in quantizable_nodes(onnx_path):
        acc = probe_accuracy(
            quantize_static(onnx_path, dataset, replace(base_cfg, nodes_to_exclude=(name,))),
            dataset,
            config.probe_samples,
        )
        rows.append(
            {
                "node": name,
                "op_type": op,
                "probe_accuracy": acc,
                "recovered": acc - full,
                "all_quantized_accuracy": full,
            }
        )
    return sorted(rows, key=lambda r: -r["recovered"])


def quantize_mixed(
    onnx_path: Path, dataset: Dataset, config: QuantConfig
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """Static INT8 with the most sensitive nodes kept in float; returns the model and what was excluded."""
    config.validate()
    check_quantizable(onnx_path, dataset)
    ranking = node_sensitivity(onnx_path, dataset, config)
    if not ranking:
        raise ModelError(f"{onnx_path} has no quantizable nodes ({', '.join(QUANTIZABLE_OPS)})")
    if config.mixed_exclude:
        counts = [min(config.mixed_exclude, len(ranking))]
    else:
        counts = list(range(1, max(1, len(ranking) - 1) + 1))
    excluded: tuple[str, ...] = ()
    proto, acc = None, float("nan")
    for k in counts:
        excluded = tuple(r["node"] for r in ranking[:k])
        proto = quantize_static(
            onnx_path, dataset, replace(config, method="static", nodes_to_exclude=excluded)
        )
        acc = probe_accuracy(proto, dataset, config.probe_samples)
        if config.target_accuracy is None or acc >= config.target_accuracy:
            break
    details = {"excluded_nodes": list(excluded), "probe_accuracy": acc, "sensitivity": ranking}
    return proto, details


def quantize_model(
    onnx_path: Path, dataset: Dataset, config: QuantConfig, module: Any = None
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """One entry point for every method; returns the model and method-specific details.

    `module` (the float torch module) is needed only for QAT.
    """
    config.validate()
    if config.method == "static":
        return quantize_static(onnx_path, dataset, config), {}
    if config.method == "dynamic":
        return quantize_dynamic(onnx_path, config, dataset), {}
    if config.method == "fp16":
        check_onnx_fits(validate_onnx(onnx_path), dataset.input_shape, str(onnx_path))
        return convert_fp16(onnx_path), {}
    if config.method == "mixed":
        return quantize_mixed(onnx_path, dataset, config)
    if module is None:
        raise ModelError(
            f"QAT needs the float torch module (module.pt) beside {onnx_path}; this model is ONNX-only"
        )
    from edgecompress.qat import quantize_aware_training

    return quantize_aware_training(module, dataset, config)


# --- checks against the parent -------------------------------------------------------------------


def latency_on(
    onnx_path: Path, device_class: str, settings: dict[str, Any] | None = None, farm_url: str | None = None
) -> dict[str, Any]:
    """p50/p90 latency of one model on one device class (a farm device, or local emulation)."""
    from edgecompress.edge import edge_benchmark

    r = edge_benchmark(Path(onnx_path), [device_class], settings, farm_url)[device_class]
    return {
        "p50_ms": r["latency_ms"]["p50"],
        "p90_ms": r["latency_ms"]["p90"],
        "emulated": bool(r.get("emulated")),
        "samples_ms": r.get("samples_ms", []),
    }


def check_against_parent(
    parent_onnx: Path,
    child_onnx: Path,
    dataset: Dataset,
    split: str = "val",
    device_class: str | None = None,
    bench_settings: dict[str, Any] | None = None,
    farm_url: str | None = None,
    parent_latency: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Accuracy, output agreement, size and (with a device class) latency of a child next to its parent."""
    x, y = dataset.split(split)
    if len(x) == 0:
        raise ConfigError(f"the dataset's {split} split is empty: nothing to check the quantized model on")
    a, b = onnx_logits(Path(parent_onnx), x), onnx_logits(Path(child_onnx), x)
    parent_bytes, child_bytes = Path(parent_onnx).stat().st_size, Path(child_onnx).stat().st_size
    check: dict[str, Any] = {
        "split": split, "samples": int(len(x)),
        "parent_accuracy": float(np.mean(a.argmax(1) == y)), "accuracy": float(np.mean(b.argmax(1) == y)),
        "top1_agreement": float(np.mean(a.argmax(1) == b.argmax(1))),
        "max_abs_logit_error": float(np.max(np.abs(a - b))),
        "parent_onnx_bytes": parent_bytes, "onnx_bytes": child_bytes, "size_ratio": parent_bytes / child_bytes,
    }  # fmt: skip
    check["accuracy_drop"] = check["parent_accuracy"] - check["accuracy"]
    if device_class:
        parent_latency = parent_latency or latency_on(parent_onnx, device_class, bench_settings, farm_url)
        child = latency_on(child_onnx, device_class, bench_settings, farm_url)
        check.update(
            {
                "device_class": device_class,
                "emulated": child["emulated"],
                "parent_p50_ms": parent_latency["p50_ms"],
                "parent_p90_ms": parent_latency["p90_ms"],
                "p50_ms": child["p50_ms"],
                "p90_ms": child["p90_ms"],
                "speedup": parent_latency["p50_ms"] / child["p50_ms"],
            }
        )
    return check
