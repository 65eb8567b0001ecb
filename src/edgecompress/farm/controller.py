"""The farm controller: an HTTP service (FastAPI + uvicorn) over the durable job store.

Devices never accept inbound connections: agents pull work (long-polling `claim`), heartbeat, and
push results. Clients upload a model once (content-addressed by sha256) or give an s3:// URI plus
its sha256, submit one job per device class, and read their jobs, devices and queue depth.

Identity (`identity.py`): the admin token is configuration; clients, agents and enrolment tokens are
enrolled by the admin and stored hashed, so rotation and revocation need no restart. A missing or
unknown token gets 401; a token of the wrong role, or an agent acting for another id, a class it is
not enrolled for, or a lease it does not hold, gets 403 (or 409 for a lease that moved on). A client
sees and cancels only its own jobs (another client's are 404); the admin sees all. Results are
schema-checked (`results.py`) and every provenance field (agent, class, job, backend, `emulated`,
description, `timing_meaningful`) is set from the enrolment, the job and the class's profile
(`results.stamp`). A client may HEAD and use only the blobs it uploaded. `/docs` and
`/openapi.json` are off unless `docs=True`, and then need a token.

Leases always end (`store.py`); a controller that just started waits one lease period
(`restart_grace_s`) before it requeues expired leases, so agents that finished while it was down can
report. Several controllers may share a PostgreSQL database: claims stay exactly-once
(`FOR UPDATE SKIP LOCKED`) and LISTEN/NOTIFY (`notify.py`) wakes one controller's long polls when
another one queued or finished a job. Store calls run in thread pools, never on the event loop, with
separate limiters for calls that write and calls that only read (job reads, token look-ups that miss
the cache): a database that stalls writes (a held SQLite write lock, a slow PostgreSQL, writes queued
behind it) does not stall reads, /healthz or the other requests. Bodies over the
limit get 413 (models: `max_model_bytes`; everything else: `max_json_bytes`). With `tls_cert` and
`tls_key` it serves HTTPS.

Run: `edgecompress farm controller --host 127.0.0.1 --port 8080 --db-url sqlite:///farm.db --blob-dir blobs`
with EDGECOMPRESS_FARM_ADMIN_TOKEN set (or --admin-token-file).
"""

# No `from __future__ import annotations`: FastAPI and pydantic read the annotations at runtime.

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from edgecompress.farm.state import (  # noqa: F401 (ControllerConfig and the token variables: re-exported)
    ADMIN_TOKEN_ENV,
    AGENT_TOKEN_ENV,
    CLIENT_TOKEN_ENV,
    ControllerConfig,
    FarmState,
)
from edgecompress.farm.tokens import read_token  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)


class BodyLimit:
    """ASGI middleware: 413 for a declared or streamed body over the limit. Blob uploads are
    limited by their own handler (it streams to disk), every other request by `max_json_bytes`."""

    def __init__(self, app: Any, max_json_bytes: int, max_model_bytes: int) -> None:
        self.app, self.max_json, self.max_model = app, max_json_bytes, max_model_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.max_model if scope["path"].startswith("/v1/blobs/") else self.max_json
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                return await _plain(send, 400, "invalid Content-Length")
            if declared > limit:
                return await _plain(
                    send, 413, f"request body of {declared} bytes exceeds the limit of {limit} bytes"
                )
            return await self.app(scope, receive, send)
        if scope["path"].startswith("/v1/blobs/"):
            return await self.app(scope, receive, send)
        # No declared length (chunked): buffer up to the limit, then replay.
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > limit:
                return await _plain(send, 413, f"request body exceeds the limit of {limit} bytes")
        body = b"".join(chunks)
        sent = False

        async def replay() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


async def _plain(send: Any, status: int, detail: str) -> None:
    import json

    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def sweep_forever(state: FarmState) -> None:
    """Requeue expired leases every `sweep_interval_s`, apply retention every `retention_interval_s`.
    Just started: leases that expired while this controller was down get one lease period
    (`restart_grace_s`) for their agents to report (or heartbeat) before they are requeued."""
    from edgecompress.farm.retention import apply_retention

    config = state.config
    started = time.monotonic()
    grace = config.lease_s if config.restart_grace_s is None else config.restart_grace_s
    last_retention = float("-inf")
    while True:
        try:
            if await state.db(state.store.sweep, time.monotonic() - started >= grace):
                state.waker.notify()
            if time.monotonic() - last_retention >= config.retention_interval_s:
                last_retention = time.monotonic()
                await state.db(
                    apply_retention, state.store, state.blob_dir, config.retention_s, config.stale_upload_s
                )
        except Exception:  # keep sweeping through transient database errors
            log.exception("sweep failed")
        await asyncio.sleep(config.sweep_interval_s)


@contextlib.asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    """Clean upload leftovers, run the sweeper and (PostgreSQL: other controllers share the queue)
    listen for their NOTIFYs; at the end stop both and close the store."""
    from edgecompress.farm.retention import clean_uploads

    state: FarmState = app.state.farm
    await state.db(clean_uploads, state.blob_dir, state.config.stale_upload_s)
    task = asyncio.create_task(sweep_forever(state))
    listener = None
    if not state.store.sqlite:  # other controllers on this database queue and finish jobs too
        from edgecompress.farm.notify import Listener

        loop = asyncio.get_running_loop()
        listener = Listener(
            state.store.url,
            on_work=lambda: loop.call_soon_threadsafe(state.waker.notify),
            on_done=lambda: loop.call_soon_threadsafe(state.finished.notify),
        )
        listener.start()
    yield
    task.cancel()
    if listener is not None:
        listener.stop()
    state.store.close()


def create_app(config: ControllerConfig) -> Any:
    """The FastAPI application (tests and `farm up --local` serve it with uvicorn): the state, the
    error handlers, one router per resource, and the body limit around it all."""
    from fastapi import FastAPI

    from edgecompress.farm.routers import ROUTERS, docs, errors

    state = FarmState.open(config)
    app = FastAPI(
        title="edgecompress device farm",
        version="2",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.farm = state
    app.state.store = state.store
    errors.install(app)
    for router in ROUTERS:
        app.include_router(router)
    if config.docs:  # off unless asked for, and then behind a token
        app.include_router(docs.router)
    return BodyLimit(app, config.max_json_bytes, config.max_model_bytes)


def serve(
    config: ControllerConfig, host: str = "127.0.0.1", port: int = 8080, log_level: str = "warning"
) -> None:
    """Serve the controller until interrupted (HTTPS when the config has a certificate)."""
    import uvicorn

    app = create_app(config)
    tls = {}
    if config.tls_cert is not None:
        tls = {"ssl_certfile": str(config.tls_cert), "ssl_keyfile": str(config.tls_key)}
    uvicorn.run(
        app, host=host, port=port, log_level=log_level, access_log=False, timeout_graceful_shutdown=5, **tls
    )
