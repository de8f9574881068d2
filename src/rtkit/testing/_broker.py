"""A message broker for one test: the in-memory broker, with ways to look inside."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from ..messaging import (
    ConsumerHandle,
    Envelope,
    MemoryBroker,
    MessageConsumer,
    MessageProducer,
    RabbitMQService,
    ReceivedMessage,
)
from ._wait import DEFAULT_WAIT, Signal, unique_name, wait_until

__all__ = ["Tap", "TappedMessage", "TestBroker"]


@dataclass(frozen=True)
class TappedMessage:
    """A copy of a message that went through a tapped exchange."""

    payload: Any
    envelope: Envelope

    @property
    def routing_key(self) -> str:
        """The routing key it was published with."""
        return self.envelope.routing_key


class Tap:
    """Copies of what is published to an exchange (see :meth:`TestBroker.tap`)."""

    def __init__(self, exchange: str, pattern: str) -> None:
        self.exchange = exchange
        self.pattern = pattern
        self.messages: list[TappedMessage] = []
        self._signal = Signal()

    async def _record(self, payload: Any, envelope: Envelope) -> None:
        self.messages.append(TappedMessage(payload, envelope))
        self._signal.notify()

    @property
    def payloads(self) -> list[Any]:
        """The payloads seen so far, in order."""
        return [m.payload for m in self.messages]

    async def wait_for(self, count: int = 1, *, timeout: float = DEFAULT_WAIT) -> TappedMessage:
        """Wait until ``count`` messages went through; return the last of them.

        Raises:
            TimeoutError: Fewer arrived within ``timeout`` seconds.
        """
        what = f"{count} messages on exchange {self.exchange!r} ({self.pattern!r})"
        await self._signal.wait_for(lambda: len(self.messages) >= count, timeout=timeout, what=what)
        return self.messages[count - 1]


class TestBroker:
    """A RabbitMQ-like broker of this test's own, in memory, for testing messaging code.

    In the spirit of FastStream's ``TestRabbitBroker``, without mocks: it is the
    in-memory broker rtkit's RabbitMQ backend is tested against (exchanges,
    bindings, prefetch, acks, retries through delay tier queues, dead letters,
    request/reply), under a memory name no other test uses. Code under test
    connects to it by URL, ``RabbitMQService.from_url(broker.url)``, or takes a
    service from :meth:`service`. Everything it made is closed at the end.

    Example:
        ```python
        async with TestBroker() as broker:
            mq = await broker.service()
            await mq.declare_queue("orders")
            await broker.send("orders", {"id": 1})
            message = await broker.wait_for_message("orders")
            assert message.payload == {"id": 1}
        ```

    Attributes:
        url: ``memory://<name>``: what code under test opens to reach this broker.

    Args:
        name: The memory name (default: a unique one); the URL is ``memory://<name>``.
        close_timeout: The ``close_timeout`` of the services it makes, so that a
            test whose handler hangs ends quickly.
    """

    __test__ = False  # not a test class, whatever its name says

    def __init__(self, *, name: str | None = None, close_timeout: float = 2.0) -> None:
        self.url = f"memory://{name or unique_name('rtkit-test-broker')}"
        self._close_timeout = close_timeout
        self._services: list[RabbitMQService] = []
        self._consumers: list[MessageConsumer] = []
        self._admin: RabbitMQService | None = None
        self._producer: MessageProducer | None = None

    # ------------------------------------------------------------ life cycle

    async def start(self) -> None:
        """Open the broker (optional: every helper opens it on first use)."""
        await self._service()

    async def close(self) -> None:
        """Close every consumer and service made through this helper."""
        for consumer in reversed(self._consumers):
            with contextlib.suppress(Exception):
                await consumer.close()
        for service in reversed(self._services):
            with contextlib.suppress(Exception):
                await service.close()
        self._consumers.clear()
        self._services.clear()

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

    async def _service(self) -> RabbitMQService:
        if self._admin is None:
            self._admin = await self.service()
        return self._admin

    @property
    def broker(self) -> MemoryBroker:
        """The in-memory broker itself (to :meth:`~MemoryBroker.restart` it, say)."""
        if self._admin is None:
            raise RuntimeError("the broker opens on first use: await broker.start() first")
        backend: Any = self._admin.backend
        broker: MemoryBroker = backend.broker
        return broker

    # ------------------------------------------------------------ connecting

    async def service(self, **options: Any) -> RabbitMQService:
        """A started service connected to this broker, closed with it.

        ``options`` are ``RabbitMQService.from_url``'s.
        """
        options.setdefault("close_timeout", self._close_timeout)
        service = RabbitMQService.from_url(self.url, **options)
        await service.start()
        self._services.append(service)
        return service

    async def consume(self, queue: str, handler: Any, **options: Any) -> ConsumerHandle:
        """Consume ``queue`` with ``handler`` (``MessageConsumer.consume``'s options).

        The consumer is closed with the broker.
        """
        consumer = MessageConsumer(await self._service(), close_timeout=self._close_timeout)
        self._consumers.append(consumer)
        return await consumer.consume(queue, handler, **options)

    # ------------------------------------------------------------ sending

    async def send(self, queue: str, message: Any, **options: Any) -> str:
        """Send ``message`` to ``queue`` (``MessageProducer.send``'s options); return its id."""
        return await (await self._sender()).send(queue, message, **options)

    async def publish(self, exchange: str, routing_key: str, message: Any, **options: Any) -> str:
        """Publish ``message`` to ``exchange`` (``MessageProducer.publish``'s options)."""
        return await (await self._sender()).publish(exchange, routing_key, message, **options)

    async def request(self, queue: str, message: Any, **options: Any) -> Any:
        """Send a request to ``queue`` and return the reply (``MessageProducer.request``)."""
        return await (await self._sender()).request(queue, message, **options)

    async def _sender(self) -> MessageProducer:
        if self._producer is None:
            self._producer = MessageProducer(await self._service())
        return self._producer

    # ------------------------------------------------------------ looking inside

    async def get(self, queue: str) -> ReceivedMessage | None:
        """Take the next message off ``queue``, or ``None`` when it is empty."""
        return await (await self._service()).get(queue)

    async def wait_for_message(
        self, queue: str, *, timeout: float = DEFAULT_WAIT
    ) -> ReceivedMessage:
        """Wait for a message in ``queue`` and take it off the queue.

        For queues nobody consumes: what the code under test sent.

        Raises:
            TimeoutError: ``queue`` stayed empty for ``timeout`` seconds.
            rtkit.errors.NotFound: No such queue.
        """
        found: list[ReceivedMessage] = []

        async def arrived() -> bool:
            message = await self.get(queue)
            if message is not None:
                found.append(message)
            return bool(found)

        await wait_until(arrived, timeout=timeout, what=f"a message in {queue!r}")
        return found[0]

    async def wait_for_dead_letter(
        self, queue: str, *, timeout: float = DEFAULT_WAIT
    ) -> ReceivedMessage:
        """Wait for a dead letter of ``queue`` (in ``<queue>.dlq``); ``.reason`` says why."""
        dead_letters = (await self._service()).dead_letter_queue(queue) or f"{queue}.dlq"
        return await self.wait_for_message(dead_letters, timeout=timeout)

    def message_count(self, queue: str) -> int:
        """Messages ready in ``queue`` (not yet delivered)."""
        return self.broker.message_count(queue)

    async def tap(self, exchange: str, pattern: str = "#") -> Tap:
        """Record a copy of every message published to ``exchange`` matching ``pattern``.

        As on RabbitMQ: a queue of the tap's own is bound to the exchange, so
        the messages also go wherever they went before. The default exchange
        (``send`` to a queue) cannot be tapped; use :meth:`wait_for_message`.
        """
        service = await self._service()
        tap = Tap(exchange, pattern)
        queue = unique_name("rtkit-test-tap")
        await service.declare_queue(queue, durable=False, dead_letter=False)
        await service.bind(queue, exchange, pattern)
        await self.consume(queue, tap._record)
        return tap

    @staticmethod
    async def wait_handled(
        handle: ConsumerHandle, count: int = 1, *, timeout: float = DEFAULT_WAIT
    ) -> None:
        """Wait until the consumer ``handle`` has finished ``count`` messages in all.

        Finished means handled, dead-lettered or skipped as a duplicate (a
        message sent for a retry is not finished yet).

        Raises:
            TimeoutError: Fewer finished within ``timeout`` seconds.
        """

        def finished() -> int:
            return handle.handled + handle.dead_lettered + handle.duplicates

        await wait_until(
            lambda: finished() >= count,
            timeout=timeout,
            what=f"{count} messages finished by the consumer of {handle.queue!r}",
        )
