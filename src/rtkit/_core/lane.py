"""A publishing lane: one dedicated Redis connection, group commit.

One awaited send is one round trip; while it is in flight, further sends on the
same connection queue up and go together, in order, in one pipeline. The Redis
EventBus publishes its events on lanes, the recovery store keeps its packets on one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from ..errors import BackendUnavailable, RtkitError
from .wire import DedicatedConnection

__all__ = ["PublishLane"]


class PublishLane:
    """One publishing connection and the sends queued for it (group commit).

    Args:
        connection: The lane's connection.
        failed: Called when a round trip fails or Redis refuses a command (a cluster's
            slot map or a Sentinel's master may have changed).
        what: What a command carries, for the error message ("an event").
    """

    def __init__(
        self, connection: DedicatedConnection, failed: Callable[[], None], what: str
    ) -> None:
        self.connection = connection
        self._failed = failed
        self._what = what
        self._busy = False
        self._queue: list[tuple[bytes, asyncio.Future[None]]] = []
        self._drainer: asyncio.Task[None] | None = None

    async def send(self, command: bytes) -> None:
        """Send one pre-packed command (one reply); queued behind a round trip in flight.

        Raises:
            rtkit.errors.BackendUnavailable: The round trip failed, or Redis refused
                the command.
        """
        if self._busy:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._queue.append((command, future))
            await future
            return
        self._busy = True
        try:
            replies = await self._call(command, 1)
            if isinstance(replies[0], Exception):
                raise self._refused(replies[0])
        finally:
            if self._queue:
                self._drainer = asyncio.create_task(self._drain())
            else:
                self._busy = False

    async def _call(self, command: bytes, count: int) -> list[Any]:
        try:
            return await self.connection.call(command, count)
        except BackendUnavailable:
            self._failed()
            raise

    def _refused(self, reply: Exception) -> BackendUnavailable:
        self._failed()  # MOVED, CLUSTERDOWN...: the slot map changed
        return BackendUnavailable(f"Redis refused {self._what}: {reply}")

    async def _drain(self) -> None:
        """Send everything queued meanwhile, one pipeline per round trip, in order."""
        try:
            while True:
                if not self._queue:
                    # The publishers just answered often publish again at once: let
                    # them queue up, so that their events share the next round trip.
                    await asyncio.sleep(0)
                    if not self._queue:
                        break
                batch, self._queue = self._queue, []
                try:
                    replies = await self._call(b"".join(c for c, _ in batch), len(batch))
                except BaseException as exc:
                    error = exc if isinstance(exc, RtkitError) else BackendUnavailable(str(exc))
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    if not isinstance(exc, Exception):
                        raise
                else:
                    for (_, future), reply in zip(batch, replies, strict=True):
                        if future.done():
                            continue
                        if isinstance(reply, Exception):
                            future.set_exception(self._refused(reply))
                        else:
                            future.set_result(None)
        finally:
            self._busy = False
            self._drainer = None

    async def finish(self) -> None:
        """Wait for the queued sends."""
        if self._drainer is not None:
            with contextlib.suppress(Exception):
                await self._drainer
