"""``MessageStore``: the latest history entries of every room."""

from __future__ import annotations

from collections.abc import Collection
from typing import ClassVar, overload

from ..._core.clock import Clock, SystemClock
from ..._core.component import Component
from ..._core.validate import check_id, check_int
from ...errors import ValidationError
from .._protocol import HISTORY_KINDS, MAX_HISTORY, ChatMessage, HistoryEntry, HistoryKind
from .backends.base import MessageStoreBackend
from .backends.memory import MemoryMessageStoreBackend

__all__ = ["MessageStore"]

_MESSAGES = frozenset({"message"})
_MESSAGES_ONLY: tuple[HistoryKind, ...] = ("message",)


def _kinds(kinds: Collection[str]) -> frozenset[str]:
    wanted = frozenset(kinds) if not isinstance(kinds, str) else frozenset()
    if not wanted or not wanted <= set(HISTORY_KINDS):
        raise ValidationError(
            f"kinds must be a non-empty collection of {', '.join(HISTORY_KINDS)}; got {kinds!r:.80}"
        )
    return wanted


class MessageStore(Component):
    """Keeps the latest entries of every room's history: the chat's history.

    A room's history holds its chat messages
    ([`ChatMessage`][rtkit.realtime.ChatMessage]), file shares
    ([`FileShared`][rtkit.realtime.FileShared]), joins and leaves
    ([`RoomActivity`][rtkit.realtime.RoomActivity]); each has a ``kind``
    (``"message"``, ``"file"``, ``"join"``, ``"leave"``) and a time-sortable ``id``.

    ``MessageStore()`` keeps them in this process;
    ``MessageStore.from_url("redis://...")`` keeps one Redis Stream per room,
    shared by every server instance. Both keep history by length and by age:
    the latest ``max_per_room`` entries of a room (1000, every kind together;
    Redis trims approximately, so about as many) and none older than ``max_age``
    seconds (30 days; on Redis a room's stream also expires ``max_age`` after
    its last entry). ``from_url`` takes these backend options and, on Redis,
    ``timeout``.

    Args:
        backend: Where entries are kept (default: a private memory backend).
        clock: Where the time of each append and read comes from (default: the system clock).
    """

    _backends: ClassVar = {
        "memory": "rtkit.realtime.stores.backends.memory:MemoryMessageStoreBackend",
        "redis": "rtkit.realtime.stores.backends.redis:RedisMessageStoreBackend",
    }

    def __init__(
        self, backend: MessageStoreBackend | None = None, *, clock: Clock | None = None
    ) -> None:
        self._backend = backend if backend is not None else MemoryMessageStoreBackend()
        self._clock: Clock = clock or SystemClock()

    async def _close(self) -> None:
        await self._backend.close()

    async def append(self, entry: HistoryEntry) -> None:
        """Save ``entry`` (a message, file share, join or leave) in the history of its room."""
        if not self._live:
            await self._ready()
        check_id(entry.room_id, "room_id")
        await self._backend.append(entry, self._clock.time())

    @overload
    async def history(
        self, room_id: str, *, before: str | None = None, limit: int = 50
    ) -> list[ChatMessage]: ...

    @overload
    async def history(
        self,
        room_id: str,
        *,
        before: str | None = None,
        limit: int = 50,
        kinds: Collection[HistoryKind],
    ) -> list[HistoryEntry]: ...

    async def history(
        self,
        room_id: str,
        *,
        before: str | None = None,
        limit: int = 50,
        kinds: Collection[HistoryKind] = _MESSAGES_ONLY,
    ) -> list[HistoryEntry] | list[ChatMessage]:
        """The latest ``limit`` entries of ``kinds`` in ``room_id`` older than entry id ``before``.

        ``kinds`` defaults to chat messages only. Oldest first; entries past the
        retention are not returned. Ids are UUIDv7 strings, so "older" is
        string order.

        Raises:
            rtkit.errors.ValidationError: A bad room id, ``before`` or kind, or a
                ``limit`` outside 1-200.
        """
        if not self._live:
            await self._ready()
        check_id(room_id, "room_id")
        if before is not None:
            check_id(before, "before")
        check_int(limit, "limit", maximum=MAX_HISTORY, error=ValidationError)
        wanted = _MESSAGES if kinds is _MESSAGES_ONLY else _kinds(kinds)
        return await self._backend.history(room_id, before, limit, self._clock.time(), wanted)
