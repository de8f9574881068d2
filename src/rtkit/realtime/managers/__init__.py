"""The Socket.IO client managers that carry a server's emits to the other servers.

``make_manager(adapter, url, ...)`` picks one by name:

* ``"socketio"``: python-socketio's ``AsyncRedisManager`` (JSON on one channel;
  rtkit instances among themselves);
* ``"node-redis"``: [`NodeRedisManager`][rtkit.realtime.managers.node_redis.NodeRedisManager],
  the protocol of Node's ``@socket.io/redis-adapter`` 8.x, so rtkit and Node
  Socket.IO servers form one cluster.
"""

from __future__ import annotations

from typing import Any

import socketio

from ..._extras import REALTIME, missing_extra
from ...errors import ConfigurationError

__all__ = ["ADAPTERS", "make_manager"]

ADAPTERS = ("socketio", "node-redis")
"""The names ``make_manager`` (and ``rtkit serve --adapter``) take."""


def make_manager(adapter: str, url: str, *, channel: str, **options: Any) -> socketio.AsyncManager:
    """The manager named ``adapter`` on the Redis at ``url``.

    ``channel`` is the ``socketio`` manager's channel; ``options`` go to the
    manager (for ``"node-redis"``: ``key``, ``room_prefix``, ``request_timeout``...).

    Raises:
        rtkit.errors.ConfigurationError: An unknown adapter, or an option it does not take.
        ImportError: ``msgpack`` (of the ``realtime`` extra) is missing for ``"node-redis"``.
    """
    if adapter == "socketio":
        if options:
            raise ConfigurationError("adapter 'socketio' takes no adapter_options")
        return socketio.AsyncRedisManager(url, channel=channel)
    if adapter == "node-redis":
        try:
            from .node_redis import NodeRedisManager
        except ImportError as exc:  # msgpack, in the realtime extra since the Node adapter
            raise missing_extra("adapter='node-redis'", REALTIME, exc) from exc

        try:
            return NodeRedisManager(url, **options)
        except TypeError as exc:  # an option NodeRedisManager does not take
            raise ConfigurationError(f"adapter 'node-redis': {exc}") from None
    raise ConfigurationError(f"unknown adapter {adapter!r}: one of {', '.join(ADAPTERS)}")
