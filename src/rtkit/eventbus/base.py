"""The public EventBus, its events, subscriptions, pattern matching and dispatch.

Every backend shares this module: the backends (``memory.py``, ``redis.py``)
only move encoded events from a publisher to every bus on the same channel;
validation, encoding, pattern matching, handler calls, error isolation and
statistics all live here, so the backends cannot disagree.
"""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar, overload

import pydantic
import pydantic_core

from .._backends import DEFAULT_PREFIX, backend_kind, check_prefix
from .._clock import Clock, SystemClock
from .._ids import new_id
from .._lifecycle import AsyncResource
from ..errors import ConfigurationError, PayloadTooLarge, ValidationError

__all__ = [
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "DEFAULT_PUBLISH_TIMEOUT",
    "MAX_NAME_LENGTH",
    "DeliveryFailure",
    "Event",
    "EventBus",
    "EventBusStats",
    "EventEnvelope",
    "Handler",
    "Pattern",
    "Subscription",
    "Transport",
    "check_event_name",
    "decode_envelope",
    "encode_envelope",
    "matches",
]

T = TypeVar("T")

logger = logging.getLogger("rtkit.eventbus")

DEFAULT_MAX_PAYLOAD_BYTES = 256 * 1024
"""Default bound on the JSON-encoded size of an event's ``data`` (256 KiB)."""

DEFAULT_PUBLISH_TIMEOUT = 5.0
"""Default time, in seconds, a Redis ``publish`` may take before it raises."""

MAX_NAME_LENGTH = 256
"""Longest event name or pattern, in characters."""

_ROUTE_CACHE_SIZE = 4096

# A segment: at least one character, none of them a dot, a wildcard, a space or a control.
_SEGMENT = r"[^.*#\s\x00-\x1f\x7f]+"
_NAME_RE = re.compile(rf"{_SEGMENT}(?:\.{_SEGMENT})*")
_PATTERN_SEGMENT_RE = re.compile(rf"{_SEGMENT}|\*|#")


# --------------------------------------------------------------------------- events


@dataclass(slots=True)
class Event(Generic[T]):
    """One event, as a handler receives it (read-only by convention: it is shared).

    Attributes:
        name: The event name, e.g. ``"order.created"``.
        data: The payload. Without a model it is the JSON form of what was
            published (dicts, lists, str, int, float, bool, None); with a model it
            is an instance of that model. Handlers of one event share it: treat
            it as read-only.
        id: A unique, time-sortable id (UUIDv7) given by the publisher; the same
            in every process that receives the event.
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
class DeliveryFailure:
    """What the ``on_error`` hook receives when something goes wrong in delivery.

    Attributes:
        error: The exception: whatever the handler raised, a
            [`ValidationError`][rtkit.errors.ValidationError] when the payload does not fit the
            subscriber's model, or when a message on the wire cannot be decoded.
        event: The event being delivered (``data`` not yet parsed to the model);
            ``None`` when the message could not be decoded at all.
        subscription: The subscription whose handler failed; ``None`` when no
            handler was involved (an undecodable message).
    """

    error: Exception
    event: Event[Any] | None
    subscription: Subscription | None


ErrorHook = Callable[[DeliveryFailure], Awaitable[Any] | None]


@dataclass(frozen=True, slots=True)
class EventBusStats:
    """A snapshot of an EventBus's counters (all counted since the bus was created).

    Attributes:
        backend: ``"memory"`` or ``"redis"``.
        listeners: Number of active subscriptions per pattern (patterns with none
            are left out), like the seed's ``getStats()``.
        published: Events this bus published.
        received: Events this bus received for dispatch (on Redis, also those
            other processes published).
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


# --------------------------------------------------------------------------- patterns


