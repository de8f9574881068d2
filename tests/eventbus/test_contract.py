"""The EventBus contract: the same observable behaviour on memory and on Redis.

On memory a handler has run when ``publish`` returns; on Redis it runs when
the event comes back from Redis. So every test waits for the deliveries it
expects (``Recorder.wait``) and, to show that something did *not* happen,
waits until a later barrier event went through (``settle``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pydantic
import pytest

from rtkit import Event, EventBus, ManualClock
from rtkit.errors import Closed, ConfigurationError, PayloadTooLarge, ValidationError
from rtkit.eventbus import DeliveryFailure, EventBusStats, Subscription

from ._helpers import Recorder, settle, wait_until

pytestmark = pytest.mark.topologies  # also on the private cluster and Sentinel


class Failures:
    """An ``on_error`` hook that remembers every failure."""

    def __init__(self) -> None:
        self.items: list[DeliveryFailure] = []

    def __call__(self, failure: DeliveryFailure) -> None:
        self.items.append(failure)


@pytest.fixture
def failures() -> Failures:
    return Failures()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=1_800_000_000.0)


@pytest.fixture
async def bus(backend: Any, failures: Failures, clock: ManualClock) -> AsyncIterator[EventBus]:
    async with EventBus.from_url(
        backend.url,
        prefix=backend.prefix,
        on_error=failures,
        clock=clock,
        max_payload_bytes=1024,
    ) as bus:
        yield bus


class OrderCreated(pydantic.BaseModel):
    order_id: int
    user_id: int
    total: float


async def test_a_subscriber_receives_the_event(bus: EventBus, clock: ManualClock) -> None:
    received = Recorder()
    bus.subscribe("user.registered", received)

    event_id = await bus.publish("user.registered", {"user_id": 1, "email": "a@example.com"})

    await received.wait(1)
    [event] = received.events
    assert event == Event(
        name="user.registered",
        data={"user_id": 1, "email": "a@example.com"},
        id=event_id,
        timestamp=clock.time(),
    )
    await settle(bus)
    assert len(received.events) == 1


async def test_event_ids_are_unique_and_time_ordered(bus: EventBus) -> None:
    received = Recorder()
    bus.subscribe("tick", received)
    ids = [await bus.publish("tick", n) for n in range(20)]
    await received.wait(20)
    assert [event.id for event in received.events] == ids
    assert sorted(ids) == ids
    assert len(set(ids)) == 20


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("order.created", ["order.created"]),
        ("*", ["order", "order.created", "order.item.added", "user.registered"]),
        ("#", ["order", "order.created", "order.item.added", "user.registered"]),
        ("order.*", ["order.created"]),
        ("order.#", ["order", "order.created", "order.item.added"]),
        ("*.created", ["order.created"]),
        ("#.added", ["order.item.added"]),
        ("order.*.added", ["order.item.added"]),
    ],
)
async def test_patterns_select_events(bus: EventBus, pattern: str, expected: list[str]) -> None:
    received = Recorder()
    bus.subscribe(pattern, received)
    for name in ["order", "order.created", "order.item.added", "user.registered"]:
        await bus.publish(name, {})
    await settle(bus)
    assert [n for n in received.names if n != "test-barrier"] == expected


async def test_sync_and_async_handlers(bus: EventBus) -> None:
    calls: list[str] = []

    def sync_handler(event: Event[Any]) -> None:
        calls.append("sync:" + event.name)

    async def async_handler(event: Event[Any]) -> None:
        await asyncio.sleep(0)
        calls.append("async:" + event.name)

    bus.subscribe("ping", sync_handler)
    bus.subscribe("ping", async_handler)
    await bus.publish("ping")
    await wait_until(lambda: len(calls) == 2)
    assert calls == ["sync:ping", "async:ping"]  # handlers run in subscription order


async def test_the_subscription_handle_unsubscribes(bus: EventBus) -> None:
    received = Recorder()
    subscription = bus.subscribe("news", received)
    assert isinstance(subscription, Subscription)
    assert subscription.active
    assert (subscription.pattern, subscription.handler) == ("news", received)

    await bus.publish("news", 1)
    await received.wait(1)
    subscription()  # calling the handle unsubscribes, like the seed's returned function
    assert not subscription.active
    subscription.unsubscribe()  # twice is harmless
    await bus.publish("news", 2)
    await settle(bus)
    assert received.data == [1]
    assert bus.stats().listeners == {}


async def test_unsubscribe_by_pattern_and_handler(bus: EventBus) -> None:
    received = Recorder()
    other = Recorder()
    first = bus.subscribe("news", received)
    bus.subscribe("news", received)  # the same handler twice: two subscriptions
    bus.subscribe("news", other)
    bus.subscribe("sport", received)

    await bus.publish("news", 1)
    await received.wait(2)
    assert received.data == [1, 1]

    assert bus.unsubscribe("news", received) == 2
    assert bus.unsubscribe("news", received) == 0
    assert not first.active
    await bus.publish("news", 2)
    await bus.publish("sport", 3)
    await received.wait(3)
    await settle(bus)
    assert received.data == [1, 1, 3]
    assert other.data == [1, 2]


async def test_subscribe_once_fires_once(bus: EventBus) -> None:
    received = Recorder()

    async def republish(event: Event[Any]) -> None:
        received(event)
        await bus.publish("signal", event.data + 1)  # matches itself: must not loop

    subscription = bus.subscribe_once("signal", republish)
    assert subscription.once
    await bus.publish("signal", 1)
    await received.wait(1)
    await bus.publish("signal", 10)
    await settle(bus)
    assert received.data == [1]
    assert not subscription.active
    assert bus.stats().listeners == {}


async def test_a_failing_handler_stops_neither_the_others_nor_the_publisher(
    bus: EventBus, failures: Failures
) -> None:
    before = Recorder()
    after = Recorder()

    async def broken(event: Event[Any]) -> None:
        raise RuntimeError("handler bug")

    bus.subscribe("job", before)
    bad = bus.subscribe("job", broken)
    bus.subscribe("job", after)

    await bus.publish("job", {"n": 1})  # does not raise
    await after.wait(1)
    assert before.data == after.data == [{"n": 1}]
    await wait_until(lambda: len(failures.items) == 1)
    [failure] = failures.items
    assert isinstance(failure.error, RuntimeError)
    assert failure.subscription is bad
    assert failure.event is not None and failure.event.name == "job"
    stats = bus.stats()
    assert (stats.errors, stats.delivered) == (1, 2)


async def test_an_error_hook_that_raises_is_contained(backend: Any) -> None:
    async def hook(failure: DeliveryFailure) -> None:
        raise RuntimeError("hook bug")

    def broken(event: Event[Any]) -> None:
        raise ValueError("handler bug")

    received = Recorder()
    async with EventBus.from_url(backend.url, prefix=backend.prefix, on_error=hook) as bus:
        bus.subscribe("job", broken)
        bus.subscribe("job", received)
        await bus.publish("job", 1)
        await bus.publish("job", 2)
        await received.wait(2)
        assert bus.stats().errors == 2


async def test_typed_subscribers_get_models_and_bad_payloads_go_to_the_hook(
    bus: EventBus, failures: Failures
) -> None:
    typed: list[OrderCreated] = []
    untyped = Recorder()

    def on_order(event: Event[OrderCreated]) -> None:
        typed.append(event.data)

    bus.subscribe("order.created", on_order, model=OrderCreated)
    bus.subscribe("order.created", untyped)

    await bus.publish("order.created", OrderCreated(order_id=1, user_id=2, total=130.0))
    await bus.publish("order.created", {"order_id": "not a number"})
    await untyped.wait(2)
    await settle(bus)

    assert typed == [OrderCreated(order_id=1, user_id=2, total=130.0)]
    # A model instance is published as its JSON form.
    assert untyped.data[0] == {"order_id": 1, "user_id": 2, "total": 130.0}
    [failure] = failures.items
    assert isinstance(failure.error, ValidationError)
    assert "order_id" in str(failure.error)
    assert "not a number" not in str(failure.error)  # payloads are not echoed
    assert failure.event is not None and failure.event.data == {"order_id": "not a number"}
    assert bus.stats().errors == 1


async def test_data_arrives_in_its_json_form(bus: EventBus) -> None:
    received = Recorder()
    bus.subscribe("shape", received)
    await bus.publish("shape", {"point": (1, 2), "tags": ["a"], "none": None, "f": 1.5})
    await bus.publish("shape")
    await received.wait(2)
    assert received.data == [{"point": [1, 2], "tags": ["a"], "none": None, "f": 1.5}, None]


async def test_oversize_and_unencodable_payloads_are_refused(bus: EventBus) -> None:
    received = Recorder()
    bus.subscribe("#", received)
    with pytest.raises(PayloadTooLarge, match="max_payload_bytes=1024"):
        await bus.publish("big", "x" * 2000)
    with pytest.raises(ValidationError, match="not JSON-able"):
        await bus.publish("odd", {"f": object()})
    await bus.publish("fine", "x" * 1000)
    await received.wait(1)
    await settle(bus)
    assert [n for n in received.names if n != "test-barrier"] == ["fine"]
    assert bus.stats().published == 2  # "fine" and the barrier


@pytest.mark.parametrize("name", ["", "a..b", ".a", "a.", "a.*", "#", "a b", "a\nb", "x" * 257])
async def test_bad_event_names_are_refused(bus: EventBus, name: str) -> None:
    with pytest.raises(ValidationError):
        await bus.publish(name, {})


@pytest.mark.parametrize("name", [None, 3, b"a", ["a"], {"a": 1}])
async def test_event_names_that_are_not_strings_are_refused(bus: EventBus, name: Any) -> None:
    with pytest.raises(ValidationError, match="must be a string"):
        await bus.publish(name, {})
    assert bus.stats().published == 0


@pytest.mark.parametrize("pattern", ["", "a..b", "a*", "a.#b", "a b", "x" * 257])
async def test_bad_patterns_are_refused(bus: EventBus, pattern: str) -> None:
    with pytest.raises(ValidationError):
        bus.subscribe(pattern, Recorder())
    assert bus.stats().listeners == {}


async def test_handlers_can_publish(bus: EventBus) -> None:
    """The seed's flow: a handler of one event publishes the next one."""
    welcomed = Recorder()

    async def on_registered(event: Event[Any]) -> None:
        await bus.publish("user.welcome.completed", {"user_id": event.data["user_id"]})

    bus.subscribe("user.registered", on_registered)
    bus.subscribe("user.welcome.completed", welcomed)
    await bus.publish("user.registered", {"user_id": 7})
    await welcomed.wait(1)
    assert welcomed.data == [{"user_id": 7}]


