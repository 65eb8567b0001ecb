"""Quantization-aware training: fake-quant fine-tuning in torch, exported as a QDQ model that ONNX
Runtime runs with INT8 kernels.

How: BatchNorm is folded into the convolutions (torch.fx), then the traced graph gets fake-quant
modules where ONNX Runtime's QDQ kernels expect them — per-channel symmetric INT8 weights on every
Conv/Linear, asymmetric UINT8 activations at each Conv/Linear input and after its activation
function. The model is fine-tuned with `train.fit` (its loss hook adds distillation from the float
parent), exported with the TorchScript exporter (fake-quant ops become QuantizeLinear /
DequantizeLinear), and the exported graph is finished the way ONNX Runtime's own quantizer writes
one: weights stored as INT8 initializers, biases as INT32 with their DequantizeLinear.
"""

from __future__ import annotations

import copy
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from torch import nn

from edgecompress.data import Dataset
from edgecompress.errors import ModelError
from edgecompress.export import export_onnx, onnx_logits
from edgecompress.quantize.config import QuantConfig
from edgecompress.quantize.ptq import calibration_sample
from edgecompress.train import TrainConfig, fit

log = logging.getLogger(__name__)

_ACTIVATIONS = (nn.ReLU, nn.ReLU6)


class ActFakeQuant(nn.Module):
    """Per-tensor asymmetric UINT8 fake quantization of an activation.

    Ranges: true min/max while calibrating, an exponential moving average while training, frozen in
    eval mode (which is what gets exported)."""

    def __init__(self, momentum: float = 0.01) -> None:
        super().__init__()
        self.momentum = momentum
        self.calibrating = False
        self.register_buffer("lo", torch.tensor(0.0))
        self.register_buffer("hi", torch.tensor(0.0))
        self.register_buffer("seen", torch.tensor(False))

    @torch.no_grad()
    def _observe(self, x: torch.Tensor) -> None:
        lo, hi = x.min(), x.max()
        if not bool(self.seen):
            self.lo.copy_(lo), self.hi.copy_(hi), self.seen.fill_(True)
        elif self.calibrating:
            self.lo.copy_(torch.minimum(self.lo, lo)), self.hi.copy_(torch.maximum(self.hi, hi))
        else:
            self.lo.lerp_(lo, self.momentum), self.hi.lerp_(hi, self.momentum)

    def qparams(self) -> tuple[float, int]:
        lo, hi = min(float(self.lo), 0.0), max(float(self.hi), 0.0)
        scale = max((hi - lo) / 255.0, 1e-8)
        return scale, int(np.clip(round(-lo / scale), 0, 255))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.calibrating or self.training:
            self._observe(x)
        if self.calibrating:
            return x
        scale, zero_point = self.qparams()
        return torch.fake_quantize_per_tensor_affine(x, scale, zero_point, 0, 255)


class WeightFakeQuant(nn.Module):
    """Per-output-channel symmetric INT8 fake quantization of a weight (a parametrization).

    The scale follows the weight while training; `freeze` fixes it (a constant in the export)."""

    def __init__(self, qmax: int = 127) -> None:
        super().__init__()
        self.qmax = qmax  # 63 with reduce_range: 7-bit weights avoid u8s8 overflow on AVX2 without VNNI
        self.frozen: torch.Tensor | None = None

    def scale_of(self, w: torch.Tensor) -> torch.Tensor:
        return (w.detach().flatten(1).abs().max(dim=1).values / self.qmax).clamp_min(1e-8)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        scale = self.frozen if self.frozen is not None else self.scale_of(w)
        zero = torch.zeros(w.shape[0], dtype=torch.int32)
        return torch.fake_quantize_per_channel_affine(w, scale, zero, 0, -128, 127)


@torch.no_grad()
def freeze_weight_scales(gm: nn.Module) -> None:
    for module in gm.modules():
        plist = getattr(getattr(module, "parametrizations", None), "weight", None)
        if plist is not None:
            for p in plist:
                if isinstance(p, WeightFakeQuant):
                    p.frozen = p.scale_of(plist.original).clone()


