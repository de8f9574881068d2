"""What a backend author needs, in one place.

A component takes a backend object (``EventBus(backend)``) or opens one from a
URL (``EventBus.from_url(url)``). A backend implements its component's protocol
below and a class method ``open(target, **options)`` that makes it for a
[`BackendTarget`][rtkit.backends.BackendTarget]; ``**options`` are the
keyword-only arguments it names, taken from ``from_url``'s options. Each
protocol module imports nothing concrete; the memory backend of each component
is its executable specification, and one contract suite runs on every backend.

To add a scheme (say ``mydb://``) for a kind of backend, call
[`register_scheme`][rtkit.backends.register_scheme].
"""

from __future__ import annotations

from ._core.lifecycle import DEFAULT_CLOSE_TIMEOUT, DEFAULT_TIMEOUT
from ._core.memory import shared_state
from ._core.redis import Keyspace, RedisHandle, load_lua, redis_unavailable
from ._core.topic import TopicPattern, topic_matches
from ._core.urls import DEFAULT_PREFIX, BackendTarget, redact, register_scheme
from .eventbus.backends.base import Deliver, EventBusBackend, Report
from .gateway.cache.base import CacheBackend
from .messaging.brokers.base import BrokerBackend, BrokerConsumer, Delivery, OutgoingMessage
from .messaging.dedup.base import DedupBackend
from .presence.backends.base import PresenceBackend
from .ratelimit.backends.base import RateLimitBackend
from .realtime.stores.backends.base import (
    FileStore,
    MessageStoreBackend,
    NotificationStoreBackend,
    UploadRegistryBackend,
)
from .registry.backends.base import ChangeWaiter, RegistryBackend
from .rooms.backends.base import RoomsBackend

__all__ = [
    "DEFAULT_CLOSE_TIMEOUT",
    "DEFAULT_PREFIX",
    "DEFAULT_TIMEOUT",
    "BackendTarget",
    "BrokerBackend",
    "BrokerConsumer",
    "CacheBackend",
    "ChangeWaiter",
    "DedupBackend",
    "Deliver",
    "Delivery",
    "EventBusBackend",
    "FileStore",
    "Keyspace",
    "MessageStoreBackend",
    "NotificationStoreBackend",
    "OutgoingMessage",
    "PresenceBackend",
    "RateLimitBackend",
    "RedisHandle",
    "RegistryBackend",
    "Report",
    "RoomsBackend",
    "TopicPattern",
    "UploadRegistryBackend",
    "load_lua",
    "redact",
    "redis_unavailable",
    "register_scheme",
    "shared_state",
    "topic_matches",
]
