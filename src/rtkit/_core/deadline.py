"""A bound on each round trip of a dedicated connection, for the price of a clock read.

``asyncio.timeout`` arms and cancels a timer (a heap push, a cancel, a context
manager) for every round trip; on a hot path that is a tenth of the client's work.
A :class:`Deadline` keeps one timer per connection: ``begin()`` only records when
the round trip in flight is due; the timer, when it fires early (it was armed for
an earlier round trip), re-arms itself for the one in flight, and when nothing is
in flight it stops. A round trip that overruns has its connection closed by
``expire``: the pending read fails at once, and :meth:`Deadline.error` turns that
failure into [`BackendUnavailable`][rtkit.errors.BackendUnavailable] saying why.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import redis.exceptions as redis_errors

from ..errors import BackendUnavailable

__all__ = ["Deadline"]

_UNAVAILABLE = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    ConnectionError,
    TimeoutError,
    OSError,
)


class Deadline:
    """Bounds each round trip by ``timeout`` seconds; calls ``expire()`` when one overruns.

    Args:
        timeout: Seconds a round trip may take.
        doing: What the round trips do, for the error message ("publishing an event").
        expire: Closes the connection (synchronously, or by starting a task), so
            that the pending read fails.
    """

    def __init__(self, timeout: float, doing: str, expire: Callable[[], object]) -> None:
        self._timeout = timeout
        self._doing = doing
        self._expire = expire
        self._due: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._now: Callable[[], float] = self._bind
        self.expired = False
        """Whether the last round trip overran (and its connection was closed)."""

    def begin(self) -> None:
        """A round trip starts now (one at a time)."""
        self._due = due = self._now() + self._timeout
        self.expired = False
        if self._timer is None:
            self._timer = self._loop.call_at(due, self._fire)  # type: ignore[union-attr]

    def _bind(self) -> float:
        """The first ``begin``: read the loop's time from now on, and return it."""
        loop = self._loop = asyncio.get_running_loop()
        # asyncio's loop.time() is time.monotonic() behind a Python call: skip the call
        base = type(loop).time is asyncio.BaseEventLoop.time
        self._now = time.monotonic if base else loop.time
        return self._now()

    def end(self) -> None:
        """The round trip ended (answered or failed)."""
        self._due = None

    def cancel(self) -> None:
        """Stop the timer (the connection is being closed for good)."""
        self._due = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self) -> None:
        self._timer = None
        due = self._due
        loop = self._loop
        if due is None or loop is None:
            return  # idle: the next begin() arms a new timer
        if loop.time() < due:
            self._timer = loop.call_at(due, self._fire)
            return
        self.expired = True
        self._due = None
        self._expire()

    def error(self, exc: BaseException) -> BaseException:
        """What a failed round trip raises: ``BackendUnavailable`` for I/O failures and overruns."""
        if self.expired:
            return BackendUnavailable(
                f"Redis did not answer within {self._timeout:g} s while {self._doing}"
            )
        if isinstance(exc, _UNAVAILABLE):
            return BackendUnavailable(f"Redis is unavailable while {self._doing}: {exc}")
        return exc