def _bind_optional_inputs(gm: torch.fx.GraphModule) -> None:
    """Replace every traced input after the first by its default (timm's ViT: `attn_mask=None`,
    `is_causal=False`). Left as inputs, the ONNX exporter passes the defaults in and traces the
    bool as a tensor, which `scaled_dot_product_attention` refuses; the edge model takes images only.
    """
    graph = gm.graph
    optional = [n for n in graph.nodes if n.op == "placeholder"][1:]
    for node in optional:
        if not node.args:
            raise ModelError(
                f"QAT needs a model whose forward takes only the input; {node.target!r} has no default"
            )
    defaults = {node: node.args[0] for node in optional}
    for user in {user for node in optional for user in node.users}:
        user.args = torch.fx.node.map_arg(user.args, lambda n: defaults.get(n, n))
        user.kwargs = torch.fx.node.map_arg(user.kwargs, lambda n: defaults.get(n, n))
    for node in optional:
        graph.erase_node(node)
    graph.lint()
    gm.recompile()


def prepare_qat(model: nn.Module, reduce_range: bool = False) -> torch.fx.GraphModule:
    """Fold BatchNorm, then insert fake-quant modules (weights and activations) into a traced copy."""
    from torch.fx.experimental.optimization import fuse

    try:
        gm = fuse(copy.deepcopy(model).eval())
    except Exception as exc:
        raise ModelError(
            f"QAT needs a torch.fx-traceable model: {type(exc).__name__}: {str(exc)[:300]}"
        ) from exc
    _bind_optional_inputs(gm)
    modules = dict(gm.named_modules())
    graph = gm.graph
    count = 0

    def add_quant(arg: torch.fx.Node, before: torch.fx.Node | None = None) -> torch.fx.Node:
        nonlocal count
        name = f"act_fq_{count}"
        count += 1
        gm.add_submodule(name, ActFakeQuant())
        ctx = graph.inserting_before(before) if before is not None else graph.inserting_after(arg)
        with ctx:
            return graph.call_module(name, (arg,))

    def is_quant(node: Any) -> bool:
        return (
            isinstance(node, torch.fx.Node)
            and node.op == "call_module"
            and str(node.target).startswith("act_fq_")
        )

    layers = 0
    for node in list(graph.nodes):
        if node.op != "call_module" or not isinstance(modules.get(node.target), (nn.Conv2d, nn.Linear)):
            continue
        layers += 1
        torch.nn.utils.parametrize.register_parametrization(
            modules[node.target], "weight", WeightFakeQuant(63 if reduce_range else 127)
        )
        src = node.args[0]
        if not is_quant(src):
            node.replace_input_with(src, add_quant(src, before=node))
        users = list(node.users)
        tail = node
        if (
            len(users) == 1
            and users[0].op == "call_module"
            and isinstance(modules.get(users[0].target), _ACTIVATIONS)
        ):
            tail = users[0]
        if any(u.op == "output" for u in tail.users):
            continue  # logits stay float
        tail_users = list(tail.users)
        q = add_quant(tail)
        for user in tail_users:
            user.replace_input_with(tail, q)
    if not layers:
        raise ModelError("QAT found no Conv2d or Linear layer to quantize")
    graph.lint()
    gm.recompile()
    return gm


def _act_quants(gm: nn.Module) -> list[ActFakeQuant]:
    return [m for m in gm.modules() if isinstance(m, ActFakeQuant)]


@torch.no_grad()
def calibrate(gm: nn.Module, x: np.ndarray, batch_size: int = 64) -> None:
    gm.eval()
    for m in _act_quants(gm):
        m.calibrating = True
    for i in range(0, len(x), batch_size):
        gm(torch.from_numpy(x[i : i + batch_size]))
    for m in _act_quants(gm):
        m.calibrating = False


