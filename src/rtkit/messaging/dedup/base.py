"""The dedup backend protocol: marks on message ids that expire.

A mark is *busy* (a handler has the id) or *done* (it was handled); it expires
after the time it was set for. [`DedupStore`][rtkit.messaging.DedupStore]
decides the times; a backend only keeps the marks, atomically per id.
"""

from __future__ import annotations

from typing import Literal, Protocol, TypeAlias

__all__ = ["ClaimState", "DedupBackend"]

ClaimState: TypeAlias = Literal["new", "busy", "done"]
"""The answer of ``DedupStore.claim``: go ahead, look again later, or already handled."""


class DedupBackend(Protocol):
    """Keeps the busy/done marks of message ids.

    ``now`` is the component's clock reading (monotonic seconds); a backend with
    a clock of its own (Redis expires keys itself) ignores it.
    """

    async def claim(self, key: str, *, lease: float, now: float) -> ClaimState:
        """Mark ``key`` busy for ``lease`` seconds unless it has a live mark; say which."""
        ...

    async def complete(self, key: str, *, window: float, now: float) -> None:
        """Mark ``key`` done for ``window`` seconds."""
        ...

    async def release(self, key: str) -> None:
        """Remove a busy mark on ``key`` (a done mark stays)."""
        ...

    async def close(self) -> None:
        """Release the backend's connections."""
        ...
