"""Container tests: build the components image with podman (from a bootstrapped Debian base, cached
between runs on the same machine) and serve podman's Docker API for kfp.local.DockerRunner."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import skip_or_fail_in_ci

REPO = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT_S = 1800


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.container)
            item.add_marker(pytest.mark.slow)


def _need_podman() -> None:
    if shutil.which("podman") is None:
        skip_or_fail_in_ci(
            "podman not found: container tests skipped (scripts/system-deps.sh installs podman, runc "
            "and debootstrap)"
        )
    if os.geteuid() != 0 and not os.environ.get("EDGECOMPRESS_TEST_IMAGE"):
        skip_or_fail_in_ci("building the bootstrapped base image needs root (or set EDGECOMPRESS_TEST_IMAGE)")


@pytest.fixture(scope="session")
def component_image() -> str:
    """The components image, built by docker/build.sh --bootstrap-base (or EDGECOMPRESS_TEST_IMAGE)."""
    _need_podman()
    if os.environ.get("EDGECOMPRESS_TEST_IMAGE"):
        return os.environ["EDGECOMPRESS_TEST_IMAGE"]
    from edgecompress.settings import component_image as default_image

    env = {**os.environ, "PYTHON": sys.executable, "EDGECOMPRESS_IMAGE": default_image()}
    try:
        result = subprocess.run(["bash", str(REPO / "docker" / "build.sh"), "--bootstrap-base"], cwd=REPO, env=env,
                                capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"docker/build.sh took more than {BUILD_TIMEOUT_S} s: {str(exc.stderr)[-3000:]}")
    if result.returncode != 0:
        context = subprocess.run("ls -la docker/.context docker/.context/app*; df -h .", shell=True, cwd=REPO,
                                 capture_output=True, text=True)  # fmt: skip
        pytest.fail(f"docker/build.sh failed:\n{result.stderr[-5000:]}\nbuild context now:\n{context.stdout}")
    image = result.stdout.strip().splitlines()[-1]
    assert image == default_image()
    return image


@pytest.fixture(scope="session")
def docker_api(component_image: str, tmp_path_factory: pytest.TempPathFactory):
    """DOCKER_HOST of a `podman system service` for this session."""
    from tests.containers.kfp_podman import docker_host, podman_service

    with podman_service(tmp_path_factory.mktemp("podman")) as url, docker_host(url):
        yield url
