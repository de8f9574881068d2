"""MicroService: an ASGI service base that registers itself and serves ``/health``.

Needs the ``server`` extra (``pip install rtkit[server]``: Starlette, uvicorn).
Its errors are answered by ``rtkit.http``.
"""

from __future__ import annotations

from ._service import DEFAULT_MAX_BODY, MicroService, serve

__all__ = ["DEFAULT_MAX_BODY", "MicroService", "serve"]
