"""The farm controller and an agent run from the components image under podman (host network on
loopback, read-only root filesystem as in the Helm chart) and complete a benchmark job end to end."""

from __future__ import annotations

import json
import secrets
import subprocess
import time
import urllib.request
import uuid

import pytest

from edgecompress.farm.local import free_port
from tests.conftest import run_cli


def _podman(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def farm_image(component_image):
    probe = _podman("run", "--rm", "--network=none", component_image, "edgecompress", "farm", "--help")
    assert probe.returncode == 0, (
        f"the image has no working `edgecompress farm` command:\n{probe.stderr[-2000:]}"
    )
    return component_image


def test_controller_and_agent_containers_run_a_benchmark_job(farm_image, trained_model, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    admin_token = secrets.token_hex(16)
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o777)  # written by the image's user (uid 10001)
    suffix = uuid.uuid4().hex[:8]
    names = {"controller": f"ec-test-controller-{suffix}", "agent": f"ec-test-agent-{suffix}"}
    common = ["run", "-d", "--network=host", "--read-only", "--tmpfs", "/tmp", "--cap-drop=ALL",
              "--security-opt=no-new-privileges"]  # fmt: skip
    try:
        started = _podman(*common, "--name", names["controller"], "-v", f"{data}:/data",
                          "-e", f"EDGECOMPRESS_FARM_ADMIN_TOKEN={admin_token}",
                          farm_image, "edgecompress", "farm", "controller", "--host", "127.0.0.1", "--port", str(port),
                          "--db-url", "sqlite:////data/farm.db", "--blob-dir", "/data/blobs")  # fmt: skip
        assert started.returncode == 0, started.stderr
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, _podman("logs", names["controller"]).stderr[-3000:]
            time.sleep(0.5)
        from edgecompress.farm.admin import FarmAdmin

        admin = FarmAdmin(url, admin_token)  # enrol a client and the agent, as an operator does
        client_token = admin.add_client("ci")["token"]
        agent_token = admin.add_agent("container-agent", ["rpi4-emulated"], emulated=True)["token"]
        started = _podman(*common, "--name", names["agent"], "-e", f"EDGECOMPRESS_FARM_AGENT_TOKEN={agent_token}",
                          farm_image, "edgecompress", "farm", "agent", "--controller", url,
                          "--device-class", "rpi4-emulated", "--emulate", "rpi4-emulated")  # fmt: skip
        assert started.returncode == 0, started.stderr
        out = tmp_path / "results.json"
        result = run_cli("farm", "submit", str(trained_model), "--device-classes", "rpi4-emulated", "--farm-url", url,
                         "--settings", json.dumps({"min_runs": 50, "min_duration_s": 0.2}), "--timeout-s", "300",
                         "--output", str(out), env={"EDGECOMPRESS_FARM_CLIENT_TOKEN": client_token}, timeout=400)  # fmt: skip
        logs = {
            n: _podman("logs", c).stdout[-2000:] + _podman("logs", c).stderr[-2000:] for n, c in names.items()
        }
        assert result.returncode == 0, f"{result.stderr[-3000:]}\n{logs}"
        assert "rpi4-emulated" in result.stdout and "p50" in result.stdout
        assert out.exists()
        assert (data / "farm.db").stat().st_uid == 10001  # the queue was written inside the container
    finally:
        for name in names.values():
            _podman("rm", "-f", "-t", "5", name)
