"""Parameters and MACs of the exported graph (issue 19, item 2), cross-checked against an independent
counter, torch's FlopCounterMode (FLOPs / 2 = MACs for conv, linear and matmul), within 1 %: on every
zoo model and on test models with attention, depthwise, grouped, dilated and transposed convolutions."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from edgecompress.data import load_dataset
from edgecompress.evaluate import model_stats
from edgecompress.export import export_onnx
from edgecompress.quantize.config import QuantConfig
from edgecompress.quantize.ptq import quantize_dynamic, quantize_static
from edgecompress.zoo import FAMILIES, build_model


class Attention(nn.Module):
    """Written the way Hugging Face models are: q/k/v Linear, heads by view, matmul + softmax."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, n, self.heads, self.head_dim).transpose(1, 2)

        q, k, v = heads(self.q(x)), heads(self.k(x)), heads(self.v(x))
        weights = ((q @ k.transpose(-2, -1)) * self.head_dim**-0.5).softmax(-1)
        return self.out((weights @ v).transpose(1, 2).reshape(b, n, -1))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.norm1, self.attn, self.norm2 = nn.LayerNorm(dim), Attention(dim, heads), nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    """Patch embedding, class token (expanded to the input's batch), position embedding, blocks."""

    def __init__(self, size: int = 28, patch: int = 4, dim: int = 64, depth: int = 2, heads: int = 4) -> None:
        super().__init__()
        self.embed = nn.Conv2d(1, dim, patch, patch)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, (size // patch) ** 2 + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(dim, heads, 4 * dim) for _ in range(depth)])
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos
        return self.head(self.norm(self.blocks(x))[:, 0])


class Convs(nn.Module):
    """Dilated, depthwise, grouped and transposed (plain and grouped) convolutions, odd sizes."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 24, 3, padding=2, dilation=2), nn.ReLU(),
            nn.Conv2d(24, 24, 3, padding=1, groups=24), nn.BatchNorm2d(24), nn.ReLU(),
            nn.Conv2d(24, 48, 3, stride=2, padding=1, groups=4, bias=False), nn.BatchNorm2d(48), nn.ReLU(),
            nn.ConvTranspose2d(48, 16, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(16, 8, 3, stride=2, padding=2, output_padding=1, groups=2, dilation=2),
        )  # fmt: skip
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean((2, 3)))


def reference_macs(model: nn.Module, shape: tuple[int, ...]) -> int:
    """torch's own count. `scaled_dot_product_attention` runs on its math backend and
    `nn.MultiheadAttention` off its fast path: their fused CPU kernels are not in FlopCounterMode's
    table, so timm's attention and MultiheadAttention would count 0 MACs."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    counter = FlopCounterMode(display=False)
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
            model.eval()(torch.zeros(1, *shape))
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return counter.get_total_flops() // 2


def deployed_params(model: nn.Module) -> int:
    """torch's parameter count, less what exporting folds away: a BatchNorm after a convolution
    becomes that convolution's weights and bias, so its 2 x C affine parameters become C biases
    (none, when the convolution already had a bias)."""
    total = sum(p.numel() for p in model.parameters())
    previous = None
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d) and isinstance(previous, nn.Conv2d):
            total -= 2 * module.num_features - (0 if previous.bias is not None else module.num_features)
        if not isinstance(module, nn.Sequential):
            previous = module
    return total


def _stats(model: nn.Module, shape: tuple[int, ...], tmp_path: Path):
    path = tmp_path / "model.onnx"
    export_onnx(model, shape, path)
    return model_stats(path)


class DataDependent(nn.Module):
    """Keeps the input features a test selects (all of them): the width is known only at run time."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        keep = torch.nonzero(flat.abs().sum(0) >= 0).flatten()
        return self.fc(flat[:, keep])


MODELS = {
    **{
        f"{family}-{s}x{s}": (lambda f=family, s=s: build_model(f, (1, s, s), 10, seed=0))
        for family in FAMILIES
        for s in (8, 28)
    },
    "tiny-vit-28x28": lambda: TinyViT(),
    "tiny-vit-8x8": lambda: TinyViT(size=8, patch=2, dim=32, depth=1),
    "convs-28x28": lambda: Convs(),
    "data-dependent-8x8": lambda: DataDependent(),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_macs_and_params_match_an_independent_count(name, tmp_path):
    torch.manual_seed(0)
    model, size = MODELS[name](), int(name.rsplit("x", 1)[1])
    stats = _stats(model, (1, size, size), tmp_path)
    expected = reference_macs(model, (1, size, size))
    assert abs(stats.macs - expected) <= 0.01 * expected, (stats.macs, expected)
    assert stats.params == deployed_params(model)


def test_tiny_vit_counts_its_attention_at_batch_1(tmp_path):
    """The class token's expand reads the batch back from the input, which left ONNX shape inference
    with a symbolic batch and every MatMul at 0 (only the patch convolution's 50,176 MACs counted)."""
    stats = _stats(TinyViT(), (1, 28, 28), tmp_path)
    graph = onnx.load(str(tmp_path / "model.onnx")).graph
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param  # the file keeps a dynamic batch
    tokens, dim, hidden = 50, 64, 256
    patch_conv = 49 * dim * 16
    per_block = 4 * tokens * dim * dim + 2 * tokens * tokens * dim + 2 * tokens * dim * hidden
    assert stats.macs == patch_conv + 2 * per_block + dim * 10 == 5_606_016


@pytest.mark.parametrize("name", ["tiny-vit-8x8", "cnn-8x8", "mobilenet-8x8"])
@pytest.mark.parametrize(
    "config",
    [QuantConfig(method="dynamic"), QuantConfig(quant_format="qdq"), QuantConfig(quant_format="qoperator")],
    ids=["dynamic", "static-qdq", "static-qoperator"],
)
def test_quantized_models_count_the_macs_of_their_float_parent(name, config, tmp_path, digits_artifact):
    torch.manual_seed(0)
    model = MODELS[name]()
    path = tmp_path / "model.onnx"
    export_onnx(model, (1, 8, 8), path)
    dataset = load_dataset(digits_artifact)
    config.calibration_samples = 16
    proto = (
        quantize_dynamic(path, config)
        if config.method == "dynamic"
        else quantize_static(path, dataset, config)
    )
    onnx.save(proto, tmp_path / "int8.onnx")
    expected = reference_macs(model, (1, 8, 8))
    macs = model_stats(tmp_path / "int8.onnx").macs
    assert abs(macs - expected) <= 0.01 * expected, (macs, expected)
