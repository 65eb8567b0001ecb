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
    sub: argparse._SubParsersAction, name: str, func: Callable[[argparse.Namespace], int], help: str
) -> argparse.ArgumentParser:
    """Subcommand `name`, which runs `func(args)`: `help` is its line in the list of commands, and
    `func`'s docstring, as one paragraph, the description its own --help shows."""
    doc = inspect.getdoc(func)
    p = sub.add_parser(name, help=help, description=" ".join(doc.split()) if doc else None)
    p.set_defaults(func=func)
    return p


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
