"""The controller's store (issue 15): store calls never block the event loop, the PostgreSQL driver
the chart's values-postgres.yaml needs is pinned (and so in the image), two controller processes on
one PostgreSQL database hand out every job exactly once, and retention deletes what is old."""

from __future__ import annotations

import os
import re
import sqlite3
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.farm.conftest import TINY, executions

REPO = Path(__file__).resolve().parents[2]


def _hold_the_write_lock(farm, seconds: float, held: threading.Event) -> None:
    """Another process's transaction that blocks every write to the jobs table."""
    if farm.db_url.startswith("sqlite"):
        con = sqlite3.connect(farm.root / "farm.db", timeout=30)
        con.execute("BEGIN IMMEDIATE")
        held.set()
        time.sleep(seconds)
        con.rollback()
        con.close()
        return
    import sqlalchemy as sa

    engine = sa.create_engine(farm.db_url)
    with engine.connect() as conn, conn.begin():
        conn.execute(sa.text("LOCK TABLE farm_jobs IN ACCESS EXCLUSIVE MODE"))
        held.set()
        time.sleep(seconds)
    engine.dispose()


def test_a_held_write_lock_does_not_stall_the_controller(farm_factory, tiny_model: Path) -> None:
    """Row: 'another process holds the SQLite write lock for 6 s: /healthz takes 4.6 s: store calls
    block the event loop' (on PostgreSQL: a table lock)."""
    farm = farm_factory()
    client = farm.client()
    client.submit(client.upload(tiny_model), "lock-class", {}, timeout_s=60)
    h = farm.agent_headers("probe", "lock-class")
    held = threading.Event()
    holder = threading.Thread(target=_hold_the_write_lock, args=(farm, 6.0, held))
    holder.start()
    held.wait(10)
    claim = threading.Thread(  # a write that has to wait for the lock
        target=lambda: requests.post(
            f"{farm.url}/v1/agents/probe/claim", params={"device_class": "lock-class"}, headers=h, timeout=60
        )  # fmt: skip
    )
    claim.start()
    time.sleep(0.5)
    t0 = time.monotonic()
    assert requests.get(f"{farm.url}/healthz", timeout=30).status_code == 200
    took = time.monotonic() - t0
    holder.join()
    claim.join()
    assert took < 1.0, f"/healthz took {took:.1f} s while another process held the write lock"


def test_the_postgresql_driver_is_pinned_in_the_dependencies_and_the_lock() -> None:
    """Row: 'charts/edgecompress/values-postgres.yaml: no PostgreSQL driver in the dependencies or the
    image'. The image installs requirements.lock, so a pin there puts the driver in the image."""
    pyproject = (REPO / "pyproject.toml").read_text()
    lock = (REPO / "requirements.lock").read_text()
    pinned = re.search(r'"psycopg\[binary\]==([0-9.]+)"', pyproject)
    assert pinned, "pyproject.toml pins no psycopg[binary]"
    version = pinned.group(1)
    assert f"psycopg=={version}" in lock.splitlines() and f"psycopg-binary=={version}" in lock.splitlines()
    assert "import psycopg" in (REPO / "docker" / "Dockerfile").read_text()  # the image's smoke test
    import psycopg

    assert psycopg.__version__ == version
    assert (
        "postgresql" in (REPO / "scripts" / "system-deps.sh").read_text().split("wanted=(")[1].split(")")[0]
    )


