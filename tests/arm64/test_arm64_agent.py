"""The arm64 farm agent image on this x86 machine: built by docker/build-agent.sh --bootstrap-base (a
bookworm arm64 base unpacked on the host by mmdebstrap, site-packages assembled on the host from an
offline wheelhouse of aarch64 wheels, podman running only the smoke tests under QEMU), run as
a farm agent for the `rpi4-qemu` class (profile: isa aarch64, emulated qemu), serving a job submitted
through the controller; and `edgecompress isa-check` running a digits model on aarch64 in it.

Needs podman, mmdebstrap, root and qemu-aarch64 registered with binfmt_misc: scripts/system-deps.sh
installs and registers all of it, so with CI=true their absence fails instead of skipping. Its own
directory, so `make test`'s two workers run it beside tests/containers rather than after it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from edgecompress.runtime import profilecheck
from tests.conftest import run_cli, skip_or_fail_in_ci
from tests.containers.conftest import REPO, _need_podman

pytestmark = [pytest.mark.container, pytest.mark.slow]
BUILD_TIMEOUT_S = 1800
BUILD_TIME_FILE = "build-agent-seconds.txt"


def _podman(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def agent_image(tmp_path_factory) -> str:
    """The arm64 agent image, built from nothing but cached layers (or EDGECOMPRESS_TEST_AGENT_IMAGE)."""
    _need_podman()
    if not Path("/proc/sys/fs/binfmt_misc/qemu-aarch64").exists():
        skip_or_fail_in_ci("qemu-aarch64 is not registered with binfmt_misc (scripts/system-deps.sh does it)")
    if shutil.which("mmdebstrap") is None and not os.environ.get("EDGECOMPRESS_TEST_AGENT_IMAGE"):
        skip_or_fail_in_ci("mmdebstrap not found (scripts/system-deps.sh installs it)")
    if os.environ.get("EDGECOMPRESS_TEST_AGENT_IMAGE"):
        return os.environ["EDGECOMPRESS_TEST_AGENT_IMAGE"]
    start = time.monotonic()
    try:
        result = subprocess.run(["bash", str(REPO / "docker" / "build-agent.sh"), "--bootstrap-base"], cwd=REPO,
                                env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True,
                                timeout=BUILD_TIMEOUT_S)  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"docker/build-agent.sh took more than {BUILD_TIMEOUT_S} s: {str(exc.stderr)[-3000:]}")
    assert result.returncode == 0, f"docker/build-agent.sh failed:\n{result.stderr[-5000:]}"
    (tmp_path_factory.getbasetemp() / BUILD_TIME_FILE).write_text(f"{time.monotonic() - start:.0f}\n")
    return result.stdout.strip().splitlines()[-1]


def _label_keys(dockerfile: Path) -> set[str]:
    text = dockerfile.read_text().split("\nLABEL ", 1)[1]
    return set(re.findall(r"^\s*([a-z][\w.-]+)=", text, flags=re.M))


def test_agent_image_is_arm64_non_root_without_torch_and_labelled_like_the_components_image(agent_image):
    from edgecompress import __version__

    info = json.loads(_podman("image", "inspect", agent_image).stdout)[0]
    assert info["Architecture"] == "arm64" and info["Os"] == "linux"
    assert info["Config"]["User"] == "10001:10001"
    labels = info["Config"]["Labels"]
    expected = _label_keys(REPO / "docker" / "Dockerfile")
    assert expected and expected <= set(labels), expected - set(labels)
    assert labels["org.opencontainers.image.version"] == __version__
    assert len(labels["org.opencontainers.image.revision"].split("-")[0]) == 40
    assert labels["io.edgecompress.torch-variant"] == "none"
    out = _podman("run", "--rm", "--network=none", "--platform", "linux/arm64", "--entrypoint", "sh", agent_image, "-c",
                  "id -u; uname -m; python3 -c 'import torch' 2>&1 | tail -n 1; ls /wheels 2>&1 || true")  # fmt: skip
    lines = out.stdout.splitlines()
    assert lines[0] == "10001" and lines[1] == "aarch64", out.stdout + out.stderr
    assert "No module named 'torch'" in lines[2] and "No such file" in out.stdout


def _cpu_under(image: str, qemu_cpu: str, folder: Path) -> dict:
    from edgecompress.isa import qemu_podman_args

    code = "import json, onnxruntime; from edgecompress.runtime.facts import cpu_features; print(json.dumps(cpu_features()))"
    out = _podman("run", "--rm", "--network=none", *qemu_podman_args(qemu_cpu, folder), "--entrypoint", "python3",
                  image, "-c", code)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_aarch64_agent_under_qemu_returns_a_job_submitted_through_the_controller(
    agent_image, trained_model, tmp_path
):
    from edgecompress.farm.admin import FarmAdmin
    from edgecompress.farm.client import FarmClient
    from edgecompress.farm.local import free_port, start_controller
    from edgecompress.isa import qemu_podman_args

    port = free_port()
    url, admin_token = f"http://127.0.0.1:{port}", uuid.uuid4().hex * 2
    controller = start_controller(port, f"sqlite:///{tmp_path / 'farm.db'}", tmp_path / "blobs", admin_token,
                                  tmp_path / "controller.log")  # fmt: skip
    name = f"ec-test-arm64-agent-{uuid.uuid4().hex[:8]}"
    try:
        admin = FarmAdmin(url, admin_token)
        client_token = admin.add_client("ci")["token"]
        agent_token = admin.add_agent("qemu-pi4", ["rpi4-qemu"], emulated=True)["token"]
        started = _podman("run", "-d", "--name", name, "--network=host", *qemu_podman_args("cortex-a72", tmp_path),
                          "-e", f"EDGECOMPRESS_FARM_AGENT_TOKEN={agent_token}",
                          agent_image, "--controller", url, "--device-class", "rpi4-qemu", "--agent-id", "qemu-pi4",
                          "--poll-wait-s", "5", "--memory-limit-mb", "16384")  # fmt: skip
        assert started.returncode == 0, started.stderr
        out = tmp_path / "results.json"
        result = run_cli("farm", "submit", str(trained_model), "--device-classes", "rpi4-qemu", "--farm-url", url,
                         "--settings", json.dumps({"min_runs": 20, "warmup_runs": 2, "min_duration_s": 0.1}),
                         "--timeout-s", "900", "--output", str(out),
                         env={"EDGECOMPRESS_FARM_CLIENT_TOKEN": client_token}, timeout=1000)  # fmt: skip
        logs = _podman("logs", name)
        assert result.returncode == 0, (
            f"{result.stderr[-3000:]}\nagent:\n{logs.stdout[-2000:]}{logs.stderr[-3000:]}"
        )
        assert "rpi4-qemu (emulated) (QEMU: timing not meaningful)" in result.stdout
        r = json.loads(out.read_text())["rpi4-qemu"]
        assert r["agent_id"] == "qemu-pi4" and r["emulated"] is True
        assert r["emulation"] == "qemu" and r["timing_meaningful"] is False and "QEMU" in r["timing_note"]
        assert r["device"]["machine"] == "aarch64" and r["device"]["cpu"]["isa"] == "aarch64"
        assert r["runs"] >= 20 and r["latency_ms"]["p50"] > 0
        (agent,) = FarmClient(url, client_token).devices()
        cpu = agent["facts"]["cpu"]
        assert cpu["source"] == "auxv" and "asimd" in cpu["features"] and "asimddp" not in cpu["features"]
        assert agent["facts"]["profile_check"] == {"agrees": True, "mismatches": []}
    finally:
        _podman("rm", "-f", "-t", "5", name)
        controller.kill()
    # The same image on a dot-product CPU reports it, and the Pi 4 profile disagrees with that.
    a76 = _cpu_under(agent_image, "cortex-a76", tmp_path)
    assert a76["int8_dot_product"] == "dotprod" and "asimddp" in a76["features"]
    assert "profile says none" in profilecheck.mismatches("rpi4-qemu", a76)[0]
    assert profilecheck.mismatches("rpi5-qemu", a76) == []


def test_isa_check_runs_a_digits_model_on_aarch64(agent_image, trained_model, digits_artifact, tmp_path):
    from edgecompress.quantize import StaticQuantConfig, quantize_step
    from edgecompress.step import Lineage

    child = tmp_path / "child"
    quantize_step(
        trained_model,
        digits_artifact,
        child,
        StaticQuantConfig(calibration_samples=64),
        Lineage(enabled=False),
    )
    out, report = tmp_path / "isa.json", tmp_path / "isa.md"
    result = run_cli("isa-check", "--parent", str(trained_model), "--child", str(child), "--dataset",
                     str(digits_artifact), "--output", str(out), "--report", str(report), "--device-classes",
                     "rpi4-qemu,rpi5-qemu,rpi4-emulated", "--isa-image", agent_image, "--no-track", timeout=1800)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["host_isa"] == "x86_64" and r["decision_split"] == "val" and r["subsample_step"] == 1
    assert not r["classes"]["rpi4-emulated"]["checked"]
    for cls, cpu, dot in (("rpi4-qemu", "cortex-a72", "none"), ("rpi5-qemu", "cortex-a76", "dotprod")):
        row = r["classes"][cls]
        assert row["checked"] and row["qemu_cpu"] == cpu and row["cpu_matches_profile"]
        assert row["target"]["machine"] == "aarch64" and row["target"]["cpu"]["int8_dot_product"] == dot
        assert row["agreement_with_host"] >= 0.95 and row["max_abs_logit_diff_host"] < 1.0
        assert row["parent_on_target"]["agreement_with_host"] == 1.0  # float: same argmax on both ISAs
        assert row["parent_on_target"]["samples"] == r["parent_on_target_samples"] <= 200 < r["samples"]
        assert row["model_seconds"]["child"] > 0 and row["model_seconds"]["parent"] > 0
        drop_ok = row["accuracy_drop"]["drop"] <= 0.01 + 1e-12
        assert row["verdict"] == ("accepted" if drop_ok else "rejected"), row
    assert "| rpi4-qemu | aarch64 (QEMU cortex-a72) |" in report.read_text()
