"""Who may call the farm controller, and as whom.

Four roles. The **admin** token is the controller's configuration (EDGECOMPRESS_FARM_ADMIN_TOKEN or a
file); everything else is enrolled through the admin API and stored in the database, so rotation and
revocation take effect without a restart, on every controller that shares the database:

- a **client** (a team, a pipeline) submits jobs and sees and cancels only its own;
- an **agent** is bound to its agent id and to the device classes it may serve, and to whether it
  is emulated: the controller stamps `emulated` on its results from here, never from the payload;
- an **enrolment token** lets a fleet of agents (a DaemonSet) enrol themselves for its device classes:
  each agent exchanges it for its own agent token. Exchanging it again for the same agent id
  **rotates** that agent's token (the earlier one stops working at once: one id never holds two
  working tokens; a restarted DaemonSet pod re-enrols this way). A revoked agent cannot come back
  through an enrolment token until the admin re-admits it (`readmit`, or enrols it directly), and an
  enrolment token never takes over an id enrolled by the admin or by another enrolment token,
  revoked or not.

Tokens are 256-bit random strings shown once; only their sha256 is stored (a fast hash is enough for
random secrets: there is nothing to brute-force). A token is looked up by its hash; the admin token is
compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from edgecompress.farm.tables import identities

KINDS = ("client", "agent", "enrolment")
TOKEN_PREFIX = "ecf_"


class IdentityError(Exception):
    """An identity request that cannot be met (HTTP 404 or 409 with the reason)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Principal:
    """The caller: its role, its name, and (agents, enrolment tokens) what it is bound to."""

    role: str  # admin | client | agent | enrolment
    name: str
    device_classes: tuple[str, ...] = field(default_factory=tuple)
    emulated: bool = False

    def serves(self, device_class: str) -> bool:
        return device_class in self.device_classes


ADMIN = Principal("admin", "admin")


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def is_admin(token: str, admin_token: str) -> bool:
    return bool(admin_token) and hmac.compare_digest(token.encode(), admin_token.encode())


