"""The farm agent: runs on a device, pulls benchmark jobs for its device class, pushes results.

It only makes outbound requests (enrol, register, heartbeat, long-poll claim, download, result).
Identity: its own token (EDGECOMPRESS_FARM_AGENT_TOKEN or --token-file, re-read when the controller
answers 401, so a rotated token needs no restart), or an enrolment token it exchanges once for its
own at start. Its id is the one its token is bound to. Over HTTPS it verifies the controller's
certificate (--ca-bundle for a private CA).

Per job, every error becomes a failed or released job and the agent keeps serving:
- download (size-limited) and sha256 check; a transient error (connection lost mid-download, 5xx)
  releases the job, which the controller queues again after a backoff;
- the benchmark child (`runner`, forked from a preloaded forkserver) checks the ONNX model and runs
  it under an address-space limit, in its own process group with a parent-death signal, and is
  killed at the job's deadline (claim + `timeout_s`);
- settings are re-checked against this device (threads ≤ its cores);
- the result is posted until the controller answers (it may be restarting); any answer other than
  2xx is logged and the job released (409: the lease is gone, nothing to release).

Heartbeats list the one lease the agent holds, so a lease can only outlive its job by a heartbeat,
never past the job's deadline; a restarted agent process holds none. The answer lists the leases it
still holds: when its job's lease is missing (the job was cancelled, the lease taken back), the agent
kills the benchmark child (or stops the download) at once and reports nothing. While a job runs it
heartbeats at least every `lease_check_s` (2 s), so a cancelled job keeps the device busy at most
that long, whatever the lease length (idle, every lease/3).

Run: `edgecompress farm agent --controller URL --device-class NAME [--emulate rpi4-emulated]`.
"""

from __future__ import annotations

import logging
import os
import platform
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgecompress.errors import BenchmarkError, ConfigError
from edgecompress.farm import wire
from edgecompress.io import sha256_file
from edgecompress.runtime.modelcheck import ModelRejected
from edgecompress.runtime.runner import Cancelled

log = logging.getLogger(__name__)

AGENT_TOKEN_ENV = "EDGECOMPRESS_FARM_AGENT_TOKEN"
ENROLMENT_TOKEN_ENV = "EDGECOMPRESS_FARM_ENROLMENT_TOKEN"
CA_BUNDLE_ENV = "EDGECOMPRESS_FARM_CA_BUNDLE"

__all__ = ["Agent", "AgentConfig", "ModelRejected", "TransientError", "run_agent"]


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
    token_file: Path | None = None  # re-read when the controller answers 401 (rotation)
    enrolment_token: str = ""  # exchanged once for the agent's own token when `token` is empty
    ca_bundle: Path | None = None  # CA certificates to verify an HTTPS controller with
    result_retry_s: float = 600.0  # keep posting a result this long while the controller is away
    lease_check_s: float = 2.0  # while a job runs, heartbeat (and learn of a lost lease) at least this often

    def validate(self) -> None:
        import re

        from edgecompress.runtime.devices import NAME_RE, emulated_device_class

        if not self.controller.startswith(("http://", "https://")):
            raise ConfigError(f"--controller must be an http(s):// URL, got {self.controller!r}")
        if len(self.token) < 16 and len(self.enrolment_token) < 16:
            raise ConfigError(
                f"the agent token is missing or too short: set {AGENT_TOKEN_ENV} or --token-file "
                f"(or an enrolment token: {ENROLMENT_TOKEN_ENV} or --enrolment-token-file)"
            )
        if not re.match(NAME_RE, self.device_class):
            raise ConfigError(f"--device-class {self.device_class!r}: letters, digits, '.', '_', '-' only")
        if self.agent_id is not None and not re.match(NAME_RE, self.agent_id):
            raise ConfigError(f"--agent-id {self.agent_id!r}: letters, digits, '.', '_', '-' only")
        if self.ca_bundle is not None and not Path(self.ca_bundle).is_file():
            raise ConfigError(f"--ca-bundle {self.ca_bundle} does not exist")
        if self.emulate:
            emulated_device_class(self.emulate)


