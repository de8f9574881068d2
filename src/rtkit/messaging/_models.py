"""The data types of messaging: what handlers receive and what a dead letter says.

Imports no component and no backend, so the broker protocol can use it too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

import pydantic

__all__ = [
    "DeadLetterReason",
    "Envelope",
    "ExchangeKind",
    "Handler",
    "ReceivedMessage",
    "int_header",
]

ExchangeKind: TypeAlias = Literal["direct", "topic", "fanout"]
"""The exchange types rtkit declares."""

DeadLetterReason: TypeAlias = Literal[
    "handler_failed", "validation_failed", "invalid_json", "content_type", "too_large"
]
"""Why a message went to a dead-letter queue (the ``x-death-reason`` header)."""

Handler: TypeAlias = Callable[..., Awaitable[Any]]
"""An async handler: ``async def h(payload)`` or ``async def h(payload, envelope)``."""


def int_header(value: Any, default: int) -> int:
    """A header read as a non-negative ``int`` (``default`` if it is not a number)."""
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return default


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
    """A message taken from a queue with ``RabbitMQService.get`` (e.g. a dead letter).

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
        return int_header(self.headers.get("x-attempts"), 0)
