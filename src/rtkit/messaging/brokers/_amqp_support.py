"""aio-pika plumbing for the RabbitMQ backend: errors, message properties, deliveries, acks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ...errors import BackendUnavailable, ConfigurationError, NotFound
from ._conflicts import parse_precondition
from .base import Delivery, OutgoingMessage

if TYPE_CHECKING:
    import aio_pika.abc

__all__ = [
    "AmqpDelivery",
    "NoAckDelivery",
    "RawDelivery",
    "Settler",
    "amqp_errors",
    "import_aio_pika",
]

log = logging.getLogger("rtkit.messaging")

# An ack on a connection that just died must not hang its handler's task.
SETTLE_TIMEOUT = 10.0


def import_aio_pika() -> Any:
    """The ``aio_pika`` module, or a ``ConfigurationError`` saying how to install it."""
    try:
        import aio_pika
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConfigurationError(
            "amqp:// URLs need aio-pika: pip install 'rtkit[rabbitmq]'"
        ) from exc
    return aio_pika


@contextlib.contextmanager
def amqp_errors(doing: str) -> Iterator[None]:
    """Translate aio-pika/aiormq failures into rtkit errors."""
    import aiormq.exceptions as e

    try:
        yield
    except e.ChannelNotFoundEntity as exc:
        raise NotFound(f"{doing}: {exc}") from exc
    except e.ChannelPreconditionFailed as exc:
        conflict = parse_precondition(str(exc.args[0] if exc.args else exc))
        raise (conflict or ConfigurationError(f"{doing}: {exc}")) from exc
    except e.ChannelAccessRefused as exc:
        raise ConfigurationError(f"{doing}: {exc}") from exc
    except (
        TimeoutError,
        ConnectionError,
        OSError,
        e.AMQPError,
        e.ChannelInvalidStateError,
        RuntimeError,
    ) as exc:
        raise BackendUnavailable(f"RabbitMQ is unavailable while {doing}: {exc!r}") from exc


def _timestamp(ts: Any) -> int:
    if isinstance(ts, datetime):
        return int(ts.timestamp())
    return ts if isinstance(ts, int) else 0


def _to_message(incoming: aio_pika.abc.AbstractIncomingMessage) -> OutgoingMessage:
    return OutgoingMessage(
        body=incoming.body,
        message_id=incoming.message_id or "",
        timestamp=_timestamp(incoming.timestamp),
        headers=dict(incoming.headers or {}),
        content_type=incoming.content_type,
        persistent=incoming.delivery_mode == 2,
        correlation_id=incoming.correlation_id,
        reply_to=incoming.reply_to,
    )


class AmqpDelivery(Delivery):
    """A delivery as an aio-pika message."""

    __slots__ = ("_incoming",)

    def __init__(self, incoming: aio_pika.abc.AbstractIncomingMessage) -> None:
        super().__init__(
            _to_message(incoming),
            exchange=incoming.exchange or "",
            routing_key=incoming.routing_key or "",
            redelivered=bool(incoming.redelivered),
        )
        self._incoming = incoming

    async def ack(self) -> None:
        """Acknowledge (dropped if the channel died)."""
        try:
            async with asyncio.timeout(SETTLE_TIMEOUT):
                await self._incoming.ack()
        except Exception as exc:
            log.debug("ack of %s dropped: %r", self.message.message_id, exc)

    async def nack(self, *, requeue: bool) -> None:
        """Reject (dropped if the channel died)."""
        try:
            async with asyncio.timeout(SETTLE_TIMEOUT):
                await self._incoming.nack(requeue=requeue)
        except Exception as exc:
            log.debug("nack of %s dropped: %r", self.message.message_id, exc)


class NoAckDelivery(AmqpDelivery):
    """A delivery that was auto-acknowledged (basic.get, replies)."""

    __slots__ = ()

    async def ack(self) -> None:
        """Nothing to do: the message was auto-acknowledged."""

    async def nack(self, *, requeue: bool) -> None:
        """Nothing to do: the message was auto-acknowledged."""


class Settler:
    """Sends the acks of one channel, coalescing runs of them into one multiple-ack.

    Handlers that finish in the same loop iteration cost one ``basic.ack`` frame
    with ``multiple=True`` for the contiguous run of delivery tags, plus one frame
    per tag finished out of order (so a slow handler never holds back the
    prefetch window of the others). Nacks go out at once.
    """

    def __init__(self, channel: Any) -> None:
        self.channel = channel
        self.base = 0  # every delivery tag <= base is settled
        self.finished: set[int] = set()  # acked by a handler, not yet sent, > base
        self.settled: set[int] = set()  # already sent on their own, > base
        self.target = 0  # the highest tag of the contiguous acked run, not yet sent
        self.scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    def ack(self, tag: int) -> None:
        self.finished.add(tag)
        if not self.scheduled:
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    async def nack(self, tag: int, requeue: bool) -> None:
        self.settled.add(tag)
        self._advance()
        await self.channel.basic_nack(tag, requeue=requeue)

    def _advance(self) -> None:
        while True:
            n = self.base + 1
            if n in self.finished:
                self.finished.discard(n)
                self.target = n
            elif n in self.settled:
                self.settled.discard(n)
            else:
                return
            self.base = n

    def _flush(self) -> None:
        self.scheduled = False
        self._advance()
        frames: list[tuple[int, bool]] = []
        if self.target:
            frames.append((self.target, True))
            self.target = 0
        for tag in sorted(self.finished):  # out of order: acked one by one
            frames.append((tag, False))
            self.settled.add(tag)
        self.finished.clear()
        if frames:
            task = asyncio.get_running_loop().create_task(self._send(frames))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Send every pending ack now and wait until they are written."""
        self._flush()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _send(self, frames: list[tuple[int, bool]]) -> None:
        try:
            async with asyncio.timeout(SETTLE_TIMEOUT):
                for tag, multiple in frames:
                    await self.channel.basic_ack(tag, multiple=multiple, wait=False)
        except Exception as exc:  # the channel died: the broker redelivers
            log.debug("acks dropped: %r", exc)


class RawDelivery(Delivery):
    """A delivery straight from aiormq (no aio-pika message object: less work per message)."""

    __slots__ = ("_settler", "_tag")

    def __init__(self, raw: Any, settler: Settler) -> None:
        props = raw.header.properties
        deliver = raw.delivery
        super().__init__(
            OutgoingMessage(
                body=raw.body,
                message_id=props.message_id or "",
                timestamp=_timestamp(props.timestamp),
                headers=dict(props.headers) if props.headers else {},
                content_type=props.content_type,
                persistent=props.delivery_mode == 2,
                correlation_id=props.correlation_id,
                reply_to=props.reply_to,
            ),
            exchange=deliver.exchange or "",
            routing_key=deliver.routing_key or "",
            redelivered=bool(deliver.redelivered),
        )
        self._settler = settler
        self._tag = deliver.delivery_tag

    async def ack(self) -> None:
        """Acknowledge (sent within this loop iteration; dropped if the channel died)."""
        self._settler.ack(self._tag)

    async def nack(self, *, requeue: bool) -> None:
        """Reject (dropped if the channel died)."""
        try:
            async with asyncio.timeout(SETTLE_TIMEOUT):
                await self._settler.nack(self._tag, requeue)
        except Exception as exc:
            log.debug("nack of %s dropped: %r", self.message.message_id, exc)
