"""Several buses on one channel: ``memory://NAME`` behaves like buses on one Redis.

Every bus of one ``memory://NAME`` and prefix (or of one Redis and prefix)
receives each event exactly once, the publisher included; ``memory://`` and
``EventBus()`` are channels of their own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from rtkit import Event, EventBus
from rtkit_testing import Backend, unique_name

from ._helpers import Recorder, settle

Open = Callable[..., EventBus]


@pytest.fixture
async def open_bus(backend: Backend) -> AsyncIterator[Open]:
    """Opens buses on one shared channel: a fresh ``memory://NAME``, or the test's Redis prefix."""
    url = f"memory://{unique_name('bus')}" if backend.kind == "memory" else backend.url
    opened: list[EventBus] = []

    def open_bus(prefix: str = "", **options: Any) -> EventBus:
        bus = EventBus.from_url(url, prefix=backend.prefix + prefix, **options)
        opened.append(bus)
        return bus

    yield open_bus
    for bus in opened:
        await bus.close()


async def test_every_bus_on_the_channel_gets_each_event_once(open_bus: Open) -> None:
    orders, billing, elsewhere = open_bus(), open_bus(), open_bus(prefix="other:")
    at_orders, at_billing, at_elsewhere = Recorder(), Recorder(), Recorder()
    orders.subscribe("order.*", at_orders)
    billing.subscribe("order.*", at_billing)
    elsewhere.subscribe("order.*", at_elsewhere)
    for bus in (orders, billing, elsewhere):
        await bus.start()

    await orders.publish("order.created", {"order_id": 1})
    await billing.publish("order.paid", {"order_id": 1})

    await at_orders.wait(2)
    await at_billing.wait(2)
    for bus in (orders, billing, elsewhere):
        await settle(bus)
    assert at_orders.names == at_billing.names == ["order.created", "order.paid"]
    assert [e.id for e in at_orders.events] == [e.id for e in at_billing.events]
    assert at_elsewhere.events == []
    # the two events and its own barrier (not orders' barrier: it matched nothing here)
    assert billing.stats().received == 3
    assert (orders.stats().published, billing.stats().published) == (2, 2)


async def test_a_publish_only_bus_reaches_the_others_and_receives_nothing(
    open_bus: Open,
) -> None:
    worker, web = open_bus(), open_bus(publish_only=True)
    received = Recorder()
    worker.subscribe("job.*", received)
    await worker.start()
    await web.publish("job.created", {"n": 1})
    await received.wait(1)
    assert received.data == [{"n": 1}]
    assert web.stats().received == 0


async def test_a_closed_bus_leaves_the_channel(open_bus: Open) -> None:
    staying, leaving = open_bus(), open_bus()
    at_staying, at_leaving = Recorder(), Recorder()
    staying.subscribe("#", at_staying)
    leaving.subscribe("#", at_leaving)
    await staying.publish("first")
    await leaving.start()
    await staying.publish("second")
    await at_leaving.wait(1)
    await leaving.close()
    await staying.publish("third")
    await at_staying.wait(3)
    await settle(staying)
    assert at_leaving.names == ["second"]  # not started for "first", closed for "third"
    assert [n for n in at_staying.names if n != "test-barrier"] == ["first", "second", "third"]


# -- memory only ---------------------------------------------------------------------------


async def test_memory_url_and_no_arguments_are_channels_of_their_own() -> None:
    buses = [EventBus(), EventBus(), EventBus.from_url("memory://"), EventBus.from_url("memory://")]
    recorders = [Recorder() for _ in buses]
    for bus, recorder in zip(buses, recorders, strict=True):
        bus.subscribe("#", recorder)
    try:
        for n, bus in enumerate(buses):
            await bus.publish("hello", n)
        assert [r.data for r in recorders] == [[0], [1], [2], [3]]
    finally:
        for bus in buses:
            await bus.close()


async def test_on_memory_publish_returns_after_every_bus_ran_its_handlers() -> None:
    name = f"memory://{unique_name('bus')}"
    async with EventBus.from_url(name) as one, EventBus.from_url(name) as two:
        at_one, at_two = Recorder(), Recorder()
        one.subscribe("tick", at_one)
        two.subscribe("tick", at_two)
        await one.publish("tick", 1)
        assert at_one.data == at_two.data == [1]  # no waiting


async def test_each_bus_gets_its_own_copy_of_the_data() -> None:
    name = f"memory://{unique_name('bus')}"
    async with EventBus.from_url(name) as one, EventBus.from_url(name) as two:
        seen: list[Any] = []

        def mutate(event: Event[Any]) -> None:
            event.data["touched"] = True

        one.subscribe("doc", mutate)
        two.subscribe("doc", lambda event: seen.append(event.data))
        await one.publish("doc", {"point": (1, 2)})
        assert seen == [{"point": [1, 2]}]  # the JSON form, untouched by the other bus


async def test_a_bus_closed_during_a_dispatch_gets_nothing_more() -> None:
    name = f"memory://{unique_name('bus')}"
    async with EventBus.from_url(name) as first, EventBus.from_url(name) as second:
        at_second = Recorder()

        async def close_second(event: Event[Any]) -> None:
            await second.close()

        first.subscribe("stop", close_second)
        second.subscribe("stop", at_second)
        await first.publish("stop")
        assert second.closed
        assert at_second.events == []
        assert second.stats().received == 0


async def test_the_name_and_the_prefix_both_pick_the_channel() -> None:
    a, b = unique_name("bus"), unique_name("bus")
    buses = {
        "a": EventBus.from_url(f"memory://{a}"),
        "a again": EventBus.from_url(f"memory://{a}"),
        "b": EventBus.from_url(f"memory://{b}"),
        "a, other prefix": EventBus.from_url(f"memory://{a}", prefix="other:"),
    }
    recorders = {key: Recorder() for key in buses}
    try:
        for key, bus in buses.items():
            bus.subscribe("#", recorders[key])
            await bus.start()
        await buses["a"].publish("hello")
        assert {key: len(r.events) for key, r in recorders.items()} == {
            "a": 1,
            "a again": 1,
            "b": 0,
            "a, other prefix": 0,
        }
    finally:
        for bus in buses.values():
            await bus.close()
