"""``DedupStore``: run a handler at most once per ``message_id`` within a window."""

from __future__ import annotations

from ..._core.clock import Clock, SystemClock
from ..._core.component import Component
from ..._core.validate import check_id, check_seconds
from .base import ClaimState, DedupBackend
from .memory import MemoryDedupBackend

__all__ = ["DedupStore"]


class DedupStore(Component):
    """Remembers which message ids were handled.

    RabbitMQ delivers at least once: after a reconnect or a crashed consumer a
    message can arrive twice. A store given to
    [`MessageConsumer`][rtkit.messaging.MessageConsumer] turns that into
    exactly-once handling within ``window`` seconds:

    * ``claim(id)`` marks the id *busy* for ``lease`` seconds and answers
      ``"new"`` (go ahead), ``"busy"`` (someone is handling it right now: look
      again later) or ``"done"`` (already handled: just ack);
    * ``complete(id)`` marks it *done* for ``window`` seconds;
    * ``release(id)`` forgets it after a failure, so a retry runs the handler again.

    A consumer that dies mid-handler leaves a *busy* mark that expires after
    ``lease`` seconds; then the redelivered message is handled.

    ``DedupStore()`` keeps the marks in this process;
    ``DedupStore.from_url("redis://...", window=..., lease=...)`` in Redis, shared
    by every consumer replica (``memory://NAME`` shares them within a process).

    Args:
        backend: Where the marks are kept (default: a private memory backend).
        clock: Where time comes from for the memory backend (a
            [`ManualClock`][rtkit.ManualClock] in tests); Redis expires marks on
            its own clock.
        window: Seconds a handled id is remembered.
        lease: Seconds a claim stays *busy* if its handler never finishes.

    Raises:
        rtkit.errors.ConfigurationError: ``window`` or ``lease`` is not a positive
            number of seconds.
    """

    _backends = {
        "memory": "rtkit.messaging.dedup.memory:MemoryDedupBackend",
        "redis": "rtkit.messaging.dedup.redis:RedisDedupBackend",
    }

    def __init__(
        self,
        backend: DedupBackend | None = None,
        *,
        clock: Clock | None = None,
        window: float = 3600.0,
        lease: float = 60.0,
    ) -> None:
        self.window = check_seconds(window, "window")
        self.lease = check_seconds(lease, "lease")
        self._backend: DedupBackend = backend if backend is not None else MemoryDedupBackend()
        self._clock: Clock = clock or SystemClock()

    async def _close(self) -> None:
        await self._backend.close()

    async def claim(self, message_id: str) -> ClaimState:
        """Try to take ``message_id`` for handling: ``"new"``, ``"busy"`` or ``"done"``.

        Raises:
            rtkit.errors.ValidationError: ``message_id`` is not an id.
            rtkit.errors.Closed: The store was closed.
            rtkit.errors.BackendUnavailable: Redis did not answer in time.
        """
        if not self._live:
            await self._ready()
        key = check_id(message_id, "message_id")
        return await self._backend.claim(key, lease=self.lease, now=self._clock.monotonic())

    async def complete(self, message_id: str) -> None:
        """Record that ``message_id`` was handled (remembered for ``window`` seconds)."""
        if not self._live:
            await self._ready()
        key = check_id(message_id, "message_id")
        await self._backend.complete(key, window=self.window, now=self._clock.monotonic())

    async def release(self, message_id: str) -> None:
        """Forget a claim whose handler failed (an id already done stays done)."""
        if not self._live:
            await self._ready()
        key = check_id(message_id, "message_id")
        await self._backend.release(key)
