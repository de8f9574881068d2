"""rtkit errors as HTTP responses: one JSON shape, the right status.

Every error response body is ``{"error": {"code": "...", "message": "..."}}``;
``code`` is the stable `code`.
"""

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

from ..errors import (
    AuthError,
    BackendUnavailable,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    RtkitError,
    ServiceNotFound,
    ValidationError,
)

__all__ = ["error_response", "exception_handlers", "status_for"]

log = logging.getLogger("rtkit.microservice")

# Error codes whose status differs from their class's.
_CODE_STATUS = {"malformed_json": 400, "bad_request": 400, "forbidden": 403}

# Most specific class first.
_CLASS_STATUS: tuple[tuple[type[RtkitError], int], ...] = (
    (PayloadTooLarge, 413),
    (ValidationError, 422),
    (AuthError, 401),
    (RateLimited, 429),
    (ServiceNotFound, 503),
    (NotFound, 404),
    (BackendUnavailable, 503),
)


def status_for(error: RtkitError) -> int:
    """The HTTP status for an rtkit error.

    ``PayloadTooLarge`` 413, ``ValidationError`` 422 (400 for the codes
    ``malformed_json`` and ``bad_request``), ``AuthError`` 401 (403 for the code
    ``forbidden``), ``RateLimited`` 429, ``NotFound`` 404, ``ServiceNotFound``
    and ``BackendUnavailable`` 503 (a dependency is down), anything else 500.
    """
    if error.code in _CODE_STATUS:
        return _CODE_STATUS[error.code]
    for cls, status in _CLASS_STATUS:
        if isinstance(error, cls):
            return status
    return 500


def error_response(
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


async def _rtkit_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RtkitError)
    status = status_for(exc)
    headers = None
    if isinstance(exc, RateLimited):
        headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
    if status >= 500:
        log.warning("%s %s failed: %s: %s", request.method, request.url.path, exc.code, exc)
    return error_response(status, exc.code, exc.message, headers=headers)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    phrase = HTTPStatus(exc.status_code).phrase
    code = phrase.lower().replace(" ", "_").replace("-", "_")
    return error_response(exc.status_code, code, str(exc.detail), headers=exc.headers)


async def _pydantic_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, pydantic.ValidationError)
    details = exc.errors(include_url=False, include_context=False, include_input=False)
    return error_response(422, "invalid_payload", "the request is invalid", details=details)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("%s %s failed", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "internal server error")


def exception_handlers() -> dict[Any, Any]:
    """Starlette ``exception_handlers`` that turn errors into JSON error responses."""
    return {
        RtkitError: _rtkit_error,
        HTTPException: _http_error,
        pydantic.ValidationError: _pydantic_error,
        Exception: _unexpected,
    }
