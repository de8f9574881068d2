"""Memory and Redis, driven by the same random operations, deliver the same events.

Three buses under test: a private memory bus, a bus on a ``memory://NAME`` and a
Redis bus. The last two each have a publish-only peer on their channel, and an
event published by the peer must reach them as if they had published it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    rule,
    run_state_machine_as_test,
)

from rtkit import Event, EventBus
from rtkit.eventbus import Subscription

from ._helpers import settle

T = TypeVar("T")

SEGMENTS = st.sampled_from(["a", "b", "c"])
NAMES = st.lists(SEGMENTS, min_size=1, max_size=3).map(".".join)
PATTERNS = st.one_of(
    NAMES,
    st.sampled_from(["*", "#", "a.*", "a.#", "*.b", "#.c", "a.*.c", "*.*"]),
)
Delivery = tuple[int, str, Any]


class MemoryAndRedisAgree(RuleBasedStateMachine):
    """Applies each operation to the memory buses and a Redis bus and compares."""

    redis_url = ""
    subscriptions = Bundle("subscriptions")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        prefix = f"rtkit-test-{uuid.uuid4().hex[:12]}:"
        named = f"memory://{uuid.uuid4().hex[:12]}"
        self.buses = {
            "memory": EventBus(on_error=lambda failure: None),
            "memory-named": EventBus.from_url(named, on_error=lambda f: None),
            "redis": EventBus.from_url(self.redis_url, prefix=prefix, on_error=lambda f: None),
        }
        self.peers = {
            "memory-named": EventBus.from_url(named, publish_only=True),
            "redis": EventBus.from_url(self.redis_url, prefix=prefix, publish_only=True),
        }
        self.log: dict[str, list[Delivery]] = {side: [] for side in self.buses}
        self.subs: dict[int, dict[str, Subscription]] = {}
        for bus in [*self.buses.values(), *self.peers.values()]:
            self.run(bus.start())

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(asyncio.wait_for(coroutine, 30))

    def teardown(self) -> None:
        for bus in [*self.buses.values(), *self.peers.values()]:
            self.run(bus.close())
        self.loop.close()

    def handler(self, side: str, label: int, *, is_async: bool, fails: bool) -> Any:
        log = self.log[side]

        def record(event: Event[Any]) -> None:
            log.append((label, event.name, event.data))
            if fails:
                raise RuntimeError("handler failed on purpose")

        async def record_async(event: Event[Any]) -> None:
            record(event)

        return record_async if is_async else record

    @rule(
        target=subscriptions,
        pattern=PATTERNS,
        once=st.booleans(),
        is_async=st.booleans(),
        fails=st.booleans(),
        model=st.sampled_from([None, int]),
    )
    def subscribe(
        self, pattern: str, once: bool, is_async: bool, fails: bool, model: type[int] | None
    ) -> int:
        label = len(self.subs)
        self.subs[label] = {}
        for side, bus in self.buses.items():
            handler = self.handler(side, label, is_async=is_async, fails=fails)
            method = bus.subscribe_once if once else bus.subscribe
            self.subs[label][side] = method(pattern, handler, model=model)
        return label

    @rule(label=subscriptions)
    def subscribe_same_handler_again(self, label: int) -> None:
        for side, bus in self.buses.items():
            sub = self.subs[label][side]
            bus.subscribe(sub.pattern, sub.handler)

    @rule(label=consumes(subscriptions))
    def unsubscribe_with_the_handle(self, label: int) -> None:
        for side in self.buses:
            self.subs[label][side]()

    @rule(label=subscriptions)
    def unsubscribe_by_pattern_and_handler(self, label: int) -> None:
        removed = {
            side: bus.unsubscribe(self.subs[label][side].pattern, self.subs[label][side].handler)
            for side, bus in self.buses.items()
        }
        assert removed["memory"] == removed["memory-named"] == removed["redis"]

    @rule(
        name=NAMES,
        data=st.one_of(st.none(), st.integers(-5, 5), st.lists(st.booleans())),
        from_peer=st.booleans(),
    )
    def publish(self, name: str, data: Any, from_peer: bool) -> None:
        for bus in self.buses.values():  # a first subscription on Redis: wait for it
            self.run(bus.start())
        for side, bus in self.buses.items():
            publisher = self.peers.get(side, bus) if from_peer else bus
            self.run(publisher.publish(name, data))
        for bus in self.buses.values():
            self.run(settle(bus))
        assert self.log["redis"] == self.log["memory"] == self.log["memory-named"]

    @invariant()
    def same_listeners_and_counters(self) -> None:
        memory, named, redis = (bus.stats() for bus in self.buses.values())
        assert memory.listeners == named.listeners == redis.listeners
        assert (memory.delivered, memory.errors) == (redis.delivered, redis.errors)
        assert (named.delivered, named.errors) == (redis.delivered, redis.errors)


@pytest.mark.redis
@pytest.mark.slow
def test_memory_and_redis_deliver_the_same_events(redis_url: str) -> None:
    MemoryAndRedisAgree.redis_url = redis_url
    run_state_machine_as_test(
        MemoryAndRedisAgree,
        settings=settings(
            max_examples=25,
            stateful_step_count=20,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
