"""`edgecompress …`: the terminal adapter over the library. Each command group is a module in this
package with `register(subparsers)`; commands call library functions and print results."""

from __future__ import annotations

import argparse
import sys

from edgecompress import entry

# One module per command group; each adds its subcommands in register().
COMMAND_MODULES = [
    "edgecompress.cli.pipeline",  # run, compile
    "edgecompress.cli.steps",  # dataset, train, evaluate, benchmark
    "edgecompress.cli.quant",  # quantize, autotune
    "edgecompress.farm.commands",  # farm controller, agent, submit, devices, jobs, up
    "edgecompress.cli.lineage",  # lineage, audit, promote, drift
    "edgecompress.cli.cluster",  # submit, schedule (Kubeflow Pipelines on a cluster)
    "edgecompress.cli.compress",  # prune, distill, sensitivity
    "edgecompress.cli.nas",  # nas
    "edgecompress.cli.profile",  # profile
]


def build_parser(command_modules: list[str] | None = None) -> argparse.ArgumentParser:
    return entry.build_parser(command_modules or COMMAND_MODULES)


def main(argv: list[str] | None = None, command_modules: list[str] | None = None) -> int:
    return entry.run(argv, command_modules or COMMAND_MODULES)


if __name__ == "__main__":
    sys.exit(main())