@pytest.mark.parametrize("backend", ["postgresql"])  # several controllers need a server database
def test_two_controller_processes_on_one_postgresql_hand_out_each_job_once(
    farm_factory, postgres_server, tiny_model: Path, tmp_path: Path
) -> None:
    """Two controllers share the database and the blob folder; agents and clients are split between
    them; every job is run and accepted exactly once. A revocation through one applies at the other."""
    from edgecompress.farm.local import free_port, start_controller

    farm = farm_factory("--lease-s", "10", db_url=postgres_server.new_database())
    port = free_port()
    second = start_controller(
        port, farm.db_url, farm.root / "blobs", farm.admin_token, tmp_path / "second.log"
    )
    url2 = f"http://127.0.0.1:{port}"
    try:
        one, two = farm.client(), farm.client_for(farm.client_token)
        two.url = url2
        ref = one.upload(tiny_model)
        settings = {"min_runs": 1, "warmup_runs": 0, "min_duration_s": 0.0}
        # An agent long-polling the second controller is woken when the first queues a job (NOTIFY),
        # not at its next poll (every second).
        farm.agent("rpi4-emulated", url=url2)
        farm.wait_for(lambda: any(d["live"] for d in one.devices()), 60, "the agent")
        waits = []
        for _ in range(5):
            job = one.submit(ref, "rpi4-emulated", settings, timeout_s=60)
            done = one.wait([job["id"]], 60)[job["id"]]
            waits.append(done["leased_at"] - done["created_at"])
        assert max(waits) < 0.3, waits
        for i in range(1, 4):
            farm.agent("rpi4-emulated", url=farm.url if i % 2 else url2)
        ids = [
            (one if i % 2 else two).submit(ref, "rpi4-emulated", settings, timeout_s=120)["id"]
            for i in range(80)
        ]
        farm.wait_for(lambda: one.queue()["depth"]["rpi4-emulated"]["done"] == 85, 240, "80 jobs to finish")
        jobs = [j for j in one.jobs(limit=1000) if j["id"] in ids]
        assert len(jobs) == 80 and all(j["state"] == "done" and j["attempts"] == 1 for j in jobs)
        runs = executions(farm)
        assert sorted(i for i in runs if i in ids) == sorted(ids)
        assert set(runs.values()) == {1}  # each job run once, by one agent
        assert len({j["agent_id"] for j in jobs}) == 4
        # revoked through the first controller: refused by the second within its auth cache (2 s)
        farm.admin().revoke("client", "tests")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if requests.get(f"{url2}/v1/jobs", headers=farm.headers(), timeout=10).status_code == 401:
                break
            time.sleep(0.2)
        assert requests.get(f"{url2}/v1/jobs", headers=farm.headers(), timeout=10).status_code == 401
        assert time.monotonic() < deadline
    finally:
        second.stop()


def test_retention_deletes_old_finished_jobs_unreferenced_blobs_and_upload_leftovers(
    db_url: str, tmp_path: Path
) -> None:
    import sqlalchemy as sa

    from edgecompress.farm.retention import apply_retention, clean_uploads
    from edgecompress.farm.store import JobStore
    from edgecompress.farm.tables import jobs

    store = JobStore(db_url)
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    day = 86_400.0
    old = time.time() - 3 * day

    def job(sha: str, finish: bool, finished_at: float | None = None) -> int:
        j = store.submit(device_class="c", model_name="m", model_sha256=sha, model_uri=None, model_bytes=1,
                         settings={}, timeout_s=60)  # fmt: skip
        if finish:
            claimed = store.claim("a", "c")
            store.complete(claimed["id"], "a", claimed["lease_id"], True, {"ok": 1}, None)
            with store.engine.begin() as conn:
                conn.execute(jobs.update().where(jobs.c.id == claimed["id"]).values(finished_at=finished_at))
        return j["id"]

    a, b, c = "a" * 64, "b" * 64, "c" * 64
    old_done = job(a, True, old)  # finished 3 days ago: deleted, and with it the only reference to blob a
    new_done = job(b, True, time.time())  # finished just now: kept
    queued = job(c, False)  # still queued: kept, and blob c with it
    for sha in (a, b, c, "d" * 64):  # d: never referenced
        (blobs / sha).write_bytes(b"x")
        os.utime(blobs / sha, (old, old))
    leftover, live = blobs / ".upload-killed", blobs / ".upload-live"
    leftover.write_bytes(b"half")
    os.utime(leftover, (old, old))
    live.write_bytes(b"in progress")
    swept = apply_retention(store, blobs, max_age_s=day, stale_upload_s=900)
    assert (swept.jobs, swept.blobs, swept.uploads) == (1, 2, 1)
    with store.engine.connect() as conn:
        left = {r.id for r in conn.execute(sa.select(jobs.c.id))}
    assert left == {new_done, queued} and old_done not in left
    assert sorted(p.name for p in blobs.iterdir()) == sorted([b, c, ".upload-live"])
    assert apply_retention(store, blobs, max_age_s=0, stale_upload_s=900).jobs == 0  # 0 keeps everything
    assert clean_uploads(blobs, 900) == 0 and live.exists()
    store.close()


def test_upload_leftovers_are_cleaned_at_start_up(farm_factory, tiny_model: Path) -> None:
    farm = farm_factory()
    client = farm.client()
    ref = client.upload(tiny_model)
    job = client.submit(ref, "rpi4-emulated", TINY, timeout_s=60)
    farm.controller.kill()
    leftover = farm.root / "blobs" / ".upload-abc123"
    leftover.write_bytes(b"cut short")
    long_ago = time.time() - 7200
    os.utime(leftover, (long_ago, long_ago))
    farm.start_controller()
    assert not leftover.exists()
    assert (farm.root / "blobs" / ref["sha256"]).exists()  # a referenced blob stays
    assert client.job(job["id"])["state"] == "queued"
