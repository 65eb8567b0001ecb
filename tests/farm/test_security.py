"""Auth, limits and hostile input against a real controller and agent; both keep running."""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

import pytest
import requests

from tests.farm.conftest import TINY, tiny_onnx

ZERO_SHA = "0" * 64


@pytest.fixture
def farm(farm_factory):
    return farm_factory("--max-model-mb", "1", "--max-json-mb", "0.25", "--lease-s", "5")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_auth_matrix(farm, tiny_model: Path) -> None:
    url = farm.url
    data = tiny_model.read_bytes()
    job = {"model": {"sha256": _sha(data)}, "device_class": "rpi4-emulated", "settings": TINY}
    client_calls = [
        ("PUT", f"/v1/blobs/{_sha(data)}", {"data": data}),
        ("POST", "/v1/jobs", {"json": job}),
        ("GET", "/v1/jobs", {}),
        ("GET", "/v1/devices", {}),
        ("GET", "/v1/queue", {}),
    ]
    agent_calls = [
        ("POST", "/v1/agents/register", {"json": {"agent_id": "a1", "device_class": "x", "hostname": "h"}}),
        ("POST", "/v1/agents/a1/claim?device_class=x", {}),
        ("POST", "/v1/agents/a1/heartbeat", {}),
        ("GET", f"/v1/blobs/{_sha(data)}", {}),
    ]
    wrong = {"Authorization": "Bearer " + "x" * 32}
    for method, path, kw in client_calls + agent_calls:
        assert requests.request(method, url + path, timeout=10, **kw).status_code == 401, path  # no token
        assert requests.request(method, url + path, headers=wrong, timeout=10, **kw).status_code == 401, path
        assert (
            requests.request(
                method, url + path, headers={"Authorization": "Basic abc"}, timeout=10, **kw
            ).status_code
            == 401
        )
    for method, path, kw in client_calls:  # an agent cannot act as a client
        assert (
            requests.request(method, url + path, headers=farm.headers("agent"), timeout=10, **kw).status_code
            == 403
        ), path
    for method, path, kw in agent_calls:  # a client cannot claim, register, beat or download
        assert (
            requests.request(method, url + path, headers=farm.headers("client"), timeout=10, **kw).status_code
            == 403
        ), path
    # and the right token works
    assert (
        requests.put(
            f"{url}/v1/blobs/{_sha(data)}", data=data, headers=farm.headers(), timeout=10
        ).status_code
        == 201
    )
    assert requests.post(f"{url}/v1/jobs", json=job, headers=farm.headers(), timeout=10).status_code == 201
    assert requests.get(f"{url}/healthz", timeout=10).status_code == 200  # health needs no token


def test_size_limits_and_bad_uploads(farm, tiny_model: Path) -> None:
    url, h = farm.url, farm.headers()
    big = os.urandom(1024 * 1024 + 1)
    r = requests.put(f"{url}/v1/blobs/{_sha(big)}", data=big, headers=h, timeout=30)
    assert r.status_code == 413
    # streamed without a Content-Length: the handler counts and refuses
    r = requests.put(
        f"{url}/v1/blobs/{_sha(big)}", data=iter([big[:600_000], big[600_000:]]), headers=h, timeout=30
    )
    assert r.status_code == 413
    r = requests.post(
        f"{url}/v1/jobs",
        data=b"{" + b" " * 300_000 + b"}",
        headers={**h, "Content-Type": "application/json"},
        timeout=30,
    )
    assert r.status_code == 413
    r = requests.post(
        f"{url}/v1/jobs",
        data=iter([b"{", b" " * 300_000, b"}"]),
        headers={**h, "Content-Type": "application/json"},
        timeout=30,
    )
    assert r.status_code == 413
    data = tiny_model.read_bytes()
    r = requests.put(f"{url}/v1/blobs/{ZERO_SHA}", data=data, headers=h, timeout=10)  # sha256 mismatch
    assert r.status_code == 400 and "sha256 mismatch" in r.json()["detail"]
    for name in ("..%2F..%2Fetc%2Fpasswd", "../../etc/passwd", "ABC", _sha(data).upper(), "%00"):
        assert requests.put(f"{url}/v1/blobs/{name}", data=data, headers=h, timeout=10).status_code in (
            404,
            422,
        ), name
    # a job for a model that was never uploaded, and path-like device classes, are refused
    r = requests.post(
        f"{url}/v1/jobs",
        json={"model": {"sha256": _sha(data)}, "device_class": "rpi4-emulated"},
        headers=h,
        timeout=10,
    )
    assert r.status_code == 422 and "PUT /v1/blobs" in r.json()["detail"]
    for cls in ("../x", "a/b", "", "x" * 200):
        r = requests.post(
            f"{url}/v1/jobs", json={"model": {"sha256": ZERO_SHA}, "device_class": cls}, headers=h, timeout=10
        )
        assert r.status_code == 422, cls
    # an upload cut short: the connection closes before the declared length arrives
    with socket.create_connection(("127.0.0.1", farm.port), timeout=10) as s:
        s.sendall(
            f"PUT /v1/blobs/{_sha(data)} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {farm.client_token}\r\n"
            f"Content-Length: {len(data)}\r\n\r\n".encode()
            + data[: len(data) // 2]
        )
        s.shutdown(socket.SHUT_WR)
        s.recv(1000)
    assert (
        requests.head(f"{url}/v1/blobs/{_sha(data)}", headers=h, timeout=10).status_code == 404
    )  # nothing kept
    assert not [p for p in (farm.root / "blobs").iterdir()]  # no half-written file either
    assert farm.healthy()


def test_hostile_models_fail_with_clear_reasons_and_agent_survives(
    farm, tiny_model: Path, tmp_path: Path
) -> None:
    client = farm.client()
    agent = farm.agent()
    good = tiny_model.read_bytes()
    cases = {
        "random.onnx": (os.urandom(4096), "not a valid ONNX model"),
        "truncated.onnx": (good[: len(good) // 2], "not a valid ONNX model"),
        "empty-graph.onnx": (b"\x08\x08", "not a valid ONNX model"),
        "../../../etc/passwd": (good, None),  # a path-like name is only a label: it runs fine
    }
    ids = {}
    for name, (data, _) in cases.items():
        path = tmp_path / _sha(data)
        path.write_bytes(data)
        ref = {**client.upload(path), "name": name}
        ids[name] = client.submit(ref, "rpi4-emulated", TINY, timeout_s=60)["id"]
    # sha256 mismatch found by the agent: the stored blob is corrupted after upload
    other = tiny_onnx(tmp_path / "other.onnx", width=24)
    ref = client.upload(other)
    (farm.root / "blobs" / ref["sha256"]).write_bytes(good)
    ids["corrupted"] = client.submit(ref, "rpi4-emulated", TINY, timeout_s=60)["id"]
    # a model that hangs past its timeout: a long benchmark with a 2 s limit
    ids["timeout"] = client.submit(
        client.upload(tiny_model),
        "rpi4-emulated",
        {**TINY, "min_duration_s": 30, "max_runs": 10**9},
        timeout_s=2,
    )["id"]
    done = client.wait(list(ids.values()), 120)
    for name, (_, reason) in cases.items():
        job = done[ids[name]]
        if reason is None:
            assert job["state"] == "done" and job["model_name"] == name
        else:
            assert job["state"] == "failed" and reason in job["error"], (name, job["error"])
    assert (
        done[ids["corrupted"]]["state"] == "failed" and "sha256 mismatch" in done[ids["corrupted"]]["error"]
    )
    assert done[ids["timeout"]]["state"] == "failed" and "timeout" in done[ids["timeout"]]["error"]
    assert agent.alive() and farm.healthy()


def test_results_are_accepted_once_from_the_lease_holder(farm, tiny_model: Path) -> None:
    from tests.farm.test_identity import valid_result

    url = farm.url
    client = farm.client()
    ref = client.upload(tiny_model)
    job = client.submit(ref, "manual-class", TINY)
    ha = farm.agent_headers("m1", "manual-class")  # enrolled (not emulated) and registered
    claimed = requests.post(
        f"{url}/v1/agents/m1/claim", params={"device_class": "manual-class"}, headers=ha, timeout=10
    ).json()
    assert claimed["id"] == job["id"] and claimed["model_url"] == f"/v1/blobs/{ref['sha256']}"
    assert (
        requests.post(
            f"{url}/v1/agents/m1/claim", params={"device_class": "manual-class"}, headers=ha, timeout=10
        ).status_code
        == 204
    )
    body = {
        "agent_id": "m1",
        "lease_id": claimed["lease_id"],
        "status": "done",
        "result": valid_result(p50=1.0),
    }
    first = requests.post(f"{url}/v1/jobs/{job['id']}/result", json=body, headers=ha, timeout=10)
    again = requests.post(f"{url}/v1/jobs/{job['id']}/result", json=body, headers=ha, timeout=10)
    assert first.json() == {"id": job["id"], "state": "done", "duplicate": False}
    assert again.status_code == 200 and again.json()["duplicate"] is True
    stolen = {**body, "lease_id": "0" * 32}
    assert (
        requests.post(f"{url}/v1/jobs/{job['id']}/result", json=stolen, headers=ha, timeout=10).status_code
        == 409
    )
    nan = requests.post(
        f"{url}/v1/jobs/{job['id']}/result",
        data=b'{"agent_id":"m1","lease_id":"'
        + claimed["lease_id"].encode()
        + b'","status":"done","result":{"x":NaN}}',
        headers={**ha, "Content-Type": "application/json"},
        timeout=10,
    )
    assert nan.status_code in (200, 409, 422)  # never a 500, and the stored job is intact
    stamped = {
        **valid_result(p50=1.0),
        "agent_id": "m1",
        "device_class": "manual-class",
        "emulated": False,
        "job_id": job["id"],
        "backend": "farm",
        "device_description": "manual-class (no device profile)",
        "timing_meaningful": True,
    }  # provenance set by the controller (issue 29)
    assert client.job(job["id"])["result"] == stamped


def test_class_without_live_agent_fails_clearly_after_timeout(farm, tiny_model: Path) -> None:
    from edgecompress.errors import BenchmarkError
    from edgecompress.farm.client import benchmark_on_farm

    with pytest.raises(
        BenchmarkError,
        match=r"device class nobody-home: job \d+ .*no agent of this class has ever registered",
    ):
        benchmark_on_farm(farm.url, tiny_model, ["nobody-home"], TINY, timeout_s=2, token=farm.client_token)
    failed = farm.client().jobs(device_class="nobody-home")
    assert failed and failed[0]["state"] == "failed"
