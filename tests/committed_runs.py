"""The committed dated runs of a benchmark (`benchmarks/<name>/<run>/results.json`, each with the
`results.md` made from it): one parametrized test per run, each first checking the Markdown is what
the renderer makes of the JSON."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


def each_run(runs: list[Path]) -> pytest.MarkDecorator:
    """Parametrize a test over `runs` (their results.json paths) as `path`, named by run folder."""
    return pytest.mark.parametrize("path", runs, ids=lambda p: p.parent.name)


def rendered_results(path: Path, render: Callable[[dict[str, Any]], str]) -> dict[str, Any]:
    """The run's results.json, once its results.md is checked to be `render(results)`."""
    results = json.loads(path.read_text())
    assert (path.parent / "results.md").read_text() == render(results)
    return results
