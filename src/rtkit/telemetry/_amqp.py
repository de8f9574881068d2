"""Messaging instrumentation: a span per publish and per delivery, trace context in AMQP headers.

A ``RabbitMQService`` asks :func:`instrument_messaging` once, when it starts;
``None`` keeps the plain paths. Otherwise every publish of its producers and
consumers (retries and dead letters included) goes through
:meth:`MessagingHooks.publish` and every delivery through
:meth:`MessagingHooks.process`:

* ``publish <queue or exchange>``: a PRODUCER span whose context replaces the
  message's ``traceparent`` / ``tracestate`` headers. A message that already
  carried another context (a retry, a dead letter) keeps the first one in
  ``x-original-traceparent``: the link to the original publish;
* ``process <queue>``: a CONSUMER span, the child of the message's
  ``traceparent`` and linked to its ``x-original-traceparent``, with the
  delivery's outcome (``rtkit.messaging.outcome``).

Without tracing the headers travel unchanged, so a traced process further on
still continues the trace. Spans follow the OpenTelemetry messaging conventions
(``messaging.system`` ``rabbitmq``, destination, message id, operation).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ._state import Instruments, instruments

__all__ = ["ORIGINAL_TRACEPARENT", "MessagingHooks", "instrument_messaging"]

ORIGINAL_TRACEPARENT = "x-original-traceparent"
"""The header that keeps the first publish's context when a message is published again."""

_FAILED = frozenset({"retried", "dead_lettered", "dropped", "internal_error"})


def instrument_messaging(backend: Any) -> MessagingHooks | None:
    """The hooks of a starting service on ``backend``; ``None`` when telemetry is off."""
    found = instruments()
    if found is None or (found.tracing is None and found.metrics is None):
        return None
    system = "rabbitmq" if "amqp" in type(backend).__module__ else "rtkit.memory"
    return MessagingHooks(found, system)


def _text_headers(headers: Mapping[str, Any]) -> dict[str, str]:
    """The trace headers as text (another client may have sent them as bytes)."""
    found: dict[str, str] = {}
    for name in ("traceparent", "tracestate", "baggage", ORIGINAL_TRACEPARENT):
        value = headers.get(name)
        if isinstance(value, bytes | bytearray):
            value = bytes(value).decode("latin-1")
        if isinstance(value, str):
            found[name] = value
    return found


def _attempt(headers: Mapping[str, Any]) -> int:
    from ..messaging._headers import count_header

    return count_header(headers.get("x-retry-count"), 0) + 1


class MessagingHooks:
    """The instrumented publish and delivery of one service."""

    def __init__(self, found: Instruments, system: str) -> None:
        self.tracing = found.tracing
        self.metrics = found.metrics
        self.system = system

    async def publish(
        self,
        publish: Callable[..., Awaitable[None]],
        exchange: str,
        routing_key: str,
        message: Any,
        *,
        mandatory: bool,
    ) -> None:
        """``publish(exchange, routing_key, message, mandatory=...)``, traced and counted."""
        destination = routing_key if exchange == "" else exchange
        started = time.perf_counter()
        outcome = "failed"
        try:
            if self.tracing is None:
                await publish(exchange, routing_key, message, mandatory=mandatory)
            else:
                await self._traced(publish, exchange, routing_key, message, mandatory)
            outcome = "confirmed"
        finally:
            metrics = self.metrics
            if metrics is not None:
                metrics["rtkit_messaging_published_total"].labels(destination, outcome).inc()
                if outcome == "confirmed":
                    duration = metrics["rtkit_messaging_publish_duration_seconds"]
                    duration.labels(destination).observe(time.perf_counter() - started)

    async def _traced(
        self,
        publish: Callable[..., Awaitable[None]],
        exchange: str,
        routing_key: str,
        message: Any,
        mandatory: bool,
    ) -> None:
        assert self.tracing is not None
        destination = routing_key if exchange == "" else exchange
        attributes = {
            "messaging.system": self.system,
            "messaging.destination.name": destination,
            "messaging.operation.type": "send",
            "messaging.operation.name": "publish",
            "messaging.message.id": message.message_id,
            "messaging.message.body.size": len(message.body),
            "messaging.rabbitmq.destination.routing_key": routing_key,
        }
        with self.tracing.span(f"publish {destination}", "producer", attributes):
            headers = dict(message.headers)
            carrier = self.tracing.carrier()
            before = _text_headers(headers).get("traceparent")
            if before and before != carrier.get("traceparent"):
                headers.setdefault(ORIGINAL_TRACEPARENT, before)
            headers.update(carrier)
            message = dataclasses.replace(message, headers=headers)
            await publish(exchange, routing_key, message, mandatory=mandatory)

    async def process(
        self, queue: str, delivery: Any, handle: Callable[[Any], Awaitable[None]]
    ) -> None:
        """``handle(delivery)`` in a CONSUMER span that continues the publisher's trace."""
        started = time.perf_counter()
        try:
            if self.tracing is None:
                await handle(delivery)
                return
            message = delivery.message
            found = _text_headers(message.headers)
            from ._trace import carrier_of

            original = found.get(ORIGINAL_TRACEPARENT, "")
            attributes = {
                "messaging.system": self.system,
                "messaging.destination.name": queue,
                "messaging.operation.type": "process",
                "messaging.operation.name": "process",
                "messaging.message.id": message.message_id,
                "messaging.message.body.size": len(message.body),
                "messaging.rabbitmq.destination.routing_key": delivery.routing_key,
                "rtkit.messaging.attempt": _attempt(message.headers),
            }
            with self.tracing.span(
                f"process {queue}",
                "consumer",
                attributes,
                parent=carrier_of(found),
                links=(original,) if 0 < len(original) <= 128 else (),
            ):
                await handle(delivery)
        finally:
            if self.metrics is not None:
                duration = self.metrics["rtkit_messaging_process_duration_seconds"]
                duration.labels(queue).observe(time.perf_counter() - started)

    def receiving(
        self, queue: str, get: Callable[[str], Awaitable[Any]]
    ) -> Callable[[str], Awaitable[Any]]:
        """``get``, in a ``receive <queue>`` CLIENT span linked to the message's context."""
        tracing = self.tracing
        if tracing is None:
            return get

        async def receive(name: str) -> Any:
            attributes = {
                "messaging.system": self.system,
                "messaging.destination.name": queue,
                "messaging.operation.type": "receive",
                "messaging.operation.name": "get",
            }
            with tracing.span(f"receive {queue}", "client", attributes) as span:
                delivery = await get(name)
                if delivery is not None:
                    span.set_attribute("messaging.message.id", delivery.message.message_id)
                    context = _text_headers(delivery.message.headers).get("traceparent", "")
                    if 0 < len(context) <= 128:
                        tracing.link(span, context)
                return delivery

        return receive

    def outcome(self, queue: str, outcome: str, reason: str | None = None) -> None:
        """A delivery of ``queue`` was settled: count it, and say so on its span."""
        metrics = self.metrics
        if metrics is not None:
            metrics["rtkit_messaging_consumed_total"].labels(queue, outcome).inc()
            if outcome == "dead_lettered":
                metrics["rtkit_messaging_dead_lettered_total"].labels(queue, reason or "").inc()
        if self.tracing is not None:
            span = self.tracing.current_span()
            span.set_attribute("rtkit.messaging.outcome", outcome)
            if outcome in _FAILED:
                self.tracing.failed(span, reason or outcome)
