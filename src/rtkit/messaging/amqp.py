"""The RabbitMQ backend, on aio-pika (the ``rabbitmq`` extra).

One robust connection (named, so ``rabbitmqctl list_connections`` shows it)
reconnects on its own; its channels come back with their prefetch, the queues,
exchanges and bindings declared on them, and their consumers. Topology and
publishes share one channel with publisher confirms; every consumer has its
own channel. Publishes retry across a reconnect until ``publish_timeout``,
then raise :class:`~rtkit.BackendUnavailable`. Acks of deliveries from a
channel that died are dropped (the broker redelivers those messages).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .._backends import _redact
from ..errors import BackendUnavailable, ConfigurationError, NotFound
from .base import REPLY_TO, Delivery, ExchangeKind, OutgoingMessage

if TYPE_CHECKING:
    import aio_pika
    import aio_pika.abc

__all__ = ["AmqpConnection"]

log = logging.getLogger("rtkit.messaging")

# An ack on a connection that just died must not hang its handler's task.
_SETTLE_TIMEOUT = 10.0


def _import_aio_pika() -> Any:
    try:
        import aio_pika
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConfigurationError(
            "amqp:// URLs need aio-pika: pip install 'rtkit[rabbitmq]'"
        ) from exc
    return aio_pika


@contextlib.contextmanager
def _amqp_errors(doing: str) -> Iterator[None]:
    """Translate aio-pika/aiormq failures into rtkit errors."""
    import aiormq.exceptions as e

    try:
        yield
    except e.ChannelNotFoundEntity as exc:
        raise NotFound(f"{doing}: {exc}") from exc
    except e.ChannelPreconditionFailed as exc:
        raise ConfigurationError(f"{doing}: {exc}") from exc
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


def _to_message(incoming: aio_pika.abc.AbstractIncomingMessage) -> OutgoingMessage:
    ts = incoming.timestamp
    headers = dict(incoming.headers or {})
    return OutgoingMessage(
        body=incoming.body,
        message_id=incoming.message_id or "",
        timestamp=int(ts.timestamp()) if isinstance(ts, datetime) else int(ts or 0),
        headers=headers,
        content_type=incoming.content_type,
        persistent=incoming.delivery_mode == 2,
        correlation_id=incoming.correlation_id,
        reply_to=incoming.reply_to,
    )


class _AmqpDelivery(Delivery):
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
            async with asyncio.timeout(_SETTLE_TIMEOUT):
                await self._incoming.ack()
        except Exception as exc:
            log.debug("ack of %s dropped: %r", self.message.message_id, exc)

    async def nack(self, *, requeue: bool) -> None:
        """Reject (dropped if the channel died)."""
        try:
            async with asyncio.timeout(_SETTLE_TIMEOUT):
                await self._incoming.nack(requeue=requeue)
        except Exception as exc:
            log.debug("nack of %s dropped: %r", self.message.message_id, exc)


class _NoAckDelivery(_AmqpDelivery):
    __slots__ = ()

    async def ack(self) -> None:
        """Nothing to do: the message was auto-acknowledged."""

    async def nack(self, *, requeue: bool) -> None:
        """Nothing to do: the message was auto-acknowledged."""


class _Settler:
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
            async with asyncio.timeout(_SETTLE_TIMEOUT):
                for tag, multiple in frames:
                    await self.channel.basic_ack(tag, multiple=multiple, wait=False)
        except Exception as exc:  # the channel died: the broker redelivers
            log.debug("acks dropped: %r", exc)


class _RawDelivery(Delivery):
    """A delivery straight from aiormq (no aio-pika message object: less work per message)."""

    __slots__ = ("_settler", "_tag")

    def __init__(self, raw: Any, settler: _Settler) -> None:
        props = raw.header.properties
        deliver = raw.delivery
        ts = props.timestamp
        super().__init__(
            OutgoingMessage(
                body=raw.body,
                message_id=props.message_id or "",
                timestamp=int(ts.timestamp()) if isinstance(ts, datetime) else int(ts or 0),
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
            async with asyncio.timeout(_SETTLE_TIMEOUT):
                await self._settler.nack(self._tag, requeue)
        except Exception as exc:
            log.debug("nack of %s dropped: %r", self.message.message_id, exc)


class _AmqpConsumer:
    """One consumer on its own robust channel.

    The robust channel comes back by itself (after a reconnect, or after the
    broker closed it) with its prefetch; each time, this consumer registers
    itself on it again (``reopen_callbacks``), and :meth:`AmqpConnection.verify`
    checks that it did.
    """

    def __init__(
        self,
        owner: AmqpConnection,
        channel: aio_pika.abc.AbstractRobustChannel,
        queue: str,
        callback: Callable[[Delivery], Awaitable[None]],
    ) -> None:
        self.owner = owner
        self.channel = channel
        self.queue = queue
        self.callback = callback
        self.tag: str | None = None
        self.stopped = False
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._settler: _Settler | None = None

    async def _on_raw(self, raw: Any) -> None:
        settler = self._settler
        if settler is None or settler.channel is not raw.channel:
            settler = self._settler = _Settler(raw.channel)  # a new channel incarnation
        await self.callback(_RawDelivery(raw, settler))

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

    async def consuming(self) -> bool:
        """True if the current channel really has this consumer registered."""
        if self.tag is None or self.channel.is_closed:
            return False
        underlay: Any = await self.channel.get_underlay_channel()
        return self.tag in underlay.consumers

    async def cancel(self) -> None:
        """basic.cancel: stop new deliveries."""
        self.stopped = True
        self.owner._consumers.discard(self)
        if self.tag is not None:
            tag, self.tag = self.tag, None
            with contextlib.suppress(Exception):
                underlay: Any = await self.channel.get_underlay_channel()
                await underlay.basic_cancel(tag)

    async def close(self) -> None:
        """Send pending acks, then close the channel (the broker requeues the rest)."""
        self.stopped = True
        self.owner._consumers.discard(self)
        if self._settler is not None:
            await self._settler.drain()
        with contextlib.suppress(Exception):
            await self.channel.close()


class AmqpConnection:
    """The :class:`~rtkit.messaging.BrokerConnection` for RabbitMQ.

    Args:
        url: ``amqp://user:pass@host:port/vhost``.
        connection_name: The ``connection_name`` client property.
        connect_timeout: Seconds before the first connection attempt gives up.
        publish_timeout: Seconds a publish may take, reconnect included.
        reconnect_interval: Seconds between reconnect attempts.
        publisher_channels: Channels (with confirms) that publishes rotate over; kept
            apart from the topology channel, so a failed publish never disturbs it.
    """

    def __init__(
        self,
        url: str,
        *,
        connection_name: str,
        connect_timeout: float = 5.0,
        publish_timeout: float = 5.0,
        reconnect_interval: float = 1.0,
        publisher_channels: int = 1,
    ) -> None:
        self.url = url
        self.publisher_channels = max(1, publisher_channels)
        self._publishers: list[aio_pika.abc.AbstractRobustChannel] = []
        self._next_publisher = 0
        self._publishing: dict[Any, set[asyncio.Task[Any]]] = {}
        self._interrupted: set[asyncio.Task[Any]] = set()
        self.connection_name = connection_name
        self.connect_timeout = connect_timeout
        self.publish_timeout = publish_timeout
        self.reconnect_interval = reconnect_interval
        self._conn: aio_pika.abc.AbstractRobustConnection | None = None
        self._channel: aio_pika.abc.AbstractRobustChannel | None = None
        self._rpc_channel: aio_pika.abc.AbstractRobustChannel | None = None
        self._rpc_lock = asyncio.Lock()
        self._replies: dict[str, asyncio.Future[Delivery]] = {}
        self._consumers: set[_AmqpConsumer] = set()
        self._verifier: asyncio.Task[None] | None = None
        self.reconnects = 0
        self.last_verification: list[str] = []
        self.verifications = 0

    async def connect(self) -> None:
        """Connect (bounded by ``connect_timeout``)."""
        aio_pika = _import_aio_pika()
        try:
            async with asyncio.timeout(self.connect_timeout):
                conn = await aio_pika.connect_robust(
                    self.url,
                    client_properties={"connection_name": self.connection_name},
                    reconnect_interval=self.reconnect_interval,
                    timeout=self.connect_timeout,
                )
        except Exception as exc:
            raise BackendUnavailable(
                f"cannot connect to RabbitMQ at {_redact(self.url)}: {exc!r}"
            ) from exc
        self._conn = conn
        conn.reconnect_callbacks.add(self._on_reconnect)
        try:
            with _amqp_errors("opening a channel"):
                async with asyncio.timeout(self.connect_timeout):
                    self._channel = await conn.channel(
                        publisher_confirms=True, on_return_raises=True
                    )
                    self._publishers = [
                        await conn.channel(publisher_confirms=True, on_return_raises=True)
                        for _ in range(self.publisher_channels)
                    ]
        except BaseException:
            await conn.close()
            raise

    def _on_reconnect(self, *_: Any) -> None:
        self.reconnects += 1
        log.info("reconnected to RabbitMQ (%s), verifying consumers", self.connection_name)
        self._verifier = asyncio.get_running_loop().create_task(self._verify_in_background())

    async def _verify_in_background(self) -> None:
        await self.verify()

    async def verify(self) -> list[str]:
        """Check that every consumer is registered again, on the client and on the broker.

        Runs after each reconnect; a consumer found missing is started again.
        Returns (and logs) the problems found, an empty list when all is well.
        """
        problems: list[str] = []
        for consumer in list(self._consumers):
            name = consumer.queue
            try:
                async with asyncio.timeout(self.connect_timeout):
                    await consumer.channel.ready()
                    if await consumer.start():
                        problems.append(f"consumer of {name!r} was missing: restarted")
                    underlay = await consumer.channel.get_underlay_channel()
                    declared = await underlay.queue_declare(name, passive=True)
                    if (declared.consumer_count or 0) < 1:
                        problems.append(f"RabbitMQ reports no consumer on {name!r}")
            except Exception as exc:
                problems.append(f"could not verify the consumer of {name!r}: {exc!r}")
        for problem in problems:
            log.error("after reconnecting: %s", problem)
        self.last_verification = problems
        self.verifications += 1
        return problems

    async def close(self) -> None:
        """Close the connection."""
        if self._verifier is not None:
            self._verifier.cancel()
        conn, self._conn = self._conn, None
        for future in self._replies.values():
            if not future.done():
                future.set_exception(BackendUnavailable("the connection was closed"))
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), self.connect_timeout)

    def _ch(self) -> aio_pika.abc.AbstractRobustChannel:
        if self._channel is None:
            raise BackendUnavailable("not connected to RabbitMQ")
        return self._channel

    async def _topology(self, doing: str, op: Callable[[], Awaitable[Any]]) -> Any:
        import aiormq.exceptions as e

        ch = self._ch()
        with _amqp_errors(doing):
            async with asyncio.timeout(self.publish_timeout):
                while True:
                    try:
                        await ch.ready()
                        return await op()
                    except (e.ChannelInvalidStateError, e.AMQPConnectionError, ConnectionError):
                        # The channel is being restored (after a reconnect, or after
                        # the broker closed it for a failed operation): try again.
                        await asyncio.sleep(0.05)

    async def declare_queue(self, name: str, *, durable: bool, arguments: dict[str, Any]) -> None:
        """Declare a queue on the robust channel (restored after a reconnect)."""
        ch = self._ch()
        await self._topology(
            f"declaring queue {name!r}",
            lambda: ch.declare_queue(name, durable=durable, arguments=arguments or None),
        )

    async def declare_exchange(self, name: str, kind: ExchangeKind, *, durable: bool) -> None:
        """Declare an exchange on the robust channel."""
        ch = self._ch()
        await self._topology(
            f"declaring exchange {name!r}",
            lambda: ch.declare_exchange(name, kind, durable=durable),
        )

    async def bind(self, queue: str, exchange: str, routing_key: str) -> None:
        """Bind (remembered by the robust queue, so restored after a reconnect)."""
        ch = self._ch()

        async def op() -> None:
            q = await ch.get_queue(queue, ensure=True)
            await q.bind(exchange, routing_key)

        await self._topology(f"binding {queue!r} to {exchange!r}", op)

    async def delete_queue(self, name: str) -> None:
        """Delete a queue."""
        ch = self._ch()
        await self._topology(f"deleting queue {name!r}", lambda: ch.queue_delete(name))

    async def delete_exchange(self, name: str) -> None:
        """Delete an exchange."""
        ch = self._ch()
        await self._topology(f"deleting exchange {name!r}", lambda: ch.exchange_delete(name))

    def _properties(self, message: OutgoingMessage) -> Any:
        from pamqp.commands import Basic

        return Basic.Properties(
            content_type=message.content_type,
            delivery_mode=2 if message.persistent else 1,
            message_id=message.message_id,
            timestamp=datetime.fromtimestamp(message.timestamp, tz=UTC),
            headers=message.headers or None,
            correlation_id=message.correlation_id,
            reply_to=message.reply_to,
        )

    async def publish(
        self, exchange: str, routing_key: str, message: OutgoingMessage, *, mandatory: bool
    ) -> None:
        """Publish and wait for the confirm, retrying across a reconnect."""
        import aiormq.exceptions as e

        if not self._publishers:
            raise BackendUnavailable("not connected to RabbitMQ")
        self._next_publisher = (self._next_publisher + 1) % len(self._publishers)
        ch = self._publishers[self._next_publisher]
        props = self._properties(message)
        task = asyncio.current_task()
        try:
            async with asyncio.timeout(self.publish_timeout):
                while True:
                    try:
                        channel: Any = await ch.get_underlay_channel()
                        watchers = self._watch(channel, task)
                        try:
                            # wait=False: frames are batched by the writer instead of one
                            # drain per message; the confirm is what we wait for.
                            await channel.basic_publish(
                                message.body,
                                exchange=exchange,
                                routing_key=routing_key,
                                properties=props,
                                mandatory=mandatory,
                                wait=False,
                            )
                        finally:
                            watchers.discard(task)
                        return
                    except e.PublishError as exc:
                        raise NotFound(
                            f"no queue is bound to {exchange!r} with key {routing_key!r}"
                        ) from exc
                    except e.ChannelNotFoundEntity as exc:
                        raise NotFound(f"publishing to {exchange!r}: {exc}") from exc
                    except e.DeliveryError as exc:
                        raise BackendUnavailable(f"RabbitMQ refused the message: {exc}") from exc
                    except (
                        e.AMQPError,
                        e.ChannelInvalidStateError,
                        ConnectionError,
                        RuntimeError,
                    ) as exc:
                        # The connection or channel died: wait for the robust
                        # connection to come back and publish again.
                        log.debug("publish interrupted (%r), retrying", exc)
                        await asyncio.sleep(0.05)
                    except asyncio.CancelledError:
                        if task is None or task not in self._interrupted:
                            raise
                        # _interrupt() woke us: the channel died under this publish.
                        self._interrupted.discard(task)
                        if task.uncancel() > 0:  # cancelled by someone else too (the deadline)
                            raise
                        await asyncio.sleep(0.05)
        except TimeoutError as exc:
            raise BackendUnavailable(
                f"RabbitMQ did not confirm the message within {self.publish_timeout} s"
            ) from exc

    def _watch(self, channel: Any, task: asyncio.Task[Any] | None) -> set[asyncio.Task[Any]]:
        """Remember that ``task`` publishes on ``channel``, to wake it if the channel dies.

        A publish can otherwise wait forever to enqueue its frames on a dead
        connection's full write queue.
        """
        tasks = self._publishing.get(channel)
        if tasks is None:
            tasks = self._publishing[channel] = set()
            channel.closing.add_done_callback(lambda _: self._interrupt(channel))
        if task is not None:
            tasks.add(task)
        return tasks

    def _interrupt(self, channel: Any) -> None:
        for task in self._publishing.pop(channel, set()):
            if not task.done():
                self._interrupted.add(task)
                task.cancel()

    async def get(self, queue: str) -> Delivery | None:
        """basic.get with auto-ack."""
        ch = self._ch()

        async def op() -> Delivery | None:
            q = await ch.get_queue(queue, ensure=True)
            incoming = await q.get(no_ack=True, fail=False)
            return None if incoming is None else _NoAckDelivery(incoming)

        result: Delivery | None = await self._topology(f"reading from {queue!r}", op)
        return result

    async def consume(
        self, queue: str, callback: Callable[[Delivery], Awaitable[None]], *, prefetch: int
    ) -> _AmqpConsumer:
        """Open a channel with ``prefetch`` and consume ``queue`` on it."""
        conn = self._conn
        if conn is None:
            raise BackendUnavailable("not connected to RabbitMQ")

        channel: aio_pika.abc.AbstractRobustChannel | None = None
        try:
            with _amqp_errors(f"consuming {queue!r}"):
                async with asyncio.timeout(self.connect_timeout):
                    channel = await conn.channel(publisher_confirms=False)
                    await channel.set_qos(prefetch_count=prefetch)
                    consumer = _AmqpConsumer(self, channel, queue, callback)
                    await consumer.start()
        except BaseException:
            if channel is not None:
                with contextlib.suppress(Exception):
                    await channel.close()
            raise
        consumer.watch()
        self._consumers.add(consumer)
        return consumer

    async def _reply_channel(self) -> aio_pika.abc.AbstractRobustChannel:
        async with self._rpc_lock:
            if self._rpc_channel is None:
                conn = self._conn
                if conn is None:
                    raise BackendUnavailable("not connected to RabbitMQ")
                with _amqp_errors("starting direct reply-to"):
                    async with asyncio.timeout(self.connect_timeout):
                        channel = await conn.channel(publisher_confirms=True, on_return_raises=True)
                        q = await channel.get_queue(REPLY_TO, ensure=False)
                        await q.consume(self._on_reply, no_ack=True)
                self._rpc_channel = channel
            return self._rpc_channel

    async def _on_reply(self, incoming: aio_pika.abc.AbstractIncomingMessage) -> None:
        future = self._replies.get(incoming.correlation_id or "")
        if future is not None and not future.done():
            future.set_result(_NoAckDelivery(incoming))

    async def request(
        self, exchange: str, routing_key: str, message: OutgoingMessage, *, timeout: float
    ) -> Delivery:
        """Publish with ``reply_to=amq.rabbitmq.reply-to`` and wait for the reply."""
        import aiormq.exceptions as e

        channel = await self._reply_channel()
        correlation_id = message.correlation_id or message.message_id
        future: asyncio.Future[Delivery] = asyncio.get_running_loop().create_future()
        self._replies[correlation_id] = future
        try:
            async with asyncio.timeout(timeout):
                try:
                    underlay = await channel.get_underlay_channel()
                    await underlay.basic_publish(
                        message.body,
                        exchange=exchange,
                        routing_key=routing_key,
                        properties=self._properties(message),
                        mandatory=True,
                    )
                except e.PublishError as exc:
                    raise NotFound(f"no queue {routing_key!r} to send the request to") from exc
                except (e.AMQPError, e.ChannelInvalidStateError, ConnectionError) as exc:
                    raise BackendUnavailable(f"sending the request failed: {exc!r}") from exc
                return await future
        except TimeoutError:
            raise BackendUnavailable(f"no reply from {routing_key!r} within {timeout} s") from None
        finally:
            self._replies.pop(correlation_id, None)
