"""The components image, built with podman, and the edge-compression pipeline run with every
component inside a container (kfp.local.DockerRunner through podman's Docker API)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import SMALL_CNN, assert_gate_follows_its_rule


def podman(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)


def test_image_labels_user_and_smoke(component_image):
    from edgecompress import __version__

    info = json.loads(podman("image", "inspect", component_image).stdout)[0]
    labels = info["Config"]["Labels"] if "Config" in info else info["Labels"]
    assert labels["org.opencontainers.image.version"] == __version__
    assert len(labels["org.opencontainers.image.revision"].split("-")[0]) == 40  # a git commit
    assert labels["io.edgecompress.torch-variant"] == "cpu"
    assert info["Config"]["User"] == "10001:10001"
    out = podman("run", "--rm", "--network=none", component_image, "edgecompress", "--version")
    assert out.returncode == 0 and out.stdout.strip() == f"edgecompress {__version__}"
    check = podman("run", "--rm", "--network=none", component_image, "sh", "-c",
                   "id -u; python3 -c 'import torch; print(torch.__version__)'; "
                   "for t in gcc cc g++ make; do command -v $t; done; ls /wheels 2>&1 || true")  # fmt: skip
    lines = check.stdout.split()
    assert lines[0] == "10001"  # non-root
    assert lines[1].endswith("+cpu")  # the CPU torch build
    assert "/usr/bin/gcc" not in check.stdout and "/usr/bin/make" not in check.stdout  # no build tools
    assert "No such file" in check.stdout  # no wheelhouse left in the final stage


def _init_docker_runner(root: Path):
    from kfp import local

    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o777)  # the containers run as uid 10001 and write their outputs here
    local.init(runner=local.DockerRunner(network_mode="none"), pipeline_root=str(root), raise_on_error=True)


def test_pipeline_runs_inside_containers(docker_api, tmp_path):
    from edgecompress.pipelines.edge_compression import build_pipeline
    from tests.containers.kfp_podman import podman_safe_docker_runner

    _init_docker_runner(tmp_path / "kfp")
    pipeline = build_pipeline(["quantize"])
    with podman_safe_docker_runner():
        task = pipeline(dataset="digits", model=json.dumps(SMALL_CNN), epochs=2, device_classes=["rpi4-emulated"],
                        bench_min_runs=30, bench_min_duration_s=0.1, max_accuracy_drop=0.05, track=False)  # fmt: skip
    gate = json.loads(Path(task.output.path).read_text())
    assert_gate_follows_its_rule(gate)  # whichever verdict, it is the rule applied to the recorded numbers
    assert gate["child"]["technique"] != gate["parent"]["technique"]
    assert set(gate["device_classes"]) == {"rpi4-emulated"}
    # Proof that the tasks ran in the image, as its non-root user: every output was written by uid 10001.
    written = [p for p in (tmp_path / "kfp").rglob("*") if p.is_file()]
    assert written and {p.stat().st_uid for p in written} == {10001}


def test_failing_component_is_reported_failed(docker_api, tmp_path):
    from edgecompress.components.load_dataset.component import load_dataset
    from tests.containers.kfp_podman import podman_safe_docker_runner

    _init_docker_runner(tmp_path / "kfp")
    with podman_safe_docker_runner(), pytest.raises(RuntimeError, match="FAILURE"):
        load_dataset(source="/no/such/dataset.npz", track=False)
    # and a good call of the same component succeeds in the same setting
    with podman_safe_docker_runner():
        ok = load_dataset(source="digits", track=False)
    assert Path(ok.outputs["dataset"].path).exists()
