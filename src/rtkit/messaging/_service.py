"""``RabbitMQService``: a connection to a broker and the topology rtkit manages on it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, get_args

from .._core.clock import Clock, SystemClock
from .._core.component import Component
from .._core.ids import new_id
from .._core.lifecycle import DEFAULT_CLOSE_TIMEOUT
from .._core.validate import check_id, check_int, check_seconds
from ..errors import ValidationError
from ._models import ExchangeKind, ReceivedMessage
from ._retry import delay_tier_ms
from ._wire import (
    DEFAULT_MAX_MESSAGE_BYTES,
    check_headers,
    check_queue,
    check_routing_key,
    decode_any,
    encode,
)
from .brokers.base import BrokerBackend, OutgoingMessage
from .brokers.memory import MemoryBrokerBackend

__all__ = ["RabbitMQService"]

_EXCHANGE_KINDS = get_args(ExchangeKind)

Stopper = Callable[[float], Awaitable[None]]


@dataclass
class _QueueInfo:
    durable: bool
    dead_letter: str | None


class RabbitMQService(Component):
    """A connection to a message broker, plus the topology rtkit manages on it.

    ``RabbitMQService()`` runs on an in-process broker of its own with RabbitMQ's
    semantics (the specification, and for tests); ``from_url("memory://NAME")``
    on one shared by every service of that name in the process;
    ``from_url("amqp://...")`` on RabbitMQ through aio-pika, with publisher
    confirms and automatic reconnect. Operations connect on first use;
    ``start()`` connects now.

    Example:
        ```python
        async with RabbitMQService.from_url("amqp://guest:guest@localhost/") as mq:
            await mq.declare_queue("email.send")
            await MessageProducer(mq).send("email.send", {"to": "a@example.com"})
        ```

    ``from_url`` also takes the RabbitMQ backend's options: ``timeout`` (seconds
    for connecting, and for a publish and its confirm, reconnect included),
    ``reconnect_interval`` and ``connection_name`` (shown by ``rabbitmqctl
    list_connections``).

    Args:
        backend: The broker connection (default: a private in-memory broker).
        clock: Where message timestamps are read from.
        max_message_bytes: Largest body sent or accepted.
        close_timeout: Seconds ``close()`` lets running handlers finish.

    Raises:
        rtkit.errors.ConfigurationError: A setting is out of range.
    """

    _backends = {
        "memory": "rtkit.messaging.brokers.memory:MemoryBrokerBackend",
        "amqp": "rtkit.messaging.brokers.amqp:AmqpBrokerBackend",
    }

    def __init__(
        self,
        backend: BrokerBackend | None = None,
        *,
        clock: Clock | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
    ) -> None:
        self.max_message_bytes = check_int(max_message_bytes, "max_message_bytes")
        self.close_timeout = check_seconds(close_timeout, "close_timeout")
        self.clock: Clock = clock or SystemClock()
        self._backend: BrokerBackend = backend if backend is not None else MemoryBrokerBackend()
        self._queues: dict[str, _QueueInfo] = {}
        self._tiers: set[str] = set()
        self._stoppers: set[Stopper] = set()

    @property
    def backend(self) -> BrokerBackend:
        """The broker connection (for producers, consumers and backend authors)."""
        return self._backend

    async def _start(self) -> None:
        await self._backend.connect()

    async def _close(self) -> None:
        """Stop every consumer gracefully, then close the connection.

        Consumers stop taking deliveries at once; handlers already running get
        ``close_timeout`` seconds to finish (their messages are acked), the rest
        are cancelled and their messages go back to the queue.
        """
        stoppers = list(self._stoppers)
        if stoppers:
            await asyncio.gather(*(s(self.close_timeout) for s in stoppers), return_exceptions=True)
        await self._backend.close()

    def on_close(self, stop: Stopper) -> Callable[[], None]:
        """Have ``close()`` await ``stop(close_timeout)`` before the connection closes.

        Consumers register their graceful stop here. Returns the function that
        takes ``stop`` off again.
        """
        self._stoppers.add(stop)
        return lambda: self._stoppers.discard(stop)

    # -- topology --------------------------------------------------------------

    async def declare_queue(
        self, name: str, *, durable: bool = True, dead_letter: bool | str = True
    ) -> None:
        """Declare a queue (and its dead-letter queue).

        Args:
            name: The queue name (see the validation guide; not starting ``amq.``).
            durable: Survives a broker restart.
            dead_letter: ``True`` makes ``<name>.dlq`` the dead-letter queue, a string
                names another one, ``False`` means none (final failures are dropped
                with a warning). Messages rejected or expired by the broker go there too.

        Raises:
            rtkit.errors.ValidationError: A bad name.
            rtkit.errors.ConfigurationError: The queue exists with other settings.
            rtkit.errors.Closed: The service was closed.
        """
        check_queue(name)
        dlq: str | None
        if dead_letter is True:
            dlq = f"{name}.dlq"
        elif dead_letter is False:
            dlq = None
        else:
            dlq = check_queue(dead_letter, "dead-letter queue name")
        if not self._live:
            await self._ready()
        arguments: dict[str, Any] = {}
        if dlq is not None:
            await self._backend.declare_queue(dlq, durable=durable, arguments={})
            arguments = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq}
        await self._backend.declare_queue(name, durable=durable, arguments=arguments)
        self._queues[name] = _QueueInfo(durable=durable, dead_letter=dlq)

    async def declare_exchange(
        self, name: str, kind: ExchangeKind = "direct", *, durable: bool = True
    ) -> None:
        """Declare an exchange of kind ``direct``, ``topic`` or ``fanout``."""
        check_queue(name, "exchange name")
        if kind not in _EXCHANGE_KINDS:
            raise ValidationError(f"exchange kind must be one of {_EXCHANGE_KINDS}, not {kind!r}")
        if not self._live:
            await self._ready()
        await self._backend.declare_exchange(name, kind, durable=durable)

    async def bind(self, queue: str, exchange: str, pattern: str = "") -> None:
        """Route messages published to ``exchange`` with a matching key into ``queue``.

        For topic exchanges ``*`` matches one dot-separated word and ``#`` zero or more.

        Raises:
            rtkit.errors.NotFound: The queue or the exchange does not exist.
        """
        check_queue(queue)
        check_queue(exchange, "exchange name")
        check_routing_key(pattern, "binding pattern")
        if not self._live:
            await self._ready()
        await self._backend.bind(queue, exchange, pattern)

    async def delete_queue(self, name: str) -> None:
        """Delete a queue, its rtkit dead-letter queue and its delay tier queues."""
        check_queue(name)
        if not self._live:
            await self._ready()
        info = self._queues.pop(name, None)
        await self._backend.delete_queue(name)
        if info is not None and info.dead_letter == f"{name}.dlq":
            await self._backend.delete_queue(info.dead_letter)
        for tier in sorted(t for t in self._tiers if t.startswith(f"{name}.delay.")):
            self._tiers.discard(tier)
            await self._backend.delete_queue(tier)

    async def delete_exchange(self, name: str) -> None:
        """Delete an exchange."""
        check_queue(name, "exchange name")
        if not self._live:
            await self._ready()
        await self._backend.delete_exchange(name)

    async def get(self, queue: str) -> ReceivedMessage | None:
        """Take one message off ``queue`` (acknowledged), or ``None`` if it is empty.

        Handy for inspecting a dead-letter queue.

        Raises:
            rtkit.errors.NotFound: No such queue.
        """
        check_queue(queue)
        if not self._live:
            await self._ready()
        delivery = await self._backend.get(queue)
        if delivery is None:
            return None
        m = delivery.message
        return ReceivedMessage(
            body=m.body,
            payload=decode_any(m.body),
            message_id=m.message_id,
            timestamp=m.timestamp,
            headers=dict(m.headers),
            content_type=m.content_type,
            redelivered=delivery.redelivered,
            routing_key=delivery.routing_key,
        )

    def dead_letter_queue(self, queue: str) -> str | None:
        """The dead-letter queue of ``queue`` (``<queue>.dlq`` unless declared otherwise)."""
        info = self._queues.get(queue)
        return f"{queue}.dlq" if info is None else info.dead_letter

    # -- delay tiers -----------------------------------------------------------

    @staticmethod
    def delay_queue_name(queue: str, delay: float) -> str:
        """The tier queue that holds messages for ``queue`` during ``delay`` seconds."""
        return f"{queue}.delay.{delay_tier_ms(delay)}ms"

    @property
    def delay_queues(self) -> frozenset[str]:
        """The delay tier queues this service declared (``delete_queue`` removes them too)."""
        return frozenset(self._tiers)

    async def delay_queue(self, queue: str, delay: float) -> str:
        """The tier queue for ``delay`` seconds before ``queue``, declared on first use.

        Messages wait there ``delay`` seconds (snapped to the E12 tier), then the
        broker dead-letters them into ``queue``. Producers and consumers use it
        for delayed sends and retries; it works while ``close()`` drains.
        """
        name = self.delay_queue_name(queue, delay)
        if name not in self._tiers:
            info = self._queues.get(queue)
            await self._backend.declare_queue(
                name,
                durable=True if info is None else info.durable,
                arguments={
                    "x-message-ttl": delay_tier_ms(delay),
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": queue,
                },
            )
            self._tiers.add(name)
        return name

    # -- messages --------------------------------------------------------------

    def encode(self, message: Any) -> bytes:
        """``message`` (a pydantic model or any JSON-able value) as a JSON body.

        Raises:
            rtkit.errors.ValidationError: It is not JSON-serializable.
            rtkit.errors.PayloadTooLarge: It is larger than ``max_message_bytes``.
        """
        return encode(message, self.max_message_bytes)

    def outgoing(
        self,
        body: bytes,
        *,
        headers: Mapping[str, Any] | None = None,
        message_id: str | None = None,
        persistent: bool = True,
        correlation_id: str | None = None,
        reply_to: str | None = None,
    ) -> OutgoingMessage:
        """A message to hand to the backend: ``body`` with an id, a timestamp and headers.

        Args:
            body: The encoded body (see [`encode`][rtkit.messaging.RabbitMQService.encode]).
            headers: Application headers (str, int, float, bool or None values).
            message_id: The caller's unique id; a new UUIDv7 otherwise.
            persistent: Written to disk by the broker (delivery mode 2).
            correlation_id: For request/reply.
            reply_to: Where the consumer sends its reply.

        Raises:
            rtkit.errors.ValidationError: A bad header or message id.
        """
        return OutgoingMessage(
            body=body,
            message_id=new_id() if message_id is None else check_id(message_id, "message_id"),
            timestamp=int(self.clock.time()),
            headers=check_headers(headers),
            persistent=persistent,
            correlation_id=correlation_id,
            reply_to=reply_to,
        )
