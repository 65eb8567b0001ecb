"""The farm controller: an HTTP service (FastAPI + uvicorn) over the durable job store.

Devices never accept inbound connections: agents pull work (long-polling `claim`), heartbeat, and
push results. Clients upload a model once (content-addressed by sha256) or give an s3:// URI plus
its sha256, submit one job per device class, and read jobs, devices and queue depth.

Auth: two bearer tokens, one for clients and one for agents, compared in constant time. A missing
or unknown token gets 401; the other role's token gets 403 (an agent cannot submit, a client cannot
claim). Bodies over the limit get 413 (models: `max_model_bytes`; everything else: `max_json_bytes`).

Run: `edgecompress farm controller --host 127.0.0.1 --port 8080 --db-url sqlite:///farm.db --blob-dir blobs`
with EDGECOMPRESS_FARM_CLIENT_TOKEN and EDGECOMPRESS_FARM_AGENT_TOKEN set (or --*-token-file).
"""

# No `from __future__ import annotations`: FastAPI and pydantic read the annotations at runtime.

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import re
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from edgecompress.errors import ConfigError
from edgecompress.farm.store import Conflict, JobStore, NotFound, StoreConfig

log = logging.getLogger(__name__)

CLIENT_TOKEN_ENV = "EDGECOMPRESS_FARM_CLIENT_TOKEN"
AGENT_TOKEN_ENV = "EDGECOMPRESS_FARM_AGENT_TOKEN"
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"  # device classes and agent ids: no paths, no spaces


@dataclass
class ControllerConfig:
    db_url: str = "sqlite:///farm.db"
    blob_dir: Path = Path("farm-blobs")
    client_token: str = ""
    agent_token: str = ""
    lease_s: float = 30.0
    max_attempts: int = 3
    live_after_s: float = 30.0
    max_model_bytes: int = 256 * 1024 * 1024
    max_json_bytes: int = 16 * 1024 * 1024
    sweep_interval_s: float = 1.0
    s3_url_expiry_s: int = 3600
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        for role, token in (("client", self.client_token), ("agent", self.agent_token)):
            if len(token) < 16:
                raise ConfigError(
                    f"the farm {role} token must be at least 16 characters (set "
                    f"{CLIENT_TOKEN_ENV if role == 'client' else AGENT_TOKEN_ENV} or --{role}-token-file)"
                )
        if hmac.compare_digest(self.client_token, self.agent_token):
            raise ConfigError("the farm client and agent tokens must differ (they grant different rights)")
        if self.lease_s <= 0 or self.max_attempts < 1 or self.max_model_bytes < 1:
            raise ConfigError(
                f"controller limits out of range: lease_s={self.lease_s}, max_attempts={self.max_attempts}"
            )


def read_token(value: str | None, file: Path | None, env: str) -> str:
    """A token from a file (first line), else the given value, else the environment."""
    if file is not None:
        try:
            return Path(file).read_text().strip().splitlines()[0].strip()
        except (OSError, IndexError) as exc:
            raise ConfigError(f"cannot read a token from {file}: {exc}") from exc
    return (value or os.environ.get(env, "")).strip()


