"""The in-process EventBus backend: the specification the other backends follow."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Self

import pydantic_core

from ..._core.memory import shared_state
from ..._core.urls import BackendTarget
from .base import Deliver, Report, Wants

__all__ = ["MemoryEventBusBackend"]


class _Hub:
    """The buses that receive one channel's events (weak-referenceable for ``shared_state``)."""

    def __init__(self) -> None:
        self.receivers: tuple[Deliver, ...] = ()
        self.solo: Deliver | None = None
        """The one receiver, when there is exactly one (the bus's fast path reads it)."""

    def set(self, receivers: tuple[Deliver, ...]) -> None:
        self.receivers = receivers
        self.solo = receivers[0] if len(receivers) == 1 else None


class MemoryEventBusBackend:
    """Delivers each event, before ``publish`` returns, to every bus on its channel.

    The channel of ``memory://`` (and of ``EventBus()``) is the publishing bus
    alone; every bus on one ``memory://NAME`` and prefix shares one channel and
    receives each event exactly once, the publisher included, like buses on one
    Redis. The JSON-encoded data is decoded again for each bus, so handlers
    receive exactly what they would through Redis (tuples become lists, models
    become dicts).
    """

    kind = "memory"
    reconnects = 0

    def __init__(self) -> None:
        self._hub = _Hub()
        self._receiver: Deliver | None = None

    @classmethod
    def open(cls, target: BackendTarget) -> Self:
        """The backend for ``memory://`` (a channel of its own) or ``memory://NAME`` (shared)."""
        backend = cls()
        backend._hub = shared_state(target, _Hub)
        return backend

    @property
    def hub(self) -> _Hub:
        """The channel: ``hub.receivers`` are the buses on it that receive (have subscriptions)."""
        return self._hub

    async def start(
        self, deliver: Deliver, report: Report, *, receive: bool, wants: Wants | None = None
    ) -> None:
        """Nothing to connect; with ``receive``, join the channel."""
        self._receiver = deliver
        self.listen(receive)

    def listen(self, on: bool) -> None:
        """Join the channel (``on``) or leave it; at once, nothing to wait for."""
        hub, deliver = self._hub, self._receiver
        if deliver is None:
            return
        joined = deliver in hub.receivers
        if on and not joined:
            hub.set((*hub.receivers, deliver))
        elif not on and joined:
            hub.set(tuple(d for d in hub.receivers if d is not deliver))

    async def subscribed(self) -> None:
        """Nothing to wait for: joining the channel takes effect at once."""

    async def close(self) -> None:
        """Leave the channel."""
        self.listen(False)
        self._receiver = None

    def send(self, name: str, event_id: str, timestamp: float, data: bytes) -> Awaitable[None]:
        """Run every receiving bus's matching handlers (returns the coroutine that does it)."""
        receivers = self._hub.receivers
        if len(receivers) == 1:  # the common case: a bus of its own
            return receivers[0](name, event_id, timestamp, pydantic_core.from_json(data))
        return self._fan_out(receivers, name, event_id, timestamp, data)

    async def _fan_out(
        self,
        receivers: tuple[Deliver, ...],
        name: str,
        event_id: str,
        timestamp: float,
        data: bytes,
    ) -> None:
        """Deliver to each bus in turn; a bus that left meanwhile gets nothing more."""
        for deliver in receivers:
            if deliver in self._hub.receivers:
                await deliver(name, event_id, timestamp, pydantic_core.from_json(data))
