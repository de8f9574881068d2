"""See inside rtkit: OpenTelemetry traces, Prometheus metrics, JSON logs (the ``otel`` extra).

* **Traces.** When an OpenTelemetry tracer provider is configured (the global
  one, or the one given to [`enable_tracing`][rtkit.telemetry.enable_tracing]),
  components started afterwards create spans: a PRODUCER span per published
  event or message, a CONSUMER span per handled one, a SERVER span per Socket.IO
  event and HTTP request, a CLIENT span per ``ChatClient`` request and per
  gateway exchange with a service. W3C trace context travels with the work: in
  the bus envelope, in AMQP headers (through retries, delay tiers and dead
  letters), with ``ChatClient``'s events and through the gateway.
* **Metrics.** [`enable_metrics`][rtkit.telemetry.enable_metrics] registers the
  ``rtkit_*`` metrics (listed in ``METRICS``) in a
  prometheus-client registry; [`metrics_app`][rtkit.telemetry.metrics_app] and
  [`with_metrics`][rtkit.telemetry.with_metrics] serve them.
* **Logs.** [`configure_logging`][rtkit.telemetry.configure_logging] writes one
  JSON object per line, with the request or connection id and the trace ids.

Each component decides when it starts: with nothing turned on it keeps its plain
code paths (no span, no context propagation, no metric), so configure telemetry
before starting components.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Any, TextIO

from ._http import HttpTelemetry, metrics_app, with_metrics
from ._logging import JsonFormatter
from ._metrics import METRICS, MetricInfo, enable
from ._state import AUTO, settings

__all__ = [
    "METRICS",
    "HttpTelemetry",
    "JsonFormatter",
    "MetricInfo",
    "configure_logging",
    "disable_metrics",
    "disable_tracing",
    "enable_metrics",
    "enable_tracing",
    "metrics_app",
    "reset",
    "span_tree",
    "with_metrics",
]

_EXTRA = "pip install 'rtkit[otel]'"


def enable_tracing(tracer_provider: Any = None) -> None:
    """Trace with ``tracer_provider`` (default: OpenTelemetry's global provider).

    Without this call rtkit traces whenever the application configured a global
    tracer provider (``trace.set_tracer_provider``, or ``opentelemetry-instrument``)
    before the component starts.

    Raises:
        ImportError: ``opentelemetry-api`` is not installed (the ``otel`` extra).
    """
    try:
        from opentelemetry import trace
    except ImportError as exc:
        raise ImportError(f"tracing needs opentelemetry-api ({exc}): {_EXTRA}") from exc
    settings.tracer_provider = tracer_provider or trace.get_tracer_provider()


def disable_tracing() -> None:
    """No spans from components started afterwards, even with a global provider."""
    settings.tracer_provider = None


def enable_metrics(registry: Any = None) -> Any:
    """Count the ``rtkit_*`` metrics in ``registry`` (default: prometheus-client's global one).

    Components started afterwards count. Calling it again with the same registry
    changes nothing; returns the registry.

    Raises:
        ImportError: ``prometheus-client`` is not installed (the ``otel`` extra).
    """
    try:
        import prometheus_client  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"metrics need prometheus-client ({exc}): {_EXTRA}") from exc
    return enable(registry)


def disable_metrics() -> None:
    """Components started afterwards count nothing (the registry keeps what it has)."""
    settings.metrics = None


def configure_logging(
    format: str = "json", *, level: int | str = logging.INFO, stream: TextIO | None = None
) -> None:
    """Log to ``stream`` (stderr) at ``level``: ``json`` lines or ``text``.

    Replaces the root logger's handlers. JSON lines carry ``request_id`` /
    ``connection_id`` (components started afterwards set them) and, inside a span,
    ``trace_id`` and ``span_id``.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    if format == "json":
        handler.setFormatter(JsonFormatter())
        settings.ids = True
    elif format == "text":
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    else:
        raise ValueError(f"format must be 'json' or 'text', not {format!r}")
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def reset() -> None:
    """Back to the defaults: trace with a global provider if one is configured, count nothing,
    no ids in logs (for components started afterwards)."""
    settings.tracer_provider = AUTO
    settings.metrics = None
    settings.ids = False


def span_tree(spans: Iterable[Any]) -> str:
    """Finished spans (``ReadableSpan``s of an exporter) drawn as a tree, one line per span.

    Each line is the span's kind and name, children indented under their parent,
    siblings in start order; a span whose parent is not among ``spans`` is a root.
    Handy in tests, and it draws the trace in the observability guide.
    """
    spans = sorted(spans, key=lambda s: s.start_time)
    ids = {s.context.span_id for s in spans}
    children: dict[int | None, list[Any]] = {}
    for span in spans:
        parent = span.parent.span_id if span.parent is not None else None
        children.setdefault(parent if parent in ids else None, []).append(span)
    lines: list[str] = []

    def draw(span: Any, prefix: str, last: bool, root: bool) -> None:
        kind = span.kind.name.lower()
        links = f"  (linked to {len(span.links)})" if span.links else ""
        branch = "" if root else ("└─ " if last else "├─ ")
        lines.append(f"{prefix}{branch}{span.name} [{kind}]{links}")
        below = children.get(span.context.span_id, [])
        for i, child in enumerate(below):
            more = "" if root else ("   " if last else "│  ")
            draw(child, prefix + more, i == len(below) - 1, False)

    for root in children.get(None, []):
        draw(root, "", True, True)
    return "\n".join(lines)
