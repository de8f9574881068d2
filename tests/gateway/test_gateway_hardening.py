"""What an adversarial review found in the gateway, closed: over real HTTP (raw sockets
where a client library would clean the request up), on memory and Redis caches."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from gateway_harness import RecordingService, free_socket, lenient, raw_request, running

from rtkit.errors import ConfigurationError
from rtkit.gateway import ApiGateway, ResponseCache, Route
from rtkit.registry import ServiceRegistry
from rtkit.registry._models import Record
from rtkit_testing import Backend

ROUTES: dict[str, str | Route] = {
    "/api/users": Route("users", path="/users"),
    "/api/orders": "orders",
}
# where each service's paths must stay (the route's path, or its prefix)
INSIDE = {"users": "/users", "orders": "/api/orders"}


class Site:
    """A gateway with a cache in front of two recording services."""

    def __init__(self, port: int, users: RecordingService, orders: RecordingService) -> None:
        self.port = port
        self.users = users
        self.orders = orders
        self.http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}")

    async def get(self, url: str, **headers: str) -> httpx.Response:
        self.http.cookies.clear()  # only the cookies a call names
        r = await self.http.get(url, headers=headers)
        assert r.status_code == 200, r.text
        return r

    def served(self) -> list[tuple[str, str]]:
        return [(s.name, lenient(raw)) for s in (self.users, self.orders) for _, raw in s.served]


@contextlib.asynccontextmanager
async def site(backend: Backend, **options: Any) -> AsyncIterator[Site]:
    options.setdefault("routes", ROUTES)
    cache = ResponseCache.from_url(backend.url, prefix=backend.prefix)
    async with ServiceRegistry.from_url("memory://") as registry:
        socks = [free_socket(), free_socket()]
        users = RecordingService(registry, socks[0], "users")
        orders = RecordingService(registry, socks[1], "orders")
        gateway = ApiGateway(registry, cache=cache, rate_limit=None, **options)
        async with (
            running(users, socks[0]),
            running(orders, socks[1]),
            running(gateway) as gw,
        ):
            result = Site(gw.port, users, orders)
            try:
                yield result
            finally:
                await result.http.aclose()
    await cache.close()


def seen(r: httpx.Response, name: str) -> list[str]:
    values: list[str] = r.json()["seen"][name]
    return values


# -- 1. personalised responses -------------------------------------------------------


async def test_credentials_never_share_a_cached_response(backend: Backend) -> None:
    async with site(backend) as s:
        alice = await s.get("/api/users/me", Cookie="session=alice")
        assert seen(alice, "cookie") == ["session=alice"]
        others: list[dict[str, str]] = [
            {"Cookie": "session=bob"},
            {"Authorization": "Bearer bob"},
            {"Proxy-Authorization": "Basic Ym9iOnB3"},
            {},
        ]
        for credentials in others:
            r = await s.get("/api/users/me", **credentials)
            expected = [credentials["Cookie"]] if "Cookie" in credentials else []
            assert seen(r, "cookie") == expected
            assert r.json()["n"] != alice.json()["n"]
        assert "x-cache" not in alice.headers  # not eligible: never stored
        # nor is the response without credentials served to one with them
        plain = await s.get("/api/users/me")
        assert plain.headers["x-cache"] == "HIT"
        again = await s.get("/api/users/me", Cookie="session=alice")
        assert (again.json()["n"], "x-cache" in again.headers) != (plain.json()["n"], True)


async def test_a_route_caches_per_credential_only_when_keyed_on_it(backend: Backend) -> None:
    routes = {"/api/profile": Route("users", path="/profile", vary=("Cookie",))}
    async with site(backend, routes=routes, credential_headers=["X-Api-Key"]) as s:
        alice = await s.get("/api/profile", Cookie="session=alice")
        bob = await s.get("/api/profile", Cookie="session=bob")
        assert (alice.headers["x-cache"], bob.headers["x-cache"]) == ("MISS", "MISS")
        assert seen(bob, "cookie") == ["session=bob"]
        for who, first in (("alice", alice), ("bob", bob)):
            r = await s.get("/api/profile", Cookie=f"session={who}")
            assert (r.headers["x-cache"], r.json()["n"]) == ("HIT", first.json()["n"])
            assert seen(r, "cookie") == [f"session={who}"]
        nobody = await s.get("/api/profile")
        assert (nobody.headers["x-cache"], seen(nobody, "cookie")) == ("MISS", [])
        # a credential the route does not key on keeps the request out of the cache
        for extra in ({"Authorization": "Bearer alice"}, {"X-Api-Key": "k-alice"}):
            r = await s.get("/api/profile", Cookie="session=alice", **extra)
            assert "x-cache" not in r.headers and r.json()["n"] != alice.json()["n"]
        r = await s.get("/api/profile", **{"X-Api-Key": "k-bob"})
        assert "x-cache" not in r.headers
        # a successful write invalidates every variant, whoever made it
        assert (await s.http.post("/api/profile")).status_code == 200
        for who in ("alice", "bob"):
            r = await s.get("/api/profile", Cookie=f"session={who}")
            assert r.headers["x-cache"] == "MISS"


def test_route_vary_and_credential_headers_are_checked() -> None:
    with pytest.raises(ConfigurationError, match=r"Route\.vary"):
        ApiGateway(routes={"/a": Route("svc", vary=("bad name",))})
    with pytest.raises(ConfigurationError, match="string"):
        ApiGateway(routes={"/a": Route("svc", vary="Cookie")})  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="credential_headers"):
        ApiGateway(credential_headers=["X-Key:"])


# -- 2. dot-segments ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "status", "where"),
    [
        (b"/api/users/../health", 404, None),
        (b"/api/users/%2e%2e/health", 404, None),
        (b"/api/users/%2E%2e/health", 404, None),
        (b"/api/users/.%2E/health", 404, None),
        (b"/api/users/a/../../../health", 404, None),
        (b"/api/users/./../orders/7", 200, ("orders", "/api/orders/7")),
        (b"/api/users/a/b/%2e%2e/c", 200, ("users", "/users/a/c")),
        (b"/api/users/%7ebob", 200, ("users", "/users/~bob")),
        (b"/api/users/..;/health", 400, None),
        (b"/api/users/%2f..%2f..%2fhealth", 400, None),
        (b"/api/users/a%2F..%2F..%2Fhealth", 400, None),
        (b"/api/users/..%5c..%5chealth", 400, None),
        (b"/api/users/..\\..\\health", 400, None),
        (b"/api/users/%00", 400, None),
        (b"/api/users/%zz", 400, None),
    ],
)
async def test_dot_segments_are_resolved_before_routing(
    target: bytes, status: int, where: tuple[str, str] | None
) -> None:
    async with site(Backend("memory", "memory://", "rtkit:")) as s:
        r = await raw_request(s.port, "GET", target)
        assert r.status == status, r.body
        if status == 400:
            assert r.json()["error"]["code"] == "malformed_request"
        assert s.served() == ([where] if where else [])
        for service, path in s.served():
            assert path == INSIDE[service] or path.startswith(INSIDE[service] + "/")


def test_route_prefixes_are_normalised_or_refused() -> None:
    for bad in ("/api/../admin", "/api/./x", "/api/%2e%2E/x", "/a%2Fb", "/a%zz"):
        with pytest.raises(ConfigurationError):
            ApiGateway(routes={bad: "svc"})
    with pytest.raises(ConfigurationError):
        ApiGateway(routes={"/api": Route("svc", path="/x/../y")})
    gateway = ApiGateway(routes={"/caf\u00e9/%7euser": "svc"})
    assert [prefix for prefix, _ in gateway.routes] == ["/caf%C3%A9/~user"]


# -- 3. unkeyed inputs --------------------------------------------------------------


async def test_a_get_with_a_body_is_neither_cached_nor_answered_from_cache(
    backend: Backend,
) -> None:
    async with site(backend) as s:
        tainted = await raw_request(s.port, "GET", "/api/users/list", body=b"role=admin")
        assert (tainted.status, tainted.json()["body"]) == (200, "role=admin")
        assert tainted.header("x-cache") is None
        plain = await s.get("/api/users/list")
        assert (plain.headers["x-cache"], plain.json()["body"]) == ("MISS", "")
        assert (await s.get("/api/users/list")).headers["x-cache"] == "HIT"
        again = await raw_request(s.port, "GET", "/api/users/list", body=b"role=root")
        assert again.json()["body"] == "role=root"


async def test_the_forwarded_host_is_in_the_key(backend: Backend) -> None:
    async with site(backend) as s:
        poisoned = await s.get("/api/users/page", Host="evil.example")
        assert seen(poisoned, "x-forwarded-host") == ["evil.example"]
        honest = await s.get("/api/users/page")
        assert seen(honest, "x-forwarded-host") == [f"127.0.0.1:{s.port}"]
        assert honest.headers["x-cache"] == "MISS"
        # the client's X-Forwarded-Host never reaches the service: the gateway sets it
        r = await s.get("/api/users/page", **{"X-Forwarded-Host": "evil.example"})
        assert (r.headers["x-cache"], seen(r, "x-forwarded-host")) == (
            "HIT",
            [f"127.0.0.1:{s.port}"],
        )


async def test_a_method_override_is_an_unsafe_request(backend: Backend) -> None:
    async with site(backend) as s:
        first = await s.get("/api/users/7")
        override = await s.get("/api/users/7", **{"X-HTTP-Method-Override": "DELETE"})
        assert "x-cache" not in override.headers
        assert seen(override, "x-http-method-override") == ["DELETE"]
        after = await s.get("/api/users/7")  # the override succeeded: invalidated
        assert after.headers["x-cache"] == "MISS" and after.json()["n"] != first.json()["n"]


# -- 4. stale after writes ----------------------------------------------------------


async def test_successful_writes_invalidate_the_target(backend: Backend) -> None:
    async with site(backend) as s:
        assert (await s.get("/api/users")).headers["x-cache"] == "MISS"
        assert (await s.get("/api/users")).headers["x-cache"] == "HIT"
        for method in ("POST", "PUT", "PATCH", "DELETE", "PROPFIND"):
            r = await s.http.request(method, "/api/users", content=b"{}")
            assert r.status_code == 200
            assert (await s.get("/api/users")).headers["x-cache"] == "MISS", method
            assert (await s.get("/api/users")).headers["x-cache"] == "HIT"
        # a failed write changes nothing: the entry stays
        r = await s.http.post("/api/users", params={"status": "409"})
        assert r.status_code == 409
        # that POST's target was /api/users?status=409, not /api/users: both stay
        assert (await s.get("/api/users")).headers["x-cache"] == "HIT"


async def test_writes_invalidate_their_same_origin_locations(backend: Backend) -> None:
    async with site(backend) as s:
        origin = f"http://127.0.0.1:{s.port}"
        urls = ["/api/users/1", "/api/users/2", "/api/users/3", "/api/orders/4"]
        for url in urls:
            assert (await s.get(url)).headers["x-cache"] == "MISS"
        locations = [
            ("location", "/api/users/1"),
            ("location", f"{origin}/api/users/2"),
            ("content-location", "3"),  # relative to /api/users/new
            ("location", "http://elsewhere.example/api/orders/4"),  # another origin
        ]
        for name, value in locations:
            r = await s.http.post("/api/users/new", params={name: value})
            assert r.status_code == 200
        states = [(await s.get(url)).headers["x-cache"] for url in urls]
        assert states == ["MISS", "MISS", "MISS", "HIT"]


async def test_the_example_sees_its_own_writes() -> None:
    """The review's case: POST /api/users, then GET /api/users is no longer stale."""
    async with site(Backend("memory", "memory://", "rtkit:")) as s:
        before = await s.get("/api/users")
        assert (await s.http.post("/api/users", json={"name": "Carol"})).status_code == 200
        after = await s.get("/api/users")
        assert after.headers["x-cache"] == "MISS" and after.json()["n"] > before.json()["n"]


