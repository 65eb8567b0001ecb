"""Atomic writes: an output appears whole or not at all (no half-written artifacts), with the
permissions a plain `open`/`mkdir` would give it (the process umask), not the temp file's 0600/0700:
a later KFP task under another uid, an MLflow server or a colleague must be able to read it."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def current_umask() -> int:
    """The process umask, read without changing it where Linux says it (/proc), else set and restored."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _as_if_created(path: Path) -> None:
    """Give a temp file or directory (mkstemp: 0600, mkdtemp: 0700) the mode `open`/`mkdir` would have
    given it; files written into a temp directory already have theirs."""
    mode = (0o777 if path.is_dir() else 0o666) & ~current_umask()
    os.chmod(path, mode)


@contextlib.contextmanager
def atomic_path(target: Path, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of `target`; rename it over `target` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{target.name}.tmp-"
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, dir=target.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        if tmp.exists() and not tmp.is_symlink():
            _as_if_created(tmp)
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif directory and target.exists():
            target.unlink()
        os.replace(tmp, target)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_json(path: Path, data: object) -> None:
    """Write JSON atomically (numbers that JSON lacks, e.g. numpy scalars, through `str`)."""
    import json

    with atomic_path(Path(path)) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str))


def write_text(path: Path, text: str) -> None:
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(text)


def field_values(obj: Any, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """Dataclass `obj`'s fields by name, one level deep (unlike `dataclasses.asdict`, a nested
    dataclass stays as it is): the start of a `to_json` that converts or adds a few keys."""
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.name not in exclude}
