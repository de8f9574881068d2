"""The in-process EventBus backend: the specification the other backends follow."""

from __future__ import annotations

from collections.abc import Awaitable

import pydantic_core

from .base import Deliver, Report

__all__ = ["MemoryTransport"]


class MemoryTransport:
    """Delivers each event to the publishing bus itself, before ``publish`` returns.

    The JSON-encoded data is decoded again, so handlers receive exactly what
    they would receive through Redis (tuples become lists, models become dicts).
    """

    kind = "memory"
    reconnects = 0

    def __init__(self) -> None:
        self._deliver: Deliver | None = None

    async def start(self, deliver: Deliver, report: Report, *, receive: bool) -> None:
        """Remember where events go; nothing to connect."""
        self._deliver = deliver if receive else None

    async def close(self) -> None:
        """Stop delivering."""
        self._deliver = None

    def send(self, name: str, event_id: str, timestamp: float, data: bytes) -> Awaitable[None]:
        """Run the bus's matching handlers now (returns the coroutine that does it)."""
        if self._deliver is None:
            return _nothing()
        return self._deliver(name, event_id, timestamp, pydantic_core.from_json(data))


async def _nothing() -> None:
    """Nothing to deliver (a publish-only bus)."""
