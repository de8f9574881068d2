"""The dedup store: on memory and on Redis (SET NX PX) it behaves alike."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator

import pytest

from rtkit import ManualClock
from rtkit.errors import Closed, ConfigurationError, ValidationError
from rtkit.messaging import DedupStore, MessageConsumer, MessageProducer
from rtkit_testing import Backend, unique_name

from ._helpers import MQ, eventually

pytestmark = pytest.mark.topologies  # also on the private cluster and Sentinel


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[DedupStore]:
    store = DedupStore.from_url(backend.url, prefix=backend.prefix, window=2.0, lease=0.5)
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
        store = DedupStore(window=2.0, lease=0.5, clock=clock)
        assert await store.claim("a") == "new"
        clock.advance(0.6)  # the lease of a crashed handler ran out
        assert await store.claim("a") == "new"
        await store.complete("a")
        clock.advance(2.1)
        assert await store.claim("a") == "new"
        return
    store = DedupStore.from_url(backend.url, prefix=backend.prefix, window=0.3, lease=0.1)
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
        DedupStore(window=0)
    with pytest.raises(ConfigurationError):
        DedupStore(lease=-1)
    with pytest.raises(ConfigurationError):
        DedupStore.from_url("amqp://localhost/")
    with pytest.raises(ConfigurationError, match="DedupStore"):
        DedupStore.from_url("memory://", colour="red")
    assert DedupStore.from_url("memory://", timeout=1.0)  # a Redis option: ignored on memory


@pytest.mark.redis
@pytest.mark.rabbitmq
async def test_replicas_sharing_a_redis_store_handle_each_id_once(
    rabbit: MQ, redis_url: str, redis_prefix: str
) -> None:
    queue = rabbit.queue()
    calls: collections.Counter[int] = collections.Counter()

    async def handle(payload: int) -> None:
        calls[payload] += 1

    stores = [DedupStore.from_url(redis_url, prefix=redis_prefix) for _ in range(2)]
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


async def test_bad_ids_are_refused(store: DedupStore) -> None:
    for bad in ("", "x" * 300, "a\nb", 42):
        with pytest.raises(ValidationError):
            await store.claim(bad)  # type: ignore[arg-type]
    assert await store.claim("fine") == "new"


async def test_memory_stores_share_marks_by_name_only() -> None:
    name = unique_name("dedup")
    first, second = DedupStore.from_url(f"memory://{name}"), DedupStore.from_url(f"memory://{name}")
    private = [DedupStore(), DedupStore.from_url("memory://")]
    assert await first.claim("m") == "new"
    assert await second.claim("m") == "busy"
    await second.complete("m")
    assert await first.claim("m") == "done"
    for store in private:
        assert await store.claim("m") == "new"
    for store in [first, second, *private]:
        await store.close()


async def test_every_operation_raises_closed_after_close(store: DedupStore) -> None:
    assert await store.claim("m") == "new"
    await store.close()
    await store.close()
    assert store.window == 2.0 and store.lease == 0.5  # settings stay readable
    for operation in (store.claim, store.complete, store.release):
        with pytest.raises(Closed):
            await operation("m")
    with pytest.raises(Closed):
        await store.start()


@pytest.mark.redis
async def test_from_url_gives_each_option_to_its_owner(redis_url: str, redis_prefix: str) -> None:
    async with DedupStore.from_url(redis_url, prefix=redis_prefix, timeout=1.5, window=7) as store:
        assert store.window == 7.0 and store.lease == 60.0
        assert store._backend._handle.timeout == 1.5  # type: ignore[attr-defined]
        assert await store.claim("m") == "new"
    with pytest.raises(ConfigurationError, match="DedupStore"):
        DedupStore.from_url(redis_url, publish_timeout=1.0)
