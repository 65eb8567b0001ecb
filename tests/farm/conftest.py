"""Farm fixtures: real controller and agent processes on loopback, stopped by the fixture."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import requests

from edgecompress.farm.local import Proc, free_port, start_agent, start_controller

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
    """One controller (restartable) plus agents, all real processes; `close` stops everything."""

    def __init__(self, root: Path, controller_args: list[str]) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.client_token = secrets.token_urlsafe(24)
        self.agent_token = secrets.token_urlsafe(24)
        self.db_url = f"sqlite:///{root / 'farm.db'}"
        self.controller_args = controller_args
        self.agents: list[Proc] = []
        self.controller: Proc | None = None
        self.start_controller()

    def start_controller(self) -> Proc:
        self.controller = start_controller(
            self.port,
            self.db_url,
            self.root / "blobs",
            self.client_token,
            self.agent_token,
            self.root / "controller.log",
            self.controller_args,
        )
        return self.controller

    def agent(self, device_class: str = "rpi4-emulated", *args: str) -> Proc:
        n = len(self.agents)
        proc = start_agent(
            self.url,
            device_class,
            self.agent_token,
            self.root / f"agent-{n}.log",
            emulate=None,
            extra_args=["--agent-id", f"agent-{n}", "--poll-wait-s", "2", *args],
        )
        self.agents.append(proc)
        return proc

    def headers(self, role: str = "client") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.client_token if role == 'client' else self.agent_token}"}

    def client(self):
        from edgecompress.farm.client import FarmClient

        return FarmClient(self.url, self.client_token)

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
        return requests.get(f"{self.url}/healthz", timeout=5).status_code == 200

    def close(self) -> None:
        for a in self.agents:
            a.kill() if a.alive() else None
        if self.controller is not None and self.controller.alive():
            self.controller.kill()


@pytest.fixture
def farm_factory(tmp_path: Path) -> Iterator[Callable[..., Farm]]:
    farms: list[Farm] = []

    def make(*controller_args: str) -> Farm:
        farm = Farm(tmp_path / f"farm{len(farms)}", list(controller_args))
        farms.append(farm)
        return farm

    yield make
    for farm in farms:
        farm.close()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_onnx(tmp_path_factory.mktemp("farm-models") / "tiny.onnx")