def _distill_loss(teacher: nn.Module, alpha: float, temperature: float = 2.0):
    ce = nn.CrossEntropyLoss()

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = model(x)
        if alpha <= 0:
            return ce(logits, y)
        with torch.no_grad():
            soft = torch.softmax(teacher(x) / temperature, dim=1)
        kd = nn.functional.kl_div(torch.log_softmax(logits / temperature, dim=1), soft, reduction="batchmean")
        return (1 - alpha) * ce(logits, y) + alpha * kd * temperature**2

    return loss


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            values[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    return values


def finish_qdq(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Store QuantizeLinear-of-constant weights as INT8 initializers and float biases as INT32 + DQ,
    so that ONNX Runtime fuses each DQ → Conv/Gemm → Q group into an INT8 kernel."""
    graph = proto.graph
    const = _constants(graph)
    producer = {o: n for n in graph.node for o in n.output}
    new_inits, drop = [], set()
    for n in graph.node:
        if n.op_type != "QuantizeLinear" or not all(i in const for i in n.input[:3]):
            continue
        w, scale, zp = (const[i] for i in n.input[:3])
        axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
        shape = [1] * w.ndim
        if scale.size > 1:
            shape[axis] = -1
        info = np.iinfo(zp.dtype)
        q = np.clip(
            np.round(w / scale.reshape(shape)) + zp.reshape(shape).astype(np.int32), info.min, info.max
        )
        new_inits.append(numpy_helper.from_array(q.astype(zp.dtype), n.output[0]))
        drop.add(id(n))
    for n in graph.node:
        if n.op_type not in ("Conv", "Gemm") or len(n.input) < 3 or n.input[2] not in const:
            continue
        dq_x, dq_w = producer.get(n.input[0]), producer.get(n.input[1])
        if not (dq_x and dq_w and dq_x.op_type == dq_w.op_type == "DequantizeLinear"):
            continue
        if dq_x.input[1] not in const or dq_w.input[1] not in const:
            continue
        b_scale = (
            (const[dq_x.input[1]].astype(np.float64) * const[dq_w.input[1]]).astype(np.float32).reshape(-1)
        )
        bias = const[n.input[2]].astype(np.float64)
        b_scale = np.broadcast_to(b_scale, bias.shape).copy()
        name = n.input[2]
        new_inits += [
            numpy_helper.from_array(np.round(bias / b_scale).astype(np.int32), f"{name}_int32"),
            numpy_helper.from_array(b_scale.astype(np.float32), f"{name}_int32_scale"),
            numpy_helper.from_array(np.zeros(bias.shape, np.int32), f"{name}_int32_zp"),
        ]
        dq = helper.make_node(
            "DequantizeLinear",
            [f"{name}_int32", f"{name}_int32_scale", f"{name}_int32_zp"],
            [f"{name}_dq"],
            name=f"{name}_DequantizeLinear",
            axis=0,
        )
        graph.node.insert(list(graph.node).index(n), dq)
        n.input[2] = f"{name}_dq"
    kept = [n for n in graph.node if id(n) not in drop]
    del graph.node[:]
    graph.node.extend(kept)
    graph.initializer.extend(new_inits)
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    inits = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    consts = [n for n in graph.node if n.op_type != "Constant" or n.output[0] in used]
    del graph.node[:]
    graph.node.extend(consts)
    del graph.value_info[:]
    onnx.checker.check_model(proto)
    return proto


def quantize_aware_training(
    module: nn.Module, dataset: Dataset, config: QuantConfig, progress: bool = False
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """Fine-tune with fake quantization and return the QDQ INT8 ONNX model and training details."""
    config.validate()
    teacher = copy.deepcopy(module).eval()
    gm = prepare_qat(module, config.reduce_range)
    calibrate(gm, calibration_sample(dataset, config.calibration_samples, config.seed))
    train_cfg = TrainConfig(
        epochs=config.qat_epochs,
        batch_size=config.qat_batch_size,
        lr=config.qat_lr,
        weight_decay=0.0,
        seed=config.seed,
        max_train_samples=config.qat_max_train_samples,
    )
    history = fit(
        gm,
        dataset,
        train_cfg,
        loss_fn=_distill_loss(teacher, config.qat_distill),
        description="qat",
        progress=progress,
    )
    gm.eval()
    freeze_weight_scales(gm)
    with tempfile.TemporaryDirectory(prefix="edgecompress-qat-") as tmp:
        path = Path(tmp) / "qat.onnx"
        export_onnx(gm, dataset.input_shape, path, opset=17)
        proto = finish_qdq(onnx.load(str(path)))
        onnx.save_model(proto, str(path))
        x_val, _ = dataset.split("val", 256)
        with torch.no_grad():
            expected = gm(torch.from_numpy(x_val)).numpy()
        got = onnx_logits(path, x_val)
    ops = {n.op_type for n in proto.graph.node}
    if not {"QuantizeLinear", "DequantizeLinear"} <= ops:
        raise ModelError("the QAT export has no QuantizeLinear/DequantizeLinear nodes")
    details = {
        "history": history.as_dict(),
        "fake_quant_modules": len(_act_quants(gm)),
        "torch_vs_onnx_max_abs_error": float(np.max(np.abs(expected - got))) if len(x_val) else 0.0,
        "torch_vs_onnx_top1_agreement": float(np.mean(expected.argmax(1) == got.argmax(1)))
        if len(x_val)
        else 1.0,
    }
    return proto, details
