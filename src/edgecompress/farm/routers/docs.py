"""`/openapi.json` and `/docs`: served only with `docs=True`, and then behind a token."""

# No `from __future__ import annotations`: FastAPI reads the annotations at runtime.

from typing import Any

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import JSONResponse

from edgecompress.farm.routers.deps import role

router = APIRouter(include_in_schema=False, dependencies=[role("admin", "client", "agent")])


@router.get("/openapi.json")
async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/docs")
async def docs() -> Any:
    return get_swagger_ui_html(openapi_url="/openapi.json", title="edgecompress device farm")
