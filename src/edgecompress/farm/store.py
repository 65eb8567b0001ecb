"""The farm's durable job store (SQLAlchemy Core): SQLite file by default, PostgreSQL by URL.

Jobs move queued → leased → done | failed. A claim is atomic: the candidate row is picked (with
`SELECT … FOR UPDATE SKIP LOCKED` on PostgreSQL) and taken by an `UPDATE … WHERE state='queued'`
whose row count says whether this caller won, so two agents (or two controller processes on one
database) can never lease the same job.

Leases always end. A lease belongs to one job and one agent; it never runs past the job's deadline
(`timeout_s` plus `deadline_grace_s` from the claim). A heartbeat renews only the leases the agent
lists (a restarted agent process lists none, so its predecessor's lease runs out), and an agent that
registers afresh gets its other leases taken back at once. A lease that runs out puts the job back in
the queue until `max_attempts` is spent, then fails it with the reason; an agent that cannot finish a
job (a transient download error, a refused result) releases it, and it is queued again after a
backoff. A result is accepted only from the holder of the current lease, and accepting the same
result twice is a no-op (idempotent), so a retried upload cannot complete a job twice; a *different*
outcome sent on an accepted lease is a conflict (409), never a silent `duplicate`.

Visibility: every job records the client that submitted it; the client-facing reads take that name
and see only its jobs (the admin passes none and sees all).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from edgecompress.farm.identity import IdentityStore
from edgecompress.farm.notify import DONE, WORK
from edgecompress.farm.results import check_matches_job, stamp
from edgecompress.farm.tables import agents, blob_owners, create_schema, jobs

STATES = ("queued", "leased", "done", "failed")
LIST_COLUMNS = [c for c in jobs.c if c.name != "result"]
MAX_BACKOFF_S = 60.0


class Conflict(Exception):
    """The request is valid but the job is no longer in a state that allows it (HTTP 409)."""


class NotFound(Exception):
    """No such job or agent (HTTP 404)."""


def dumps(value: Any) -> str:
    return json.dumps(value, allow_nan=False, separators=(",", ":"))


def job_dict(row: Any, with_result: bool = True) -> dict[str, Any]:
    d = dict(row if isinstance(row, dict) else row._mapping)
    d["settings"] = json.loads(d["settings"])
    if "result" in d:
        d["result"] = json.loads(d["result"]) if d["result"] and with_result else None
        if not with_result:
            d.pop("result")
    return d


@dataclass
class StoreConfig:
    lease_s: float = 30.0
    max_attempts: int = 3
    live_after_s: float = 30.0  # an agent without a heartbeat for this long is not live
    deadline_grace_s: float = 30.0  # a lease never runs past claim + timeout_s + this
    backoff_s: float = 1.0  # a released job waits backoff_s * 2^(attempts-1) (≤ 60 s) before a new claim


def database_url(url: str) -> str:
    """A bare `postgresql://` URL means the pinned driver (psycopg 3), not SQLAlchemy's psycopg2 default."""
    for bare in ("postgresql://", "postgres://"):
        if url.startswith(bare):
            return "postgresql+psycopg://" + url[len(bare) :]
    return url


