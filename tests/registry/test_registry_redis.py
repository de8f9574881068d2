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
