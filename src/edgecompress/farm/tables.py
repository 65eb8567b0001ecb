"""The farm's tables (SQLAlchemy Core) and how a database gets them.

`create_schema` creates missing tables, adds columns that were introduced after a database was
created (all nullable: no table rewrite), and drops indexes that are no longer used. On PostgreSQL it
runs under an advisory lock, so several controller processes starting together do not race on DDL.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from edgecompress.farm.wire import ROW_ID_MAX  # noqa: F401 (the `id` columns' bound, defined with the API)

metadata = sa.MetaData()

jobs = sa.Table(
    "farm_jobs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("device_class", sa.String(128), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("priority", sa.Integer, nullable=False, default=0),
    sa.Column("model_name", sa.String(256), nullable=False),
    sa.Column("model_sha256", sa.String(64), nullable=False),
    sa.Column("model_uri", sa.Text, nullable=True),  # s3://… or NULL for a controller blob
    sa.Column("model_bytes", sa.BigInteger, nullable=True),
    sa.Column("settings", sa.Text, nullable=False),
    sa.Column("timeout_s", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=True),  # a queued job not claimed by then fails
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("leased_at", sa.Float, nullable=True),
    sa.Column("finished_at", sa.Float, nullable=True),
    sa.Column("agent_id", sa.String(256), nullable=True),
    sa.Column("lease_id", sa.String(64), nullable=True),
    sa.Column("lease_expires_at", sa.Float, nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("max_attempts", sa.Integer, nullable=False),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("result", sa.Text, nullable=True),
    # Added by issue 15 (nullable: older databases gain them at start-up).
    sa.Column("client", sa.String(128), nullable=True),  # who submitted it: only they (and admin) see it
    sa.Column("deadline_at", sa.Float, nullable=True),  # the lease never outlives this
    sa.Column("available_at", sa.Float, nullable=True),  # a released job waits (backoff) until then
    # A paired job (latency comparisons): a second model, benchmarked with the first in one process,
    # alternating (runner.benchmark_paired). NULL for a job of one model.
    sa.Column("paired_name", sa.String(256), nullable=True),
    sa.Column("paired_sha256", sa.String(64), nullable=True),
    sa.Column("paired_uri", sa.Text, nullable=True),
    sa.Column("paired_bytes", sa.BigInteger, nullable=True),
)
# In the claim's order (priority DESC, id), so the next job is the index's first entry. An index on
# (…, priority, id) made SQLite sort every queued job of the class for each claim ("USE TEMP B-TREE
# FOR RIGHT PART OF ORDER BY"): claims slowed linearly with the queue's depth.
sa.Index("ix_farm_jobs_claim_order", jobs.c.state, jobs.c.device_class, jobs.c.priority.desc(), jobs.c.id)
sa.Index("ix_farm_jobs_client", jobs.c.client, jobs.c.id)
sa.Index("ix_farm_jobs_finished", jobs.c.finished_at)
LEGACY_INDEXES = ("ix_farm_jobs_claim",)  # dropped at startup: one index less to update per write

agents = sa.Table(
    "farm_agents",
    metadata,
    sa.Column("id", sa.String(256), primary_key=True),
    sa.Column("device_class", sa.String(128), nullable=False),
    sa.Column("hostname", sa.String(256), nullable=False),
    sa.Column("facts", sa.Text, nullable=False),
    sa.Column("registered_at", sa.Float, nullable=False),
    sa.Column("last_heartbeat", sa.Float, nullable=False),
)

# Enrolled identities: clients, agents and enrolment tokens. Only a token's sha256 is stored; a
# revoked identity keeps its row (jobs name it) with no token.
identities = sa.Table(
    "farm_identities",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(16), nullable=False),  # client | agent | enrolment
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=True, unique=True),
    sa.Column("device_classes", sa.Text, nullable=True),  # JSON list (agents, enrolment tokens)
    sa.Column("emulated", sa.Boolean, nullable=True),  # agents, enrolment tokens
    sa.Column("enrolled_by", sa.String(128), nullable=True),  # "admin" or the enrolment token's name
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("rotated_at", sa.Float, nullable=True),
    sa.Column("revoked_at", sa.Float, nullable=True),
    sa.Column("expires_at", sa.Float, nullable=True),  # enrolment tokens
    sa.UniqueConstraint("kind", "name", name="uq_farm_identities_kind_name"),
)

# Who uploaded which controller blob (issue 29): a client may HEAD, and submit jobs against, only the
# blobs it uploaded itself; to anyone else a blob does not exist (404), so nobody learns whether
# another client uploaded a model. An upload of content that is already there adds its uploader.
blob_owners = sa.Table(
    "farm_blob_owners",
    metadata,
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("client", sa.String(128), primary_key=True),
    sa.Column("uploaded_at", sa.Float, nullable=False),
)

ADVISORY_LOCK_ID = 0x65636661726D  # "ecfarm": one DDL pass at a time across controller processes


def create_schema(engine: sa.Engine) -> None:
    """Create what is missing: tables, columns added since, indexes; drop legacy indexes."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": ADVISORY_LOCK_ID})
        metadata.create_all(conn)
        inspector = sa.inspect(conn)
        for table in metadata.sorted_tables:
            present = {c["name"] for c in inspector.get_columns(table.name)}
            for column in table.columns:
                if column.name not in present:
                    _add_column(conn, table, column)
        for index in (i for t in metadata.sorted_tables for i in t.indexes):
            index.create(conn, checkfirst=True)
        for name in LEGACY_INDEXES:
            conn.execute(sa.text(f"DROP INDEX IF EXISTS {name}"))


def _add_column(conn: Any, table: sa.Table, column: sa.Column) -> None:
    assert column.nullable, f"{table.name}.{column.name}: only nullable columns can be added in place"
    kind = column.type.compile(dialect=conn.dialect)
    conn.execute(sa.text(f"ALTER TABLE {table.name} ADD COLUMN {column.name} {kind}"))
