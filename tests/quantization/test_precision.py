"""Issue 26 items 3 and 4: precision per op group by measured cost, and INT4 weights (MatMulNBits,
int4 QDQ) in quantize, mixed precision and autotune; on sklearn digits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from edgecompress.data import load_dataset
from edgecompress.errors import ConfigError
from edgecompress.export import export_onnx, onnx_logits
from edgecompress.quantize.autotune import AutotuneConfig
from edgecompress.quantize.config import QuantConfig
from edgecompress.quantize.mixed import quantize_mixed
from edgecompress.quantize.precision import op_groups, quantize_per_op
from edgecompress.quantize.ptq import preprocess, quantize_static

SHAPE = (1, 8, 8)


class _SE(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, c // 2, 1), nn.Conv2d(c // 2, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * nn.functional.hardsigmoid(self.fc2(torch.relu(self.fc1(s))))


def mobile_block() -> nn.Module:
    """A MobileNetV3-style net: dense stem, depthwise conv, hardswish, SE block, 1x1 conv, classifier."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.Hardswish(),
        nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.Hardswish(), _SE(16),
        nn.Conv2d(16, 32, 1), nn.ReLU(), nn.Flatten(), nn.Linear(32 * 64, 10),
    ).eval()  # fmt: skip


def _export(model: nn.Module, path: Path) -> Path:
    torch.manual_seed(0)
    export_onnx(model, SHAPE, path)
    return path


def _dq_fed(proto: onnx.ModelProto) -> set[str]:
    """Nodes with a DequantizeLinear'd weight (an initializer through DQ): what runs quantized."""
    inits = {i.name for i in proto.graph.initializer}
    dq_weights = {
        n.output[0] for n in proto.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
    }
    return {n.name for n in proto.graph.node if any(i in dq_weights for i in n.input[1:2])}


def _groups_of(path: Path, tmp_path: Path) -> dict[str, list[str]]:
    return op_groups(onnx.load(str(preprocess(path, tmp_path / "pre.onnx"))))


def test_op_groups_split_a_mobilenet_style_net(tmp_path):
    groups = _groups_of(_export(mobile_block(), tmp_path / "m.onnx"), tmp_path)
    assert all(n for names in groups.values() for n in names)  # every node named: exclusions reach it
    assert set(groups) == {"conv", "depthwise_conv", "se_block", "pointwise_conv", "matmul_gemm", "other"}
    assert len(groups["conv"]) == len(groups["depthwise_conv"]) == len(groups["pointwise_conv"]) == 1
    assert len(groups["matmul_gemm"]) == 1
    # the SE block's two 1x1 convolutions and its gating Mul are one group, not pointwise convs
    assert sum(1 for n in groups["se_block"] if "Conv" in n) == 2 and any(
        "Mul" in n for n in groups["se_block"]
    )


def _speed(low: float, high: float) -> dict:
    mid = (low * high) ** 0.5
    return {"speedup": mid, "ci_low": low, "ci_high": high, "timing_meaningful": True, "emulated": True,
            "latency_rounds": {"parent_ms": [1.0] * 8, "child_ms": [1 / mid] * 8}}  # fmt: skip


def _injected(
    groups: dict[str, list[str]], slow: set[str], composite_slow: bool = False, parent: Path | None = None
):
    """A measurement injected through the public `compare`: quantizing a group in `slow` makes the
    child slower (0.7x-0.8x), any other group faster (1.2x-1.3x) (a group is told by the nodes whose
    weights newly run quantized; none: the `other` group); optionally the composite child is slower
    than the float `parent` although each group alone was faster (Q/DQ boundaries can do that)."""
    calls = []
    group_of = {n: g for g, names in groups.items() for n in names}

    def compare(as_float: Path, as_int8: Path) -> dict:
        newly = _dq_fed(onnx.load(str(as_int8))) - _dq_fed(onnx.load(str(as_float)))
        changed = {group_of[n] for n in newly} or {"other"}
        calls.append(changed)
        if composite_slow and Path(as_float) == parent:
            return _speed(0.85, 0.95)
        return _speed(0.7, 0.8) if changed & slow else _speed(1.2, 1.3)

    return compare, calls


