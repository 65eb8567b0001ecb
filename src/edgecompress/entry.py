"""Running an `edgecompress …` command line: the parser's common options, logging, and exit codes
(2 for an EdgeCompressError, with its message; 130 when interrupted). Shared by the CLI adapter
(`edgecompress.cli`, every command group) and the farm service's own entry point
(`python -m edgecompress.farm`, the farm commands alone), which must not import the adapter."""

from __future__ import annotations

import argparse
import importlib
import inspect
import logging
import os
import sys
from collections.abc import Callable

from edgecompress import __version__
from edgecompress.errors import EdgeCompressError


def build_parser(command_modules: list[str]) -> argparse.ArgumentParser:
    """A parser with the command groups of `command_modules` (each has `register(subparsers)`)."""
    parser = argparse.ArgumentParser(
        prog="edgecompress",
        description="Compress PyTorch models for edge devices (prune, quantize, distill, NAS), prove it on "
        "device benchmarks, and record lineage in MLflow.",
    )
    parser.add_argument("--version", action="version", version=f"edgecompress {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in command_modules:
        importlib.import_module(name).register(sub)
    return parser


def add_command(
    sub: argparse._SubParsersAction, func: Callable[[argparse.Namespace], int]
) -> argparse.ArgumentParser:
    """The subcommand that runs `func(args)`: a function `cmd_<name>` makes the command `<name>` (`_`
    as `-`); the first paragraph of its docstring is the command's line in the list of commands, the
    rest the description its own --help shows."""
    name = func.__name__.removeprefix("cmd_").replace("_", "-")
    summary, _, description = (inspect.getdoc(func) or "").partition("\n\n")
    p = sub.add_parser(name, help=_paragraph(summary), description=_paragraph(description))
    p.set_defaults(func=func)
    return p


def _paragraph(text: str) -> str | None:
    return " ".join(text.split()) or None


def run(argv: list[str] | None, command_modules: list[str]) -> int:
    parser = build_parser(command_modules)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("alembic", "mlflow", "urllib3", "kfp"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    try:
        return int(args.func(args) or 0)
    except EdgeCompressError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
