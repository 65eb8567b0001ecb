"""The farm's wire schemas (`farm/wire.py`) are the one definition of what controller, agents and
clients exchange: the controller validates them (its OpenAPI names them), agents and clients build
their bodies and read the answers with them, and an agent image without pydantic can import them.
The controller is a small factory over injected state: two apps in one process share nothing."""

from __future__ import annotations

import ast
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgecompress.farm import wire

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "edgecompress"
ADMIN = "admin-token-for-the-wire-tests"


def app_client(tmp_path: Path, admin_token: str = ADMIN):
    from fastapi.testclient import TestClient

    from edgecompress.farm.controller import ControllerConfig, create_app

    config = ControllerConfig(
        db_url=f"sqlite:///{tmp_path / 'farm.db'}",
        blob_dir=tmp_path / "blobs",
        admin_token=admin_token,
        docs=True,
    )
    return TestClient(create_app(config).app)


def test_an_agent_without_pydantic_or_fastapi_builds_and_reads_the_wire_schemas() -> None:
    """The agent images install ONNX Runtime, onnx, numpy, requests and PyYAML only."""
    code = """
import importlib.abc, json, sys
NOT_IN_AGENT_IMAGE = ("pydantic", "pydantic_core", "fastapi", "starlette", "anyio", "sqlalchemy", "uvicorn", "torch")
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in NOT_IN_AGENT_IMAGE:
            raise ImportError(f"{name} is not installed on this agent")
sys.meta_path.insert(0, Block())
import edgecompress.farm.agent, edgecompress.farm.client, edgecompress.farm.admin
from edgecompress.farm import wire
lease = wire.Lease(job_id=3, lease_id="a" * 32)
print(json.dumps([
    wire.body(wire.ResultSubmission(agent_id="pi-1", lease_id=lease.lease_id, status="failed", error="boom")),
    wire.body(wire.Heartbeat(leases=[lease])),
    wire.load(wire.HeldLeases, {"leases": [{"job_id": 3, "lease_id": "a" * 32}], "new": 1}) == wire.HeldLeases(leases=[lease]),
    "pydantic" in sys.modules,
]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    failed, beat, parsed, pydantic_loaded = json.loads(out.stdout)
    assert failed == {"agent_id": "pi-1", "lease_id": "a" * 32, "status": "failed", "error": "boom"}
    assert beat == {"leases": [{"job_id": 3, "lease_id": "a" * 32}]}
    assert parsed is True and pydantic_loaded is False


def test_body_leaves_out_unset_optionals_and_load_keeps_known_fields() -> None:
    ref = wire.ModelRef(sha256="0" * 64, name="m.onnx", bytes=12)
    spec = wire.JobSpec(model=ref, device_class="rpi4", settings={"threads": 1}, priority=5)
    assert wire.body(spec) == {
        "model": {"sha256": "0" * 64, "name": "m.onnx", "bytes": 12},
        "device_class": "rpi4", "settings": {"threads": 1}, "timeout_s": 600.0, "priority": 5,
    }  # fmt: skip
    assert wire.body(wire.Release(lease_id="b" * 32, reason="x")) == {"lease_id": "b" * 32, "reason": "x"}
    done = wire.ResultSubmission(lease_id="b" * 32, status="done", result={"runs": 3})
    assert wire.body(done) == {"lease_id": "b" * 32, "status": "done", "result": {"runs": 3}}
    me = wire.load(wire.WhoAmI, {"role": "agent", "name": "pi-1", "emulated": True, "added_later": [1]})
    assert me == wire.WhoAmI(role="agent", name="pi-1", emulated=True)
    with pytest.raises(ValueError, match="lacks fields of Registered"):
        wire.load(wire.Registered, {"agent_id": "pi-1"})
    with pytest.raises(ValueError, match="not a JSON object for ClaimedJob"):
        wire.load(wire.ClaimedJob, ["id", 1])


def test_the_controller_validates_the_wire_schemas(tmp_path: Path) -> None:
    """Every JSON body the controller takes, and the answers it composes, are wire schemas: the
    OpenAPI document names them and lists exactly their fields."""
    with app_client(tmp_path) as client:
        doc = client.get("/openapi.json", headers={"Authorization": f"Bearer {ADMIN}"}).json()
        assert client.get("/openapi.json").status_code == 401
    refs = {}
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            content = op.get("requestBody", {}).get("content", {}).get("application/json")
            if content:
                schema = content["schema"]
                ref = schema.get("$ref") or next(s["$ref"] for s in schema["anyOf"] if "$ref" in s)
                refs[f"{method.upper()} {path}"] = ref.rsplit("/", 1)[1]
    assert refs == {
        "POST /v1/agents/register": "AgentInfo", "POST /v1/agents/{agent_id}/heartbeat": "Heartbeat",
        "POST /v1/agents/{agent_id}/claim": "ClaimRequest", "POST /v1/jobs/{job_id}/result": "ResultSubmission",
        "POST /v1/jobs/{job_id}/release": "Release", "POST /v1/admin/clients": "ClientSpec",
        "POST /v1/admin/agents": "AgentSpec", "POST /v1/admin/enrolment-tokens": "EnrolmentSpec",
        "POST /v1/agents/enrol": "Enrol", "POST /v1/jobs": "JobSpec",
    }  # fmt: skip
    schemas = doc["components"]["schemas"]
    for name in {*refs.values(), "ModelRef", "Lease", "Registered", "HeldLeases", "WhoAmI", "QueueDepth"}:
        fields = [f.name for f in dataclasses.fields(getattr(wire, name))]
        assert list(schemas[name]["properties"]) == fields, name
        if name in refs.values():
            assert schemas[name]["additionalProperties"] is False, name


def test_the_controller_refuses_what_the_schemas_forbid(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        admin = {"Authorization": f"Bearer {ADMIN}"}
        bad = [
            ({"name": "ok", "extra": 1}, "extra"),
            ({"name": "not a name"}, "name"),
        ]
        for body, field in bad:
            r = client.post("/v1/admin/clients", json=body, headers=admin)
            assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", field], r.text
        nan = b'{"name": "e", "device_classes": ["rpi4"], "expires_in_s": NaN}'
        json_type = {**admin, "Content-Type": "application/json"}
        r = client.post("/v1/admin/enrolment-tokens", content=nan, headers=json_type)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "expires_in_s"], r.text
        r = client.post("/v1/admin/agents", json={"agent_id": "a", "device_classes": []}, headers=admin)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "device_classes"], r.text


def test_two_controllers_in_one_process_share_no_state(tmp_path: Path) -> None:
    """The routers are module-level; each app's state (store, tokens) is its own, injected."""
    other = "another-admin-token-for-wire"
    with app_client(tmp_path / "a") as a, app_client(tmp_path / "b", other) as b:
        a.post("/v1/admin/clients", json={"name": "only-in-a"}, headers={"Authorization": f"Bearer {ADMIN}"})
        assert a.get("/v1/whoami", headers={"Authorization": f"Bearer {other}"}).status_code == 401
        assert b.get("/v1/whoami", headers={"Authorization": f"Bearer {other}"}).json()["role"] == "admin"
        names = [
            i["name"]
            for i in b.get("/v1/admin/identities", headers={"Authorization": f"Bearer {other}"}).json()
        ]
        assert "only-in-a" not in names


WIRE_FIELDS = {
    f.name for cls in vars(wire).values() if dataclasses.is_dataclass(cls) for f in dataclasses.fields(cls)
}


@pytest.mark.parametrize("module", ["agent.py", "client.py", "admin.py"])
def test_agents_and_clients_build_no_wire_body_by_hand(module: str) -> None:
    """A dict literal whose keys are all wire-schema fields is a hand-built body (query parameters
    and headers aside): build it from the schema in wire.py instead."""
    tree = ast.parse((SRC / "farm" / module).read_text())
    allowed = {
        id(kw.value) for node in ast.walk(tree) if isinstance(node, ast.Call)
        for kw in node.keywords if kw.arg in ("params", "headers")
    }  # fmt: skip
    by_hand = [
        f"{module}:{node.lineno}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Dict) and id(node) not in allowed and node.keys
        and all(isinstance(k, ast.Constant) and k.value in WIRE_FIELDS for k in node.keys)
    ]  # fmt: skip
    assert not by_hand, f"hand-built wire bodies: {by_hand}"


def test_no_function_in_the_farm_or_the_cli_is_over_120_lines() -> None:
    long = []
    for path in [*(SRC / "farm").rglob("*.py"), *(SRC / "cli").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > 120:
                    long.append(f"{path.relative_to(SRC)}:{node.name} ({lines} lines)")
    assert not long, long