def check_event_name(name: Any) -> str:
    """Return ``name`` if it is a valid event name, else raise a validation error.

    Raises [`ValidationError`][rtkit.errors.ValidationError] for an invalid name.

    An event name is one or more dot-separated segments (``"user.registered"``,
    ``"chat:message"``), at most 256 characters; a segment is
    not empty and holds no ``*``, ``#``, whitespace or control character.
    """
    if not isinstance(name, str):
        raise ValidationError(f"an event name must be a string, got {type(name).__name__}")
    if len(name) > MAX_NAME_LENGTH:
        raise ValidationError(f"event name longer than {MAX_NAME_LENGTH} characters")
    if not _NAME_RE.fullmatch(name):
        raise ValidationError(
            f"invalid event name {name!r}: use dot-separated, non-empty segments "
            "without '*', '#', whitespace or control characters"
        )
    return name


class Pattern:
    """A compiled subscription pattern; the one matcher every backend uses.

    * ``"*"`` alone matches every event (the seed's wildcard).
    * Otherwise the pattern is dot-separated segments, AMQP topic style: a
      literal segment matches itself, ``*`` matches exactly one segment and
      ``#`` matches zero or more segments. ``"order.*"`` matches
      ``"order.created"`` but neither ``"order"`` nor ``"order.item.added"``;
      ``"order.#"`` matches all three.

    Matching runs in ``O(len(pattern) * len(name))`` whatever the pattern (no
    backtracking). Invalid patterns raise [`ValidationError`][rtkit.errors.ValidationError].
    """

    __slots__ = ("_literal", "_segments", "text")

    def __init__(self, text: str) -> None:
        if not isinstance(text, str):
            raise ValidationError(f"a pattern must be a string, got {type(text).__name__}")
        if len(text) > MAX_NAME_LENGTH:
            raise ValidationError(f"pattern longer than {MAX_NAME_LENGTH} characters")
        segments = text.split(".")
        if not text or not all(_PATTERN_SEGMENT_RE.fullmatch(s) for s in segments):
            raise ValidationError(
                f"invalid pattern {text!r}: use dot-separated segments, each a name, "
                "'*' (one segment) or '#' (zero or more segments)"
            )
        self.text = text
        self._literal = "*" not in segments and "#" not in segments
        # "*" alone is every event, the same as "#"; runs of "#" are one "#".
        if text == "*":
            segments = ["#"]
        compact: list[str] = []
        for segment in segments:
            if not (segment == "#" and compact and compact[-1] == "#"):
                compact.append(segment)
        self._segments = tuple(compact)

    def __repr__(self) -> str:
        return f"Pattern({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Pattern) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def matches(self, name: str) -> bool:
        """Whether the event ``name`` matches this pattern."""
        if self._literal:
            return name == self.text
        pattern = self._segments
        end = len(pattern)
        # The set of pattern positions reachable after the words consumed so far.
        states = self._closure({0})
        for word in name.split("."):
            advanced: set[int] = set()
            for i in states:
                if i < end:
                    segment = pattern[i]
                    if segment == "#":
                        advanced.add(i)
                    elif segment == "*" or segment == word:
                        advanced.add(i + 1)
            if not advanced:
                return False
            states = self._closure(advanced)
        return end in states

    def _closure(self, states: set[int]) -> set[int]:
        """Add the positions reachable by letting a ``#`` match nothing."""
        pattern = self._segments
        for i in sorted(states):
            j = i
            while j < len(pattern) and pattern[j] == "#":
                j += 1
                states.add(j)
        return states


def matches(pattern: str, name: str) -> bool:
    """Whether the event ``name`` matches ``pattern`` (see [`Pattern`][rtkit.eventbus.Pattern])."""
    return Pattern(pattern).matches(name)


# --------------------------------------------------------------------------- the wire


