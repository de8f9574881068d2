"""MicroService: an ASGI service base that registers itself and serves ``/health``.

Needs the ``gateway`` extra (``pip install 'rtkit[gateway]'``: Starlette, uvicorn).
Its errors are answered by ``rtkit.http``.
"""

from __future__ import annotations

from .._extras import GATEWAY, missing_extra

try:
    from ._service import DEFAULT_MAX_BODY, MicroService, serve
except ImportError as exc:
    raise missing_extra("rtkit.microservice", GATEWAY, exc) from exc

__all__ = ["DEFAULT_MAX_BODY", "MicroService", "serve"]
