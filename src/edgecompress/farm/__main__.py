"""`python -m edgecompress.farm …`: the farm commands alone (`edgecompress farm …` without loading
the rest of the CLI, whose pipeline commands import torch and MLflow). Agents and the local farm
start their processes this way."""

from __future__ import annotations

import sys

from edgecompress.cli import main

if __name__ == "__main__":
    sys.exit(main(["farm", *sys.argv[1:]], command_modules=["edgecompress.cli.farm"]))
