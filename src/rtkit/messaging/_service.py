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
from ..errors import ConfigurationError, NotFound, ValidationError
from ..telemetry._amqp import MessagingHooks, instrument_messaging
from ._headers import check_headers
from ._models import ExchangeKind, ReceivedMessage
from ._retry import delay_tier_ms
from ._wire import (
    DEFAULT_MAX_MESSAGE_BYTES,
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


@dataclass(frozen=True)
class _QueueInfo:
    durable: bool
    dead_letter: str | None  # the dead-letter queue, or the routing key through the exchange
    dead_letter_exchange: str  # "" is the default exchange


def _check_flag(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise ValidationError(f"{what} must be True or False, got {value!r:.40}")
    return value


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
        # What asyncapi() describes: exchanges, bindings, consumed queues and their models.
        self._exchanges: dict[str, tuple[ExchangeKind, bool]] = {}
        self._bindings: dict[tuple[str, str, str], None] = {}
        self._consumed: dict[str, Any] = {}
        self._tiers: set[str] = set()
        self._stoppers: set[Stopper] = set()
        self._telemetry: MessagingHooks | None = None

    @property
    def backend(self) -> BrokerBackend:
        """The broker connection (for producers, consumers and backend authors)."""
        return self._backend

    async def _start(self) -> None:
        self._telemetry = instrument_messaging(self._backend)
        await self._backend.connect()

    async def _publish(
        self, exchange: str, routing_key: str, message: OutgoingMessage, *, mandatory: bool
    ) -> None:
        """Publish through the backend: what producers and consumers call (traced and
        counted when telemetry is on, see ``rtkit.telemetry``)."""
        hooks = self._telemetry
        if hooks is None:
            await self._backend.publish(exchange, routing_key, message, mandatory=mandatory)
        else:
            await hooks.publish(
                self._backend.publish, exchange, routing_key, message, mandatory=mandatory
            )

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
        self,
        name: str,
        *,
        durable: bool = True,
        dead_letter: bool | str = True,
        dead_letter_exchange: str = "",
        declare: bool = True,
    ) -> None:
        """Declare a queue and where its dead letters go, or adopt one that exists.

        The queue is declared first, so a refused declaration creates nothing;
        then the dead-letter queue (and exchange). Declaring again with the same
        settings does nothing, so services may all declare what they use.

        Args:
            name: The queue name (see the validation guide; not starting ``amq.``).
            durable: Survives a broker restart (so do its dead-letter queue and exchange).
            dead_letter: ``True`` makes ``<name>.dlq`` the dead-letter queue, a string
                names another one, ``False`` means none (final failures are dropped
                with a warning). Messages the broker rejects or expires go there too.
            dead_letter_exchange: Dead letters go through this exchange (declared
                ``direct``, with the dead-letter queue bound to it under its own name)
                instead of the default exchange: ``dead_letter_exchange="orders_dlx",
                dead_letter="orders_dlq"`` is the topology of amqplib's ``<q>_dlx`` /
                ``<q>_dlq`` services.
            declare: ``False`` adopts a queue that exists (made by another service):
                nothing is declared, rtkit checks that the queue exists and takes
                ``dead_letter`` and ``dead_letter_exchange`` as a description of where
                its dead letters go (which must exist too).

        Raises:
            rtkit.errors.ValidationError: A bad name or option.
            rtkit.errors.ConfigurationError: The queue (or its dead-letter queue) exists
                with other settings; the message names the argument and the options
                that fit.
            rtkit.errors.NotFound: ``declare=False`` and the queue, its dead-letter
                queue or exchange does not exist.
            rtkit.errors.Closed: The service was closed.
        """
        check_queue(name)
        dlq = self._dead_letter_name(name, dead_letter)
        if dead_letter_exchange != "":
            check_queue(dead_letter_exchange, "dead-letter exchange name")
            if dlq is None:
                raise ValidationError("dead_letter_exchange needs a dead-letter queue to route to")
        _check_flag(durable, "durable")
        _check_flag(declare, "declare")
        if not self._live:
            await self._ready()
        info = _QueueInfo(durable, dlq, dead_letter_exchange)
        if declare:
            await self._declare_queue(name, info)
        else:
            await self._adopt_queue(name, info)
        self._queues[name] = info

    @staticmethod
    def _dead_letter_name(name: str, dead_letter: Any) -> str | None:
        if dead_letter is True:
            return f"{name}.dlq"
        if dead_letter is False:
            return None
        return check_queue(dead_letter, "dead-letter queue name")

    async def _declare_queue(self, name: str, info: _QueueInfo) -> None:
        backend, dlq, dlx = self._backend, info.dead_letter, info.dead_letter_exchange
        arguments: dict[str, Any] = {}
        if dlq is not None:
            arguments = {"x-dead-letter-exchange": dlx, "x-dead-letter-routing-key": dlq}
        await backend.declare_queue(name, durable=info.durable, arguments=arguments)
        if dlq is None:
            return
        try:
            if dlx:
                await backend.declare_exchange(dlx, "direct", durable=info.durable)
            await backend.declare_queue(dlq, durable=info.durable, arguments={})
            if dlx:
                await backend.bind(dlq, dlx, dlq)
        except ConfigurationError as exc:
            raise ConfigurationError(f"the dead letters of {name!r}: {exc}") from exc

    async def _adopt_queue(self, name: str, info: _QueueInfo) -> None:
        backend, dlq, dlx = self._backend, info.dead_letter, info.dead_letter_exchange
        try:
            await backend.declare_queue(name, durable=info.durable, arguments={}, passive=True)
        except NotFound as exc:
            raise NotFound(f"declare=False adopts a queue that exists: {exc}") from exc
        try:
            if dlx:
                await backend.declare_exchange(dlx, "direct", durable=info.durable, passive=True)
            elif dlq is not None:
                await backend.declare_queue(dlq, durable=info.durable, arguments={}, passive=True)
        except NotFound as exc:
            raise NotFound(
                f"the dead letters of {name!r} have nowhere to go ({exc}): name an existing "
                "queue with dead_letter= (and its exchange with dead_letter_exchange=), or "
                "pass dead_letter=False"
            ) from exc

    async def declare_exchange(
        self,
        name: str,
        kind: ExchangeKind = "direct",
        *,
        durable: bool = True,
        declare: bool = True,
    ) -> None:
        """Declare an exchange of kind ``direct``, ``topic`` or ``fanout``.

        ``declare=False`` only checks that it exists
        ([`NotFound`][rtkit.errors.NotFound] otherwise); declaring it with other
        settings raises [`ConfigurationError`][rtkit.errors.ConfigurationError].
        """
        check_queue(name, "exchange name")
        if kind not in _EXCHANGE_KINDS:
            raise ValidationError(f"exchange kind must be one of {_EXCHANGE_KINDS}, not {kind!r}")
        _check_flag(durable, "durable")
        _check_flag(declare, "declare")
        if not self._live:
            await self._ready()
        await self._backend.declare_exchange(name, kind, durable=durable, passive=not declare)
        self._exchanges[name] = (kind, durable)

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
        self._bindings[(queue, exchange, pattern)] = None

    def asyncapi(self, *, host: str = "localhost:5672", title: str = "rtkit messaging") -> Any:
        """This service's topology as an AsyncAPI 3.0 document (JSON data).

        The queues it declared (with their dead-letter queues and delay tiers), the
        exchanges it declared and the bindings it made, and for each queue consumed
        through it the message schema of the consumer's ``model`` (any JSON without
        one). ``host`` names the broker in the document (never a URL with credentials).
        """
        from ._asyncapi import topology_document

        return topology_document(self, host=host, title=title)

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
        hooks = self._telemetry  # a receive span when tracing is on
        get = self._backend.get if hooks is None else hooks.receiving(queue, self._backend.get)
        delivery = await get(queue)
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

    def dead_letter_route(self, queue: str) -> tuple[str, str] | None:
        """Where consumers publish the dead letters of ``queue``: (exchange, routing key).

        ``("", "<queue>.dlq")`` unless declared otherwise; ``None`` if it has none.
        """
        info = self._queues.get(queue)
        if info is None:
            return ("", f"{queue}.dlq")
        if info.dead_letter is None:
            return None
        return (info.dead_letter_exchange, info.dead_letter)

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
            rtkit.errors.ValidationError: It is not JSON-serializable, or nests deeper
                than 32 levels (consumers dead-letter such bodies).
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
            headers: Application headers: names of 1-128 bytes; ``str`` (at most 16 KiB),
                ``int`` (signed 64-bit), finite ``float``, ``bool`` or ``None`` values; at
                most 64 KiB in all.
            message_id: The caller's unique id; a new UUIDv7 otherwise.
            persistent: Written to disk by the broker (delivery mode 2).
            correlation_id: For request/reply.
            reply_to: Where the consumer sends its reply.

        Raises:
            rtkit.errors.ValidationError: A bad header or message id.
            rtkit.errors.PayloadTooLarge: A header value or the headers are too large.
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