# -- 5. non-ASCII headers -----------------------------------------------------------


async def test_a_non_ascii_header_is_a_400_and_one_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with site(Backend("memory", "memory://", "rtkit:")) as s:
        caplog.clear()
        with caplog.at_level(logging.INFO):
            for value in ("caf\u00e9".encode(), b"\xff\xfe", b"\xc2\xa0"):
                r = await raw_request(s.port, "GET", "/api/users/x", [(b"X-Name", value)])
                assert (r.status, r.json()["error"]["code"]) == (400, "malformed_request")
        assert s.served() == []
        records = [rec for rec in caplog.records if rec.levelno >= logging.WARNING]
        assert len(records) == 3
        assert all(rec.exc_info is None and "x-name" in rec.getMessage() for rec in records)
        assert all("caf" not in rec.getMessage() for rec in records)  # never the value
        assert (await s.get("/api/users/x")).status_code == 200


# -- 6. client-supplied forwarding headers --------------------------------------------


async def test_client_forwarding_headers_are_dropped_or_overwritten() -> None:
    async with site(Backend("memory", "memory://", "rtkit:")) as s:
        r = await s.get(
            "/api/users/whoami",
            **{
                "Forwarded": "for=203.0.113.9;host=evil.example;proto=https",
                "X-Real-IP": "203.0.113.9",
                "X-Original-URL": "/admin",
                "X-Rewrite-URL": "/admin",
                "X-Forwarded-Proto": "https",
            },
        )
        assert seen(r, "forwarded") == []
        assert seen(r, "x-original-url") == seen(r, "x-rewrite-url") == []
        assert seen(r, "x-real-ip") == ["127.0.0.1"]
        assert seen(r, "x-forwarded-proto") == ["http"]


# -- 7. instance addresses ------------------------------------------------------------


@pytest.mark.parametrize("host", ["alice:secret@127.0.0.1", "alice@127.0.0.1", "127.0.0.1/#"])
async def test_an_instance_address_never_changes_the_request(host: str) -> None:
    """A record written by an older process (or straight into Redis) is never trusted to
    be a bare host: no userinfo, so no Authorization of its own, no other path."""
    async with site(Backend("memory", "memory://", "rtkit:"), routes={"/odd": "odd"}) as s:
        record = Record("odd:1", "odd", host, s.users.port, "{}")
        await s.users.registry._backend.upsert(record, 30)
        r = await s.http.get("/odd/x", headers={"Authorization": "Bearer client"})
        assert r.status_code == 502
        assert s.served() == []
