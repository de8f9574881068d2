"""The life cycle every component shares, and the background task that heartbeats."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Self

from ..errors import Closed

__all__ = ["DEFAULT_CLOSE_TIMEOUT", "DEFAULT_TIMEOUT", "AsyncResource", "Janitor"]

logger = logging.getLogger("rtkit")


class AsyncResource:
    """``start()``, ``close()`` and ``async with``, the same for every component.

    * ``start()`` connects and begins background work; it is idempotent, and
      optional: the first operation starts the component.
    * ``close()`` is idempotent; afterwards every operation raises
      [`Closed`][rtkit.errors.Closed].
    * ``async with component:`` starts it and closes it on the way out.

    A component closes what it created and never what it was given (a Redis
    client, a limiter, a store). Subclasses implement ``_start`` and ``_close``;
    ``_close`` also runs for a component that never started.
    """

    _started = False
    _closed = False
    # started and not closed: the one flag an operation's fast path reads
    _live = False
    _start_lock: asyncio.Lock | None = None

    async def _start(self) -> None:
        """Hook: connect and start background work."""

    async def _close(self) -> None:
        """Hook: stop background work and release what this component created."""

    async def start(self) -> None:
        """Connect and begin background work (idempotent).

        Raises:
            rtkit.errors.Closed: The component was closed.
            rtkit.errors.BackendUnavailable: The backend did not answer in time.
        """
        self._check_open()
        if self._started:
            return
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            self._check_open()
            if not self._started:
                await self._start()
                self._started = True
                self._live = not self._closed

    async def close(self) -> None:
        """Stop background work and release what this component created (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._live = False
        await self._close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def _check_open(self) -> None:
        """Raise [`Closed`][rtkit.errors.Closed] after :meth:`close` (synchronous operations)."""
        if self._closed:
            raise Closed(f"this {type(self).__name__} is closed; make a new one")

    async def _ready(self) -> None:
        """The first step of every asynchronous operation: raise if closed, start if new.

        Call it as ``if not self._live: await self._ready()`` on a hot path.
        """
        self._check_open()
        if not self._started:
            await self.start()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class Janitor:
    """Calls ``beat`` every ``interval`` seconds in a background task.

    An error in one beat is logged and the next beat runs as usual.
    """

    def __init__(self, beat: Callable[[], Awaitable[object]], interval: float, name: str) -> None:
        self._beat = beat
        self._interval = interval
        self._name = name
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    @property
    def running(self) -> bool:
        """Whether the background task is running."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start the background task (no-op when it already runs)."""
        if not self.running:
            self._stopping = asyncio.Event()
            self._task = asyncio.create_task(self._run(), name=self._name)

    async def stop(self) -> None:
        """Stop the background task and wait for it to end.

        Besides cancelling the task, a stop flag is set: a cancellation that a
        client library swallows mid-command cannot keep the task alive.
        """
        task, self._task = self._task, None
        if task is not None:
            self._stopping.set()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self._beat()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("%s: beat failed; retrying in %.1f s", self._name, self._interval)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._interval)


DEFAULT_TIMEOUT = 5.0
"""``timeout``: the bound, in seconds, on one wait for a backend (connect, round trip,
confirm, reply). The same name and default in every component."""

DEFAULT_CLOSE_TIMEOUT = 10.0
"""``close_timeout``: seconds ``close()`` lets running handlers finish before cancelling."""
