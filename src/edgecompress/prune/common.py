"""What every pruning method shares: the option vocabularies, the layer kinds that can be pruned, ratio
and layer-name checks, and parsing of the flat (string) parameters a component or CLI passes.

Names with a leading underscore are internal to `edgecompress.prune`; its submodules import them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from torch import nn

from edgecompress.errors import ConfigError
from edgecompress.params import Codec
from edgecompress.prune.importance import importance_names

# the registered importance plug-ins (`prune.importance`), for option choices
IMPORTANCES = importance_names()
BUDGET_METRICS = ("macs", "params", "latency")
SCOPES = ("global", "layer")
_PRUNABLE = (nn.Conv2d, nn.Conv1d, nn.Linear)


def _check_ratio(name: str, value: float) -> None:
    if not 0.0 < float(value) < 1.0:
        raise ConfigError(f"{name} must be in (0, 1), got {value}")


def _modules_by_name(model: nn.Module, names: Sequence[str], what: str) -> dict[str, nn.Module]:
    """Resolve module names, naming the first that does not exist (and what does)."""
    modules = dict(model.named_modules())
    out = {}
    for name in names:
        if name not in modules or not name:
            prunable = [n for n, m in modules.items() if isinstance(m, _PRUNABLE)]
            raise ConfigError(
                f"{what}: the model has no layer named {name!r}; prunable layers are {prunable}"
            )
        out[name] = modules[name]
    return out


def output_layers(model: nn.Module, num_classes: int) -> list[nn.Module]:
    """The classifier layers (Linear with `num_classes` outputs): never pruned, the output must keep its classes."""
    return [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == num_classes]


def parse_layer_ratios(text: str | dict[str, float]) -> dict[str, float]:
    """`{"features.0": 0.3}` (JSON), `features.0=0.3,features.3=0.5`, or empty."""
    if isinstance(text, dict):
        return {str(k): float(v) for k, v in text.items()}
    text = text.strip()
    if not text:
        return {}
    if text.startswith("{"):
        try:
            return parse_layer_ratios(json.loads(text))
        except (json.JSONDecodeError, TypeError, ValueError) as exc:
            raise ConfigError(f"layer_ratios is not a JSON object of layer → ratio: {exc}") from exc
    out = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise ConfigError(f"layer_ratios item {item!r} must look like 'layer.name=0.3'")
    return out


def parse_attention_heads(text: str | dict[str, int]) -> dict[str, int]:
    """`{"blocks.0.attn": 4}` (JSON), `blocks.0.attn=4,blocks.1.attn=4`, or empty: whole head counts."""
    try:
        parsed = parse_layer_ratios(text)
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("layer_ratios", "attention_heads").replace("0.3", "4")) from exc
    out = {name: int(heads) for name, heads in parsed.items()}
    bad = {name: parsed[name] for name in out if out[name] != parsed[name]}
    if bad:
        raise ConfigError(f"attention_heads must be whole head counts, got {bad}")
    return out


def parse_names(text: str | Sequence[str]) -> tuple[str, ...]:
    items = text.split(",") if isinstance(text, str) else list(text)
    return tuple(n.strip() for n in items if n.strip())


def parse_ratios(text: str | Sequence[float]) -> tuple[float, ...]:
    items = [t for t in text.split(",") if t.strip()] if isinstance(text, str) else list(text)
    try:
        return tuple(float(t) for t in items)
    except ValueError as exc:
        raise ConfigError(f"ratios {text!r} must be comma-separated numbers in (0, 1)") from exc


def _layer_ratios_flat(ratios: dict[str, float]) -> str:
    return ",".join(f"{name}={r:g}" for name, r in ratios.items())


LAYER_RATIOS = Codec(str, parse_layer_ratios, _layer_ratios_flat)
ATTENTION_HEADS = Codec(
    str, parse_attention_heads, lambda heads: ",".join(f"{n}={h}" for n, h in heads.items())
)
