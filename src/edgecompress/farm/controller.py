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
import hashlib
import logging
import os
import re
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from edgecompress.errors import ConfigError
from edgecompress.farm.identity import Authenticator, IdentityError, Principal
from edgecompress.farm.store import Conflict, JobStore, NotFound, StoreConfig
from edgecompress.farm.tables import ROW_ID_MAX
from edgecompress.farm.tokens import read_token  # noqa: F401 (re-exported)
from edgecompress.runtime import profilecheck
from edgecompress.runtime.devices import NAME_RE

log = logging.getLogger(__name__)

ADMIN_TOKEN_ENV = "EDGECOMPRESS_FARM_ADMIN_TOKEN"
CLIENT_TOKEN_ENV = "EDGECOMPRESS_FARM_CLIENT_TOKEN"
AGENT_TOKEN_ENV = "EDGECOMPRESS_FARM_AGENT_TOKEN"
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
ADMIN_KINDS = {"clients": "client", "agents": "agent", "enrolment-tokens": "enrolment"}
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


def create_app(config: ControllerConfig) -> Any:
    """The FastAPI application (tests and `farm up --local` serve it with uvicorn)."""
    import anyio
    from fastapi import Body, Depends, FastAPI, HTTPException, Query, Request, Response
    from fastapi import Path as FPath
    from fastapi.exception_handlers import http_exception_handler
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel, ConfigDict, Field
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from edgecompress.errors import BenchmarkError
    from edgecompress.farm.results import ResultRejected, check_result
    from edgecompress.farm.retention import apply_retention, clean_uploads
    from edgecompress.runtime.runner import BenchmarkSettings

    config.validate()
    blob_dir = Path(config.blob_dir)
    blob_dir.mkdir(parents=True, exist_ok=True)
    store = JobStore(
        config.db_url,
        StoreConfig(config.lease_s, config.max_attempts, config.live_after_s, config.deadline_grace_s,
                    config.backoff_s),
    )  # fmt: skip
    auth = Authenticator(store.identities, config.admin_token, config.auth_cache_s)
    # Reads and writes have their own threads: a write waits for the database's write lock (SQLite:
    # up to its 30 s busy timeout) while holding its thread, and must never make a read (a job, a
    # token look-up) queue behind it. Reads never take the write lock; on SQLite (WAL) they do not
    # wait for a writer either.
    write_limiter = anyio.CapacityLimiter(WRITE_THREADS)
    read_limiter = anyio.CapacityLimiter(READ_THREADS)
    health_limiter = anyio.CapacityLimiter(4)  # its own threads: /healthz never queues behind the store

    async def db(fn, *args, **kwargs):
        """A blocking store call that writes, in the writers' threads: never on the event loop."""
        return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs), limiter=write_limiter)

    async def read(fn, *args, **kwargs):
        """A blocking store call that only reads, in the readers' threads (never behind a write)."""
        return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs), limiter=read_limiter)

    waker = _Waker()  # work arrived: wake long-polling claims
    finished = _Waker()  # a job finished: wake long-polling readers

    def bearer(request: Request) -> str:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return token.strip() if scheme.lower() == "bearer" else ""

    def role(*allowed: str):
        async def check(request: Request) -> Principal:
            token = bearer(request)
            if not token:
                raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
            who = auth.cached(token)
            if who is False:
                who = await read(auth.resolve, token)
            if who is None:
                raise HTTPException(401, "invalid bearer token", headers={"WWW-Authenticate": "Bearer"})
            if who.role not in allowed and not (who.role == "admin" and "client" in allowed):
                raise HTTPException(
                    403, f"a {who.role} token may not do this (needs: {' or '.join(allowed)})"
                )
            return who

        return Depends(check)

    AsAgent = Annotated[Principal, role("agent")]
    AsClient = Annotated[Principal, role("client")]  # or the admin
    AsEnrolment = Annotated[Principal, role("enrolment")]
    AsAnyone = Annotated[Principal, role("admin", "client", "agent", "enrolment")]

    def as_agent(who: Principal, agent_id: str, device_class: str | None = None) -> None:
        if who.name != agent_id:
            raise HTTPException(403, f"this token belongs to agent {who.name!r}, not {agent_id!r}")
        if device_class is not None and not who.serves(device_class):
            raise HTTPException(
                403, f"agent {who.name!r} is not enrolled for device class {device_class!r} "
                f"(enrolled: {', '.join(who.device_classes) or 'none'})"
            )  # fmt: skip

    def visible_to(who: Principal) -> str | None:
        """The client whose jobs `who` may see (None: all, for the admin)."""
        return None if who.role == "admin" else who.name

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        started = time.monotonic()
        grace = config.lease_s if config.restart_grace_s is None else config.restart_grace_s
        await db(clean_uploads, blob_dir, config.stale_upload_s)

        async def sweeper() -> None:
            last_retention = float("-inf")
            while True:
                try:
                    # Just started: leases that expired while this controller was down get one lease
                    # period for their agents to report (or heartbeat) before they are requeued.
                    requeue = time.monotonic() - started >= grace
                    if await db(store.sweep, requeue):
                        waker.notify()
                    if time.monotonic() - last_retention >= config.retention_interval_s:
                        last_retention = time.monotonic()
                        await db(apply_retention, store, blob_dir, config.retention_s, config.stale_upload_s)
                except Exception:  # keep sweeping through transient database errors
                    log.exception("sweep failed")
                await asyncio.sleep(config.sweep_interval_s)

        task = asyncio.create_task(sweeper())
        listener = None
        if not store.sqlite:  # other controllers on this database queue and finish jobs too
            from edgecompress.farm.notify import Listener

            loop = asyncio.get_running_loop()
            listener = Listener(
                store.url,
                on_work=lambda: loop.call_soon_threadsafe(waker.notify),
                on_done=lambda: loop.call_soon_threadsafe(finished.notify),
            )
            listener.start()
        yield
        task.cancel()
        if listener is not None:
            listener.stop()
        store.close()

    app = FastAPI(
        title="edgecompress device farm", version="2", lifespan=lifespan, docs_url=None, redoc_url=None,
        openapi_url=None,
    )  # fmt: skip

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        """422 with the errors, minus the echoed input: it can hold NaN/Infinity, which JSON cannot
        carry (FastAPI's default handler then fails with a 500; found by tests/farm/test_fuzz.py)."""
        errors = [
            {k: str(v) if k == "ctx" else v for k, v in e.items() if k != "input"} for e in exc.errors()
        ]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Any:
        """FastAPI answers a body its JSON parser gave up on with a bare "There was an error parsing
        the body"; say why (an integer past Python's digit limit, nesting past its recursion limit)."""
        if exc.status_code == 400 and exc.__cause__ is not None and exc.detail == FASTAPI_PARSE_ERROR:
            return JSONResponse({"detail": parse_failure(exc.__cause__)}, status_code=400)
        return await http_exception_handler(request, exc)

    @app.exception_handler(NotFound)
    async def not_found(_: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(Conflict)
    async def conflict(_: Request, exc: Conflict) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(IdentityError)
    async def identity_error(_: Request, exc: IdentityError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    app.state.store = store

    strict = ConfigDict(extra="forbid", allow_inf_nan=False)
    Name = Annotated[str, Field(pattern=NAME_RE)]

    class ModelRef(BaseModel):
        model_config = strict
        sha256: str = Field(pattern=SHA256_RE.pattern)
        uri: str | None = Field(None, max_length=2048, pattern=r"^s3://[^/]+/.+")
        name: str = Field("model.onnx", min_length=1, max_length=256)
        bytes: int | None = Field(None, ge=0, le=2**62)

    class JobSpec(BaseModel):
        model_config = strict
        model: ModelRef
        device_class: Name
        settings: dict[str, Any] = Field(default_factory=dict)
        timeout_s: float = Field(600.0, gt=0, le=86_400)
        priority: int = Field(0, ge=-1000, le=1000)
        expires_in_s: float | None = Field(None, gt=0, le=30 * 86_400)

    class Lease(BaseModel):
        model_config = strict
        job_id: int = Field(ge=0, le=ROW_ID_MAX)
        lease_id: str = Field(pattern=r"^[0-9a-f]{32}$")

    class AgentInfo(BaseModel):
        model_config = strict
        agent_id: Name
        device_class: Name
        hostname: str = Field(max_length=256)
        facts: dict[str, Any] = Field(default_factory=dict)
        leases: list[Lease] = Field(default_factory=list, max_length=64)  # the leases this process holds

    class Heartbeat(BaseModel):
        model_config = strict
        leases: list[Lease] = Field(default_factory=list, max_length=64)

    class ClaimRequest(BaseModel):
        model_config = strict
        wait_s: float = Field(0.0, ge=0, le=30)

    class ResultSubmission(BaseModel):
        model_config = strict
        agent_id: Name | None = None  # the token says who; when given it must agree
        lease_id: str = Field(pattern=r"^[0-9a-f]{32}$")
        status: Literal["done", "failed"]
        result: dict[str, Any] | None = None
        error: str | None = Field(None, max_length=10_000)

    class Release(BaseModel):
        model_config = strict
        agent_id: Name | None = None
        lease_id: str = Field(pattern=r"^[0-9a-f]{32}$")
        reason: str = Field(min_length=1, max_length=2000)

    class ClientSpec(BaseModel):
        model_config = strict
        name: Name

    class AgentSpec(BaseModel):
        model_config = strict
        agent_id: Name
        device_classes: list[Name] = Field(min_length=1, max_length=64)
        emulated: bool = False

    class EnrolmentSpec(BaseModel):
        model_config = strict
        name: Name
        device_classes: list[Name] = Field(min_length=1, max_length=64)
        emulated: bool = False
        expires_in_s: float | None = Field(None, gt=0, le=366 * 86_400)

    class Enrol(BaseModel):
        model_config = strict
        agent_id: Name
        device_class: Name

    async def checked_settings(device_class: str, settings: dict[str, Any]) -> dict[str, Any]:
        """Bounds from BenchmarkSettings (the one definition), and threads within the class's cores:
        its device profile's (an emulated stand-in's: its thread cap), never what an agent reports
        about itself. Only a class without a profile falls back to the most any registered agent
        reports (the controller knows nothing else about it; each agent re-checks its own cores)."""
        from dataclasses import asdict

        try:
            parsed = BenchmarkSettings.from_dict(settings)
            cores = class_threads(device_class) or await read(store.class_cores, device_class)
            parsed.validate(max_threads=cores)
        except BenchmarkError as exc:
            raise HTTPException(422, f"invalid benchmark settings: {str(exc)[:500]}") from exc
        return {k: v for k, v in asdict(parsed).items() if k in settings}

    def class_threads(device_class: str) -> int | None:
        """The most threads a benchmark of this class may use, from its device profile (None: none)."""
        from edgecompress.runtime.devices import profiles

        profile = profiles().get(device_class)
        if profile is None:
            return None
        return profile.threads if profile.emulated is True else profile.cores

    def blob_path(sha256: str) -> Path:
        if not SHA256_RE.match(sha256):
            raise HTTPException(422, "a blob is named by its lowercase hex sha256 (64 characters)")
        return blob_dir / sha256

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        await anyio.to_thread.run_sync(store.ping, limiter=health_limiter)
        return {"status": "ok"}

    @app.get("/v1/whoami")
    async def whoami(who: AsAnyone) -> dict[str, Any]:
        return {"role": who.role, "name": who.name, "device_classes": list(who.device_classes),
                "emulated": who.emulated}  # fmt: skip

    # --- documentation (off unless asked for, and then behind a token) ------------------------

    if config.docs:
        from fastapi.openapi.docs import get_swagger_ui_html

        any_role = role("admin", "client", "agent")

        @app.get("/openapi.json", include_in_schema=False, dependencies=[any_role])
        async def openapi() -> JSONResponse:
            return JSONResponse(app.openapi())

        @app.get("/docs", include_in_schema=False, dependencies=[any_role])
        async def docs() -> Any:
            return get_swagger_ui_html(openapi_url="/openapi.json", title="edgecompress device farm")

    # --- admin: enrolment, rotation, revocation -----------------------------------------------

    @app.post("/v1/admin/clients", dependencies=[role("admin")], status_code=201)
    async def add_client(spec: ClientSpec) -> dict[str, Any]:
        return await db(store.identities.add, "client", spec.name)

    @app.post("/v1/admin/agents", dependencies=[role("admin")], status_code=201)
    async def add_agent(spec: AgentSpec) -> dict[str, Any]:
        return await db(store.identities.add, "agent", spec.agent_id, spec.device_classes, spec.emulated)

    @app.post("/v1/admin/enrolment-tokens", dependencies=[role("admin")], status_code=201)
    async def add_enrolment(spec: EnrolmentSpec) -> dict[str, Any]:
        return await db(
            store.identities.add,
            "enrolment",
            spec.name,
            spec.device_classes,
            spec.emulated,
            spec.expires_in_s,
        )

    def admin_kind(kind: str) -> str:
        if kind not in ADMIN_KINDS:
            raise HTTPException(404, f"no such identity kind {kind!r} (one of {', '.join(ADMIN_KINDS)})")
        return ADMIN_KINDS[kind]

    @app.post("/v1/admin/{kind}/{name}/rotate", dependencies=[role("admin")])
    async def rotate(kind: str, name: Annotated[str, FPath(pattern=NAME_RE)]) -> dict[str, Any]:
        out = await db(store.identities.rotate, admin_kind(kind), name)
        auth.forget()
        return out

    @app.delete("/v1/admin/{kind}/{name}", dependencies=[role("admin")])
    async def revoke(kind: str, name: Annotated[str, FPath(pattern=NAME_RE)]) -> dict[str, Any]:
        await db(store.identities.revoke, admin_kind(kind), name)
        auth.forget()
        released = (
            await db(store.release_agent, name, f"agent {name} was revoked") if kind == "agents" else []
        )
        if released:
            waker.notify()
        return {"kind": admin_kind(kind), "name": name, "revoked": True, "released_jobs": released}

    @app.post("/v1/admin/{kind}/{name}/readmit", dependencies=[role("admin")])
    async def readmit(kind: str, name: Annotated[str, FPath(pattern=NAME_RE)]) -> dict[str, Any]:
        """Lift a revocation so that the identity may enrol again through an enrolment token."""
        return await db(store.identities.readmit, admin_kind(kind), name)

    @app.get("/v1/admin/identities", dependencies=[role("admin")])
    async def list_identities() -> list[dict[str, Any]]:
        return await read(store.identities.list)

    @app.post("/v1/agents/enrol", status_code=201)
    async def enrol(spec: Enrol, who: AsEnrolment) -> dict[str, Any]:
        """An agent exchanges an enrolment token for its own token, bound to its id and class."""
        if not who.serves(spec.device_class):
            raise HTTPException(
                403, f"enrolment token {who.name!r} does not cover device class {spec.device_class!r}"
            )
        out = await db(
            store.identities.add, "agent", spec.agent_id, [spec.device_class], who.emulated, None,
            f"enrolment:{who.name}", True,
        )  # fmt: skip
        auth.forget()  # a re-enrolment rotated the agent's token: the earlier one stops working here now
        return out

    # --- blobs --------------------------------------------------------------------------------

    @app.put("/v1/blobs/{sha256}", status_code=201)
    async def put_blob(sha256: str, request: Request, who: AsClient) -> dict[str, Any]:
        """Upload a model; the body must hash to the sha256 in the path. Content-addressed: an
        existing blob is kept (and its time refreshed: retention counts from the last use). A body
        that is cut short or too large leaves nothing behind. The uploader is recorded: only it may
        HEAD the blob or submit jobs against it (the same bytes uploaded by two clients: both)."""
        from starlette.requests import ClientDisconnect

        target = blob_path(sha256)
        digest, size = hashlib.sha256(), 0
        fd, tmp_name = tempfile.mkstemp(prefix=".upload-", dir=blob_dir)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as f:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > config.max_model_bytes:
                        raise HTTPException(413, f"model exceeds the limit of {config.max_model_bytes} bytes")
                    digest.update(chunk)
                    f.write(chunk)
            if size == 0:
                raise HTTPException(400, "empty model body")
            actual = digest.hexdigest()
            if actual != sha256:
                raise HTTPException(
                    400, f"sha256 mismatch: the path says {sha256}, the body hashes to {actual}"
                )
            os.replace(tmp, target)
        except ClientDisconnect as exc:
            raise HTTPException(400, "the upload was cut short") from exc
        finally:
            tmp.unlink(missing_ok=True)
        await db(store.add_blob_owner, sha256, who.name)
        return {"sha256": sha256, "bytes": size}

    async def may_see_blob(who: Principal, sha256: str) -> bool:
        """A client sees the blobs it uploaded (the admin: all), an agent those of jobs it holds."""
        if who.role == "agent":
            return await read(store.holds_model, who.name, sha256)
        return await read(store.owns_blob, visible_to(who), sha256)

    @app.head("/v1/blobs/{sha256}")
    async def head_blob(sha256: str, who: AsAnyone) -> Response:
        """Whether the caller may use this blob: 404 alike for a blob that does not exist and one
        that another client uploaded (its existence is not the caller's business)."""
        if who.role == "enrolment":
            raise HTTPException(403, "an enrolment token may not do this (needs: client or agent)")
        path = blob_path(sha256)
        if not await may_see_blob(who, sha256):
            raise HTTPException(404, f"no blob {sha256}")
        try:
            os.utime(path)  # in use: retention counts from now
            size = path.stat().st_size
        except FileNotFoundError as exc:
            raise HTTPException(404, f"no blob {sha256}") from exc
        return Response(headers={"content-length": str(size)})

    @app.get("/v1/blobs/{sha256}")
    async def get_blob(sha256: str, who: AsAgent) -> Any:
        """An agent downloads the model of a job it holds, and no other."""
        from fastapi.responses import FileResponse

        path = blob_path(sha256)
        if not await read(store.holds_model, who.name, sha256) or not path.exists():
            raise HTTPException(404, f"no blob {sha256} for a job leased to agent {who.name}")
        return FileResponse(path, media_type="application/octet-stream")

    # --- jobs (clients) -----------------------------------------------------------------------

    @app.post("/v1/jobs", status_code=201)
    async def submit(spec: JobSpec, who: AsClient) -> Any:
        settings = await checked_settings(spec.device_class, spec.settings)
        if spec.model.uri is None:
            path = blob_path(spec.model.sha256)
            if not path.exists() or not await read(store.owns_blob, visible_to(who), spec.model.sha256):
                raise HTTPException(
                    422, f"no uploaded model with sha256 {spec.model.sha256}: PUT /v1/blobs/<sha256> first"
                )
            size = path.stat().st_size
        else:
            size = spec.model.bytes
            if size is not None and size > config.max_model_bytes:
                raise HTTPException(
                    413, f"model of {size} bytes exceeds the limit of {config.max_model_bytes} bytes"
                )
        job = await db(
            store.submit, device_class=spec.device_class, model_name=spec.model.name,
            model_sha256=spec.model.sha256, model_uri=spec.model.uri, model_bytes=size, settings=settings,
            timeout_s=spec.timeout_s, priority=spec.priority, expires_in_s=spec.expires_in_s, client=who.name,
        )  # fmt: skip
        waker.notify()
        return JSONResponse(job, status_code=201)

    @app.get("/v1/jobs")
    async def list_jobs(
        who: AsClient,
        state: Literal["queued", "leased", "done", "failed"] | None = None,
        device_class: Annotated[str | None, Query(pattern=NAME_RE)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        before_id: Annotated[int | None, Query(ge=0, le=ROW_ID_MAX)] = None,
    ) -> list[dict[str, Any]]:
        return await read(store.list, state, device_class, limit, before_id, visible_to(who))

    @app.get("/v1/jobs/{job_id}")
    async def get_job(
        job_id: Annotated[int, FPath(ge=0, le=ROW_ID_MAX)],
        who: AsClient,
        wait_s: Annotated[float, Query(ge=0, le=30)] = 0.0,
    ) -> Any:
        """The job with its result; with `wait_s`, wait up to that long for it to finish (long poll)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            armed = finished.arm()
            job = await read(store.get, job_id, visible_to(who))
            remaining = deadline - loop.time()
            if job["state"] in ("done", "failed") or remaining <= 0:
                return JSONResponse(job)
            await finished.wait(armed, min(remaining, 1.0))

    @app.post("/v1/jobs/{job_id}/cancel")
    async def cancel(job_id: Annotated[int, FPath(ge=0, le=ROW_ID_MAX)], who: AsClient) -> Any:
        out = await db(store.cancel, job_id, f"cancelled by {who.role} {who.name}", visible_to(who))
        finished.notify()
        return out

    @app.get("/v1/devices", dependencies=[role("client")])
    async def devices() -> list[dict[str, Any]]:
        return await read(store.devices)

    @app.get("/v1/queue", dependencies=[role("client")])
    async def queue() -> dict[str, Any]:
        return {"depth": await read(store.queue_depth)}

    # --- agents -------------------------------------------------------------------------------

    @app.post("/v1/agents/register")
    async def register(info: AgentInfo, who: AsAgent) -> dict[str, Any]:
        as_agent(who, info.agent_id, info.device_class)
        facts = {**info.facts, "emulated": who.emulated}  # the enrolment says, not the agent
        # Flag, not refuse, an agent whose CPU disagrees with its class's profile (profilecheck).
        facts["profile_check"] = profilecheck.check(info.device_class, info.facts.get("cpu"))
        if not facts["profile_check"]["agrees"]:
            log.warning("agent %s disagrees with the %s profile: %s", info.agent_id, info.device_class,
                        "; ".join(facts["profile_check"]["mismatches"]))  # fmt: skip
        held = [(lease.job_id, lease.lease_id) for lease in info.leases]
        taken = await db(store.register, info.agent_id, info.device_class, info.hostname, facts, held)
        if taken:
            waker.notify()
        return {
            "agent_id": info.agent_id,
            "lease_s": config.lease_s,
            "heartbeat_s": max(0.2, config.lease_s / 3),
            "emulated": who.emulated,
            "released_jobs": taken,
            "profile_check": facts["profile_check"],
        }

    @app.post("/v1/agents/{agent_id}/heartbeat")
    async def heartbeat(
        agent_id: Annotated[str, FPath(pattern=NAME_RE)],
        who: AsAgent,
        body: Annotated[Heartbeat | None, Body()] = None,
    ) -> dict[str, Any]:
        """Renew the leases the agent lists (and only those); the answer lists the ones it still holds."""
        as_agent(who, agent_id)
        leases = [(lease.job_id, lease.lease_id) for lease in (body.leases if body else [])]
        return {"leases": await db(store.heartbeat, agent_id, leases)}

    @app.post("/v1/agents/{agent_id}/claim")
    async def claim(
        agent_id: Annotated[str, FPath(pattern=NAME_RE)],
        device_class: Annotated[str, Query(pattern=NAME_RE)],
        who: AsAgent,
        request: Request,
        body: Annotated[ClaimRequest | None, Body()] = None,
    ) -> Any:
        """Lease the next job for `device_class`, waiting up to `wait_s` for one (long poll); 204 if none."""
        as_agent(who, agent_id, device_class)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (body.wait_s if body else 0.0)
        first = True
        while True:
            if not first and await read(auth.resolve, bearer(request)) != who:  # revoked or rotated meanwhile
                raise HTTPException(
                    401, "this token was revoked or rotated", headers={"WWW-Authenticate": "Bearer"}
                )
            first = False
            armed = waker.arm()
            job = await db(store.claim, agent_id, device_class)
            if job is not None:
                job["model_url"] = model_url(job)
                return JSONResponse(job)
            remaining = deadline - loop.time()
            if remaining <= 0:
                return Response(status_code=204)
            await waker.wait(armed, min(remaining, 1.0))

    def model_url(job: dict[str, Any]) -> str:
        if not job["model_uri"]:
            return f"/v1/blobs/{job['model_sha256']}"
        import boto3

        from edgecompress.storage import split_s3_uri

        bucket, key = split_s3_uri(job["model_uri"])
        return boto3.client("s3").generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=config.s3_url_expiry_s
        )

    @app.post("/v1/jobs/{job_id}/result")
    async def result(
        job_id: Annotated[int, FPath(ge=0, le=ROW_ID_MAX)], sub: ResultSubmission, who: AsAgent
    ) -> Any:
        as_agent(who, sub.agent_id or who.name)
        if sub.status == "done":
            if sub.result is None:
                raise HTTPException(422, "a done result needs a result object")
            try:
                check_result(sub.result)
            except ResultRejected as exc:
                raise HTTPException(422, f"result rejected: {exc}") from exc
        if sub.status == "failed" and not sub.error:
            raise HTTPException(422, "a failed result needs an error message")
        try:
            out = await db(
                store.complete, job_id, who.name, sub.lease_id, sub.status == "done",
                sub.result if sub.status == "done" else None, sub.error, who.emulated,
            )  # fmt: skip
        except ValueError as exc:  # NaN/Infinity in the result
            raise HTTPException(422, f"result is not valid JSON for storage: {exc}") from exc
        finished.notify()
        return JSONResponse(out)

    @app.post("/v1/jobs/{job_id}/release")
    async def release(job_id: Annotated[int, FPath(ge=0, le=ROW_ID_MAX)], body: Release, who: AsAgent) -> Any:
        """The lease holder gives the job back: queued again after a backoff (or failed with the
        reason once its attempts are spent)."""
        as_agent(who, body.agent_id or who.name)
        out = await db(store.release, job_id, who.name, body.lease_id, body.reason)
        (waker if out["state"] == "queued" else finished).notify()
        return out

    # Claims and results are most requests: match them first (routes are tried in order, and no
    # other route matches their method and path, so the order changes nothing else).
    hot = ("/v1/agents/{agent_id}/claim", "/v1/jobs/{job_id}/result")
    app.router.routes.sort(key=lambda route: getattr(route, "path", None) not in hot)
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
