"""Helpers shared by the EventBus tests: recording handlers and polling waits."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from rtkit import Event, EventBus

DEADLINE = 15.0


async def wait_until(predicate: Callable[[], bool], *, timeout: float = DEADLINE) -> None:
    """Poll ``predicate`` until it holds; fail after a generous ``timeout``."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        if loop.time() > end:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.005)


class Recorder:
    """A handler that remembers every event it receives."""

    def __init__(self) -> None:
        self.events: list[Event[Any]] = []

    def __call__(self, event: Event[Any]) -> None:
        self.events.append(event)

    @property
    def names(self) -> list[str]:
        """The names of the events received, in order."""
        return [event.name for event in self.events]

    @property
    def data(self) -> list[Any]:
        """The data of the events received, in order."""
        return [event.data for event in self.events]

    async def wait(self, count: int) -> None:
        """Wait until at least ``count`` events arrived."""
        await wait_until(lambda: len(self.events) >= count)


async def settle(bus: EventBus) -> None:
    """Wait until every event published before now has been dispatched by ``bus``.

    Publishes a barrier event and waits for it: a bus receives the events of one
    publisher in publish order, so everything earlier has been handled.
    """
    barrier = Recorder()
    subscription = bus.subscribe("test-barrier", barrier)
    try:
        await bus.publish("test-barrier")
        await barrier.wait(1)
    finally:
        subscription.unsubscribe()
