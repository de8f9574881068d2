"""The dedup stores: memory and Redis (SET NX EX) behave alike."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator

import pytest

from rtkit import ConfigurationError, ManualClock
from rtkit.messaging import (
    DedupStore,
    MemoryDedupStore,
    MessageConsumer,
    MessageProducer,
    RedisDedupStore,
    dedup_from_url,
)
from rtkit_testing import Backend

from ._helpers import MQ, eventually


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[DedupStore]:
    store = dedup_from_url(backend.url, prefix=backend.prefix, window=2.0, lease=0.5)
    yield store
    await store.close()


async def test_claim_complete_release(store: DedupStore) -> None:
    assert await store.claim("m-1") == "new"
    assert await store.claim("m-1") == "busy"
    await store.complete("m-1")
    assert await store.claim("m-1") == "done"
    assert await store.claim("m-2") == "new"
    await store.release("m-2")
    assert await store.claim("m-2") == "new"
    await store.complete("m-2")
    await store.release("m-2")  # a finished id is never released
    assert await store.claim("m-2") == "done"


async def test_marks_expire(backend: Backend) -> None:
    if backend.kind == "memory":
        clock = ManualClock()
        store: DedupStore = MemoryDedupStore(window=2.0, lease=0.5, clock=clock)
        assert await store.claim("a") == "new"
        clock.advance(0.6)  # the lease of a crashed handler ran out
        assert await store.claim("a") == "new"
        await store.complete("a")
        clock.advance(2.1)
        assert await store.claim("a") == "new"
        return
    store = RedisDedupStore(backend.url, prefix=backend.prefix, window=0.3, lease=0.1)
    try:
        assert await store.claim("a") == "new"
        await eventually(lambda: _is_new(store, "a"), timeout=5)
        await store.complete("a")
        assert await store.claim("a") == "done"
        await eventually(lambda: _is_new(store, "a"), timeout=5)
    finally:
        await store.close()


async def _is_new(store: DedupStore, key: str) -> bool:
    if await store.claim(key) == "new":
        return True
    await asyncio.sleep(0.05)
    return False


def test_bad_configuration() -> None:
    with pytest.raises(ConfigurationError):
        MemoryDedupStore(window=0)
    with pytest.raises(ConfigurationError):
        dedup_from_url("amqp://localhost/")


@pytest.mark.redis
@pytest.mark.rabbitmq
async def test_replicas_sharing_a_redis_store_handle_each_id_once(
    rabbit: MQ, redis_url: str, redis_prefix: str
) -> None:
    queue = rabbit.queue()
    calls: collections.Counter[int] = collections.Counter()

    async def handle(payload: int) -> None:
        calls[payload] += 1

    stores = [RedisDedupStore(redis_url, prefix=redis_prefix) for _ in range(2)]
    services = [await rabbit.service() for _ in range(2)]
    await services[0].declare_queue(queue)
    for service, store in zip(services, stores, strict=True):
        await MessageConsumer(service, dedup=store).consume(queue, handle, prefetch=20)
    producer = MessageProducer(services[0])
    for i in range(100):
        for _ in range(2):  # every message is delivered twice (at-least-once)
            await producer.send(queue, i, message_id=f"id-{i}")
    await eventually(lambda: len(calls) == 100)
    await asyncio.sleep(0.3)
    assert set(calls.values()) == {1}
    for store in stores:
        await store.close()