class IdentityStore:
    """Enrolled identities in the farm's database (the `farm_identities` table)."""

    def __init__(self, engine: sa.Engine, write_lock: Any) -> None:
        self.engine = engine
        self._write_lock = write_lock
        self._by_hash = sa.select(identities).where(identities.c.token_hash == sa.bindparam("b_hash"))

    def lookup(self, token: str) -> Principal | None:
        """The active identity holding this token, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(self._by_hash, {"b_hash": token_hash(token)}).first()
        if row is None or row.revoked_at is not None:
            return None
        if row.expires_at is not None and row.expires_at < time.time():
            return None
        classes = tuple(json.loads(row.device_classes)) if row.device_classes else ()
        return Principal(row.kind, row.name, classes, bool(row.emulated))

    def add(
        self,
        kind: str,
        name: str,
        device_classes: list[str] | None = None,
        emulated: bool | None = None,
        expires_in_s: float | None = None,
        enrolled_by: str = "admin",
        replace: bool = False,
    ) -> dict[str, Any]:
        """Enrol `name`; returns its record with the token (the only time the token is shown).

        - By the admin (`replace=False`): a new name, or a revoked one (that is the admin re-admitting
          it); an active identity of that name is a conflict (rotate its token instead).
        - By an enrolment token (`replace=True`, `enrolled_by="enrolment:<name>"`): a new name, an
          agent that token enrolled before (its token is **rotated**: the previous one stops working
          at once, so one enrolment token and agent id never hold two working tokens), or an agent
          the admin re-admitted for enrolment (`readmit`). Never a revoked agent (409 until the admin
          re-admits it) nor one enrolled by the admin or another enrolment token (409), whether that
          row is active or revoked."""
        assert kind in KINDS
        token, now = new_token(), time.time()
        values = {
            "token_hash": token_hash(token),
            "device_classes": json.dumps(sorted(set(device_classes))) if device_classes is not None else None,
            "emulated": emulated,
            "enrolled_by": enrolled_by,
            "created_at": now,
            "rotated_at": None,
            "revoked_at": None,
            "expires_at": now + expires_in_s if expires_in_s else None,
        }
        key = (identities.c.kind == kind, identities.c.name == name)
        with self._write_lock, self.engine.begin() as conn:
            row = conn.execute(sa.select(identities).where(*key)).first()
            if row is not None:
                _may_enrol(row, kind, name, enrolled_by, replace)
                if row.token_hash is not None:  # a re-enrolment rotates: a rotation, not a creation
                    values.update(created_at=row.created_at, rotated_at=now)
            if row is None:
                conn.execute(identities.insert().values(kind=kind, name=name, **values))
            else:
                conn.execute(identities.update().where(*key).values(**values))
        return {
            "kind": kind,
            "name": name,
            "token": token,
            "device_classes": sorted(set(device_classes or [])),
            "emulated": emulated,
        }

    def readmit(self, kind: str, name: str) -> dict[str, Any]:
        """Lift a revocation so that the enrolment token that enrolled `name` (or, when the admin
        enrolled it, any enrolment token covering its class) may enrol it again. No token is issued
        here: until it enrols, the identity has none and nothing authenticates as it."""
        with self._write_lock, self.engine.begin() as conn:
            row = conn.execute(
                sa.select(identities.c.revoked_at, identities.c.enrolled_by).where(
                    identities.c.kind == kind, identities.c.name == name
                )
            ).first()
            if row is None or row.revoked_at is None:
                raise IdentityError(404, f"no revoked {kind} {name!r} to re-admit")
            enrolled_by = row.enrolled_by if (row.enrolled_by or "").startswith("enrolment:") else None
            conn.execute(
                identities.update()
                .where(identities.c.kind == kind, identities.c.name == name)
                .values(revoked_at=None, token_hash=None, enrolled_by=enrolled_by, rotated_at=time.time())
            )
        return {
            "kind": kind,
            "name": name,
            "readmitted": True,
            "enrol_with": enrolled_by or "any enrolment token",
        }

    def rotate(self, kind: str, name: str) -> dict[str, Any]:
        """A new token for an active identity; the old one stops working at once."""
        token = new_token()
        with self._write_lock, self.engine.begin() as conn:
            done = conn.execute(
                identities.update()
                .where(
                    identities.c.kind == kind, identities.c.name == name, identities.c.revoked_at.is_(None)
                )
                .values(token_hash=token_hash(token), rotated_at=time.time())
            ).rowcount
        if not done:
            raise IdentityError(404, f"no active {kind} {name!r}")
        return {"kind": kind, "name": name, "token": token}

    def revoke(self, kind: str, name: str) -> None:
        with self._write_lock, self.engine.begin() as conn:
            done = conn.execute(
                identities.update()
                .where(
                    identities.c.kind == kind, identities.c.name == name, identities.c.revoked_at.is_(None)
                )
                .values(token_hash=None, revoked_at=time.time())
            ).rowcount
        if not done:
            raise IdentityError(404, f"no active {kind} {name!r}")

    def list(self) -> list[dict[str, Any]]:
        cols = [c for c in identities.c if c.name not in ("id", "token_hash")]
        cols.append(identities.c.token_hash.is_not(None).label("has_token"))
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(*cols).order_by(identities.c.kind, identities.c.name)).all()
        out = []
        for r in rows:
            d = dict(r._mapping)
            d["device_classes"] = json.loads(d["device_classes"]) if d["device_classes"] else []
            has_token = bool(d.pop("has_token"))
            d["active"] = (
                has_token
                and d["revoked_at"] is None
                and (d["expires_at"] is None or d["expires_at"] > time.time())
            )
            d["awaiting_enrolment"] = not has_token and d["revoked_at"] is None  # re-admitted
            out.append(d)
        return out


def _may_enrol(row: Any, kind: str, name: str, enrolled_by: str, replace: bool) -> None:
    """Raise IdentityError unless `enrolled_by` may (re-)enrol the existing identity `row`."""
    if not replace:  # the admin
        if row.revoked_at is None:
            raise IdentityError(409, f"{kind} {name!r} is already enrolled (rotate its token instead)")
        return  # the admin re-admits a revoked identity
    if row.revoked_at is not None:
        raise IdentityError(
            409,
            f"{kind} {name!r} was revoked; it cannot enrol again until the admin re-admits it "
            f"(POST /v1/admin/agents/{name}/readmit, or enrols it: POST /v1/admin/agents)",
        )
    if row.enrolled_by is not None and row.enrolled_by != enrolled_by:
        raise IdentityError(409, f"{kind} {name!r} was enrolled by {row.enrolled_by}, not by {enrolled_by}")


class Authenticator:
    """Bearer token → Principal. Database lookups are cached for `cache_s` seconds (by hash), so a
    rotation or revocation made through another controller takes effect within that time; one made
    through this controller clears the cache at once (`forget`). Blocking: call it off the event loop."""

    def __init__(self, store: IdentityStore, admin_token: str, cache_s: float = 2.0) -> None:
        self.store, self.admin_token, self.cache_s = store, admin_token, cache_s
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    def resolve(self, token: str) -> Principal | None:
        if is_admin(token, self.admin_token):
            return ADMIN
        key = token_hash(token)
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and now - hit[0] < self.cache_s:
            return hit[1]
        principal = self.store.lookup(token)
        if len(self._cache) > 10_000:  # unknown tokens are cached too: bound the memory they take
            self._cache.clear()
        self._cache[key] = (now, principal)
        return principal

    def cached(self, token: str) -> Principal | None | bool:
        """The cached answer without a database call (False: not cached or stale)."""
        if is_admin(token, self.admin_token):
            return ADMIN
        hit = self._cache.get(token_hash(token))
        if hit is not None and time.monotonic() - hit[0] < self.cache_s:
            return hit[1]
        return False

    def forget(self) -> None:
        self._cache.clear()
