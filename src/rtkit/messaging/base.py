"""The messaging contract: service, producer, consumer, retry policy, broker protocol.

Everything that does not depend on the broker lives here: encoding, validation of
incoming bodies, the retry ladder through delay tier queues, dead-lettering with
reasons, request/reply, idempotency and graceful shutdown. A backend
(:mod:`rtkit.messaging.memory`, :mod:`rtkit.messaging.amqp`) only implements the
small :class:`BrokerConnection` protocol of AMQP primitives.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import math
import random
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeAlias

import pydantic
import pydantic_core

from .._backends import backend_kind
from .._clock import Clock, SystemClock
from .._ids import new_id
from .._lifecycle import AsyncResource
from .._validation import check_id
from ..errors import (
    ConfigurationError,
    PayloadTooLarge,
    RtkitError,
    ValidationError,
)
from .dedup import DedupStore

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "BrokerConnection",
    "BrokerConsumer",
    "ConsumerHandle",
    "DeadLetterReason",
    "Delivery",
    "Envelope",
    "ExchangeKind",
    "Handler",
    "MessageConsumer",
    "MessageProducer",
    "OutgoingMessage",
    "RabbitMQService",
    "ReceivedMessage",
    "RetryPolicy",
    "delay_tier_ms",
]

log = logging.getLogger("rtkit.messaging")

ExchangeKind: TypeAlias = Literal["direct", "topic", "fanout"]
"""The exchange types rtkit declares."""

DeadLetterReason: TypeAlias = Literal[
    "handler_failed", "validation_failed", "invalid_json", "content_type", "too_large"
]
"""Why a message went to a dead-letter queue (the ``x-death-reason`` header)."""

Handler: TypeAlias = Callable[..., Awaitable[Any]]
"""An async handler: ``async def h(payload)`` or ``async def h(payload, envelope)``."""

DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024
"""Largest message body rtkit sends or accepts by default (1 MiB)."""

JSON_CONTENT_TYPE = "application/json"
REPLY_TO = "amq.rabbitmq.reply-to"
_EXCHANGE_KINDS = ("direct", "topic", "fanout")
_E12 = (1.0, 1.2, 1.5, 1.8, 2.2, 2.7, 3.3, 3.9, 4.7, 5.6, 6.8, 8.2)
_NAME_RE = re.compile(r"^[A-Za-z0-9_.:\-]{1,200}$")
_MAX_HEADER_TEXT = 1000
# Headers the broker adds on dead-lettering; never copied onto a republished message.
_BROKER_HEADERS = ("x-death", "x-first-death-", "x-last-death-")


def check_name(name: str, what: str = "queue") -> str:
    """Validate a queue or exchange name: 1-200 characters of letters, digits and ``_.:-``."""
    if not isinstance(name, str) or not _NAME_RE.match(name) or name.startswith("amq."):
        raise ValidationError(
            f"invalid {what} name {name!r}: 1-200 characters of letters, digits and _.:- "
            "(not starting with 'amq.')"
        )
    return name


def delay_tier_ms(delay: float) -> int:
    """The delay tier (milliseconds) that serves a delay of ``delay`` seconds.

    Delays snap to the nearest value of the E12 series (1.0, 1.2, 1.5, 1.8, 2.2,
    2.7, 3.3, 3.9, 4.7, 5.6, 6.8, 8.2 times a power of ten; at most about 10 % off),
    so jittered back-offs share a small, deterministic set of tier queues: about
    twelve per tenfold range of delays.
    """
    ms = max(1.0, delay * 1000)
    decade = 10.0 ** math.floor(math.log10(ms))
    candidates = [step * decade for step in _E12] + [10 * decade]
    best = min(candidates, key=lambda c: abs(math.log(c / ms)))
    return max(1, round(best))


# --------------------------------------------------------------------------- wire


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """A message as handed to the broker: body bytes plus AMQP properties."""

    body: bytes
    message_id: str
    timestamp: int
    headers: dict[str, Any] = field(default_factory=dict)
    content_type: str | None = JSON_CONTENT_TYPE
    persistent: bool = True
    correlation_id: str | None = None
    reply_to: str | None = None


class Delivery:
    """One delivery from a broker to a consumer; backends subclass it.

    ``ack``/``nack`` never raise: an acknowledgement on a channel that died is
    dropped (the broker redelivers the message).
    """

    __slots__ = ("exchange", "message", "redelivered", "routing_key")

    def __init__(
        self, message: OutgoingMessage, *, exchange: str, routing_key: str, redelivered: bool
    ) -> None:
        self.message = message
        self.exchange = exchange
        self.routing_key = routing_key
        self.redelivered = redelivered

    async def ack(self) -> None:
        """Acknowledge: the broker forgets the message."""
        raise NotImplementedError

    async def nack(self, *, requeue: bool) -> None:
        """Reject: requeue it, or let the broker dead-letter (or drop) it."""
        raise NotImplementedError


class BrokerConsumer(Protocol):
    """A consumer registered on its own channel."""

    async def cancel(self) -> None:
        """Stop new deliveries (unacknowledged ones stay with this consumer)."""
        ...

    async def close(self) -> None:
        """Close the channel: unacknowledged deliveries go back to the queue."""
        ...


class BrokerConnection(Protocol):
    """The AMQP primitives a backend provides (all of them bounded in time)."""

    async def connect(self) -> None:
        """Connect, or raise :class:`~rtkit.BackendUnavailable`."""
        ...

    async def close(self) -> None:
        """Close the connection."""
        ...

    async def declare_queue(self, name: str, *, durable: bool, arguments: dict[str, Any]) -> None:
        """Declare a queue (idempotent for equal arguments)."""
        ...

    async def declare_exchange(self, name: str, kind: ExchangeKind, *, durable: bool) -> None:
        """Declare an exchange."""
        ...

    async def bind(self, queue: str, exchange: str, routing_key: str) -> None:
        """Bind a queue to an exchange."""
        ...

    async def delete_queue(self, name: str) -> None:
        """Delete a queue (no error if absent)."""
        ...

    async def delete_exchange(self, name: str) -> None:
        """Delete an exchange (no error if absent)."""
        ...

    async def publish(
        self, exchange: str, routing_key: str, message: OutgoingMessage, *, mandatory: bool
    ) -> None:
        """Publish and wait for the publisher confirm."""
        ...

    async def get(self, queue: str) -> Delivery | None:
        """Take one message (auto-acknowledged), or ``None`` if the queue is empty."""
        ...

    async def consume(
        self, queue: str, callback: Callable[[Delivery], Awaitable[None]], *, prefetch: int
    ) -> BrokerConsumer:
        """Start a consumer on a new channel with its own prefetch window."""
        ...

    async def request(
        self, exchange: str, routing_key: str, message: OutgoingMessage, *, timeout: float
    ) -> Delivery:
        """Publish with direct reply-to and wait for the reply."""
        ...


# --------------------------------------------------------------------------- public models


@dataclass(frozen=True, slots=True)
class Envelope:
    """What a handler may want to know about the message it handles.

    Attributes:
        message_id: The producer's unique id (stable across retries and redeliveries).
        timestamp: When the message was first sent (Unix seconds).
        headers: Application headers, including ``x-retry-count`` on retries.
        attempt: 1 for the first delivery, 2 for the first retry, ...
        redelivered: The broker's redelivered flag (a previous delivery was not acked).
        queue: The queue it was consumed from.
        exchange: The exchange it was published to (``""`` for the default exchange).
        routing_key: The routing key it was published with.
        correlation_id: Set on request/reply messages.
        reply_to: Where the handler's return value is sent, if anywhere.
    """

    message_id: str
    timestamp: int
    headers: Mapping[str, Any]
    attempt: int
    redelivered: bool
    queue: str
    exchange: str
    routing_key: str
    correlation_id: str | None
    reply_to: str | None


class ReceivedMessage(pydantic.BaseModel):
    """A message taken from a queue with :meth:`RabbitMQService.get` (e.g. a dead letter).

    ``payload`` is the decoded JSON body (``None`` if it is not JSON); for dead
    letters, ``reason``, ``error_type``, ``error`` and ``attempts`` say why.
    """

    model_config = pydantic.ConfigDict(frozen=True, arbitrary_types_allowed=True)

    body: bytes
    payload: Any = None
    message_id: str
    timestamp: int
    headers: dict[str, Any]
    content_type: str | None
    redelivered: bool
    routing_key: str

    @property
    def reason(self) -> str | None:
        """The ``x-death-reason`` header of a dead letter."""
        value = self.headers.get("x-death-reason")
        return None if value is None else str(value)

    @property
    def error_type(self) -> str | None:
        """The exception type that caused dead-lettering, if a handler raised."""
        value = self.headers.get("x-exception-type")
        return None if value is None else str(value)

    @property
    def error(self) -> str | None:
        """The exception message or validation error text."""
        value = self.headers.get("x-exception-message")
        return None if value is None else str(value)

    @property
    def attempts(self) -> int:
        """How many times a handler tried the message before it was dead-lettered."""
        return _int_header(self.headers.get("x-attempts"), 0)


class RetryPolicy(pydantic.BaseModel):
    """How often and how late a failed message is tried again.

    The first delivery is attempt 1; after attempt ``max_attempts`` fails the
    message goes to the dead-letter queue. Retry ``n`` waits
    ``initial_delay * multiplier ** (n - 1)`` seconds, plus or minus
    ``jitter`` (a fraction), capped at ``max_delay``.

    Example:
        >>> RetryPolicy(max_attempts=5, initial_delay=0.5, max_delay=30)
        RetryPolicy(max_attempts=5, initial_delay=0.5, multiplier=2.0, max_delay=30.0, jitter=0.1)
    """

    model_config = pydantic.ConfigDict(frozen=True)

    max_attempts: int = pydantic.Field(3, ge=1, le=100)
    initial_delay: float = pydantic.Field(1.0, gt=0, le=86_400)
    multiplier: float = pydantic.Field(2.0, ge=1, le=100)
    max_delay: float = pydantic.Field(60.0, gt=0, le=86_400)
    jitter: float = pydantic.Field(0.1, ge=0, le=1)

    @classmethod
    def never(cls) -> RetryPolicy:
        """No retries: the first failure dead-letters the message."""
        return cls(max_attempts=1)

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        """The back-off in seconds before retry number ``retry`` (1-based)."""
        base = self.initial_delay * self.multiplier ** max(0, retry - 1)
        base = min(base, self.max_delay)
        spread = base * self.jitter * (rng or random).uniform(-1.0, 1.0)
        return max(0.001, min(self.max_delay, base + spread))


# --------------------------------------------------------------------------- helpers


def _int_header(value: Any, default: int) -> int:
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return default


def _text(value: object) -> str:
    return str(value)[:_MAX_HEADER_TEXT]


def _clean_headers(headers: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in headers.items() if not k.startswith(_BROKER_HEADERS)}


def _check_headers(headers: Mapping[str, Any] | None) -> dict[str, Any]:
    if headers is None:
        return {}
    if not isinstance(headers, Mapping):
        raise ValidationError("headers must be a mapping of str to str/int/float/bool/None")
    out: dict[str, Any] = {}
    for key, value in headers.items():
        if not isinstance(key, str) or not key or len(key) > 128:
            raise ValidationError(f"invalid header name {key!r}")
        if value is not None and not isinstance(value, str | int | float | bool):
            raise ValidationError(f"header {key!r} must be str, int, float, bool or None")
        out[key] = value
    return out


def _accepts_envelope(handler: Handler) -> bool:
    try:
        params = list(inspect.signature(handler).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = [
        p
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    return len(positional) >= 2 or any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params)


def _decode_any(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None


def _is_json(content_type: str | None) -> bool:
    if not content_type or content_type == JSON_CONTENT_TYPE:
        return True
    return content_type.split(";", 1)[0].strip().lower() in ("application/json", "text/json")


# --------------------------------------------------------------------------- service


@dataclass
class _QueueInfo:
    durable: bool
    dead_letter: str | None


class RabbitMQService(AsyncResource):
    """A connection to a message broker, plus the topology rtkit manages on it.

    Make one with :meth:`from_url`: ``memory://`` is an in-process broker with
    RabbitMQ's semantics (the specification, and for tests), ``amqp://`` is
    RabbitMQ through aio-pika with publisher confirms and automatic reconnect.

    Example:
        ```python
        async with RabbitMQService.from_url("amqp://guest:guest@localhost/") as mq:
            await mq.declare_queue("email.send")
            await MessageProducer(mq).send("email.send", {"to": "a@example.com"})
        ```
    """

    def __init__(
        self,
        connection: BrokerConnection,
        *,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        clock: Clock | None = None,
    ) -> None:
        if not isinstance(max_message_bytes, int) or max_message_bytes < 1:
            raise ConfigurationError("max_message_bytes must be a positive integer")
        self.connection = connection
        self.max_message_bytes = max_message_bytes
        self.clock: Clock = clock or SystemClock()
        self._queues: dict[str, _QueueInfo] = {}
        self._tiers: set[str] = set()
        self._subscriptions: set[ConsumerHandle] = set()
        self._connected = False

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        connection_name: str | None = None,
        connect_timeout: float = 5.0,
        publish_timeout: float = 5.0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        reconnect_interval: float = 1.0,
        clock: Clock | None = None,
    ) -> RabbitMQService:
        """Make a service for ``memory://[name]`` or ``amqp://user:pass@host:port/vhost``.

        Args:
            url: Picks the broker. ``memory://`` is the process-wide in-memory broker,
                ``memory://other`` a separate named one.
            connection_name: Shown by ``rabbitmqctl list_connections`` (RabbitMQ only).
            connect_timeout: Seconds before connecting gives up with
                :class:`~rtkit.BackendUnavailable`.
            publish_timeout: Seconds a publish may wait for its confirm (including a
                reconnect) before it raises :class:`~rtkit.BackendUnavailable`.
            max_message_bytes: Largest body sent or accepted.
            reconnect_interval: Seconds between reconnect attempts (RabbitMQ only).
            clock: Where message timestamps are read from.
        """
        kind = backend_kind(url, component="RabbitMQService", allowed=("memory", "amqp"))
        for name, value in (
            ("connect_timeout", connect_timeout),
            ("publish_timeout", publish_timeout),
        ):
            if not isinstance(value, int | float) or value <= 0:
                raise ConfigurationError(f"{name} must be a positive number of seconds")
        connection: BrokerConnection
        if kind == "memory":
            from .memory import MemoryBroker

            connection = MemoryBroker.named(url.split("://", 1)[1].strip("/")).connection()
        else:
            from .amqp import AmqpConnection

            connection = AmqpConnection(
                url,
                connection_name=connection_name or f"rtkit-{new_id()}",
                connect_timeout=connect_timeout,
                publish_timeout=publish_timeout,
                reconnect_interval=reconnect_interval,
            )
        return cls(connection, max_message_bytes=max_message_bytes, clock=clock)

    async def connect(self) -> None:
        """Connect to the broker, or raise :class:`~rtkit.BackendUnavailable`."""
        if not self._connected:
            await self.connection.connect()
            self._connected = True

    async def start(self) -> None:
        """The same as :meth:`connect` (the life cycle every rtkit component shares)."""
        await self.connect()

    async def close(self, timeout: float = 10.0) -> None:
        """Stop every consumer gracefully, then close the connection.

        Consumers stop taking deliveries at once; handlers already running get
        ``timeout`` seconds to finish (their messages are acked), the rest are
        cancelled and their messages go back to the queue.
        """
        subs = list(self._subscriptions)
        if subs:
            await asyncio.gather(*(s.stop(timeout) for s in subs), return_exceptions=True)
        if self._connected:
            self._connected = False
            await self.connection.close()

    def _require_connected(self) -> None:
        if not self._connected:
            raise RtkitError("the RabbitMQService is not connected: use `async with service:`")

    # -- topology --------------------------------------------------------------

    async def declare_queue(
        self, name: str, *, durable: bool = True, dead_letter: bool | str = True
    ) -> None:
        """Declare a queue (and its dead-letter queue).

        Args:
            name: The queue name.
            durable: Survives a broker restart.
            dead_letter: ``True`` makes ``<name>.dlq`` the dead-letter queue, a string
                names another one, ``False`` means none (final failures are dropped
                with a warning). Messages rejected or expired by the broker go there too.
        """
        self._require_connected()
        check_name(name)
        dlq: str | None
        if dead_letter is True:
            dlq = f"{name}.dlq"
        elif dead_letter is False:
            dlq = None
        else:
            dlq = check_name(dead_letter, "dead-letter queue")
        arguments: dict[str, Any] = {}
        if dlq is not None:
            await self.connection.declare_queue(dlq, durable=durable, arguments={})
            arguments = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq}
        await self.connection.declare_queue(name, durable=durable, arguments=arguments)
        self._queues[name] = _QueueInfo(durable=durable, dead_letter=dlq)

    async def declare_exchange(
        self, name: str, kind: ExchangeKind = "direct", *, durable: bool = True
    ) -> None:
        """Declare an exchange of kind ``direct``, ``topic`` or ``fanout``."""
        self._require_connected()
        check_name(name, "exchange")
        if kind not in _EXCHANGE_KINDS:
            raise ValidationError(f"exchange kind must be one of {_EXCHANGE_KINDS}, not {kind!r}")
        await self.connection.declare_exchange(name, kind, durable=durable)

    async def bind(self, queue: str, exchange: str, pattern: str = "") -> None:
        """Route messages published to ``exchange`` with a matching key into ``queue``.

        For topic exchanges ``*`` matches one dot-separated word and ``#`` zero or more.
        """
        self._require_connected()
        check_name(queue)
        check_name(exchange, "exchange")
        if not isinstance(pattern, str) or len(pattern.encode()) > 255:
            raise ValidationError("a binding pattern is a string of at most 255 bytes")
        await self.connection.bind(queue, exchange, pattern)

    async def delete_queue(self, name: str) -> None:
        """Delete a queue, its rtkit dead-letter queue and its delay tier queues."""
        self._require_connected()
        check_name(name)
        info = self._queues.pop(name, None)
        await self.connection.delete_queue(name)
        if info is not None and info.dead_letter == f"{name}.dlq":
            await self.connection.delete_queue(info.dead_letter)
        for tier in sorted(t for t in self._tiers if t.startswith(f"{name}.delay.")):
            self._tiers.discard(tier)
            await self.connection.delete_queue(tier)

    async def delete_exchange(self, name: str) -> None:
        """Delete an exchange."""
        self._require_connected()
        await self.connection.delete_exchange(check_name(name, "exchange"))

    def dead_letter_queue(self, queue: str) -> str | None:
        """The dead-letter queue of ``queue`` (``<queue>.dlq`` unless declared otherwise)."""
        info = self._queues.get(queue)
        return f"{queue}.dlq" if info is None else info.dead_letter

    @staticmethod
    def delay_queue_name(queue: str, delay: float) -> str:
        """The tier queue that holds messages for ``queue`` during ``delay`` seconds."""
        return f"{queue}.delay.{delay_tier_ms(delay)}ms"

    async def _delay_tier(self, queue: str, delay: float) -> str:
        name = self.delay_queue_name(queue, delay)
        if name not in self._tiers:
            info = self._queues.get(queue)
            await self.connection.declare_queue(
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

    async def get(self, queue: str) -> ReceivedMessage | None:
        """Take one message off ``queue`` (acknowledged), or ``None`` if it is empty.

        Handy for inspecting a dead-letter queue.
        """
        self._require_connected()
        delivery = await self.connection.get(check_name(queue))
        if delivery is None:
            return None
        m = delivery.message
        return ReceivedMessage(
            body=m.body,
            payload=_decode_any(m.body),
            message_id=m.message_id,
            timestamp=m.timestamp,
            headers=dict(m.headers),
            content_type=m.content_type,
            redelivered=delivery.redelivered,
            routing_key=delivery.routing_key,
        )

    # -- shared by producer and consumer -------------------------------------------

    def _encode(self, message: Any) -> bytes:
        try:
            if isinstance(message, pydantic.BaseModel):
                body = message.model_dump_json().encode()
            else:
                body = pydantic_core.to_json(message)
        except (pydantic_core.PydanticSerializationError, TypeError, ValueError) as exc:
            raise ValidationError(f"message is not JSON-serializable: {exc}") from exc
        if len(body) > self.max_message_bytes:
            raise PayloadTooLarge(
                f"message is {len(body)} bytes, more than the {self.max_message_bytes} allowed"
            )
        return body

    def _message(
        self,
        body: bytes,
        *,
        headers: Mapping[str, Any] | None,
        message_id: str | None,
        persistent: bool = True,
        correlation_id: str | None = None,
        reply_to: str | None = None,
    ) -> OutgoingMessage:
        return OutgoingMessage(
            body=body,
            message_id=new_id() if message_id is None else check_id(message_id, "message_id"),
            timestamp=int(self.clock.time()),
            headers=_check_headers(headers),
            persistent=persistent,
            correlation_id=correlation_id,
            reply_to=reply_to,
        )


# --------------------------------------------------------------------------- producer


class MessageProducer:
    """Sends messages to queues and exchanges, with publisher confirms.

    Every message is persistent (unless ``persistent=False``) and carries a unique
    ``message_id`` and a timestamp. A call returns once the broker has confirmed
    the message; a broker that is down or a confirm that does not come raises
    :class:`~rtkit.BackendUnavailable` within the service's ``publish_timeout``.

    Args:
        service: The connected service.
        max_in_flight: How many publishes may await their confirms at once (shared
            by every call on this producer).
    """

    def __init__(self, service: RabbitMQService, *, max_in_flight: int = 1000) -> None:
        if not isinstance(max_in_flight, int) or max_in_flight < 1:
            raise ConfigurationError("max_in_flight must be a positive integer")
        self.service = service
        self._window = asyncio.Semaphore(max_in_flight)

    async def send(
        self,
        queue: str,
        message: Any,
        *,
        delay: float | None = None,
        headers: Mapping[str, Any] | None = None,
        message_id: str | None = None,
        persistent: bool = True,
    ) -> str:
        """Send ``message`` to ``queue`` (through the default exchange); return its id.

        Args:
            queue: The target queue; it must exist (else :class:`~rtkit.NotFound`).
            message: A pydantic model or any JSON-able value.
            delay: Deliver after this many seconds (through a delay tier queue; the
                delay snaps to the nearest E12 value, see :func:`delay_tier_ms`).
            headers: Application headers (str, int, float, bool or None values).
            message_id: Your own unique id (e.g. for idempotency); a UUIDv7 otherwise.
            persistent: Written to disk by the broker (delivery mode 2).
        """
        check_name(queue)
        if delay is not None and (not isinstance(delay, int | float) or not 0 <= delay <= 86_400):
            raise ValidationError("delay must be between 0 and 86400 seconds")
        service = self.service
        service._require_connected()
        msg = service._message(
            service._encode(message), headers=headers, message_id=message_id, persistent=persistent
        )
        target = queue
        if delay:
            target = await service._delay_tier(queue, delay)
        async with self._window:
            await service.connection.publish("", target, msg, mandatory=True)
        return msg.message_id

    async def publish(
        self,
        exchange: str,
        routing_key: str,
        message: Any,
        *,
        headers: Mapping[str, Any] | None = None,
        message_id: str | None = None,
        persistent: bool = True,
    ) -> str:
        """Publish ``message`` to ``exchange`` with ``routing_key``; return its id.

        A message that no binding matches is dropped by the broker, as in AMQP.
        """
        check_name(exchange, "exchange")
        if not isinstance(routing_key, str) or len(routing_key.encode()) > 255:
            raise ValidationError("a routing key is a string of at most 255 bytes")
        service = self.service
        service._require_connected()
        msg = service._message(
            service._encode(message), headers=headers, message_id=message_id, persistent=persistent
        )
        async with self._window:
            await service.connection.publish(exchange, routing_key, msg, mandatory=False)
        return msg.message_id

    async def send_many(self, queue: str, messages: Iterable[Any]) -> list[str]:
        """Send many messages to ``queue`` with up to ``max_in_flight`` confirms pending.

        Returns the ids in order. Order of arrival is not guaranteed under concurrency.
        """
        return list(await asyncio.gather(*(self.send(queue, m) for m in messages)))

    async def request(
        self,
        queue: str,
        message: Any,
        *,
        timeout: float = 5.0,
        headers: Mapping[str, Any] | None = None,
    ) -> Any:
        """Send ``message`` to ``queue`` and wait for the handler's return value.

        Uses RabbitMQ's direct reply-to (no reply queue is declared). Raises
        :class:`~rtkit.BackendUnavailable` if no reply comes within ``timeout``
        seconds, and :class:`~rtkit.RtkitError` (code ``remote_error``) if the
        handler failed for good.
        """
        check_name(queue)
        if not isinstance(timeout, int | float) or timeout <= 0:
            raise ValidationError("timeout must be a positive number of seconds")
        service = self.service
        service._require_connected()
        msg = service._message(
            service._encode(message),
            headers=headers,
            message_id=None,
            persistent=False,
            correlation_id=new_id(),
            reply_to=REPLY_TO,
        )
        reply = await service.connection.request("", queue, msg, timeout=timeout)
        error = reply.message.headers.get("x-rtkit-error")
        if error is not None:
            raise RtkitError(f"the handler of {queue!r} failed: {error}", code="remote_error")
        return _decode_any(reply.message.body)


# --------------------------------------------------------------------------- consumer


class ConsumerHandle:
    """A running consumer; :meth:`stop` it, or read its counters.

    Attributes:
        queue: The queue consumed.
        handled: Messages whose handler returned normally.
        retried: Failed messages sent to a delay tier for another attempt.
        dead_lettered: Messages sent to the dead-letter queue.
        duplicates: Messages skipped because the dedup store had seen their id.
    """

    def __init__(
        self,
        consumer: MessageConsumer,
        queue: str,
        handler: Handler,
        *,
        retry: RetryPolicy,
        model: Any,
        max_message_bytes: int,
        dedup: DedupStore | None,
    ) -> None:
        self.queue = queue
        self.handled = 0
        self.retried = 0
        self.dead_lettered = 0
        self.duplicates = 0
        self._consumer = consumer
        self._service = consumer.service
        self._handler = handler
        self._with_envelope = _accepts_envelope(handler)
        self._retry = retry
        self._adapter: pydantic.TypeAdapter[Any] | None = (
            None if model is None else pydantic.TypeAdapter(model)
        )
        self._max_bytes = max_message_bytes
        self._dedup = dedup
        self._broker_consumer: BrokerConsumer | None = None
        self._in_flight: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self._stopped = asyncio.Event()

    @property
    def in_flight(self) -> int:
        """How many handlers are running right now."""
        return len(self._in_flight)

    @property
    def active(self) -> bool:
        """True until :meth:`stop` is called."""
        return not self._stopping

    async def _start(self, prefetch: int) -> None:
        self._broker_consumer = await self._service.connection.consume(
            self.queue, self._on_delivery, prefetch=prefetch
        )

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop taking deliveries, let running handlers finish, then close the channel.

        Handlers still running after ``timeout`` seconds are cancelled; their
        messages are not acked, so the broker delivers them again.
        """
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        try:
            bc = self._broker_consumer
            if bc is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(bc.cancel(), timeout)
            tasks = self._in_flight - {asyncio.current_task()}  # stop() from a handler
            if tasks:
                _, pending = await asyncio.wait(tasks, timeout=timeout)
                for task in pending:
                    task.cancel()
                if pending:
                    await asyncio.wait(pending, timeout=1.0)
            if bc is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(bc.close(), timeout)
        finally:
            self._service._subscriptions.discard(self)
            self._stopped.set()

    # -- the delivery pipeline ---------------------------------------------------

    async def _on_delivery(self, delivery: Delivery) -> None:
        if self._stopping:
            await delivery.nack(requeue=True)
            return
        task = asyncio.current_task()
        if task is not None:
            self._in_flight.add(task)
        try:
            await self._process(delivery)
        finally:
            if task is not None:
                self._in_flight.discard(task)

    async def _process(self, delivery: Delivery) -> None:
        msg = delivery.message
        attempt = _int_header(msg.headers.get("x-retry-count"), 0) + 1
        if len(msg.body) > self._max_bytes:
            await self._dead_letter(
                delivery,
                "too_large",
                "PayloadTooLarge",
                f"body is {len(msg.body)} bytes, more than {self._max_bytes}",
                attempt - 1,
            )
            return
        if not _is_json(msg.content_type):
            await self._dead_letter(
                delivery,
                "content_type",
                "ValidationError",
                f"content type {msg.content_type!r} is not application/json",
                attempt - 1,
            )
            return
        try:
            if self._adapter is None:
                payload = json.loads(msg.body)
            else:
                payload = self._adapter.validate_json(msg.body)
        except pydantic.ValidationError as exc:
            invalid_json = any(e["type"] == "json_invalid" for e in exc.errors())
            await self._dead_letter(
                delivery,
                "invalid_json" if invalid_json else "validation_failed",
                "ValidationError",
                str(exc),
                attempt - 1,
            )
            return
        except (ValueError, UnicodeDecodeError) as exc:
            await self._dead_letter(delivery, "invalid_json", "ValidationError", str(exc), 0)
            return

        dedup = self._dedup
        if dedup is not None:
            state = await dedup.claim(msg.message_id)
            if state == "done":
                self.duplicates += 1
                await delivery.ack()
                return
            if state == "busy":
                # Another delivery of this id is being handled right now (e.g. the
                # old channel's handler after a reconnect): look again shortly.
                await asyncio.sleep(0.2)
                await delivery.nack(requeue=True)
                return
        try:
            if self._with_envelope:
                envelope = Envelope(
                    message_id=msg.message_id,
                    timestamp=msg.timestamp,
                    headers=msg.headers,
                    attempt=attempt,
                    redelivered=delivery.redelivered,
                    queue=self.queue,
                    exchange=delivery.exchange,
                    routing_key=delivery.routing_key,
                    correlation_id=msg.correlation_id,
                    reply_to=msg.reply_to,
                )
                result = await self._handler(payload, envelope)
            else:
                result = await self._handler(payload)
        except asyncio.CancelledError:
            if dedup is not None:
                with contextlib.suppress(Exception):
                    await dedup.release(msg.message_id)
            raise
        except Exception as exc:
            if dedup is not None:
                await dedup.release(msg.message_id)
            await self._failed(delivery, exc, attempt)
            return
        if dedup is not None:
            await dedup.complete(msg.message_id)
        if msg.reply_to:
            await self._reply(msg, result, error=None)
        self.handled += 1
        await delivery.ack()

    async def _reply(self, msg: OutgoingMessage, result: Any, *, error: str | None) -> None:
        service = self._service
        try:
            body = b"null" if error is not None else service._encode(result)
        except ValidationError as exc:
            body, error = b"null", f"the reply is not JSON-serializable: {exc}"
        headers = {} if error is None else {"x-rtkit-error": _text(error)}
        reply = service._message(
            body,
            headers=headers,
            message_id=None,
            persistent=False,
            correlation_id=msg.correlation_id,
        )
        try:
            await service.connection.publish("", msg.reply_to or "", reply, mandatory=False)
        except RtkitError as exc:
            log.warning("could not send the reply to %s: %s", msg.message_id, exc)

    async def _failed(self, delivery: Delivery, exc: Exception, attempt: int) -> None:
        msg = delivery.message
        error = f"{type(exc).__name__}: {exc}"
        if attempt >= self._retry.max_attempts:
            await self._dead_letter(
                delivery, "handler_failed", type(exc).__qualname__, str(exc), attempt
            )
            return
        service = self._service
        try:
            tier = await service._delay_tier(self.queue, self._retry.delay(attempt))
            headers = _clean_headers(msg.headers)
            headers["x-retry-count"] = attempt
            headers["x-last-error"] = _text(error)
            again = OutgoingMessage(
                body=msg.body,
                message_id=msg.message_id,
                timestamp=msg.timestamp,
                headers=headers,
                content_type=msg.content_type,
                persistent=msg.persistent,
                correlation_id=msg.correlation_id,
                reply_to=msg.reply_to,
            )
            await service.connection.publish("", tier, again, mandatory=True)
        except RtkitError as publish_error:
            log.warning(
                "could not schedule retry %d of %s (%s); requeueing",
                attempt,
                msg.message_id,
                publish_error,
            )
            await delivery.nack(requeue=True)
            return
        self.retried += 1
        await delivery.ack()

    async def _dead_letter(
        self,
        delivery: Delivery,
        reason: DeadLetterReason,
        error_type: str,
        error: str,
        attempts: int,
    ) -> None:
        msg = delivery.message
        log.warning(
            "dead-lettering %s from %s: %s (%s)", msg.message_id, self.queue, reason, error_type
        )
        if msg.reply_to:
            await self._reply(msg, None, error=f"{reason}: {error_type}: {error}")
        dlq = self._service.dead_letter_queue(self.queue)
        if dlq is not None:
            headers = _clean_headers(msg.headers)
            headers.update(
                {
                    "x-death-reason": reason,
                    "x-exception-type": _text(error_type),
                    "x-exception-message": _text(error),
                    "x-attempts": attempts,
                    "x-original-queue": self.queue,
                    "x-original-exchange": delivery.exchange,
                    "x-original-routing-key": delivery.routing_key,
                }
            )
            dead = OutgoingMessage(
                body=msg.body,
                message_id=msg.message_id,
                timestamp=msg.timestamp,
                headers=headers,
                content_type=msg.content_type,
                persistent=msg.persistent,
            )
            try:
                await self._service.connection.publish("", dlq, dead, mandatory=True)
            except RtkitError as exc:
                log.warning("no dead-letter queue %r (%s); rejecting %s", dlq, exc, msg.message_id)
            else:
                self.dead_lettered += 1
                await delivery.ack()
                return
        self.dead_lettered += 1
        await delivery.nack(requeue=False)


