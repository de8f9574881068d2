"""The ServiceRegistry contract, run on every backend."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from rtkit import ManualClock
from rtkit.errors import (
    ConfigurationError,
    PayloadTooLarge,
    ServiceNotFound,
    ValidationError,
)
from rtkit.registry import ServiceChange, ServiceInstance, ServiceRegistry
from rtkit_testing import Backend

MakeRegistry = Callable[..., ServiceRegistry]


pytestmark = pytest.mark.topologies  # also on the private cluster and Sentinel


@pytest.fixture
async def make_registry(backend: Backend) -> AsyncIterator[MakeRegistry]:
    made: list[ServiceRegistry] = []

    def make(**kwargs: object) -> ServiceRegistry:
        registry = ServiceRegistry.from_url(backend.url, prefix=backend.prefix, **kwargs)  # type: ignore[arg-type]
        made.append(registry)
        return registry

    yield make
    for registry in made:
        await registry.close()


@pytest.fixture
async def clock() -> ManualClock:
    return ManualClock(start=1_800_000_000.0)


async def test_register_discover_deregister(make_registry: MakeRegistry) -> None:
    registry = make_registry()
    iid = await registry.register("user-service", host="127.0.0.1", port=3001, meta={"v": 1})
    assert iid.startswith("user-service:")

    [instance] = await registry.discover("user-service")
    assert isinstance(instance, ServiceInstance)
    assert (instance.instance_id, instance.name) == (iid, "user-service")
    assert (instance.host, instance.port, instance.meta) == ("127.0.0.1", 3001, {"v": 1})
    assert instance.url == "http://127.0.0.1:3001"
    assert instance.expires_at == pytest.approx(instance.registered_at + 30, abs=1)
    assert await registry.services() == {"user-service": 1}

    assert await registry.deregister(iid) is True
    assert await registry.deregister(iid) is False
    assert await registry.discover("user-service") == []
    assert await registry.services() == {}


async def test_services_lists_every_name_with_live_count(make_registry: MakeRegistry) -> None:
    registry = make_registry()
    for port in (1, 2, 3):
        await registry.register("order-service", host="h", port=port)
    await registry.register("user-service", host="h", port=9)
    assert await registry.services() == {"order-service": 3, "user-service": 1}


async def test_discover_lists_oldest_first(make_registry: MakeRegistry, clock: ManualClock) -> None:
    registry = make_registry(clock=clock)
    ids = []
    for port in (5, 4, 3):
        ids.append(await registry.register("svc", host="h", port=port, heartbeat=False))
        clock.advance(1)
    assert [i.instance_id for i in await registry.discover("svc")] == ids


async def test_unknown_or_empty_service(make_registry: MakeRegistry) -> None:
    registry = make_registry()
    assert await registry.discover("nobody") == []
    with pytest.raises(ServiceNotFound):
        await registry.get_service("nobody")
    iid = await registry.register("gone", host="h", port=1)
    await registry.deregister(iid)
    with pytest.raises(ServiceNotFound):
        await registry.get_service("gone", strategy="round_robin")


async def test_instances_expire_without_heartbeat(
    make_registry: MakeRegistry, clock: ManualClock
) -> None:
    registry = make_registry(clock=clock)
    iid = await registry.register("svc", host="h", port=1, ttl=10, heartbeat=False)
    clock.advance(9)
    assert [i.instance_id for i in await registry.discover("svc")] == [iid]
    await registry.refresh(iid)  # a manual heartbeat: 10 more seconds
    clock.advance(9)
    [instance] = await registry.discover("svc")
    assert instance.expires_at == pytest.approx(clock.time() + 1)
    clock.advance(1)
    assert await registry.discover("svc") == []
    assert await registry.services() == {}
    await registry.refresh(iid)  # an expired instance comes back under its id
    assert [i.instance_id for i in await registry.discover("svc")] == [iid]


async def test_heartbeat_keeps_an_instance_alive(make_registry: MakeRegistry) -> None:
    registry = make_registry()
    await registry.register("svc", host="h", port=1, ttl=2.0)  # heartbeats every 0.67 s
    await asyncio.sleep(3)
    assert len(await registry.discover("svc")) == 1


async def test_round_robin_visits_every_instance_in_turn(make_registry: MakeRegistry) -> None:
    registry = make_registry()
    ids = sorted([await registry.register("svc", host="h", port=p) for p in (1, 2, 3)])
    picks = [(await registry.get_service("svc", "round_robin")).instance_id for _ in range(6)]
    assert picks == ids + ids


async def test_random_picks_only_live_instances(make_registry: MakeRegistry) -> None:
    registry = make_registry()
    ids = {await registry.register("svc", host="h", port=p) for p in (1, 2)}
    picks = {(await registry.get_service("svc")).instance_id for _ in range(40)}
    assert picks == ids


async def test_p2c_avoids_the_loaded_instance(make_registry: MakeRegistry) -> None:
    registry = make_registry()
    await registry.register("svc", host="h", port=1)
    await registry.register("svc", host="h", port=2)
    busy = next(i for i in await registry.discover("svc") if i.port == 1)
    with registry.track(busy), registry.track(busy):
        assert registry.load(busy) == 2
        picks = {(await registry.get_service("svc", "p2c")).port for _ in range(20)}
    assert picks == {2}
    assert registry.load(busy) == 0


async def test_p2c_uses_reported_load(make_registry: MakeRegistry) -> None:
    registry = make_registry()
    await registry.register("svc", host="h", port=1, meta={"load": 5})
    await registry.register("svc", host="h", port=2, meta={"load": 0.5})
    picks = {(await registry.get_service("svc", "p2c")).port for _ in range(20)}
    assert picks == {2}


def deep(leaf: dict[str, object] | list[object], depth: int) -> dict[str, object]:
    """A JSON object nested ``depth`` levels."""
    value: object = leaf
    for _ in range(depth):
        value = {"x": [value]} if isinstance(value, list) else {"x": value}
    assert isinstance(value, dict)
    return value


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"name": ""}, ValidationError),
        ({"name": "has space"}, ValidationError),
        ({"name": "x" * 300}, ValidationError),  # a name: at most 255 characters
        ({"name": "-leading"}, ValidationError),
        ({"host": "a\nb"}, ValidationError),
        ({"host": "h" * 300}, PayloadTooLarge),
        ({"host": ""}, ValidationError),
        # a host is a hostname, an IPv4 or an IPv6 literal, nothing a URL reads otherwise
        ({"host": "u@host"}, ValidationError),
        ({"host": "user:pw@10.0.0.5"}, ValidationError),
        ({"host": "host/#"}, ValidationError),
        ({"host": "host/path"}, ValidationError),
        ({"host": "host#frag"}, ValidationError),
        ({"host": "host?q"}, ValidationError),
        ({"host": "two words"}, ValidationError),
        ({"host": "host:8080"}, ValidationError),
        ({"host": "[::1]"}, ValidationError),
        ({"host": "fe80::1%eth0"}, ValidationError),
        ({"host": "http://host"}, ValidationError),
        ({"host": "-host"}, ValidationError),
        ({"host": "a..b"}, ValidationError),
        ({"host": "10.0.0"}, ValidationError),
        ({"host": "010.0.0.1"}, ValidationError),
        ({"host": "300.0.0.1"}, ValidationError),
        ({"host": "h\u00f4te"}, ValidationError),
        ({"host": "x" * 64}, ValidationError),  # a label: at most 63 characters
        ({"port": 0}, ValidationError),
        ({"port": "80"}, ValidationError),
        ({"port": 65536}, ValidationError),
        ({"port": True}, ValidationError),
        ({"meta": {"x": object()}}, ValidationError),
        ({"meta": {"x": "y" * 5000}}, PayloadTooLarge),
        ({"meta": ["not", "a", "dict"]}, ValidationError),
        ({"meta": deep({}, 5000)}, ValidationError),  # not RecursionError
        ({"meta": {"x": deep([], 5000)}}, ValidationError),
        ({"ttl": 0}, ValidationError),
        ({"ttl": True}, ValidationError),
        ({"ttl": 0.2}, ValidationError),
        ({"ttl": 86_401}, ValidationError),
        ({"ttl": float("nan")}, ValidationError),
        ({"ttl": "30"}, ValidationError),
    ],
)
async def test_bad_registrations_change_nothing(
    make_registry: MakeRegistry, kwargs: dict[str, object], error: type[Exception]
) -> None:
    registry = make_registry()
    args: dict[str, object] = {"name": "svc", "host": "h", "port": 1, **kwargs}
    name = args.pop("name")
    with pytest.raises(error):
        await registry.register(name, **args)  # type: ignore[arg-type]
    assert await registry.services() == {}


@pytest.mark.parametrize(
    "host", ["h", "user-service", "user_service", "svc.internal.", "10.0.0.5", "::1", "2001:db8::7"]
)
async def test_good_hosts(make_registry: MakeRegistry, host: str) -> None:
    registry = make_registry()
    await registry.register("svc", host=host, port=80, heartbeat=False)
    (instance,) = await registry.discover("svc")
    assert instance.host == host
    assert instance.url == (f"http://[{host}]:80" if ":" in host else f"http://{host}:80")


async def test_bad_lookups(make_registry: MakeRegistry) -> None:
    registry = make_registry()
    with pytest.raises(ValidationError):
        await registry.discover("bad name")
    with pytest.raises(ValidationError):
        await registry.deregister("no-colon")
    with pytest.raises(ValidationError):
        await registry.get_service("svc", "fastest")  # type: ignore[arg-type]


def test_bad_urls() -> None:
    with pytest.raises(ConfigurationError):
        ServiceRegistry.from_url("amqp://guest@localhost/")
    with pytest.raises(ConfigurationError):
        ServiceRegistry.from_url("memory://", prefix="bad prefix")


async def _next(stream: AsyncIterator[ServiceChange]) -> ServiceChange:
    return await asyncio.wait_for(anext(stream), timeout=10)


async def test_watch_reports_changes(make_registry: MakeRegistry) -> None:
    registry = make_registry(poll_interval=30)  # pushed, not polled
    first = await registry.register("svc", host="h", port=1)
    stream = registry.watch("svc")
    change = await _next(stream)
    assert (change.kind, change.instance.instance_id) == ("added", first)

    second = await registry.register("svc", host="h", port=2)
    change = await _next(stream)
    assert (change.kind, change.instance.instance_id) == ("added", second)

    await registry.deregister(first)
    change = await _next(stream)
    assert (change.kind, change.instance.instance_id) == ("removed", first)
    await stream.aclose()  # type: ignore[attr-defined]


async def test_watch_reports_expiry_through_the_janitor(
    make_registry: MakeRegistry, clock: ManualClock
) -> None:
    registry = make_registry(clock=clock, prune_interval=0.05, poll_interval=30)
    iid = await registry.register("svc", host="h", port=1, ttl=5, heartbeat=False)
    stream = registry.watch("svc", initial=False)
    waiting = asyncio.ensure_future(_next(stream))
    await asyncio.sleep(0.1)
    clock.advance(6)
    change = await waiting
    assert (change.kind, change.instance.instance_id) == ("removed", iid)
    await stream.aclose()  # type: ignore[attr-defined]


async def test_watch_poll_is_the_backstop(make_registry: MakeRegistry, clock: ManualClock) -> None:
    # no janitor pass and nobody else reading: only the watcher's own poll sees the expiry
    registry = make_registry(clock=clock, prune_interval=3600, poll_interval=0.05)
    iid = await registry.register("svc", host="h", port=1, ttl=5, heartbeat=False)
    stream = registry.watch("svc")
    assert (await _next(stream)).kind == "added"
    clock.advance(6)
    change = await _next(stream)
    assert (change.kind, change.instance.instance_id) == ("removed", iid)
    await stream.aclose()  # type: ignore[attr-defined]
