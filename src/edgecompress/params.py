"""One parameter surface per technique: its config dataclass is the only definition of a setting's
name, default, range and meaning. KFP component signatures, CLI options and pipeline parameters are
derived from it (CLI, pipelines) or checked against it by a test (components, whose signatures KFP
needs as literal source).

A dataclass field becomes one flat parameter of a KFP-friendly type (int, float, bool, str):

- `X | None` -> X, with the field's `unset` metadata (default 0 for int, -1.0 for float) meaning None;
- `tuple[str, ...]` / `tuple[float, ...]` -> a comma-separated str;
- a field with `codec` metadata (a `Codec`) -> its flat type, converted both ways by the codec;
- a nested dataclass with `flatten` metadata -> its own fields, inlined (at any depth); its `rename`
  metadata ({inner flat name: name here}) renames some of them where it is embedded;
- `list[str]` -> a KFP list (a comma-separated str from a terminal);
- a field with `flat=False` metadata is not part of the surface; `flat_name` renames it, and
  `flat_default` gives the flat default of a field whose own default is computed (e.g. "auto").

`help` metadata is the one-line description shown by the CLI.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from edgecompress.errors import ConfigError

FLAT_TYPES = (int, float, bool, str)


@dataclass(frozen=True)
class Codec:
    """How a field that is not a plain scalar travels as one flat value."""

    type: type
    decode: Callable[[Any], Any]  # flat -> field value
    encode: Callable[[Any], Any]  # field value -> flat


def csv_names(text: Any) -> tuple[str, ...]:
    if isinstance(text, str):
        return tuple(n.strip() for n in text.split(",") if n.strip())
    return tuple(text)


def csv_floats(text: Any) -> tuple[float, ...]:
    if isinstance(text, str):
        try:
            return tuple(float(v) for v in text.split(",") if v.strip())
        except ValueError as exc:
            raise ConfigError(f"expected comma-separated numbers, got {text!r}") from exc
    return tuple(float(v) for v in text)


def _join(values: Iterable[Any]) -> str:
    return ",".join(str(v) for v in values)


CSV_NAMES = Codec(str, csv_names, _join)
CSV_FLOATS = Codec(str, csv_floats, _join)


@dataclass(frozen=True)
class Param:
    """One flat parameter: its name, KFP type, flat default and help, and where it lives in the config."""

    name: str
    type: type
    default: Any
    help: str
    path: tuple[str, ...]
    decode: Callable[[Any], Any]
    encode: Callable[[Any], Any]
    choices: tuple[Any, ...] | None = None


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise TypeError(f"field {f.name} has no default: every setting needs one")


def _optional_of(annotation: Any) -> Any | None:
    """X for `X | None`, else None."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(annotation)) == 2:
            return args[0]
    return None


def _codec_for(f: dataclasses.Field, annotation: Any) -> tuple[type, Callable, Callable]:
    codec = f.metadata.get("codec")
    if codec is not None:
        return codec.type, codec.decode, codec.encode
    if annotation in FLAT_TYPES:
        kind = annotation
        return kind, (lambda v, k=kind: _coerce(v, k)), (lambda v: v)
    inner = _optional_of(annotation)
    if inner in (int, float):
        unset = f.metadata.get("unset", 0 if inner is int else -1.0)

        def decode(v: Any, k=inner, u=unset) -> Any:
            return None if v is None or v == u else _coerce(v, k)

        return inner, decode, (lambda v, u=unset: u if v is None else v)
    if inner is str:
        return str, (lambda v: v or None), (lambda v: v or "")
    if typing.get_origin(annotation) is list:
        return list, (lambda v: list(csv_names(v))), list
    if typing.get_origin(annotation) is tuple:
        args = typing.get_args(annotation)
        if args and args[0] is float:
            return str, CSV_FLOATS.decode, CSV_FLOATS.encode
        return str, CSV_NAMES.decode, CSV_NAMES.encode
    raise TypeError(f"field {f.name}: {annotation!r} has no flat form; give it a `codec` in its metadata")


def _coerce(value: Any, kind: type) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)  # KFP hands floats over as ints sometimes (1000 -> 1000.0)
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)  # KFP local returns integer metadata as float
    return value


