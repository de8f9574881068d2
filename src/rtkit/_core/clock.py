"""An injectable clock, so time-based behaviour is testable without sleeping."""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "ManualClock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """Where a component reads the time from.

    ``time()`` is wall-clock seconds since the epoch (used for timestamps that
    other processes read); ``monotonic()`` is for measuring intervals.
    """

    def time(self) -> float:
        """Seconds since the Unix epoch."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards."""
        ...


class SystemClock:
    """The real clock (the default everywhere)."""

    def time(self) -> float:
        """Seconds since the Unix epoch, from :func:`time.time`."""
        return time.time()

    def monotonic(self) -> float:
        """Seconds from :func:`time.monotonic`."""
        return time.monotonic()


class ManualClock:
    """A clock that moves only when told to: for tests.

    Example:
        ```python
        clock = ManualClock(start=1000.0)
        clock.advance(2.5)
        assert clock.time() == 1002.5
        ```
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = float(start)

    def time(self) -> float:
        """The current manual time."""
        return self._now

    def monotonic(self) -> float:
        """The same as :meth:`time`: manual time never goes backwards."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (must not be negative)."""
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        self._now += seconds

    def set(self, now: float) -> None:
        """Jump to ``now`` (must not be earlier than the current time)."""
        self.advance(now - self._now)
