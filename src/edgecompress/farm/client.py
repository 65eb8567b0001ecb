"""Client of the farm controller: upload a model, submit one job per device class, wait for results.

The client token (issued by the farm's admin: `edgecompress farm admin add-client NAME`) comes from
the argument, else EDGECOMPRESS_FARM_CLIENT_TOKEN, else the file named by
EDGECOMPRESS_FARM_CLIENT_TOKEN_FILE. A client sees and cancels only its own jobs. Over HTTPS the
controller's certificate is verified against the system's CAs, or EDGECOMPRESS_FARM_CA_BUNDLE (a
private CA). A class with no live agent fails clearly once the timeout has passed (the job expires in
the controller too, so nothing waits forever).
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

from edgecompress.errors import BenchmarkError, ConfigError, PairingUnsupported
from edgecompress.farm import wire
from edgecompress.io import sha256_file

CLIENT_TOKEN_ENV = "EDGECOMPRESS_FARM_CLIENT_TOKEN"
CA_BUNDLE_ENV = "EDGECOMPRESS_FARM_CA_BUNDLE"
TERMINAL = ("done", "failed")


def token_from_env(token: str | None, env: str, what: str) -> str:
    """The token given, else $env, else the file named by $env_FILE."""
    if token:
        return token
    if os.environ.get(env):
        return os.environ[env].strip()
    file = os.environ.get(f"{env}_FILE")
    if file:
        try:
            return Path(file).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the farm {what} token from {file}: {exc}") from exc
    raise ConfigError(f"no farm {what} token: set {env} (or {env}_FILE)")


def client_token(token: str | None = None) -> str:
    return token_from_env(token, CLIENT_TOKEN_ENV, "client")


class FarmClient:
    def __init__(
        self,
        url: str,
        token: str | None = None,
        request_timeout_s: float = 30.0,
        ca_bundle: str | Path | None = None,
    ) -> None:
        import requests

        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"farm URL must start with http:// or https://, got {url!r}")
        self.url = url.rstrip("/")
        self.timeout = request_timeout_s
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {self._token(token)}"
        bundle = ca_bundle or os.environ.get(CA_BUNDLE_ENV)
        # Passed with every request: requests lets REQUESTS_CA_BUNDLE override a session's `verify`.
        self.verify: bool | str = str(bundle) if bundle else True

    def _token(self, token: str | None) -> str:
        return client_token(token)

    def _request(self, method: str, path: str, ok: tuple[int, ...] = (200, 201), **kwargs: Any) -> Any:
        import requests

        try:
            resp = self.session.request(
                method,
                self.url + path,
                timeout=kwargs.pop("timeout", self.timeout),
                verify=self.verify,
                **kwargs,
            )
        except requests.RequestException as exc:
            raise BenchmarkError(f"cannot reach the farm controller at {self.url}: {exc}") from exc
        if resp.status_code not in ok:
            try:
                detail = resp.json().get("detail")
            except ValueError:
                detail = resp.text[:300]
            raise BenchmarkError(f"farm controller {method} {path} answered {resp.status_code}: {detail}")
        return resp

    # --- API ----------------------------------------------------------------------------------

    def upload(self, model_path: Path) -> dict[str, Any]:
        """Upload a model unless the controller already has it; return its reference."""
        model_path = Path(model_path)
        if not model_path.is_file():
            raise BenchmarkError(f"model {model_path} does not exist")
        sha = sha256_file(model_path)
        size = model_path.stat().st_size
        if self._request("HEAD", f"/v1/blobs/{sha}", ok=(200, 404)).status_code == 404:
            with open(model_path, "rb") as f:
                self._request(
                    "PUT",
                    f"/v1/blobs/{sha}",
                    data=f,
                    timeout=max(self.timeout, 300),
                    headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
                )
        return wire.body(wire.ModelRef(sha256=sha, name=model_path.name, bytes=size))

    def submit(
        self,
        model: wire.ModelRef | dict[str, Any],
        device_class: str,
        settings: dict[str, Any] | None = None,
        timeout_s: float = 600.0,
        priority: int = 0,
        expires_in_s: float | None = None,
        paired_with: wire.ModelRef | dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        spec = wire.JobSpec(
            model=model_ref(model),
            paired_with=model_ref(paired_with) if paired_with is not None else None,
            device_class=device_class,
            settings=settings or {},
            timeout_s=timeout_s,
            priority=priority,
            expires_in_s=expires_in_s,
        )
        try:
            return self._request("POST", "/v1/jobs", json=wire.body(spec)).json()
        except BenchmarkError as exc:
            if paired_with is not None and "paired_with" in str(exc) and " 422:" in str(exc):
                raise PairingUnsupported(
                    f"the farm controller at {self.url} does not take paired jobs: {exc}"
                ) from exc
            raise

    def job(self, job_id: int) -> dict[str, Any]:
        return self._request("GET", f"/v1/jobs/{job_id}").json()

    def jobs(
        self, state: str | None = None, device_class: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        params = {
            k: v for k, v in {"state": state, "device_class": device_class, "limit": limit}.items() if v
        }
        return self._request("GET", "/v1/jobs", params=params).json()

    def cancel(self, job_id: int) -> dict[str, Any]:
        return self._request("POST", f"/v1/jobs/{job_id}/cancel").json()

    def devices(self) -> list[dict[str, Any]]:
        return self._request("GET", "/v1/devices").json()

    def queue(self) -> dict[str, Any]:
        return wire.body(wire.load(wire.QueueDepth, self._request("GET", "/v1/queue").json()))

    def wait(self, job_ids: list[int], timeout_s: float) -> dict[int, dict[str, Any]]:
        """Wait until every job is done or failed, or the timeout passes (unfinished jobs are
        returned in their current state). Long-polls the controller: no busy polling."""
        deadline = time.monotonic() + timeout_s
        out: dict[int, dict[str, Any]] = {}
        for job_id in job_ids:
            while True:
                remaining = deadline - time.monotonic()
                wait = max(0.0, min(remaining, 10.0))
                out[job_id] = self._request(
                    "GET",
                    f"/v1/jobs/{job_id}",
                    params={"wait_s": round(wait, 3)},
                    timeout=self.timeout + wait,
                ).json()
                if out[job_id]["state"] in TERMINAL or remaining <= 0:
                    break
        return out


def model_ref(model: wire.ModelRef | dict[str, Any]) -> wire.ModelRef:
    """A job's model: a reference from `upload`, or a dict of its fields (sha256, and uri for S3)."""
    if isinstance(model, wire.ModelRef):
        return model
    try:
        return wire.ModelRef(**model)
    except TypeError as exc:
        fields = ", ".join(f.name for f in dataclasses.fields(wire.ModelRef))
        raise ConfigError(f"model reference {model!r:.300}: {exc} (its fields: {fields})") from exc


