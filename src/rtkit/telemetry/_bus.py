"""EventBus instrumentation: publish and delivery paths with spans and metrics.

A bus asks :func:`instrument_bus` once, when it starts. With telemetry off it
keeps its own paths (nothing here runs). Otherwise it publishes through
:meth:`BusHooks.publish` and its backend delivers to :meth:`BusHooks.deliver`:

* ``publish <event name>``: a PRODUCER span around the publish; its context goes
  into the envelope (``"trace"``, read by the Redis backend when it encodes the
  event), so a bus in another process continues the trace;
* ``process <event name>``: a CONSUMER span per subscription that handles the
  event, the child of the publish span (through the envelope on Redis, through
  the task's context in process), with the subscription's pattern.

Spans follow the OpenTelemetry messaging conventions: ``messaging.system``
``rtkit.eventbus``, the event name as ``messaging.destination.name``, the event id
as ``messaging.message.id``, ``messaging.operation.type`` ``send`` / ``process``.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Mapping
from typing import Any

from ..eventbus._events import Event
from ._state import Instruments, instruments

__all__ = ["OUTGOING", "BusHooks", "instrument_bus"]

OUTGOING: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar(
    "rtkit_eventbus_trace", default=None
)
"""The trace context of the event being published now (read when the envelope is encoded)."""

_SYSTEM = "rtkit.eventbus"


def instrument_bus(bus: Any) -> BusHooks | None:
    """The hooks a starting bus publishes and delivers through; ``None`` when telemetry is off."""
    found = instruments()
    if found is None or (found.tracing is None and found.metrics is None):
        return None
    return BusHooks(bus, found)


class BusHooks:
    """The instrumented publish and deliver of one bus."""

    def __init__(self, bus: Any, found: Instruments) -> None:
        self.bus = bus
        self.tracing = found.tracing
        self.metrics = found.metrics
        self.kind: str = bus._backend.kind
        self._plain_publish = type(bus).publish

    async def publish(self, event_name: str, data: Any = None) -> str:
        """The bus's ``publish``, in a PRODUCER span that travels with the event."""
        tracing = self.tracing
        if tracing is None:
            event_id: str = await self._plain_publish(self.bus, event_name, data)
        else:
            attributes = {
                "messaging.system": _SYSTEM,
                "messaging.destination.name": event_name,
                "messaging.operation.type": "send",
                "messaging.operation.name": "publish",
                "rtkit.eventbus.backend": self.kind,
            }
            with tracing.span(f"publish {event_name}", "producer", attributes) as span:
                token = OUTGOING.set(tracing.carrier())
                try:
                    event_id = await self._plain_publish(self.bus, event_name, data)
                finally:
                    OUTGOING.reset(token)
                span.set_attribute("messaging.message.id", event_id)
        if self.metrics is not None:
            self.metrics["rtkit_eventbus_published_total"].labels(self.kind).inc()
        return event_id

    async def deliver(
        self, name: str, event_id: str, timestamp: float, data: Any, trace: Any = None
    ) -> None:
        """The bus's delivery: each matching subscription in a CONSUMER span of its own."""
        bus = self.bus
        subscriptions = bus._route(name)
        if not subscriptions:
            return
        bus._received += 1
        event: Event[Any] = Event(name, data, event_id, timestamp)
        parent = None
        if trace is not None and self.tracing is not None:
            from ._trace import carrier_of

            parent = carrier_of(trace)
        for subscription in subscriptions:
            if subscription._active:
                await self._deliver_one(subscription, event, parent)

    async def _deliver_one(
        self, subscription: Any, event: Event[Any], parent: Mapping[str, str] | None
    ) -> None:
        started = time.perf_counter()
        tracing = self.tracing
        if tracing is None:
            delivered = await self.bus._deliver_one(subscription, event)
        else:
            attributes = {
                "messaging.system": _SYSTEM,
                "messaging.destination.name": event.name,
                "messaging.destination.subscription.name": subscription.pattern,
                "messaging.message.id": event.id,
                "messaging.operation.type": "process",
                "messaging.operation.name": "process",
                "rtkit.eventbus.backend": self.kind,
            }
            with tracing.span(
                f"process {event.name}", "consumer", attributes, parent=parent
            ) as span:
                delivered = await self.bus._deliver_one(subscription, event)
                if not delivered:
                    tracing.failed(span, "delivery_failed", "the handler failed (see on_error)")
        metrics = self.metrics
        if metrics is not None:
            labels = (self.kind, subscription.pattern)
            outcome = "delivered" if delivered else "failed"
            metrics[f"rtkit_eventbus_{outcome}_total"].labels(*labels).inc()
            duration = metrics["rtkit_eventbus_handler_duration_seconds"].labels(*labels)
            duration.observe(time.perf_counter() - started)
