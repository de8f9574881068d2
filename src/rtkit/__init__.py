"""rtkit: realtime, event-bus and messaging components for asyncio.

Each component runs on an in-memory backend (tests, small apps) and on Redis or
RabbitMQ (several processes); one URL picks the backend.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._backends import DEFAULT_PREFIX
from ._backends import make_redis_client as redis_client
from ._clock import Clock, ManualClock, SystemClock
from ._ids import new_id
from ._pages import Page
from .errors import (
    AuthError,
    BackendUnavailable,
    ConfigurationError,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    RtkitError,
    ServiceNotFound,
    ValidationError,
)
from .eventbus import DeliveryFailure, Event, EventBus, EventBusStats, Subscription
from .messaging import (
    ConsumerHandle,
    DedupStore,
    Envelope,
    MemoryBroker,
    MemoryDedupStore,
    MessageConsumer,
    MessageProducer,
    RabbitMQService,
    ReceivedMessage,
    RedisDedupStore,
    RetryPolicy,
)
from .presence import Departure, OnlineUser, PresenceCount, PresenceStore
from .ratelimit import Decision, Limit, RateLimiter
from .registry import ServiceChange, ServiceInstance, ServiceRegistry
from .rooms import RoomDeparture, RoomInfo, RoomManager

if TYPE_CHECKING:  # the server extra (Starlette, httpx): imported lazily, see __getattr__
    from .gateway import ApiGateway, ResponseCache
    from .microservice import MicroService
    from .realtime import ChatClient, RealtimeServer

_LAZY = {
    "ApiGateway": "gateway",
    "ResponseCache": "gateway",
    "MicroService": "microservice",
    "ChatClient": "realtime",
    "RealtimeServer": "realtime",
}


def __getattr__(name: str) -> Any:
    """Import the names that need the ``server`` extra on first use."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__version__ = "0.1.0"

__all__ = [
    "DEFAULT_PREFIX",
    "ApiGateway",
    "AuthError",
    "BackendUnavailable",
    "ChatClient",
    "Clock",
    "ConfigurationError",
    "ConsumerHandle",
    "Decision",
    "DedupStore",
    "DeliveryFailure",
    "Departure",
    "Envelope",
    "Event",
    "EventBus",
    "EventBusStats",
    "Limit",
    "ManualClock",
    "MemoryBroker",
    "MemoryDedupStore",
    "MessageConsumer",
    "MessageProducer",
    "MicroService",
    "NotFound",
    "OnlineUser",
    "Page",
    "PayloadTooLarge",
    "PresenceCount",
    "PresenceStore",
    "RabbitMQService",
    "RateLimited",
    "RateLimiter",
    "RealtimeServer",
    "ReceivedMessage",
    "RedisDedupStore",
    "ResponseCache",
    "RetryPolicy",
    "RoomDeparture",
    "RoomInfo",
    "RoomManager",
    "RtkitError",
    "ServiceChange",
    "ServiceInstance",
    "ServiceNotFound",
    "ServiceRegistry",
    "Subscription",
    "SystemClock",
    "ValidationError",
    "__version__",
    "new_id",
    "redis_client",
]
