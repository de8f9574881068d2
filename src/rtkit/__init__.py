"""rtkit: realtime, event-bus and messaging components for asyncio.

Each component runs on an in-memory backend (tests, small apps) and on Redis or
RabbitMQ (several processes); one URL picks the backend:

```python
bus = EventBus()                                    # private, in memory
bus = EventBus.from_url("redis://localhost:6379/0") # shared through Redis
```

Every component has the same shape: ``Component(backend=None, **options)``,
``Component.from_url(url, *, prefix=None, redis=None, clock=None, **options)``,
``start()`` / ``close()`` / ``async with``. Errors live in `rtkit.errors`, what a
backend author needs in `rtkit.backends`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._core.clock import Clock, ManualClock, SystemClock
from ._core.pages import Page
from ._core.redis import make_redis_client as redis_client
from ._extras import GATEWAY, REALTIME, missing_extra
from .errors import RtkitError
from .eventbus import Event, EventBus
from .messaging import DedupStore, MessageConsumer, MessageProducer, RabbitMQService, RetryPolicy
from .presence import PresenceStore
from .ratelimit import Decision, Limit, RateLimiter
from .registry import ServiceInstance, ServiceRegistry
from .rooms import RoomManager

if TYPE_CHECKING:  # the gateway and realtime extras: imported lazily
    from .gateway import ApiGateway, ResponseCache
    from .microservice import MicroService
    from .realtime import ChatClient, RealtimeServer

# name -> (the package it lives in, the extra it needs)
_LAZY = {
    "ApiGateway": ("gateway", GATEWAY),
    "ResponseCache": ("gateway", GATEWAY),
    "MicroService": ("microservice", GATEWAY),
    "ChatClient": ("realtime", REALTIME),
    "RealtimeServer": ("realtime", REALTIME),
}


def __getattr__(name: str) -> Any:
    """Import the names that need the ``gateway`` or ``realtime`` extra on first use."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    package, extra = _LAZY[name]
    try:
        return getattr(importlib.import_module(f".{package}", __name__), name)
    except ImportError as exc:
        raise missing_extra(f"rtkit.{name}", extra, exc) from exc


__version__ = "0.2.0.dev0"

__all__ = [
    "ApiGateway",
    "ChatClient",
    "Clock",
    "Decision",
    "DedupStore",
    "Event",
    "EventBus",
    "Limit",
    "ManualClock",
    "MessageConsumer",
    "MessageProducer",
    "MicroService",
    "Page",
    "PresenceStore",
    "RabbitMQService",
    "RateLimiter",
    "RealtimeServer",
    "ResponseCache",
    "RetryPolicy",
    "RoomManager",
    "RtkitError",
    "ServiceInstance",
    "ServiceRegistry",
    "SystemClock",
    "__version__",
    "redis_client",
]
