"""Internal-width pruning, for models Torch-Pruning cannot trace (ShuffleNet's channel shuffle: a view
to (N, groups, C/groups, H, W), a transpose and a view back, through which Torch-Pruning 1.6.1 cannot
map channel indices).

A pointwise → depthwise → convolution sequence inside one `nn.Sequential` (with BatchNorm and
element-wise activations between) has a middle width that no layer outside that Sequential sees:
ShuffleNetV2's branch2, MobileNetV2's inverted residuals. Its channels can be removed from the first
convolution's outputs, the depthwise convolution and the last convolution's inputs without a
dependency graph, so nothing after the block (a shuffle, a concatenation, a residual) is misaligned.
Only those widths are pruned: a uniform ratio per block, the least important channels first.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from edgecompress.errors import ConfigError
from edgecompress.prune.importance import make_importance

ELEMENTWISE = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.SiLU,
    nn.GELU,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Sigmoid,
    nn.Identity,
    nn.Dropout,
)


@dataclass
class Sandwich:
    """One prunable middle width: `first` (pointwise) → `norms_a` → `depthwise` → `norms_b` → `last`."""

    name: str
    first: nn.Conv2d
    norms_a: list[nn.BatchNorm2d]
    depthwise: nn.Conv2d
    norms_b: list[nn.BatchNorm2d]
    last: nn.Conv2d
    initial: int = field(init=False)

    def __post_init__(self) -> None:
        self.initial = self.first.out_channels

    @property
    def modules(self) -> list[nn.Module]:
        return [self.first, *self.norms_a, self.depthwise, *self.norms_b, self.last]


def _between(mods: list[nn.Module], i: int) -> tuple[list[nn.BatchNorm2d], int]:
    """The BatchNorms among the element-wise layers from index i, and the index of the next other layer."""
    norms = []
    while i < len(mods) and isinstance(mods[i], (nn.BatchNorm2d, *ELEMENTWISE)):
        if isinstance(mods[i], nn.BatchNorm2d):
            norms.append(mods[i])
        i += 1
    return norms, i


def find_sandwiches(model: nn.Module, keep: list[nn.Module] = ()) -> list[Sandwich]:
    """Every pointwise → depthwise → convolution run inside one nn.Sequential, none of whose layers
    is in `keep`."""
    kept = {id(m) for m in keep}
    found = []
    for name, seq in model.named_modules():
        if not isinstance(seq, nn.Sequential):
            continue
        mods = list(seq)
        for i, first in enumerate(mods):
            if not (isinstance(first, nn.Conv2d) and first.groups == 1 and first.kernel_size == (1, 1)):
                continue
            width = first.out_channels
            norms_a, j = _between(mods, i + 1)
            if j >= len(mods):
                continue
            dw = mods[j]
            if not (isinstance(dw, nn.Conv2d) and dw.groups == width == dw.in_channels == dw.out_channels):
                continue
            norms_b, k = _between(mods, j + 1)
            if k >= len(mods):
                continue
            last = mods[k]
            if not (isinstance(last, nn.Conv2d) and last.groups == 1 and last.in_channels == width):
                continue
            if all(n.num_features == width for n in norms_a + norms_b):
                sandwich = Sandwich(f"{name}.{i}" if name else str(i), first, norms_a, dw, norms_b, last)
                if not any(id(m) in kept for m in sandwich.modules):
                    found.append(sandwich)
    return found


class InternalWidthPruner:
    """The `_Pruner` interface (step, skipped, layouts, probe) for internal widths: step s of n keeps
    round(initial × (1 − ratio × s / n)) channels of each middle width, never fewer than one."""

    def __init__(self, sandwiches: list[Sandwich], ratio: float, steps: int, importance: str, why: str):
        if not sandwiches:
            raise ConfigError(
                f"{why}; and the model has no pointwise → depthwise → convolution block "
                "whose middle width could be pruned without it"
            )
        self.sandwiches, self.ratio, self.steps = sandwiches, ratio, steps
        self.importance = make_importance(importance)
        self.done, self.layouts, self.probe = 0, [], None
        self.skipped: list[str] = []
        self.note = (
            f"{why}. Pruned instead: the internal widths of {len(sandwiches)} pointwise → depthwise → "
            "convolution blocks (their channels never cross the shuffle or any other block boundary)"
            + (f"; {self.importance.width_note()}" if self.importance.width_note() else "")
        )

    def step(self) -> None:
        import torch_pruning as tp

        self.done += 1
        for s in self.sandwiches:
            keep = max(1, round(s.initial * (1 - self.ratio * self.done / self.steps)))
            now = s.first.out_channels
            if now <= keep:
                continue
            drop = torch.argsort(
                self.importance.width_scores(s.first, s.depthwise, s.norms_a[0] if s.norms_a else None)
            )[: now - keep].tolist()
            tp.prune_conv_out_channels(s.first, drop)
            for bn in s.norms_a + s.norms_b:
                tp.prune_batchnorm_out_channels(bn, drop)
            tp.prune_depthwise_conv_out_channels(s.depthwise, drop)
            tp.prune_conv_in_channels(s.last, drop)
