"""A throwaway PostgreSQL server in a folder, for tests, benchmarks and trying the farm on PostgreSQL.

`temporary_postgres()` runs the system's `initdb` and `pg_ctl` (Debian's `postgresql` package:
`scripts/system-deps.sh`) into a new temporary folder, serves on a free loopback port (and a unix
socket in that folder), and stops the server and deletes its data on exit. No system service is involved. PostgreSQL
refuses to run as root: as root it runs as the `postgres` user (which the package creates), owning
the folder. `durable=False` turns off fsync and synchronous commits (tests: fast, nothing to keep);
the default keeps PostgreSQL's crash-safe defaults (benchmarks).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from edgecompress.errors import ConfigError

SERVICE_USER = "postgres"


class PostgresUnavailable(ConfigError):
    """No PostgreSQL server binaries here (install Debian's `postgresql`: scripts/system-deps.sh)."""


def find_bindir() -> Path:
    """The folder with initdb, pg_ctl and postgres: $EDGECOMPRESS_PG_BINDIR, Debian's newest
    /usr/lib/postgresql/<version>/bin, or wherever `pg_ctl` on PATH really lives."""
    candidates = [os.environ.get("EDGECOMPRESS_PG_BINDIR", "")]
    candidates += sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True
    )
    which = shutil.which("pg_ctl")
    if which:
        candidates.append(str(Path(which).resolve().parent))
    for c in candidates:
        if c and (Path(c) / "initdb").is_file() and (Path(c) / "pg_ctl").is_file():
            return Path(c)
    raise PostgresUnavailable(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: install Debian's postgresql package "
        "(scripts/system-deps.sh) or set EDGECOMPRESS_PG_BINDIR"
    )


@dataclass
class PostgresServer:
    port: int
    folder: Path
    bindir: Path
    databases: list[str] = field(default_factory=list)
    created: int = 0

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{SERVICE_USER}@127.0.0.1:{self.port}/{database}"

    def new_database(self, prefix: str = "farm") -> str:
        """A fresh, empty database; returns its SQLAlchemy URL."""
        import psycopg

        self.created += 1
        name = f"{prefix}_{self.created}_{os.getpid()}"
        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user={SERVICE_USER} dbname=postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.databases.append(name)
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop a database made by `new_database` (its connections are ended)."""
        import psycopg

        name = url.rsplit("/", 1)[1]
        if name not in self.databases:
            return
        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user={SERVICE_USER} dbname=postgres", autocommit=True
        ) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.databases.remove(name)


def _as_service_user(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", SERVICE_USER, "--", *cmd]


@contextlib.contextmanager
def temporary_postgres(
    port: int | None = None, durable: bool = True, max_connections: int = 200
) -> Iterator[PostgresServer]:
    """Start a private PostgreSQL server in a new folder under the system's temp folder (reachable by
    the service user when running as root); stop it and delete the folder on exit."""
    from edgecompress.farm.local import free_port

    bindir = find_bindir()
    with contextlib.ExitStack() as stack:
        folder = Path(tempfile.mkdtemp(prefix="edgecompress-pg-"))
        stack.callback(shutil.rmtree, folder, True)
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam(SERVICE_USER)
            except KeyError as exc:
                raise PostgresUnavailable(
                    f"running as root needs the {SERVICE_USER!r} user to run PostgreSQL"
                ) from exc
            os.chown(folder, user.pw_uid, user.pw_gid)
        data = folder / "data"
        init = subprocess.run(
            _as_service_user(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    SERVICE_USER,
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                    "--no-instructions",
                ]
            ),
            capture_output=True,
            text=True,
            timeout=300,
        )
        if init.returncode != 0:
            raise PostgresUnavailable(f"initdb failed: {init.stderr[-2000:] or init.stdout[-2000:]}")
        port = port or free_port()
        options = [
            f"-p {port}",
            "-c listen_addresses=127.0.0.1",
            f"-k {folder}",
            f"-c max_connections={max_connections}",
        ]
        if not durable:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        ctl = [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"), "-w", "-t", "120"]
        start = subprocess.run(
            _as_service_user([*ctl, "-o", " ".join(options), "start"]),
            capture_output=True,
            text=True,
            timeout=180,
        )
        if start.returncode != 0:
            log = (
                (folder / "server.log").read_text(errors="replace")[-2000:]
                if (folder / "server.log").exists()
                else ""
            )
            raise PostgresUnavailable(f"pg_ctl start failed: {start.stderr[-1000:]} {log}")
        stack.callback(
            subprocess.run,
            _as_service_user([*ctl, "-m", "immediate", "stop"]),
            capture_output=True,
            timeout=120,
        )
        yield PostgresServer(port=port, folder=folder, bindir=bindir)
