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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgecompress.errors import ConfigError
from edgecompress.farm.identity import Authenticator
from edgecompress.farm.store import JobStore, StoreConfig
from edgecompress.farm.tokens import read_token  # noqa: F401 (re-exported)
from edgecompress.farm.wire import SHA256_RE

log = logging.getLogger(__name__)

ADMIN_TOKEN_ENV = "EDGECOMPRESS_FARM_ADMIN_TOKEN"
CLIENT_TOKEN_ENV = "EDGECOMPRESS_FARM_CLIENT_TOKEN"
AGENT_TOKEN_ENV = "EDGECOMPRESS_FARM_AGENT_TOKEN"
WRITE_THREADS = 16  # store calls that write (they may wait for the database's write lock)
READ_THREADS = 16  # store calls that only read: their own threads, never queued behind writes


@dataclass
class ControllerConfig:
    db_url: str = "sqlite:///farm.db"
    blob_dir: Path = Path("farm-blobs")
    admin_token: str = ""
    lease_s: float = 30.0
    max_attempts: int = 3
    live_after_s: float = 30.0
    deadline_grace_s: float = 30.0  # a lease never outlives claim + timeout_s + this
    restart_grace_s: float | None = None  # after start-up, expired leases wait this long (default lease_s)
    backoff_s: float = 1.0  # a released job's first wait before it can be claimed again (doubles)
    max_model_bytes: int = 256 * 1024 * 1024
    max_json_bytes: int = 16 * 1024 * 1024
    sweep_interval_s: float = 1.0
    s3_url_expiry_s: int = 3600
    retention_s: float = 30 * 86_400.0  # finished jobs and unreferenced blobs older than this go (0: keep)
    retention_interval_s: float = 300.0
    stale_upload_s: float = 900.0  # upload temp files not written to for this long are leftovers
    auth_cache_s: float = 2.0  # how long another controller's rotation/revocation can take to apply here
    docs: bool = False  # serve /docs and /openapi.json (behind a token)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if len(self.admin_token) < 16:
            raise ConfigError(
                f"the farm admin token must be at least 16 characters (set {ADMIN_TOKEN_ENV} or --admin-token-file)"
            )
        if (
            self.lease_s <= 0
            or self.max_attempts < 1
            or self.max_model_bytes < 1
            or self.deadline_grace_s < 0
        ):
            raise ConfigError(
                f"controller limits out of range: lease_s={self.lease_s}, max_attempts={self.max_attempts}, "
                f"deadline_grace_s={self.deadline_grace_s}"
            )
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("TLS needs both a certificate (--tls-cert) and its key (--tls-key)")
        for path in (self.tls_cert, self.tls_key):
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"TLS file {path} does not exist")


