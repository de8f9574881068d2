"""ApiGateway end to end over real HTTP: proxying, headers, failures, rate limits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from gateway_harness import EchoService, free_socket, running

from rtkit.errors import ConfigurationError
from rtkit.gateway import ApiGateway, Route
from rtkit.ratelimit import Limit
from rtkit.registry import ServiceRegistry


@pytest.fixture
async def registry() -> AsyncIterator[ServiceRegistry]:
    async with ServiceRegistry.from_url("memory://") as registry:
        yield registry


@pytest.fixture
async def echo(registry: ServiceRegistry) -> AsyncIterator[EchoService]:
    sock = free_socket()
    service = EchoService(registry, sock)
    async with running(service, sock):
        yield service


def gateway(registry: ServiceRegistry, **kwargs: Any) -> ApiGateway:
    kwargs.setdefault(
        "routes", {"/api/echo": Route("echo", path="/echo"), "/raw": Route("echo", path="/")}
    )
    return ApiGateway(registry, **kwargs)


async def test_proxies_method_body_query_and_headers(
    registry: ServiceRegistry, echo: EchoService
) -> None:
    async with running(gateway(registry)) as gw, httpx.AsyncClient(base_url=gw.url) as http:
        r = await http.put(
            "/api/echo/items/7?x=1&y=%2F",
            content=b'{"a": 1}',
            headers={"Content-Type": "application/json", "X-Custom": "kept"},
        )
        assert r.status_code == 200
        seen = r.json()
        assert (seen["method"], seen["path"], seen["query"]) == (
            "PUT",
            "/echo/items/7",
            "x=1&y=%2F",
        )
        assert seen["body"] == '{"a": 1}'
        headers = dict(seen["headers"])
        assert headers["x-custom"] == "kept"
        assert headers["content-type"] == "application/json"
        assert headers["content-length"] == "8"
        assert headers["host"] == f"127.0.0.1:{echo.port}"

        for method in ("GET", "POST", "PATCH", "DELETE", "OPTIONS"):
            r = await http.request(method, "/api/echo/")
            assert (r.status_code, r.json()["method"]) == (200, method)
        r = await http.head("/api/echo/x")
        assert (r.status_code, r.content) == (200, b"")
        assert int(r.headers["content-length"]) > 0


async def test_unchanged_path_route(registry: ServiceRegistry, echo: EchoService) -> None:
    async with (
        running(gateway(registry, routes={"/echo": "echo"})) as gw,
        httpx.AsyncClient(base_url=gw.url) as http,
    ):
        assert (await http.get("/echo/a/b")).json()["path"] == "/echo/a/b"
        assert (await http.get("/echoes")).status_code == 404  # a prefix matches whole segments


async def test_hop_by_hop_headers_are_stripped_both_ways(
    registry: ServiceRegistry, echo: EchoService
) -> None:
    async with running(gateway(registry)) as gw, httpx.AsyncClient(base_url=gw.url) as http:
        r = await http.get(
            "/api/echo/",
            headers={
                "Connection": "keep-alive, X-Client-Hop",
                "X-Client-Hop": "secret",
                "Keep-Alive": "timeout=5",
                "Proxy-Authorization": "Basic c2VjcmV0",
                "TE": "trailers",
                "X-Client-End": "kept",
            },
        )
        sent = {k for k, _ in r.json()["headers"]}
        assert "x-client-end" in sent
        assert not sent & {"x-client-hop", "keep-alive", "proxy-authorization", "te"}
        # the response hop: the upstream's Connection-named and Keep-Alive headers are gone
        assert r.headers["x-upstream-end"] == "kept"
        assert "x-upstream-hop" not in r.headers
        assert "keep-alive" not in r.headers
        assert r.headers.get("connection", "keep-alive") == "keep-alive"


async def test_forwarded_headers(registry: ServiceRegistry, echo: EchoService) -> None:
    async with running(gateway(registry)) as gw, httpx.AsyncClient(base_url=gw.url) as http:
        r = await http.get(
            "/api/echo/", headers={"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "ftp"}
        )
        headers = dict(r.json()["headers"])
        assert headers["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
        assert headers["x-forwarded-proto"] == "http"
        assert headers["x-forwarded-host"] == f"127.0.0.1:{gw.port}"


async def test_health_and_services(registry: ServiceRegistry, echo: EchoService) -> None:
    await registry.register("other", host="127.0.0.1", port=9, heartbeat=False)
    async with running(gateway(registry)) as gw, httpx.AsyncClient(base_url=gw.url) as http:
        r = await http.get("/health")
        assert (r.status_code, r.json()["status"]) == (200, "ok")
        r = await http.get("/services")
        assert r.json() == {"services": {"echo": 1, "other": 1}}


async def test_service_going_down_gives_503(registry: ServiceRegistry) -> None:
    sock = free_socket()
    service = EchoService(registry, sock)
    async with running(gateway(registry)) as gw, httpx.AsyncClient(base_url=gw.url) as http:
        async with running(service, sock):
            assert (await http.get("/api/echo/")).status_code == 200
        # it deregistered on shutdown: no instance is up
        r = await http.get("/api/echo/")
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "service_not_found"
        assert "ratelimit-limit" in r.headers


async def test_refused_connection_tries_another_instance_then_502(
    registry: ServiceRegistry, echo: EchoService
) -> None:
    dead = free_socket()  # bound but never listening: connections are refused
    await registry.register("ghost", host="127.0.0.1", port=dead.getsockname()[1])
    routes = {"/ghost": "ghost", "/api/echo": Route("echo", path="/echo")}
    async with (
        running(gateway(registry, routes=routes)) as gw,
        httpx.AsyncClient(base_url=gw.url) as http,
    ):
        r = await http.get("/ghost/x")
        assert (r.status_code, r.json()["error"]["code"]) == (502, "remote_error")
        # a dead echo instance beside the live one: the retry reaches the live one
        await registry.register("echo", host="127.0.0.1", port=dead.getsockname()[1])
        for _ in range(6):
            r = await http.get("/api/echo/", params={"strategy": "any"})
            assert (r.status_code, r.json()["port"]) == (200, echo.port)
    dead.close()


async def test_upstream_timeout_gives_504(registry: ServiceRegistry, echo: EchoService) -> None:
    async with (
        running(gateway(registry, upstream_timeout=1.0)) as gw,
        httpx.AsyncClient(base_url=gw.url) as http,
    ):
        r = await http.get("/raw/slow", params={"s": "2.5"})
        assert (r.status_code, r.json()["error"]["code"]) == (504, "gateway_timeout")
        assert (await http.get("/raw/slow", params={"s": "0"})).status_code == 200


async def test_bad_requests(registry: ServiceRegistry, echo: EchoService) -> None:
    async with running(gateway(registry, max_body_size=1000)) as gw:
        async with httpx.AsyncClient(base_url=gw.url) as http:
            r = await http.get("/nowhere")
            assert (r.status_code, r.json()["error"]["code"]) == (404, "not_found")
            r = await http.post("/api/echo/", content=b"x" * 5000)
            assert (r.status_code, r.json()["error"]["code"]) == (413, "payload_too_large")

            async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as read
                for _ in range(5):
                    yield b"y" * 400

            r = await http.post("/api/echo/", content=chunks())
            assert r.status_code == 413
            r = await http.get("/raw/status/404")
            assert r.status_code == 404  # upstream statuses pass through

        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 10)
        assert status_line.startswith(b"HTTP/1.1 400")
        writer.close()
        async with httpx.AsyncClient(base_url=gw.url) as http:
            assert (await http.get("/health")).status_code == 200


async def test_flood_is_cut_off_at_the_limit(registry: ServiceRegistry, echo: EchoService) -> None:
    async with (
        running(gateway(registry, rate_limit="5/minute")) as gw,
        httpx.AsyncClient(base_url=gw.url) as http,
    ):
        responses = [await http.get("/api/echo/") for _ in range(5)]
        assert [r.status_code for r in responses] == [200] * 5
        assert [r.headers["ratelimit-remaining"] for r in responses] == [
            "4",
            "3",
            "2",
            "1",
            "0",
        ]
        assert {r.headers["ratelimit-limit"] for r in responses} == {"5"}
        flood = await asyncio.gather(*(http.get("/api/echo/") for _ in range(20)))
        assert {r.status_code for r in flood} == {429}
        denied = flood[0]
        assert denied.json()["error"]["code"] == "rate_limited"
        assert int(denied.headers["retry-after"]) >= 1
        assert denied.headers["ratelimit-remaining"] == "0"
        assert int(denied.headers["ratelimit-reset"]) >= 1
        # health and the services list are not rate limited
        assert (await http.get("/health")).status_code == 200


async def test_rate_limit_per_client(registry: ServiceRegistry, echo: EchoService) -> None:
    gw_app = gateway(
        registry, rate_limit="2/minute", client_key=lambda r: r.headers.get("x-client", "anon")
    )
    async with running(gw_app) as gw, httpx.AsyncClient(base_url=gw.url) as http:
        codes = [
            (await http.get("/api/echo/", headers={"x-client": c})).status_code
            for c in ("a", "a", "a", "b", "b")
        ]
        assert codes == [200, 200, 429, 200, 200]


async def test_no_rate_limit(registry: ServiceRegistry, echo: EchoService) -> None:
    async with (
        running(gateway(registry, rate_limit=None)) as gw,
        httpx.AsyncClient(base_url=gw.url) as http,
    ):
        r = await http.get("/api/echo/")
        assert r.status_code == 200
        assert "ratelimit-limit" not in r.headers


async def test_round_robin_over_two_instances(registry: ServiceRegistry) -> None:
    socks = [free_socket(), free_socket()]
    routes = {"/rr": Route("echo", path="/echo", strategy="round_robin")}
    async with (
        running(EchoService(registry, socks[0]), socks[0]) as one,
        running(EchoService(registry, socks[1]), socks[1]) as two,
        running(gateway(registry, routes=routes)) as gw,
        httpx.AsyncClient(base_url=gw.url) as http,
    ):
        ports = [(await http.get("/rr/")).json()["port"] for _ in range(4)]
    assert sorted(ports) == sorted([one.port, two.port] * 2)
    assert ports[0] != ports[1]


async def test_several_limits_and_bad_limit(registry: ServiceRegistry, echo: EchoService) -> None:
    with pytest.raises(ConfigurationError):
        gateway(registry, rate_limit="lots")
    limits = [Limit.parse("3/minute"), "10/hour"]
    async with (
        running(gateway(registry, rate_limit=limits)) as gw,
        httpx.AsyncClient(base_url=gw.url) as http,
    ):
        codes = [(await http.get("/api/echo/")).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
