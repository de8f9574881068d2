"""HTTP for every rtkit server: one error-to-status table, JSON errors, a body limit.

The realtime REST routes, [`MicroService`][rtkit.MicroService] and
[`ApiGateway`][rtkit.ApiGateway] all answer errors the same way:
``{"error": {"code": ..., "message": ...}}`` with the status from
[`status_for`][rtkit.http.status_for]. Needs Starlette (the ``gateway`` or
``realtime`` extra).
"""

from __future__ import annotations

from .._extras import GATEWAY, missing_extra

try:
    from ._middleware import BodyLimitMiddleware, lifespan
    from ._responses import error_response, exception_handlers, json_error
except ImportError as exc:
    raise missing_extra("rtkit.http", GATEWAY, exc) from exc
from ._status import STATUS, status_for

__all__ = [
    "STATUS",
    "BodyLimitMiddleware",
    "error_response",
    "exception_handlers",
    "json_error",
    "lifespan",
    "status_for",
]
