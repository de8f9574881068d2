"""What the EventBus passes around: events, statistics, and its event-name and pattern rules.

A data module: it imports no backend and not the bus, so the backend protocol,
the backends and the bus can all use it.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from .._core.topic import TopicPattern
from ..errors import ValidationError

__all__ = [
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "MAX_EVENT_NAME",
    "Event",
    "EventBusStats",
    "Handler",
    "check_event_name",
    "compile_pattern",
]

T = TypeVar("T")

DEFAULT_MAX_PAYLOAD_BYTES = 256 * 1024
"""Default bound on the JSON-encoded size of an event's ``data`` (256 KiB)."""

MAX_EVENT_NAME = 256
"""Longest event name or pattern, in characters (the bus's own rule: names are
dotted segments of any text, not the core's application names)."""

# A segment: at least one character, none of them a dot, a wildcard, a space or a control.
_SEGMENT = r"[^.*#\s\x00-\x1f\x7f]+"
_NAME_RE = re.compile(rf"{_SEGMENT}(?:\.{_SEGMENT})*")
_PATTERN_SEGMENT_RE = re.compile(rf"{_SEGMENT}|\*|#")


@dataclass(slots=True)
class Event(Generic[T]):
    """One event, as a handler receives it (read-only by convention: it is shared).

    Attributes:
        name: The event name, e.g. ``"order.created"``.
        data: The payload. Without a model it is the JSON form of what was
            published (dicts, lists, str, int, float, bool, None); with a model it
            is an instance of that model. Handlers of one event on one bus share
            it: treat it as read-only.
        id: A unique, time-sortable id (UUIDv7) given by the publisher; the same
            on every bus that receives the event.
        timestamp: When the event was published, in seconds since the Unix epoch
            (from the publishing bus's clock).
    """

    name: str
    data: T
    id: str
    timestamp: float


Handler = Callable[[Event[T]], Awaitable[Any] | None]
"""A handler: a function or coroutine function taking one [`Event`][rtkit.eventbus.Event]."""


@dataclass(frozen=True, slots=True)
class EventBusStats:
    """A snapshot of an EventBus's counters (all counted since the bus was created).

    Attributes:
        backend: ``"memory"`` or ``"redis"``.
        listeners: Number of active subscriptions per pattern (patterns with none
            are left out).
        published: Events this bus published.
        received: Events that matched a subscription of this bus (also those
            other buses on the same ``memory://NAME`` or Redis published).
        delivered: Handler calls that returned without an error.
        errors: Handler errors, payloads rejected by a subscriber's model and
            undecodable messages; each one also went to the ``on_error`` hook.
        reconnects: Times the Redis subscription was re-established (0 on memory).
    """

    backend: str
    listeners: Mapping[str, int] = field(default_factory=dict)
    published: int = 0
    received: int = 0
    delivered: int = 0
    errors: int = 0
    reconnects: int = 0


def check_event_name(name: Any) -> str:
    """Return ``name`` if it is a valid event name, else raise ``ValidationError``.

    An event name is one or more dot-separated segments (``"user.registered"``,
    ``"chat:message"``), at most 256 characters; a segment is not empty and
    holds no ``*``, ``#``, whitespace or control character.
    """
    if not isinstance(name, str):
        raise ValidationError(f"an event name must be a string, got {type(name).__name__}")
    if len(name) > MAX_EVENT_NAME:
        raise ValidationError(f"event name longer than {MAX_EVENT_NAME} characters")
    if not _NAME_RE.fullmatch(name):
        raise ValidationError(
            f"invalid event name {name!r}: use dot-separated, non-empty segments "
            "without '*', '#', whitespace or control characters"
        )
    return name


def compile_pattern(text: Any) -> TopicPattern:
    """Check a subscription pattern and compile it to the one topic matcher.

    * ``"*"`` alone matches every event (a wildcard subscription): it compiles as ``#``.
    * Otherwise the pattern is dot-separated segments, AMQP topic style: a
      literal segment matches itself, ``*`` exactly one segment and ``#`` zero
      or more segments.

    Raises:
        rtkit.errors.ValidationError: An invalid pattern.
    """
    if not isinstance(text, str):
        raise ValidationError(f"a pattern must be a string, got {type(text).__name__}")
    if len(text) > MAX_EVENT_NAME:
        raise ValidationError(f"pattern longer than {MAX_EVENT_NAME} characters")
    if not text or not all(_PATTERN_SEGMENT_RE.fullmatch(s) for s in text.split(".")):
        raise ValidationError(
            f"invalid pattern {text!r}: use dot-separated segments, each a name, "
            "'*' (one segment) or '#' (zero or more segments)"
        )
    return TopicPattern("#" if text == "*" else text)
