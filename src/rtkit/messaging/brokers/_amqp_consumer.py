"""One RabbitMQ consumer on its own robust channel, registered again after each reopen."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ._amqp_support import RawDelivery, Settler
from .base import Delivery

if TYPE_CHECKING:
    import aio_pika.abc

__all__ = ["AmqpConsumer"]

log = logging.getLogger("rtkit.messaging")


class AmqpConsumer:
    """One consumer on its own robust channel.

    The robust channel comes back by itself (after a reconnect, or after the
    broker closed it) with its prefetch; each time, this consumer registers
    itself on it again (``reopen_callbacks``), and the backend's ``verify()``
    checks that it did. ``registry`` is the backend's set of live consumers;
    this consumer leaves it when it stops.
    """

    def __init__(
        self,
        registry: set[AmqpConsumer],
        channel: aio_pika.abc.AbstractRobustChannel,
        queue: str,
        callback: Callable[[Delivery], Awaitable[None]],
    ) -> None:
        self.registry = registry
        self.channel = channel
        self.queue = queue
        self.callback = callback
        self.tag: str | None = None
        self.stopped = False
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._settler: Settler | None = None

    async def _on_raw(self, raw: Any) -> None:
        settler = self._settler
        if settler is None or settler.channel is not raw.channel:
            settler = self._settler = Settler(raw.channel)  # a new channel incarnation
        await self.callback(RawDelivery(raw, settler))

    async def start(self) -> bool:
        """basic.consume on the channel's current incarnation; False if already there."""
        async with self._lock:
            if self.stopped:
                return False
            underlay: Any = await self.channel.get_underlay_channel()
            if self.tag is not None and self.tag in underlay.consumers:
                return False
            ok = await underlay.basic_consume(self.queue, self._on_raw, no_ack=False)
            self.tag = ok.consumer_tag
            return True

    def watch(self) -> None:
        """Register again whenever the robust channel reopens."""
        self.channel.reopen_callbacks.add(self._on_reopen)

    def _on_reopen(self, *_: Any) -> None:
        if self.stopped:
            return
        task = asyncio.get_running_loop().create_task(self._restart())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _restart(self) -> None:
        import aiormq.exceptions as e

        try:
            await self.start()
        except e.ChannelNotFoundEntity:
            # The queue is gone: retrying would close and reopen the channel forever.
            self.stopped = True
            log.error("the queue %r no longer exists: its consumer stopped", self.queue)
        except Exception as exc:
            log.error("could not restart the consumer of %r: %r", self.queue, exc)

    async def cancel(self) -> None:
        """basic.cancel: stop new deliveries."""
        self.stopped = True
        self.registry.discard(self)
        if self.tag is not None:
            tag, self.tag = self.tag, None
            with contextlib.suppress(Exception):
                underlay: Any = await self.channel.get_underlay_channel()
                await underlay.basic_cancel(tag)

    async def close(self) -> None:
        """Send pending acks, then close the channel (the broker requeues the rest)."""
        self.stopped = True
        self.registry.discard(self)
        if self._settler is not None:
            await self._settler.drain()
        with contextlib.suppress(Exception):
            await self.channel.close()
