"""python-socketio's ``AsyncRedisManager`` (one classic channel), able to follow Sentinel.

python-socketio reads Sentinel URLs as ``redis+sentinel://hosts/<db>/<service>``;
rtkit's (those of ``limits``) are ``redis+sentinel://hosts/<service>[/<db>]``.
On such a URL the manager's client is made by rtkit
(bytes replies, as python-socketio expects; no read time-out on its
subscription, which waits for messages as long as it takes).
"""

from __future__ import annotations

from urllib.parse import urlsplit

import socketio

from ..._core.redis import make_redis_client
from .._engineio_direct import DirectEmit

__all__ = ["ClassicRedisManager"]


class ClassicRedisManager(socketio.AsyncRedisManager, DirectEmit):  # type: ignore[misc]
    """``AsyncRedisManager`` on every URL rtkit takes (see the module docs); what it
    delivers here goes out as :class:`DirectEmit` sends it."""

    def _redis_connect(self) -> None:
        if "+" not in urlsplit(self.redis_url).scheme:
            super()._redis_connect()
            return
        self.redis = make_redis_client(self.redis_url, decode_responses=False, socket_timeout=None)
        self.pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        self.connected = True
