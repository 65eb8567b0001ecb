"""Progress bars (rich) that stay quiet when output is not a terminal or progress is switched off."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any


class _SilentProgress:
    def add_task(self, description: str, total: float | None = None, **_: Any) -> int:
        return 0

    def advance(self, task: int, advance: float = 1) -> None:
        pass

    def update(self, task: int, **_: Any) -> None:
        pass


@contextlib.contextmanager
def progress_bar(enabled: bool = True) -> Iterator[Any]:
    """A rich Progress on a terminal; a no-op in CI logs, KFP task logs and tests."""
    if not enabled or not sys.stderr.isatty() or os.environ.get("EDGECOMPRESS_NO_PROGRESS"):
        yield _SilentProgress()
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=False,
    ) as bar:
        yield bar
