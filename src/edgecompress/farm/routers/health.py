"""Liveness and identity: `/healthz` (no token; its own threads) and `/v1/whoami`."""

# No `from __future__ import annotations`: FastAPI reads the annotations at runtime.

from typing import Any

import anyio
from fastapi import APIRouter

from edgecompress.farm.routers.deps import AsAnyone, State
from edgecompress.farm.wire import WhoAmI

router = APIRouter()


@router.get("/healthz")
async def healthz(state: State) -> dict[str, Any]:
    await anyio.to_thread.run_sync(state.store.ping, limiter=state.health_limiter)
    return {"status": "ok"}


@router.get("/v1/whoami")
async def whoami(who: AsAnyone) -> WhoAmI:
    return WhoAmI(
        role=who.role, name=who.name, device_classes=list(who.device_classes), emulated=who.emulated
    )
