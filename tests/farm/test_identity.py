"""Identity (issue 15): an admin enrols agents and clients; each holds its own token, bound to its id
(and, for agents, to the device classes it may serve); clients see only their own jobs."""

from __future__ import annotations

import time
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


def test_rotation_and_revocation_apply_without_a_restart(farm, tiny_model: Path, tmp_path: Path) -> None:
    from edgecompress.errors import BenchmarkError
    from edgecompress.farm.local import start_agent

    admin = farm.admin()
    old = admin.add_client("team-c")["token"]
    client = farm.client_for(old)
    ref = client.upload(tiny_model)
    new = admin.rotate("client", "team-c")["token"]
    with pytest.raises(BenchmarkError, match="401"):
        client.jobs()
    client = farm.client_for(new)
    assert client.jobs() == []
    # an agent whose token file is rewritten after a rotation carries on, without a restart
    token_file = tmp_path / "agent-token"
    token_file.write_text(admin.add_agent("rotating", ["rpi4-emulated"], emulated=True)["token"])
    agent = start_agent(farm.url, "rpi4-emulated", "", tmp_path / "rotating.log",
                        extra_args=["--token-file", str(token_file), "--poll-wait-s", "1"])  # fmt: skip
    farm.agents.append(agent)
    first = client.submit(ref, "rpi4-emulated", TINY, timeout_s=60)
    assert client.wait([first["id"]], 60)[first["id"]]["state"] == "done"
    token_file.write_text(admin.rotate("agent", "rotating")["token"] + "\n")
    second = client.submit(ref, "rpi4-emulated", TINY, timeout_s=60)
    done = client.wait([second["id"]], 60)[second["id"]]
    assert done["state"] == "done" and done["agent_id"] == "rotating", done
    assert "token changed" in agent.log()
    # revoked: the agent can no longer claim; the client can no longer read
    admin.revoke("agent", "rotating")
    farm.wait_for(lambda: "claim refused (401)" in agent.log(), 30, "the revoked agent to be refused")
    third = client.submit(ref, "rpi4-emulated", TINY, timeout_s=60)
    time.sleep(3)
    assert client.job(third["id"])["state"] == "queued" and agent.alive()
    admin.revoke("client", "team-c")
    with pytest.raises(BenchmarkError, match="401"):
        client.jobs()
    listed = {(i["kind"], i["name"]): i for i in admin.identities()}
    assert listed[("agent", "rotating")]["active"] is False and listed[("client", "tests")]["active"] is True
    assert all("token" not in k for i in listed.values() for k in i)  # never a token or its hash


def test_agents_enrol_themselves_with_an_enrolment_token(farm, tiny_model: Path, tmp_path: Path) -> None:
    """A DaemonSet's way: one enrolment token per class; each agent exchanges it for its own."""
    from edgecompress.farm.local import start_agent

    admin = farm.admin()
    enrolment = admin.add_enrolment_token("rpi-fleet", ["rpi4-emulated"], emulated=True)["token"]
    agent = start_agent(farm.url, "rpi4-emulated", "", tmp_path / "node-1.log",
                        extra_args=["--agent-id", "node-1-rpi4", "--poll-wait-s", "1"],
                        enrolment_token=enrolment)  # fmt: skip
    farm.agents.append(agent)
    client = farm.client()
    job = client.submit(client.upload(tiny_model), "rpi4-emulated", TINY, timeout_s=60)
    done = client.wait([job["id"]], 90)[job["id"]]
    assert done["state"] == "done" and done["agent_id"] == "node-1-rpi4", (done, agent.log())
    assert done["result"]["emulated"] is True
    url, h = farm.url, bearer(enrolment)
    other = requests.post(f"{url}/v1/agents/enrol", json={"agent_id": "n2", "device_class": "jetson"}, headers=h,
                          timeout=10)  # fmt: skip
    assert other.status_code == 403  # not a class the enrolment token covers
    admin.add_agent("admin-made", ["rpi4-emulated"])
    hijack = requests.post(f"{url}/v1/agents/enrol", json={"agent_id": "admin-made", "device_class": "rpi4-emulated"},
                           headers=h, timeout=10)  # fmt: skip
    assert hijack.status_code == 409  # an enrolment token cannot take over an admin-enrolled agent
    # an enrolment token only enrols: it cannot claim, submit or read
    assert requests.get(f"{url}/v1/jobs", headers=h, timeout=10).status_code == 403
    admin.revoke("enrolment", "rpi-fleet")
    again = requests.post(f"{url}/v1/agents/enrol", json={"agent_id": "n3", "device_class": "rpi4-emulated"},
                          headers=h, timeout=10)  # fmt: skip
    assert again.status_code == 401
    second = client.submit(client.upload(tiny_model), "rpi4-emulated", TINY, timeout_s=60)
    assert client.wait([second["id"]], 60)[second["id"]]["state"] == "done"  # enrolled agents keep working


