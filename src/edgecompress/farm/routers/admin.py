"""Admin: enrol clients, agents and enrolment tokens; rotate, revoke, re-admit; list identities.

Every change takes effect at once here (the token cache is dropped) and within `auth_cache_s` on the
other controllers sharing the database. A revoked agent's leased jobs go back to the queue.
"""

# No `from __future__ import annotations`: FastAPI reads the annotations at runtime.

from typing import Any

from fastapi import APIRouter, HTTPException

from edgecompress.farm.routers.deps import PathName as IdName
from edgecompress.farm.routers.deps import State, role
from edgecompress.farm.wire import ADMIN_PATHS, AgentSpec, ClientSpec, EnrolmentSpec, Revoked

router = APIRouter(prefix="/v1/admin", dependencies=[role("admin")])
KINDS = {path: kind for kind, path in ADMIN_PATHS.items()}


def kind_of(kind: str) -> str:
    if kind not in KINDS:
        raise HTTPException(404, f"no such identity kind {kind!r} (one of {', '.join(KINDS)})")
    return KINDS[kind]


@router.post("/clients", status_code=201)
async def add_client(spec: ClientSpec, state: State) -> dict[str, Any]:
    return await state.db(state.store.identities.add, "client", spec.name)


@router.post("/agents", status_code=201)
async def add_agent(spec: AgentSpec, state: State) -> dict[str, Any]:
    return await state.db(
        state.store.identities.add, "agent", spec.agent_id, spec.device_classes, spec.emulated
    )


@router.post("/enrolment-tokens", status_code=201)
async def add_enrolment(spec: EnrolmentSpec, state: State) -> dict[str, Any]:
    return await state.db(
        state.store.identities.add,
        "enrolment",
        spec.name,
        spec.device_classes,
        spec.emulated,
        spec.expires_in_s,
    )


@router.post("/{kind}/{name}/rotate")
async def rotate(kind: str, name: IdName, state: State) -> dict[str, Any]:
    out = await state.db(state.store.identities.rotate, kind_of(kind), name)
    state.auth.forget()
    return out


@router.delete("/{kind}/{name}")
async def revoke(kind: str, name: IdName, state: State) -> Revoked:
    await state.db(state.store.identities.revoke, kind_of(kind), name)
    state.auth.forget()
    released = []
    if kind == "agents":
        released = await state.db(state.store.release_agent, name, f"agent {name} was revoked")
    if released:
        state.waker.notify()
    return Revoked(kind=kind_of(kind), name=name, revoked=True, released_jobs=released)


@router.post("/{kind}/{name}/readmit")
async def readmit(kind: str, name: IdName, state: State) -> dict[str, Any]:
    """Lift a revocation so that the identity may enrol again through an enrolment token."""
    return await state.db(state.store.identities.readmit, kind_of(kind), name)


@router.get("/identities")
async def list_identities(state: State) -> list[dict[str, Any]]:
    return await state.read(state.store.identities.list)
