"""The broker protocol: the few AMQP primitives a messaging backend provides.

[`RabbitMQService`][rtkit.messaging.RabbitMQService] and its producers and
consumers do everything else (encoding, validation, retries through delay tier
queues, dead-lettering, request/reply, graceful shutdown) on top of these. The
in-memory broker (``brokers/memory.py``) is the executable specification; the
RabbitMQ backend (``brokers/amqp.py``) passes the same contract tests.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .._models import ExchangeKind

__all__ = [
    "JSON_CONTENT_TYPE",
    "REPLY_TO",
    "BrokerBackend",
    "BrokerConsumer",
    "Delivery",
    "OutgoingMessage",
]

JSON_CONTENT_TYPE = "application/json"
"""The content type of every message rtkit sends."""

REPLY_TO = "amq.rabbitmq.reply-to"
"""RabbitMQ's direct reply-to pseudo-queue (request/reply without a reply queue)."""


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


class BrokerBackend(Protocol):
    """The AMQP primitives a broker backend provides, each bounded in time.

    A backend is one connection. After :meth:`close` every other method raises
    [`Closed`][rtkit.errors.Closed]; a broker that does not answer raises
    [`BackendUnavailable`][rtkit.errors.BackendUnavailable], a missing queue or
    exchange [`NotFound`][rtkit.errors.NotFound], a re-declaration with other
    settings [`ConfigurationError`][rtkit.errors.ConfigurationError].
    """

    async def connect(self) -> None:
        """Connect, or raise ``BackendUnavailable``."""
        ...

    async def close(self) -> None:
        """Close the connection (also when it never connected)."""
        ...

    async def declare_queue(
        self, name: str, *, durable: bool, arguments: dict[str, Any], passive: bool = False
    ) -> None:
        """Declare a queue (idempotent for equal arguments).

        Other settings than the queue's raise ``ConfigurationError`` naming the
        first argument that differs (see ``brokers/_conflicts.py``), and declare
        nothing. ``passive=True`` declares nothing: it raises ``NotFound`` unless
        the queue exists.
        """
        ...

    async def declare_exchange(
        self, name: str, kind: ExchangeKind, *, durable: bool, passive: bool = False
    ) -> None:
        """Declare an exchange (``passive``: only check that it exists)."""
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
        """Publish and wait for the publisher confirm.

        Headers the broker cannot carry (``rtkit.messaging._headers.check_wire_headers``)
        raise ``ValidationError`` and nothing is sent.
        """
        ...

    async def reply(self, routing_key: str, message: OutgoingMessage) -> None:
        """Send the reply to a request, once, through the default exchange.

        ``routing_key`` is the request's ``reply_to``, which its producer chose:
        a reply must never disrupt this connection's consumers (RabbitMQ 3.x
        closes the connection that publishes to a forged direct reply-to
        address), and is never sent again after a reconnect.
        """
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