def test_a_group_measured_slower_stays_float_and_a_faster_one_int8(digits_artifact, tmp_path):
    path = _export(mobile_block(), tmp_path / "m.onnx")
    groups = _groups_of(path, tmp_path)
    depthwise = set(groups["depthwise_conv"])
    compare, calls = _injected(groups, {"depthwise_conv"})
    proto, details = quantize_per_op(
        path, load_dataset(digits_artifact), QuantConfig(calibration_samples=16), compare
    )
    rows = {r["group"]: r for r in details["per_op"]["groups"]}
    assert rows["depthwise_conv"]["chosen"] == "float" and "not faster" in rows["depthwise_conv"]["why"]
    assert rows["depthwise_conv"]["speedup_ci"] == [0.7, 0.8]
    assert all(r["chosen"] == "int8" for g, r in rows.items() if g != "depthwise_conv")
    for r in rows.values():  # accuracy is reported per group, paired on the selection part
        low, high = r["accuracy_drop_ci"]
        assert low <= r["accuracy_drop"] <= high and r["accuracy_samples"] > 0
    quantized = _dq_fed(proto)
    assert not quantized & depthwise  # the depthwise convolution runs in float
    assert set(groups["pointwise_conv"]) <= quantized
    assert details["per_op"]["final"]["speedup_ci"] == [1.2, 1.3] and not details["per_op"]["all_float"]
    # one comparison per group, then each distinct candidate child against the float parent
    assert [c["name"] for c in details["per_op"]["final"]["candidates"]] == [
        "each group faster",
        "every group",
    ]
    assert len(calls) == len(rows) + 2


def test_every_group_slower_returns_the_float_parent_and_says_so(digits_artifact, tmp_path):
    path = _export(mobile_block(), tmp_path / "m.onnx")
    groups = _groups_of(path, tmp_path)
    compare, _ = _injected(groups, set(groups))
    proto, details = quantize_per_op(
        path, load_dataset(digits_artifact), QuantConfig(calibration_samples=16), compare
    )
    assert details["per_op"]["all_float"] and "float parent is returned" in details["per_op"]["final"]["why"]
    assert [n.op_type for n in proto.graph.node] == [n.op_type for n in onnx.load(str(path)).graph.node]


def test_a_child_slower_than_its_parent_is_never_returned(digits_artifact, tmp_path):
    """Each group alone faster, the composite slower than the float parent: the parent comes back."""
    path = _export(mobile_block(), tmp_path / "m.onnx")
    compare, _ = _injected(_groups_of(path, tmp_path), set(), composite_slow=True, parent=path)
    proto, details = quantize_per_op(
        path, load_dataset(digits_artifact), QuantConfig(calibration_samples=16), compare
    )
    final = details["per_op"]["final"]
    assert all(r["chosen"] == "int8" for r in details["per_op"]["groups"])
    assert [c["speedup_ci"] for c in final["candidates"]] == [[0.85, 0.95]]
    assert details["per_op"]["all_float"] and "float parent is returned" in final["why"]
    assert not _dq_fed(proto)


def test_groups_within_the_noise_that_add_up_to_a_faster_child_are_kept(digits_artifact, tmp_path):
    """A small model: no group's interval alone clears 1 (nor falls below it), the whole INT8 child
    is clearly faster than the float parent: that child is returned, with both candidates reported."""
    path = _export(mobile_block(), tmp_path / "m.onnx")

    weighted = 6  # stem, depthwise, two SE and one 1x1 convolutions, the classifier

    def compare(as_float: Path, as_int8: Path) -> dict:
        whole = Path(as_float) == path and len(_dq_fed(onnx.load(str(as_int8)))) == weighted
        return _speed(1.4, 1.6) if whole else _speed(0.95, 1.08)

    proto, details = quantize_per_op(
        path, load_dataset(digits_artifact), QuantConfig(calibration_samples=16), compare
    )
    per_op = details["per_op"]
    assert all(
        r["chosen"] == "float" and not r["measured_slower"] and r["in_child"] for r in per_op["groups"]
    )
    assert [c["name"] for c in per_op["final"]["candidates"]] == ["no group slower"]
    assert not per_op["all_float"] and per_op["final"]["speedup_ci"] == [1.4, 1.6]
    assert set(_groups_of(path, tmp_path)["depthwise_conv"]) <= _dq_fed(proto)


def test_objective_size_quantizes_every_group_and_measures_nothing(digits_artifact, tmp_path):
    from edgecompress.quantize.precision import quantize_static_measured

    path = _export(mobile_block(), tmp_path / "m.onnx")
    proto, details = quantize_static_measured(
        path, load_dataset(digits_artifact), QuantConfig(calibration_samples=16, objective="size")
    )
    groups = _groups_of(path, tmp_path)
    assert details == {} and set(groups["depthwise_conv"]) <= _dq_fed(proto)


