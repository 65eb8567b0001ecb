"""Reading a bearer token from a file, a value or the environment. Contract: no dependency beyond the
standard library, so the agent (and its images, which have neither FastAPI nor SQLAlchemy) can use it;
a file wins and only its first line counts."""

from __future__ import annotations

import os
from pathlib import Path

from edgecompress.errors import ConfigError


def read_token(value: str | None, file: Path | None, env: str) -> str:
    """A token from a file (first line), else the given value, else the environment."""
    if file is not None:
        try:
            return Path(file).read_text().strip().splitlines()[0].strip()
        except (OSError, IndexError) as exc:
            raise ConfigError(f"cannot read a token from {file}: {exc}") from exc
    return (value or os.environ.get(env, "")).strip()
