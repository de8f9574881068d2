"""The gateway's GET response cache, end to end over HTTP, on memory and Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from gateway_harness import EchoService, free_socket, running

from rtkit import ManualClock
from rtkit.gateway import ApiGateway, CachedResponse, ResponseCache, Route
from rtkit.registry import ServiceRegistry
from rtkit_testing import Backend


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def http(backend: Backend, clock: ManualClock) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a gateway (with a cache on ``backend``) in front of an echo service."""
    cache = ResponseCache.from_url(backend.url, prefix=backend.prefix, clock=clock)
    async with ServiceRegistry.from_url("memory://") as registry:
        sock = free_socket()
        gateway = ApiGateway(
            registry,
            routes={"/api": Route("echo", path="/")},
            cache=cache,
            cache_ttl=60,
            clock=clock,
        )
        async with (
            running(EchoService(registry, sock), sock),
            running(gateway) as gw,
            httpx.AsyncClient(base_url=gw.url) as client,
        ):
            yield client
    await cache.close()


async def get(http: httpx.AsyncClient, url: str, **headers: str) -> tuple[str | None, int]:
    r = await http.get(url, headers=headers)
    assert r.status_code == 200
    return r.headers.get("x-cache"), r.json()["n"]


async def test_second_get_is_a_hit(http: httpx.AsyncClient) -> None:
    assert await get(http, "/api/counter?a=1") == ("MISS", 1)
    r = await http.get("/api/counter?a=1")
    assert (r.headers["x-cache"], r.json()["n"], r.headers["age"]) == ("HIT", 1, "0")
    assert r.headers["content-type"] == "application/json"
    assert await get(http, "/api/counter?a=2") == ("MISS", 2)  # the query is in the key


async def test_response_no_store_and_private_are_not_cached(http: httpx.AsyncClient) -> None:
    for cc in ("no-store", "private", "no-cache"):
        first = await get(http, f"/api/counter?cc={cc}")
        second = await get(http, f"/api/counter?cc={cc}")
        assert (first[0], second[0]) == ("MISS", "MISS")
        assert second[1] == first[1] + 1
    assert (await get(http, "/api/counter?cookie=1"))[0] == "MISS"
    assert (await get(http, "/api/counter?cookie=1"))[0] == "MISS"


async def test_response_max_age(
    backend: Backend, http: httpx.AsyncClient, clock: ManualClock
) -> None:
    assert await get(http, "/api/counter?cc=max-age%3D3") == ("MISS", 1)
    clock.advance(1)
    r = await http.get("/api/counter?cc=max-age%3D3")
    assert (r.headers["x-cache"], r.headers["age"]) == ("HIT", "1")
    if backend.kind == "memory":
        clock.advance(2.5)
        assert await get(http, "/api/counter?cc=max-age%3D3") == ("MISS", 2)
    else:  # Redis expires keys by its own clock
        async with asyncio.timeout(20):
            while (await get(http, "/api/counter?cc=max-age%3D3"))[0] == "HIT":  # noqa: ASYNC110
                await asyncio.sleep(0.2)
    assert await get(http, "/api/counter?cc=max-age%3D0") == ("MISS", 3)
    assert await get(http, "/api/counter?cc=max-age%3D0") == ("MISS", 4)


async def test_request_cache_control(http: httpx.AsyncClient, clock: ManualClock) -> None:
    # no-store: neither answered from nor stored in the cache
    assert await get(http, "/api/counter", **{"Cache-Control": "no-store"}) == ("MISS", 1)
    assert await get(http, "/api/counter") == ("MISS", 2)
    assert await get(http, "/api/counter", **{"Cache-Control": "no-store"}) == ("MISS", 3)
    assert await get(http, "/api/counter") == ("HIT", 2)
    # max-age=N: only entries at most N seconds old
    clock.advance(10)
    assert await get(http, "/api/counter", **{"Cache-Control": "max-age=30"}) == ("HIT", 2)
    assert await get(http, "/api/counter", **{"Cache-Control": "max-age=5"}) == ("MISS", 4)
    assert await get(http, "/api/counter", **{"Cache-Control": "max-age=5"}) == ("HIT", 4)
    # no-cache: go to the origin, store the fresh answer
    assert await get(http, "/api/counter", **{"Cache-Control": "no-cache"}) == ("MISS", 5)
    assert await get(http, "/api/counter") == ("HIT", 5)


async def test_vary(http: httpx.AsyncClient) -> None:
    url = "/api/counter?vary=Accept-Language"
    assert await get(http, url, **{"Accept-Language": "en"}) == ("MISS", 1)
    assert await get(http, url, **{"Accept-Language": "fr"}) == ("MISS", 2)
    assert await get(http, url, **{"Accept-Language": "en"}) == ("HIT", 1)
    assert await get(http, url, **{"Accept-Language": "fr"}) == ("HIT", 2)
    assert (await get(http, "/api/counter?vary=*"))[0] == "MISS"
    assert (await get(http, "/api/counter?vary=*"))[0] == "MISS"


async def test_only_get_200_without_authorization(http: httpx.AsyncClient) -> None:
    for _ in range(2):
        r = await http.get("/api/status/404")
        assert (r.status_code, r.headers["x-cache"]) == (404, "MISS")
        r = await http.post("/api/echo/x")
        assert "x-cache" not in r.headers
        r = await http.get("/api/counter", headers={"Authorization": "Bearer t"})
        assert "x-cache" not in r.headers


async def test_memory_cache_is_bounded(clock: ManualClock) -> None:
    cache = ResponseCache.from_url("memory://", clock=clock, max_entries=4, max_entry_bytes=500)
    entry = CachedResponse(status=200, headers=[], body=b"x" * 10, stored_at=0)
    for i in range(10):
        assert await cache.store("GET", f"/{i}", {}, entry, [], 60)
    assert len(cache) == 4  # type: ignore[arg-type]
    assert await cache.lookup("GET", "/0", {}) is None
    assert await cache.lookup("GET", "/9", {}) is not None
    big = CachedResponse(status=200, headers=[], body=b"x" * 1000, stored_at=0)
    assert not await cache.store("GET", "/big", {}, big, [], 60)
