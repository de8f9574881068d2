"""The python-socketio managers that carry emits between instances, chosen by ``adapter=``.

* ``"socketio"``: python-socketio's ``AsyncRedisManager``, one classic channel
  ``<prefix>socketio:db<N>`` that every instance reads (the default on one Redis
  and on Sentinel);
* ``"sharded"``: :class:`~rtkit.realtime.managers.sharded.ShardedRedisManager`,
  a shard channel per room that only the instances with members in it read
  (the default on ``redis+cluster://``; it works on one Redis 7 too).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import socketio

from ...errors import ConfigurationError
from .._sessions import socketio_channel
from .classic import ClassicRedisManager
from .sharded import ShardedRedisManager

__all__ = [
    "ADAPTERS",
    "ClassicRedisManager",
    "ShardedRedisManager",
    "default_adapter",
    "make_manager",
]

ADAPTERS = ("socketio", "sharded")
"""The values of ``adapter=`` (and ``rtkit serve --adapter``)."""


def default_adapter(url: str) -> str:
    """``"sharded"`` on a Redis Cluster URL, ``"socketio"`` on any other Redis URL."""
    return "sharded" if urlsplit(url).scheme.lower().endswith("+cluster") else "socketio"


def check_adapter(adapter: str | None) -> None:
    """Raise ``ConfigurationError`` unless ``adapter`` is ``None`` or one of :data:`ADAPTERS`."""
    if adapter is not None and adapter not in ADAPTERS:
        raise ConfigurationError(
            f"unknown Socket.IO adapter {adapter!r} (choose one of {', '.join(ADAPTERS)})"
        )


def make_manager(
    adapter: str | None, *, url: str, redis: Any, prefix: str, timeout: float
) -> socketio.AsyncManager:
    """The manager for ``adapter`` (``None``: the URL's default) on ``url``.

    ``redis`` is the server's shared client: the sharded manager publishes with it
    (and opens its own subscription connections); the classic one makes its own.

    Raises:
        rtkit.errors.ConfigurationError: An unknown adapter.
    """
    check_adapter(adapter)
    chosen = adapter or default_adapter(url)
    if chosen == "sharded":
        return ShardedRedisManager(redis, prefix=prefix, timeout=timeout)
    return ClassicRedisManager(url, channel=socketio_channel(prefix, redis))
