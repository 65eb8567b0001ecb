"""`python -m edgecompress.farm …`: the farm commands alone (`edgecompress farm …` without loading
the rest of the CLI, whose pipeline commands import torch and MLflow). Agents and the local farm
start their processes this way. The farm is a service: this entry point runs its own commands
(`edgecompress.farm.commands`, which the CLI adapter also registers), never the CLI adapter."""

from __future__ import annotations

import sys

from edgecompress.entry import run

if __name__ == "__main__":
    sys.exit(run(["farm", *sys.argv[1:]], ["edgecompress.farm.commands"]))
