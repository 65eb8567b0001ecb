"""Quantization with ONNX Runtime (post-training) and torch (quantization-aware training).

Methods (`QuantConfig.method`):
- `static`: INT8 calibrated on a reproducible sample of the training split; QDQ or QOperator format,
  per-tensor or per-channel weights, MinMax / Entropy / Percentile calibration. On x86 and Arm CPUs it
  is the variant that is actually faster than float — not everywhere: with `objective="latency"` (the
  default) each op group stays INT8 only where the target's class measures it faster
  (`edgecompress.quantize.precision`). `weight_bits=4`: MatMul/Gemm weights as MatMulNBits (blocked
  int4, float activations), convolution weights as per-channel int4 QDQ.
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

from pathlib import Path
from typing import Any

import onnx

from edgecompress.data import Dataset
from edgecompress.errors import ModelError
from edgecompress.export import check_onnx_fits, validate_onnx
from edgecompress.quantize.config import QuantConfig
from edgecompress.quantize.mixed import quantize_mixed
from edgecompress.quantize.precision import quantize_static_measured
from edgecompress.quantize.ptq import convert_fp16, quantize_dynamic


def quantize_model(
    onnx_path: Path, dataset: Dataset, config: QuantConfig, module: Any = None
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """One entry point for every method; returns the model and method-specific details.

    `module` (the float torch module) is needed only for QAT.
    """
    config.validate()
    config = config.resolved()
    if config.method == "static":
        return quantize_static_measured(onnx_path, dataset, config)
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
    from edgecompress.quantize.qat import quantize_aware_training

    return quantize_aware_training(module, dataset, config)
