"""The gateway's GET response cache, end to end over HTTP, on memory and Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from gateway_harness import EchoService, free_socket, running

from rtkit import ManualClock
from rtkit.errors import BackendUnavailable, Closed, ConfigurationError
from rtkit.gateway import ApiGateway, CachedResponse, ResponseCache, Route
from rtkit.gateway.cache.memory import MemoryCacheBackend
from rtkit.registry import ServiceRegistry
from rtkit_testing import Backend

pytestmark = pytest.mark.topologies  # also on the private cluster and Sentinel


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
    for _ in range(2):
        assert (await get(http, "/api/counter?cookie=1"))[0] == "MISS"
        http.cookies.clear()  # else the next request carries it, and skips the cache


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
    backend = cache._backend
    assert isinstance(backend, MemoryCacheBackend)
    entry = CachedResponse(status=200, headers=[], body=b"x" * 10, stored_at=0)
    for i in range(10):
        assert await cache.store("GET", f"/{i}", {}, entry, [], 60)
    assert len(backend) == 4
    assert await cache.lookup("GET", "/0", {}) is None
    assert await cache.lookup("GET", "/9", {}) is not None
    big = CachedResponse(status=200, headers=[], body=b"x" * 1000, stored_at=0)
    assert not await cache.store("GET", "/big", {}, big, [], 60)
    await cache.close()


async def test_memory_cache_is_bounded_by_bytes(clock: ManualClock) -> None:
    # an entry and its index take about 130 bytes: two URLs fit
    backend = MemoryCacheBackend(clock=clock, max_bytes=300)
    async with ResponseCache(backend) as cache:
        entry = CachedResponse(status=200, headers=[], body=b"x" * 10, stored_at=0)
        for i in range(5):
            assert await cache.store("GET", f"/{i}", {}, entry, [], 60)
        assert backend.size <= 300
        assert await cache.lookup("GET", "/4", {}) is not None
        assert await cache.lookup("GET", "/0", {}) is None


async def test_entries_expire_with_their_ttl(clock: ManualClock) -> None:
    async with ResponseCache(clock=clock) as cache:
        entry = CachedResponse(status=200, headers=[], body=b"x", stored_at=0)
        assert await cache.store("GET", "/a", {}, entry, [], 5)
        assert not await cache.store("GET", "/b", {}, entry, [], 0)
        clock.advance(4.9)
        assert await cache.lookup("GET", "/a", {}) == entry
        clock.advance(0.2)
        assert await cache.lookup("GET", "/a", {}) is None


async def test_vary_selects_the_variant(backend: Backend) -> None:
    async with ResponseCache.from_url(backend.url, prefix=backend.prefix) as cache:
        en = CachedResponse(
            status=200, headers=[("vary", "accept-language")], body=b"en", stored_at=0
        )
        await cache.store("GET", "/v", {"accept-language": "en"}, en, ["accept-language"], 60)
        assert await cache.lookup("GET", "/v", {"accept-language": "en"}) == en
        assert await cache.lookup("GET", "/v", {"accept-language": "fr"}) is None
        assert await cache.lookup("HEAD", "/v", {"accept-language": "en"}) is None


async def test_a_memory_name_is_shared_and_memory_is_private() -> None:
    entry = CachedResponse(status=200, headers=[], body=b"x", stored_at=0)
    one, two = (ResponseCache.from_url("memory://cache-shared") for _ in range(2))
    alone = ResponseCache.from_url("memory://")
    async with one, two, alone:
        await one.store("GET", "/s", {}, entry, [], 60)
        assert await two.lookup("GET", "/s", {}) == entry
        assert await alone.lookup("GET", "/s", {}) is None
        await one.close()
        assert await two.lookup("GET", "/s", {}) == entry  # closing one keeps the entries


async def test_closed_after_close(backend: Backend) -> None:
    cache = ResponseCache.from_url(backend.url, prefix=backend.prefix)
    entry = CachedResponse(status=200, headers=[], body=b"x", stored_at=0)
    async with cache:
        assert await cache.store("GET", "/c", {}, entry, [], 60)
    await cache.close()
    assert cache.closed
    with pytest.raises(Closed):
        await cache.lookup("GET", "/c", {})
    with pytest.raises(Closed):
        await cache.store("GET", "/c", {}, entry, [], 60)
    with pytest.raises(Closed):
        await cache.start()


async def test_a_storage_failure_is_a_miss() -> None:
    class Down:
        async def get(self, key: str) -> bytes | None:
            raise BackendUnavailable("down")

        async def set(self, key: str, value: bytes, ttl: float) -> None:
            raise BackendUnavailable("down")

        async def delete(self, key: str) -> None:
            raise BackendUnavailable("down")

        async def close(self) -> None:
            self.closed = True

    down = Down()
    async with ResponseCache(down) as cache:
        entry = CachedResponse(status=200, headers=[], body=b"x", stored_at=0)
        assert not await cache.store("GET", "/d", {}, entry, [], 60)
        assert await cache.lookup("GET", "/d", {}) is None
        await cache.invalidate("/d")  # logged, never raised
    assert down.closed  # the cache closes its backend


def test_options_and_settings() -> None:
    with pytest.raises(ConfigurationError, match="max_entries"):
        ResponseCache.from_url("memory://", max_entries=0)
    with pytest.raises(ConfigurationError, match="max_entry_bytes"):
        ResponseCache(max_entry_bytes=0)
    with pytest.raises(ConfigurationError, match="nope"):
        ResponseCache.from_url("memory://", nope=1)
    # a memory-only option is ignored on Redis: one call fits every URL
    assert ResponseCache.from_url("redis://127.0.0.1:6379/0", max_entries=4) is not None
    with pytest.raises(ConfigurationError, match=r"ResponseCache.*memory://"):
        ResponseCache.from_url("nope://x")


async def test_backend_get_set_delete(backend: Backend) -> None:
    """The backend contract, memory (the specification) and Redis alike."""
    async with ResponseCache.from_url(backend.url, prefix=backend.prefix) as cache:
        store = cache._backend
        assert await store.get("k") is None
        await store.set("k", b"v", 60)
        assert await store.get("k") == b"v"
        await store.delete("k")
        assert await store.get("k") is None
        await store.delete("k")  # absent: nothing happens


async def test_invalidate_forgets_every_variant(backend: Backend) -> None:
    async with ResponseCache.from_url(backend.url, prefix=backend.prefix) as cache:
        vary = ["cookie", "accept-language"]
        entries = {}
        for cookie in ("a", "b"):
            for lang in ("en", "fr"):
                headers = {"cookie": cookie, "accept-language": lang}
                entries[cookie, lang] = CachedResponse(
                    status=200, headers=[], body=f"{cookie}{lang}".encode(), stored_at=0
                )
                assert await cache.store("GET", "/u?x=1", headers, entries[cookie, lang], vary, 60)
        assert await cache.store("GET", "/other", {}, entries["a", "en"], [], 60)
        for (cookie, lang), entry in entries.items():
            found = await cache.lookup("GET", "/u?x=1", {"cookie": cookie, "accept-language": lang})
            assert found == entry
        await cache.invalidate("/u?x=1")
        for cookie, lang in entries:
            headers = {"cookie": cookie, "accept-language": lang}
            assert await cache.lookup("GET", "/u?x=1", headers) is None
        assert await cache.lookup("GET", "/other", {}) is not None  # other URLs stay
        # a new store starts a new generation: the old variants never come back
        assert await cache.store("GET", "/u?x=1", {"cookie": "a", "accept-language": "en"},
                                 entries["a", "en"], vary, 60)  # fmt: skip
        assert await cache.lookup("GET", "/u?x=1", {"cookie": "b", "accept-language": "fr"}) is None


async def test_lookup_wants_the_keyed_names(backend: Backend) -> None:
    async with ResponseCache.from_url(backend.url, prefix=backend.prefix) as cache:
        entry = CachedResponse(status=200, headers=[], body=b"public", stored_at=0)
        assert await cache.store("GET", "/p", {}, entry, [], 60)
        assert await cache.lookup("GET", "/p", {"cookie": "s=1"}) == entry
        # an entry not keyed on the request's credentials is never used for it
        assert await cache.lookup("GET", "/p", {"cookie": "s=1"}, keyed=["cookie"]) is None


async def test_repeated_headers_are_all_in_the_key() -> None:
    async with ResponseCache() as cache:
        entry = CachedResponse(status=200, headers=[], body=b"x", stored_at=0)
        two = [("Cookie", "a=1"), ("cookie", "b=2")]
        assert await cache.store("GET", "/r", two, entry, ["cookie"], 60)
        assert await cache.lookup("GET", "/r", two) == entry
        assert await cache.lookup("GET", "/r", [("cookie", "a=1")]) is None
        assert await cache.lookup("GET", "/r", {"Cookie": "a=1"}) is None
