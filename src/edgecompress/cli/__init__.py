"""`edgecompress …`: the terminal adapter over the library. Each command group is a module in this
package with `register(subparsers)`; commands call library functions and print results."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from edgecompress import __version__
from edgecompress.errors import EdgeCompressError

# One module per command group; each adds its subcommands in register().
COMMAND_MODULES = [
    "edgecompress.cli.pipeline",  # run, compile
    "edgecompress.cli.steps",  # dataset, train, evaluate, benchmark
    "edgecompress.cli.quant",  # quantize, autotune
    "edgecompress.cli.farm",  # farm controller, agent, submit, devices, jobs, up
    "edgecompress.cli.lineage",  # lineage, audit, promote, drift
    "edgecompress.cli.cluster",  # submit, schedule (Kubeflow Pipelines on a cluster)
    "edgecompress.cli.compress",  # prune, distill, sensitivity
    "edgecompress.cli.nas",  # nas
    "edgecompress.cli.profile",  # profile
]


def build_parser(command_modules: list[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgecompress",
        description="Compress PyTorch models for edge devices (prune, quantize, distill, NAS), prove it on "
        "device benchmarks, and record lineage in MLflow.",
    )
    parser.add_argument("--version", action="version", version=f"edgecompress {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in command_modules or COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None, command_modules: list[str] | None = None) -> int:
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


if __name__ == "__main__":
    sys.exit(main())
