"""The search space as data: per model family, a list of choices per key (YAML/JSON, a preset under
`search_spaces/`), validated up front, and the mapping from optuna's parameters to a zoo model spec.

Contract: `SearchSpace.load(...)` raises ConfigError for anything malformed; `suggest` always asks
optuna for the same fixed set of parameters (NSGA-II needs it); `decode` returns a `build_model` spec.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from edgecompress.errors import ConfigError
from edgecompress.zoo import ACTIVATIONS

DEFAULT_SPACE = "default"

# key -> (kind, per-stage?) for each family; kind validates one choice
_KINDS: dict[str, Callable[[Any], bool]] = {
    "pos_int": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
    "pos_float": lambda v: isinstance(v, int | float) and not isinstance(v, bool) and v > 0,
    "odd_int": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1 and v % 2 == 1,
    "activation": lambda v: v in ACTIVATIONS,
    "downsample": lambda v: v in ("maxpool", "stride"),
    "stride": lambda v: v in (1, 2),
}
# the keys every family has, first (their order is the order choices are drawn in)
_STAGE_KEYS: dict[str, tuple[str, bool]] = {
    "stages": ("pos_int", False),
    "depth": ("pos_int", True),
    "width_mult": ("pos_float", True),
    "kernel_size": ("odd_int", True),
}
FAMILY_KEYS: dict[str, dict[str, tuple[str, bool]]] = {
    "cnn": {**_STAGE_KEYS, "activation": ("activation", False), "downsample": ("downsample", False)},
    "mobilenet": {
        **_STAGE_KEYS,
        "expansion": ("pos_int", True),
        "stride": ("stride", True),
        "activation": ("activation", False),
    },
}
DEFAULTS: dict[str, dict[str, list[Any]]] = {
    "cnn": {"kernel_size": [3], "activation": ["relu"], "downsample": ["maxpool"], "width_mult": [1.0]},
    "mobilenet": {
        "kernel_size": [3],
        "activation": ["relu6"],
        "expansion": [4],
        "stride": [2],
        "width_mult": [1.0],
    },
}


class Infeasible(Exception):
    """A candidate that breaks a constraint (or cannot be built for the data); never trained."""


@dataclass
class SearchSpace:
    """Per family: a list of choices per key, and `channels`, the base width of each stage."""

    families: dict[str, dict[str, list[Any]]]

    @classmethod
    def load(cls, source: str | Path | dict[str, Any] | None = None) -> SearchSpace:
        """A preset name (`default`), a .yaml/.json file, YAML/JSON text, or an already-parsed dict."""
        if isinstance(source, dict):
            data: Any = source
        else:
            text = str(source or DEFAULT_SPACE).strip()
            if "\n" not in text and len(text) < 4096 and Path(text).is_file():
                text = Path(text).read_text()
            elif re.fullmatch(r"[\w-]+", text):
                preset = resources.files("edgecompress") / "search_spaces" / f"{text}.yaml"
                if not preset.is_file():
                    names = sorted(p.name[:-5] for p in preset.parent.iterdir() if p.name.endswith(".yaml"))
                    raise ConfigError(
                        f"search space {text!r}: not a file, not YAML/JSON text, and not a preset (presets: {names})"
                    )
                text = preset.read_text()
            data = _parse_yaml(text)
        space = cls(families=_validate(data))
        return space

    def max_stages(self, family: str) -> int:
        return max(self.families[family]["stages"])

    def as_dict(self) -> dict[str, Any]:
        return {"families": copy.deepcopy(self.families)}

    def size(self) -> int:
        """Number of distinct architectures (per-stage choices multiply once per stage)."""
        total = 0
        for fam, keys in self.families.items():
            per_stage = math.prod(
                len(v) for k, v in keys.items() if k != "channels" and FAMILY_KEYS[fam][k][1]
            )
            shared = math.prod(
                len(v)
                for k, v in keys.items()
                if k not in ("channels", "stages") and not FAMILY_KEYS[fam][k][1]
            )
            total += sum(per_stage**s * shared for s in keys["stages"])
        return total

    def suggest(self, trial: Any) -> dict[str, Any]:
        """Ask optuna for one candidate. Every per-stage parameter is asked for all stages up to the
        family's maximum, used or not, so that the space is fixed (what NSGA-II's crossover needs)."""
        names = sorted(self.families)
        family = names[0] if len(names) == 1 else trial.suggest_categorical("family", names)
        params: dict[str, Any] = {"family": family}
        keys = self.families[family]
        for key, choices in keys.items():
            if key == "channels":
                continue
            if FAMILY_KEYS[family][key][1]:
                for i in range(self.max_stages(family)):
                    params[f"{family}.s{i}.{key}"] = trial.suggest_categorical(
                        f"{family}.s{i}.{key}", choices
                    )
            else:
                params[f"{family}.{key}"] = trial.suggest_categorical(f"{family}.{key}", choices)
        return self.decode(params)

    def smallest(self, family: str) -> dict[str, Any]:
        """The cheapest candidate of a family (fewest stages, shallowest, narrowest, most downsampling):
        if it breaks a parameter or MAC limit, no candidate of the family can meet it."""
        keys = self.families[family]
        params: dict[str, Any] = {"family": family, f"{family}.stages": min(keys["stages"])}
        for key, choices in keys.items():
            if key in ("channels", "stages"):
                continue
            if key in ("activation",):
                value = choices[0]
            elif key == "downsample":
                value = "stride" if "stride" in choices else choices[0]
            else:
                value = max(choices) if key == "stride" else min(choices)
            if FAMILY_KEYS[family][key][1]:
                params.update({f"{family}.s{i}.{key}": value for i in range(self.max_stages(family))})
            else:
                params[f"{family}.{key}"] = value
        return self.decode(params)

    def decode(self, params: dict[str, Any]) -> dict[str, Any]:
        """optuna parameters -> a zoo model spec."""
        family = params.get("family") or sorted(self.families)[0]
        keys = self.families[family]
        n = params[f"{family}.stages"]

        def stage(key: str, i: int) -> Any:
            return params.get(f"{family}.s{i}.{key}", keys[key][0])

        widths = [_round_channels(keys["channels"][i] * stage("width_mult", i)) for i in range(n)]
        depths = [stage("depth", i) for i in range(n)]
        kernels = [stage("kernel_size", i) for i in range(n)]
        activation = params.get(f"{family}.activation", keys["activation"][0])
        if family == "cnn":
            kwargs = {
                "widths": widths,
                "depths": depths,
                "kernel_size": kernels,
                "activation": activation,
                "downsample": params.get(f"{family}.downsample", keys["downsample"][0]),
            }
        else:
            stages = [
                [stage("expansion", i), widths[i], depths[i], stage("stride", i), kernels[i]]
                for i in range(n)
            ]
            kwargs = {"stages": stages, "stem_channels": widths[0], "activation": activation}
        return {"family": family, "kwargs": kwargs}


def _round_channels(c: float) -> int:
    return max(8, int(round(c / 8)) * 8)


def _parse_yaml(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"search space is not valid YAML/JSON: {exc}") from exc


def _validate(data: Any) -> dict[str, dict[str, list[Any]]]:
    if not isinstance(data, dict) or not isinstance(data.get("families"), dict) or not data["families"]:
        raise ConfigError("search space: needs a non-empty `families` mapping (e.g. families: {cnn: {...}})")
    extra = set(data) - {"families"}
    if extra:
        raise ConfigError(f"search space: unknown top-level keys {sorted(extra)}; only `families` is allowed")
    families: dict[str, dict[str, list[Any]]] = {}
    for fam, keys in data["families"].items():
        where = f"search space family {fam!r}"
        if fam not in FAMILY_KEYS:
            raise ConfigError(f"{where}: unknown family; searchable families are {sorted(FAMILY_KEYS)}")
        if not isinstance(keys, dict):
            raise ConfigError(f"{where}: must be a mapping of key -> list of choices")
        allowed = set(FAMILY_KEYS[fam]) | {"channels"}
        unknown = set(keys) - allowed
        if unknown:
            raise ConfigError(f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")
        for required in ("stages", "depth", "channels"):
            if required not in keys:
                raise ConfigError(f"{where}: `{required}` is required")
        merged = {**copy.deepcopy(DEFAULTS[fam]), **keys}
        for key, choices in merged.items():
            if not isinstance(choices, list) or not choices:
                raise ConfigError(f"{where}: `{key}` must be a non-empty list, got {choices!r}")
            check = _KINDS["pos_int"] if key == "channels" else _KINDS[FAMILY_KEYS[fam][key][0]]
            bad = [c for c in choices if not check(c)]
            if bad:
                raise ConfigError(f"{where}: invalid `{key}` values {bad}")
            if key != "channels" and len(set(map(json.dumps, choices))) != len(choices):
                raise ConfigError(f"{where}: `{key}` lists a choice twice: {choices}")
        if max(merged["stages"]) > len(merged["channels"]):
            raise ConfigError(
                f"{where}: `stages` goes up to {max(merged['stages'])} but `channels` names only "
                f"{len(merged['channels'])} stage widths"
            )
        families[fam] = merged
    return families