def _trained_mlp(digits_artifact, path: Path) -> Path:
    dataset = load_dataset(digits_artifact)
    x, y = dataset.split("train")
    torch.manual_seed(0)
    mlp = nn.Sequential(
        nn.Flatten(), nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)
    )
    opt = torch.optim.Adam(mlp.parameters(), 1e-3)
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(mlp(torch.from_numpy(x)), torch.from_numpy(y)).backward()
        opt.step()
    return _export(mlp.eval(), path)


# int4 parity: the child's logits within this fraction of the float logits' range, and the same top-1
# class on at least this share of validation (4-bit blocks of 32 are coarse; int8 stays far inside)
INT4_LOGIT_TOLERANCE, INT4_MIN_AGREEMENT = 0.1, 0.95


def test_int4_weights_are_smaller_than_int8_and_run_with_parity(digits_artifact, tmp_path):
    dataset = load_dataset(digits_artifact)
    path = _trained_mlp(digits_artifact, tmp_path / "mlp.onnx")
    sizes, logits = {}, {}
    x, y = dataset.split("val")
    ref = onnx_logits(path, x)
    assert np.mean(ref.argmax(1) == y) > 0.9  # a trained model, not noise
    for bits in (8, 4):
        proto = quantize_static(path, dataset, QuantConfig(calibration_samples=64, weight_bits=bits))
        out = tmp_path / f"w{bits}.onnx"
        onnx.save(proto, str(out))
        sizes[bits], logits[bits] = out.stat().st_size, onnx_logits(out, x)  # ONNX Runtime runs it
    ops4 = [n.op_type for n in onnx.load(str(tmp_path / "w4.onnx")).graph.node]
    assert ops4.count("MatMulNBits") == 3 and "Gemm" not in ops4
    assert sizes[4] < 0.75 * sizes[8] < 0.75 * path.stat().st_size
    span = float(ref.max() - ref.min())
    assert float(np.abs(logits[4] - ref).max()) <= INT4_LOGIT_TOLERANCE * span
    assert np.mean(logits[4].argmax(1) == ref.argmax(1)) >= INT4_MIN_AGREEMENT


def test_int4_convolutions_get_int4_qdq_weights(trained_model, digits_artifact, tmp_path):
    proto = quantize_static(
        trained_model / "model.onnx",
        load_dataset(digits_artifact),
        QuantConfig(calibration_samples=32, weight_bits=4),
    )
    int4 = {i.name for i in proto.graph.initializer if i.data_type == onnx.TensorProto.INT4}
    weights = {n.input[1] for n in proto.graph.node if n.op_type == "Conv"}
    dq_in = {n.output[0]: n.input[0] for n in proto.graph.node if n.op_type == "DequantizeLinear"}
    assert weights and all(dq_in.get(w) in int4 for w in weights)


def test_mixed_precision_accepts_int4(digits_artifact, tmp_path):
    path = _trained_mlp(digits_artifact, tmp_path / "mlp.onnx")
    config = QuantConfig(
        method="mixed", weight_bits=4, mixed_exclude=1, calibration_samples=32, probe_samples=200
    )
    proto, details = quantize_mixed(path, load_dataset(digits_artifact), config)
    ops = [n.op_type for n in proto.graph.node]
    assert len(details["excluded_nodes"]) == 1 and ops.count("MatMulNBits") == 2


def test_autotune_plans_an_int4_candidate():
    trials = AutotuneConfig().plan(False, 0.9)
    int4 = [t for t in trials if t.weight_bits == 4]
    assert len(int4) == 1 and int4[0].method == "static" and "int4" in int4[0].label()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"weight_bits": 3}, "weight_bits must be one of"),
        ({"weight_bits": 4, "method": "dynamic"}, "weight_bits=4 needs method static or mixed"),
        ({"weight_bits": 4, "quant_format": "qoperator"}, "weight_bits=4 needs"),
        ({"int4_block_size": 48}, "int4_block_size must be one of"),
        ({"objective": "speed"}, "objective 'speed' not in"),
        ({"per_op_max_drop": -0.1}, "per_op_max_drop must be in"),
    ],
)
def test_bad_precision_settings_are_named(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        QuantConfig(**kwargs).validate()
