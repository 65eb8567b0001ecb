"""The farm's wire schemas: every JSON body the controller, agents and clients exchange, defined once.

Each is a standard-library dataclass, so that an agent image (ONNX Runtime, numpy, requests, PyYAML:
no pydantic) can import it to build its requests and read the answers. The controller validates the
same classes with pydantic (FastAPI reads them as request bodies and response models): `Check`
carries each field's bounds into pydantic's schema, and `__pydantic_config__` forbids unknown fields
and NaN/Infinity. Senders build a body with `body(...)`; readers parse an answer with `load(...)`,
which keeps the fields it knows and ignores new ones (an older agent talks to a newer controller).
"""

# No `from __future__ import annotations`: pydantic and `load` read the annotations at runtime.

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, TypeVar

from edgecompress.runtime.devices import NAME_RE

# The largest id the `id` columns hold on every backend: they are `integer` (32-bit) on PostgreSQL
# (tables.py). The controller refuses larger ids in requests (4xx), rather than letting the database
# raise (5xx).
ROW_ID_MAX = 2**31 - 1
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
LEASE_ID_RE = r"^[0-9a-f]{32}$"
# An identity kind -> its admin path (/v1/admin/<path>/...).
ADMIN_PATHS = {"client": "clients", "agent": "agents", "enrolment": "enrolment-tokens"}
STRICT = {"extra": "forbid", "allow_inf_nan": False}  # pydantic's ConfigDict, as a plain dict
T = TypeVar("T")


class Check:
    """Bounds of one field (pydantic core-schema keys: pattern, min_length, max_length, ge, gt, le),
    applied where pydantic validates it; nothing to import on the agent's side."""

    def __init__(self, **bounds: Any) -> None:
        self.bounds = bounds

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        schema = handler(source)
        schema.update(self.bounds)
        return schema


Name = Annotated[str, Check(pattern=NAME_RE)]
LeaseId = Annotated[str, Check(pattern=LEASE_ID_RE)]
RowId = Annotated[int, Check(ge=0, le=ROW_ID_MAX)]
Classes = Annotated[list[Name], Check(min_length=1, max_length=64)]


def schema(cls: type[T]) -> type[T]:
    """A wire schema: a keyword-only dataclass that pydantic validates strictly."""
    cls.__pydantic_config__ = STRICT  # type: ignore[attr-defined]
    return dataclass(kw_only=True)(cls)


# --- requests ---------------------------------------------------------------------------------


@schema
class ModelRef:
    sha256: Annotated[str, Check(pattern=SHA256_RE.pattern)]
    uri: Annotated[str, Check(max_length=2048, pattern=r"^s3://[^/]+/.+")] | None = None
    name: Annotated[str, Check(min_length=1, max_length=256)] = "model.onnx"
    bytes: Annotated[int, Check(ge=0, le=2**62)] | None = None


@schema
class JobSpec:
    model: ModelRef
    device_class: Name
    # a second model benchmarked with `model` in one process, alternating in short blocks: one result
    # per model and their ratio from the same moments (a latency comparison)
    paired_with: ModelRef | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    timeout_s: Annotated[float, Check(gt=0, le=86_400)] = 600.0
    priority: Annotated[int, Check(ge=-1000, le=1000)] = 0
    expires_in_s: Annotated[float, Check(gt=0, le=30 * 86_400)] | None = None


@schema
class Lease:
    job_id: RowId
    lease_id: LeaseId


Leases = Annotated[list[Lease], Check(max_length=64)]


@schema
class AgentInfo:
    """An agent registers: its class, host and facts, and the leases this process holds."""

    agent_id: Name
    device_class: Name
    hostname: Annotated[str, Check(max_length=256)]
    facts: dict[str, Any] = field(default_factory=dict)
    leases: Leases = field(default_factory=list)


@schema
class Heartbeat:
    leases: Leases = field(default_factory=list)


@schema
class ClaimRequest:
    wait_s: Annotated[float, Check(ge=0, le=30)] = 0.0


@schema
class ResultSubmission:
    agent_id: Name | None = None  # the token says who; when given it must agree
    lease_id: LeaseId
    status: Literal["done", "failed"]
    result: dict[str, Any] | None = None
    error: Annotated[str, Check(max_length=10_000)] | None = None


@schema
class Release:
    agent_id: Name | None = None
    lease_id: LeaseId
    reason: Annotated[str, Check(min_length=1, max_length=2000)]


@schema
class ClientSpec:
    name: Name


@schema
class AgentSpec:
    agent_id: Name
    device_classes: Classes
    emulated: bool = False


@schema
class EnrolmentSpec:
    name: Name
    device_classes: Classes
    emulated: bool = False
    expires_in_s: Annotated[float, Check(gt=0, le=366 * 86_400)] | None = None


@schema
class Enrol:
    agent_id: Name
    device_class: Name


# --- answers the controller composes (jobs, devices and identities come from the store as rows) ---


@schema
class Registered:
    agent_id: str
    lease_s: float
    heartbeat_s: float
    emulated: bool = False
    released_jobs: list[int] = field(default_factory=list)
    profile_check: dict[str, Any] = field(default_factory=dict)


@schema
class HeldLeases:
    """A heartbeat's answer: the leases the agent still holds (one it sent and is missing: lost)."""

    leases: list[Lease] = field(default_factory=list)


@schema
class WhoAmI:
    role: str
    name: str
    device_classes: list[str] = field(default_factory=list)
    emulated: bool = False


@schema
class BlobStored:
    sha256: str
    bytes: int


@schema
class QueueDepth:
    depth: dict[str, dict[str, int]] = field(default_factory=dict)


@schema
class Revoked:
    kind: str
    name: str
    revoked: bool
    released_jobs: list[int] = field(default_factory=list)


@schema
class ClaimedJob:
    """The part of a leased job (a store row plus `model_url`) an agent works from."""

    id: int
    lease_id: str
    model_name: str
    model_sha256: str
    model_url: str
    settings: dict[str, Any]
    timeout_s: float
    attempts: int
    paired_name: str | None = None
    paired_sha256: str | None = None
    paired_url: str | None = None


# --- building and reading -----------------------------------------------------------------------


def body(message: Any) -> dict[str, Any]:
    """The JSON body of a request: its fields (nested schemas too), minus optional ones left at None
    (the controller's defaults stand in for them)."""
    return {
        f.name: _plain(getattr(message, f.name))
        for f in dataclasses.fields(message)
        if not (getattr(message, f.name) is None and f.default is None)
    }


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return body(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def load(cls: type[T], data: Any) -> T:
    """Read an answer as `cls`: the fields it knows (nested schemas too), new ones ignored. A field
    it needs and the answer lacks is a ValueError naming both."""
    if not isinstance(data, dict):
        raise ValueError(f"the controller's answer is not a JSON object for {cls.__name__}: {data!r:.200}")
    hints = typing.get_type_hints(cls)
    known = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in data:
            known[f.name] = _nested(hints[f.name], data[f.name])
    try:
        return cls(**known)
    except TypeError as exc:
        raise ValueError(f"the controller's answer lacks fields of {cls.__name__}: {exc}") from exc


def _nested(hint: Any, value: Any) -> Any:
    if typing.get_origin(hint) is Annotated:
        hint = typing.get_args(hint)[0]
    if dataclasses.is_dataclass(hint) and isinstance(value, dict):
        return load(hint, value)
    if typing.get_origin(hint) is list and isinstance(value, list):
        (item,) = typing.get_args(hint)
        return [_nested(item, v) for v in value]
    return value
