"""rtkit's Prometheus metrics: their names, labels and meaning, and the objects that count.

Every label takes a bounded set of values: a backend kind, a subscription
pattern, a queue, exchange, route or service name from the application's own
configuration, an outcome or an error code. Never a user id, a room id, an
event name a client chose or a URL path. ``METRICS`` is the list the
observability guide prints; :class:`Metrics` makes them in a registry
(prometheus-client, imported only when metrics are turned on).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ._state import settings

__all__ = [
    "BUCKETS",
    "METRICS",
    "MetricInfo",
    "Metrics",
    "count_decisions",
    "enable",
    "http_method",
]

BUCKETS: tuple[float, ...] = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025)
BUCKETS += (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Histogram buckets, in seconds: from 100 µs (an in-process handler) to 30 s."""

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def http_method(method: str) -> str:
    """The ``method`` label: a standard method, or ``OTHER`` (clients choose the text)."""
    return method if method in _METHODS else "OTHER"


@dataclass(frozen=True)
class MetricInfo:
    """One metric: its name, kind, labels and what it counts."""

    name: str
    kind: str  # counter, histogram, gauge
    labels: tuple[str, ...]
    help: str


METRICS: tuple[MetricInfo, ...] = (
    MetricInfo("rtkit_eventbus_published_total", "counter", ("backend",), "Events published."),
    MetricInfo(
        "rtkit_eventbus_delivered_total",
        "counter",
        ("backend", "pattern"),
        "Handler calls that returned, by the subscription's pattern.",
    ),
    MetricInfo(
        "rtkit_eventbus_failed_total",
        "counter",
        ("backend", "pattern"),
        "Failed deliveries: handler errors and payloads the subscriber's model refused.",
    ),
    MetricInfo(
        "rtkit_eventbus_handler_duration_seconds",
        "histogram",
        ("backend", "pattern"),
        "Time a handler took, by the subscription's pattern.",
    ),
    MetricInfo(
        "rtkit_messaging_published_total",
        "counter",
        ("destination", "outcome"),
        "Messages published (the queue for a send, the exchange for a publish); outcome "
        "`confirmed` or `failed`.",
    ),
    MetricInfo(
        "rtkit_messaging_publish_duration_seconds",
        "histogram",
        ("destination",),
        "Time from publish to the broker's confirm.",
    ),
    MetricInfo(
        "rtkit_messaging_consumed_total",
        "counter",
        ("queue", "outcome"),
        "Deliveries consumed, by outcome: `handled`, `retried`, `dead_lettered`, `dropped`, "
        "`duplicate`, `internal_error`.",
    ),
    MetricInfo(
        "rtkit_messaging_dead_lettered_total",
        "counter",
        ("queue", "reason"),
        "Messages sent to the dead-letter queue, by reason (`handler_failed`, "
        "`validation_failed`, ...).",
    ),
    MetricInfo(
        "rtkit_messaging_process_duration_seconds",
        "histogram",
        ("queue",),
        "Time from delivery to settlement (the handler, retries and dead letters included).",
    ),
    MetricInfo(
        "rtkit_presence_connections",
        "gauge",
        (),
        "Connections the presence stores of this process hold (one server instance each).",
    ),
    MetricInfo(
        "rtkit_presence_users",
        "gauge",
        (),
        "Users online through this process (a user connected to two instances counts on both).",
    ),
    MetricInfo(
        "rtkit_ratelimit_decisions_total",
        "counter",
        ("outcome",),
        "Rate-limit decisions: `allowed` or `denied`.",
    ),
    MetricInfo(
        "rtkit_http_requests_total",
        "counter",
        ("app", "route", "method", "status"),
        "HTTP requests answered, by app (`gateway`, a service name, `realtime`), route "
        "template (the gateway's route prefix), method and status.",
    ),
    MetricInfo(
        "rtkit_http_request_duration_seconds",
        "histogram",
        ("app", "route", "method"),
        "Time to answer an HTTP request.",
    ),
    MetricInfo(
        "rtkit_gateway_cache_total",
        "counter",
        ("route", "result"),
        "Gateway requests the response cache could answer: `hit` or `miss`.",
    ),
    MetricInfo(
        "rtkit_gateway_upstream_duration_seconds",
        "histogram",
        ("service",),
        "Time of one exchange with a service instance.",
    ),
    MetricInfo(
        "rtkit_gateway_upstream_errors_total",
        "counter",
        ("service", "error"),
        "Failed exchanges with a service instance: `connect`, `timeout`, `protocol`, "
        "`too_large` or `other`.",
    ),
    MetricInfo(
        "rtkit_socketio_connections",
        "gauge",
        (),
        "Socket.IO connections of the servers of this process.",
    ),
    MetricInfo(
        "rtkit_socketio_events_total",
        "counter",
        ("event", "outcome"),
        "Socket.IO events handled, by name (`unknown` for names the server does not know) "
        "and outcome (`ok` or the error code).",
    ),
    MetricInfo(
        "rtkit_socketio_event_duration_seconds",
        "histogram",
        ("event",),
        "Time to handle a Socket.IO event.",
    ),
)


