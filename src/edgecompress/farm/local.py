"""A farm on loopback: a controller and emulated agents as child processes.

`local_farm(classes)` is what `edgecompress run` and `edge_benchmark` (without a farm URL) use, and
`edgecompress farm up --local` serves one until interrupted. Each class gets an agent emulating it
(thread cap + CPU affinity); results stay labelled `emulated`. A random admin token is generated per
farm; with it the farm enrols one client (`local`, whose token it hands out) and each emulated agent
(its own token, bound to its class, enrolled as emulated), as an operator would. The helpers that
start one controller or one agent process are also what the tests and the farm benchmark use, so
they exercise real processes on real sockets.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgecompress.errors import BenchmarkError
from edgecompress.farm.admin import FarmAdmin


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The children run this interpreter, whose installed edgecompress is the one running here (no
    PYTHONPATH=src: components and pipelines are mapped by the install, not found under src/)."""
    return {**os.environ, **(extra or {})}


@dataclass
class Proc:
    """A child process in its own process group (stopping it also stops its benchmark children)."""

    popen: subprocess.Popen
    log_path: Path
    args: list[str] = field(default_factory=list)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole group: the hard crash the reliability tests need."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)

    def stop(self, grace_s: float = 3.0) -> None:
        if not self.alive():
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self.kill()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


def _die_with_parent() -> None:  # runs in the child before exec
    """Linux: SIGTERM this child when the process that started it dies, so a crashed or killed
    parent (a pipeline task, a test) does not leave a controller or agents behind."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _spawn(args: list[str], log_path: Path, env: dict[str, str]) -> Proc:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        popen = subprocess.Popen(
            [sys.executable, "-m", "edgecompress.farm", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_env(env),
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
    return Proc(popen, log_path, args)


def start_controller(
    port: int,
    db_url: str,
    blob_dir: Path,
    admin_token: str,
    log_path: Path,
    extra_args: list[str] | None = None,
    wait_s: float = 60.0,
    scheme: str = "http",
    verify: bool | str = True,
) -> Proc:
    env = {"EDGECOMPRESS_FARM_ADMIN_TOKEN": admin_token}
    proc = _spawn(
        [
            "controller",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--db-url",
            db_url,
            "--blob-dir",
            str(blob_dir),
            *(extra_args or []),
        ],
        log_path,
        env,
    )
    wait_healthy(f"{scheme}://127.0.0.1:{port}", proc, wait_s, verify=verify)
    return proc


def start_agent(
    url: str,
    device_class: str,
    agent_token: str,
    log_path: Path,
    emulate: str | None = None,
    extra_args: list[str] | None = None,
    enrolment_token: str = "",
) -> Proc:
    """An agent process with its own (enrolled) token, or (`agent_token=""`) one that exchanges an
    enrolment token for its own at start."""
    args = ["agent", "--controller", url, "--device-class", device_class, *(extra_args or [])]
    if emulate:
        args += ["--emulate", emulate]
    env = {"EDGECOMPRESS_FARM_AGENT_TOKEN": agent_token, "EDGECOMPRESS_FARM_ENROLMENT_TOKEN": enrolment_token}
    return _spawn(args, log_path, env)


def wait_healthy(url: str, proc: Proc | None = None, wait_s: float = 60.0, verify: bool | str = True) -> None:
    import requests

    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise BenchmarkError(f"the farm controller exited ({proc.popen.returncode}): {proc.log()}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{url}/healthz", timeout=2, verify=verify).status_code == 200:
                return
        time.sleep(0.1)
    raise BenchmarkError(f"the farm controller at {url} was not healthy within {wait_s:.0f} s")


def enrol(admin: FarmAdmin, kind: str, name: str, *args: Any) -> str:
    """Enrol `name` and return its token; an identity left from an earlier run gets a new token."""
    add = {"client": admin.add_client, "agent": admin.add_agent}[kind]
    try:
        return add(name, *args)["token"]
    except BenchmarkError as exc:
        if "answered 409" not in str(exc):
            raise
        return admin.rotate(kind, name)["token"]


def wait_devices(
    url: str, client_token: str, classes: list[str], agents: list[Proc], wait_s: float = 60.0
) -> None:
    """Wait until every class has a live registered agent."""
    from edgecompress.farm.client import FarmClient

    client = FarmClient(url, client_token)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        for a in agents:
            if not a.alive():
                raise BenchmarkError(f"a farm agent exited ({a.popen.returncode}): {a.log()}")
        live = {d["device_class"] for d in client.devices() if d["live"]}
        if set(classes) <= live:
            return
        time.sleep(0.1)
    raise BenchmarkError(f"farm agents for {classes} did not register within {wait_s:.0f} s")


@dataclass
class LocalFarm:
    url: str
    client_token: str
    admin_token: str
    controller: Proc
    agents: list[Proc]
    directory: Path

    def admin(self) -> FarmAdmin:
        return FarmAdmin(self.url, self.admin_token)

    def enrol_agent(self, agent_id: str, device_classes: list[str], emulated: bool = True) -> str:
        """A token for a new agent identity (benchmarks drive agents by hand with it)."""
        return enrol(self.admin(), "agent", agent_id, device_classes, emulated)

    def stop(self) -> None:
        for a in self.agents:
            a.stop(grace_s=1.0)
        self.controller.stop()


@contextlib.contextmanager
def local_farm(
    classes: list[str], directory: Path | None = None, port: int | None = None, agents_per_class: int = 1
) -> Iterator[LocalFarm]:
    """A controller on 127.0.0.1 plus emulated agents for `classes`; stopped on exit."""
    from edgecompress.runtime.devices import emulated_device_class

    for name in classes:
        emulated_device_class(name)
    with contextlib.ExitStack() as stack:
        if directory is None:
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edgecompress-farm-")))
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        admin_token = secrets.token_urlsafe(32)
        port = port or free_port()
        url = f"http://127.0.0.1:{port}"
        controller = start_controller(
            port,
            f"sqlite:///{directory / 'farm.db'}",
            directory / "blobs",
            admin_token,
            directory / "controller.log",
        )
        agents: list[Proc] = []
        admin = FarmAdmin(url, admin_token)
        farm = LocalFarm(url, "", admin_token, controller, agents, directory)
        stack.callback(farm.stop)
        farm.client_token = enrol(admin, "client", "local")
        for name in classes:
            for i in range(agents_per_class):
                agent_id = f"local-{name}-{i}"
                token = enrol(admin, "agent", agent_id, [name], True)
                agents.append(
                    start_agent(
                        url,
                        name,
                        token,
                        directory / f"agent-{name}-{i}.log",
                        emulate=name,
                        extra_args=["--agent-id", agent_id],
                    )
                )
        wait_devices(url, farm.client_token, classes, agents)
        yield farm
