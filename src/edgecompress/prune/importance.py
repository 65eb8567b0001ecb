"""Channel importance as plug-ins, in Torch-Pruning's `Importance` shape: a class whose instances,
called on a dependency group, return one score per channel (the lowest are pruned first).

Each plug-in subclasses the Torch-Pruning scorer it is and is registered once (`@register`); the
configs' validation, the CLI's choices and the component docs all read `IMPORTANCES`. A plug-in also
scores the middle channels of a pointwise → depthwise → convolution block (`width_scores`), for the
internal-width pruner that works where Torch-Pruning cannot trace (ShuffleNetV2's channel shuffle).

Adding one: subclass `Importance` and a `tp.importance.Importance`, give it a `name` and a `help`,
decorate it with `@register`.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch_pruning as tp
from torch import nn

from edgecompress.errors import ConfigError


class Importance:
    """A channel-importance plug-in: `__call__(group)` (Torch-Pruning's) scores a dependency group;
    `width_scores` scores a block's middle channels. Class attributes say what it needs."""

    name: ClassVar[str]
    help: ClassVar[str]
    needs_batchnorm: ClassVar[bool] = False  # scores from BatchNorm scales
    needs_gradients: ClassVar[bool] = False  # scores from loss gradients: the pruner computes them first

    def width_scores(self, first: nn.Conv2d, depthwise: nn.Conv2d, norm: nn.Module | None) -> torch.Tensor:
        """Per middle channel of first → (norm) → depthwise: the product of the two filters' L2 norms."""
        return _filter_norms(first, depthwise, 2)

    def width_note(self) -> str:
        """What `width_scores` uses instead where it is not this importance ('' when it is)."""
        return ""

    @classmethod
    def check_fits(cls, model: nn.Module) -> None:
        """Refuse a model this importance cannot score, naming what it lacks."""
        if cls.needs_batchnorm and not any(
            isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()
        ):
            others = ", ".join(n for n, c in IMPORTANCES.items() if not c.needs_batchnorm)
            raise ConfigError(
                f"importance {cls.name!r} needs BatchNorm layers; {type(model).__name__} has none (use {others})"
            )


def _filter_norms(first: nn.Conv2d, depthwise: nn.Conv2d, p: int) -> torch.Tensor:
    a = first.weight.detach().flatten(1).norm(p=p, dim=1)
    return a * depthwise.weight.detach().flatten(1).norm(p=p, dim=1)


IMPORTANCES: dict[str, type[Importance]] = {}


def register(cls: type[Importance]) -> type[Importance]:
    """Add an importance plug-in under its `name` (once)."""
    if cls.name in IMPORTANCES:
        raise ValueError(f"importance {cls.name!r} is registered twice ({IMPORTANCES[cls.name]} and {cls})")
    IMPORTANCES[cls.name] = cls
    return cls


def importance_names() -> tuple[str, ...]:
    return tuple(IMPORTANCES)


def check_importance(name: str) -> type[Importance]:
    if name not in IMPORTANCES:
        raise ConfigError(f"importance {name!r} not in {importance_names()}")
    return IMPORTANCES[name]


def make_importance(name: str) -> Importance:
    """A fresh scorer of the registered importance `name`."""
    return check_importance(name)()


def importance_help() -> str:
    return "; ".join(f"{n}: {c.help}" for n, c in IMPORTANCES.items())


class _GroupNorm(Importance, tp.importance.GroupMagnitudeImportance):
    """The L`p` norm of each channel's weights across its dependency group; a block's middle channels
    by the same norm of their two filters."""

    p: ClassVar[int]

    def __init__(self) -> None:
        super().__init__(p=self.p)

    def width_scores(self, first: nn.Conv2d, depthwise: nn.Conv2d, norm: nn.Module | None) -> torch.Tensor:
        return _filter_norms(first, depthwise, self.p)


@register
class L1(_GroupNorm):
    name, p = "l1", 1
    help = "L1 norm of each channel's weights across its dependency group"


@register
class L2(_GroupNorm):
    name, p = "l2", 2
    help = "L2 norm of each channel's weights across its dependency group"


@register
class BNScale(Importance, tp.importance.BNScaleImportance):
    name = "bn"
    help = "|scale| of the channel's BatchNorm (needs BatchNorm layers)"
    needs_batchnorm = True

    def width_scores(self, first: nn.Conv2d, depthwise: nn.Conv2d, norm: nn.Module | None) -> torch.Tensor:
        return (
            norm.weight.detach().abs() if norm is not None else super().width_scores(first, depthwise, norm)
        )


@register
class Taylor(Importance, tp.importance.GroupTaylorImportance):
    name = "taylor"
    help = "first-order Taylor: |weight × gradient of the loss| on training batches"
    needs_gradients = True

    def width_note(self) -> str:
        return "importance taylor is not available here: l2"