class JobStore:
    """The queue. Every method is a short blocking database call: the controller runs them in a
    thread pool, never on its event loop."""

    def __init__(self, url: str, config: StoreConfig | None = None) -> None:
        self.url = database_url(url)
        self.config = config or StoreConfig()
        self.sqlite = self.url.startswith("sqlite")
        kwargs: dict[str, Any] = {}
        if self.sqlite:
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:  # the controller's thread pool shares these; a restarted database is reconnected
            kwargs.update(pool_size=16, max_overflow=16, pool_pre_ping=True)
        self.engine = sa.create_engine(self.url, **kwargs)
        if self.sqlite:
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        # One writer at a time inside this process (SQLite has one writer anyway); the guarded
        # UPDATEs keep claims atomic across processes too.
        self._write_lock = threading.Lock() if self.sqlite else _NullLock()
        self._raw: Any = None  # SQLite: the DBAPI connection for the per-cycle writes (see _cycle)
        self._compiled: dict[int, Any] = {}
        create_schema(self.engine)
        self.identities = IdentityStore(self.engine, self._write_lock)
        self._prepare()

    def _prepare(self) -> None:
        """Build the per-cycle statements once, with bind parameters: SQLAlchemy then reuses their
        compiled form. Building them per call (operator coercion, cache-key generation) cost more
        than running them: about 1 ms of a 1.4 ms claim + complete on SQLite."""
        b = sa.bindparam
        c = jobs.c
        pick = (
            sa.select(c.id)
            .where(
                c.state == "queued",
                c.device_class == b("b_device_class"),
                sa.or_(c.available_at.is_(None), c.available_at <= b("b_now")),
            )
            .order_by(c.priority.desc(), c.id)
            .limit(1)
        )
        if not self.sqlite:
            pick = pick.with_for_update(skip_locked=True)
        self._pick = pick
        grace = self.config.deadline_grace_s
        lease = self.config.lease_s
        self._take = (
            jobs.update()
            .where(c.id == pick.scalar_subquery(), c.state == "queued")
            .values(
                state="leased",
                agent_id=b("b_agent_id"),
                lease_id=b("b_lease_id"),
                leased_at=b("b_now"),
                deadline_at=b("b_now") + c.timeout_s + grace,
                lease_expires_at=sa.case(
                    (c.timeout_s + grace < lease, b("b_now") + c.timeout_s + grace), else_=b("b_now") + lease
                ),
                attempts=c.attempts + 1,
                available_at=None,
            )
            .returning(*jobs.c)
        )
        self._finish = (
            jobs.update()
            .where(
                c.id == b("b_id"),
                c.state == "leased",
                c.lease_id == b("b_lease_id"),
                c.agent_id == b("b_agent_id"),
            )
            .values(state=b("b_state"), finished_at=b("b_now"), result=b("b_result"), error=b("b_error"))
        )
        self._job_row = sa.select(c.state, c.lease_id, c.agent_id, c.device_class, c.paired_sha256).where(
            c.id == b("b_id")
        )
        self._outcome = sa.select(c.state, c.error, c.result).where(c.id == b("b_id"))
        self._insert = jobs.insert()
        self._get = sa.select(jobs).where(c.id == b("b_id"))
        self._beat = agents.update().where(agents.c.id == b("b_agent_id")).values(last_heartbeat=b("b_now"))
        renewed = b("b_now") + lease
        self._renew = (
            jobs.update()
            .where(
                c.id == b("b_id"),
                c.lease_id == b("b_lease_id"),
                c.agent_id == b("b_agent_id"),
                c.state == "leased",
            )
            .values(
                lease_expires_at=sa.case(
                    (c.deadline_at.is_not(None) & (c.deadline_at < renewed), c.deadline_at), else_=renewed
                )
            )
        )

    def close(self) -> None:
        with self._write_lock:
            if self._raw is not None:
                self._raw.close()
                self._raw = None
        self.engine.dispose()

    @contextlib.contextmanager
    def _cycle(self) -> Iterator[_CoreTx | _RawTx]:
        """A write transaction for the per-cycle statements (claim, complete).

        SQLite: those statements, compiled once, run on one DBAPI connection kept for them (writes
        are serialized by the write lock anyway): SQLAlchemy's per-execution work (cache key,
        parameter and result processing) was about half of each statement's cost there. Other
        databases go through SQLAlchemy as everywhere else."""
        with self._write_lock:
            if not self.sqlite:
                with self.engine.begin() as conn:
                    yield _CoreTx(conn)
                return
            if self._raw is None:
                self._raw = self.engine.raw_connection()
            raw = self._raw
            try:
                yield _RawTx(raw, self._compile)
                raw.commit()
            except BaseException:
                try:
                    raw.rollback()
                except Exception:  # a broken connection: drop it, the next cycle opens another
                    raw.invalidate()
                    self._raw = None
                raise

    def _compile(self, stmt: Any) -> Any:
        compiled = self._compiled.get(id(stmt))
        if compiled is None:
            compiled = self._compiled[id(stmt)] = stmt.compile(dialect=self.engine.dialect)
        return compiled

    # --- clients ------------------------------------------------------------------------------

    def submit(
        self,
        *,
        device_class: str,
        model_name: str,
        model_sha256: str,
        model_uri: str | None,
        model_bytes: int | None,
        settings: dict[str, Any],
        timeout_s: float,
        priority: int = 0,
        expires_in_s: float | None = None,
        client: str | None = None,
        paired_name: str | None = None,
        paired_sha256: str | None = None,
        paired_uri: str | None = None,
        paired_bytes: int | None = None,
    ) -> dict[str, Any]:
        now = time.time()
        values = {
            "device_class": device_class,
            "state": "queued",
            "priority": priority,
            "model_name": model_name,
            "model_sha256": model_sha256,
            "model_uri": model_uri,
            "model_bytes": model_bytes,
            "paired_name": paired_name,
            "paired_sha256": paired_sha256,
            "paired_uri": paired_uri,
            "paired_bytes": paired_bytes,
            "settings": dumps(settings),
            "timeout_s": timeout_s,
            "expires_at": now + expires_in_s if expires_in_s else None,
            "created_at": now,
            "attempts": 0,
            "max_attempts": self.config.max_attempts,
            "client": client,
        }
        with self._write_lock, self.engine.begin() as conn:
            job_id = conn.execute(self._insert, values).inserted_primary_key[0]
            self._notify(conn, WORK)
        return {"id": job_id, **values, "settings": settings}

    def get(self, job_id: int, client: str | None = None) -> dict[str, Any]:
        """The job; with `client`, only if that client submitted it (else it does not exist for them)."""
        with self.engine.connect() as conn:
            row = conn.execute(self._get, {"b_id": job_id}).first()
        if row is None or (client is not None and row.client != client):
            raise NotFound(f"job {job_id} does not exist")
        return job_dict(row)

    def list(
        self,
        state: str | None = None,
        device_class: str | None = None,
        limit: int = 100,
        before_id: int | None = None,
        client: str | None = None,
    ) -> list[dict[str, Any]]:
        q = sa.select(*LIST_COLUMNS).order_by(jobs.c.id.desc()).limit(limit)
        if client is not None:
            q = q.where(jobs.c.client == client)
        if state:
            q = q.where(jobs.c.state == state)
        if device_class:
            q = q.where(jobs.c.device_class == device_class)
        if before_id is not None:
            q = q.where(jobs.c.id < before_id)
        with self.engine.connect() as conn:
            return [job_dict(r, with_result=False) for r in conn.execute(q)]

    def cancel(
        self, job_id: int, reason: str = "cancelled by the client", client: str | None = None
    ) -> dict[str, Any]:
        self.get(job_id, client)  # NotFound for someone else's job
        with self._write_lock, self.engine.begin() as conn:
            conn.execute(
                jobs.update()
                .where(jobs.c.id == job_id, jobs.c.state.in_(("queued", "leased")))
                .values(state="failed", error=reason, finished_at=time.time(), lease_id=None)
            )
            self._notify(conn, DONE)
        return self.get(job_id, client)

    def queue_depth(self) -> dict[str, dict[str, int]]:
        q = sa.select(jobs.c.device_class, jobs.c.state, sa.func.count()).group_by(
            jobs.c.device_class, jobs.c.state
        )
        out: dict[str, dict[str, int]] = {}
        with self.engine.connect() as conn:
            for cls, state, n in conn.execute(q):
                out.setdefault(cls, dict.fromkeys(STATES, 0))[state] = n
        return out

    def devices(self) -> list[dict[str, Any]]:
        now = time.time()
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(agents).order_by(agents.c.device_class, agents.c.id)).all()
            leased = conn.execute(sa.select(jobs.c.agent_id, jobs.c.id).where(jobs.c.state == "leased")).all()
        current: dict[str, list[int]] = {}
        for agent_id, job_id in leased:
            current.setdefault(agent_id, []).append(job_id)
        out = []
        for r in rows:
            d = dict(r._mapping)
            d["facts"] = json.loads(d["facts"])
            d["seconds_since_heartbeat"] = now - d["last_heartbeat"]
            d["live"] = d["seconds_since_heartbeat"] <= self.config.live_after_s
            d["leased_jobs"] = current.get(d["id"], [])
            out.append(d)
        return out

    def class_cores(self, device_class: str) -> int | None:
        """The most cores any registered agent of this class reports (None: no agent yet)."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(agents.c.facts).where(agents.c.device_class == device_class)).all()
        cores = [json.loads(r.facts).get("cpus_usable") for r in rows]
        cores = [c for c in cores if isinstance(c, int) and not isinstance(c, bool) and c > 0]
        return max(cores) if cores else None

    # --- agents -------------------------------------------------------------------------------

    def register(
        self,
        agent_id: str,
        device_class: str,
        hostname: str,
        facts: dict[str, Any],
        held: list[tuple[int, str]] | None = None,
    ) -> list[int]:
        """Record the agent's facts. A registering process holds only the leases it names in `held`
        (a fresh process: none): its other leases, a predecessor's, go back to the queue at once.
        Returns the jobs taken back."""
        now = time.time()
        values = {
            "device_class": device_class,
            "hostname": hostname,
            "facts": dumps(facts),
            "last_heartbeat": now,
        }
        with self._write_lock, self.engine.begin() as conn:
            if conn.execute(agents.update().where(agents.c.id == agent_id).values(**values)).rowcount == 0:
                conn.execute(agents.insert().values(id=agent_id, registered_at=now, **values))
            keep = {lease for _, lease in (held or [])}
            stale = conn.execute(
                sa.select(jobs.c.id, jobs.c.lease_id, jobs.c.attempts, jobs.c.max_attempts).where(
                    jobs.c.agent_id == agent_id, jobs.c.state == "leased"
                )
            ).all()
            taken = []
            for r in stale:
                if r.lease_id not in keep:
                    self._end_lease(conn, r, now, f"agent {agent_id} restarted without it")
                    taken.append(r.id)
        return taken

    def heartbeat(self, agent_id: str, leases: list[tuple[int, str]]) -> list[dict[str, Any]]:
        """Record the heartbeat and renew the listed leases of this agent (never past their job's
        deadline). Returns the leases it still holds: one missing from the answer was lost
        (cancelled, taken back): the agent should stop working on it."""
        now = time.time()
        held = []
        with self._write_lock, self.engine.begin() as conn:
            if conn.execute(self._beat, {"b_agent_id": agent_id, "b_now": now}).rowcount == 0:
                raise NotFound(f"agent {agent_id!r} is not registered")
            for job_id, lease_id in leases:
                params = {"b_id": job_id, "b_lease_id": lease_id, "b_agent_id": agent_id, "b_now": now}
                if conn.execute(self._renew, params).rowcount:
                    held.append({"job_id": job_id, "lease_id": lease_id})
        return held

    def claim(self, agent_id: str, device_class: str) -> dict[str, Any] | None:
        """Lease the next queued job for this class to this agent, or None. One guarded
        `UPDATE … WHERE id = (next queued id) AND state = 'queued' RETURNING …` statement."""
        for _ in range(20):  # an empty answer with work still queued means another claimer won: retry
            now = time.time()
            params = {
                "b_device_class": device_class,
                "b_agent_id": agent_id,
                "b_lease_id": uuid.uuid4().hex,
                "b_now": now,
            }
            with self._cycle() as tx:
                rows = tx.rows(self._take, params)
                if rows:
                    return job_dict(rows[0])
                if not tx.rows(self._pick, {"b_device_class": device_class, "b_now": now}):
                    return None
        return None

    def complete(
        self,
        job_id: int,
        agent_id: str,
        lease_id: str,
        ok: bool,
        result: dict[str, Any] | None,
        error: str | None,
        emulated: bool | None = None,
    ) -> dict[str, Any]:
        """Store a result from the lease holder. With `emulated` (the controller passes the agent's
        enrolment), the result is stamped with who ran it: agent id, the job's device class and that
        flag, whatever the payload said. Repeating an accepted submission is a no-op."""
        state = "done" if ok else "failed"
        with self._cycle() as tx:
            rows = tx.rows(self._job_row, {"b_id": job_id})
            if not rows:
                raise NotFound(f"job {job_id} does not exist")
            row = rows[0]
            if result is not None:
                check_matches_job(result, bool(row.get("paired_sha256")))
            if result is not None and emulated is not None:
                result = stamp(result, agent_id, row["device_class"], emulated, job_id)
            payload = dumps(result) if result is not None else None
            won = tx.rowcount(
                self._finish,
                {
                    "b_id": job_id,
                    "b_lease_id": lease_id,
                    "b_agent_id": agent_id,
                    "b_state": state,
                    "b_now": time.time(),
                    "b_result": payload,
                    "b_error": error,
                },
            )
            if won == 1:
                tx.notify(DONE)
                return {"id": job_id, "state": state, "duplicate": False}
            same_lease = row["lease_id"] == lease_id and row["agent_id"] == agent_id
            stored = tx.rows(self._outcome, {"b_id": job_id})[0] if same_lease else None
        if row["state"] in ("done", "failed") and stored is not None:
            accepted = (
                stored["state"],
                stored["error"],
                json.loads(stored["result"]) if stored["result"] else None,
            )
            if accepted == (state, error, result):
                return {"id": job_id, "state": row["state"], "duplicate": True}
            raise Conflict(
                f"job {job_id} is already {row['state']} with a different outcome from this lease; "
                "only an identical resubmission is accepted (idempotent)"
            )
        raise Conflict(
            f"job {job_id} is {row['state']}"
            + (f" under another lease (agent {row['agent_id']})" if row["state"] == "leased" else "")
            + "; this result was not accepted"
        )

    def release(self, job_id: int, agent_id: str, lease_id: str, reason: str) -> dict[str, Any]:
        """The lease holder gives the job back (it could not finish it: a transient error, a refused
        result). Queued again after a backoff, or failed with the reason once its attempts are spent."""
        now = time.time()
        with self._write_lock, self.engine.begin() as conn:
            row = conn.execute(
                sa.select(
                    jobs.c.id, jobs.c.lease_id, jobs.c.attempts, jobs.c.max_attempts, jobs.c.state
                ).where(jobs.c.id == job_id, jobs.c.agent_id == agent_id)
            ).first()
            if row is None:
                raise NotFound(f"job {job_id} is not leased to agent {agent_id}")
            if row.state != "leased" or row.lease_id != lease_id:
                raise Conflict(f"job {job_id} is {row.state}; the lease {lease_id} is no longer current")
            state = self._end_lease(conn, row, now, f"released by agent {agent_id}: {reason}", backoff=True)
        return {"id": job_id, "state": state}

    def release_agent(self, agent_id: str, reason: str) -> list[int]:
        """Take back every lease of an agent (its identity was revoked)."""
        now = time.time()
        with self._write_lock, self.engine.begin() as conn:
            rows = conn.execute(
                sa.select(jobs.c.id, jobs.c.lease_id, jobs.c.attempts, jobs.c.max_attempts).where(
                    jobs.c.agent_id == agent_id, jobs.c.state == "leased"
                )
            ).all()
            for r in rows:
                self._end_lease(conn, r, now, reason)
        return [r.id for r in rows]

    def _end_lease(self, conn: Any, row: Any, now: float, reason: str, backoff: bool = False) -> str:
        """Requeue a leased job (after a backoff if asked), or fail it when its attempts are spent."""
        guard = (jobs.c.id == row.id, jobs.c.state == "leased", jobs.c.lease_id == row.lease_id)
        if row.attempts >= row.max_attempts:
            outcome, channel = "failed", DONE
            values = {
                "finished_at": now,
                "error": f"{reason}; no attempts left ({row.attempts} of {row.max_attempts} used)",
            }
        else:
            wait = (
                min(self.config.backoff_s * 2 ** max(0, row.attempts - 1), MAX_BACKOFF_S) if backoff else 0.0
            )
            outcome, channel = "queued", WORK
            values = {
                "agent_id": None,
                "lease_expires_at": None,
                "deadline_at": None,
                "available_at": now + wait if wait else None,
                "error": f"{reason}; requeued",
            }
        conn.execute(jobs.update().where(*guard).values(state=outcome, lease_id=None, **values))
        self._notify(conn, channel)
        return outcome

    # --- housekeeping -------------------------------------------------------------------------

    def sweep(self, requeue_expired: bool = True) -> int:
        """Requeue jobs whose lease ran out (or fail them after max_attempts); fail queued jobs past
        their expiry. `requeue_expired=False` leaves expired leases alone (a controller that just
        started gives agents one lease period to report first). Returns how many jobs were requeued."""
        now = time.time()
        requeued = 0
        with self._write_lock, self.engine.begin() as conn:
            if requeue_expired:
                expired = conn.execute(
                    sa.select(
                        jobs.c.id,
                        jobs.c.attempts,
                        jobs.c.max_attempts,
                        jobs.c.agent_id,
                        jobs.c.lease_id,
                        jobs.c.deadline_at,
                        jobs.c.timeout_s,
                    ).where(jobs.c.state == "leased", jobs.c.lease_expires_at < now)
                ).all()
                for r in expired:
                    if r.deadline_at is not None and r.deadline_at <= now:
                        reason = (
                            f"agent {r.agent_id} passed the job's deadline ({r.timeout_s:g} s timeout + "
                            f"{self.config.deadline_grace_s:g} s grace) without a result"
                        )
                    else:
                        reason = f"lease of agent {r.agent_id} expired"
                    requeued += self._end_lease(conn, r, now, reason) == "queued"
            expired_in_queue = conn.execute(
                jobs.update()
                .where(jobs.c.state == "queued", jobs.c.expires_at.is_not(None), jobs.c.expires_at < now)
                .values(
                    state="failed",
                    finished_at=now,
                    error="no live agent of this device class claimed the job before it expired",
                )
            ).rowcount
            if expired_in_queue:
                self._notify(conn, DONE)
        return requeued

    def holds_model(self, agent_id: str, sha256: str) -> bool:
        """Whether the agent holds a lease on a job for this model, or paired with it (it may download
        only those)."""
        q = sa.select(jobs.c.id).where(
            jobs.c.agent_id == agent_id,
            jobs.c.state == "leased",
            sa.or_(jobs.c.model_sha256 == sha256, jobs.c.paired_sha256 == sha256),
        )
        with self.engine.connect() as conn:
            return conn.execute(q.limit(1)).first() is not None

    def add_blob_owner(self, sha256: str, client: str) -> None:
        """Record that `client` uploaded blob `sha256` (again: its time is refreshed)."""
        from sqlalchemy.dialects import postgresql, sqlite

        now = time.time()
        insert = (sqlite.insert if self.sqlite else postgresql.insert)(blob_owners)
        upsert = insert.values(sha256=sha256, client=client, uploaded_at=now).on_conflict_do_update(
            index_elements=[blob_owners.c.sha256, blob_owners.c.client], set_={"uploaded_at": now}
        )
        with self._write_lock, self.engine.begin() as conn:
            conn.execute(upsert)

    def owns_blob(self, client: str | None, sha256: str) -> bool:
        """Whether `client` uploaded blob `sha256` (None, the admin: every blob)."""
        if client is None:
            return True
        q = sa.select(blob_owners.c.sha256).where(
            blob_owners.c.sha256 == sha256, blob_owners.c.client == client
        )
        with self.engine.connect() as conn:
            return conn.execute(q).first() is not None

    def forget_blob(self, sha256: str) -> None:
        """Retention deleted blob `sha256`: nobody owns it any more."""
        with self._write_lock, self.engine.begin() as conn:
            conn.execute(blob_owners.delete().where(blob_owners.c.sha256 == sha256))

    def delete_finished(self, before: float) -> int:
        """Retention: delete done and failed jobs that finished before `before` (a timestamp)."""
        with self._write_lock, self.engine.begin() as conn:
            return conn.execute(
                jobs.delete().where(jobs.c.state.in_(("done", "failed")), jobs.c.finished_at < before)
            ).rowcount

    def blob_references(self) -> set[str]:
        """The sha256 of every controller blob a job still names (its model, or the model paired with it)."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(jobs.c.model_sha256).where(jobs.c.model_uri.is_(None)).distinct())
            paired = conn.execute(
                sa.select(jobs.c.paired_sha256)
                .where(jobs.c.paired_sha256.is_not(None), jobs.c.paired_uri.is_(None))
                .distinct()
            )
            return {r[0] for r in rows} | {r[0] for r in paired}

    def _notify(self, conn: Any, channel: str) -> None:
        """Tell the other controllers on this database (delivered when the transaction commits)."""
        if not self.sqlite:
            conn.execute(sa.text("SELECT pg_notify(:channel, '')"), {"channel": channel})

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))


