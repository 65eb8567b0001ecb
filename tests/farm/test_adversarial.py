"""Adversarial scenarios (issue 29) against one real controller per backend (SQLite and PostgreSQL)
on loopback: a compromised or buggy agent, a nosy client, a hostile body, a stalled database.

One controller per backend serves every scenario of this module (each on its own device classes,
clients and agent ids), so the whole module stays quick."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.farm.conftest import BACKENDS, TINY, Farm, close_farm, tiny_onnx
from tests.farm.test_identity import bearer, valid_result

STALL_S = 5.0  # the scenario: a 5 s exclusive lock with 40 writes queued behind it
QUEUED_WRITES = 40


@pytest.fixture(scope="module", params=BACKENDS)
def farm(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Farm]:
    server = request.getfixturevalue("postgres_server") if request.param == "postgresql" else None
    db_url = server.new_database() if server is not None else None
    root = tmp_path_factory.mktemp(f"adversarial-{request.param}")
    farm = Farm(root, ["--sweep-interval-s", "0.2"], db_url=db_url)  # the default 30 s lease
    farm.backend = request.param  # type: ignore[attr-defined]
    yield farm
    close_farm(farm, server)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_onnx(tmp_path_factory.mktemp("adversarial-model") / "tiny.onnx")


def post(farm: Farm, path: str, token: str, **kw: Any) -> requests.Response:
    return requests.post(farm.url + path, headers=bearer(token), timeout=30, **kw)


def enrol(farm: Farm, enrolment_token: str, agent_id: str, device_class: str) -> requests.Response:
    return post(
        farm, "/v1/agents/enrol", enrolment_token, json={"agent_id": agent_id, "device_class": device_class}
    )


def whoami(farm: Farm, token: str) -> int:
    return requests.get(f"{farm.url}/v1/whoami", headers=bearer(token), timeout=10).status_code


def claim(farm: Farm, token: str, agent_id: str, device_class: str) -> dict[str, Any]:
    r = post(farm, f"/v1/agents/{agent_id}/claim", token, params={"device_class": device_class})
    assert r.status_code == 200, (r.status_code, r.text)
    return r.json()


# --- 1. a revoked agent stays revoked -----------------------------------------------------------


def test_a_revoked_agent_cannot_come_back_through_an_enrolment_token(farm: Farm) -> None:
    """Issue 29 (1): the admin enrols pi-lab-3 and revokes it; the fleet's enrolment token then
    enrolled it again (201, active). Now 409 with the reason, until the admin re-admits it."""
    admin = farm.admin()
    admin.add_agent("pi-lab-3", ["rpi4"])
    admin.revoke("agent", "pi-lab-3")
    fleet = admin.add_enrolment_token("fleet", ["rpi4"])["token"]
    back = enrol(farm, fleet, "pi-lab-3", "rpi4")
    assert back.status_code == 409 and "revoked" in back.json()["detail"], back.text
    listed = {i["name"]: i for i in admin.identities() if i["kind"] == "agent"}
    assert listed["pi-lab-3"]["active"] is False and listed["pi-lab-3"]["enrolled_by"] == "admin"
    # the same for an agent the fleet itself enrolled: revoked means revoked
    own = enrol(farm, fleet, "pi-lab-4", "rpi4")
    assert own.status_code == 201
    admin.revoke("agent", "pi-lab-4")
    assert enrol(farm, fleet, "pi-lab-4", "rpi4").status_code == 409
    assert whoami(farm, own.json()["token"]) == 401
    # until the admin re-admits it: then its own enrolment token (and no other) may enrol it again
    assert admin.readmit("agent", "pi-lab-4")["readmitted"] is True
    other = admin.add_enrolment_token("other-fleet", ["rpi4"])["token"]
    assert enrol(farm, other, "pi-lab-4", "rpi4").status_code == 409  # enrolled_by counts, revoked or not
    again = enrol(farm, fleet, "pi-lab-4", "rpi4")
    assert again.status_code == 201 and whoami(farm, again.json()["token"]) == 200
    # the admin-enrolled one, re-admitted: any enrolment token for its class may enrol it now
    admin.readmit("agent", "pi-lab-3")
    assert enrol(farm, fleet, "pi-lab-3", "rpi4").status_code == 201
    with pytest.raises(Exception, match="404"):  # nothing revoked to re-admit
        admin.readmit("agent", "pi-lab-3")


def test_an_enrolment_token_and_agent_id_never_hold_two_working_tokens(farm: Farm) -> None:
    """Issue 29 (1): the same enrolment token + agent id exchanged repeatedly minted parallel tokens
    (the earlier kept working ~2 s). A second exchange rotates: the earlier token stops at once."""
    admin = farm.admin()
    fleet = admin.add_enrolment_token("rot-fleet", ["rpi5"])["token"]
    tokens = [enrol(farm, fleet, "node-7-rpi5", "rpi5").json()["token"] for _ in range(3)]
    assert len(set(tokens)) == 3
    assert [whoami(farm, t) for t in tokens] == [401, 401, 200]  # at once, no cache window
    listed = {i["name"]: i for i in admin.identities() if i["kind"] == "agent"}
    assert listed["node-7-rpi5"]["rotated_at"] is not None and listed["node-7-rpi5"]["active"]


# --- 2. provenance comes from the controller -----------------------------------------------------


def test_provenance_of_a_stored_result_comes_from_the_controller(farm: Farm, model: Path) -> None:
    """Issue 29 (2): an agent enrolled without --emulated (the API default) serving rpi4-emulated was
    stored as a real device, with the backend, description, device.emulated, timing_meaningful and
    job_id it claimed."""
    from edgecompress.runtime.devices import QEMU_TIMING_NOTE, profile

    admin = farm.admin()
    token = admin.add_agent("claims-real", ["rpi4-emulated", "rpi4-qemu", "rpi4"])["token"]  # emulated: False
    client = farm.client()
    ref = client.upload(model)
    claimed_by_agent = {
        "backend": "node", "device_description": "Raspberry Pi 4 (real device)", "timing_meaningful": True,
        "job_id": 999_999, "emulated": False, "device": {"emulated": False, "cpu": {"isa": "aarch64"}},
        "agent_id": "someone-else", "device_class": "rpi5", "agent_reported": {"note": "forged"},
    }  # fmt: skip
    stored = {}
    for cls in ("rpi4-emulated", "rpi4-qemu", "rpi4"):
        job = client.submit(ref, cls, TINY)
        lease = claim(farm, token, "claims-real", cls)
        assert lease["id"] == job["id"]
        body = {
            "lease_id": lease["lease_id"],
            "status": "done",
            "result": {**valid_result(), **claimed_by_agent},
        }
        r = post(farm, f"/v1/jobs/{job['id']}/result", token, json=body)
        assert r.status_code == 200, r.text
        stored[cls] = client.job(job["id"])["result"]
        result = stored[cls]
        assert result["job_id"] == job["id"] and result["agent_id"] == "claims-real"
        assert result["device_class"] == cls and result["backend"] == "farm"
        assert result["device_description"] == profile(cls).description
        assert result["device"] == {"emulated": result["emulated"], "cpu": {"isa": "aarch64"}}
        reported = result["agent_reported"]  # what the agent said, where it disagreed, and only here
        assert reported["backend"] == "node" and reported["job_id"] == 999_999
        assert reported["device_class"] == "rpi5" and "note" not in reported
    assert (
        stored["rpi4-emulated"]["emulated"] is True
    )  # the profile says emulated, whatever the enrolment says
    assert stored["rpi4-emulated"]["timing_meaningful"] is True
    assert stored["rpi4-emulated"]["agent_reported"]["device.emulated"] is False
    qemu = stored["rpi4-qemu"]
    assert qemu["emulated"] is True and qemu["timing_meaningful"] is False
    assert qemu["emulation"] == "qemu" and qemu["timing_note"] == QEMU_TIMING_NOTE
    real = stored["rpi4"]  # a real board's class, enrolled as real: real, and no disagreement on emulated
    assert real["emulated"] is False and real["timing_meaningful"] is True
    assert "emulated" not in real["agent_reported"] and "device.emulated" not in real["agent_reported"]
    # listing a job never presents an emulated class as a real device
    assert all(
        j["device_class"] != "rpi4-emulated" or stored["rpi4-emulated"]["emulated"] for j in client.jobs()
    )


# --- 3. reads never wait on writes ---------------------------------------------------------------


@contextlib.contextmanager
def database_write_lock(farm: Farm, seconds: float) -> Iterator[threading.Event]:
    """Hold the database's write lock for `seconds` from another connection (SQLite: BEGIN EXCLUSIVE on
    the file; PostgreSQL: LOCK TABLE farm_jobs IN EXCLUSIVE MODE, which still lets readers read)."""
    held, done = threading.Event(), threading.Event()

    def hold() -> None:
        if farm.db_url.startswith("sqlite"):
            import sqlite3

            conn = sqlite3.connect(farm.db_url.removeprefix("sqlite:///"), isolation_level=None, timeout=30)
            conn.execute("BEGIN EXCLUSIVE")
        else:
            import psycopg

            conn = psycopg.connect(farm.db_url.replace("postgresql+psycopg://", "postgresql://"))
            conn.execute("LOCK TABLE farm_jobs, farm_agents IN EXCLUSIVE MODE")
        held.set()
        done.wait(seconds)
        conn.rollback()
        conn.close()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert held.wait(30), "could not take the database's write lock"
    try:
        yield held
    finally:
        thread.join(seconds + 30)


def test_reads_never_wait_on_writes(farm: Farm, model: Path) -> None:
    """Issue 29 (3): with a 5 s exclusive lock and 40 queued writes, GET /v1/jobs/{id} took 4.55 s (one
    32-slot limiter for reads and writes); token look-ups that miss the cache waited the same way."""
    admin = farm.admin()
    client = farm.client()
    ref = client.upload(model)
    job = client.submit(ref, "stall-class", TINY)
    fresh = admin.add_client("stall-reader")["token"]  # never used yet: its look-up misses the cache
    spec = {"model": {"sha256": ref["sha256"]}, "device_class": "stall-class", "settings": TINY}
    timings: dict[str, float] = {}
    with database_write_lock(farm, STALL_S), ThreadPoolExecutor(QUEUED_WRITES) as pool:
        t0 = time.monotonic()
        writes = [
            pool.submit(post, farm, "/v1/jobs", farm.client_token, json=spec) for _ in range(QUEUED_WRITES)
        ]
        time.sleep(0.5)  # the writes are queued behind the lock now

        def timed(name: str, token: str, expected: int) -> None:
            t = time.monotonic()
            r = requests.get(f"{farm.url}/v1/jobs/{job['id']}", headers=bearer(token), timeout=30)
            timings[name] = time.monotonic() - t
            assert r.status_code == expected, (name, r.status_code, r.text[:200])

        readers = [  # both while the lock is held: a cached token, and one whose look-up misses the cache
            threading.Thread(target=timed, args=("get_job_s", farm.client_token, 200)),
            threading.Thread(target=timed, args=("uncached_token_get_s", fresh, 404)),  # valid, not its job
        ]
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join(60)
        codes = [w.result().status_code for w in writes]
        timings["writes_done_s"] = time.monotonic() - t0
    print(f"\n[{farm.backend}] {STALL_S:g} s lock, {QUEUED_WRITES} queued writes: {timings}")  # type: ignore[attr-defined]
    assert codes == [201] * QUEUED_WRITES  # the writes waited for the lock and then went through
    assert timings["writes_done_s"] >= STALL_S - 0.5, timings  # the lock really held them up
    assert set(timings) == {"get_job_s", "uncached_token_get_s", "writes_done_s"}, timings  # both answered
    assert timings["get_job_s"] < 1.0 and timings["uncached_token_get_s"] < 1.0, timings


# --- also seen -----------------------------------------------------------------------------------


def test_an_agent_stops_a_job_whose_lease_is_gone(farm: Farm, model: Path) -> None:
    """Issue 29 (also seen): a cancelled job kept the device busy ~9.5 s (the agent ignored the
    heartbeat's list of the leases it still holds). Now it stops within 2 s, with the default 30 s
    lease (idle heartbeats every 10 s): while a job runs, the agent heartbeats at least every 2 s."""
    agent = farm.agent("rpi4-emulated", "--agent-id", "busy-agent")
    client = farm.client()
    ref = client.upload(model)
    long = client.submit(
        ref, "rpi4-emulated", {**TINY, "min_duration_s": 12.0, "max_runs": 10**9}, timeout_s=60
    )
    farm.wait_for(
        lambda: f"benchmark of job {long['id']} started" in agent.log(), 60, "the benchmark to start"
    )
    time.sleep(0.5)
    t0 = time.monotonic()
    client.cancel(long["id"])
    short = client.submit(ref, "rpi4-emulated", TINY, timeout_s=60)
    done = client.wait([short["id"]], 60)[short["id"]]
    busy = time.monotonic() - t0
    print(f"\n[{farm.backend}] cancel of a 12 s benchmark -> next job done after {busy:.2f} s")  # type: ignore[attr-defined]
    assert done["state"] == "done", done
    assert done["result"]["emulated"] is True and "agent_reported" not in done["result"]  # an honest agent
    assert busy < 5.0, (busy, agent.log()[-2000:])
    assert "stopping its work" in agent.log() and agent.alive()
    assert client.job(long["id"])["state"] == "failed"  # cancelled, and nothing reported over it


def test_a_different_resubmission_on_an_accepted_lease_is_a_conflict(farm: Farm, model: Path) -> None:
    """Issue 29 (also seen): a different result on an accepted lease got 200 `duplicate: true`."""
    token = farm.admin().add_agent("resubmitter", ["resubmit-class"])["token"]
    client = farm.client()
    job = client.submit(client.upload(model), "resubmit-class", TINY)
    lease = claim(farm, token, "resubmitter", "resubmit-class")
    body = {"lease_id": lease["lease_id"], "status": "done", "result": valid_result(p50=1.0)}
    path = f"/v1/jobs/{job['id']}/result"
    assert post(farm, path, token, json=body).json()["duplicate"] is False
    same = post(farm, path, token, json=body)
    assert same.status_code == 200 and same.json()["duplicate"] is True  # idempotent
    for other in (
        {**body, "result": valid_result(p50=0.25)},
        {**body, "status": "failed", "error": "x", "result": None},
    ):
        r = post(farm, path, token, json=other)
        assert r.status_code == 409 and "different outcome" in r.json()["detail"], r.text
    assert client.job(job["id"])["result"]["latency_ms"]["p50"] == 1.0


def test_a_client_sees_only_the_blobs_it_uploaded(farm: Farm, tmp_path: Path) -> None:
    """Issue 29 (also seen): any client could HEAD any blob (and learn whether another client
    uploaded a model)."""
    admin = farm.admin()
    a = farm.client_for(admin.add_client("blob-a")["token"])
    b = farm.client_for(admin.add_client("blob-b")["token"])
    private = tiny_onnx(tmp_path / "private.onnx", width=40, seed=7)
    ref = a.upload(private)
    url = f"{farm.url}/v1/blobs/{ref['sha256']}"
    never = f"{farm.url}/v1/blobs/{'1' * 64}"
    assert requests.head(url, headers=a.session.headers, timeout=10).status_code == 200
    assert requests.head(url, headers=bearer(farm.admin_token), timeout=10).status_code == 200
    theirs = requests.get(url, headers=b.session.headers, timeout=10)
    nothing = requests.get(never, headers=b.session.headers, timeout=10)
    assert (theirs.status_code, nothing.status_code) == (403, 403)  # GET is for agents
    assert requests.head(url, headers=b.session.headers, timeout=10).status_code == 404  # as if absent
    assert requests.head(never, headers=b.session.headers, timeout=10).status_code == 404
    refused = requests.post(f"{farm.url}/v1/jobs", json={"model": {"sha256": ref["sha256"]}, "device_class": "x"},
                            headers=b.session.headers, timeout=10)  # fmt: skip
    absent = requests.post(f"{farm.url}/v1/jobs", json={"model": {"sha256": "1" * 64}, "device_class": "x"},
                           headers=b.session.headers, timeout=10)  # fmt: skip
    assert refused.status_code == absent.status_code == 422
    assert refused.json()["detail"].replace(ref["sha256"], "1" * 64) == absent.json()["detail"]  # no leak
    token = farm.admin().add_agent("nosy-agent", ["blob-class"])["token"]  # holds no job of this model
    assert requests.head(url, headers=bearer(token), timeout=10).status_code == 404
    b.upload(private)  # b uploads the same bytes itself: now it may use them
    assert requests.head(url, headers=b.session.headers, timeout=10).status_code == 200
    assert b.submit(ref, "blob-class", TINY)["model_sha256"] == ref["sha256"]


def test_unparsable_bodies_get_a_400_that_says_why(farm: Farm) -> None:
    """Issue 29 (also seen): a 5,000-digit integer or deep nesting got 400 with no reason."""
    h = {**farm.headers(), "Content-Type": "application/json"}
    for body, reason in ((b'{"priority": ' + b"9" * 5000 + b"}", "integer too long"),
                         (b"[" * 100_000 + b"]" * 100_000, "nested too deeply")):  # fmt: skip
        r = requests.post(f"{farm.url}/v1/jobs", data=body, headers=h, timeout=30)
        assert r.status_code == 400 and reason in r.json()["detail"], (r.status_code, r.text[:300])
    assert farm.healthy()


def test_threads_are_capped_by_the_class_profile_not_by_what_agents_report(farm: Farm, model: Path) -> None:
    """Issue 29 (also seen): `threads` was capped by each agent's self-reported `cpus_usable`: an agent
    reporting 64 let jobs ask a 4-core board (rpi5's profile) for 64 threads; one reporting 1 refused 4."""
    client = farm.client()
    ref = client.upload(model)

    def register(agent_id: str, cpus: int) -> None:
        token = farm.admin().add_agent(agent_id, ["rpi5"])["token"]
        body = {"agent_id": agent_id, "device_class": "rpi5", "hostname": "h", "facts": {"cpus_usable": cpus}}
        assert post(farm, "/v1/agents/register", token, json=body).status_code == 200

    def submit(threads: int) -> int:
        body = {
            "model": {"sha256": ref["sha256"]},
            "device_class": "rpi5",
            "settings": {**TINY, "threads": threads},
        }
        return requests.post(f"{farm.url}/v1/jobs", json=body, headers=farm.headers(), timeout=10).status_code

    register("small-rpi5", 1)
    assert submit(4) == 201  # the profile's 4 cores, whatever the agent says it may use
    register("liar-rpi5", 64)
    assert submit(5) == 422 and submit(64) == 422


# --- the scenarios that held on d9a55b6, cheap to keep ------------------------------------------


def test_what_held_still_holds(farm: Farm, model: Path) -> None:
    """Cross-class claims, foreign and stale leases, client isolation, forged uploads, NaN/huge
    settings, rotation and revocation mid-job (issue 29's 14 that held, the cheap ones)."""
    admin = farm.admin()
    client = farm.client()
    ref = client.upload(model)
    t1 = admin.add_agent("held-1", ["held-class"])["token"]
    t2 = admin.add_agent("held-2", ["held-class"])["token"]
    # cross-class claim
    r = post(farm, "/v1/agents/held-1/claim", t1, params={"device_class": "rpi4-emulated"})
    assert r.status_code == 403
    # a foreign lease: agent 2 reports with agent 1's lease
    job = client.submit(ref, "held-class", TINY)
    lease = claim(farm, t1, "held-1", "held-class")
    body = {"lease_id": lease["lease_id"], "status": "done", "result": valid_result()}
    assert post(farm, f"/v1/jobs/{job['id']}/result", t2, json=body).status_code == 409
    # revocation mid-job requeues at once; the revoked agent's stale lease is refused
    admin.revoke("agent", "held-1")
    assert client.job(job["id"])["state"] == "queued"
    assert post(farm, f"/v1/jobs/{job['id']}/result", t1, json=body).status_code == 401
    again = claim(farm, t2, "held-2", "held-class")
    stale = {**body, "lease_id": lease["lease_id"]}
    assert post(farm, f"/v1/jobs/{job['id']}/result", t2, json=stale).status_code == 409
    assert post(farm, f"/v1/jobs/{job['id']}/result", t2, json={**body, "lease_id": again["lease_id"]}).ok
    # client isolation
    other = farm.client_for(admin.add_client("held-other")["token"])
    r = requests.get(f"{farm.url}/v1/jobs/{job['id']}", headers=other.session.headers, timeout=10)
    assert r.status_code == 404
    # forged upload: the body does not hash to the name
    r = requests.put(f"{farm.url}/v1/blobs/{'2' * 64}", data=b"x" * 100, headers=farm.headers(), timeout=10)
    assert r.status_code == 400 and "sha256 mismatch" in r.json()["detail"]
    # NaN and huge settings
    for settings in (b'{"min_duration_s": NaN}', b'{"threads": 100000}', b'{"batch_size": 1e300}'):
        data = (
            b'{"model": {"sha256": "'
            + ref["sha256"].encode()
            + b'"}, "device_class": "held-class", "settings": '
        )
        r = requests.post(f"{farm.url}/v1/jobs", data=data + settings + b"}",
                          headers={**farm.headers(), "Content-Type": "application/json"}, timeout=10)  # fmt: skip
        assert r.status_code == 422, (settings, r.status_code, r.text[:200])
    # rotation applies at once on this controller
    new = admin.rotate("agent", "held-2")["token"]
    assert (whoami(farm, t2), whoami(farm, new)) == (401, 200)
    assert farm.healthy()
