"""The python-socketio managers that carry emits between instances, chosen by ``adapter=``.

* ``"socketio"``: python-socketio's ``AsyncRedisManager``, one classic channel
  ``<prefix>socketio:db<N>`` that every instance reads (the default on one Redis
  and on Sentinel; not on a cluster);
* ``"sharded"``: :class:`~rtkit.realtime.managers.sharded.ShardedRedisManager`,
  a shard channel per room that only the instances with members in it read
  (the default on ``redis+cluster://``; it works on one Redis 7 too).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import socketio

from ..._core.redis import is_cluster
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

ADAPTERS = ("socketio", "sharded")
"""The values of ``adapter=`` (and ``rtkit serve --adapter``)."""


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
        raise ConfigurationError(
            f"unknown Socket.IO adapter {adapter!r} (choose one of {', '.join(ADAPTERS)})"
        )
    default = default_adapter(url, redis)
    chosen = adapter or default
    if chosen == "socketio" and default == "sharded":
        raise ConfigurationError(
            "the 'socketio' adapter reads one classic channel of one Redis: "
            "on a Redis Cluster use adapter='sharded' (the default there)"
        )
    return chosen


def make_manager(
    adapter: str | None, *, url: str, redis: Any, prefix: str, timeout: float
) -> socketio.AsyncManager:
    """The manager for ``adapter`` (``None``: the URL's default) on ``url``.

    ``redis`` is the server's shared client: the sharded manager publishes with it
    (and opens its own subscription connections); the classic one makes its own.

    Raises:
        rtkit.errors.ConfigurationError: An unknown adapter, or ``"socketio"`` on a cluster.
    """
    if check_adapter(adapter, url, redis) == "sharded":
        return ShardedRedisManager(redis, prefix=prefix, timeout=timeout)
    return ClassicRedisManager(url, channel=socketio_channel(prefix, redis))