def _agents_of(client: FarmClient, device_class: str) -> str:
    """Why a class may have no result: its agents' state."""
    agents = [d for d in client.devices() if d["device_class"] == device_class]
    if not agents:
        return "no agent of this class has ever registered"
    if not any(d["live"] for d in agents):
        return f"no live agent (last heartbeat {min(d['seconds_since_heartbeat'] for d in agents):.0f} s ago)"
    return f"{sum(d['live'] for d in agents)} live agent(s)"


def benchmark_on_farm(
    farm_url: str,
    model_path: Path,
    classes: list[str],
    settings: dict[str, Any],
    timeout_s: float = 600.0,
    token: str | None = None,
    priority: int = 0,
    ca_bundle: str | Path | None = None,
    paired_with: Path | None = None,
) -> dict[str, dict[str, Any]]:
    """Benchmark one model on each device class through the farm; one result per class, in the
    runner's schema plus device_class, emulated, device facts, job id and agent id. With
    `paired_with`, one paired job per class (`runner.benchmark_paired`'s schema)."""
    client = FarmClient(farm_url, token, ca_bundle=ca_bundle)
    model = client.upload(Path(model_path))
    paired = client.upload(Path(paired_with)) if paired_with is not None else None
    jobs = {
        cls: client.submit(
            model,
            cls,
            settings,
            timeout_s=timeout_s,
            priority=priority,
            expires_in_s=timeout_s,
            paired_with=paired,
        )
        for cls in classes
    }
    finished = client.wait([j["id"] for j in jobs.values()], timeout_s)
    results, errors = {}, []
    for cls, submitted in jobs.items():
        job = finished[submitted["id"]]
        if job["state"] == "done":
            results[cls] = {
                **job["result"],
                "job_id": job["id"],
                "agent_id": job["agent_id"],
                "attempts": job["attempts"],
            }
        elif job["state"] == "failed" and job.get("agent_id"):
            errors.append(
                f"device class {cls}: job {job['id']} failed on agent {job['agent_id']}: {job['error']}"
            )
        elif job["state"] == "failed":  # expired in the queue
            errors.append(
                f"device class {cls}: job {job['id']} failed: {job['error']}; {_agents_of(client, cls)}"
            )
        else:
            client.cancel(job["id"])
            errors.append(
                f"device class {cls}: job {job['id']} has no result within {timeout_s:.0f} s "
                f"(still {job['state']}); {_agents_of(client, cls)}"
            )
    if errors:
        raise BenchmarkError("; ".join(errors))
    return results
