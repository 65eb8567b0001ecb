"""Issue 30 item 3: attention written Hugging Face style, `x.view(b, n, num_heads, head_dim)` with
`num_heads`/`head_dim` attributes, whose forward reshapes the heads' output back with a width it
does not derive from the head count. Where that width is a module attribute (`self.dim`), it now
follows the head count as Torch-Pruning's Hugging Face recipe updates `all_head_size`, and whole
heads are pruned. Where it is the input's own width (`reshape(b, n, d)`, d from `x.shape`: the
issue's model), no head can go: that is said once per module, plainly, instead of five messages
~76 times."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from edgecompress.data import load_dataset
from edgecompress.export import check_parity, export_onnx
from edgecompress.prune import StructuredConfig, prune_structured, sensitivity
from tests.architectures.models import tiny_vit

SHAPE = (1, 8, 8)


class InputWidthAttention(nn.Module):
    """The issue's module: heads by view, the output reshaped to the input's width `d`."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def split(self, t: torch.Tensor, b: int, n: int) -> torch.Tensor:
        return t.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.split(self.q(x), b, n), self.split(self.k(x), b, n), self.split(self.v(x), b, n)
        attn = ((q @ k.transpose(-2, -1)) * self.head_dim**-0.5).softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, d))


class DimAttributeAttention(InputWidthAttention):
    """The same, reshaping to a width it keeps in `self.dim`."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__(dim, num_heads)
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.split(self.q(x), b, n), self.split(self.k(x), b, n), self.split(self.v(x), b, n)
        attn = ((q @ k.transpose(-2, -1)) * self.head_dim**-0.5).softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, self.dim))


def _vit(attention: type[nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    model = tiny_vit()
    for block in model.blocks:
        block.attn = attention(32, 4)
    return model


def _attention_skips(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "every head of attention" in r.getMessage()]


@pytest.mark.parametrize("budget", [False, True])
def test_a_width_attribute_follows_the_heads_and_whole_heads_go(digits_artifact, tmp_path, budget):
    """Ratio and MACs budget (the budget search reuses the probe's finding: `dim` must follow there too)."""
    from edgecompress.evaluate import module_macs

    model = _vit(DimAttributeAttention)
    dataset = load_dataset(digits_artifact)
    config = (
        StructuredConfig(budget_metric="macs", budget=0.6 * module_macs(model, SHAPE))
        if budget
        else StructuredConfig(ratio=0.5)
    )
    pruned, report = prune_structured(model, SHAPE, 10, config, dataset, progress=False)
    assert report["skipped"] == []
    for block in pruned.blocks:
        attn = block.attn
        assert attn.num_heads < 4 and attn.head_dim == 8
        assert attn.dim == attn.num_heads * 8 == attn.q.out_features == attn.proj.in_features
    path = tmp_path / "m.onnx"
    export_onnx(pruned, SHAPE, path)
    check_parity(pruned, path, dataset.split("val", 16)[0])


def test_the_issues_input_width_reshape_keeps_heads_says_why_once(digits_artifact, caplog):
    model = _vit(InputWidthAttention)
    dataset = load_dataset(digits_artifact)
    with caplog.at_level(logging.WARNING):
        sens = sensitivity(model, dataset, ratios=(0.5,), samples=50, progress=False)
        pruned, report = prune_structured(model, SHAPE, 10, StructuredConfig(ratio=0.4), dataset, False)
    said = _attention_skips(caplog)
    # one message per attention module per analysis/prune: 2 modules x (sensitivity + prune)
    assert sorted(said) == sorted(2 * [m for m in report["skipped"] if "every head" in m])
    assert len(set(said)) == 2 and sens["skipped"] == report["skipped"]
    message = said[0]
    assert "'blocks." in message and "reshape(b, n, d) with d taken from the input's shape" in message
    assert "q, k, v keep their width" in message and "(b, n, -1)" in message
    assert "is invalid for input of size" in message  # the forward's own error, as it was raised
    for block in pruned.blocks:
        assert block.attn.num_heads == 4 and block.attn.q.out_features == 32
    assert pruned(torch.zeros(2, *SHAPE)).shape == (2, 10)
