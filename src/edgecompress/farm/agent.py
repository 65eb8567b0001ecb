"""The farm agent: runs on a device, pulls benchmark jobs for its device class, pushes results.

It only makes outbound requests (register, heartbeat, long-poll claim, download, result). For each
job it downloads the model (controller blob or presigned S3 URL) with a size limit, verifies the
sha256, rejects anything that is not a self-contained valid ONNX model with a clear failed result,
and runs the benchmark runner in a child process with a wall-clock timeout and a memory limit
(`edge.run_on_device`), so a hostile or broken model costs one failed job, never the agent. The
heartbeat thread keeps its lease alive while a benchmark runs; if the agent dies the lease runs out
and the controller gives the job to another agent. Results are retried until the controller
answers, and the controller accepts a result once (idempotent), so a restart loses nothing.

Run: `edgecompress farm agent --controller URL --device-class NAME [--emulate rpi4-emulated]`
with EDGECOMPRESS_FARM_AGENT_TOKEN set (or --token-file).
"""

from __future__ import annotations

import logging
import platform
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgecompress.errors import BenchmarkError, ConfigError
from edgecompress.io import sha256_file

log = logging.getLogger(__name__)

AGENT_TOKEN_ENV = "EDGECOMPRESS_FARM_AGENT_TOKEN"


@dataclass
class AgentConfig:
    controller: str
    token: str
    device_class: str
    emulate: str | None = None
    agent_id: str | None = None
    poll_wait_s: float = 10.0
    memory_limit_bytes: int = 4 * 1024**3
    max_model_bytes: int = 256 * 1024 * 1024
    work_dir: Path | None = None
    max_jobs: int | None = None  # stop after this many jobs (tests, benchmarks)

    def validate(self) -> None:
        import re

        from edgecompress.farm.controller import NAME_RE
        from edgecompress.farm.devices import emulated_device_class

        if not self.controller.startswith(("http://", "https://")):
            raise ConfigError(f"--controller must be an http(s):// URL, got {self.controller!r}")
        if len(self.token) < 16:
            raise ConfigError(
                f"the agent token is missing or too short: set {AGENT_TOKEN_ENV} or --token-file"
            )
        if not re.match(NAME_RE, self.device_class):
            raise ConfigError(f"--device-class {self.device_class!r}: letters, digits, '.', '_', '-' only")
        if self.emulate:
            emulated_device_class(self.emulate)


class ModelRejected(BenchmarkError):
    """The downloaded model failed verification; the job fails with this reason."""


