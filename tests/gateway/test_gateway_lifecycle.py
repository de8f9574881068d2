"""ApiGateway's shape: no-argument construction, from_url, life cycle, ownership, Closed."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from gateway_harness import EchoService, free_socket, running

import rtkit
from rtkit.errors import Closed, ConfigurationError
from rtkit.gateway import ApiGateway, ResponseCache, Route
from rtkit.ratelimit import RateLimiter
from rtkit.registry import ServiceRegistry
from rtkit_testing import Backend


@pytest.fixture
async def registry() -> AsyncIterator[ServiceRegistry]:
    async with ServiceRegistry.from_url("memory://") as registry:
        yield registry


def asgi_client(gateway: ApiGateway) -> httpx.AsyncClient:
    """A client that calls the gateway in process (no lifespan: nothing starts it)."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=gateway), base_url="http://gw")


async def test_no_arguments_serves_health_and_services() -> None:
    async with ApiGateway() as gateway, asgi_client(gateway) as http:
        assert (await http.get("/health")).json()["status"] == "ok"
        assert (await http.get("/services")).json() == {"services": {}}
        await gateway.registry.register("svc", host="127.0.0.1", port=9, heartbeat=False)
        assert (await http.get("/services")).json() == {"services": {"svc": 1}}
        r = await http.get("/svc/x")
        assert (r.status_code, r.json()["error"]["code"]) == (404, "not_found")


async def test_the_first_request_starts_the_gateway(registry: ServiceRegistry) -> None:
    sock = free_socket()
    gateway = ApiGateway(registry, routes={"/api": Route("echo", path="/echo")})
    async with running(EchoService(registry, sock), sock), asgi_client(gateway) as http:
        assert (await http.get("/api/x")).json()["path"] == "/echo/x"
    await gateway.close()


async def test_the_lifespan_starts_and_closes_it(registry: ServiceRegistry) -> None:
    gateway = ApiGateway(registry)
    async with running(gateway) as gw, httpx.AsyncClient(base_url=gw.url) as http:
        assert (await http.get("/health")).status_code == 200
        assert not gateway.closed
    assert gateway.closed


async def test_after_close_every_operation_is_closed() -> None:
    gateway = ApiGateway(routes={"/api": "echo"})
    async with gateway:
        pass
    await gateway.close()
    with pytest.raises(Closed):
        await gateway.start()
    async with asgi_client(gateway) as http:
        for path in ("/api/x", "/health", "/services", "/nowhere"):
            r = await http.get(path)
            assert (r.status_code, r.json()["error"]["code"]) == (503, "closed"), path


async def test_given_parts_stay_open(registry: ServiceRegistry) -> None:
    limiter = RateLimiter()
    cache = ResponseCache()
    async with ApiGateway(registry, limiter=limiter, cache=cache):
        pass
    await registry.register("svc", host="127.0.0.1", port=9, heartbeat=False)
    assert await registry.services() == {"svc": 1}
    assert (await limiter.hit("k", "1/minute")).allowed
    assert await cache.lookup("GET", "/x", {}) is None
    await limiter.close()
    await cache.close()


async def test_its_own_parts_close_with_it() -> None:
    gateway = ApiGateway.from_url("memory://", cache=True)
    async with gateway:
        assert gateway.limiter is not None and gateway.cache is not None
    with pytest.raises(Closed):
        await gateway.cache.lookup("GET", "/x", {})
    with pytest.raises(Closed):
        await gateway.registry.discover("svc")
    with pytest.raises(Closed):
        await gateway.limiter.hit("k", "1/minute")
    bare = ApiGateway()
    await bare.close()  # never started: still closes what it made
    with pytest.raises(Closed):
        await bare.registry.discover("svc")


async def test_from_url_splits_options() -> None:
    gateway = ApiGateway.from_url(
        "memory://", cache=True, max_entries=3, max_entry_bytes=100, upstream_timeout=2
    )
    async with gateway:
        assert gateway.cache is not None
        assert gateway.cache.max_entry_bytes == 100
        assert gateway.cache._backend._lru.max_entries == 3  # type: ignore[attr-defined]
        assert gateway._upstream is not None and gateway._upstream.timeout == 2.0
    unlimited = ApiGateway.from_url("memory://", rate_limit=None)
    assert (unlimited.limiter, unlimited.cache) == (None, None)
    await unlimited.close()
    mine = ResponseCache()
    async with ApiGateway.from_url("memory://", cache=mine) as gateway:
        assert gateway.cache is mine
    assert await mine.lookup("GET", "/x", {}) is None  # given: still open
    await mine.close()
    with pytest.raises(ConfigurationError, match="nope"):
        ApiGateway.from_url("memory://", nope=1)
    with pytest.raises(ConfigurationError, match="cache"):
        ApiGateway.from_url("memory://", cache="yes")
    with pytest.raises(ConfigurationError, match="max_entries"):
        ApiGateway.from_url("memory://", max_entries=3)  # no cache asked for
    with pytest.raises(ConfigurationError, match=r"ApiGateway.*memory://"):
        ApiGateway.from_url("nope://host")


@pytest.mark.redis
async def test_from_url_on_redis_borrows_the_client(redis_url: str, redis_prefix: str) -> None:
    client = rtkit.redis_client(redis_url)
    try:
        gateway = ApiGateway.from_url(redis_url, redis=client, prefix=redis_prefix, cache=True)
        async with gateway:
            assert gateway.cache is not None
            await gateway.registry.register("svc", host="127.0.0.1", port=9, heartbeat=False)
            other = ServiceRegistry.from_url(redis_url, prefix=redis_prefix)
            async with other:
                assert [i.port for i in await other.discover("svc")] == [9]
        assert await client.ping()
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    "settings",
    [
        {"upstream_timeout": 0},
        {"retries": -1},
        {"rate_limit": "lots"},
        {"routes": {"api": "svc"}},
        {"routes": {"/api/": "svc"}},
        {"routes": {"/api": Route("svc", path="x")}},
        {"routes": {"/api": "not a name"}},
    ],
)
def test_bad_settings(settings: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        ApiGateway(**settings)  # type: ignore[arg-type]


def test_backend_cache_protocol_imports_without_the_server_extra() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "for name in ('starlette', 'httpx', 'uvicorn'):\n"
        "    sys.modules[name] = None\n"
        "import rtkit.gateway.cache.base\n"
        "from rtkit.gateway import CachedResponse, ResponseCache\n"
        "import rtkit\n"
        "assert rtkit.ResponseCache is ResponseCache\n"
        "try:\n"
        "    rtkit.gateway.ApiGateway\n"
        "except ImportError:\n"
        "    print('lazy')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert (done.returncode, done.stdout.strip()) == (0, "lazy"), done.stderr


async def test_shared_registry_on_a_memory_name(backend: Backend) -> None:
    name = "memory://gw-shared" if backend.kind == "memory" else backend.url
    one = ApiGateway.from_url(name, prefix=backend.prefix)
    two = ApiGateway.from_url(name, prefix=backend.prefix)
    async with one, two:
        await one.registry.register("svc", host="127.0.0.1", port=9, heartbeat=False)
        assert [i.port for i in await two.registry.discover("svc")] == [9]
