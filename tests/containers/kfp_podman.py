"""kfp.local's DockerRunner through podman's Docker API, with the auto_remove race handled.

kfp 2.17's `docker_task_handler.run_docker_container` starts every container with
`auto_remove=True`, then streams its logs and calls `wait()`. Under podman the container is often
gone by then: `logs`/`wait` raise NotFound, which kfp takes as exit code 0, so a failing task can be
reported as SUCCESS. `podman_safe_docker_runner()` swaps in the same function without auto-remove:
stream the logs, read the exit code with `wait()`, and only then remove the container. The container
command, image, volumes and run arguments are exactly those KFP passes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def run_docker_container(client, image: str, command: list[str], volumes: dict[str, Any], **run_args) -> int:
    from kfp.local.docker_task_handler import add_latest_tag_if_not_present

    image = add_latest_tag_if_not_present(image=image)
    if not any(image in (i.tags + i.attrs.get("RepoDigests", [])) for i in client.images.list()):
        client.images.pull(image)
    run_args.pop("auto_remove", None)
    container = client.containers.run(image=image, command=command, detach=True, stdout=True, stderr=True,
                                      volumes=volumes, auto_remove=False, **run_args)  # fmt: skip
    try:
        for chunk in container.logs(stream=True, follow=True):
            print(chunk.decode(errors="replace"), end="")
        return int(container.wait()["StatusCode"])
    finally:
        container.remove(force=True)


@contextlib.contextmanager
def podman_safe_docker_runner() -> Iterator[None]:
    """Within the block, kfp.local.DockerRunner runs containers without auto_remove."""
    from kfp.local import docker_task_handler

    original = docker_task_handler.run_docker_container
    docker_task_handler.run_docker_container = run_docker_container
    try:
        yield
    finally:
        docker_task_handler.run_docker_container = original


@contextlib.contextmanager
def podman_service(folder: Path, timeout: float = 60) -> Iterator[str]:
    """`podman system service` on a unix socket in `folder`; yields its DOCKER_HOST URL."""
    sock = folder / "podman.sock"
    proc = subprocess.Popen([shutil.which("podman") or "podman", "system", "service", "--time=0", f"unix://{sock}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"podman system service exited: {proc.stderr.read().decode()[-2000:]}")
            if sock.exists():
                with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as s:
                    s.connect(str(sock))
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"podman system service did not open {sock} in {timeout} s")
            time.sleep(0.2)
        yield f"unix://{sock}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def docker_host(url: str) -> Iterator[None]:
    old = os.environ.get("DOCKER_HOST")
    os.environ["DOCKER_HOST"] = url
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("DOCKER_HOST", None)
        else:
            os.environ["DOCKER_HOST"] = old