class _Waker:
    """Wakes long-polling claims when work arrives (new job, requeued job)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)


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


def create_app(config: ControllerConfig) -> Any:
    """The FastAPI application (tests and `farm up --local` serve it with uvicorn)."""
    from fastapi import Body, Depends, FastAPI, HTTPException, Query, Request, Response
    from fastapi import Path as FPath
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel, ConfigDict, Field

    from edgecompress.farm.runner import BenchmarkSettings

    config.validate()
    blob_dir = Path(config.blob_dir)
    blob_dir.mkdir(parents=True, exist_ok=True)
    store = JobStore(config.db_url, StoreConfig(config.lease_s, config.max_attempts, config.live_after_s))

    async def db(fn, *args):
        """A store call: inline on SQLite (short, and serialized by one lock anyway: a thread hop
        would cost more than the query), in the threadpool for a server database."""
        return fn(*args) if store.sqlite else await run_in_threadpool(fn, *args)

    waker = _Waker()  # work arrived: wake long-polling claims
    finished = _Waker()  # a job finished: wake long-polling readers
    tokens = {"client": config.client_token.encode(), "agent": config.agent_token.encode()}

    def role(*allowed: str):
        async def check(request: Request) -> str:  # async: no thread hop per request
            header = request.headers.get("authorization", "")
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token:
                raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
            given = token.strip().encode()
            # Compare against every role so the timing does not depend on which one matched.
            matched = [name for name, expected in tokens.items() if hmac.compare_digest(given, expected)]
            if not matched:
                raise HTTPException(401, "invalid bearer token", headers={"WWW-Authenticate": "Bearer"})
            if matched[0] not in allowed:
                raise HTTPException(
                    403, f"a {matched[0]} token may not do this (needs: {' or '.join(allowed)})"
                )
            return matched[0]

        return Depends(check)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async def sweeper() -> None:
            while True:
                try:
                    if await run_in_threadpool(store.sweep):
                        waker.notify()
                except Exception:  # keep sweeping through transient database errors
                    log.exception("sweep failed")
                await asyncio.sleep(config.sweep_interval_s)

        task = asyncio.create_task(sweeper())
        yield
        task.cancel()
        store.close()

    app = FastAPI(title="edgecompress device farm", version="1", lifespan=lifespan)

    from fastapi.exceptions import RequestValidationError

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        """422 with the errors, minus the echoed input: it can hold NaN/Infinity, which JSON cannot
        carry (FastAPI's default handler then fails with a 500; found by tests/farm/test_fuzz.py)."""
        errors = [
            {k: str(v) if k == "ctx" else v for k, v in e.items() if k != "input"} for e in exc.errors()
        ]
        return JSONResponse({"detail": errors}, status_code=422)

    app.state.store = store

    strict = ConfigDict(extra="forbid", allow_inf_nan=False)
    DeviceClassName = Annotated[str, Field(pattern=NAME_RE)]

    class ModelRef(BaseModel):
        model_config = strict
        sha256: str = Field(pattern=SHA256_RE.pattern)
        uri: str | None = Field(None, max_length=2048, pattern=r"^s3://[^/]+/.+")
        name: str = Field("model.onnx", min_length=1, max_length=256)
        bytes: int | None = Field(None, ge=0, le=2**62)

    class JobSpec(BaseModel):
        model_config = strict
        model: ModelRef
        device_class: DeviceClassName
        settings: dict[str, Any] = Field(default_factory=dict)
        timeout_s: float = Field(600.0, gt=0, le=86_400)
        priority: int = Field(0, ge=-1000, le=1000)
        expires_in_s: float | None = Field(None, gt=0, le=30 * 86_400)

    class AgentInfo(BaseModel):
        model_config = strict
        agent_id: DeviceClassName
        device_class: DeviceClassName
        hostname: str = Field(max_length=256)
        facts: dict[str, Any] = Field(default_factory=dict)

    class ClaimRequest(BaseModel):
        model_config = strict
        wait_s: float = Field(0.0, ge=0, le=30)

    class ResultSubmission(BaseModel):
        model_config = strict
        agent_id: DeviceClassName
        lease_id: str = Field(pattern=r"^[0-9a-f]{32}$")
        status: Literal["done", "failed"]
        result: dict[str, Any] | None = None
        error: str | None = Field(None, max_length=10_000)

    from pydantic import TypeAdapter

    settings_adapter = TypeAdapter(BenchmarkSettings)  # built once: building one costs ~10 ms

    def checked_settings(settings: dict[str, Any]) -> dict[str, Any]:
        from dataclasses import asdict

        from pydantic import ValidationError

        from edgecompress.errors import BenchmarkError

        try:
            BenchmarkSettings.from_dict(settings)  # names the unknown keys
            parsed = settings_adapter.validate_python(settings, strict=False)
            parsed.validate()
        except (BenchmarkError, ValidationError, TypeError, ValueError) as exc:
            raise HTTPException(422, f"invalid benchmark settings: {str(exc)[:500]}") from exc
        if parsed.graph_optimization not in ("all", "extended", "basic", "disabled"):
            raise HTTPException(422, f"invalid graph_optimization {parsed.graph_optimization!r}")
        return {k: v for k, v in asdict(parsed).items() if k in settings}

    def blob_path(sha256: str) -> Path:
        if not SHA256_RE.match(sha256):
            raise HTTPException(422, "a blob is named by its lowercase hex sha256 (64 characters)")
        return blob_dir / sha256

    def job_or_404(fn, *args):
        try:
            return fn(*args)
        except NotFound as exc:
            raise HTTPException(404, str(exc)) from exc
        except Conflict as exc:
            raise HTTPException(409, str(exc)) from exc

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        store.ping()
        return {"status": "ok"}

    # --- blobs --------------------------------------------------------------------------------

    @app.put("/v1/blobs/{sha256}", dependencies=[role("client")], status_code=201)
    async def put_blob(sha256: str, request: Request) -> dict[str, Any]:
        """Upload a model; the body must hash to the sha256 in the path. Content-addressed: an
        existing blob is kept. A body that is cut short or too large leaves nothing behind."""
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
        return {"sha256": sha256, "bytes": size}

    @app.head("/v1/blobs/{sha256}", dependencies=[role("client", "agent")])
    def head_blob(sha256: str) -> Response:
        path = blob_path(sha256)
        if not path.exists():
            raise HTTPException(404, f"no blob {sha256}")
        return Response(headers={"content-length": str(path.stat().st_size)})

    @app.get("/v1/blobs/{sha256}", dependencies=[role("agent")])
    def get_blob(sha256: str) -> Any:
        from fastapi.responses import FileResponse

        path = blob_path(sha256)
        if not path.exists():
            raise HTTPException(404, f"no blob {sha256}")
        return FileResponse(path, media_type="application/octet-stream")

    # --- jobs (clients) -----------------------------------------------------------------------

    @app.post("/v1/jobs", dependencies=[role("client")], status_code=201)
    async def submit(spec: JobSpec) -> Any:
        settings = checked_settings(spec.settings)
        if spec.model.uri is None:
            path = blob_path(spec.model.sha256)
            if not path.exists():
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
            lambda: store.submit(device_class=spec.device_class, model_name=spec.model.name,
                                 model_sha256=spec.model.sha256, model_uri=spec.model.uri, model_bytes=size,
                                 settings=settings, timeout_s=spec.timeout_s, priority=spec.priority,
                                 expires_in_s=spec.expires_in_s))  # fmt: skip
        waker.notify()
        return JSONResponse(job, status_code=201)

    @app.get("/v1/jobs", dependencies=[role("client")])
    def list_jobs(
        state: Literal["queued", "leased", "done", "failed"] | None = None,
        device_class: Annotated[str | None, Query(pattern=NAME_RE)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        before_id: Annotated[int | None, Query(ge=0, le=2**62)] = None,
    ) -> list[dict[str, Any]]:
        return store.list(state, device_class, limit, before_id)

    @app.get("/v1/jobs/{job_id}", dependencies=[role("client")])
    async def get_job(
        job_id: Annotated[int, FPath(ge=0, le=2**62)], wait_s: Annotated[float, Query(ge=0, le=30)] = 0.0
    ) -> Any:
        """The job with its result; with `wait_s`, wait up to that long for it to finish (long poll)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            job = await db(job_or_404, store.get, job_id)
            remaining = deadline - loop.time()
            if job["state"] in ("done", "failed") or remaining <= 0:
                return JSONResponse(job)
            await finished.wait(min(remaining, 1.0))

    @app.post("/v1/jobs/{job_id}/cancel", dependencies=[role("client")])
    def cancel(job_id: Annotated[int, FPath(ge=0, le=2**62)]) -> dict[str, Any]:
        return job_or_404(store.cancel, job_id)

    @app.get("/v1/devices", dependencies=[role("client")])
    def devices() -> list[dict[str, Any]]:
        return store.devices()

    @app.get("/v1/queue", dependencies=[role("client")])
    def queue() -> dict[str, Any]:
        return {"depth": store.queue_depth()}

    # --- agents -------------------------------------------------------------------------------

    @app.post("/v1/agents/register", dependencies=[role("agent")])
    def register(info: AgentInfo) -> dict[str, Any]:
        store.register(info.agent_id, info.device_class, info.hostname, info.facts)
        return {
            "agent_id": info.agent_id,
            "lease_s": config.lease_s,
            "heartbeat_s": max(0.2, config.lease_s / 3),
        }

    @app.post("/v1/agents/{agent_id}/heartbeat", dependencies=[role("agent")])
    def heartbeat(agent_id: Annotated[str, FPath(pattern=NAME_RE)]) -> dict[str, Any]:
        return {"leased_jobs": job_or_404(store.heartbeat, agent_id)}

    @app.post("/v1/agents/{agent_id}/claim", dependencies=[role("agent")])
    async def claim(
        agent_id: Annotated[str, FPath(pattern=NAME_RE)],
        device_class: Annotated[str, Query(pattern=NAME_RE)],
        body: Annotated[ClaimRequest | None, Body()] = None,
    ) -> Any:
        """Lease the next job for `device_class`, waiting up to `wait_s` for one (long poll); 204 if none."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (body.wait_s if body else 0.0)
        while True:
            job = await db(store.claim, agent_id, device_class)
            if job is not None:
                job["model_url"] = model_url(job)
                return JSONResponse(job)
            remaining = deadline - loop.time()
            if remaining <= 0:
                return Response(status_code=204)
            await waker.wait(min(remaining, 1.0))

    def model_url(job: dict[str, Any]) -> str:
        if not job["model_uri"]:
            return f"/v1/blobs/{job['model_sha256']}"
        import boto3

        from edgecompress.storage import split_s3_uri

        bucket, key = split_s3_uri(job["model_uri"])
        return boto3.client("s3").generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=config.s3_url_expiry_s
        )

    @app.post("/v1/jobs/{job_id}/result", dependencies=[role("agent")])
    async def result(job_id: Annotated[int, FPath(ge=0, le=2**62)], sub: ResultSubmission) -> Any:
        if sub.status == "done" and sub.result is None:
            raise HTTPException(422, "a done result needs a result object")
        if sub.status == "failed" and not sub.error:
            raise HTTPException(422, "a failed result needs an error message")
        try:
            out = await db(
                job_or_404,
                store.complete,
                job_id,
                sub.agent_id,
                sub.lease_id,
                sub.status == "done",
                sub.result,
                sub.error,
            )
        except ValueError as exc:  # NaN/Infinity in the result
            raise HTTPException(422, f"result is not valid JSON for storage: {exc}") from exc
        finished.notify()
        return JSONResponse(out)

    # Claims and results are most requests: match them first (routes are tried in order, and no
    # other route matches their method and path, so the order changes nothing else).
    hot = ("/v1/agents/{agent_id}/claim", "/v1/jobs/{job_id}/result")
    app.router.routes.sort(key=lambda route: getattr(route, "path", None) not in hot)
    return BodyLimit(app, config.max_json_bytes, config.max_model_bytes)


def serve(
    config: ControllerConfig, host: str = "127.0.0.1", port: int = 8080, log_level: str = "warning"
) -> None:
    """Serve the controller until interrupted."""
    import uvicorn

    app = create_app(config)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False, timeout_graceful_shutdown=5)