class EventEnvelope(pydantic.BaseModel):
    """An event on the wire (one JSON object per Redis pub/sub message).

    ``{"id": "<uuid7>", "name": "order.created", "ts": 1700000000.5, "data": {...}}``
    """

    model_config = pydantic.ConfigDict(extra="ignore", frozen=True)

    id: str = pydantic.Field(min_length=1, max_length=64)
    name: str = pydantic.Field(min_length=1, max_length=MAX_NAME_LENGTH)
    ts: float
    data: Any = None


def encode_envelope(name: str, event_id: str, timestamp: float, data: bytes) -> bytes:
    """The wire form of an event whose ``data`` is already JSON-encoded."""
    return b"".join(
        (
            b'{"id":',
            pydantic_core.to_json(event_id),
            b',"name":',
            pydantic_core.to_json(name),
            b',"ts":',
            repr(float(timestamp)).encode(),
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
        raise ValidationError(f"undecodable event message: {_describe(exc)}") from None


def _describe(exc: pydantic.ValidationError) -> str:
    """What is wrong, field by field, without echoing the input (it may hold secrets)."""
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or 'value'}: {error['msg']}"
        for error in exc.errors(include_url=False, include_input=False)
    )


# --------------------------------------------------------------------------- transports


Deliver = Callable[[str, str, float, Any], Awaitable[None]]
"""``deliver(name, event_id, timestamp, data)``: hands a received event to the bus."""

Report = Callable[[DeliveryFailure], Awaitable[None]]
"""``report(failure)``: hands a message that could not be delivered to the bus."""


class Transport(Protocol):
    """How an [`EventBus`][rtkit.eventbus.EventBus] moves events; one implementation per backend.

    A transport carries encoded events to every bus on the same channel,
    including the publishing bus itself, exactly once each, and calls
    ``deliver`` (or ``report`` for a message it cannot decode) for each one.
    """

    kind: str
    """The backend name shown in [`EventBus.stats`][rtkit.eventbus.EventBus.stats]."""

    reconnects: int
    """Times the transport re-established its subscription."""

    async def start(self, deliver: Deliver, report: Report, *, receive: bool) -> None:
        """Connect; with ``receive``, also begin receiving events.

        Returns once events published from now on arrive.
        """
        ...

    async def close(self) -> None:
        """Stop receiving and release connections."""
        ...

    def send(self, name: str, event_id: str, timestamp: float, data: bytes) -> Awaitable[None]:
        """Publish one event (``data`` is JSON); an ``async def`` usually.

        Raises:
            rtkit.errors.BackendUnavailable: The backend did not accept it in time.
        """
        ...


# --------------------------------------------------------------------------- subscriptions


class Subscription:
    """A handler subscribed to a pattern.

    Returned by [`EventBus.subscribe`][rtkit.eventbus.EventBus.subscribe].
    Calling it, or calling [`unsubscribe`][rtkit.eventbus.Subscription.unsubscribe],
    removes the handler (like the function the seed's ``subscribe`` returns);
    doing so twice is harmless.
    """

    __slots__ = (
        "_active",
        "_adapter",
        "_bus",
        "_is_coroutine",
        "_matcher",
        "_plain",
        "handler",
        "once",
        "pattern",
    )

    def __init__(
        self,
        bus: EventBus,
        pattern: Pattern,
        handler: Handler[Any],
        model: Any,
        once: bool,
    ) -> None:
        self._bus = bus
        self._matcher = pattern
        self.pattern: str = pattern.text
        """The pattern subscribed to."""
        self.handler: Handler[Any] = handler
        """The handler called for each matching event."""
        self.once: bool = once
        """Whether the subscription ends after the first matching event."""
        self._adapter: pydantic.TypeAdapter[Any] | None = (
            None if model is None else pydantic.TypeAdapter(model)
        )
        self._is_coroutine = inspect.iscoroutinefunction(handler)
        # The common case, handled by the fast path of EventBus._deliver.
        self._plain = self._is_coroutine and not once and model is None
        self._active = True

    @property
    def active(self) -> bool:
        """``True`` until the subscription is removed (or a once-subscription fired)."""
        return self._active

    def unsubscribe(self) -> None:
        """Remove the handler; it receives no further events."""
        if self._active:
            self._bus._remove(self)

    def __call__(self) -> None:
        """The same as [`unsubscribe`][rtkit.eventbus.Subscription.unsubscribe]."""
        self.unsubscribe()

    def __repr__(self) -> str:
        state = "active" if self._active else "removed"
        return f"<Subscription {self.pattern!r} {self.handler!r} {state}>"


