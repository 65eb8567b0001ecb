"""The controller's state, built once per app and injected into its routes: the config, the job
store, the token checker, the wakers of long polls and the thread pools for store calls."""

# No `from __future__ import annotations`: FastAPI reads the annotations at runtime.

import asyncio
import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgecompress.errors import ConfigError
from edgecompress.farm.identity import Authenticator
from edgecompress.farm.store import JobStore, StoreConfig
from edgecompress.farm.wire import SHA256_RE

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
            StoreConfig(
                config.lease_s,
                config.max_attempts,
                config.live_after_s,
                config.deadline_grace_s,
                config.backoff_s,
            ),
        )
        return cls(
            config,
            store,
            Authenticator(store.identities, config.admin_token, config.auth_cache_s),
            blob_dir,
            anyio.CapacityLimiter(WRITE_THREADS),
            anyio.CapacityLimiter(READ_THREADS),
            anyio.CapacityLimiter(4),
        )

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

    def model_url(self, job: dict[str, Any], which: str = "model") -> str:
        """Where the agent downloads a job's model (`which="paired"`: the model paired with it): the
        controller's blob, or a presigned S3 URL."""
        if not job[f"{which}_uri"]:
            return f"/v1/blobs/{job[f'{which}_sha256']}"
        import boto3

        from edgecompress.storage import split_s3_uri

        bucket, key = split_s3_uri(job[f"{which}_uri"])
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
        from edgecompress.runtime.runner import BenchmarkSettings

        try:
            parsed = BenchmarkSettings.from_dict(settings)
            cores = class_threads(device_class) or await self.read(self.store.class_cores, device_class)
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
