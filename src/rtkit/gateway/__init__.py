"""ApiGateway: proxy to discovered services with rate limiting and a GET response cache.

[`ApiGateway`][rtkit.gateway.ApiGateway] and [`Route`][rtkit.gateway.Route] need
the ``gateway`` extra (``pip install 'rtkit[gateway]'``: Starlette, httpx, uvicorn) and
are imported on first use; [`ResponseCache`][rtkit.gateway.ResponseCache] and
[`CachedResponse`][rtkit.gateway.CachedResponse] do not need it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .._extras import GATEWAY, missing_extra
from ._cache import CachedResponse, ResponseCache

if TYPE_CHECKING:
    from ._gateway import ApiGateway
    from ._proxy import Route, client_ip

__all__ = ["ApiGateway", "CachedResponse", "ResponseCache", "Route", "client_ip"]


_LAZY = {"ApiGateway": "._gateway", "Route": "._proxy", "client_ip": "._proxy"}


def __getattr__(name: str) -> Any:
    """Import the names that need the ``gateway`` extra on first use."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    except ImportError as exc:
        raise missing_extra(f"rtkit.gateway.{name}", GATEWAY, exc) from exc
