"""The `edgecompress` parser tree as plain data: every command and subcommand with, per action, its
flags, dest, default, help, choices, type, nargs, required and action class. `tests/parser_tree.json`
is this dump, committed; `tests/test_parser_tree.py` checks the parser still matches it, so refactoring
how options are added cannot change the command line by accident. After an intended change:
`.venv/bin/python -m tests.parser_tree > tests/parser_tree.json` (from the repository root)."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any
from unittest import mock

# Defaults read from the environment are dumped as if it were empty.
_ENV_PREFIXES = ("EDGECOMPRESS_", "MLFLOW_", "KFP_", "FARM_")


def _name(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [_name(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _name(v) for k, v in value.items()}
    module = getattr(value, "__module__", None)
    qualname = getattr(value, "__qualname__", None)
    if qualname:
        return f"{module}.{qualname}"
    return repr(value)


def _parser(parser: argparse.ArgumentParser) -> dict[str, Any]:
    actions = []
    commands = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                commands[name] = {"help": helps.get(name), **_parser(sub)}
            actions.append(
                {"subparsers": action.dest, "required": action.required, "metavar": action.metavar}
            )
            continue
        actions.append(
            {
                "flags": list(action.option_strings),
                "dest": action.dest,
                "action": type(action).__name__,
                "default": _name(action.default),
                "const": _name(action.const),
                "help": action.help,
                "choices": _name(list(action.choices) if action.choices is not None else None),
                "type": _name(action.type),
                "nargs": action.nargs,
                "required": action.required,
                "metavar": _name(action.metavar),
            }
        )
    groups = [
        {"title": g.title, "dests": [a.dest for a in g._group_actions]}
        for g in parser._action_groups + parser._mutually_exclusive_groups
        if g._group_actions
    ]
    return {
        "defaults": {k: _name(v) for k, v in parser._defaults.items()},
        "description": parser.description,
        "epilog": parser.epilog,
        "actions": actions,
        "groups": groups,
        "commands": commands,
    }


def dump() -> dict[str, Any]:
    from edgecompress.cli import build_parser

    env = {k: v for k, v in os.environ.items() if not k.startswith(_ENV_PREFIXES)}
    with mock.patch.dict(os.environ, env, clear=True):
        return _parser(build_parser())


if __name__ == "__main__":
    print(json.dumps(dump(), indent=1, sort_keys=True))
