"""What only the Redis registry can do: several registry objects (processes) share it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from rtkit.errors import Closed
from rtkit.registry import ServiceRegistry

pytestmark = pytest.mark.redis


@pytest.fixture
async def make_registry(
    redis_url: str, redis_prefix: str
) -> AsyncIterator[Callable[[], ServiceRegistry]]:
    made: list[ServiceRegistry] = []

    def make() -> ServiceRegistry:
        made.append(ServiceRegistry.from_url(redis_url, prefix=redis_prefix))
        return made[-1]

    yield make
    for registry in made:
        await registry.close()


async def test_another_registry_sees_and_can_deregister(
    make_registry: Callable[[], ServiceRegistry],
) -> None:
    a, b = make_registry(), make_registry()
    iid = await a.register("svc", host="h", port=1)
    assert [i.instance_id for i in await b.discover("svc")] == [iid]
    assert await b.services() == {"svc": 1}
    assert await b.deregister(iid) is True
    assert await a.discover("svc") == []


async def test_close_deregisters_own_instances(
    make_registry: Callable[[], ServiceRegistry],
) -> None:
    a, b = make_registry(), make_registry()
    await a.register("svc", host="h", port=1)
    await b.register("svc", host="h", port=2)
    await a.close()
    assert [i.port for i in await b.discover("svc")] == [2]
    with pytest.raises(Closed):
        await a.discover("svc")


async def test_prefixes_isolate_applications(redis_url: str, redis_prefix: str) -> None:
    async with (
        ServiceRegistry.from_url(redis_url, prefix=redis_prefix + "a:") as a,
        ServiceRegistry.from_url(redis_url, prefix=redis_prefix + "b:") as b,
    ):
        await a.register("svc", host="h", port=1)
        assert await b.discover("svc") == []
        assert await b.services() == {}


async def test_change_channels_name_the_database(redis_url: str, redis_prefix: str) -> None:
    """Pub/sub ignores the database: registries on /12 and /13 must not wake each other."""
    import redis.asyncio as aioredis

    from rtkit import ServiceRegistry

    base = redis_url.rstrip("/").rsplit("/", 1)[0] if redis_url.count("/") > 2 else redis_url
    on_12 = ServiceRegistry.from_url(f"{base}/12", prefix=redis_prefix)
    on_13 = ServiceRegistry.from_url(f"{base}/13", prefix=redis_prefix)
    listener = aioredis.Redis.from_url(f"{base}/12", decode_responses=True)
    pubsub = listener.pubsub()
    try:
        await pubsub.psubscribe(f"{redis_prefix}*")
        await pubsub.get_message(timeout=1.0)  # the psubscribe confirmation
        await on_13.register("svc", host="127.0.0.1", port=8000)
        heard = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
        assert heard is not None and ":db13:" in heard["channel"]
        await on_12.register("svc", host="127.0.0.1", port=8001)
        heard = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
        assert heard is not None and ":db12:" in heard["channel"]
    finally:
        await pubsub.aclose()
        await listener.aclose()
        await on_12.close()
        await on_13.close()
        for db in (12, 13):
            client = aioredis.Redis.from_url(f"{base}/{db}")
            keys = [k async for k in client.scan_iter(match=f"{redis_prefix}*", count=10_000)]
            if keys:
                await client.delete(*keys)
            await client.aclose()