class MessageConsumer:
    """Consumes queues: each :meth:`consume` gets its own channel and prefetch window.

    Args:
        service: The connected service.
        dedup: An optional store that makes a handler run at most once per
            ``message_id`` within its window (see :mod:`rtkit.messaging.dedup`).
    """

    def __init__(self, service: RabbitMQService, *, dedup: DedupStore | None = None) -> None:
        self.service = service
        self.dedup = dedup
        self._subscriptions: list[ConsumerHandle] = []

    async def consume(
        self,
        queue: str,
        handler: Handler,
        *,
        prefetch: int = 10,
        retry: RetryPolicy | None = None,
        model: Any = None,
        max_message_bytes: int | None = None,
    ) -> ConsumerHandle:
        """Start handling the messages of ``queue``.

        The handler gets the decoded payload (validated into ``model`` if given),
        and the :class:`Envelope` too if it takes two arguments. Returning acks the
        message (and, for a request, sends the return value as the reply); raising
        retries it per ``retry`` through a delay tier queue, then dead-letters it.
        A body that is not JSON, has another content type, is too large or does not
        validate goes straight to the dead-letter queue with the reason.

        Args:
            queue: The queue to consume.
            handler: ``async def handler(payload)`` or ``async def handler(payload, envelope)``.
            prefetch: Most unacknowledged deliveries at once (so most concurrent handlers).
            retry: The retry policy (default :class:`RetryPolicy` ``()``: 3 attempts).
            model: A pydantic model (or any type pydantic validates) for the payload.
            max_message_bytes: Largest accepted body (default: the service's).
        """
        check_name(queue)
        if not isinstance(prefetch, int) or not 1 <= prefetch <= 65_535:
            raise ValidationError("prefetch must be an integer between 1 and 65535")
        if not callable(handler):
            raise ValidationError("handler must be an async callable")
        self.service._require_connected()
        sub = ConsumerHandle(
            self,
            queue,
            handler,
            retry=retry or RetryPolicy(),
            model=model,
            max_message_bytes=max_message_bytes or self.service.max_message_bytes,
            dedup=self.dedup,
        )
        self.service._subscriptions.add(sub)
        try:
            await sub._start(prefetch)
        except BaseException:
            self.service._subscriptions.discard(sub)
            raise
        self._subscriptions.append(sub)
        return sub

    async def close(self, timeout: float = 10.0) -> None:
        """Stop all of this consumer's handles gracefully (see :meth:`ConsumerHandle.stop`)."""
        subs, self._subscriptions = self._subscriptions, []
        await asyncio.gather(*(s.stop(timeout) for s in subs), return_exceptions=True)
