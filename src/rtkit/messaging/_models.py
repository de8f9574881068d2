"""The data types of messaging: what handlers receive and what a dead letter says.

Imports no component and no backend, so the broker protocol can use it too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

import pydantic

from ._headers import count_header

__all__ = [
    "DeadLetterReason",
    "Envelope",
    "ExchangeKind",
    "Handler",
    "ReceivedMessage",
]

ExchangeKind: TypeAlias = Literal["direct", "topic", "fanout"]
"""The exchange types rtkit declares."""

DeadLetterReason: TypeAlias = Literal[
    "handler_failed",
    "validation_failed",
    "invalid_json",
    "content_type",
    "too_large",
    "too_deep",
    "invalid_headers",
    "internal_error",
]
"""Why a message went to a dead-letter queue (the ``x-death-reason`` header).

``handler_failed``: the handler raised on its last attempt; ``validation_failed``:
the payload does not fit the ``model``; ``invalid_json``: the body is not JSON;
``content_type``: another content type; ``too_large``: the body is larger than
``max_message_bytes``; ``too_deep``: the JSON nests deeper than 32 levels;
``invalid_headers``: the client could not decode the message's headers;
``internal_error``: rtkit itself failed on this message (a bug: please report it).
"""

Handler: TypeAlias = Callable[..., Awaitable[Any]]
"""An async handler: ``async def h(payload)`` or ``async def h(payload, envelope)``."""


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
        return count_header(self.headers.get("x-attempts"), 0)
