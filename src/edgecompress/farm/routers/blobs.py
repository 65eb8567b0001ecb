"""Models as content-addressed blobs: a client uploads (PUT) and checks (HEAD) its own; an agent
downloads (GET) the model of a job it holds, and no other."""

# No `from __future__ import annotations`: FastAPI reads the annotations at runtime.

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import FileResponse
from starlette.requests import ClientDisconnect

from edgecompress.farm.identity import Principal
from edgecompress.farm.routers.deps import AsAgent, AsAnyone, AsClient, State, visible_to
from edgecompress.farm.wire import BlobStored

router = APIRouter(prefix="/v1/blobs")


@router.put("/{sha256}", status_code=201)
async def put_blob(sha256: str, request: Request, who: AsClient, state: State) -> BlobStored:
    """Upload a model; the body must hash to the sha256 in the path. Content-addressed: an
    existing blob is kept (and its time refreshed: retention counts from the last use). A body
    that is cut short or too large leaves nothing behind. The uploader is recorded: only it may
    HEAD the blob or submit jobs against it (the same bytes uploaded by two clients: both)."""
    target = state.blob_path(sha256)
    limit = state.config.max_model_bytes
    digest, size = hashlib.sha256(), 0
    fd, tmp_name = tempfile.mkstemp(prefix=".upload-", dir=state.blob_dir)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise HTTPException(413, f"model exceeds the limit of {limit} bytes")
                digest.update(chunk)
                f.write(chunk)
        if size == 0:
            raise HTTPException(400, "empty model body")
        actual = digest.hexdigest()
        if actual != sha256:
            raise HTTPException(400, f"sha256 mismatch: the path says {sha256}, the body hashes to {actual}")
        os.replace(tmp, target)
    except ClientDisconnect as exc:
        raise HTTPException(400, "the upload was cut short") from exc
    finally:
        tmp.unlink(missing_ok=True)
    await state.db(state.store.add_blob_owner, sha256, who.name)
    return BlobStored(sha256=sha256, bytes=size)


async def may_see_blob(state: State, who: Principal, sha256: str) -> bool:
    """A client sees the blobs it uploaded (the admin: all), an agent those of jobs it holds."""
    if who.role == "agent":
        return await state.read(state.store.holds_model, who.name, sha256)
    return await state.read(state.store.owns_blob, visible_to(who), sha256)


@router.head("/{sha256}")
async def head_blob(sha256: str, who: AsAnyone, state: State) -> Response:
    """Whether the caller may use this blob: 404 alike for a blob that does not exist and one
    that another client uploaded (its existence is not the caller's business)."""
    if who.role == "enrolment":
        raise HTTPException(403, "an enrolment token may not do this (needs: client or agent)")
    path = state.blob_path(sha256)
    if not await may_see_blob(state, who, sha256):
        raise HTTPException(404, f"no blob {sha256}")
    try:
        os.utime(path)  # in use: retention counts from now
        size = path.stat().st_size
    except FileNotFoundError as exc:
        raise HTTPException(404, f"no blob {sha256}") from exc
    return Response(headers={"content-length": str(size)})


@router.get("/{sha256}")
async def get_blob(sha256: str, who: AsAgent, state: State) -> Any:
    """An agent downloads the model of a job it holds, and no other."""
    path = state.blob_path(sha256)
    if not await state.read(state.store.holds_model, who.name, sha256) or not path.exists():
        raise HTTPException(404, f"no blob {sha256} for a job leased to agent {who.name}")
    return FileResponse(path, media_type="application/octet-stream")
