"""Wake-ups between controller processes that share a PostgreSQL database (LISTEN/NOTIFY).

A controller wakes its own long-polling claims and job reads when it queues or finishes a job; with
several controllers the job may have been queued or finished by another one. The store sends
`NOTIFY farm_work` (a job became claimable) and `NOTIFY farm_done` (a job finished) in the same
transaction as the change (PostgreSQL delivers them on commit); `Listener` holds one connection per
controller that LISTENs to both and calls back. Without it a claim on another controller would only
see new work at its next poll (up to 1 s later). SQLite has one controller: it needs none of this.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

WORK = "farm_work"
DONE = "farm_done"


def libpq_url(sqlalchemy_url: str) -> str:
    """`postgresql+psycopg://…` → the plain `postgresql://…` that psycopg connects with."""
    import sqlalchemy as sa

    return (
        sa.engine.make_url(sqlalchemy_url).set(drivername="postgresql").render_as_string(hide_password=False)
    )


class Listener(threading.Thread):
    """LISTENs on `farm_work` and `farm_done`; reconnects after a lost connection (database restart)."""

    def __init__(self, url: str, on_work: Callable[[], None], on_done: Callable[[], None]) -> None:
        super().__init__(name="farm-notify", daemon=True)
        self.url = libpq_url(url)
        self.callbacks = {WORK: on_work, DONE: on_done}
        self.stopping = threading.Event()

    def run(self) -> None:
        import psycopg

        delay = 0.5
        while not self.stopping.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True) as conn:
                    for channel in self.callbacks:
                        conn.execute(f"LISTEN {channel}")
                    delay = 0.5
                    while not self.stopping.is_set():
                        for note in conn.notifies(timeout=1.0):
                            self.callbacks[note.channel]()
            except Exception as exc:  # the database went away: claims still poll every second meanwhile
                log.warning("farm notifications interrupted (%s); reconnecting in %.1f s", exc, delay)
                self.stopping.wait(delay)
                delay = min(delay * 2, 10.0)

    def stop(self) -> None:
        self.stopping.set()
