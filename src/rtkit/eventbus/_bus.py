"""The public EventBus: subscriptions, publishing and dispatch, the same on every backend.

A backend (``backends/memory.py``, ``backends/redis.py``) only moves encoded
events from a publisher to every bus on the same channel; validation, encoding,
pattern matching, handler calls, error isolation and statistics all live here,
so the backends cannot disagree.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar, overload

import pydantic
import pydantic_core
from uuid_utils import uuid7 as _uuid7

from .._core.clock import Clock, SystemClock
from .._core.component import Component
from .._core.topic import TopicPattern
from .._core.validate import check_int
from ..errors import ConfigurationError, PayloadTooLarge, ValidationError
from ..telemetry._bus import BusHooks, instrument_bus
from ._events import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    Event,
    EventBusStats,
    Handler,
    check_event_name,
    compile_pattern,
)
from ._wire import describe
from .backends.base import EventBusBackend
from .backends.memory import MemoryEventBusBackend

__all__ = ["DeliveryFailure", "EventBus", "Subscription"]

T = TypeVar("T")

logger = logging.getLogger("rtkit.eventbus")

_ROUTE_CACHE_SIZE = 4096
_to_json = pydantic_core.to_json
_from_json = pydantic_core.from_json
_new = object.__new__


@dataclass(frozen=True, slots=True)
class DeliveryFailure:
    """What the ``on_error`` hook receives when something goes wrong in delivery.

    Attributes:
        error: The exception: whatever the handler raised, a
            [`ValidationError`][rtkit.errors.ValidationError] when the payload does
            not fit the subscriber's model, or when a message on the wire cannot
            be decoded.
        event: The event being delivered (``data`` not yet parsed to the model);
            ``None`` when the message could not be decoded at all.
        subscription: The subscription whose handler failed; ``None`` when no
            handler was involved (an undecodable message).
    """

    error: Exception
    event: Event[Any] | None
    subscription: Subscription | None


ErrorHook = Callable[[DeliveryFailure], Awaitable[Any] | None]


class Subscription:
    """A handler subscribed to a pattern.

    Returned by [`EventBus.subscribe`][rtkit.eventbus.EventBus.subscribe].
    Calling it, or calling [`unsubscribe`][rtkit.eventbus.Subscription.unsubscribe],
    removes the handler (like the function a Node.js-style ``subscribe`` returns);
    doing so twice, or after the bus closed, is harmless.
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
        self, bus: EventBus, pattern: str, handler: Handler[Any], model: Any, once: bool
    ) -> None:
        self._bus = bus
        self._matcher: TopicPattern = compile_pattern(pattern)
        self.pattern: str = pattern
        """The pattern subscribed to."""
        self.handler: Handler[Any] = handler
        """The handler called for each matching event."""
        self.once: bool = once
        """Whether the subscription ends after the first matching event."""
        self._adapter: pydantic.TypeAdapter[Any] | None = (
            None if model is None else pydantic.TypeAdapter(model)
        )
        self._is_coroutine = inspect.iscoroutinefunction(handler)
        # The common case, handled by the fast path of EventBus._deliver (and never
        # true once the subscription is removed, so that one check does for both).
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


