"""Connection state recovery for the chat: the manager a server uses, and its holds.

While a lost connection may recover, its instance holds its user's presence and
room memberships under a *hold*, a connection id of this instance that no
client has: nobody sees the user leave and come back. The hold ends when the
connection recovers here, or when the recovery time passes (then the others
are told, unless the recovered connection, maybe on another instance, keeps
the user). A hold is an ordinary connection of its instance: when the instance
crashes, its holds go with its lease.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import socketio

from .._core.clock import Clock
from .._core.lifecycle import DEFAULT_TIMEOUT
from .._core.urls import BackendTarget
from ..errors import AuthError, ConfigurationError
from ._auth import Identity
from ._chat import ChatService, Emit, Outcome
from ._chat_base import room_channel
from ._recovery import (
    DEFAULT_MAX_PACKETS,
    MemoryRecoveryStore,
    RecoveryStore,
    RedisRecoveryStore,
    Session,
    is_recoverable,
)
from ._sessions import socketio_channel
from ._socketio_compat import RecoveringManager, RecoveringRedisManager, recovering_store
from .managers import check_adapter, make_manager

__all__ = ["Holds", "choose_adapter", "recovering_manager", "server_manager"]

log = logging.getLogger("rtkit.realtime")

_ROOM = room_channel("")  # the Socket.IO rooms of chat rooms start with this


def recovering_manager(
    manager: socketio.AsyncManager | None,
    duration: float,
    max_packets: int,
    clock: Clock | None,
) -> tuple[socketio.AsyncManager | None, RecoveryStore | None]:
    """The manager a server uses and its recovery store (None: recovery is off).

    With recovery asked and no manager given, a memory one.
    """
    if manager is None and duration:
        store = MemoryRecoveryStore(duration=duration, max_packets=max_packets, clock=clock)
        return RecoveringManager(store), store
    found = recovering_store(manager)
    if duration and found is None:
        raise ConfigurationError(
            "max_disconnection_duration needs a recovering client_manager "
            "(RealtimeServer.from_url makes one)"
        )
    return manager, found


def choose_adapter(
    target: BackendTarget, mine: Mapping[str, Any], own: Mapping[str, Any]
) -> str | None:
    """The adapter of a server on ``target`` (None: in memory), checked before anything
    is opened: recovery rides on the classic channel's one stream, the others say so."""
    if target.kind != "redis":
        if mine.get("adapter") not in (None, "socketio") or mine.get("adapter_options"):
            raise ConfigurationError(
                "RealtimeServer.from_url: an adapter needs a Redis URL "
                "(redis://, redis+sentinel://, redis+cluster://...)"
            )
        return None
    adapter = check_adapter(mine.get("adapter"), target.url, target.redis)
    if own.get("max_disconnection_duration") and adapter != "socketio":
        raise ConfigurationError(
            "RealtimeServer.from_url: connection state recovery "
            "(max_disconnection_duration) works in memory and with adapter='socketio' "
            f"(one Redis or Sentinel), not yet with adapter={adapter!r}"
        )
    return adapter


def server_manager(
    adapter: str,
    target: BackendTarget,
    redis: Any,
    mine: Mapping[str, Any],
    own: Mapping[str, Any],
) -> socketio.AsyncManager:
    """The manager of a server on Redis: ``adapter``'s, a recovering one when ``own``
    turns recovery on (``adapter`` is then ``"socketio"``)."""
    timeout = mine.get("timeout", DEFAULT_TIMEOUT)
    duration = own.get("max_disconnection_duration")
    if not duration:
        options = dict(mine.get("adapter_options") or {})
        return make_manager(
            adapter, target.url, redis=redis, prefix=target.prefix, timeout=timeout, **options
        )
    store = RedisRecoveryStore(
        redis,
        prefix=target.prefix,
        duration=duration,
        max_packets=own.get("max_recovery_packets", DEFAULT_MAX_PACKETS),
        clock=target.clock,
        timeout=timeout,
    )
    channel = socketio_channel(target.prefix, redis)
    return RecoveringRedisManager(target.url, channel=channel, store=store)


def chat_rooms(rooms: set[str] | list[str]) -> list[str]:
    """The chat room ids among Socket.IO rooms, sorted."""
    return sorted(room[len(_ROOM) :] for room in rooms if room.startswith(_ROOM))


@dataclass(frozen=True)
class _Hold:
    who: Identity
    hold: str
    until: float


class Holds:
    """The chat's arrivals and departures, with the holds of this instance's lost
    connections (by their sid) when recovery is on (``recovery`` is not None).

    ``send`` carries out the emits of a hold that ends.
    """

    def __init__(
        self,
        chat: ChatService,
        recovery: RecoveryStore | None,
        send: Callable[[list[Emit]], Awaitable[None]],
    ) -> None:
        self.chat = chat
        self.duration = None if recovery is None else recovery.duration
        self._send = send
        self._holds: dict[str, _Hold] = {}

    async def connect(self, who: Identity, sid: str, restored: Session | None) -> Outcome:
        """Connection ``sid`` arrived, new or having recovered ``restored`` (kept here or
        on another instance; then its hold here, if any, ends without a word).

        Raises:
            rtkit.errors.AuthError: The session is another user's.
        """
        if restored is None:
            return await self.chat.connect(who, sid)
        if restored.data.get("user") != who.user_id:
            raise AuthError("this session belongs to another user")
        outcome = await self.chat.resume(who, sid, chat_rooms(restored.rooms))
        await self.release(sid)
        return outcome

    async def disconnect(
        self, who: Identity, sid: str, entered: set[str], reason: Any
    ) -> list[Emit]:
        """Connection ``sid`` (in the Socket.IO rooms ``entered``) went away for ``reason``;
        a lost one that may recover holds its user's presence and rooms."""
        if self.duration is None or not is_recoverable(reason):
            return await self.chat.disconnect(who, sid)
        hold = f"{sid}~held~{secrets.token_hex(4)}"
        self._holds[sid] = _Hold(who, hold, self.chat.clock.time() + self.duration)
        return await self.chat.park(who, sid, hold, chat_rooms(entered))

    async def release(self, sid: str) -> None:
        """End the hold of ``sid``, if this instance has one; tell the others what changed
        (nothing when the recovered connection holds the user)."""
        held = self._holds.pop(sid, None)
        if held is None:
            return
        try:
            await self._send(await self.chat.disconnect(held.who, held.hold))
        except Exception:
            log.exception("could not end the hold of %s", sid)

    async def release_due(self) -> int:
        """End the holds whose recovery time passed; return how many."""
        now = self.chat.clock.time()
        due = [sid for sid, held in self._holds.items() if held.until <= now]
        for sid in due:
            await self.release(sid)
        return len(due)
