"""Quantization with ONNX Runtime (post-training) and torch (quantization-aware training), and the
accuracy-aware auto-tuner that picks among them.

- `config`: `QuantConfig`, the one definition of every quantization setting, and the methods.
- `ptq`: static (calibrated), dynamic and FP16; `mixed`: static with sensitive nodes left in float;
  `qat`: fake-quant fine-tuning exported as QDQ; `methods.quantize_model`: one entry point for all.
- `precision`: static quantization per op group by measured cost (objective latency: INT8 only where
  the target's class measures it faster; never a child slower than its parent) or everything (size).
- `check`: the child next to its parent (accuracy, agreement, size, latency).
- `autotune`: cheap-to-expensive trials until one keeps accuracy and beats the parent.
- `step`: the quantize and autotune pipeline steps.
"""

from edgecompress.quantize.autotune import AutotuneConfig, Criterion, autotune
from edgecompress.quantize.check import check_against_parent
from edgecompress.quantize.config import (
    CALIBRATION_METHODS,
    METHODS,
    QUANT_FORMATS,
    QUANT_TYPES,
    TECHNIQUES,
    QuantConfig,
    StaticQuantConfig,
    cpu_needs_reduce_range,
)
from edgecompress.quantize.methods import quantize_model
from edgecompress.quantize.mixed import node_sensitivity, probe_accuracy, quantize_mixed
from edgecompress.quantize.precision import op_groups, quantize_per_op, quantize_static_measured
from edgecompress.quantize.ptq import (
    calibration_sample,
    check_quantizable,
    convert_fp16,
    quantizable_nodes,
    quantize_dynamic,
    quantize_static,
)
from edgecompress.quantize.step import autotune_step, quantize_step

__all__ = [
    "CALIBRATION_METHODS",
    "METHODS",
    "QUANT_FORMATS",
    "QUANT_TYPES",
    "TECHNIQUES",
    "AutotuneConfig",
    "Criterion",
    "QuantConfig",
    "StaticQuantConfig",
    "autotune",
    "autotune_step",
    "calibration_sample",
    "check_against_parent",
    "check_quantizable",
    "convert_fp16",
    "cpu_needs_reduce_range",
    "node_sensitivity",
    "op_groups",
    "probe_accuracy",
    "quantizable_nodes",
    "quantize_dynamic",
    "quantize_mixed",
    "quantize_per_op",
    "quantize_model",
    "quantize_static",
    "quantize_static_measured",
    "quantize_step",
]
