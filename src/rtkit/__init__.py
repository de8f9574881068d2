"""rtkit: realtime, event-bus and messaging components for asyncio.

Each component runs on an in-memory backend (tests, small apps) and on Redis or
RabbitMQ (several processes); one URL picks the backend::

    bus = EventBus()                                    # private, in memory
    bus = EventBus.from_url("redis://localhost:6379/0") # shared through Redis

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
from .errors import RtkitError
from .eventbus import Event, EventBus
from .messaging import DedupStore, MessageConsumer, MessageProducer, RabbitMQService, RetryPolicy
from .presence import PresenceStore
from .ratelimit import Decision, Limit, RateLimiter
from .registry import ServiceInstance, ServiceRegistry
from .rooms import RoomManager

if TYPE_CHECKING:  # the server extra (Starlette, httpx, python-socketio): imported lazily
    from .gateway import ApiGateway, ResponseCache
    from .microservice import MicroService
    from .realtime import ChatClient, RealtimeServer

_SERVER_EXTRA = {
    "ApiGateway": "gateway",
    "ResponseCache": "gateway",
    "MicroService": "microservice",
    "ChatClient": "realtime",
    "RealtimeServer": "realtime",
}


def __getattr__(name: str) -> Any:
    """Import the names that need the ``server`` extra on first use."""
    package = _SERVER_EXTRA.get(name)
    if package is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        module = importlib.import_module(f".{package}", __name__)
    except ImportError as exc:
        raise ImportError(
            f"rtkit.{name} needs the server extra ({exc}): pip install 'rtkit[server]'"
        ) from exc
    return getattr(module, name)


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
