"""Quantization settings: the methods, and `QuantConfig`, the one definition of every setting."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from edgecompress.errors import ConfigError
from edgecompress.params import Codec
from edgecompress.runtime.devices import DEFAULT_DEVICE_CLASS

METHODS = ("static", "dynamic", "fp16", "mixed", "qat")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
QUANT_FORMATS = ("qdq", "qoperator")
QUANT_TYPES = ("int8", "uint8")
ATTENTION_MATMULS = ("auto", "int8", "float")
OBJECTIVES = ("latency", "size")
WEIGHT_BITS = (8, 4)
INT4_BLOCK_SIZES = (16, 32, 64, 128, 256)
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
    7-bit weights (`reduce_range`) avoid it; ONNX Runtime's documentation recommends the same. A fact
    of this CPU, never what a model is quantized for (the target's profile decides that)."""
    from edgecompress.runtime.numerics import host_int8_saturates

    return host_int8_saturates()


def _reduce_range_from_flat(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if value not in ("auto", "on", "off"):
        raise ConfigError(f"reduce_range must be auto, on or off, got {value!r}")
    return None if value == "auto" else value == "on"


# auto (None): decided by the target device class's profile, never by the CPU that quantizes.
REDUCE_RANGE = Codec(str, _reduce_range_from_flat, lambda v: "auto" if v is None else ("on" if v else "off"))


# repr of configs already validated (QuantConfig.validate)
_VALIDATED: dict[str, None] = {}


@dataclass
class QuantConfig:
    method: str = field(default="static", metadata={"help": "quantization method", "choices": METHODS})
    calibration_samples: int = field(
        default=256, metadata={"help": "calibration samples, a seeded draw from the training split"}
    )
    calibration_method: str = field(
        default="minmax", metadata={"help": "static calibration", "choices": CALIBRATION_METHODS}
    )
    quant_format: str = field(default="qdq", metadata={"help": "static format", "choices": QUANT_FORMATS})
    per_channel: bool = field(default=True, metadata={"help": "per-channel weights (else per-tensor)"})
    activation_type: str = field(
        default="uint8", metadata={"help": "activation type", "choices": QUANT_TYPES}
    )
    weight_type: str = field(default="int8", metadata={"help": "weight type", "choices": QUANT_TYPES})
    target: str = field(
        default=DEFAULT_DEVICE_CLASS,
        metadata={"help": "device class the model is quantized for: its profile decides reduce_range auto"},
    )
    reduce_range: bool | None = field(
        default=None,
        metadata={
            "codec": REDUCE_RANGE,
            "choices": ("auto", "on", "off"),
            "help": "7-bit weights; auto: from the target's profile (on for x86 targets without VNNI)",
        },
    )
    nodes_to_exclude: tuple[str, ...] = field(
        default=(), metadata={"help": "comma-separated node names kept in float"}
    )
    attention_matmuls: str = field(
        default="auto",
        metadata={
            "help": "static: MatMuls of two activations (attention scores, weights x values) in int8, in "
            "float, or auto: both measured on the target's emulated class, the faster kept",
            "choices": ATTENTION_MATMULS,
        },
    )
    objective: str = field(
        default="size",
        metadata={
            "help": "static: latency: each op group (conv, depthwise conv, MatMul/Gemm, attention MatMuls, "
            "SE blocks, other) is quantized only where the target's emulated class measures it faster "
            "(speed-up lower bound > 1, interleaved rounds) and its accuracy cost is within "
            "per_op_max_drop, float elsewhere, and the child is kept only if faster than its parent; "
            "size (the default): every group quantized, speed checked only for an auto attention-MatMul "
            "choice (the pipeline's gate still rejects a child that is not faster)",
            "choices": OBJECTIVES,
        },
    )
    per_op_max_drop: float = field(
        default=0.01,
        metadata={
            "help": "objective latency: largest accuracy drop (selection part) a quantized op group may cost"
        },
    )
    weight_bits: int = field(
        default=8,
        metadata={
            "help": "static/mixed: weight bits, 8 or 4 (4: MatMul/Gemm as MatMulNBits blocked int4, "
            "convolutions as per-channel int4 QDQ weights)"
        },
    )
    int4_block_size: int = field(
        default=32, metadata={"help": "weight_bits 4: MatMulNBits block size along the input dimension"}
    )
    seed: int = field(default=0, metadata={"help": "seed of the calibration draw and of QAT"})
    # mixed precision: keep this many of the most sensitive nodes in float (0: as many as needed to
    # reach `target_accuracy` on the probe set; at least one node stays quantized)
    mixed_exclude: int = field(
        default=0,
        metadata={"help": "mixed: most sensitive nodes kept in float (0: as many as target_accuracy needs)"},
    )
    target_accuracy: float | None = field(
        default=None, metadata={"help": "mixed: probe accuracy to reach (-1: unset)"}
    )
    probe_samples: int = field(default=1000, metadata={"help": "mixed: validation samples of the probe"})
    # quantization-aware training
    qat_epochs: int = field(default=2, metadata={"help": "QAT fine-tuning epochs"})
    qat_lr: float = field(default=1e-4, metadata={"help": "QAT learning rate"})
    qat_batch_size: int = field(default=128, metadata={"help": "QAT batch size"})
    qat_max_train_samples: int | None = field(
        default=None, metadata={"help": "QAT: at most this many training samples (0: all)"}
    )
    qat_distill: float = field(
        default=0.5, metadata={"help": "QAT: weight of distillation from the float parent (0: labels only)"}
    )
    extra: dict[str, Any] = field(default_factory=dict, metadata={"flat": False})

    def validate(self) -> None:
        """Raise ConfigError on a bad setting. One quantize call validates its config once: every
        entry point (step, `quantize_model`, `quantize_static`, …) calls this, and a config whose
        values were validated before (the same values; `reduce_range`, which is not checked, aside: a
        resolved copy) is not checked again."""
        key = repr(replace(self, reduce_range=None))
        if key in _VALIDATED:
            return
        self._check()
        _VALIDATED[key] = None
        while len(_VALIDATED) > 256:  # remembers the recent ones (an autotune run tries ~10 configs)
            _VALIDATED.pop(next(iter(_VALIDATED)))

    def _check(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"quantization method {self.method!r} not in {METHODS}")
        from edgecompress.runtime.devices import quantization_target

        quantization_target(self.target)  # an unknown target fails here, before any work
        if self.calibration_samples < 1:
            raise ConfigError(f"calibration_samples must be ≥ 1, got {self.calibration_samples}")
        if self.calibration_method not in CALIBRATION_METHODS:
            raise ConfigError(f"calibration_method {self.calibration_method!r} not in {CALIBRATION_METHODS}")
        if self.attention_matmuls not in ATTENTION_MATMULS:
            raise ConfigError(f"attention_matmuls {self.attention_matmuls!r} not in {ATTENTION_MATMULS}")
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"objective {self.objective!r} not in {OBJECTIVES}")
        if not 0 <= self.per_op_max_drop < 1:
            raise ConfigError(f"per_op_max_drop must be in [0, 1), got {self.per_op_max_drop}")
        if self.weight_bits not in WEIGHT_BITS:
            raise ConfigError(f"weight_bits must be one of {WEIGHT_BITS}, got {self.weight_bits}")
        if self.int4_block_size not in INT4_BLOCK_SIZES:
            raise ConfigError(
                f"int4_block_size must be one of {INT4_BLOCK_SIZES}, got {self.int4_block_size}"
            )
        if self.weight_bits == 4 and (self.method not in ("static", "mixed") or self.quant_format != "qdq"):
            raise ConfigError(
                f"weight_bits=4 needs method static or mixed with quant_format qdq (ONNX Runtime runs int4 "
                f"weights as MatMulNBits and int4 QDQ), got method {self.method!r}, {self.quant_format!r}"
            )
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
        if self.method == "qat":
            # QAT's scheme is fixed by its fake-quant modules (qat.py): refuse settings it would ignore
            scheme = {
                "per_channel": True,
                "activation_type": "uint8",
                "weight_type": "int8",
                "quant_format": "qdq",
            }
            ignored = {k: getattr(self, k) for k, want in scheme.items() if getattr(self, k) != want}
            if ignored:
                raise ConfigError(
                    f"QAT exports per-channel INT8 weights, UINT8 activations, QDQ; it cannot honour {ignored}"
                )
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
        if self.weight_bits == 4:
            text += f" int4 weights (block {self.int4_block_size})"
        return text

    def resolved(self) -> QuantConfig:
        """The config with `reduce_range` decided for its target (auto -> the target's profile)."""
        if self.reduce_range is not None:
            return self
        from edgecompress.runtime.devices import needs_reduce_range

        return replace(self, reduce_range=needs_reduce_range(self.target))

    def as_params(self) -> dict[str, Any]:
        params = asdict(self)
        params["nodes_to_exclude"] = ",".join(self.nodes_to_exclude)
        params.pop("extra")
        return params


# Compatibility name: the static INT8 configuration is the default QuantConfig.
StaticQuantConfig = QuantConfig
