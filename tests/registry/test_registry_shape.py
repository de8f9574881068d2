"""The registry's share of the one shape: memory names, Closed after close, from_url options."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from rtkit._core.lifecycle import DEFAULT_TIMEOUT
from rtkit._core.urls import BackendTarget
from rtkit.errors import Closed, ConfigurationError
from rtkit.registry import ServiceChange, ServiceRegistry
from rtkit.registry.backends.memory import MemoryRegistryBackend
from rtkit_testing import Backend, unique_name


async def _next(stream: AsyncIterator[ServiceChange]) -> ServiceChange:
    return await asyncio.wait_for(anext(stream), timeout=10)


# -- memory://NAME -------------------------------------------------------------------------


async def test_registries_on_one_memory_name_share_instances_and_changes() -> None:
    name = unique_name("registry")
    a = ServiceRegistry.from_url(f"memory://{name}")
    b = ServiceRegistry.from_url(f"memory://{name}")
    apart = [
        ServiceRegistry.from_url(f"memory://{name}-other"),
        ServiceRegistry.from_url(f"memory://{name}", prefix="other-app:"),
        ServiceRegistry.from_url("memory://"),
        ServiceRegistry(),
    ]
    try:
        stream = b.watch("svc", initial=False)
        waiting = asyncio.ensure_future(_next(stream))
        await asyncio.sleep(0.05)
        iid = await a.register("svc", host="h", port=1)
        change = await waiting  # pushed from a's registration to b's watcher
        assert (change.kind, change.instance.instance_id) == ("added", iid)
        assert [i.instance_id for i in await b.discover("svc")] == [iid]
        assert await b.services() == {"svc": 1}
        for registry in apart:
            assert await registry.discover("svc") == []
            assert await registry.services() == {}

        assert await b.deregister(iid) is True  # any registry of the name may deregister
        change = await _next(stream)
        assert (change.kind, change.instance.instance_id) == ("removed", iid)
        assert await a.discover("svc") == []
        await stream.aclose()  # type: ignore[attr-defined]
    finally:
        for registry in (a, b, *apart):
            await registry.close()


async def test_closing_one_registry_of_a_memory_name_removes_only_its_instances() -> None:
    name = unique_name("registry")
    a = ServiceRegistry.from_url(f"memory://{name}")
    b = ServiceRegistry.from_url(f"memory://{name}")
    try:
        await a.register("svc", host="h", port=1)
        await b.register("svc", host="h", port=2, heartbeat=False)
        await a.close()
        assert [i.port for i in await b.discover("svc")] == [2]
        c = ServiceRegistry.from_url(f"memory://{name}")  # a newcomer sees what is left
        assert [i.port for i in await c.discover("svc")] == [2]
        await c.close()
        assert [i.port for i in await b.discover("svc")] == [2]
    finally:
        await b.close()


# -- Closed after close ----------------------------------------------------------------------

OPERATIONS: dict[str, Callable[[ServiceRegistry], Awaitable[Any]]] = {
    "start": lambda r: r.start(),
    "register": lambda r: r.register("svc", host="h", port=1),
    "refresh": lambda r: r.refresh("svc:01"),
    "deregister": lambda r: r.deregister("svc:01"),
    "discover": lambda r: r.discover("svc"),
    "services": lambda r: r.services(),
    "get_service": lambda r: r.get_service("svc"),
    "watch": lambda r: anext(r.watch("svc")),
}


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
async def test_every_operation_raises_closed_after_close(backend: Backend, operation: str) -> None:
    registry = ServiceRegistry.from_url(backend.url, prefix=backend.prefix)
    await registry.register("svc", host="h", port=1)
    [instance] = await registry.discover("svc")
    await registry.close()
    with pytest.raises(Closed):
        await OPERATIONS[operation](registry)
    with pytest.raises(Closed):
        registry.pick("svc", [instance])
    with pytest.raises(Closed), registry.track(instance):
        pass
    assert registry.load(instance) == 0  # a read of local counters stays readable


async def test_a_registry_never_started_closes(backend: Backend) -> None:
    registry = ServiceRegistry.from_url(backend.url, prefix=backend.prefix)
    await registry.close()
    with pytest.raises(Closed):
        await registry.discover("svc")


async def test_a_running_watch_ends_with_closed(backend: Backend) -> None:
    registry = ServiceRegistry.from_url(backend.url, prefix=backend.prefix, poll_interval=0.2)
    await registry.register("svc", host="h", port=1)
    stream = registry.watch("svc")
    assert (await _next(stream)).kind == "added"
    waiting = asyncio.ensure_future(_next(stream))
    await asyncio.sleep(0.05)
    await registry.close()
    with pytest.raises(Closed):
        await waiting


async def test_close_stops_every_heartbeat(backend: Backend) -> None:
    registry = ServiceRegistry.from_url(backend.url, prefix=backend.prefix)
    for port in (1, 2):
        await registry.register("svc", host="h", port=port, ttl=1)
    tasks = [reg.task for reg in registry._own.values()]
    await registry.close()
    assert all(task is not None and task.done() for task in tasks)
    assert not registry._janitor.running


# -- from_url options ------------------------------------------------------------------------


@pytest.mark.redis
async def test_from_url_gives_each_option_to_whoever_takes_it(redis_url: str) -> None:
    registry = ServiceRegistry.from_url(
        redis_url, prune_interval=1.5, poll_interval=2.5, timeout=0.5
    )
    assert (registry._janitor._interval, registry._poll_interval) == (1.5, 2.5)
    assert registry._backend._handle.timeout == 0.5  # type: ignore[attr-defined]
    await registry.close()
    default = ServiceRegistry.from_url(redis_url)
    assert default._backend._handle.timeout == DEFAULT_TIMEOUT  # type: ignore[attr-defined]
    await default.close()


def test_from_url_refuses_options_nobody_takes() -> None:
    with pytest.raises(ConfigurationError, match=r"ServiceRegistry\.from_url.*ttl"):
        ServiceRegistry.from_url("memory://", ttl=3)
    # memory waits for nothing: the Redis option is ignored, one call fits every URL
    assert ServiceRegistry.from_url("memory://", timeout=1) is not None


@pytest.mark.redis
@pytest.mark.parametrize(
    "options",
    [{"prune_interval": 0}, {"poll_interval": -1}, {"poll_interval": "5"}, {"timeout": 0}],
)
def test_bad_settings_are_configuration_errors(redis_url: str, options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        ServiceRegistry.from_url(redis_url, **options)


async def test_a_backend_object_is_used_as_given() -> None:
    target = BackendTarget("ServiceRegistry", "memory", "memory://shared", name=unique_name())
    backend = MemoryRegistryBackend.open(target)
    async with (
        ServiceRegistry(backend) as a,
        ServiceRegistry(MemoryRegistryBackend.open(target)) as b,
    ):
        await a.register("svc", host="h", port=1)
        assert [i.port for i in await b.discover("svc")] == [1]


# -- typed errors ----------------------------------------------------------------------------


async def test_errors_are_typed(backend: Backend) -> None:
    from rtkit.errors import NotFound, ServiceNotFound, ValidationError

    async with ServiceRegistry.from_url(backend.url, prefix=backend.prefix) as registry:
        with pytest.raises(NotFound) as caught:
            await registry.refresh("svc:not-registered-here")
        assert not isinstance(caught.value, ServiceNotFound)
        assert caught.value.code == "not_found"
        with pytest.raises(ServiceNotFound) as missing:
            await registry.get_service("svc")
        assert missing.value.code == "service_not_found"
        with pytest.raises(ValidationError) as bad:
            await registry.discover("bad name")
        assert bad.value.code == "invalid_payload"
        with pytest.raises(ServiceNotFound):
            registry.pick("svc", [])
