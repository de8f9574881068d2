"""Parts of the server: its verifier and link key, when tokens expire, its channel, options."""

from __future__ import annotations

import heapq
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from .._core.clock import Clock
from .._core.redis import Keyspace, database_of
from ..errors import ConfigurationError
from ._auth import MIN_SECRET_BYTES, Identity, JWTVerifier, TokenVerifier
from ._chat_base import room_channel
from ._links import DownloadLinks, derive_key
from ._protocol import RoomUserEvent, UserPresence, iso_time, wire

__all__ = [
    "STORE_OPTIONS",
    "CrashAnnouncer",
    "ExpiryWatch",
    "choose_verifier",
    "download_links",
    "socketio_channel",
    "store_options",
]

log = logging.getLogger("rtkit.realtime")

# The stores' options RealtimeServer.from_url passes on: the retention of each.
_BY_STORE = {
    "messages": frozenset({"max_per_room", "max_age"}),
    "notifications": frozenset({"max_per_user"}),
    "uploads": frozenset({"pending_ttl", "complete_ttl", "max_records"}),
}
STORE_OPTIONS = frozenset().union(*_BY_STORE.values())


def store_options(options: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``options`` split by store (``messages``, ``notifications``, ``uploads``)."""
    return {
        store: {k: v for k, v in options.items() if k in names}
        for store, names in _BY_STORE.items()
    }


def choose_verifier(
    secret: str | None, verifier: TokenVerifier | None, demo: bool
) -> tuple[str | None, TokenVerifier]:
    """The server's secret and verifier: the given ones, or a JWT verifier on a secret."""
    if verifier is None:
        if secret is None:
            secret = secrets.token_urlsafe(MIN_SECRET_BYTES)
            log.warning(
                "RealtimeServer: no secret and no verifier given: tokens are signed with a "
                "random secret of this process (server.issue_token makes them) and die with it"
            )
        verifier = JWTVerifier(secret)
    if demo and secret is None:
        raise ConfigurationError("demo mode needs the JWT secret to issue tokens")
    if demo:
        log.warning(
            "!!! DEMO MODE: POST /api/demo/login gives a token to ANYONE for ANY name. "
            "Never expose this server to untrusted networks. !!!"
        )
    return secret, verifier


def download_links(
    download_secret: str | bytes | None, secret: str | None, ttl: float, clock: Clock | None
) -> DownloadLinks:
    """Links signed with ``download_secret``, else a key derived from ``secret``, else random."""
    given = download_secret if download_secret is not None else secret
    if given is None:
        log.warning(
            "RealtimeServer: no secret and no download_secret: download links are signed "
            "with a random key of this process and work only on this instance"
        )
    key = None if given is None else derive_key(given)
    return DownloadLinks(key, ttl=ttl, clock=clock)


def socketio_channel(prefix: str, redis: Any) -> str:
    """The pub/sub channel of the Socket.IO manager: ``<prefix>socketio:db<N>``.

    Redis pub/sub ignores the database number, so the channel names it:
    deployments on different databases of one Redis never hear each other.
    """
    return Keyspace(prefix, "socketio").channel(f"db{database_of(redis)}")


class ExpiryWatch:
    """Which connections' tokens expire when: a heap of ``(expires_at, sid)``.

    Entries of connections that are gone stay until they come due or the heap
    holds more than twice the live connections (then it is rebuilt).
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, str]] = []

    def watch(self, sid: str, who: Identity, live: Mapping[str, Identity]) -> None:
        """Remember when ``sid`` (of ``who``) expires; ``live`` is every connection now."""
        if who.expires_at is None:
            return
        if len(self._heap) > 2 * len(live) + 64:
            current = {(w.expires_at, s) for s, w in live.items() if w.expires_at is not None}
            self._heap = [entry for entry in self._heap if entry in current]
            heapq.heapify(self._heap)
        heapq.heappush(self._heap, (who.expires_at, sid))

    def due(self, now: float, live: Mapping[str, Identity]) -> list[str]:
        """The live connections whose tokens expired at or before ``now`` (each once)."""
        found: list[str] = []
        while self._heap and self._heap[0][0] <= now:
            expires_at, sid = heapq.heappop(self._heap)
            who = live.get(sid)
            if who is not None and who.expires_at == expires_at:
                found.append(sid)
        return found


Emitter = Callable[..., Awaitable[Any]]


class CrashAnnouncer:
    """The presence and room stores' event sink: announces who left with a crashed instance.

    A crashed instance's connections are purged by whichever live instance
    notices its expired lease first; that instance tells everybody: ``user:left``
    for each user who went offline (``presence.offline``), ``room:user:left`` for
    each room a user left (``rooms.left``). Departures through this instance's
    own disconnects are announced by the chat.
    """

    def __init__(self) -> None:
        self._instance_id: str | None = None
        self._emit: Emitter | None = None

    def attach(self, instance_id: str, emit: Emitter) -> None:
        """Announce through ``emit`` (the Socket.IO server's), skipping ``instance_id``'s own."""
        self._instance_id, self._emit = instance_id, emit

    async def publish(self, name: str, data: dict[str, Any], /) -> object:
        emit = self._emit
        if emit is None:
            return None
        if name == "presence.offline" and data.get("instance_id") != self._instance_id:
            user_id = str(data["user_id"])
            event = UserPresence(
                user_id=user_id,
                username=str(data.get("username") or user_id),
                time=iso_time(float(data["time"])),
            )
            await emit("user:left", wire(event))
        elif name == "rooms.left":
            room_id, user_id = str(data["room_id"]), str(data["user_id"])
            left = RoomUserEvent(user_id=user_id, username=user_id, room_id=room_id)
            await emit("room:user:left", wire(left), to=room_channel(room_id))
        return None
