"""Errors as JSON responses, and Starlette exception handlers that send them."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import pydantic
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from ..errors import RateLimited, RtkitError
from ._status import status_for

__all__ = ["error_response", "exception_handlers", "json_error"]

log = logging.getLogger("rtkit.http")


def json_error(
    status: int,
    code: str,
    message: str,
    *,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """A JSON error response ``{"error": {"code", "message", **extra}}``."""
    return JSONResponse(
        {"error": {"code": code, "message": message, **extra}}, status_code=status, headers=headers
    )


def error_response(error: RtkitError, *, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """``error`` as a JSON response with its status (and ``Retry-After`` when rate limited)."""
    extra = dict(headers or {})
    if isinstance(error, RateLimited):
        extra.setdefault("Retry-After", str(max(1, math.ceil(error.retry_after))))
    return JSONResponse(
        {"error": error.payload()}, status_code=status_for(error), headers=extra or None
    )


async def _rtkit_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RtkitError)
    response = error_response(exc)
    if response.status_code >= 500:
        log.warning("%s %s failed: %s: %s", request.method, request.url.path, exc.code, exc)
    return response


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    phrase = HTTPStatus(exc.status_code).phrase
    code = phrase.lower().replace(" ", "_").replace("-", "_")
    return json_error(exc.status_code, code, str(exc.detail), headers=exc.headers)


async def _pydantic_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, pydantic.ValidationError)
    details = exc.errors(include_url=False, include_context=False, include_input=False)
    return json_error(422, "invalid_payload", "the request is invalid", details=details)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("%s %s failed", request.method, request.url.path, exc_info=exc)
    return json_error(500, "internal_error", "internal server error")


def exception_handlers() -> dict[Any, Any]:
    """Starlette ``exception_handlers`` that turn errors into JSON error responses."""
    return {
        RtkitError: _rtkit_error,
        HTTPException: _http_error,
        pydantic.ValidationError: _pydantic_error,
        Exception: _unexpected,
    }
