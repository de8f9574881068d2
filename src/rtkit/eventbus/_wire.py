"""An event on the wire: one JSON object per message.

``{"id": "<uuid7>", "name": "order.created", "ts": 1700000000.5, "data": {...}}``

With tracing on, the publisher adds ``"trace": {"traceparent": ..., "tracestate": ...}``
(W3C trace context, see ``rtkit.telemetry``); readers that do not know it ignore it.

Any program can publish events to an rtkit bus on Redis this way; a message
that does not parse goes to the bus's ``on_error`` hook.
"""

from __future__ import annotations

from typing import Any

import pydantic
import pydantic_core

from ..errors import ValidationError
from ..telemetry._bus import OUTGOING
from ._events import MAX_EVENT_NAME

__all__ = [
    "EventEnvelope",
    "decode_envelope",
    "describe",
    "encode_envelope",
    "validate_envelope",
]


class EventEnvelope(pydantic.BaseModel):
    """An event as it travels between processes."""

    model_config = pydantic.ConfigDict(extra="ignore", frozen=True)

    id: str = pydantic.Field(min_length=1, max_length=64)
    name: str = pydantic.Field(min_length=1, max_length=MAX_EVENT_NAME)
    ts: float
    data: Any = None
    trace: Any = None  # the publisher's trace context, checked where it is used


def encode_envelope(name: str, event_id: str, timestamp: float, data: bytes) -> bytes:
    """The wire form of an event whose ``data`` is already JSON-encoded.

    Inside an instrumented publish (tracing on), the publisher's trace context goes along.
    """
    trace = OUTGOING.get()
    return b"".join(
        (
            b'{"id":',
            pydantic_core.to_json(event_id),
            b',"name":',
            pydantic_core.to_json(name),
            b',"ts":',
            repr(float(timestamp)).encode(),
            b"" if trace is None else b',"trace":' + pydantic_core.to_json(trace),
            b',"data":',
            data,
            b"}",
        )
    )


def decode_envelope(raw: str | bytes) -> EventEnvelope:
    """Parse a message from the wire.

    Raises:
        rtkit.errors.ValidationError: The message is malformed.
    """
    try:
        return EventEnvelope.model_validate_json(raw)
    except pydantic.ValidationError as exc:
        raise ValidationError(f"undecodable event message: {describe(exc)}") from None


def validate_envelope(parsed: Any) -> EventEnvelope:
    """Check a message already parsed from JSON (the same rules as :func:`decode_envelope`).

    Raises:
        rtkit.errors.ValidationError: The message is malformed.
    """
    try:
        return EventEnvelope.model_validate(parsed)
    except pydantic.ValidationError as exc:
        raise ValidationError(f"undecodable event message: {describe(exc)}") from None


def describe(exc: pydantic.ValidationError) -> str:
    """What is wrong, field by field, without echoing the input (it may hold secrets)."""
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or 'value'}: {error['msg']}"
        for error in exc.errors(include_url=False, include_input=False)
    )
