"""Making an EventBus: a backend object, a URL, and where ``from_url`` options go."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from rtkit import Event, EventBus, ManualClock
from rtkit.errors import ConfigurationError, PayloadTooLarge
from rtkit.eventbus.backends.memory import MemoryEventBusBackend

from ._helpers import Recorder


async def test_a_backend_object_or_none() -> None:
    backend = MemoryEventBusBackend()
    async with EventBus(backend) as given, EventBus() as default:
        assert given._backend is backend
        assert isinstance(default._backend, MemoryEventBusBackend)
        assert given.stats().backend == default.stats().backend == "memory"


def fail(event: Event[Any]) -> None:
    raise RuntimeError("handler bug")


async def test_from_url_gives_the_bus_its_options() -> None:
    clock = ManualClock(start=1_800_000_000.0)
    failures: list[object] = []
    received = Recorder()
    async with EventBus.from_url(
        "memory://", clock=clock, max_payload_bytes=10, on_error=failures.append
    ) as bus:
        bus.subscribe("tick", received)
        bus.subscribe("tick", fail)
        with pytest.raises(PayloadTooLarge, match="max_payload_bytes=10"):
            await bus.publish("tick", "x" * 20)
        await bus.publish("tick", "ok")
        assert [e.timestamp for e in received.events] == [clock.time()]
        assert len(failures) == 1


@pytest.mark.parametrize("option", ["publish_timeout", "transport"])
def test_options_nobody_takes_are_refused(option: str) -> None:
    # publish_timeout and transport are gone
    options: dict[str, Any] = {option: 1.0}
    with pytest.raises(ConfigurationError, match=rf"unknown option.*{option}"):
        EventBus.from_url("memory://", **options)


@pytest.mark.parametrize("option", ["timeout", "ping_interval", "ping_timeout"])
async def test_redis_options_are_ignored_on_memory(option: str) -> None:
    # one call works for every URL: the memory backend has no time-outs
    options: dict[str, Any] = {option: 1.0}
    async with EventBus.from_url("memory://", **options) as bus:
        await bus.publish("tick", 1)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "10"])
def test_a_bad_payload_bound_is_a_configuration_error(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="max_payload_bytes"):
        EventBus(max_payload_bytes=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="max_payload_bytes"):
        EventBus.from_url("memory://", max_payload_bytes=bad)


async def test_constructing_does_no_io() -> None:
    bus = EventBus.from_url("redis://127.0.0.1:1/0")  # nothing listens there; no error yet
    assert "new" in repr(bus)
    await bus.close()  # nor does closing a bus that never started


def test_an_event_is_its_four_fields() -> None:
    """The bus alone on its memory channel fills an Event's slots without its __init__
    (publish's hot path): that is the same event only while these are all it has."""
    assert [f.name for f in dataclasses.fields(Event)] == ["name", "data", "id", "timestamp"]
    assert not hasattr(Event, "__post_init__")
