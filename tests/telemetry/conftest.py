"""Fixtures for the telemetry tests: an in-memory span exporter, a fresh metrics registry."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from rtkit import telemetry


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """rtkit traces into this exporter (components started during the test)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.enable_tracing(provider)
    try:
        yield exporter
    finally:
        telemetry.reset()
        provider.shutdown()


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    """rtkit counts into this fresh registry (components started during the test)."""
    fresh = CollectorRegistry()
    telemetry.enable_metrics(fresh)
    try:
        yield fresh
    finally:
        telemetry.reset()
