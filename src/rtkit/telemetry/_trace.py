"""Spans and W3C trace context, on the OpenTelemetry API (imported only when tracing is on).

Instrumentation modules call :class:`Tracing` and never OpenTelemetry itself, so
that a process with metrics but without ``opentelemetry-api`` works as well.
Context travels as a *carrier*: a small dict of ``traceparent`` (and
``tracestate``, ``baggage``) strings, injected and extracted with the globally
configured propagator (W3C trace context and baggage unless configured otherwise).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from importlib import metadata
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = ["CARRIER_FIELDS", "Tracing", "carrier_of", "configured_provider"]

CARRIER_FIELDS: Mapping[str, int] = {"traceparent": 128, "tracestate": 512, "baggage": 2048}
"""The fields a carrier may hold, and the longest value accepted from a peer."""

_KINDS = {
    "producer": SpanKind.PRODUCER,
    "consumer": SpanKind.CONSUMER,
    "server": SpanKind.SERVER,
    "client": SpanKind.CLIENT,
    "internal": SpanKind.INTERNAL,
}
_W3C = TraceContextTextMapPropagator()


def _version() -> str:
    try:
        return metadata.version("rtkit")
    except metadata.PackageNotFoundError:  # a source tree on PYTHONPATH
        return "0"


def configured_provider() -> Any | None:
    """The global tracer provider, if an application configured one (not the API's default)."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return None
    return provider


def carrier_of(value: Any) -> dict[str, str] | None:
    """The trace context fields of a peer's mapping, each a bounded printable string.

    Anything else (another type, an oversized or non-text value) is left out:
    a peer cannot make rtkit parse more than a few hundred bytes.
    """
    if not isinstance(value, Mapping):
        return None
    found: dict[str, str] = {}
    for name, limit in CARRIER_FIELDS.items():
        item = value.get(name)
        if isinstance(item, str) and 0 < len(item) <= limit and item.isprintable():
            found[name] = item
    return found or None


class Tracing:
    """rtkit's tracer and the few operations its instrumentation needs."""

    def __init__(self, provider: Any) -> None:
        self.tracer = provider.get_tracer("rtkit", _version())

    @contextlib.contextmanager
    def span(
        self,
        name: str,
        kind: str,
        attributes: Mapping[str, Any],
        *,
        parent: Mapping[str, str] | None = None,
        links: tuple[str, ...] = (),
    ) -> Iterator[Any]:
        """A current span: the child of ``parent`` (a carrier) if given, else of the current one.

        ``links`` are ``traceparent`` values the span links to (the original
        producer of a retried message).
        """
        context = None if parent is None else propagate.extract(parent)
        with self.tracer.start_as_current_span(
            name,
            context=context,
            kind=_KINDS[kind],
            attributes=attributes,
            links=[link for link in map(_link, links) if link is not None],
        ) as span:
            yield span

    @staticmethod
    def carrier() -> dict[str, str]:
        """The current context as a carrier (empty if there is no current span)."""
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        return carrier

    @staticmethod
    def failed(span: Any, error_type: str, description: str | None = None) -> None:
        """Mark ``span`` as failed, with ``error.type`` (a code or an exception class name)."""
        span.set_attribute("error.type", error_type)
        span.set_status(Status(StatusCode.ERROR, description))

    @staticmethod
    def link(span: Any, traceparent: str) -> None:
        """Link ``span`` to the context of ``traceparent`` (a message it received)."""
        link = _link(traceparent)
        if link is not None:
            span.add_link(link.context)

    @staticmethod
    def current_span() -> Any:
        """The current span (a non-recording one when there is none)."""
        return trace.get_current_span()

    @staticmethod
    def ids() -> tuple[str, str] | None:
        """The current trace and span ids as hex, for log lines; ``None`` outside a span."""
        context = trace.get_current_span().get_span_context()
        if not context.is_valid:
            return None
        return format(context.trace_id, "032x"), format(context.span_id, "016x")

    @staticmethod
    def attach(carrier: Mapping[str, str]) -> object:
        """Make the context of ``carrier`` current; returns the token for :meth:`detach`."""
        return otel_context.attach(propagate.extract(carrier))

    @staticmethod
    def detach(token: object) -> None:
        otel_context.detach(token)  # type: ignore[arg-type]


def _link(traceparent: str) -> Link | None:
    context = trace.get_current_span(_W3C.extract({"traceparent": traceparent})).get_span_context()
    return Link(context) if context.is_valid else None
