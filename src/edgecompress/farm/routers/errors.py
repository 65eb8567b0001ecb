"""The controller's error answers: store and identity errors as 404/409/4xx, and 422/400 bodies that
say what was wrong without echoing input JSON cannot carry."""

# No `from __future__ import annotations`: FastAPI reads the annotations at runtime.

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from edgecompress.farm.identity import IdentityError
from edgecompress.farm.store import Conflict, NotFound

FASTAPI_PARSE_ERROR = "There was an error parsing the body"


def parse_failure(cause: BaseException) -> str:
    """Why a request body could not be parsed as JSON, for the 400 answer."""
    if isinstance(cause, RecursionError):
        return (
            "the JSON body is nested too deeply to parse (keep it to a few levels, as the API's bodies are)"
        )
    if isinstance(cause, UnicodeDecodeError):
        return f"the JSON body is not valid UTF-8 ({cause.reason} at byte {cause.start})"
    if isinstance(cause, ValueError) and "integer string conversion" in str(cause):
        return (
            f"the JSON body holds an integer too long to parse ({cause}); no field of this API takes "
            "a number of more than a few digits"
        )
    return f"the JSON body cannot be parsed ({type(cause).__name__}: {str(cause)[:200]})"


async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
    """422 with the errors, minus the echoed input: it can hold NaN/Infinity, which JSON cannot
    carry (FastAPI's default handler then fails with a 500; found by tests/farm/test_fuzz.py)."""
    errors = [{k: str(v) if k == "ctx" else v for k, v in e.items() if k != "input"} for e in exc.errors()]
    return JSONResponse({"detail": errors}, status_code=422)


async def http_error(request: Request, exc: StarletteHTTPException) -> Any:
    """FastAPI answers a body its JSON parser gave up on with a bare "There was an error parsing
    the body"; say why (an integer past Python's digit limit, nesting past its recursion limit)."""
    if exc.status_code == 400 and exc.__cause__ is not None and exc.detail == FASTAPI_PARSE_ERROR:
        return JSONResponse({"detail": parse_failure(exc.__cause__)}, status_code=400)
    return await http_exception_handler(request, exc)


async def not_found(_: Request, exc: NotFound) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=404)


async def conflict(_: Request, exc: Conflict) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=409)


async def identity_error(_: Request, exc: IdentityError) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=exc.status)


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(NotFound, not_found)
    app.add_exception_handler(Conflict, conflict)
    app.add_exception_handler(IdentityError, identity_error)
