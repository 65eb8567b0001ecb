"""Which INT8 arithmetic this machine's accuracy evaluation of a model uses, and why.

ONNX Runtime's x86 kernels without VNNI multiply u8×s8 pairs with `vpmaddubsw`, whose int16 sum
saturates once weights use the full INT8 range. A model quantized for a board without that flaw (every
Arm board; x86 with VNNI) keeps full-range weights (`reduce_range` follows the target, never the build
CPU), so this machine's kernels would report this machine's accuracy, not the board's. Measured on the
digits CNN on an AVX2-only EPYC: top-1 agreement with the QDQ graph's own semantics 93.4 % (99.3 % with
the float parent once they are followed). For such a model an accuracy evaluation here runs the QDQ
graph as written (ONNX Runtime's `session.disable_quant_qdq`: DequantizeLinear → float op →
QuantizeLinear), which is the integer arithmetic a non-saturating kernel does, up to float rounding.

Latency always runs the real kernels, and `isa-check` runs the child on the board's ISA itself. A
QOperator model (QLinearConv, …) has no QDQ graph to follow: it is evaluated with the kernels and its
numerics say that they may saturate.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

KERNELS = "kernels"
REFERENCE_QDQ = "reference-qdq"
# 7-bit weights (reduce_range) keep every u8×s8 pair sum inside int16: 2 × 255 × 64 < 32767
_SAFE_WEIGHT = 64
_QOPERATOR_OPS = ("QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger")


@lru_cache(maxsize=1)
def host_int8_saturates() -> bool:
    """x86-64 without VNNI (AVX2 / AVX-512 `vpmaddubsw`): full-range INT8 weights overflow int16. From
    the CPU facts agents report (`runtime.facts.cpu_features`); unknown features: no."""
    from edgecompress.runtime.facts import cpu_features

    cpu = cpu_features()
    return cpu["isa"] == "x86_64" and cpu["int8_dot_product"] == "none"


def _full_range_int8(path: Path) -> tuple[bool, bool]:
    """(QDQ weights beyond 7 bits, integer operators whose weights are beyond 7 bits)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    graph = onnx.load_model(str(path), load_external_data=False).graph
    wide = {
        init.name
        for init in graph.initializer
        if init.data_type == onnx.TensorProto.INT8
        and init.data_location != onnx.TensorProto.EXTERNAL  # not loaded here: judged by the kernels
        and np.abs(numpy_helper.to_array(init).astype(np.int16)).max(initial=0) > _SAFE_WEIGHT
    }
    if not wide:
        return False, False
    qdq = any(n.op_type == "DequantizeLinear" and n.input[0] in wide for n in graph.node)
    operators = any(n.op_type in _QOPERATOR_OPS and wide & set(n.input) for n in graph.node)
    return qdq, operators


def evaluation_numerics(path: Path) -> dict[str, str]:
    """How this machine evaluates the model's accuracy: `{"numerics": kernels | reference-qdq, "why"}`."""
    if not host_int8_saturates():
        return {"numerics": KERNELS, "why": "this machine's INT8 kernels do not saturate"}
    qdq, operators = _full_range_int8(Path(path))
    if operators:
        return {
            "numerics": KERNELS,
            "why": "integer operators with full-range INT8 weights on x86 without VNNI: accuracy here may "
            "be lower than on a board whose kernels do not saturate (use QDQ, or isa-check)",
        }
    if qdq:
        return {
            "numerics": REFERENCE_QDQ,
            "why": "full-range INT8 weights (quantized for a board without saturation) on x86 without "
            "VNNI, whose u8×s8 kernels saturate: the QDQ graph is run as written",
        }
    return {"numerics": KERNELS, "why": "no full-range INT8 weights: this machine's kernels do not saturate"}
