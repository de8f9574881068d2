"""The Redis registry behaves like the memory registry (the specification), step by step."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from rtkit import ManualClock
from rtkit.errors import BackendUnavailable
from rtkit.registry import ServiceInstance, ServiceRegistry

NAMES = st.sampled_from(["users", "orders", "billing/v2"])


def view(instances: list[ServiceInstance], ids: dict[str, int]) -> list[tuple[Any, ...]]:
    """What must match between backends (instance ids differ: map them to a number)."""
    return [
        (ids[i.instance_id], i.name, i.host, i.port, i.meta, i.registered_at, i.expires_at)
        for i in instances
    ]


class RegistryModel(RuleBasedStateMachine):
    """Runs every step on a memory and a Redis registry sharing one ManualClock."""

    redis_url = ""
    prefix = ""

    instances = Bundle("instances")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = ManualClock(start=1_800_000_000.0)
        prefix = f"{self.prefix}{uuid.uuid4().hex[:8]}:"
        options: dict[str, Any] = {"clock": self.clock, "prune_interval": 3600}
        self.memory = ServiceRegistry.from_url("memory://", **options)
        self.redis = ServiceRegistry.from_url(self.redis_url, prefix=prefix, **options)
        self.ids: dict[str, int] = {}  # instance id (either backend) -> registration number

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    @rule(
        target=instances,
        name=NAMES,
        port=st.integers(1, 65535),
        ttl=st.sampled_from([1, 5, 30]),
        meta=st.dictionaries(st.sampled_from("ab"), st.integers() | st.text(max_size=5)),
    )
    def register(self, name: str, port: int, ttl: int, meta: dict[str, Any]) -> tuple[str, str]:
        kwargs = {"host": "10.0.0.1", "port": port, "ttl": ttl, "meta": meta, "heartbeat": False}
        a = self.run(self.memory.register(name, **kwargs))
        b = self.run(self.redis.register(name, **kwargs))
        self.ids[a] = self.ids[b] = len(self.ids) // 2
        return a, b

    @rule(pair=instances)
    def refresh(self, pair: tuple[str, str]) -> None:
        self.run(self.memory.refresh(pair[0]))
        self.run(self.redis.refresh(pair[1]))

    @rule(pair=consumes(instances))
    def deregister(self, pair: tuple[str, str]) -> None:
        assert self.run(self.memory.deregister(pair[0])) == self.run(self.redis.deregister(pair[1]))

    @rule(seconds=st.sampled_from([0.5, 1, 4, 10, 31]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @invariant()
    def same_view(self) -> None:
        assert self.run(self.memory.services()) == self.run(self.redis.services())
        for name in ("users", "orders", "billing/v2"):
            mine = view(self.run(self.memory.discover(name)), self.ids)
            theirs = view(self.run(self.redis.discover(name)), self.ids)
            assert mine == theirs

    def teardown(self) -> None:
        self.run(self.memory.close())
        self.run(self.redis.close())
        self.loop.close()


@pytest.mark.redis
@pytest.mark.slow
def test_redis_matches_memory(redis_url: str, redis_prefix: str) -> None:
    RegistryModel.redis_url, RegistryModel.prefix = redis_url, redis_prefix
    test = RegistryModel.TestCase
    test.settings = settings(
        max_examples=15,
        stateful_step_count=25,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    test().runTest()


async def test_redis_down_is_backend_unavailable() -> None:
    registry = ServiceRegistry.from_url("redis://127.0.0.1:1/0")
    with pytest.raises(BackendUnavailable):
        await registry.register("svc", host="h", port=1)
    with pytest.raises(BackendUnavailable):
        await registry.discover("svc")
    await registry.close()
