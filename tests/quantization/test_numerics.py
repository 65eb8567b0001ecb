"""How this machine judges an INT8 child's accuracy (edgecompress.runtime.numerics): by the arithmetic
the child's board does, not by kernels of its own that would saturate the child's full-range weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edgecompress.data import load_dataset
from edgecompress.export import load_model_package, onnx_logits
from edgecompress.quantize import StaticQuantConfig, quantize_step
from edgecompress.runtime import numerics
from edgecompress.step import Lineage


@pytest.fixture(scope="module")
def children(trained_model, digits_artifact, tmp_path_factory) -> dict[str, Path]:
    """The same parent quantized for a Pi 4 (full-range weights) and with 7-bit weights."""
    out = {}
    for name, reduce_range, fmt in (
        ("full", False, "qdq"),
        ("seven_bit", True, "qdq"),
        ("qop", False, "qoperator"),
    ):
        path = tmp_path_factory.mktemp("numerics") / name
        config = StaticQuantConfig(
            calibration_samples=64, reduce_range=reduce_range, target="rpi4", quant_format=fmt
        )
        quantize_step(trained_model, digits_artifact, path, config, Lineage(enabled=False))
        out[name] = load_model_package(path).onnx_path
    return out


def _as_written(path: Path, x: np.ndarray) -> np.ndarray:
    """The QDQ graph's own semantics: no fusion into INT8 kernels, every op as the graph states it."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def test_a_child_is_judged_by_its_boards_arithmetic_on_any_build_machine(children, digits_artifact):
    """Fails on an AVX2-only x86 (no VNNI) if the host's saturating kernels judge a child quantized for a
    Pi: they agreed with the graph's semantics on 93.4 % of digits val there."""
    x, _ = load_dataset(digits_artifact).split("val")
    for path in (children["full"], children["seven_bit"]):
        judged, written = onnx_logits(path, x), _as_written(path, x)
        assert np.mean(judged.argmax(1) == written.argmax(1)) >= 0.99
        assert np.abs(judged - written).max() < 0.5


def test_only_full_range_qdq_weights_on_a_saturating_host_leave_the_kernels(
    children, trained_model, monkeypatch
):
    parent = load_model_package(trained_model).onnx_path
    for saturates in (True, False):
        monkeypatch.setattr(numerics, "host_int8_saturates", lambda v=saturates: v)
        got = {name: numerics.evaluation_numerics(p)["numerics"] for name, p in children.items()}
        assert got["full"] == (numerics.REFERENCE_QDQ if saturates else numerics.KERNELS)
        assert got["seven_bit"] == numerics.KERNELS  # 2 x 255 x 64 fits int16: the kernels are exact
        # integer operators have no QDQ graph to follow: the kernels, and the record says what that risks
        assert got["qop"] == numerics.KERNELS
        assert ("may be lower" in numerics.evaluation_numerics(children["qop"])["why"]) == saturates
        assert numerics.evaluation_numerics(parent)["numerics"] == numerics.KERNELS  # float: no INT8


def test_the_evaluation_says_which_arithmetic_judged_it(children, digits_artifact, tmp_path):
    from edgecompress.evaluate import evaluate_step

    out = tmp_path / "eval.json"
    result = evaluate_step(
        children["full"].parent, digits_artifact, out, tmp_path / "eval.html", "val", Lineage(enabled=False)
    )
    expected = numerics.REFERENCE_QDQ if numerics.host_int8_saturates() else numerics.KERNELS
    assert result["numerics"]["numerics"] == expected and result["numerics"]["why"]
    assert "INT8 arithmetic" in (tmp_path / "eval.html").read_text()


def test_isa_check_names_the_arithmetic_this_machine_judged_by(trained_model, children, digits_artifact):
    from edgecompress.gate import GateConfig
    from edgecompress.isa import IsaCheckConfig, isa_check

    x, y = load_dataset(digits_artifact).split("val")
    parent = load_model_package(trained_model).onnx_path
    out = isa_check(
        parent, children["full"], x, y, IsaCheckConfig(gate=GateConfig(device_classes=["rpi4-emulated"]))
    )
    expected = numerics.REFERENCE_QDQ if numerics.host_int8_saturates() else numerics.KERNELS
    assert out.extra["host_numerics"]["numerics"] == expected
