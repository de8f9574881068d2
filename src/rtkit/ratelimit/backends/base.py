"""What a [`RateLimiter`][rtkit.ratelimit.RateLimiter] needs of its backend.

A backend keeps the state of every (key, limit) pair and decides hits with the
algorithms of the specification (``gcra``, ``window``, ``counter``), in whole
microseconds. Each decision covers every limit of one hit at once: the hit is
recorded under all of them, or (if one denies it, or when only peeking) under
none. A backend that cannot reach its store raises
[`BackendUnavailable`][rtkit.errors.BackendUnavailable]; the limiter's failure
policy answers then.

Time: a backend reads the clock it was opened with (``target.clock``); the
Redis backend uses the Redis server's ``TIME`` unless that clock is not the
system clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from .._limits import Limit, Outcome

__all__ = ["RateLimitBackend"]


class RateLimitBackend(Protocol):
    """Where a rate limiter keeps its counts (memory, Redis, ...)."""

    async def decide(
        self, key: str, limits: Sequence[Limit], cost: int, count: bool
    ) -> list[Outcome]:
        """Decide a hit of ``cost`` on every limit; record it if ``count`` and all allow it.

        Returns one outcome per limit, in the order of ``limits``.
        """
        ...

    async def reset(self, key: str, limits: Sequence[Limit]) -> None:
        """Forget the state of ``key`` under ``limits``."""
        ...

    async def start(self) -> None:
        """Prepare (connect, load scripts); called once, by the limiter's ``start``."""
        ...

    async def close(self) -> None:
        """Release the backend's connections (a borrowed Redis client stays open)."""
        ...