def check_onnx(path: Path) -> None:
    """Reject files that are not a valid, self-contained ONNX model (no external data files: a
    model must not make the agent read paths it names)."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and friends
        raise ModelRejected(f"not a valid ONNX model ({type(exc).__name__}: {str(exc)[:200]})") from exc
    if any(uses_external_data(t) for t in model.graph.initializer):
        raise ModelRejected("ONNX models with external data files are not accepted; embed the weights")
    if not model.graph.node:
        raise ModelRejected("not a valid ONNX model: the graph has no nodes")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise ModelRejected(f"not a valid ONNX model: {str(exc)[:300]}") from exc


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        import requests

        config.validate()
        self.config = config
        self.url = config.controller.rstrip("/")
        host = platform.node() or "agent"
        safe_host = "".join(c if c.isalnum() or c in "._-" else "-" for c in host)[:60] or "agent"
        self.agent_id = config.agent_id or f"{safe_host}-{config.device_class}-{uuid.uuid4().hex[:8]}"[:128]
        self.stop = threading.Event()
        self.heartbeat_s = 5.0
        self.jobs_done = 0
        self._headers = {"Authorization": f"Bearer {config.token}"}
        self._session = requests.Session()
        self._session.headers.update(self._headers)

    # --- HTTP with retries --------------------------------------------------------------------

    def _call(self, method: str, path: str, session: Any = None, retry: bool = True, **kwargs: Any) -> Any:
        """A controller call; connection errors and 5xx are retried with backoff (the controller
        may be restarting). 4xx answers are returned to the caller."""
        import requests

        session = session or self._session
        delay = 0.2
        while True:
            try:
                resp = session.request(
                    method, self.url + path, timeout=kwargs.pop("timeout", None) or 60, **kwargs
                )
                if resp.status_code < 500 or not retry:
                    return resp
                log.warning("controller answered %s to %s %s; retrying", resp.status_code, method, path)
            except requests.RequestException as exc:
                if not retry:
                    raise
                log.warning("controller unreachable (%s); retrying in %.1f s", type(exc).__name__, delay)
            if self.stop.wait(delay):
                raise BenchmarkError("agent stopping")
            delay = min(delay * 2, 5.0)

    def register(self) -> None:
        from edgecompress.farm import device as device_facts

        facts = device_facts.facts()
        facts.update(
            {
                "emulated": bool(self.config.emulate or self.config.device_class.endswith("-emulated")),
                "emulate_profile": self.config.emulate,
            }
        )
        body = {
            "agent_id": self.agent_id,
            "device_class": self.config.device_class,
            "hostname": platform.node()[:256],
            "facts": facts,
        }
        resp = self._call("POST", "/v1/agents/register", json=body)
        if resp.status_code != 200:
            raise ConfigError(f"the controller refused registration ({resp.status_code}): {resp.text[:300]}")
        self.heartbeat_s = float(resp.json()["heartbeat_s"])
        log.info("agent %s registered for %s at %s", self.agent_id, self.config.device_class, self.url)

    def _heartbeats(self) -> None:
        import requests

        session = requests.Session()
        session.headers.update(self._headers)
        while not self.stop.wait(self.heartbeat_s):
            try:
                resp = session.post(f"{self.url}/v1/agents/{self.agent_id}/heartbeat", timeout=10)
                if resp.status_code == 404:  # a fresh database: register again
                    self.register()
            except Exception as exc:  # keep beating through controller restarts
                log.debug("heartbeat failed: %s", exc)

    # --- the loop -----------------------------------------------------------------------------

    def run(self) -> int:
        """Serve jobs until stopped (or `max_jobs` done); returns the number of jobs handled."""
        self.register()
        beat = threading.Thread(target=self._heartbeats, name="heartbeat", daemon=True)
        beat.start()
        try:
            while not self.stop.is_set():
                if self.config.max_jobs is not None and self.jobs_done >= self.config.max_jobs:
                    break
                try:
                    resp = self._call(
                        "POST",
                        f"/v1/agents/{self.agent_id}/claim",
                        params={"device_class": self.config.device_class},
                        json={"wait_s": self.config.poll_wait_s},
                        timeout=self.config.poll_wait_s + 30,
                    )
                except BenchmarkError:
                    break
                if resp.status_code == 204:
                    continue
                if resp.status_code == 404 or resp.status_code == 401:
                    log.error("claim refused (%s): %s", resp.status_code, resp.text[:200])
                    self.stop.wait(2.0)
                    continue
                if resp.status_code != 200:
                    log.error("claim failed (%s): %s", resp.status_code, resp.text[:200])
                    self.stop.wait(1.0)
                    continue
                self.handle(resp.json())
        finally:
            self.stop.set()
        return self.jobs_done

    def handle(self, job: dict[str, Any]) -> None:
        claimed = time.perf_counter()
        log.info(
            "job %s: %s on %s (attempt %s)",
            job["id"],
            job["model_name"],
            self.config.device_class,
            job["attempts"],
        )
        timing: dict[str, float] = {}
        try:
            result = self.execute(job, timing)
            body = {"status": "done", "result": result}
        except BenchmarkError as exc:
            log.warning("job %s failed: %s", job["id"], exc)
            body = {"status": "failed", "error": str(exc)[:9000]}
        timing["agent_total_ms"] = (time.perf_counter() - claimed) * 1e3
        if body["status"] == "done":
            body["result"]["farm_timing"] = timing
        body.update({"agent_id": self.agent_id, "lease_id": job["lease_id"]})
        try:
            resp = self._call("POST", f"/v1/jobs/{job['id']}/result", json=body)
        except BenchmarkError:
            return
        if resp.status_code == 409:
            log.warning("job %s: result not accepted: %s", job["id"], resp.text[:300])
        elif resp.status_code != 200:
            log.error("job %s: result refused (%s): %s", job["id"], resp.status_code, resp.text[:300])
        self.jobs_done += 1

    def execute(self, job: dict[str, Any], timing: dict[str, float]) -> dict[str, Any]:
        from edgecompress.edge import run_on_device

        with tempfile.TemporaryDirectory(prefix="edgecompress-agent-", dir=self.config.work_dir) as tmp:
            path = Path(tmp) / "model.onnx"  # never the submitted name: names are not paths
            t0 = time.perf_counter()
            self.download(job["model_url"], path)
            timing["download_ms"] = (time.perf_counter() - t0) * 1e3
            actual = sha256_file(path)
            if actual != job["model_sha256"]:
                raise ModelRejected(
                    f"sha256 mismatch: the job says {job['model_sha256']}, the download hashes to {actual}"
                )
            check_onnx(path)
            timing["verify_ms"] = (time.perf_counter() - t0) * 1e3 - timing["download_ms"]
            t1 = time.perf_counter()
            result = run_on_device(
                path,
                self.config.device_class,
                self.config.emulate,
                job["settings"],
                timeout_s=job["timeout_s"],
                memory_limit_bytes=self.config.memory_limit_bytes,
            )
            timing["benchmark_wall_ms"] = (time.perf_counter() - t1) * 1e3
        result.update(
            {
                "backend": "farm",
                "job_id": job["id"],
                "agent_id": self.agent_id,
                "model_name": job["model_name"],
            }
        )
        return result

    def download(self, url: str, target: Path) -> None:
        import requests

        own = url.startswith("/")
        limit = self.config.max_model_bytes
        size = 0
        try:
            if own:
                resp = self._call("GET", url, stream=True, timeout=120)
            else:  # a presigned URL: no controller token to third parties
                resp = requests.get(url, stream=True, timeout=120)
            if resp.status_code != 200:
                raise ModelRejected(f"model download failed ({resp.status_code}): {resp.text[:200]}")
            with open(target, "wb") as f:
                for chunk in resp.iter_content(1 << 20):
                    size += len(chunk)
                    if size > limit:
                        raise ModelRejected(f"model exceeds the agent's limit of {limit} bytes")
                    f.write(chunk)
        except requests.RequestException as exc:
            raise ModelRejected(f"model download failed: {exc}") from exc


def run_agent(config: AgentConfig) -> int:
    agent = Agent(config)
    import signal

    def stop(*_: object) -> None:
        agent.stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    return agent.run()
