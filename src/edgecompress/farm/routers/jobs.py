"""Jobs as clients see them: submit, list, read (long poll until finished), cancel; and the devices
and queue depth they are submitted to. A client sees and cancels only its own jobs (another
client's are 404); the admin sees all."""

# No `from __future__ import annotations`: FastAPI reads the annotations at runtime.

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import JSONResponse

from edgecompress.farm.identity import Principal
from edgecompress.farm.routers.deps import AsClient, JobId, State, role, visible_to
from edgecompress.farm.state import FarmState
from edgecompress.farm.wire import ROW_ID_MAX, JobSpec, ModelRef, QueueDepth
from edgecompress.runtime.devices import NAME_RE

router = APIRouter(prefix="/v1")


async def model_size(model: ModelRef, who: Principal, state: FarmState) -> int | None:
    """The model's bytes: an uploaded blob must be the client's own; an S3 model's declared size
    must be within the limit."""
    limit = state.config.max_model_bytes
    if model.uri is None:
        path = state.blob_path(model.sha256)
        if not path.exists() or not await state.read(state.store.owns_blob, visible_to(who), model.sha256):
            raise HTTPException(
                422, f"no uploaded model with sha256 {model.sha256}: PUT /v1/blobs/<sha256> first"
            )
        return path.stat().st_size
    if model.bytes is not None and model.bytes > limit:
        raise HTTPException(413, f"model of {model.bytes} bytes exceeds the limit of {limit} bytes")
    return model.bytes


@router.post("/jobs", status_code=201)
async def submit(spec: JobSpec, who: AsClient, state: State) -> Any:
    settings = await state.checked_settings(spec.device_class, spec.settings)
    size = await model_size(spec.model, who, state)
    paired = spec.paired_with
    paired_size = await model_size(paired, who, state) if paired is not None else None
    job = await state.db(
        state.store.submit,
        device_class=spec.device_class,
        model_name=spec.model.name,
        model_sha256=spec.model.sha256,
        model_uri=spec.model.uri,
        model_bytes=size,
        paired_name=paired.name if paired else None,
        paired_sha256=paired.sha256 if paired else None,
        paired_uri=paired.uri if paired else None,
        paired_bytes=paired_size,
        settings=settings,
        timeout_s=spec.timeout_s,
        priority=spec.priority,
        expires_in_s=spec.expires_in_s,
        client=who.name,
    )
    state.waker.notify()
    return JSONResponse(job, status_code=201)


@router.get("/jobs")
async def list_jobs(
    who: AsClient,
    state: State,
    job_state: Annotated[Literal["queued", "leased", "done", "failed"] | None, Query(alias="state")] = None,
    device_class: Annotated[str | None, Query(pattern=NAME_RE)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before_id: Annotated[int | None, Query(ge=0, le=ROW_ID_MAX)] = None,
) -> list[dict[str, Any]]:
    return await state.read(state.store.list, job_state, device_class, limit, before_id, visible_to(who))


@router.get("/jobs/{job_id}")
async def get_job(
    job_id: JobId, who: AsClient, state: State, wait_s: Annotated[float, Query(ge=0, le=30)] = 0.0
) -> Any:
    """The job with its result; with `wait_s`, wait up to that long for it to finish (long poll)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while True:
        armed = state.finished.arm()
        job = await state.read(state.store.get, job_id, visible_to(who))
        remaining = deadline - loop.time()
        if job["state"] in ("done", "failed") or remaining <= 0:
            return JSONResponse(job)
        await state.finished.wait(armed, min(remaining, 1.0))


@router.post("/jobs/{job_id}/cancel")
async def cancel(job_id: JobId, who: AsClient, state: State) -> Any:
    out = await state.db(state.store.cancel, job_id, f"cancelled by {who.role} {who.name}", visible_to(who))
    state.finished.notify()
    return out


@router.get("/devices", dependencies=[role("client")])
async def devices(state: State) -> list[dict[str, Any]]:
    return await state.read(state.store.devices)


@router.get("/queue", dependencies=[role("client")])
async def queue(state: State) -> QueueDepth:
    return QueueDepth(depth=await state.read(state.store.queue_depth))