async def test_concurrent_publishes_are_all_delivered_in_order_per_publisher(
    bus: EventBus,
) -> None:
    received = Recorder()
    bus.subscribe("load.*", received)

    async def publisher(n: int) -> None:
        for i in range(20):
            await bus.publish(f"load.p{n}", i)

    await asyncio.gather(*(publisher(n) for n in range(10)))
    await received.wait(200)
    for n in range(10):
        assert [e.data for e in received.events if e.name == f"load.p{n}"] == list(range(20))


async def test_stats(bus: EventBus) -> None:
    received = Recorder()
    bus.subscribe("a.*", received)
    bus.subscribe("a.*", Recorder())
    bus.subscribe("b", received)
    bus.subscribe_once("c", received)
    await bus.publish("a.x")
    await bus.publish("c")
    await received.wait(2)
    await wait_until(lambda: bus.stats().delivered == 3)
    stats = bus.stats()
    assert isinstance(stats, EventBusStats)
    assert stats.listeners == {"a.*": 2, "b": 1}
    assert (stats.published, stats.received, stats.delivered, stats.errors) == (2, 2, 3, 0)
    assert stats.backend in {"memory", "redis"}


async def test_a_handler_sees_its_event_published_and_received_not_yet_delivered(
    bus: EventBus,
) -> None:
    seen: list[tuple[int, int, int]] = []

    async def look(event: Event[Any]) -> None:
        stats = bus.stats()
        seen.append((stats.published, stats.received, stats.delivered))

    bus.subscribe("look", look)
    await bus.publish("nobody.listens")  # published, never received
    await bus.publish("look")
    await wait_until(lambda: len(seen) == 1)
    assert seen == [(2, 1, 0)]
    await wait_until(lambda: bus.stats().delivered == 1)


