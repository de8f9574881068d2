"""ApiGateway: proxy to discovered services with rate limiting and a GET response cache.

Needs the ``server`` extra (``pip install rtkit[server]``: Starlette, httpx, uvicorn).
"""

from __future__ import annotations

from .base import HOP_BY_HOP, ApiGateway, Route, client_ip, strip_hop_by_hop
from .cache import CachedResponse, ResponseCache, parse_cache_control

__all__ = [
    "HOP_BY_HOP",
    "ApiGateway",
    "CachedResponse",
    "ResponseCache",
    "Route",
    "client_ip",
    "parse_cache_control",
    "strip_hop_by_hop",
]
