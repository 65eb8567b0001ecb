"""Retention: what the controller deletes so that a long-running farm does not fill its disk.

- Finished (done/failed) jobs that finished more than `max_age_s` ago.
- Uploaded model blobs no job names any more and nobody has uploaded or asked about for `max_age_s`
  (an upload or a HEAD of an existing blob refreshes its time, so a client that just checked a blob
  can still submit against it).
- Upload temp files (`.upload-*`, left by a killed controller or a cut connection) older than
  `stale_upload_s`, at start-up and on every pass; a live upload writes to its file continuously and
  so is never that old (several controllers may share the blob folder).
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

from edgecompress.farm.store import JobStore

log = logging.getLogger(__name__)

UPLOAD_PREFIX = ".upload-"
BLOB_NAME = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class Swept:
    jobs: int = 0
    blobs: int = 0
    uploads: int = 0


def clean_uploads(blob_dir: Path, stale_upload_s: float, now: float | None = None) -> int:
    """Delete upload temp files not written to for `stale_upload_s` seconds."""
    now = time.time() if now is None else now
    removed = 0
    for path in Path(blob_dir).glob(f"{UPLOAD_PREFIX}*"):
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_mtime < now - stale_upload_s:
                path.unlink()
                removed += 1
    return removed


def apply_retention(store: JobStore, blob_dir: Path, max_age_s: float, stale_upload_s: float) -> Swept:
    """One retention pass (`max_age_s` <= 0 keeps jobs and blobs forever)."""
    now = time.time()
    swept = Swept(uploads=clean_uploads(blob_dir, stale_upload_s, now))
    if max_age_s <= 0:
        return swept
    swept.jobs = store.delete_finished(now - max_age_s)
    referenced = store.blob_references()
    for path in Path(blob_dir).iterdir():
        if BLOB_NAME.match(path.name) and path.name not in referenced:
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < now - max_age_s:
                    path.unlink()
                    store.forget_blob(path.name)
                    swept.blobs += 1
    if swept.jobs or swept.blobs or swept.uploads:
        log.info(
            "retention: deleted %d jobs, %d blobs, %d upload leftovers",
            swept.jobs,
            swept.blobs,
            swept.uploads,
        )
    return swept