class Metrics:
    """The metric objects, registered in one prometheus-client registry.

    Gauges are read when scraped, from the servers that called :meth:`watch`
    (held weakly): counting connections costs nothing between scrapes.
    """

    def __init__(self, registry: Any) -> None:
        from prometheus_client import Counter, Histogram

        self.registry = registry
        made: dict[str, Any] = {}
        for info in METRICS:
            if info.kind == "counter":
                made[info.name] = Counter(info.name, info.help, info.labels, registry=registry)
            elif info.kind == "histogram":
                made[info.name] = Histogram(
                    info.name, info.help, info.labels, registry=registry, buckets=BUCKETS
                )
        self._made = made
        self._gauges: weakref.WeakSet[Any] = weakref.WeakSet()
        registry.register(_Gauges(self._gauges))

    def __getitem__(self, name: str) -> Any:
        """The metric object of ``name`` (a name from ``METRICS``)."""
        return self._made[name]

    def watch(self, source: Any) -> None:
        """Read ``source.gauges()`` (name -> value) at every scrape, while it lives."""
        self._gauges.add(source)


class _Gauges:
    """A collector: the gauges, summed over the sources alive at scrape time."""

    def __init__(self, sources: weakref.WeakSet[Any]) -> None:
        self._sources = sources
        self._names = [info for info in METRICS if info.kind == "gauge"]

    def describe(self) -> Iterator[Any]:
        return iter(self._families(dict))

    def collect(self) -> Iterator[Any]:
        totals: dict[str, float] = {}
        for source in list(self._sources):
            for name, value in source.gauges().items():
                totals[name] = totals.get(name, 0.0) + value
        return iter(self._families(lambda: totals))

    def _families(self, values: Callable[[], dict[str, float]]) -> list[Any]:
        from prometheus_client.core import GaugeMetricFamily

        found = values()
        return [
            GaugeMetricFamily(info.name, info.help, value=found.get(info.name, 0.0))
            for info in self._names
        ]


def count_decisions(hit: Callable[..., Any]) -> Callable[..., Any] | None:
    """``hit``, counting each decision by outcome; ``None`` when metrics are off.

    A ``RateLimiter`` that starts with metrics on takes it as its ``hit``.
    """
    if settings.metrics is None:
        return None
    counter = settings.metrics["rtkit_ratelimit_decisions_total"]
    allowed, denied = counter.labels("allowed"), counter.labels("denied")

    async def counted(key: str, *limits: Any, cost: int = 1) -> Any:
        decision = await hit(key, *limits, cost=cost)
        (allowed if decision.allowed else denied).inc()
        return decision

    return counted


def enable(registry: Any = None) -> Any:
    """Count in ``registry`` (default: prometheus-client's global one); returns the registry."""
    import prometheus_client

    registry = registry if registry is not None else prometheus_client.REGISTRY
    if settings.metrics is None or settings.metrics.registry is not registry:
        settings.metrics = Metrics(registry)
    return registry
