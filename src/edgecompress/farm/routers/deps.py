"""What routes depend on: the farm's state, and who is calling (bearer token -> Principal, by role).

A missing or unknown token gets 401; a token of the wrong role, or an agent acting for another id or
a class it is not enrolled for, gets 403. The admin may do everything a client does.
"""

# No `from __future__ import annotations`: FastAPI reads the annotations at runtime.

from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi import Path as FPath

from edgecompress.farm.identity import Principal
from edgecompress.farm.state import FarmState
from edgecompress.farm.wire import ROW_ID_MAX
from edgecompress.runtime.devices import NAME_RE


def farm(request: Request) -> FarmState:
    return request.app.state.farm


State = Annotated[FarmState, Depends(farm)]
JobId = Annotated[int, FPath(ge=0, le=ROW_ID_MAX)]  # a path's {job_id}
PathName = Annotated[str, FPath(pattern=NAME_RE)]  # a path's {agent_id} or {name}


def bearer(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def unauthorised(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


def role(*allowed: str) -> Any:
    """A dependency: the caller's Principal, if its token is valid and of one of these roles."""

    async def check(request: Request, state: State) -> Principal:
        token = bearer(request)
        if not token:
            raise unauthorised("missing bearer token")
        who = state.auth.cached(token)
        if who is False:
            who = await state.read(state.auth.resolve, token)
        if who is None:
            raise unauthorised("invalid bearer token")
        if who.role not in allowed and not (who.role == "admin" and "client" in allowed):
            raise HTTPException(403, f"a {who.role} token may not do this (needs: {' or '.join(allowed)})")
        return who

    return Depends(check)


AsAgent = Annotated[Principal, role("agent")]
AsClient = Annotated[Principal, role("client")]  # or the admin
AsEnrolment = Annotated[Principal, role("enrolment")]
AsAnyone = Annotated[Principal, role("admin", "client", "agent", "enrolment")]


def as_agent(who: Principal, agent_id: str, device_class: str | None = None) -> None:
    """403 unless `who` is agent `agent_id` (and enrolled for `device_class`, when given)."""
    if who.name != agent_id:
        raise HTTPException(403, f"this token belongs to agent {who.name!r}, not {agent_id!r}")
    if device_class is not None and not who.serves(device_class):
        raise HTTPException(
            403,
            f"agent {who.name!r} is not enrolled for device class {device_class!r} "
            f"(enrolled: {', '.join(who.device_classes) or 'none'})",
        )


def visible_to(who: Principal) -> str | None:
    """The client whose jobs `who` may see (None: all, for the admin)."""
    return None if who.role == "admin" else who.name