async def test_lifecycle(backend: Any) -> None:
    bus = EventBus.from_url(backend.url, prefix=backend.prefix)
    received = Recorder()
    bus.subscribe("early", received)  # subscribing before start is fine
    await bus.start()
    await bus.start()  # idempotent
    await bus.publish("early", 1)
    await received.wait(1)
    await bus.close()
    await bus.close()  # idempotent
    with pytest.raises(Closed, match="closed"):
        await bus.publish("early", 2)
    with pytest.raises(Closed, match="closed"):
        await bus.start()


async def test_publishing_starts_a_new_bus(backend: Any) -> None:
    bus = EventBus.from_url(backend.url, prefix=backend.prefix)
    received = Recorder()
    bus.subscribe("early", received)
    try:
        assert "new" in repr(bus)
        await bus.publish("early", 1)  # no start() needed: the first publish starts the bus
        assert "started" in repr(bus)
        await received.wait(1)
        assert received.data == [1]
    finally:
        await bus.close()
    assert "closed" in repr(bus)


async def test_every_operation_after_close_raises_closed(backend: Any) -> None:
    bus = EventBus.from_url(backend.url, prefix=backend.prefix)
    received = Recorder()
    subscription = bus.subscribe("news", received)
    await bus.publish("news", 1)
    await received.wait(1)
    await bus.close()
    with pytest.raises(Closed):
        await bus.publish("news", 2)
    with pytest.raises(Closed):
        bus.subscribe("news", Recorder())
    with pytest.raises(Closed):
        bus.subscribe_once("news", Recorder())
    with pytest.raises(Closed):
        bus.unsubscribe("news", received)
    with pytest.raises(Closed):
        await bus.start()
    stats = bus.stats()  # the counters stay readable
    assert (stats.published, stats.received, stats.delivered) == (1, 1, 1)
    assert stats.listeners == {"news": 1}  # what was subscribed stays listed
    subscription()  # a subscription handle is harmless after close
    assert not subscription.active
    assert bus.closed


