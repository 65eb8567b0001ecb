"""docker/build.sh shares one build context per checkout: a second build waits for the first
instead of deleting the wheels the first is still using (CI lost its staged wheel that way)."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.containers.conftest import REPO

WAIT_S = 8  # the unlocked script reaches its `rm -rf app` within ~2 s


@pytest.mark.skipif(shutil.which("podman") is None, reason="docker/build.sh needs podman")
def test_a_second_build_waits_for_the_first_and_touches_nothing():
    ctx = REPO / "docker" / ".context"
    (ctx / "app").mkdir(parents=True, exist_ok=True)
    sentinel = ctx / "app" / "in-use-by-another-build"
    sentinel.write_text("")
    env = {**os.environ, "PYTHON": sys.executable}
    try:
        with open(ctx / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # what a running build holds
            proc = subprocess.Popen(
                ["bash", str(REPO / "docker" / "build.sh"), "--tag", "localhost/edgecompress-lock-test:unused"],
                cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
            )  # fmt: skip
            try:
                time.sleep(WAIT_S)
                assert proc.poll() is None, (
                    f"build.sh did not wait for the lock:\n{proc.stderr.read().decode()}"
                )
                assert sentinel.exists(), "build.sh deleted app/ while another build held the lock"
                assert not list(ctx.glob("app.*")), (
                    "build.sh started staging while another build held the lock"
                )
            finally:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    finally:
        sentinel.unlink(missing_ok=True)