class EventBus(Component):
    """Publish/subscribe of typed events, in one process or across processes.

    ``EventBus()`` is a bus of its own in this process (a private memory
    backend); ``EventBus.from_url(url, **options)`` picks the backend from a URL:
    ``memory://`` (private), ``memory://NAME`` (every bus of that name and
    prefix in this process shares one channel) or ``redis://...`` (every bus on
    that Redis and prefix, in any process). ``from_url`` takes the options below
    and the Redis backend's: ``timeout`` (bound on each publish round trip and
    on subscribing, default 5 s), ``ping_interval`` (idle seconds before the
    subscription is PINGed, default 5) and ``ping_timeout`` (seconds without a
    PONG before it is re-established, default 3).

    ``publish`` starts a new bus; ``async with bus:`` or
    [`start`][rtkit.eventbus.EventBus.start] start it explicitly, and
    [`close`][rtkit.eventbus.EventBus.close] ends it: afterwards ``publish``,
    ``subscribe``, ``subscribe_once`` and ``unsubscribe`` raise
    [`Closed`][rtkit.errors.Closed] (``stats()`` stays readable).

    Delivery contract, the same on every backend:

    * every bus on the same channel receives each published event exactly once,
      the publishing bus included, and calls each matching subscription's
      handler once (one subscription = one call, even when the same handler is
      subscribed twice);
    * each subscription sees the events of one publisher in publish order;
      handlers of one bus run one after the other, in subscription order;
    * a handler that raises, or an event whose payload does not fit the
      subscriber's model, goes to ``on_error`` and is counted in
      [`stats`][rtkit.eventbus.EventBus.stats]; it never stops other handlers
      nor the publisher.

    ``await publish(...)`` returns once the backend accepted the event: on
    memory, after every matching handler of every bus on the channel has run;
    on Redis, once Redis has taken the message (handlers run when it comes
    back, in every process). A handler may publish further events.

    Args:
        backend: Where events travel; ``None`` for a private memory backend.
        clock: Where event timestamps come from (default: the system clock).
        max_payload_bytes: The largest JSON-encoded ``data`` accepted by
            [`publish`][rtkit.eventbus.EventBus.publish]
            ([`PayloadTooLarge`][rtkit.errors.PayloadTooLarge] past it).
        on_error: Called with a [`DeliveryFailure`][rtkit.eventbus.DeliveryFailure]
            for every failed delivery (a function or coroutine function). The
            default logs the error (never the payload) on the ``rtkit.eventbus``
            logger.
        publish_only: A bus that only publishes: it never receives (on Redis it
            does not even subscribe to the channel, which saves reading every
            event of the prefix back) and
            [`subscribe`][rtkit.eventbus.EventBus.subscribe] raises
            [`ConfigurationError`][rtkit.errors.ConfigurationError].

    Raises:
        rtkit.errors.ConfigurationError: ``max_payload_bytes`` is not a positive int.
    """

    _backends: ClassVar[dict[str, str]] = {
        "memory": "rtkit.eventbus.backends.memory:MemoryEventBusBackend",
        "redis": "rtkit.eventbus.backends.redis:RedisEventBusBackend",
    }

    def __init__(
        self,
        backend: EventBusBackend | None = None,
        *,
        clock: Clock | None = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        on_error: ErrorHook | None = None,
        publish_only: bool = False,
    ) -> None:
        self._max_payload_bytes = check_int(max_payload_bytes, "max_payload_bytes")
        self._backend: EventBusBackend = backend if backend is not None else MemoryEventBusBackend()
        self._on_error = on_error
        self._publish_only = publish_only
        self._clock: Clock = clock or SystemClock()
        # The system clock's time() is time.time(): call it directly (the hot path).
        self._time = time.time if type(self._clock) is SystemClock else self._clock.time
        # Alone on its memory channel, a bus dispatches inside publish (see publish).
        self._receiver = self._deliver  # the one bound method the backend holds
        memory = self._backend
        self._hub = memory.hub if isinstance(memory, MemoryEventBusBackend) else None
        self._backend_started = False
        self._listening = False
        self._subscriptions: list[Subscription] = []
        self._routes: dict[str, tuple[Subscription, ...]] = {}
        self._published = 0
        self._received = 0
        # Events publish handed to this bus's handlers itself: both published and received.
        self._published_received = 0
        self._delivered = 0
        self._errors = 0
        self._hooks: BusHooks | None = None

    # ------------------------------------------------------------------ life cycle

    async def _start(self) -> None:
        """Connect, and begin receiving events if the bus has subscriptions."""
        self._hooks = instrument_bus(self)
        if self._hooks is not None:  # telemetry on: the instrumented paths (rtkit.telemetry)
            self._hub, self._receiver = None, self._hooks.deliver
            self.publish = self._hooks.publish  # type: ignore[method-assign]
        receive = self._wants_events()
        self._tell_interest()
        await self._backend.start(
            self._receiver, self._report_undecodable, receive=receive, wants=self._wants
        )
        self._backend_started, self._listening = True, receive
        self._listen_as_needed()  # subscriptions may have come or gone meanwhile

    async def start(self) -> None:
        """Connect and begin receiving (idempotent; optional: ``publish`` starts a new bus).

        Also waits until a subscription made since is in effect for events of
        other processes (on Redis, the first subscription of a started bus takes a
        round trip): ``bus.subscribe(...)`` then ``await bus.start()`` is sure to
        receive what other processes publish from then on.

        Raises:
            rtkit.errors.Closed: The bus was closed.
            rtkit.errors.BackendUnavailable: The backend did not answer in time.
        """
        await super().start()
        if self._listening:
            await self._backend.subscribed()

    def _wants_events(self) -> bool:
        return bool(self._subscriptions) and not self._publish_only

    def _listen_as_needed(self) -> None:
        """Receive while the bus has subscriptions, and only then (tell the backend)."""
        want = self._wants_events()
        if want != self._listening and self._backend_started and not self._closed:
            self._listening = want
            self._backend.listen(want)

    def _tell_interest(self) -> None:
        """Tell a backend that can use them (a sharded Redis one) the patterns subscribed."""
        interest = getattr(self._backend, "interest", None)
        if interest is not None:
            interest([s.pattern for s in self._subscriptions])

    def _wants(self, name: str) -> bool:
        """Whether a subscription matches ``name`` (a backend drops other events early)."""
        found = self._routes.get(name)
        return bool(found if found is not None else self._route(name))

    async def _close(self) -> None:
        """Stop receiving events and release what the backend created.

        Subscriptions stay listed in ``stats()`` but receive nothing more.
        """
        await self._backend.close()

    # ------------------------------------------------------------------ subscribing

    @overload
    def subscribe(
        self, pattern: str, handler: Handler[Any], *, model: None = None
    ) -> Subscription: ...

    @overload
    def subscribe(self, pattern: str, handler: Handler[T], *, model: type[T]) -> Subscription: ...

    def subscribe(self, pattern: str, handler: Handler[Any], *, model: Any = None) -> Subscription:
        """Call ``handler(event)`` for every event whose name matches ``pattern``.

        Takes effect at once for events published from this bus (also before the
        bus starts). On Redis, a bus subscribes to the channel only while it has
        subscriptions: the first one on a started bus takes a round trip before
        events of other processes arrive (this bus's next ``publish`` waits for it,
        and so does ``await bus.start()``).

        Args:
            pattern: An event name, ``"*"`` for every event, or a dotted pattern
                with ``*`` (one segment) and ``#`` (zero or more segments), AMQP
                topic style: ``"order.*"`` matches ``"order.created"`` but
                neither ``"order"`` nor ``"order.item.added"``; ``"order.#"``
                matches all three.
            handler: A function or coroutine function taking one
                [`Event`][rtkit.eventbus.Event].
            model: A pydantic model (or any type pydantic validates): ``event.data``
                is then parsed to it; a payload that does not fit goes to
                ``on_error`` instead of the handler.

        Returns:
            The [`Subscription`][rtkit.eventbus.Subscription]; call it (or its
            ``unsubscribe``) to stop.

        Raises:
            rtkit.errors.ValidationError: ``pattern`` is invalid.
            rtkit.errors.ConfigurationError: The bus is ``publish_only``.
            rtkit.errors.Closed: The bus was closed.
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

        Raises:
            rtkit.errors.Closed: The bus was closed.
        """
        self._check_open()
        found = [s for s in self._subscriptions if s.pattern == pattern and s.handler == handler]
        for subscription in found:
            self._remove(subscription)
        return len(found)

    def _add(self, pattern: str, handler: Handler[Any], model: Any, *, once: bool) -> Subscription:
        self._check_open()
        if self._publish_only:
            raise ConfigurationError("this EventBus is publish_only: it cannot subscribe")
        if not callable(handler):
            raise TypeError(f"handler must be callable, got {type(handler).__name__}")
        subscription = Subscription(self, pattern, handler, model, once)
        self._subscriptions.append(subscription)
        self._routes.clear()
        self._tell_interest()
        self._listen_as_needed()
        return subscription

    def _remove(self, subscription: Subscription) -> None:
        subscription._active = subscription._plain = False
        try:
            self._subscriptions.remove(subscription)
        except ValueError:
            return
        self._routes.clear()
        self._tell_interest()
        self._listen_as_needed()

    # ------------------------------------------------------------------ publishing

    async def publish(self, event_name: str, data: Any = None) -> str:
        """Publish an event to every matching subscriber on this bus's channel.

        Starts the bus if it is new.

        Args:
            event_name: A dotted event name such as ``"order.created"``: one or
                more non-empty segments without ``*``, ``#``, whitespace or
                control characters, at most 256 characters.
            data: Anything JSON-able, or a pydantic model (sent as its JSON
                form). Datetimes, UUIDs, dataclasses and the like are encoded
                the way pydantic encodes them.

        Returns:
            The new event's id.

        Raises:
            rtkit.errors.ValidationError: A bad event name, or ``data`` is not JSON-able.
            rtkit.errors.PayloadTooLarge: The encoded ``data`` exceeds ``max_payload_bytes``.
            rtkit.errors.BackendUnavailable: Redis did not accept the event within
                ``timeout``.
            rtkit.errors.Closed: The bus was closed.
        """
        if not self._live:
            await self._ready()
            if self._hooks is not None:  # started just now, with telemetry on
                return await self._hooks.publish(event_name, data)
        try:
            subscriptions: tuple[Subscription, ...] | None = self._routes[event_name]
        except (KeyError, TypeError):  # a new name, or not even hashable
            subscriptions = None
        if subscriptions is None:  # a name seen before was valid
            check_event_name(event_name)
        try:
            raw = _to_json(data)
        except pydantic_core.PydanticSerializationError as exc:
            raise ValidationError(f"event data for {event_name!r} is not JSON-able: {exc}") from exc
        if len(raw) > self._max_payload_bytes:
            raise PayloadTooLarge(
                f"event {event_name!r} data is {len(raw)} bytes, "
                f"more than max_payload_bytes={self._max_payload_bytes}"
            )
        event_id = str(_uuid7())  # new_id(), inlined: the hot path
        timestamp = self._time()
        hub = self._hub
        if hub is None or hub.solo is not self._receiver:
            self._published += 1
            await self._backend.send(event_name, event_id, timestamp, raw)
            return event_id
        # Alone on its memory channel (EventBus(), memory://): the backend would hand
        # the event straight back to _deliver; its loop runs here instead, a coroutine
        # layer less. Handlers still get the data decoded from its JSON, as from Redis.
        if subscriptions is None:
            subscriptions = self._route(event_name)
        if not subscriptions:
            self._published += 1
            return event_id
        self._published_received += 1  # one += for two counts: each allocates an int
        # Event(...) without the call into its __init__ (the same four fields): a
        # class call runs __init__ from C, a Python frame of its own, ~40 ns here.
        event: Event[Any] = _new(Event)
        event.name = event_name
        event.data = _from_json(raw)
        event.id = event_id
        event.timestamp = timestamp
        for subscription in subscriptions:
            if subscription._plain:  # active, a coroutine function, no model, not once
                try:
                    await subscription.handler(event)  # type: ignore[misc]
                except Exception as exc:
                    await self._report(DeliveryFailure(exc, event, subscription))
                else:
                    self._delivered += 1
            elif subscription._active:
                await self._deliver_one(subscription, event)
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

    async def _deliver(
        self, name: str, event_id: str, timestamp: float, data: Any, trace: Any = None
    ) -> None:
        """Run every matching handler of this bus for one received event (``trace``: unused
        here, the instrumented delivery of ``rtkit.telemetry`` reads it)."""
        subscriptions = self._routes.get(name)
        if subscriptions is None:
            subscriptions = self._route(name)
        if not subscriptions:
            return
        self._received += 1
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

    async def _deliver_one(self, subscription: Subscription, event: Event[Any]) -> bool:
        """The general case: once-subscriptions, models, sync handlers (True: delivered)."""
        if subscription.once:
            self._remove(subscription)
        delivered = event
        if subscription._adapter is not None:
            try:
                parsed = subscription._adapter.validate_python(event.data)
            except pydantic.ValidationError as exc:
                error = ValidationError(
                    f"event {event.name!r} does not fit the subscriber's model: {describe(exc)}"
                )
                await self._report(DeliveryFailure(error, event, subscription))
                return False
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
            return False
        self._delivered += 1
        return True

    async def _report_undecodable(self, error: Exception) -> None:
        """A message on the channel that the backend could not decode."""
        await self._report(DeliveryFailure(error, None, None))

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
        """Listener counts per pattern and the bus's counters (readable after close too)."""
        listeners: dict[str, int] = {}
        for subscription in self._subscriptions:
            listeners[subscription.pattern] = listeners.get(subscription.pattern, 0) + 1
        return EventBusStats(
            backend=self._backend.kind,
            listeners=listeners,
            published=self._published + self._published_received,
            received=self._received + self._published_received,
            delivered=self._delivered,
            errors=self._errors,
            reconnects=self._backend.reconnects,
        )

    def __repr__(self) -> str:
        state = "closed" if self._closed else "started" if self._started else "new"
        return f"<EventBus {self._backend.kind} {state}>"
