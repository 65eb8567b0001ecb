"""Agents: enrol (an enrolment token for the agent's own), register, heartbeat, claim (long poll),
and report a job's result or give it back. An agent acts only for its own id, for the classes it
is enrolled for, and on the leases it holds (another's: 409); `emulated` comes from its enrolment."""

# No `from __future__ import annotations`: FastAPI reads the annotations at runtime.

import asyncio
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse

from edgecompress.farm.results import ResultRejected
from edgecompress.farm.routers.deps import AsAgent, AsEnrolment, JobId, State, as_agent, bearer, unauthorised
from edgecompress.farm.routers.deps import PathName as AgentId
from edgecompress.farm.wire import (
    AgentInfo,
    ClaimRequest,
    Enrol,
    Heartbeat,
    HeldLeases,
    Lease,
    Registered,
    Release,
    ResultSubmission,
)
from edgecompress.runtime import profilecheck
from edgecompress.runtime.devices import NAME_RE

log = logging.getLogger("edgecompress.farm.controller")
enrolment = APIRouter(prefix="/v1/agents")
router = APIRouter(prefix="/v1")


@enrolment.post("/enrol", status_code=201)
async def enrol(spec: Enrol, who: AsEnrolment, state: State) -> dict[str, Any]:
    """An agent exchanges an enrolment token for its own token, bound to its id and class."""
    if not who.serves(spec.device_class):
        raise HTTPException(
            403, f"enrolment token {who.name!r} does not cover device class {spec.device_class!r}"
        )
    out = await state.db(
        state.store.identities.add,
        "agent",
        spec.agent_id,
        [spec.device_class],
        who.emulated,
        None,
        f"enrolment:{who.name}",
        True,
    )
    state.auth.forget()  # a re-enrolment rotated the agent's token: the earlier one stops working here now
    return out


@router.post("/agents/register")
async def register(info: AgentInfo, who: AsAgent, state: State) -> Registered:
    as_agent(who, info.agent_id, info.device_class)
    facts = {**info.facts, "emulated": who.emulated}  # the enrolment says, not the agent
    # Flag, not refuse, an agent whose CPU disagrees with its class's profile (profilecheck).
    facts["profile_check"] = profilecheck.check(info.device_class, info.facts.get("cpu"))
    if not facts["profile_check"]["agrees"]:
        log.warning(
            "agent %s disagrees with the %s profile: %s",
            info.agent_id,
            info.device_class,
            "; ".join(facts["profile_check"]["mismatches"]),
        )
    held = [(lease.job_id, lease.lease_id) for lease in info.leases]
    taken = await state.db(state.store.register, info.agent_id, info.device_class, info.hostname, facts, held)
    if taken:
        state.waker.notify()
    lease_s = state.config.lease_s
    return Registered(
        agent_id=info.agent_id,
        lease_s=lease_s,
        heartbeat_s=max(0.2, lease_s / 3),
        emulated=who.emulated,
        released_jobs=taken,
        profile_check=facts["profile_check"],
    )


@router.post("/agents/{agent_id}/heartbeat")
async def heartbeat(
    agent_id: AgentId, who: AsAgent, state: State, body: Annotated[Heartbeat | None, Body()] = None
) -> HeldLeases:
    """Renew the leases the agent lists (and only those); the answer lists the ones it still holds."""
    as_agent(who, agent_id)
    leases = [(lease.job_id, lease.lease_id) for lease in (body.leases if body else [])]
    held = await state.db(state.store.heartbeat, agent_id, leases)
    return HeldLeases(leases=[Lease(**lease) for lease in held])


@router.post("/agents/{agent_id}/claim")
async def claim(
    agent_id: AgentId,
    device_class: Annotated[str, Query(pattern=NAME_RE)],
    who: AsAgent,
    state: State,
    request: Request,
    body: Annotated[ClaimRequest | None, Body()] = None,
) -> Any:
    """Lease the next job for `device_class`, waiting up to `wait_s` for one (long poll); 204 if none."""
    as_agent(who, agent_id, device_class)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + (body.wait_s if body else 0.0)
    first = True
    while True:
        if not first and await state.read(state.auth.resolve, bearer(request)) != who:
            raise unauthorised("this token was revoked or rotated")  # meanwhile
        first = False
        armed = state.waker.arm()
        job = await state.db(state.store.claim, agent_id, device_class)
        if job is not None:
            job["model_url"] = state.model_url(job)
            if job.get("paired_sha256"):
                job["paired_url"] = state.model_url(job, "paired")
            return JSONResponse(job)
        remaining = deadline - loop.time()
        if remaining <= 0:
            return Response(status_code=204)
        await state.waker.wait(armed, min(remaining, 1.0))


def checked_submission(sub: ResultSubmission) -> None:
    """A done result needs a result object that passes the schema check; a failed one an error."""
    from edgecompress.farm.results import ResultRejected, check_result

    if sub.status == "done":
        if sub.result is None:
            raise HTTPException(422, "a done result needs a result object")
        try:
            check_result(sub.result)
        except ResultRejected as exc:
            raise HTTPException(422, f"result rejected: {exc}") from exc
    if sub.status == "failed" and not sub.error:
        raise HTTPException(422, "a failed result needs an error message")


@router.post("/jobs/{job_id}/result")
async def result(job_id: JobId, sub: ResultSubmission, who: AsAgent, state: State) -> Any:
    as_agent(who, sub.agent_id or who.name)
    checked_submission(sub)
    try:
        out = await state.db(
            state.store.complete,
            job_id,
            who.name,
            sub.lease_id,
            sub.status == "done",
            sub.result if sub.status == "done" else None,
            sub.error,
            who.emulated,
        )
    except ResultRejected as exc:  # e.g. one model's result for a paired job
        raise HTTPException(422, f"result rejected: {exc}") from exc
    except ValueError as exc:  # NaN/Infinity in the result
        raise HTTPException(422, f"result is not valid JSON for storage: {exc}") from exc
    state.finished.notify()
    return JSONResponse(out)


@router.post("/jobs/{job_id}/release")
async def release(job_id: JobId, body: Release, who: AsAgent, state: State) -> Any:
    """The lease holder gives the job back: queued again after a backoff (or failed with the
    reason once its attempts are spent)."""
    as_agent(who, body.agent_id or who.name)
    out = await state.db(state.store.release, job_id, who.name, body.lease_id, body.reason)
    (state.waker if out["state"] == "queued" else state.finished).notify()
    return out