async def test_a_bus_that_never_started_closes(backend: Any) -> None:
    bus = EventBus.from_url(backend.url, prefix=backend.prefix)
    await bus.close()
    with pytest.raises(Closed):
        await bus.publish("never")
    assert bus.stats().published == 0


async def test_a_publish_only_bus_cannot_subscribe(backend: Any) -> None:
    async with EventBus.from_url(backend.url, prefix=backend.prefix, publish_only=True) as bus:
        with pytest.raises(ConfigurationError, match="publish_only"):
            bus.subscribe("#", Recorder())
        assert await bus.publish("fire.and.forget", {"n": 1})
        assert bus.stats().published == 1


async def test_without_a_hook_failures_are_logged_without_the_payload(
    backend: Any, caplog: pytest.LogCaptureFixture
) -> None:
    class Secret(pydantic.BaseModel):
        pin: int

    received = Recorder()
    async with EventBus.from_url(backend.url, prefix=backend.prefix) as bus:
        bus.subscribe("card.added", Recorder(), model=Secret)
        bus.subscribe("card.added", received)
        with caplog.at_level(logging.ERROR, logger="rtkit.eventbus"):
            await bus.publish("card.added", {"pin": "s3cret"})
            await received.wait(1)
            await wait_until(lambda: bus.stats().errors == 1)
    assert "card.added" in caplog.text
    assert "s3cret" not in caplog.text


async def test_a_handler_removed_during_dispatch_is_not_called(bus: EventBus) -> None:
    later = Recorder()

    def remove_later(event: Event[Any]) -> None:
        later_subscription()

    bus.subscribe("tick", remove_later)
    later_subscription = bus.subscribe("tick", later)
    await bus.publish("tick")
    await bus.publish("tick")
    await settle(bus)
    assert later.events == []


async def test_handlers_must_be_callable(bus: EventBus) -> None:
    with pytest.raises(TypeError, match="callable"):
        bus.subscribe("tick", "not a function")  # type: ignore[call-overload]
