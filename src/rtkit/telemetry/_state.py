"""The switch: what rtkit traces, counts and logs, decided once per component at setup.

Components ask :func:`instruments` when they start (a server when it starts, a
bus when it starts...). ``None`` means nothing is on: the component keeps its
plain code paths, with no span, no context propagation and no metric on them.
Otherwise they get an :class:`Instruments`: a tracer wrapper (``None`` unless a
tracer provider is configured), the metrics (``None`` unless enabled) and
whether logs want request and connection ids.

Nothing here imports OpenTelemetry or prometheus-client: they are imported when
tracing or metrics are turned on (the ``otel`` extra).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["AUTO", "Instruments", "instruments", "settings"]

AUTO: Any = "auto"
"""The tracing setting until ``enable_tracing`` or ``disable_tracing`` is called:
trace when a global OpenTelemetry tracer provider is configured."""


@dataclass(frozen=True, slots=True)
class Instruments:
    """What a component uses when telemetry is on (``None`` parts are off)."""

    tracing: Any  # a _trace.Tracing (imported only when tracing is on), or None
    metrics: Any  # a _metrics.Metrics, or None
    ids: bool  # logs carry request and connection ids (JSON logging)


class _Settings:
    """The process-wide settings (module state: telemetry is process-wide by nature)."""

    def __init__(self) -> None:
        self.tracer_provider: Any = AUTO  # AUTO, None (off) or a TracerProvider
        self.metrics: Any = None  # a _metrics.Metrics once enabled
        self.ids = False


settings = _Settings()


def _tracing() -> Any:
    provider = settings.tracer_provider
    if provider is None:
        return None
    try:
        from ._trace import Tracing, configured_provider
    except ImportError:  # no opentelemetry-api: nothing to trace with
        return None
    if provider is AUTO:
        provider = configured_provider()
        if provider is None:
            return None
    return Tracing(provider)


def instruments() -> Instruments | None:
    """What a component being set up now should do; ``None``: nothing (the plain paths)."""
    tracing = _tracing()
    metrics = settings.metrics
    if tracing is None and metrics is None and not settings.ids:
        return None
    return Instruments(tracing, metrics, settings.ids)
