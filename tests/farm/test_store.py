"""The job store's claim stays atomic across store instances (as across controller processes), on
SQLite and on PostgreSQL (the `db_url` fixture runs each test on both)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from edgecompress.farm.store import Conflict, JobStore


def test_concurrent_claims_from_separate_stores_take_each_job_exactly_once(db_url: str) -> None:
    """On SQLite and on PostgreSQL (FOR UPDATE SKIP LOCKED): 4 stores, 8 claimers, 120 jobs."""
    stores = [JobStore(db_url) for _ in range(4)]
    jobs = 120
    for _ in range(jobs):
        stores[0].submit(device_class="c", model_name="m", model_sha256="0" * 64, model_uri=None,
                         model_bytes=1, settings={}, timeout_s=60)  # fmt: skip
    taken: list[list[dict]] = [[] for _ in range(8)]
    start = threading.Barrier(8)

    def worker(i: int) -> None:
        store, agent = stores[i % len(stores)], f"agent-{i}"
        start.wait()
        while (job := store.claim(agent, "c")) is not None:
            taken[i].append(job)
            assert (
                store.complete(job["id"], agent, job["lease_id"], True, {"i": i}, None)["duplicate"] is False
            )

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    ids = [j["id"] for per in taken for j in per]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == jobs
    assert all(j["attempts"] == 1 and j["state"] == "leased" for per in taken for j in per)
    # A claimed job reads the same as the store's own read of it, bar the completion that followed.
    claimed = taken[0][0] if taken[0] else next(per[0] for per in taken if per)
    stored = stores[3].get(claimed["id"])
    changed = {"state", "finished_at", "result"}
    assert claimed.keys() == stored.keys()
    assert {k: v for k, v in claimed.items() if k not in changed} == {
        k: v for k, v in stored.items() if k not in changed
    }
    assert {j["state"] for j in stores[1].list(limit=1000)} == {"done"}
    # A repeated submission is a no-op; another agent's or a stale lease is refused.
    job = taken[0][0] if taken[0] else next(per[0] for per in taken if per)
    agent = job["agent_id"]
    same = {"i": int(agent.removeprefix("agent-"))}  # what that worker sent
    assert stores[2].complete(job["id"], agent, job["lease_id"], True, same, None)["duplicate"] is True
    with pytest.raises(Conflict, match="different outcome"):  # a different one on that lease: 409 (issue 29)
        stores[2].complete(job["id"], agent, job["lease_id"], True, {}, None)
    with pytest.raises(Conflict):
        stores[2].complete(job["id"], agent, "0" * 32, True, {}, None)
    with pytest.raises(Conflict):
        stores[2].complete(job["id"], "someone-else", job["lease_id"], True, {}, None)
    for store in stores:
        store.close()


def test_claim_reads_the_next_job_from_the_index_without_sorting_the_queue(tmp_path: Path) -> None:
    """The claim order (priority DESC, id) is the index's order: no sort over every queued job (claims
    used to slow down linearly with the queue's depth). An old database loses its legacy index."""
    import sqlite3

    db = tmp_path / "farm.db"
    JobStore(f"sqlite:///{db}").close()
    with sqlite3.connect(db) as con:  # a database made before the index changed
        con.execute("CREATE INDEX ix_farm_jobs_claim ON farm_jobs (state, device_class, priority, id)")
    store = JobStore(f"sqlite:///{db}")
    for priority in (0, 5, 0, 5, -1):
        store.submit(device_class="c", model_name="m", model_sha256="0" * 64, model_uri=None, model_bytes=1,
                     settings={}, timeout_s=60, priority=priority)  # fmt: skip
    compiled = store._take.compile(dialect=store.engine.dialect)
    with sqlite3.connect(db) as con:
        plan = " ".join(
            r[-1] for r in con.execute(f"EXPLAIN QUERY PLAN {compiled}", [None] * len(compiled.positiontup))
        )
        indexes = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "ix_farm_jobs_claim_order" in plan and "TEMP B-TREE" not in plan, plan
    assert "ix_farm_jobs_claim" not in indexes
    order = [store.claim("a", "c") for _ in range(5)]
    assert [(j["priority"], j["id"]) for j in order] == [(5, 2), (5, 4), (0, 1), (0, 3), (-1, 5)]
    assert store.claim("a", "c") is None
    store.close()


def test_a_claim_that_fails_midway_leaves_the_job_queued(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgecompress.farm import store as store_module

    store = JobStore(db_url)
    store.submit(device_class="c", model_name="m", model_sha256="0" * 64, model_uri=None, model_bytes=1,
                 settings={}, timeout_s=60)  # fmt: skip

    def broken(row: object, with_result: bool = True) -> dict:
        raise RuntimeError("boom")

    with monkeypatch.context() as m:
        m.setattr(store_module, "job_dict", broken)
        with pytest.raises(RuntimeError):
            store.claim("a", "c")
    assert store.get(1)["state"] == "queued" and store.get(1)["attempts"] == 0
    job = store.claim("a", "c")
    assert job is not None and job["id"] == 1 and job["attempts"] == 1
    assert store.complete(1, "a", job["lease_id"], True, {"ok": 1}, None)["duplicate"] is False
    assert store.get(1)["result"] == {"ok": 1}
    store.close()