# --------------------------------------------------------------------------- the bus


class EventBus(AsyncResource):
    """Publish/subscribe of typed events, in one process or across processes.

    ``EventBus()`` is an in-process bus (the memory backend);
    [`from_url`][rtkit.eventbus.EventBus.from_url] picks the backend from a URL. Use it as
    ``async with bus:`` (or call [`start`][rtkit.eventbus.EventBus.start] and
    [`close`][rtkit.eventbus.EventBus.close]).

    Delivery contract, the same on every backend:

    * every bus on the same channel (one process for memory; the same Redis and
      prefix for Redis) receives each published event exactly once, the
      publishing bus included, and calls each matching subscription's handler
      once (one subscription = one call, even when the same handler is
      subscribed twice);
    * each subscription sees the events of one publisher in publish order;
      handlers of one bus run one after the other, in subscription order;
    * a handler that raises, or an event whose payload does not fit the
      subscriber's model, goes to ``on_error`` and is counted in
      [`stats`][rtkit.eventbus.EventBus.stats]; it never stops other handlers nor the publisher.

    ``await publish(...)`` returns once the backend accepted the event: on
    memory, after every matching handler of this bus has run; on Redis, once
    Redis has taken the message (handlers run when it comes back, in every
    process). A handler may publish further events.

    Args:
        max_payload_bytes: The largest JSON-encoded ``data`` accepted by
            [`publish`][rtkit.eventbus.EventBus.publish]
            ([`PayloadTooLarge`][rtkit.errors.PayloadTooLarge] past it).
        on_error: Called with a [`DeliveryFailure`][rtkit.eventbus.DeliveryFailure] for every failed
            delivery (a function or coroutine function). The default logs the
            error (never the payload) on the ``rtkit.eventbus`` logger.
        clock: Where event timestamps come from (default: the system clock).
        transport: The backend; default an in-process (memory) transport. Use
            [`from_url`][rtkit.eventbus.EventBus.from_url] rather than passing one.
        publish_only: A bus that only publishes: it never receives (on Redis it
            does not even subscribe to the channel, which saves reading every
            event of the prefix back) and [`subscribe`][rtkit.eventbus.EventBus.subscribe] raises
            [`ConfigurationError`][rtkit.errors.ConfigurationError].
    """

    def __init__(
        self,
        *,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        on_error: ErrorHook | None = None,
        clock: Clock | None = None,
        transport: Transport | None = None,
        publish_only: bool = False,
    ) -> None:
        if not isinstance(max_payload_bytes, int) or max_payload_bytes < 1:
            raise ConfigurationError(
                f"max_payload_bytes must be a positive int, got {max_payload_bytes!r}"
            )
        if transport is None:
            from .memory import MemoryTransport

            transport = MemoryTransport()
        self._transport = transport
        self._max_payload_bytes = max_payload_bytes
        self._on_error = on_error
        self._publish_only = publish_only
        self._clock: Clock = clock or SystemClock()
        self._subscriptions: list[Subscription] = []
        self._routes: dict[str, tuple[Subscription, ...]] = {}
        self._state = "new"
        self._published = 0
        self._received = 0
        self._delivered = 0
        self._errors = 0

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        redis: Any = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        publish_timeout: float = DEFAULT_PUBLISH_TIMEOUT,
        on_error: ErrorHook | None = None,
        clock: Clock | None = None,
        ping_interval: float = 5.0,
        ping_timeout: float = 3.0,
        publish_only: bool = False,
    ) -> EventBus:
        """Make an EventBus on the backend that ``url`` names.

        Args:
            url: ``memory://`` (this process only) or ``redis://host:port/db``
                (also ``rediss://``, ``unix://``): every bus on the same Redis
                and prefix, in any process, receives every event.
            prefix: Redis key/channel prefix; buses with different prefixes
                never see each other's events. The channel is
                ``<prefix>eventbus:events``.
            redis: A ``redis.asyncio.Redis`` to borrow (made with
                ``decode_responses=True``, e.g. by [`rtkit.redis_client`][rtkit.redis_client]);
                it is never closed by the bus. ``url`` then only picks the kind.
            max_payload_bytes: See [`EventBus`][rtkit.eventbus.EventBus].
            publish_timeout: Longest time, in seconds, a Redis publish may take;
                past it (or at once when Redis refuses connections)
                [`publish`][rtkit.eventbus.EventBus.publish] raises
                [`BackendUnavailable`][rtkit.errors.BackendUnavailable]. Also
                bounds [`start`][rtkit.eventbus.EventBus.start].
            on_error: See [`EventBus`][rtkit.eventbus.EventBus].
            clock: See [`EventBus`][rtkit.eventbus.EventBus].
            ping_interval: Redis only: after this many idle seconds the
                subscription connection is PINGed.
            ping_timeout: Redis only: when the PING is not answered within this
                many seconds the subscription is considered dead and is
                re-established.
            publish_only: See [`EventBus`][rtkit.eventbus.EventBus].

        Raises:
            rtkit.errors.ConfigurationError: An unknown scheme, a malformed URL or a bad
                prefix or setting.
        """
        check_prefix(prefix)
        scheme = url.partition(":")[0].lower() if isinstance(url, str) else ""
        if redis is not None and scheme in {"redis", "rediss", "unix"}:
            kind = "redis"
        else:
            kind = backend_kind(url, component="EventBus", allowed=("memory", "redis"))
        transport: Transport
        if kind == "memory":
            from .memory import MemoryTransport

            transport = MemoryTransport()
        else:
            from .redis import RedisTransport

            transport = RedisTransport(
                url,
                prefix=prefix,
                client=redis,
                publish_timeout=publish_timeout,
                ping_interval=ping_interval,
                ping_timeout=ping_timeout,
            )
        return cls(
            max_payload_bytes=max_payload_bytes,
            on_error=on_error,
            clock=clock,
            transport=transport,
            publish_only=publish_only,
        )

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Connect and begin receiving events (idempotent).

        Raises:
            rtkit.errors.BackendUnavailable: The backend did not answer in time.
            RuntimeError: The bus was closed.
        """
        if self._state == "started":
            return
        if self._state == "closed":
            raise RuntimeError("this EventBus is closed; make a new one")
        await self._transport.start(self._deliver, self._report, receive=not self._publish_only)
        self._state = "started"

    async def close(self) -> None:
        """Stop receiving events and release connections (idempotent).

        Subscriptions stay registered but receive nothing more; publishing on a
        closed bus raises ``RuntimeError``.
        """
        if self._state == "closed":
            return
        was_started = self._state == "started"
        self._state = "closed"
        if was_started:
            await self._transport.close()

    # ------------------------------------------------------------------ subscribing

    @overload
    def subscribe(
        self, pattern: str, handler: Handler[Any], *, model: None = None
    ) -> Subscription: ...

    @overload
    def subscribe(self, pattern: str, handler: Handler[T], *, model: type[T]) -> Subscription: ...

    def subscribe(self, pattern: str, handler: Handler[Any], *, model: Any = None) -> Subscription:
        """Call ``handler(event)`` for every event whose name matches ``pattern``.

        Takes effect at once (on Redis the bus already listens to every event of
        its prefix), also before [`start`][rtkit.eventbus.EventBus.start].

        Args:
            pattern: An event name, ``"*"`` for every event, or a dotted pattern
                with ``*`` (one segment) and ``#`` (zero or more), see
                [`Pattern`][rtkit.eventbus.Pattern].
            handler: A function or coroutine function taking one [`Event`][rtkit.eventbus.Event].
            model: A pydantic model (or any type pydantic validates): ``event.data``
                is then parsed to it; a payload that does not fit goes to
                ``on_error`` instead of the handler.

        Returns:
            The [`Subscription`][rtkit.eventbus.Subscription]; call it (or its
            ``unsubscribe``) to stop.

        Raises:
            rtkit.errors.ValidationError: ``pattern`` is invalid.
            TypeError: ``handler`` is not callable.
        """
        return self._add(pattern, handler, model, once=False)

    @overload
    def subscribe_once(
        self, pattern: str, handler: Handler[Any], *, model: None = None
    ) -> Subscription: ...

    @overload
    def subscribe_once(
        self, pattern: str, handler: Handler[T], *, model: type[T]
    ) -> Subscription: ...

    def subscribe_once(
        self, pattern: str, handler: Handler[Any], *, model: Any = None
    ) -> Subscription:
        """Like [`subscribe`][rtkit.eventbus.EventBus.subscribe], for the first matching event only.

        The subscription is removed before the handler runs, so the handler
        runs at most once even if it publishes a matching event itself. The
        first matching event ends it even if its payload fails the model.
        """
        return self._add(pattern, handler, model, once=True)

    def unsubscribe(self, pattern: str, handler: Handler[Any]) -> int:
        """Remove every subscription of ``handler`` to exactly ``pattern``.

        Returns:
            How many subscriptions were removed (0 if there were none).
        """
        found = [s for s in self._subscriptions if s.pattern == pattern and s.handler == handler]
        for subscription in found:
            self._remove(subscription)
        return len(found)

    def _add(self, pattern: str, handler: Handler[Any], model: Any, *, once: bool) -> Subscription:
        if self._publish_only:
            raise ConfigurationError("this EventBus is publish_only: it cannot subscribe")
        if not callable(handler):
            raise TypeError(f"handler must be callable, got {type(handler).__name__}")
        subscription = Subscription(self, Pattern(pattern), handler, model, once)
        self._subscriptions.append(subscription)
        self._routes.clear()
        return subscription

    def _remove(self, subscription: Subscription) -> None:
        subscription._active = False
        try:
            self._subscriptions.remove(subscription)
        except ValueError:
            return
        self._routes.clear()

    # ------------------------------------------------------------------ publishing

    async def publish(self, event_name: str, data: Any = None) -> str:
        """Publish an event to every matching subscriber on this bus's channel.

        Args:
            event_name: A dotted event name such as ``"order.created"`` (see
                [`check_event_name`][rtkit.eventbus.check_event_name]).
            data: Anything JSON-able, or a pydantic model (sent as its JSON
                form). Datetimes, UUIDs, dataclasses and the like are encoded
                the way pydantic encodes them.

        Returns:
            The new event's id.

        Raises:
            rtkit.errors.ValidationError: A bad event name, or ``data`` is not JSON-able.
            rtkit.errors.PayloadTooLarge: The encoded ``data`` exceeds ``max_payload_bytes``.
            rtkit.errors.BackendUnavailable: Redis did not accept the event within
                ``publish_timeout``.
            RuntimeError: The bus is not started, or closed.
        """
        if self._state != "started":
            raise RuntimeError(
                "this EventBus is not running: use 'async with bus:' or 'await bus.start()'"
                if self._state == "new"
                else "this EventBus is closed"
            )
        if event_name not in self._routes:
            check_event_name(event_name)
        try:
            raw = pydantic_core.to_json(data)
        except pydantic_core.PydanticSerializationError as exc:
            raise ValidationError(f"event data for {event_name!r} is not JSON-able: {exc}") from exc
        if len(raw) > self._max_payload_bytes:
            raise PayloadTooLarge(
                f"event {event_name!r} data is {len(raw)} bytes, "
                f"more than max_payload_bytes={self._max_payload_bytes}"
            )
        event_id = new_id()
        self._published += 1
        await self._transport.send(event_name, event_id, self._clock.time(), raw)
        return event_id

    # ------------------------------------------------------------------ dispatch

    def _route(self, name: str) -> tuple[Subscription, ...]:
        routes = self._routes
        found = routes.get(name)
        if found is None:
            found = tuple(s for s in self._subscriptions if s._matcher.matches(name))
            if len(routes) >= _ROUTE_CACHE_SIZE:
                routes.clear()
            routes[name] = found
        return found

    async def _deliver(self, name: str, event_id: str, timestamp: float, data: Any) -> None:
        """Run every matching handler of this bus for one received event."""
        self._received += 1
        subscriptions = self._routes.get(name)
        if subscriptions is None:
            subscriptions = self._route(name)
        if not subscriptions:
            return
        event: Event[Any] = Event(name, data, event_id, timestamp)
        for subscription in subscriptions:
            if not subscription._active:
                continue
            if subscription._plain:  # a coroutine function, no model, not once
                try:
                    await subscription.handler(event)  # type: ignore[misc]
                except Exception as exc:
                    await self._report(DeliveryFailure(exc, event, subscription))
                else:
                    self._delivered += 1
            else:
                await self._deliver_one(subscription, event)

    async def _deliver_one(self, subscription: Subscription, event: Event[Any]) -> None:
        """The general case: once-subscriptions, models, sync handlers."""
        if subscription.once:
            self._remove(subscription)
        delivered = event
        if subscription._adapter is not None:
            try:
                parsed = subscription._adapter.validate_python(event.data)
            except pydantic.ValidationError as exc:
                error = ValidationError(
                    f"event {event.name!r} does not fit the subscriber's model: {_describe(exc)}"
                )
                await self._report(DeliveryFailure(error, event, subscription))
                return
            delivered = Event(event.name, parsed, event.id, event.timestamp)
        try:
            if subscription._is_coroutine:
                await subscription.handler(delivered)  # type: ignore[misc]
            else:
                result = subscription.handler(delivered)
                if result is not None and inspect.isawaitable(result):
                    await result
        except Exception as exc:
            await self._report(DeliveryFailure(exc, event, subscription))
        else:
            self._delivered += 1

    async def _report(self, failure: DeliveryFailure) -> None:
        """Count a failed delivery and hand it to the error hook (which may not raise)."""
        self._errors += 1
        hook = self._on_error
        if hook is None:
            logger.error(
                "event %r (id %s) could not be delivered to %r: %s: %s",
                failure.event.name if failure.event else None,
                failure.event.id if failure.event else None,
                failure.subscription.pattern if failure.subscription else None,
                type(failure.error).__name__,
                failure.error,
                exc_info=failure.error,
            )
            return
        try:
            result = hook(failure)
            if result is not None and inspect.isawaitable(result):
                await result
        except Exception:
            logger.exception("the EventBus on_error hook raised")

    # ------------------------------------------------------------------ stats

    def stats(self) -> EventBusStats:
        """Listener counts per pattern and the bus's counters."""
        listeners: dict[str, int] = {}
        for subscription in self._subscriptions:
            listeners[subscription.pattern] = listeners.get(subscription.pattern, 0) + 1
        return EventBusStats(
            backend=self._transport.kind,
            listeners=listeners,
            published=self._published,
            received=self._received,
            delivered=self._delivered,
            errors=self._errors,
            reconnects=self._transport.reconnects,
        )

    def __repr__(self) -> str:
        return f"<EventBus {self._transport.kind} {self._state}>"
