"""Farm fixtures: real controller and agent processes on loopback, stopped by the fixture."""

from __future__ import annotations

import contextlib
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import requests

from edgecompress.farm.local import Proc, free_port, start_agent, start_controller
from edgecompress.farm.pgserver import PostgresServer
from tests.conftest import skip_or_fail_in_ci

TINY = {"min_runs": 5, "warmup_runs": 1, "min_duration_s": 0.0}


def tiny_onnx(path: Path, width: int = 16, seed: int = 0) -> Path:
    """A two-layer MLP as ONNX, written with onnx.helper (no torch, instant)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w1 = numpy_helper.from_array(rng.standard_normal((8, width)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((width, 4)).astype(np.float32), "w2")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("MatMul", ["r", "w2"], ["y"])],
        "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])], [w1, w2],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


class Farm:
    """One controller (restartable) plus agents, all real processes; `close` stops everything.

    Identities as an operator would set them up: an admin token for the controller, one enrolled
    client (`tests`), and each agent enrolled under its own id for its class (emulated when the class
    is an emulated one)."""

    def __init__(
        self, root: Path, controller_args: list[str], db_url: str | None = None, verify: bool | str = True
    ) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.scheme = "https" if "--tls-cert" in controller_args else "http"
        self.verify = verify  # a CA bundle's path for a controller serving HTTPS
        self.ca_bundle = verify if isinstance(verify, str) else None
        self.url = f"{self.scheme}://127.0.0.1:{self.port}"
        self.admin_token = secrets.token_urlsafe(32)
        self.db_url = db_url or f"sqlite:///{root / 'farm.db'}"
        self.controller_args = controller_args
        self.agents: list[Proc] = []
        self.agent_tokens: dict[str, str] = {}
        self.controller: Proc | None = None
        self.start_controller()
        self.client_token = self.admin().add_client("tests")["token"]
        self._agent_token: str | None = None

    def start_controller(self) -> Proc:
        self.controller = start_controller(
            self.port,
            self.db_url,
            self.root / "blobs",
            self.admin_token,
            self.root / "controller.log",
            self.controller_args,
            scheme=self.scheme,
            verify=self.verify,
        )
        return self.controller

    def admin(self):
        from edgecompress.farm.admin import FarmAdmin

        return FarmAdmin(self.url, self.admin_token, ca_bundle=self.ca_bundle)

    def agent_token_for(self, agent_id: str, device_class: str) -> str:
        """The token of agent `agent_id`, enrolled for `device_class` on first use."""
        from edgecompress.runtime.devices import emulated_classes

        if agent_id not in self.agent_tokens:
            enrolled = self.admin().add_agent(
                agent_id, [device_class], emulated=device_class in emulated_classes()
            )
            self.agent_tokens[agent_id] = enrolled["token"]
        return self.agent_tokens[agent_id]

    @property
    def agent_token(self) -> str:
        """A valid agent token (agent `a1`, enrolled for rpi4-emulated)."""
        return self.agent_token_for("a1", "rpi4-emulated")

    def agent(self, device_class: str = "rpi4-emulated", *args: str, url: str | None = None) -> Proc:
        """An agent process `agent-<n>` (a later `--agent-id` in args overrides the name)."""
        n = len(self.agents)
        agent_id = f"agent-{n}"
        for i, arg in enumerate(args[:-1]):
            if arg == "--agent-id":
                agent_id = args[i + 1]
        proc = start_agent(
            url or self.url,
            device_class,
            self.agent_token_for(agent_id, device_class),
            self.root / f"agent-{n}.log",
            emulate=None,
            extra_args=["--agent-id", agent_id, "--poll-wait-s", "2", *args],
        )
        self.agents.append(proc)
        return proc

    def agent_headers(self, agent_id: str, device_class: str = "rpi4-emulated") -> dict[str, str]:
        """Headers of a hand-driven agent, enrolled and registered for `device_class`."""
        headers = {"Authorization": f"Bearer {self.agent_token_for(agent_id, device_class)}"}
        body = {"agent_id": agent_id, "device_class": device_class, "hostname": "test"}
        r = requests.post(f"{self.url}/v1/agents/register", json=body, headers=headers, timeout=10,
                          verify=self.verify)  # fmt: skip
        assert r.status_code == 200, r.text
        return headers

    def headers(self, role: str = "client") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.client_token if role == 'client' else self.agent_token}"}

    def client(self):
        from edgecompress.farm.client import FarmClient

        return FarmClient(self.url, self.client_token, ca_bundle=self.ca_bundle)

    def client_for(self, token: str):
        from edgecompress.farm.client import FarmClient

        return FarmClient(self.url, token, ca_bundle=self.ca_bundle)

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.1)
        raise AssertionError(
            f"timed out after {timeout_s} s waiting for {what}\ncontroller log:\n"
            f"{self.controller.log() if self.controller else ''}\nagent logs:\n"
            + "\n".join(a.log()[-1500:] for a in self.agents)
        )

    def healthy(self) -> bool:
        return requests.get(f"{self.url}/healthz", timeout=5, verify=self.verify).status_code == 200

    def close(self) -> None:
        for a in self.agents:
            a.kill() if a.alive() else None
        if self.controller is not None and self.controller.alive():
            self.controller.kill()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One private PostgreSQL server per test session (per xdist worker); each test gets its own
    database. Missing PostgreSQL skips, and with CI=true fails (scripts/system-deps.sh installs it)."""
    from edgecompress.farm.pgserver import PostgresUnavailable, temporary_postgres

    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(temporary_postgres(durable=False))
        except PostgresUnavailable as exc:
            skip_or_fail_in_ci(str(exc))
        yield server


BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The store behind a test's controllers: every store and controller test runs on both."""
    return request.param


@pytest.fixture
def db_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database of the test's backend."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'farm.db'}"
        return
    server = request.getfixturevalue("postgres_server")
    url = server.new_database()
    yield url
    server.drop_database(url)


@pytest.fixture
def farm_factory(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Farm]]:
    farms: list[Farm] = []
    server = request.getfixturevalue("postgres_server") if backend == "postgresql" else None

    def make(*controller_args: str, db_url: str | None = None, verify: bool | str = True) -> Farm:
        if db_url is None and server is not None:
            db_url = server.new_database()
        farm = Farm(tmp_path / f"farm{len(farms)}", list(controller_args), db_url=db_url, verify=verify)
        farms.append(farm)
        return farm

    yield make
    for farm in farms:
        close_farm(farm, server)


def close_farm(farm: Farm, server: object | None = None) -> None:
    """Stop `farm` and, when it ran on the test PostgreSQL `server`, drop its database."""
    farm.close()
    if server is not None:
        with contextlib.suppress(Exception):
            server.drop_database(farm.db_url)  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_onnx(tmp_path_factory.mktemp("farm-models") / "tiny.onnx")


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` (Linux /proc): children, grandchildren, …"""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return {p for p in found if alive(p)}


def alive(pid: int) -> bool:
    """Running (a zombie has finished: it only waits for its parent to read its status)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM for {pid}")


def nested_if_onnx(path: Path, depth: int = 20, payload_mb: float = 30) -> Path:
    """A valid ONNX model of If nodes nested `depth` deep with a `payload_mb` constant innermost:
    cheap to send, costly to parse and check."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def graph(nodes: list, name: str, out: str) -> onnx.GraphProto:
        return helper.make_graph(
            nodes, name, [], [helper.make_tensor_value_info(out, TensorProto.FLOAT, [None])]
        )

    def const(name: str, n: int) -> onnx.NodeProto:
        return helper.make_node(
            "Constant", [], [name], value=numpy_helper.from_array(np.zeros(n, np.float32), name)
        )

    g = graph([const("c", int(payload_mb * 2**20 / 4))], "inner", "c")
    for level in range(depth, 0, -1):
        node = helper.make_node(
            "If",
            ["cond"],
            [f"o{level}"],
            then_branch=g,
            else_branch=graph([const(f"e{level}", 1)], f"e{level}", f"e{level}"),
        )
        g = graph([node], f"g{level}", f"o{level}")
    top = helper.make_node("If", ["cond"], ["y"], then_branch=g, else_branch=graph([const("z", 1)], "z", "z"))
    model = helper.make_model(
        helper.make_graph([top], "nested", [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])]),
        opset_imports=[helper.make_opsetid("", 17)],
    )  # fmt: skip
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


class ChaosProxy:
    """A TCP relay on loopback between agents and the controller that can play a controller outage:
    `cut_next_download(after_bytes, down_s)` cuts the next model download (GET /v1/blobs/…) after
    that many response bytes, then refuses every connection for `down_s` seconds."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.armed: tuple[int, float] | None = None
        self.down_until = 0.0
        self.cuts = 0
        self.refused = 0
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._serve, daemon=True).start()

    def cut_next_download(self, after_bytes: int, down_s: float) -> None:
        self.armed = (after_bytes, down_s)

    def close(self) -> None:
        self._closed = True
        self.listener.close()

    def _serve(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            if time.monotonic() < self.down_until:
                self.refused += 1
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                conn.close()  # RST: as a controller that is down
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                conn.close()
                continue
            state = {"cut_after": None}
            threading.Thread(target=self._up, args=(conn, upstream, state), daemon=True).start()
            threading.Thread(target=self._down, args=(upstream, conn, state), daemon=True).start()

    def _up(self, src: socket.socket, dst: socket.socket, state: dict) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                with self._lock:
                    if self.armed and b"GET /v1/blobs/" in data:
                        state["cut_after"], state["down_s"] = self.armed
                        self.armed = None
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def _down(self, src: socket.socket, dst: socket.socket, state: dict) -> None:
        sent = 0
        with contextlib.suppress(OSError):
            while data := src.recv(16384):
                if state["cut_after"] is not None and sent + len(data) >= state["cut_after"]:
                    dst.sendall(data[: max(0, state["cut_after"] - sent)])
                    self.cuts += 1
                    self.down_until = time.monotonic() + state["down_s"]
                    break
                dst.sendall(data)
                sent += len(data)
        for s in (src, dst):  # shutdown first: it wakes the other direction's blocked recv
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()


@pytest.fixture
def chaos_proxy() -> Iterator[Callable[[int], ChaosProxy]]:
    proxies: list[ChaosProxy] = []

    def make(port: int) -> ChaosProxy:
        proxies.append(ChaosProxy(port))
        return proxies[-1]

    yield make
    for p in proxies:
        p.close()


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def executions(farm: Farm) -> dict[int, int]:
    """How often each job was started by any agent (the agents' own `job N:` log lines)."""
    import re

    counts: dict[int, int] = {}
    for a in farm.agents:
        for m in re.findall(r"job (\d+): .* \(attempt \d+\)", a.log_path.read_text(errors="replace")):
            counts[int(m)] = counts.get(int(m), 0) + 1
    return counts


def make_tls(directory: Path) -> tuple[Path, Path, Path]:
    """A private CA and a server certificate for 127.0.0.1 signed by it: (ca.pem, cert.pem, key.pem)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder().subject_name(name("edgecompress test CA")).issuer_name(name("edgecompress test CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder().subject_name(name("127.0.0.1")).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                    x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    directory.mkdir(parents=True, exist_ok=True)
    paths = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths
