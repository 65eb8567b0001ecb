"""Identity (issue 15): an admin enrols agents and clients; each holds its own token, bound to its id
(and, for agents, to the device classes it may serve); clients see only their own jobs."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from tests.farm.conftest import TINY


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def valid_result(p50: float = 0.5, runs: int = 5) -> dict:
    """A result in the runner's schema, as an honest agent would send it."""
    samples = [p50] * runs
    return {
        "schema": "edgecompress.benchmark/v1", "runs": runs, "duration_s": p50 * runs / 1e3, "load_ms": 1.0,
        "latency_ms": {"p50": p50, "p90": p50, "p99": p50, "mean": p50, "stdev": 0.0, "min": p50, "max": p50},
        "throughput_per_s": 1e3 / p50, "samples_ms": samples, "samples_truncated": False, "emulated": False,
    }  # fmt: skip


@pytest.fixture
def farm(farm_factory):
    return farm_factory("--lease-s", "5")


def test_an_agent_acts_only_as_itself_for_its_own_classes(farm, tiny_model: Path) -> None:
    """Row: 'agent claims a class it never registered; unregistered agent id claims: 200 both; a
    fabricated result (p50 0.0001, emulated: false) stored as done'."""
    url = farm.url
    admin = farm.admin()
    token = admin.add_agent("m1", ["manual-class"], emulated=True)["token"]
    h = bearer(token)
    register = {"agent_id": "m1", "device_class": "manual-class", "hostname": "h"}
    assert requests.post(f"{url}/v1/agents/register", json=register, headers=h, timeout=10).status_code == 200
    # another class, another agent's id: refused, whatever the body says
    other_class = {**register, "device_class": "other-class"}
    assert (
        requests.post(f"{url}/v1/agents/register", json=other_class, headers=h, timeout=10).status_code == 403
    )
    assert requests.post(f"{url}/v1/agents/register", json={**register, "agent_id": "m2"}, headers=h,
                         timeout=10).status_code == 403  # fmt: skip
    client = farm.client()
    ref = client.upload(tiny_model)
    job = client.submit(ref, "manual-class", TINY)
    client.submit(ref, "other-class", TINY)
    claim = f"{url}/v1/agents/m1/claim"
    assert (
        requests.post(claim, params={"device_class": "other-class"}, headers=h, timeout=10).status_code == 403
    )
    assert (
        requests.post(f"{url}/v1/agents/m2/claim", params={"device_class": "manual-class"}, headers=h,
                      timeout=10).status_code == 403
    )  # fmt: skip
    assert requests.post(f"{url}/v1/agents/m2/heartbeat", json={"leases": []}, headers=h,
                         timeout=10).status_code == 403  # fmt: skip
    claimed = requests.post(claim, params={"device_class": "manual-class"}, headers=h, timeout=10).json()
    assert claimed["id"] == job["id"]
    result_url = f"{url}/v1/jobs/{job['id']}/result"
    fabricated = {"agent_id": "m1", "lease_id": claimed["lease_id"], "status": "done",
                  "result": {"latency_ms": {"p50": 0.0001}, "emulated": False}}  # fmt: skip
    r = requests.post(result_url, json=fabricated, headers=h, timeout=10)
    assert r.status_code == 422 and "result" in r.text
    for bad in (  # not positive, out of order, samples that do not match the run count
        {**valid_result(), "latency_ms": {**valid_result()["latency_ms"], "p50": -1.0}},
        {**valid_result(), "latency_ms": {**valid_result()["latency_ms"], "p90": 0.1}},
        {**valid_result(), "samples_ms": [0.5] * 3},
        {**valid_result(), "runs": 0},
    ):
        r = requests.post(result_url, json={**fabricated, "result": bad}, headers=h, timeout=10)
        assert r.status_code == 422, bad
    assert client.job(job["id"])["state"] == "leased"  # nothing stored
    honest = {**fabricated, "result": valid_result()}  # says emulated: false; the enrolment says true
    assert requests.post(result_url, json=honest, headers=h, timeout=10).status_code == 200
    stored = client.job(job["id"])
    assert stored["state"] == "done" and stored["result"]["emulated"] is True
    assert stored["result"]["device_class"] == "manual-class"


def test_a_client_sees_and_cancels_only_its_own_jobs_and_docs_need_a_token(farm, tiny_model: Path) -> None:
    """Row: 'any client token lists, reads and cancels every job of every client; /docs and
    /openapi.json open without a token'."""
    admin = farm.admin()
    a = farm.client_for(admin.add_client("team-a")["token"])
    b = farm.client_for(admin.add_client("team-b")["token"])
    ref = a.upload(tiny_model)
    mine = a.submit(ref, "nobody-home", TINY)
    theirs = b.submit(b.upload(tiny_model), "nobody-home", TINY)
    assert [j["id"] for j in a.jobs()] == [mine["id"]]
    assert [j["id"] for j in b.jobs()] == [theirs["id"]]
    url = farm.url
    for method, path in (("GET", f"/v1/jobs/{theirs['id']}"), ("POST", f"/v1/jobs/{theirs['id']}/cancel")):
        r = requests.request(method, url + path, headers=a.session.headers, timeout=10)
        assert r.status_code == 404, (path, r.status_code)
    assert b.job(theirs["id"])["state"] == "queued"  # untouched
    everything = requests.get(f"{url}/v1/jobs", headers=bearer(farm.admin_token), timeout=10).json()
    assert {j["id"] for j in everything} == {mine["id"], theirs["id"]}  # admin sees all
    for path in ("/docs", "/openapi.json", "/redoc"):
        assert requests.get(url + path, timeout=10).status_code in (401, 404), path