class TransientError(BenchmarkError):
    """A per-job error worth another try (network, controller restarting): the job is released."""


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        import requests

        config.validate()
        self.config = config
        self.url = config.controller.rstrip("/")
        host = platform.node() or "agent"
        safe_host = "".join(c if c.isalnum() or c in "._-" else "-" for c in host)[:60] or "agent"
        self.agent_id = config.agent_id or f"{safe_host}-{config.device_class}"[:128]
        self.stop = threading.Event()
        self.heartbeat_s = 5.0
        self.jobs_done = 0
        self.emulated = False
        self._token = config.token
        self._verify: Any = str(config.ca_bundle) if config.ca_bundle else True
        # `verify` goes with every request: requests lets REQUESTS_CA_BUNDLE override a session's.
        self._session = requests.Session()
        self._beats = requests.Session()  # the heartbeat thread's own connection
        self._set_token(config.token)
        self._lease_lock = threading.Lock()
        self._leases: list[wire.Lease] = []  # the lease this process holds (at most one)
        self._lost = threading.Event()  # set when the controller no longer lists that lease as ours
        self._reporting = False  # the job's outcome is being posted (its lease may end any moment)

    def _set_token(self, token: str) -> None:
        self._token = token
        for s in (self._session, self._beats):
            s.headers["Authorization"] = f"Bearer {token}"

    def _reload_token(self) -> bool:
        """After a 401: a rotated token in --token-file replaces the old one (no restart)."""
        if self.config.token_file is None:
            return False
        from edgecompress.farm.tokens import read_token

        try:
            token = read_token(None, self.config.token_file, AGENT_TOKEN_ENV)
        except ConfigError:
            return False
        if not token or token == self._token:
            return False
        log.info("agent token changed in %s: using the new one", self.config.token_file)
        self._set_token(token)
        return True

    # --- HTTP with retries --------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        session: Any = None,
        retry: bool = True,
        give_up_after_s: float | None = None,
        **kwargs: Any,
    ) -> Any:
        """A controller call; connection errors and 5xx are retried with backoff (the controller
        may be restarting), for at most `give_up_after_s` when given. 4xx answers are returned."""
        import requests

        session = session or self._session
        timeout = kwargs.pop("timeout", None) or 60
        give_up = None if give_up_after_s is None else time.monotonic() + give_up_after_s
        delay = 0.2
        while True:
            try:
                resp = session.request(
                    method, self.url + path, timeout=timeout, verify=self._verify, **kwargs
                )
                if resp.status_code == 401 and self._reload_token():
                    continue
                if resp.status_code < 500 or not retry:
                    return resp
                log.warning("controller answered %s to %s %s; retrying", resp.status_code, method, path)
            except requests.RequestException as exc:
                if not retry:
                    raise
                log.warning("controller unreachable (%s); retrying in %.1f s", type(exc).__name__, delay)
            if give_up is not None and time.monotonic() + delay > give_up:
                raise TransientError(
                    f"the controller did not answer {method} {path} within {give_up_after_s:.0f} s"
                )
            if self.stop.wait(delay):
                raise BenchmarkError("agent stopping")
            delay = min(delay * 2, 5.0)

    def enrol(self) -> None:
        """Exchange the enrolment token for this agent's own token (bound to its id and class)."""
        import requests

        headers = {"Authorization": f"Bearer {self.config.enrolment_token}"}
        body = wire.body(wire.Enrol(agent_id=self.agent_id, device_class=self.config.device_class))
        with requests.Session() as s:
            resp = self._call("POST", "/v1/agents/enrol", session=s, json=body, headers=headers)
        if resp.status_code != 201:
            raise ConfigError(f"the controller refused enrolment ({resp.status_code}): {resp.text[:300]}")
        self._set_token(resp.json()["token"])
        log.info("agent %s enrolled for %s", self.agent_id, self.config.device_class)

    def identify(self) -> None:
        """Learn (or check) the agent id this token is bound to."""
        resp = self._call("GET", "/v1/whoami")
        if resp.status_code != 200:
            raise ConfigError(
                f"the controller refused this agent's token ({resp.status_code}): {resp.text[:300]}"
            )
        me = wire.load(wire.WhoAmI, resp.json())
        if me.role != "agent":
            raise ConfigError(f"this is a {me.role} token, not an agent's")
        if self.config.agent_id and self.config.agent_id != me.name:
            raise ConfigError(
                f"--agent-id {self.config.agent_id!r} but the token belongs to agent {me.name!r}"
            )
        self.agent_id = me.name

    def register(self) -> None:
        from edgecompress.runtime import facts as device_facts

        facts = device_facts.facts()
        facts["emulate_profile"] = self.config.emulate
        info = wire.AgentInfo(
            agent_id=self.agent_id,
            device_class=self.config.device_class,
            hostname=platform.node()[:256],
            facts=facts,
            leases=self._held(),
        )
        resp = self._call("POST", "/v1/agents/register", json=wire.body(info))
        if resp.status_code != 200:
            raise ConfigError(f"the controller refused registration ({resp.status_code}): {resp.text[:300]}")
        answer = wire.load(wire.Registered, resp.json())
        self.heartbeat_s = float(answer.heartbeat_s)
        self.emulated = bool(answer.emulated)
        check = answer.profile_check or {}
        if not check.get("agrees", True):
            log.warning(
                "the controller flagged this agent: it disagrees with the %s profile: %s",
                self.config.device_class,
                "; ".join(check.get("mismatches", [])),
            )
        log.info("agent %s registered for %s at %s", self.agent_id, self.config.device_class, self.url)

    def _held(self) -> list[wire.Lease]:
        with self._lease_lock:
            return list(self._leases)

    def _beat_due(self, last: float) -> bool:
        """Every `heartbeat_s` (the controller's lease/3); while a job runs, at least every
        `lease_check_s`, so that a cancelled job's work stops promptly whatever the lease length."""
        period = self.heartbeat_s
        if self._held():
            period = min(period, self.config.lease_check_s)
        return time.monotonic() - last >= period

    def _heartbeats(self) -> None:
        last = time.monotonic()
        while not self.stop.wait(0.1):
            if not self._beat_due(last):
                continue
            last = time.monotonic()
            try:
                sent = self._held()
                resp = self._beats.post(
                    f"{self.url}/v1/agents/{self.agent_id}/heartbeat",
                    json=wire.body(wire.Heartbeat(leases=sent)),
                    timeout=10,
                    verify=self._verify,
                )
                if resp.status_code == 401:
                    self._reload_token()
                elif resp.status_code == 404:  # a fresh database: register again
                    self.register()
                elif resp.status_code == 200:
                    self._check_leases(sent, wire.load(wire.HeldLeases, resp.json()).leases)
            except Exception as exc:  # keep beating through controller restarts
                log.debug("heartbeat failed: %s", exc)

    def _check_leases(self, sent: list[wire.Lease], held: Any) -> None:
        """The heartbeat's answer lists the leases this agent still holds: a lease it sent that is
        missing was lost (the job cancelled, the lease taken back): stop that job's work now."""
        if not isinstance(held, list):
            return
        still = {(h.job_id, h.lease_id) for h in held if isinstance(h, wire.Lease)}
        with self._lease_lock:
            if self._reporting:  # our own result may have just ended the lease: not a loss
                return
            for lease in sent:
                if lease in self._leases and (lease.job_id, lease.lease_id) not in still:
                    log.warning(
                        "lease of job %s lost (the job was cancelled or its lease taken back): "
                        "stopping its work",
                        lease.job_id,
                    )
                    self._lost.set()

    # --- the loop -----------------------------------------------------------------------------

    def start(self) -> None:
        if not self._token:
            self.enrol()
        self.identify()
        self.register()

    def run(self) -> int:
        """Serve jobs until stopped (or `max_jobs` done); returns the number of jobs handled."""
        self.start()
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
                        json=wire.body(wire.ClaimRequest(wait_s=self.config.poll_wait_s)),
                        timeout=self.config.poll_wait_s + 30,
                    )
                except BenchmarkError:
                    break
                if resp.status_code == 204:
                    continue
                if resp.status_code != 200:
                    log.error("claim refused (%s): %s", resp.status_code, resp.text[:200])
                    self.stop.wait(2.0)
                    continue
                self.handle(wire.load(wire.ClaimedJob, resp.json()))
        finally:
            self.stop.set()
        return self.jobs_done

    def handle(self, job: wire.ClaimedJob) -> None:
        """One job, start to end; whatever goes wrong, the agent carries on with the next."""
        claimed = time.monotonic()
        deadline = claimed + float(job.timeout_s)
        log.info(
            "job %s: %s on %s (attempt %s)", job.id, job.model_name, self.config.device_class, job.attempts
        )
        with self._lease_lock:
            self._leases = [wire.Lease(job_id=job.id, lease_id=job.lease_id)]
            self._lost = threading.Event()
            self._reporting = False
        try:
            timing: dict[str, float] = {}
            result, error = None, None
            try:
                result = self.execute(job, deadline, timing)
            except Cancelled as exc:
                log.warning(
                    "stopped job %s (%s) after %.1f s; nothing to report",
                    job.id,
                    exc,
                    time.monotonic() - claimed,
                )
                return
            except TransientError as exc:
                log.warning("releasing job %s for another try: %s", job.id, exc)
                with self._lease_lock:
                    self._reporting = True  # the release ends the lease: not a loss
                self.release(job, str(exc))
                return
            except BenchmarkError as exc:
                log.warning("job %s failed: %s", job.id, exc)
                error = str(exc)[:9000]
            except Exception as exc:  # a bug or an unexpected input: fail this job, keep serving
                log.exception("unexpected error in job %s", job.id)
                error = f"agent error: {type(exc).__name__}: {str(exc)[:2000]}"
            timing["agent_total_ms"] = (time.monotonic() - claimed) * 1e3
            if result is not None:
                result["farm_timing"] = timing
            outcome = wire.ResultSubmission(
                agent_id=self.agent_id,
                lease_id=job.lease_id,
                status="failed" if result is None else "done",
                result=result,
                error=error,
            )
            with self._lease_lock:
                self._reporting = True
            if self._lost.is_set():
                log.warning("lease of job %s is gone: not reporting its outcome", job.id)
                return
            self.report(job, outcome)
        finally:
            with self._lease_lock:
                self._leases = []
            self.jobs_done += 1

    def report(self, job: wire.ClaimedJob, outcome: wire.ResultSubmission) -> None:
        try:
            resp = self._call(
                "POST",
                f"/v1/jobs/{job.id}/result",
                json=wire.body(outcome),
                give_up_after_s=self.config.result_retry_s,
            )
        except BenchmarkError as exc:
            log.error("result of job %s not delivered (%s); its lease will run out", job.id, exc)
            return
        if resp.status_code == 200:
            log.info(
                "result of job %s accepted (%s)",
                job.id,
                "duplicate" if resp.json().get("duplicate") else "new",
            )
        elif resp.status_code == 409:
            log.warning("result of job %s not accepted: %s", job.id, resp.text[:300])
        else:
            log.error("result of job %s refused (%s): %s", job.id, resp.status_code, resp.text[:300])
            self.release(
                job, f"the controller refused the result ({resp.status_code}): {_detail(resp)[:500]}"
            )

    def release(self, job: wire.ClaimedJob, reason: str) -> None:
        """Give the job back (queued again after a backoff, or failed once its attempts are spent)."""
        body = wire.body(wire.Release(lease_id=job.lease_id, reason=reason[:2000]))
        try:
            resp = self._call(
                "POST", f"/v1/jobs/{job.id}/release", json=body, give_up_after_s=self.config.result_retry_s
            )
        except BenchmarkError as exc:
            log.error("release of job %s not delivered (%s); its lease will run out", job.id, exc)
            return
        if resp.status_code != 200:
            log.warning("release of job %s answered %s: %s", job.id, resp.status_code, resp.text[:300])

    def execute(self, job: wire.ClaimedJob, deadline: float, timing: dict[str, float]) -> dict[str, Any]:
        from edgecompress.runtime.devices import emulated_classes
        from edgecompress.runtime.executor import run_on_device
        from edgecompress.runtime.runner import BenchmarkSettings

        emulating = self.config.emulate or (
            self.config.device_class if self.config.device_class in emulated_classes() else None
        )
        if not emulating:  # this device's own cores bound the threads (the controller checked the class)
            usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
            BenchmarkSettings.from_dict({"threads": usable, **job.settings}).validate(max_threads=usable)
        with tempfile.TemporaryDirectory(prefix="edgecompress-agent-", dir=self.config.work_dir) as tmp:
            path = Path(tmp) / "model.onnx"  # never the submitted name: names are not paths
            paired = Path(tmp) / "paired.onnx" if job.paired_sha256 else None
            t0 = time.perf_counter()
            self.download(job.model_url, path, deadline)
            if paired is not None:
                if not job.paired_url:
                    raise ModelRejected("the job names a paired model but no URL to download it from")
                self.download(job.paired_url, paired, deadline)
            timing["download_ms"] = (time.perf_counter() - t0) * 1e3
            downloads = [(path, job.model_sha256)] + ([(paired, job.paired_sha256)] if paired else [])
            for where, expected in downloads:
                actual = sha256_file(where)
                if actual != expected:
                    raise ModelRejected(
                        f"sha256 mismatch: the job says {expected}, the download hashes to {actual}"
                    )
            timing["verify_ms"] = (time.perf_counter() - t0) * 1e3 - timing["download_ms"]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BenchmarkError(
                    f"the job's {job.timeout_s:g} s timeout passed before the benchmark started"
                )
            log.info("benchmark of job %s started (%.0f s to its deadline)", job.id, remaining)
            t1 = time.perf_counter()
            # The ONNX check runs inside the benchmark child, under its memory limit (runner).
            result = run_on_device(
                path,
                self.config.device_class,
                self.config.emulate,
                job.settings,
                timeout_s=remaining,
                memory_limit_bytes=self.config.memory_limit_bytes,
                cancel=self._lost,
                paired_with=paired,
            )
            timing["benchmark_wall_ms"] = (time.perf_counter() - t1) * 1e3
        # a paired job's result: the outer record and each model's own (named after its model)
        named = [(result, job.model_name)]
        named += list(zip(result.get("results", []), [job.model_name, job.paired_name], strict=False))
        for each, name in named:
            each.update(
                {
                    "backend": "farm",
                    "job_id": job.id,
                    "agent_id": self.agent_id,
                    "model_name": name,
                    "emulated": bool(each.get("emulated")) or self.emulated,  # as enrolled, at least
                }
            )
            # The controller describes the device from the class's profile (results.stamp); this
            # executor's own wording would only show up as a disagreement under `agent_reported`.
            each.pop("device_description", None)
        return result

    def download(self, url: str, target: Path, deadline: float) -> None:
        """Stream the model to `target`. A network failure or a 5xx is transient (TransientError:
        the job is released and tried again later); a 4xx or an oversized model is final."""
        import requests

        own = url.startswith("/")
        limit = self.config.max_model_bytes
        size = 0
        read_timeout = max(5.0, min(60.0, deadline - time.monotonic()))
        try:
            if own:
                resp = self._session.get(
                    self.url + url, stream=True, timeout=(10, read_timeout), verify=self._verify
                )
                if resp.status_code == 401 and self._reload_token():  # rotated since the claim
                    resp.close()
                    resp = self._session.get(
                        self.url + url, stream=True, timeout=(10, read_timeout), verify=self._verify
                    )
            else:  # a presigned URL (the system's CAs): no controller token to third parties
                resp = requests.get(url, stream=True, timeout=(10, read_timeout))
            with resp:
                if resp.status_code >= 500:
                    raise TransientError(f"model download failed ({resp.status_code}): {resp.text[:200]}")
                if resp.status_code != 200:
                    raise ModelRejected(f"model download failed ({resp.status_code}): {resp.text[:200]}")
                with open(target, "wb") as f:
                    for chunk in resp.iter_content(1 << 20):
                        size += len(chunk)
                        if size > limit:
                            raise ModelRejected(f"model exceeds the agent's limit of {limit} bytes")
                        f.write(chunk)
                        if self._lost.is_set():
                            raise Cancelled("download stopped: its job's lease is gone")
                        if time.monotonic() > deadline:
                            raise BenchmarkError("the job's timeout passed during the model download")
        except requests.RequestException as exc:
            raise TransientError(
                f"model download interrupted ({type(exc).__name__}: {str(exc)[:200]})"
            ) from exc


def _detail(resp: Any) -> str:
    try:
        detail = resp.json().get("detail")
        return detail if isinstance(detail, str) else str(detail)
    except ValueError:
        return resp.text


def run_agent(config: AgentConfig) -> int:
    agent = Agent(config)
    import signal

    def stop(*_: object) -> None:
        agent.stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    return agent.run()
