"""The Socket.IO client managers that carry a server's emits to the other servers.

``make_manager(adapter, url, ...)`` picks one by name (``adapter=`` of
``RealtimeServer.from_url``, ``rtkit serve --adapter``):

* ``"socketio"``: python-socketio's ``AsyncRedisManager``, one classic channel
  ``<prefix>socketio:db<N>`` that every instance reads (the default on one Redis
  and on Sentinel; not on a cluster);
* ``"sharded"``: [`ShardedRedisManager`][rtkit.realtime.managers.sharded.ShardedRedisManager],
  a shard channel per room that only the instances with members in it read
  (the default on ``redis+cluster://``; it works on one Redis 7 too);
* ``"node-redis"``: [`NodeRedisManager`][rtkit.realtime.managers.node_redis.NodeRedisManager],
  the protocol of Node's ``@socket.io/redis-adapter`` 8.x, so rtkit and Node
  Socket.IO servers form one cluster.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import socketio

from ..._core.lifecycle import DEFAULT_TIMEOUT
from ..._core.redis import is_cluster
from ..._extras import REALTIME, missing_extra
from ...errors import ConfigurationError
from .._sessions import socketio_channel
from .classic import ClassicRedisManager
from .sharded import ShardedRedisManager

__all__ = [
    "ADAPTERS",
    "ClassicRedisManager",
    "ShardedRedisManager",
    "check_adapter",
    "default_adapter",
    "make_manager",
]

ADAPTERS = ("socketio", "sharded", "node-redis")
"""The names ``make_manager`` (and ``rtkit serve --adapter``) take."""


def default_adapter(url: str, redis: Any = None) -> str:
    """``"sharded"`` on a Redis Cluster (its URL, or a ``RedisCluster`` given), else
    ``"socketio"``."""
    cluster = urlsplit(url).scheme.lower().endswith("+cluster") or is_cluster(redis)
    return "sharded" if cluster else "socketio"


def check_adapter(adapter: str | None, url: str, redis: Any = None) -> str:
    """The adapter to use on ``url`` or the client ``redis`` (``None``: the default).

    Raises:
        rtkit.errors.ConfigurationError: An unknown adapter, or ``"socketio"`` on a cluster.
    """
    if adapter is not None and adapter not in ADAPTERS:
        raise ConfigurationError(f"unknown adapter {adapter!r}: one of {', '.join(ADAPTERS)}")
    default = default_adapter(url, redis)
    chosen = adapter or default
    if chosen == "socketio" and default == "sharded":
        raise ConfigurationError(
            "the 'socketio' adapter reads one classic channel of one Redis: "
            "on a Redis Cluster use adapter='sharded' (the default there)"
        )
    return chosen


def make_manager(
    adapter: str | None,
    url: str,
    *,
    channel: str | None = None,
    redis: Any = None,
    prefix: str = "",
    timeout: float = DEFAULT_TIMEOUT,
    **options: Any,
) -> socketio.AsyncManager:
    """The manager named ``adapter`` (``None``: the default for ``url``) on the Redis at ``url``.

    ``redis`` is the server's shared client: the sharded manager publishes with it
    (and opens its own subscription connections); the others make their own.
    ``channel`` is the ``socketio`` manager's channel (default:
    ``<prefix>socketio:db<N>``); ``options`` go to the manager (for
    ``"node-redis"``: ``key``, ``room_prefix``, ``request_timeout``...; for
    ``"sharded"``: ``ping_interval``, ``ping_timeout``).

    Raises:
        rtkit.errors.ConfigurationError: An unknown adapter, ``"socketio"`` on a cluster,
            or an option the manager does not take.
        ImportError: ``msgpack`` (of the ``realtime`` extra) is missing for ``"node-redis"``.
    """
    chosen = check_adapter(adapter, url, redis)
    if chosen == "socketio":
        if options:
            raise ConfigurationError("adapter 'socketio' takes no adapter_options")
        return ClassicRedisManager(url, channel=channel or socketio_channel(prefix, redis))
    if chosen == "sharded":
        if redis is None:
            raise ConfigurationError("adapter 'sharded' needs the server's Redis client")
        try:
            return ShardedRedisManager(redis, prefix=prefix, timeout=timeout, **options)
        except TypeError as exc:  # an option ShardedRedisManager does not take
            raise ConfigurationError(f"adapter 'sharded': {exc}") from None
    try:
        from .node_redis import NodeRedisManager
    except ImportError as exc:  # msgpack, in the realtime extra since the Node adapter
        raise missing_extra("adapter='node-redis'", REALTIME, exc) from exc
    try:
        return NodeRedisManager(url, **options)
    except TypeError as exc:  # an option NodeRedisManager does not take
        raise ConfigurationError(f"adapter 'node-redis': {exc}") from None
