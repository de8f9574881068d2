"""The RabbitMQ broker backend, on aio-pika (the ``rabbitmq`` extra).

One robust connection (named, so ``rabbitmqctl list_connections`` shows it)
reconnects on its own; its channels come back with their prefetch, the queues,
exchanges and bindings declared on them, and their consumers. Topology has one
channel, publishes another, both with publisher confirms; every consumer has
its own channel. Every wait (connecting, a topology operation, a publish and
its confirm, reconnects included) is bounded by ``timeout``, then raises
[`BackendUnavailable`][rtkit.errors.BackendUnavailable]. Acks of deliveries from
a channel that died are dropped (the broker redelivers those messages).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Self

from ..._core.ids import new_id
from ..._core.lifecycle import DEFAULT_TIMEOUT
from ..._core.urls import BackendTarget, redact
from ..._core.validate import check_seconds
from ...errors import BackendUnavailable, Closed, NotFound
from .._headers import check_wire_headers
from .._models import ExchangeKind
from ._amqp_codec import header_table, install_lenient_decoding, properties
from ._amqp_consumer import AmqpConsumer
from ._amqp_publish import encode_publish, queue_publish
from ._amqp_replies import Replier
from ._amqp_support import NoAckDelivery, amqp_errors, import_aio_pika
from .base import REPLY_TO, BrokerConsumer, Delivery, OutgoingMessage

if TYPE_CHECKING:
    import aio_pika.abc

__all__ = ["AmqpBrokerBackend"]

log = logging.getLogger("rtkit.messaging")


async def _send(
    channel: Any, exchange: str, routing_key: str, message: OutgoingMessage, mandatory: bool
) -> None:
    """Publish on aiormq ``channel`` and wait for the confirm: through the short path
    (``_amqp_publish``), or ``basic_publish`` when it gives way."""
    frame_max = channel.connection.connection_tune.frame_max
    headers = header_table(message, frame_max)
    frames = encode_publish(
        channel.number, exchange, routing_key, mandatory, message, headers, channel.max_content_size
    )
    confirmation = None if frames is None else queue_publish(channel, frames, message.message_id)
    if confirmation is not None:
        await confirmation
        return
    # wait=False: frames are batched by the writer instead of one drain per
    # message; the confirm is what we wait for.
    await channel.basic_publish(
        message.body,
        exchange=exchange,
        routing_key=routing_key,
        properties=properties(message, frame_max, headers),
        mandatory=mandatory,
        wait=False,
    )


class AmqpBrokerBackend:
    """The broker backend for RabbitMQ.

    Args:
        url: ``amqp://user:pass@host:port/vhost`` (or ``amqps://``).
        timeout: Seconds one wait may take: connecting, a topology operation, a
            publish and its confirm (a reconnect included).
        reconnect_interval: Seconds between reconnect attempts.
        connection_name: The ``connection_name`` client property, shown by
            ``rabbitmqctl list_connections`` (``rtkit-<uuid>`` by default).

    Attributes:
        reconnects: How many times the connection came back.
        verifications: How many post-reconnect checks ran.
        last_verification: The problems the last check found (empty: all well).
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        reconnect_interval: float = 1.0,
        connection_name: str | None = None,
    ) -> None:
        self.url = url
        self.timeout = check_seconds(timeout, "timeout")
        self.reconnect_interval = check_seconds(reconnect_interval, "reconnect_interval")
        self.connection_name = connection_name or f"rtkit-{new_id()}"
        self._conn: aio_pika.abc.AbstractRobustConnection | None = None
        self._channel: aio_pika.abc.AbstractRobustChannel | None = None
        self._publisher: aio_pika.abc.AbstractRobustChannel | None = None
        self._publishing: dict[Any, set[asyncio.Task[Any]]] = {}
        self._interrupted: set[asyncio.Task[Any]] = set()
        self._rpc_channel: aio_pika.abc.AbstractRobustChannel | None = None
        self._rpc_lock = asyncio.Lock()
        self._replies: dict[str, asyncio.Future[Delivery]] = {}
        self.replier = Replier(url, f"{self.connection_name}-replies", self.timeout)
        self._consumers: set[AmqpConsumer] = set()
        self._verifier: asyncio.Task[Any] | None = None
        self._closed = False
        self.reconnects = 0
        self.last_verification: list[str] = []
        self.verifications = 0

    @classmethod
    def open(
        cls,
        target: BackendTarget,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        reconnect_interval: float = 1.0,
        connection_name: str | None = None,
    ) -> Self:
        """The backend for an ``amqp://`` target (see the class for the options)."""
        return cls(
            target.url,
            timeout=timeout,
            reconnect_interval=reconnect_interval,
            connection_name=connection_name,
        )

    def _open_connection(self) -> aio_pika.abc.AbstractRobustConnection:
        if self._closed:
            raise Closed("this RabbitMQ connection is closed")
        if self._conn is None:
            raise BackendUnavailable("not connected to RabbitMQ")
        return self._conn

    async def connect(self) -> None:
        """Connect (bounded by ``timeout``)."""
        aio_pika = import_aio_pika()
        install_lenient_decoding()
        if self._closed:
            raise Closed("this RabbitMQ connection is closed")
        try:
            async with asyncio.timeout(self.timeout):
                conn = await aio_pika.connect_robust(
                    self.url,
                    client_properties={"connection_name": self.connection_name},
                    reconnect_interval=self.reconnect_interval,
                    timeout=self.timeout,
                )
        except Exception as exc:
            raise BackendUnavailable(
                f"cannot connect to RabbitMQ at {redact(self.url)}: {exc!r}"
            ) from exc
        self._conn = conn
        conn.reconnect_callbacks.add(self._on_reconnect)
        try:
            with amqp_errors("opening a channel"):
                async with asyncio.timeout(self.timeout):
                    self._channel = await conn.channel(
                        publisher_confirms=True, on_return_raises=True
                    )
                    self._publisher = await conn.channel(
                        publisher_confirms=True, on_return_raises=True
                    )
        except BaseException:
            await conn.close()
            raise

    def _on_reconnect(self, *_: Any) -> None:
        self.reconnects += 1
        log.info("reconnected to RabbitMQ (%s), verifying consumers", self.connection_name)
        self._verifier = asyncio.get_running_loop().create_task(self.verify())

    async def verify(self) -> list[str]:
        """Check that every consumer is registered again, on the client and on the broker.

        Runs after each reconnect; a consumer found missing is started again.
        Returns (and logs) the problems found, an empty list when all is well.
        """
        problems: list[str] = []
        for consumer in list(self._consumers):
            name = consumer.queue
            try:
                async with asyncio.timeout(self.timeout):
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
        """Close the connection (afterwards every operation raises ``Closed``)."""
        self._closed = True
        if self._verifier is not None:
            self._verifier.cancel()
        conn, self._conn = self._conn, None
        self._channel = self._publisher = self._rpc_channel = None
        for future in self._replies.values():
            if not future.done():
                future.set_exception(BackendUnavailable("the connection was closed"))
        await self.replier.close()
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), self.timeout)

    def _ch(self) -> aio_pika.abc.AbstractRobustChannel:
        self._open_connection()
        if self._channel is None:
            raise BackendUnavailable("not connected to RabbitMQ")
        return self._channel

    async def _topology(self, doing: str, op: Callable[[], Awaitable[Any]]) -> Any:
        import aiormq.exceptions as e

        ch = self._ch()
        with amqp_errors(doing):
            async with asyncio.timeout(self.timeout):
                while True:
                    try:
                        await ch.ready()
                        return await op()
                    except (e.ChannelInvalidStateError, e.AMQPConnectionError, ConnectionError):
                        # The channel is being restored (after a reconnect, or after
                        # the broker closed it for a failed operation): try again.
                        await asyncio.sleep(0.05)

    async def declare_queue(
        self, name: str, *, durable: bool, arguments: dict[str, Any], passive: bool = False
    ) -> None:
        """Declare a queue on the robust channel (restored after a reconnect).

        ``passive``: ``queue.declare`` passive on the channel underneath (the robust
        channel would answer from its own memory), so nothing is declared or restored.
        """
        ch = self._ch()

        async def check() -> None:
            underlay = await ch.get_underlay_channel()
            await underlay.queue_declare(name, passive=True)

        await self._topology(
            f"{'looking for' if passive else 'declaring'} queue {name!r}",
            check
            if passive
            else lambda: ch.declare_queue(name, durable=durable, arguments=arguments or None),
        )

    async def declare_exchange(
        self, name: str, kind: ExchangeKind, *, durable: bool, passive: bool = False
    ) -> None:
        """Declare an exchange on the robust channel (``passive``: only check it exists)."""
        ch = self._ch()

        async def check() -> None:
            underlay = await ch.get_underlay_channel()
            await underlay.exchange_declare(name, passive=True)

        await self._topology(
            f"{'looking for' if passive else 'declaring'} exchange {name!r}",
            check if passive else lambda: ch.declare_exchange(name, kind, durable=durable),
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

    async def publish(
        self, exchange: str, routing_key: str, message: OutgoingMessage, *, mandatory: bool
    ) -> None:
        """Publish and wait for the confirm, retrying across a reconnect.

        Headers RabbitMQ would refuse raise ``ValidationError`` first: it would
        close the connection, and every channel and consumer on it.
        """
        check_wire_headers(message.headers)
        self._open_connection()
        ch = self._publisher
        if ch is None:
            raise BackendUnavailable("not connected to RabbitMQ")
        try:
            async with asyncio.timeout(self.timeout):
                await self._publish_until_confirmed(ch, exchange, routing_key, message, mandatory)
        except TimeoutError as exc:
            raise BackendUnavailable(
                f"RabbitMQ did not confirm the message within {self.timeout} s"
            ) from exc

    async def _publish_until_confirmed(
        self,
        ch: aio_pika.abc.AbstractRobustChannel,
        exchange: str,
        routing_key: str,
        message: OutgoingMessage,
        mandatory: bool,
    ) -> None:
        import aiormq.exceptions as e

        task = asyncio.current_task()
        while True:
            try:
                channel: Any = await ch.get_underlay_channel()
                watchers = self._watch(channel, task)
                try:
                    await _send(channel, exchange, routing_key, message, mandatory)
                finally:
                    watchers.discard(task)
                return
            except e.PublishError as exc:
                raise NotFound(
                    f"no queue is bound to {exchange!r} with key {routing_key!r}"
                ) from exc
            except e.ChannelNotFoundEntity as exc:
                if f"exchange '{exchange}'" in str(exc):
                    raise NotFound(f"publishing to {exchange!r}: {exc}") from exc
                # Another publish on this channel named a missing exchange, and the
                # broker closed the channel under this one too: publish it again.
                log.debug("publish interrupted (%r), retrying", exc)
                await asyncio.sleep(0.05)
            except e.DeliveryError as exc:
                raise BackendUnavailable(f"RabbitMQ refused the message: {exc}") from exc
            except (e.AMQPError, e.ChannelInvalidStateError, ConnectionError, RuntimeError) as exc:
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

    async def reply(self, routing_key: str, message: OutgoingMessage) -> None:
        """Send a reply once, on a connection of its own (see ``_amqp_replies``)."""
        check_wire_headers(message.headers)
        self._open_connection()
        await self.replier.reply(routing_key, message)

    async def get(self, queue: str) -> Delivery | None:
        """basic.get with auto-ack."""
        ch = self._ch()

        async def op() -> Delivery | None:
            q = await ch.get_queue(queue, ensure=True)
            incoming = await q.get(no_ack=True, fail=False)
            return None if incoming is None else NoAckDelivery(incoming)

        result: Delivery | None = await self._topology(f"reading from {queue!r}", op)
        return result

    async def consume(
        self, queue: str, callback: Callable[[Delivery], Awaitable[None]], *, prefetch: int
    ) -> BrokerConsumer:
        """Open a channel with ``prefetch`` and consume ``queue`` on it."""
        conn = self._open_connection()
        channel: aio_pika.abc.AbstractRobustChannel | None = None
        try:
            with amqp_errors(f"consuming {queue!r}"):
                async with asyncio.timeout(self.timeout):
                    channel = await conn.channel(publisher_confirms=False)
                    await channel.set_qos(prefetch_count=prefetch)
                    consumer = AmqpConsumer(self._consumers, channel, queue, callback)
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
                conn = self._open_connection()
                with amqp_errors("starting direct reply-to"):
                    async with asyncio.timeout(self.timeout):
                        channel = await conn.channel(publisher_confirms=True, on_return_raises=True)
                        q = await channel.get_queue(REPLY_TO, ensure=False)
                        await q.consume(self._on_reply, no_ack=True)
                self._rpc_channel = channel
            return self._rpc_channel

    async def _on_reply(self, incoming: aio_pika.abc.AbstractIncomingMessage) -> None:
        future = self._replies.get(incoming.correlation_id or "")
        if future is not None and not future.done():
            future.set_result(NoAckDelivery(incoming))

    async def request(
        self, exchange: str, routing_key: str, message: OutgoingMessage, *, timeout: float
    ) -> Delivery:
        """Publish with ``reply_to=amq.rabbitmq.reply-to`` and wait for the reply."""
        import aiormq.exceptions as e

        check_wire_headers(message.headers)
        channel = await self._reply_channel()
        correlation_id = message.correlation_id or message.message_id
        future: asyncio.Future[Delivery] = asyncio.get_running_loop().create_future()
        self._replies[correlation_id] = future
        try:
            async with asyncio.timeout(timeout):
                try:
                    underlay = await channel.get_underlay_channel()
                    await _send(underlay, exchange, routing_key, message, True)
                except e.PublishError as exc:
                    raise NotFound(f"no queue {routing_key!r} to send the request to") from exc
                except (e.AMQPError, e.ChannelInvalidStateError, ConnectionError) as exc:
                    raise BackendUnavailable(f"sending the request failed: {exc!r}") from exc
                return await future
        except TimeoutError:
            raise BackendUnavailable(f"no reply from {routing_key!r} within {timeout} s") from None
        finally:
            self._replies.pop(correlation_id, None)