def surface(config: type, prefix: str = "", exclude: Iterable[str] = (), defaults: Any = None) -> list[Param]:
    """The flat parameters of a config dataclass, in field order. A flattened field's parameters take
    their defaults from the field's own default instance (a distillation's `train` default is not a
    plain TrainConfig)."""
    hints = typing.get_type_hints(config)
    excluded = set(exclude)
    out: list[Param] = []
    for f in dataclasses.fields(config):
        if not f.metadata.get("flat", True) or f.name in excluded:
            continue
        own_default = getattr(defaults, f.name) if defaults is not None else _field_default(f)
        if f.metadata.get("flatten"):
            inner_excluded = excluded | set(f.metadata.get("exclude", ()))
            renames = f.metadata.get("rename", {})
            for p in surface(hints[f.name], "", inner_excluded, own_default):
                name = prefix + renames.get(p.name, p.name)
                out.append(dataclasses.replace(p, name=name, path=(f.name, *p.path)))
            continue
        kind, decode, encode = _codec_for(f, hints[f.name])
        default = f.metadata["flat_default"] if "flat_default" in f.metadata else encode(own_default)
        out.append(
            Param(
                f"{prefix}{f.metadata.get('flat_name', f.name)}",
                kind,
                default,
                f.metadata.get("help", ""),
                (f.name,),
                decode,
                encode,
                f.metadata.get("choices"),
            )
        )
    return out


def build(config: type, values: Mapping[str, Any], prefix: str = "", **overrides: Any):
    """A config from flat values (missing ones take their defaults); `overrides` set fields directly."""
    tree: dict[str, Any] = {}
    for p in surface(config, prefix):
        if p.name in values:
            node = tree
            for part in p.path[:-1]:
                node = node.setdefault(part, _Nested())
            node[p.path[-1]] = p.decode(values[p.name])
    fields = {f.name: f for f in dataclasses.fields(config)}
    top = {
        k: _replaced(_field_default(fields[k]), v) if isinstance(v, _Nested) else v for k, v in tree.items()
    }
    return config(**{**top, **overrides})


class _Nested(dict):
    """Changed fields of a flattened (nested) config, by field name."""


def _replaced(default: Any, changed: _Nested) -> Any:
    """`default` (a flattened field's own default) with the changed fields, at any depth."""
    own = {k: _replaced(getattr(default, k), v) if isinstance(v, _Nested) else v for k, v in changed.items()}
    return dataclasses.replace(default, **own)


def flat_values(obj: Any, prefix: str = "") -> dict[str, Any]:
    """The flat parameters of a config instance (what `build` turns back into it)."""
    out = {}
    for p in surface(type(obj), prefix):
        value = obj
        for part in p.path:
            value = getattr(value, part)
        out[p.name] = p.encode(value)
    return out


def option(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_options(
    parser: argparse.ArgumentParser, config: type, exclude: Iterable[str] = (), prefix: str = ""
) -> None:
    """One CLI option per flat parameter, named after the field (`qat_lr` -> `--qat-lr`)."""
    group = parser.add_argument_group(f"{config.__name__} settings")
    for p in surface(config, prefix, exclude):
        doc = f"{p.help} ".replace("%", "%%") if p.help else ""  # argparse %-formats help strings
        if p.type is bool:
            group.add_argument(
                option(p.name),
                dest=p.name,
                action=argparse.BooleanOptionalAction,
                default=p.default,
                help=f"{doc}(default: {p.default})",
            )
        else:
            kind = (lambda v: list(csv_names(v))) if p.type is list else p.type
            shown = (",".join(p.default) if p.type is list else repr(p.default)).replace("%", "%%")
            group.add_argument(
                option(p.name),
                dest=p.name,
                type=kind,
                default=p.default,
                choices=p.choices,
                help=f"{doc}(default: {shown})",
            )


def from_args(config: type, args: argparse.Namespace, prefix: str = "", **overrides: Any):
    return build(config, vars(args), prefix, **overrides)


def signature_parameters(params: Iterable[Param]) -> list[inspect.Parameter]:
    """`inspect.Parameter`s for a generated function signature (KFP reads names, types, defaults)."""
    return [
        inspect.Parameter(
            p.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=p.default, annotation=p.type
        )
        for p in params
    ]