def test_tls_controller_and_agent_with_a_private_ca(farm_factory, tiny_model: Path, tmp_path: Path) -> None:
    from edgecompress.errors import BenchmarkError
    from edgecompress.farm.client import FarmClient
    from tests.farm.conftest import make_tls

    ca, cert, key = make_tls(tmp_path / "tls")
    farm = farm_factory("--tls-cert", str(cert), "--tls-key", str(key), verify=str(ca))
    assert farm.url.startswith("https://")
    agent = farm.agent("rpi4-emulated", "--ca-bundle", str(ca))
    client = farm.client()
    job = client.submit(client.upload(tiny_model), "rpi4-emulated", TINY, timeout_s=60)
    assert client.wait([job["id"]], 90)[job["id"]]["state"] == "done", agent.log()
    with pytest.raises(BenchmarkError, match="SSL|certificate"):  # the system CAs do not know this one
        FarmClient(farm.url, farm.client_token).jobs()
    with pytest.raises(requests.RequestException):
        requests.get(farm.url.replace("https", "http") + "/healthz", timeout=5)


def test_docs_when_enabled_need_a_token(farm_factory) -> None:
    farm = farm_factory("--docs")
    for path in ("/docs", "/openapi.json"):
        assert requests.get(farm.url + path, timeout=10).status_code == 401
        assert requests.get(farm.url + path, headers=farm.headers(), timeout=10).status_code == 200
    schema = requests.get(farm.url + "/openapi.json", headers=farm.headers(), timeout=10).json()
    assert "/v1/jobs" in schema["paths"] and "/v1/admin/clients" in schema["paths"]


def test_cli_admin_enrols_lists_rotates_and_revokes(farm) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "EDGECOMPRESS_FARM_URL": farm.url, "EDGECOMPRESS_FARM_ADMIN_TOKEN": farm.admin_token}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "edgecompress.farm", "admin", *args], capture_output=True,
                              text=True, env=env, timeout=120)  # fmt: skip

    added = cli("add-agent", "pi-7", "--device-classes", "rpi4")
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip().splitlines()[-1]
    who = requests.get(f"{farm.url}/v1/whoami", headers=bearer(token), timeout=10).json()
    assert who == {"role": "agent", "name": "pi-7", "device_classes": ["rpi4"], "emulated": False}
    listed = cli("list")
    assert listed.returncode == 0 and "pi-7" in listed.stdout and "active" in listed.stdout
    assert token not in listed.stdout
    rotated = cli("rotate", "agent", "pi-7").stdout.strip()
    assert rotated and rotated != token
    assert requests.get(f"{farm.url}/v1/whoami", headers=bearer(token), timeout=10).status_code == 401
    assert cli("revoke", "agent", "pi-7").returncode == 0
    assert requests.get(f"{farm.url}/v1/whoami", headers=bearer(rotated), timeout=10).status_code == 401
    readmitted = cli("readmit", "agent", "pi-7")  # issue 29: it may enrol again, through an enrolment token
    assert readmitted.returncode == 0 and "re-admitted agent pi-7" in readmitted.stdout, readmitted.stderr
    assert "awaiting-enrolment" in next(line for line in cli("list").stdout.splitlines() if "pi-7" in line)
    refused = subprocess.run([sys.executable, "-m", "edgecompress.farm", "admin", "list"], capture_output=True,
                             text=True, env={**env, "EDGECOMPRESS_FARM_ADMIN_TOKEN": farm.client_token},
                             timeout=120)  # fmt: skip
    assert refused.returncode == 2 and "403" in refused.stderr
