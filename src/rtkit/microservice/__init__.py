"""MicroService: an ASGI service base that registers itself and serves ``/health``.

Needs the ``server`` extra (``pip install rtkit[server]``: Starlette, uvicorn).
"""

from __future__ import annotations

from .base import DEFAULT_MAX_BODY, MicroService, serve
from .errors import error_response, exception_handlers, status_for

__all__ = [
    "DEFAULT_MAX_BODY",
    "MicroService",
    "error_response",
    "exception_handlers",
    "serve",
    "status_for",
]
