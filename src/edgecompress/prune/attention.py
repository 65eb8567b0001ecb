"""What structured pruning must know about transformers: where the attention heads are, which
parameters live outside any layer, and which channel groups cannot be pruned without breaking the
model's own forward code.

- **Attention heads.** An attention module is found by its head-count attribute (`num_heads`,
  `num_attention_heads`, … or a name → heads entry in `StructuredConfig.attention_heads`) and its
  q/k/v projections: one fused Linear (`qkv`, `in_proj`, `c_attn`, …) or three (`q`/`k`/`v`,
  `query`/`key`/`value`, `q_proj`/…). Torch-Pruning then removes whole heads (the head width stays,
  so `head_dim ** -0.5` scales stay right), and the module's head count and inner width attributes
  are updated after each step. `nn.MultiheadAttention` needs its width to stay a multiple of its head
  count: its channel group is pruned in as many equal slices as it has heads.
- **Unwrapped parameters** (a class token, a position embedding, a layer scale) are handed to
  Torch-Pruning with their last non-singleton dimension as the channel dimension, instead of being
  guessed with a warning.
- **Safety probe.** Before pruning, every channel group that holds more than convolutions and their
  norms (a Linear, a LayerNorm, an attention, an unwrapped parameter: where user code reshapes by
  hand) is tried alone on a copy of the model (one head, or one channel per slice, removed) and the
  copy is run. A group whose copy fails, or no
  longer maps the input to the classes, is kept whole, with a log message naming its layers and the
  error: a hard-coded width in user code skips that layer instead of crashing the prune.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

log = logging.getLogger(__name__)

HEAD_ATTRIBUTES = ("num_heads", "num_attention_heads", "n_heads", "n_head", "heads", "nhead")
# attributes that hold the attention's inner width (heads x head width): updated with the head count
WIDTH_ATTRIBUTES = ("attn_dim", "all_head_size", "inner_dim", "inner_size")
# attributes that often hold the residual width but, in attention written with one width for both,
# may be what the forward reshapes the heads' output to: updated only where the probe shows it must be
INNER_WIDTH_CANDIDATES = ("dim", "embed_dim", "hidden_size", "d_model", "width", "all_head_dim")
_FUSED = re.compile(r"^(qkv|in_proj|c_attn|query_key_value|wqkv|to_qkv)$")
_SEPARATE = re.compile(r"^(to_)?(q|k|v|query|key|value)(_proj|_lin|_linear)?$")


@dataclass
class AttentionLayout:
    """One attention module: its q/k/v projections (one fused or three), head count and where it is kept."""

    name: str
    module: nn.Module
    projections: list[nn.Linear]
    heads: int
    heads_attribute: str | None
    width_attributes: list[str] = field(default_factory=list)

    @property
    def fused(self) -> bool:
        return len(self.projections) == 1

    @property
    def head_width(self) -> int:
        return self.projections[0].out_features // (self.heads * (3 if self.fused else 1))

    def set_heads(self, heads: int) -> None:
        """Record a new head count on the module (and its inner width), as its forward reads them."""
        if self.heads_attribute:
            setattr(self.module, self.heads_attribute, heads)
        for attr in self.width_attributes:
            setattr(self.module, attr, heads * self.head_width_before)
        self.heads = heads

    def __post_init__(self) -> None:
        self.head_width_before = self.head_width


def _projections(module: nn.Module) -> list[nn.Linear]:
    children = [(n, m) for n, m in module.named_children() if isinstance(m, nn.Linear)]
    fused = [m for n, m in children if _FUSED.match(n.lower())]
    if len(fused) == 1:
        return fused
    separate = {}
    for n, m in children:
        match = _SEPARATE.match(n.lower())
        if match:
            separate[match.group(2)[0]] = m  # q/query -> q, k/key -> k, v/value -> v
    if set(separate) == {"q", "k", "v"}:
        return [separate["q"], separate["k"], separate["v"]]
    return []


def find_attention(
    model: nn.Module, attention_heads: dict[str, int] | None = None
) -> tuple[list[AttentionLayout], list[nn.MultiheadAttention]]:
    """Attention modules with q/k/v Linear projections, and `nn.MultiheadAttention` modules."""
    attention_heads = attention_heads or {}
    layouts, mha = [], []
    for name, module in model.named_modules():
        if isinstance(module, nn.MultiheadAttention):
            mha.append(module)
            continue
        attr = next((a for a in HEAD_ATTRIBUTES if isinstance(getattr(module, a, None), int)), None)
        heads = attention_heads.get(name, getattr(module, attr) if attr else 0)
        if heads < 1:
            continue
        projections = _projections(module)
        if not projections:
            if name in attention_heads:
                log.warning(
                    "attention_heads names %r, but it has no q/k/v Linear children the pruner recognises",
                    name,
                )
            continue
        per = 3 if len(projections) == 1 else 1
        if any(p.out_features % (heads * per) for p in projections):
            log.warning(
                "attention %r: projection widths %s are not a multiple of its %d heads; its heads are kept",
                name,
                [p.out_features for p in projections],
                heads,
            )
            continue
        inner = projections[0].out_features // per
        widths = [a for a in WIDTH_ATTRIBUTES if getattr(module, a, None) == inner]
        layouts.append(AttentionLayout(name, module, projections, heads, attr, widths))
    return layouts, mha


def unwrapped_parameters(model: nn.Module) -> dict[nn.Parameter, int]:
    """Parameters held directly by a module Torch-Pruning has no pruner for (class token, position
    embedding, layer scale), with their last non-singleton dimension."""
    import torch_pruning as tp

    t = tp.ops.OPTYPE
    layers = {t.CONV, t.DEPTHWISE_CONV, t.LINEAR, t.BN, t.LN, t.GN, t.IN, t.EMBED, t.PRELU, t.MHA, t.LSTM}
    out = {}
    for module in model.modules():
        if tp.ops.module2type(module) in layers:
            continue
        for param in module.parameters(recurse=False):
            sizes = [i for i, s in enumerate(param.shape) if s > 1]
            if sizes:
                out[param] = sizes[-1]
    return out


def _probe_error(
    model: nn.Module,
    sub,
    names: dict[int, str],
    layout: AttentionLayout | None,
    extra_widths: list[str],
    example: torch.Tensor,
    num_classes: int,
) -> str | None:
    """Prune the group `sub` on a copy of `model` (and, for attention, lower its head count and the
    width attributes), run it: the error its forward raises, or None."""
    from torch_pruning import _helpers

    trial = copy.deepcopy(model)
    try:
        for dep, dep_idxs in sub:
            name = names.get(id(dep.target.module))
            if name is None:  # one of Torch-Pruning's own op nodes (reshape, concat …): no weights
                continue
            dep.handler.__self__.pruning_dim = dep.target.pruning_dim  # as Dependency.__call__ does
            if dep_idxs and isinstance(dep_idxs[0], _helpers._HybridIndex):
                dep_idxs = _helpers.to_plain_idxs(dep_idxs)
            pruned = dep.handler(_resolve(trial, name), dep_idxs)
            if isinstance(dep.target.module, nn.Parameter):
                parent, _, attr = name.rpartition(".")
                setattr(_resolve(trial, parent), attr, pruned)
        if layout is not None:
            trial_layout = copy.copy(layout)
            trial_layout.module = _resolve(trial, layout.name)
            trial_layout.width_attributes = layout.width_attributes + extra_widths
            trial_layout.set_heads(layout.heads - 1)
        with torch.no_grad():
            out = trial.eval()(example)
        if tuple(out.shape) != (example.shape[0], num_classes):
            return f"output shape {tuple(out.shape)}"
    except Exception as exc:  # what the user's forward raises on the pruned copy
        return f"{type(exc).__name__}: {str(exc)[:200]}"
    return None


def _attention_message(layout: AttentionLayout, names: dict[int, str], error: str) -> str:
    """Why an attention module keeps its heads, said once for the module (not per projection)."""
    projections = ", ".join(names.get(id(p), "?").rpartition(".")[2] for p in layout.projections)
    updated = [a for a in (layout.heads_attribute, *layout.width_attributes) if a]
    told = f"{', '.join(updated)} updated" if updated else "no head-count attribute to update"
    return (
        f"structured pruning keeps every head of attention {layout.name!r} ({projections} keep their "
        f"width): with one head removed ({told}) its forward fails ({error}). Its forward reshapes the "
        "heads' output to a width it does not read from those attributes, e.g. reshape(b, n, d) with d "
        "taken from the input's shape, so no head can go while the input width stays. Reshape to "
        "(b, n, -1) or (b, n, num_heads * head_dim) and its whole heads are pruned (as Torch-Pruning "
        "does for Hugging Face models, whose all_head_size follows the head count)"
    )


def _named(model: nn.Module) -> dict[int, str]:
    names = {id(m): n for n, m in model.named_modules()}
    names.update({id(p): n for n, p in model.named_parameters()})
    return names


def _resolve(model: nn.Module, name: str):
    target = model
    for part in name.split("."):
        if part:
            target = getattr(target, part)
    return target


def _probe_indices(channels: int, slices: int, head_width: int | None) -> list[int]:
    if head_width:  # the last head
        return list(range(channels - head_width, channels))
    step = channels // slices
    return [(s + 1) * step - 1 for s in range(slices)]  # one channel of each slice


def unsafe_groups(
    model: nn.Module,
    example: torch.Tensor,
    num_classes: int,
    ignored: Sequence[nn.Module],
    layouts: Sequence[AttentionLayout],
    channel_slices: dict[nn.Module, int],
    unwrapped: dict[nn.Parameter, int],
) -> dict[nn.Module, str]:
    """Root layers of the channel groups that break the model when pruned (each tried alone on a
    copy), with the message naming the layers and the error (the caller logs it, once per prune)."""
    import torch_pruning as tp

    graph = tp.DependencyGraph().build_dependency(
        model, example_inputs=example, unwrapped_parameters=list(unwrapped.items())
    )
    names = _named(model)
    by_projection = {id(p): layout for layout in layouts for p in layout.projections}
    unsafe: dict[nn.Module, str] = {}
    convolutional = (nn.modules.conv._ConvNd, nn.modules.batchnorm._BatchNorm)
    for group in graph.get_all_groups(
        ignored_layers=list(ignored), root_module_types=[nn.Conv2d, nn.Conv1d, nn.Linear]
    ):
        root = group[0].dep.target.module
        members = [dep.target.module for dep, _ in group if id(dep.target.module) in names]
        if all(isinstance(m, convolutional) for m in members):
            continue  # Torch-Pruning's home ground: channel pruning of convolutions is exact
        layout = by_projection.get(id(root))
        channels = len(group[0].idxs)
        slices = max([channel_slices.get(dep.target.module, 1) for dep, _ in group] + [1])
        if layout is not None:
            # a fused qkv's group indexes q, k and v together: one head is removed from each third
            width = layout.head_width
            base = _probe_indices(channels // 3 if layout.fused else channels, 1, width)
            thirds = channels // 3
            idxs = [i + t * thirds for t in range(3) for i in base] if layout.fused else base
        else:
            idxs = _probe_indices(channels, slices, None)
        sub = graph.get_pruning_group(root, group[0].dep.handler, idxs)
        error = _probe_error(model, sub, names, layout, [], example, num_classes)
        if error and layout is not None:
            # as Torch-Pruning's Hugging Face recipe updates `all_head_size` with the heads: a module
            # attribute holding the inner width (e.g. `self.dim`) that the forward reshapes to
            extra = [
                a
                for a in INNER_WIDTH_CANDIDATES
                if a not in layout.width_attributes
                and getattr(layout.module, a, None) == layout.heads * layout.head_width
            ]
            if extra and not _probe_error(model, sub, names, layout, extra, example, num_classes):
                layout.width_attributes += extra
                log.info("attention %r: %s follow its head count", layout.name, ", ".join(extra))
                error = None
        if error:
            layers = sorted({names[id(m)] for m in members})
            if layout is not None:
                unsafe[root] = _attention_message(layout, names, error)
                continue
            message = (
                f"structured pruning skips layer {names.get(id(root), '?')!r} (and the layers pruned with "
                f"it: {', '.join(layers[:12]) + (' …' if len(layers) > 12 else '')}): removing its channels "
                f"breaks the model's forward ({error})"
            )
            unsafe[root] = message  # the caller says it, once
    return unsafe
