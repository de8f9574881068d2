"""ApiGateway: proxy to discovered services with rate limiting and a GET response cache.

[`ApiGateway`][rtkit.gateway.ApiGateway] and [`Route`][rtkit.gateway.Route] need
the ``server`` extra (``pip install rtkit[server]``: Starlette, httpx, uvicorn) and
are imported on first use; [`ResponseCache`][rtkit.gateway.ResponseCache] and
[`CachedResponse`][rtkit.gateway.CachedResponse] do not need it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._cache import CachedResponse, ResponseCache

if TYPE_CHECKING:
    from ._gateway import ApiGateway
    from ._proxy import Route, client_ip

__all__ = ["ApiGateway", "CachedResponse", "ResponseCache", "Route", "client_ip"]


def __getattr__(name: str) -> Any:
    """Import the names that need the ``server`` extra on first use."""
    if name == "ApiGateway":
        from ._gateway import ApiGateway

        return ApiGateway
    if name in ("Route", "client_ip"):
        from . import _proxy

        return getattr(_proxy, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
