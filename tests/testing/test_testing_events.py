"""rtkit.testing: EventRecorder and wait_until, on memory and Redis."""

from __future__ import annotations

import asyncio

import pytest

from rtkit import EventBus
from rtkit.testing import EventRecorder, unique_name, wait_until
from rtkit_testing import Backend


async def test_a_recorder_waits_for_events_on_every_backend(backend: Backend) -> None:
    async with EventBus.from_url(backend.url, prefix=backend.prefix) as bus:
        with EventRecorder(bus, "order.*") as orders:
            await bus.publish("user.registered", {"id": 7})
            await bus.publish("order.created", {"id": 1})
            await bus.publish("order.paid", {"id": 1})
            created = await orders.wait_for("order.created")
            assert created.data == {"id": 1}
            second = await orders.wait_for(count=2)
            assert second.name == "order.paid"
            assert orders.names == ["order.created", "order.paid"]
            assert [e.name for e in orders.matching("#.paid")] == ["order.paid"]
        await bus.publish("order.created", {"id": 2})  # after close: not recorded
        assert orders.data == [{"id": 1}, {"id": 1}]


async def test_a_recorder_waits_for_what_arrives_later() -> None:
    async with EventBus() as bus:
        events = EventRecorder(bus)

        async def later() -> None:
            await asyncio.sleep(0.05)
            await bus.publish("job.done", {"ok": True})

        task = asyncio.create_task(later())
        assert (await events.wait_for("job.done", timeout=5)).data == {"ok": True}
        await task
        events.close()


async def test_a_missing_event_fails_with_what_did_arrive() -> None:
    async with EventBus() as bus, EventRecorder(bus) as events:
        await bus.publish("order.created")
        with pytest.raises(TimeoutError, match=r"0 of 1 events 'order\.paid'.*order\.created"):
            await events.wait_for("order.paid", timeout=0.05)
        events.clear()
        assert events.events == []


async def test_wait_until_takes_sync_and_async_checks() -> None:
    flag: list[int] = []
    asyncio.get_running_loop().call_later(0.02, flag.append, 1)
    await wait_until(lambda: bool(flag), timeout=5)

    async def check() -> bool:
        return True

    await wait_until(check)
    with pytest.raises(TimeoutError, match="the thing"):
        await wait_until(lambda: False, timeout=0.03, what="the thing")
    assert unique_name("q") != unique_name("q")
