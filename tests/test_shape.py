"""One shape for every public component: construction, memory names, life cycle.

Rules checked for each component:

1. ``Component()`` works with no arguments (a private memory backend) and
   ``Component.from_url("memory://")`` too;
2. two objects on ``memory://same`` share state, two on ``memory://`` do not;
3. ``async with`` works, ``close()`` twice is harmless, an operation after
   ``close()`` raises ``rtkit.errors.Closed``, and a Redis client passed in is
   still open after ``close()``.

Each component has a probe: ``write`` changes state through one object, ``read``
says whether another object sees it, ``after_close`` is an operation that must
raise ``Closed``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import redis.asyncio as aioredis

import rtkit
from rtkit.errors import Closed, ConfigurationError, NotFound

Op = Callable[[Any], Awaitable[Any]]


def _uid() -> str:
    return uuid.uuid4().hex[:10]


@dataclass
class Probe:
    """How to build, share and close one component."""

    cls: Callable[[], Any]
    write: Callable[[Any, str], Awaitable[None]]
    read: Callable[[Any, str], Awaitable[bool]]
    after_close: Callable[[Any], Awaitable[Any]]
    redis: bool = True


# -- probes ------------------------------------------------------------------------------


async def _bus_write(bus: Any, key: str) -> None:
    await bus.publish(f"probe.{key}", {"k": key})


async def _bus_read(bus: Any, key: str) -> bool:
    return key in getattr(bus, "_probe_seen", set())


def _bus_prepare(bus: Any) -> None:
    seen: set[str] = set()
    bus._probe_seen = seen
    bus.subscribe("probe.*", lambda event: seen.add(event.data["k"]))


async def _queue_write(service: Any, key: str) -> None:
    await service.declare_queue(f"probe-{key}")


async def _queue_read(service: Any, key: str) -> bool:
    try:
        await service.get(f"probe-{key}")
    except NotFound:
        return False
    return True


def _service_of(component: Any) -> Any:
    return component.service


def _chat_message(room: str) -> Any:
    from rtkit.realtime import ChatMessage

    return ChatMessage(
        id=rtkit._core.ids.new_id(),
        user_id="u1",
        username="u1",
        message="hello",
        type="text",
        timestamp="2026-01-01T00:00:00.000Z",
        room_id=room,
    )


def _notification(user: str) -> Any:
    from rtkit.realtime import Notification

    return Notification(
        id=rtkit._core.ids.new_id(),
        from_user_id="u1",
        to_user_id=user,
        type="info",
        content="hi",
        timestamp="2026-01-01T00:00:00.000Z",
    )


def _upload(upload_id: str) -> Any:
    from rtkit.realtime import UploadRecord

    return UploadRecord(
        upload_id=upload_id,
        room_id="r",
        user_id="u1",
        file_name="f.txt",
        file_size=1,
        created_at=0.0,
    )


def _cached() -> Any:
    from rtkit.gateway import CachedResponse

    return CachedResponse(status=200, headers=[], body=b"x", stored_at=0.0)


def _probes() -> dict[str, Probe]:
    from rtkit import realtime

    async def registry_write(registry: Any, key: str) -> None:
        await registry.register(f"svc-{key}", host="127.0.0.1", port=8000)

    async def registry_read(registry: Any, key: str) -> bool:
        return bool(await registry.discover(f"svc-{key}"))

    async def registry_of_write(owner: Any, key: str) -> None:
        await registry_write(owner.registry, key)

    async def registry_of_read(owner: Any, key: str) -> bool:
        return await registry_read(owner.registry, key)

    return {
        "EventBus": Probe(
            rtkit.EventBus,
            _bus_write,
            _bus_read,
            lambda bus: bus.publish("probe.x", 1),
        ),
        "PresenceStore": Probe(
            rtkit.PresenceStore,
            lambda p, key: p.connect(f"user-{key}", f"sid-{key}"),
            lambda p, key: p.is_online(f"user-{key}"),
            lambda p: p.is_online("u"),
        ),
        "RoomManager": Probe(
            rtkit.RoomManager,
            lambda r, key: r.join(f"room-{key}", "u1", f"sid-{key}"),
            lambda r, key: r.is_member(f"room-{key}", "u1"),
            lambda r: r.rooms_of("u1"),
        ),
        "ServiceRegistry": Probe(
            rtkit.ServiceRegistry,
            registry_write,
            registry_read,
            lambda r: r.discover("svc"),
        ),
        "RateLimiter": Probe(
            rtkit.RateLimiter,
            lambda lim, key: lim.hit(f"k-{key}", "1/minute"),
            lambda lim, key: _denied(lim, f"k-{key}"),
            lambda lim: lim.hit("k", "1/minute"),
        ),
        "DedupStore": Probe(
            rtkit.DedupStore,
            lambda d, key: d.claim(f"m-{key}"),
            lambda d, key: _claimed(d, f"m-{key}"),
            lambda d: d.claim("m"),
        ),
        "ResponseCache": Probe(
            lambda: rtkit.ResponseCache(),
            lambda c, key: c.store("GET", f"/{key}", {}, _cached(), [], 60.0),
            lambda c, key: _is_not_none(c.lookup("GET", f"/{key}", {})),
            lambda c: c.lookup("GET", "/x", {}),
        ),
        "RabbitMQService": Probe(
            rtkit.RabbitMQService,
            _queue_write,
            _queue_read,
            lambda s: s.declare_queue("probe"),
            redis=False,
        ),
        "MessageProducer": Probe(
            rtkit.MessageProducer,
            lambda p, key: _queue_write(_service_of(p), key),
            lambda p, key: _queue_read(_service_of(p), key),
            lambda p: p.send("probe", {"x": 1}),
            redis=False,
        ),
        "MessageConsumer": Probe(
            rtkit.MessageConsumer,
            lambda c, key: _queue_write(_service_of(c), key),
            lambda c, key: _queue_read(_service_of(c), key),
            lambda c: c.consume("probe", _noop),
            redis=False,
        ),
        "MessageStore": Probe(
            realtime.MessageStore,
            lambda s, key: s.append(_chat_message(f"room-{key}")),
            lambda s, key: _non_empty(s.history(f"room-{key}")),
            lambda s: s.history("room"),
        ),
        "NotificationStore": Probe(
            realtime.NotificationStore,
            lambda s, key: s.push(_notification(f"user-{key}")),
            lambda s, key: _non_empty(s.take(f"user-{key}")),
            lambda s: s.take("user"),
        ),
        "UploadRegistry": Probe(
            realtime.UploadRegistry,
            lambda s, key: s.create(_upload(f"up-{key}")),
            lambda s, key: _is_not_none(s.get(f"up-{key}")),
            lambda s: s.get("up"),
        ),
        "RealtimeServer": Probe(
            lambda: rtkit.RealtimeServer(),
            lambda s, key: s.presence.connect(f"user-{key}", f"sid-{key}"),
            lambda s, key: s.presence.is_online(f"user-{key}"),
            lambda s: s.purge_expired(),
        ),
        "ApiGateway": Probe(
            lambda: rtkit.ApiGateway(),
            registry_of_write,
            registry_of_read,
            lambda g: g.start(),
        ),
        "MicroService": Probe(
            lambda: rtkit.MicroService(),
            registry_of_write,
            registry_of_read,
            lambda m: m.start(),
        ),
    }


async def _noop(payload: Any) -> None:
    return None


async def _denied(limiter: Any, key: str) -> bool:
    return not (await limiter.peek(key, "1/minute")).allowed


async def _claimed(dedup: Any, key: str) -> bool:
    return bool(await dedup.claim(key) != "new")


async def _is_not_none(result: Awaitable[Any]) -> bool:
    return await result is not None


async def _non_empty(result: Awaitable[Any]) -> bool:
    return bool(await result)


def _class(name: str) -> Any:
    if name in {"MessageStore", "NotificationStore", "UploadRegistry"}:
        from rtkit import realtime

        return getattr(realtime, name)
    return getattr(rtkit, name)


NAMES = sorted(_probes())


async def _started(component: Any, name: str) -> Any:
    await component.start()
    if name == "EventBus":
        _bus_prepare(component)
    return component


@pytest.mark.parametrize("name", NAMES)
async def test_constructed_with_no_arguments(name: str) -> None:
    probe = _probes()[name]
    async with probe.cls() as component:
        if name == "EventBus":
            _bus_prepare(component)
        key = _uid()
        await probe.write(component, key)
        assert await probe.read(component, key)


@pytest.mark.parametrize("name", NAMES)
async def test_memory_url_is_private_and_a_memory_name_is_shared(name: str) -> None:
    probe = _probes()[name]
    cls = _class(name)
    private = [await _started(cls.from_url("memory://"), name) for _ in range(2)]
    shared_name = f"same-{_uid()}"
    shared = [await _started(cls.from_url(f"memory://{shared_name}"), name) for _ in range(2)]
    try:
        key = _uid()
        await probe.write(private[0], key)
        assert await probe.read(private[0], key)
        assert not await probe.read(private[1], key), "memory:// must be private"
        key = _uid()
        await probe.write(shared[0], key)
        assert await _eventually(lambda: probe.read(shared[1], key)), "memory://NAME shares"
    finally:
        for component in private + shared:
            await component.close()


@pytest.mark.parametrize("name", NAMES)
async def test_life_cycle(name: str) -> None:
    probe = _probes()[name]
    component = probe.cls()
    async with component:
        pass
    await component.close()  # twice: harmless
    assert component.closed
    with pytest.raises(Closed):
        await probe.after_close(component)
    with pytest.raises(Closed):
        await component.start()


@pytest.mark.parametrize("name", NAMES)
def test_a_bad_url_names_the_component_and_its_schemes(name: str) -> None:
    with pytest.raises(ConfigurationError, match=rf"{name}.*memory://"):
        _class(name).from_url("nope://host")


@pytest.mark.redis
@pytest.mark.parametrize("name", [n for n in NAMES if _probes()[n].redis])
async def test_a_borrowed_redis_client_stays_open(
    name: str, redis_url: str, redis_prefix: str
) -> None:
    probe = _probes()[name]
    client = rtkit.redis_client(redis_url)
    try:
        component = _class(name).from_url(redis_url, redis=client, prefix=redis_prefix)
        async with component:
            if name == "EventBus":
                _bus_prepare(component)
            key = _uid()
            await probe.write(component, key)
            assert await _eventually(lambda: probe.read(component, key))
        assert await client.ping()
    finally:
        await client.aclose()


async def test_a_redis_client_with_a_memory_url_is_refused(redis_client: aioredis.Redis) -> None:
    with pytest.raises(ConfigurationError, match="memory"):
        rtkit.EventBus.from_url("memory://", redis=redis_client)


async def _eventually(check: Callable[[], Awaitable[bool]], timeout: float = 3.0) -> bool:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        if await check():
            return True
        if loop.time() > end:
            return False
        await asyncio.sleep(0.02)


def test_chat_client_shares_the_life_cycle() -> None:
    assert issubclass(rtkit.ChatClient, rtkit._core.lifecycle.AsyncResource)


async def test_chat_client_after_close() -> None:
    client = rtkit.ChatClient()
    async with client:
        pass
    await client.close()
    with pytest.raises(Closed):
        await client.join_room("lobby")
