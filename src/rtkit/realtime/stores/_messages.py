"""``MessageStore``: the latest chat messages of every room."""

from __future__ import annotations

from typing import ClassVar

from ..._core.clock import Clock, SystemClock
from ..._core.component import Component
from ..._core.validate import check_id, check_int
from ...errors import ValidationError
from .._protocol import MAX_HISTORY, ChatMessage
from .backends.base import MessageStoreBackend
from .backends.memory import MemoryMessageStoreBackend

__all__ = ["MessageStore"]


class MessageStore(Component):
    """Keeps the latest messages of every room: the chat's history.

    ``MessageStore()`` keeps them in this process;
    ``MessageStore.from_url("redis://...")`` keeps one Redis Stream per room,
    shared by every server instance. Both keep history by length and by age:
    the latest ``max_per_room`` messages of a room (1000; Redis trims
    approximately, so about as many) and none older than ``max_age`` seconds
    (30 days; on Redis a room's stream also expires ``max_age`` after its last
    message). ``from_url`` takes these backend options and, on Redis, ``timeout``.

    Args:
        backend: Where messages are kept (default: a private memory backend).
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

    async def append(self, message: ChatMessage) -> None:
        """Save ``message`` in the history of its room."""
        if not self._live:
            await self._ready()
        check_id(message.room_id, "room_id")
        await self._backend.append(message, self._clock.time())

    async def history(
        self, room_id: str, *, before: str | None = None, limit: int = 50
    ) -> list[ChatMessage]:
        """The latest ``limit`` messages of ``room_id`` older than message id ``before``.

        Oldest first; messages past the retention are not returned. Message ids
        are UUIDv7 strings, so "older" is string order.

        Raises:
            rtkit.errors.ValidationError: A bad room id or ``before``, or a
                ``limit`` outside 1-200.
        """
        if not self._live:
            await self._ready()
        check_id(room_id, "room_id")
        if before is not None:
            check_id(before, "before")
        check_int(limit, "limit", maximum=MAX_HISTORY, error=ValidationError)
        return await self._backend.history(room_id, before, limit, self._clock.time())