class _Waker:
    """Wakes long polls when something happened (work arrived; a job finished). A poller arms it
    *before* it looks at the database and then waits on what it armed: a notify that lands between the
    look and the wait is not lost (it sets the armed event)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    def arm(self) -> asyncio.Event:
        return self._event

    @staticmethod
    async def wait(armed: asyncio.Event, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(armed.wait(), timeout)


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


FASTAPI_PARSE_ERROR = "There was an error parsing the body"


def parse_failure(cause: BaseException) -> str:
    """Why a request body could not be parsed as JSON, for the 400 answer."""
    if isinstance(cause, RecursionError):
        return (
            "the JSON body is nested too deeply to parse (keep it to a few levels, as the API's bodies are)"
        )
    if isinstance(cause, UnicodeDecodeError):
        return f"the JSON body is not valid UTF-8 ({cause.reason} at byte {cause.start})"
    if isinstance(cause, ValueError) and "integer string conversion" in str(cause):
        return (
            f"the JSON body holds an integer too long to parse ({cause}); no field of this API takes "
            "a number of more than a few digits"
        )
    return f"the JSON body cannot be parsed ({type(cause).__name__}: {str(cause)[:200]})"


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


@dataclass
class FarmState:
    """What every route works with, built once per app and injected (`routers.deps.farm`): the
    config, the store, the token checker, the wakers of long polls, and the thread pools for store
    calls. Reads and writes have their own threads: a write waits for the database's write lock
    (SQLite: up to its 30 s busy timeout) while holding its thread, and must never make a read (a job,
    a token look-up) queue behind it. Reads never take the write lock; on SQLite (WAL) they do not
    wait for a writer either."""

    config: ControllerConfig
    store: JobStore
    auth: Authenticator
    blob_dir: Path
    write_limiter: Any
    read_limiter: Any
    health_limiter: Any  # its own threads: /healthz never queues behind the store
    waker: _Waker = field(default_factory=_Waker)  # work arrived: wake long-polling claims
    finished: _Waker = field(default_factory=_Waker)  # a job finished: wake long-polling readers

    @classmethod
    def open(cls, config: ControllerConfig) -> "FarmState":
        import anyio

        config.validate()
        blob_dir = Path(config.blob_dir)
        blob_dir.mkdir(parents=True, exist_ok=True)
        store = JobStore(
            config.db_url,
            StoreConfig(config.lease_s, config.max_attempts, config.live_after_s, config.deadline_grace_s,
                        config.backoff_s),
        )  # fmt: skip
        return cls(
            config, store, Authenticator(store.identities, config.admin_token, config.auth_cache_s),
            blob_dir, anyio.CapacityLimiter(WRITE_THREADS), anyio.CapacityLimiter(READ_THREADS),
            anyio.CapacityLimiter(4),
        )  # fmt: skip

    async def db(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """A blocking store call that writes, in the writers' threads: never on the event loop."""
        import anyio

        return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs), limiter=self.write_limiter)

    async def read(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """A blocking store call that only reads, in the readers' threads (never behind a write)."""
        import anyio

        return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs), limiter=self.read_limiter)

    def blob_path(self, sha256: str) -> Path:
        from fastapi import HTTPException

        if not SHA256_RE.match(sha256):
            raise HTTPException(422, "a blob is named by its lowercase hex sha256 (64 characters)")
        return self.blob_dir / sha256

    def model_url(self, job: dict[str, Any]) -> str:
        """Where the agent downloads a job's model: the controller's blob, or a presigned S3 URL."""
        if not job["model_uri"]:
            return f"/v1/blobs/{job['model_sha256']}"
        import boto3

        from edgecompress.storage import split_s3_uri

        bucket, key = split_s3_uri(job["model_uri"])
        return boto3.client("s3").generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=self.config.s3_url_expiry_s
        )

    async def checked_settings(self, device_class: str, settings: dict[str, Any]) -> dict[str, Any]:
        """Bounds from BenchmarkSettings (the one definition), and threads within the class's cores:
        its device profile's (an emulated stand-in's: its thread cap), never what an agent reports
        about itself. Only a class without a profile falls back to the most any registered agent
        reports (the controller knows nothing else about it; each agent re-checks its own cores)."""
        from dataclasses import asdict

        from fastapi import HTTPException

        from edgecompress.errors import BenchmarkError
        from edgecompress.farm.runner import BenchmarkSettings

        try:
            parsed = BenchmarkSettings.from_dict(settings)
            cores = class_threads(device_class) or await self.read(self.store.class_cores, device_class)
            parsed.validate(max_threads=cores)
        except BenchmarkError as exc:
            raise HTTPException(422, f"invalid benchmark settings: {str(exc)[:500]}") from exc
        return {k: v for k, v in asdict(parsed).items() if k in settings}


def class_threads(device_class: str) -> int | None:
    """The most threads a benchmark of this class may use, from its device profile (None: none)."""
    from edgecompress.profiles import profiles

    profile = profiles().get(device_class)
    if profile is None:
        return None
    return profile.threads if profile.emulated is True else profile.cores


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
                await state.db(apply_retention, state.store, state.blob_dir, config.retention_s,
                               config.stale_upload_s)  # fmt: skip
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
        title="edgecompress device farm", version="2", lifespan=lifespan, docs_url=None, redoc_url=None,
        openapi_url=None,
    )  # fmt: skip
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