class _CoreTx:
    """Statements through SQLAlchemy, in the caller's transaction."""

    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn

    def rows(self, stmt: Any, params: dict[str, Any]) -> list[dict[str, Any]]:
        return [dict(r._mapping) for r in self.conn.execute(stmt, params)]

    def rowcount(self, stmt: Any, params: dict[str, Any]) -> int:
        return self.conn.execute(stmt, params).rowcount

    def notify(self, channel: str) -> None:
        self.conn.execute(sa.text("SELECT pg_notify(:channel, '')"), {"channel": channel})


class _RawTx:
    """The same statements, compiled once for SQLite (positional `?` parameters), on its DBAPI
    connection. Only for statements whose column types need no SQLAlchemy conversion (integers,
    floats, strings: SQLite returns them as stored)."""

    def __init__(self, raw: Any, compile: Any) -> None:
        self.raw, self.compile = raw, compile

    def _run(self, stmt: Any, params: dict[str, Any]) -> Any:
        compiled = self.compile(stmt)
        values = compiled.construct_params(params)
        cur = self.raw.cursor()
        cur.execute(compiled.string, [values[name] for name in compiled.positiontup])
        return cur

    def rows(self, stmt: Any, params: dict[str, Any]) -> list[dict[str, Any]]:
        cur = self._run(stmt, params)
        try:
            names = [d[0] for d in cur.description]
            return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
        finally:
            cur.close()

    def rowcount(self, stmt: Any, params: dict[str, Any]) -> int:
        cur = self._run(stmt, params)
        try:
            return cur.rowcount
        finally:
            cur.close()

    def notify(self, channel: str) -> None:
        """SQLite: one controller, nobody else to tell."""


class _NullLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer
    cur.execute("PRAGMA synchronous=NORMAL")  # commits survive a killed process (WAL)
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()
