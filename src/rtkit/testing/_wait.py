"""Waiting with a deadline: the one way the test helpers wait for something."""

from __future__ import annotations

import asyncio
import inspect
import uuid
from collections.abc import Awaitable, Callable

__all__ = ["DEFAULT_WAIT", "Signal", "unique_name", "wait_until"]

DEFAULT_WAIT = 5.0
"""Seconds a helper waits by default before it fails the test."""


def unique_name(stem: str = "test") -> str:
    """A name no other test uses: for memory names, queues, prefixes, rooms, users.

    Example:
        ```python
        url = f"memory://{unique_name('shop')}"  # memory://shop-1f0c2a9b3d4e
        ```
    """
    return f"{stem}-{uuid.uuid4().hex[:12]}"


async def wait_until(
    check: Callable[[], bool] | Callable[[], Awaitable[bool]],
    *,
    timeout: float = DEFAULT_WAIT,
    interval: float = 0.01,
    what: str = "the condition",
) -> None:
    """Wait until ``check()`` (a function or coroutine function) is true.

    Checks at once, then every ``interval`` seconds.

    Raises:
        TimeoutError: ``check()`` was still false after ``timeout`` seconds; the
            message names ``what``.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if loop.time() >= deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)


class Signal:
    """Wakes waiters whenever something arrives: recorders call :meth:`notify`.

    Waiting on it instead of polling means a test goes on the moment what it
    waits for arrives.
    """

    def __init__(self) -> None:
        self._waiters: set[asyncio.Future[None]] = set()

    def notify(self) -> None:
        """Something arrived: every waiter looks again."""
        for future in self._waiters:
            if not future.done():
                future.set_result(None)

    async def wait_for(self, found: Callable[[], bool], *, timeout: float, what: str) -> None:
        """Wait until ``found()`` is true, looking again after each :meth:`notify`.

        Raises:
            TimeoutError: Not found within ``timeout`` seconds.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not found():
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
            future: asyncio.Future[None] = loop.create_future()
            self._waiters.add(future)
            try:
                await asyncio.wait({future}, timeout=left)
            finally:
                self._waiters.discard(future)
                future.cancel()
