"""Random paths, methods and headers at a live gateway, over real HTTP.

Two recording services behind the gateway and a response cache (memory and Redis). Every
request is sent as raw bytes, so nothing cleans it up on the way. Whatever is sent:

- the gateway never answers 5xx (the services are up and quick);
- no route escape: every path a service served, read as leniently as any server could
  (percent-decoded, ``\\`` as ``/``, dot-segments removed), stays under its route;
- no response crosses credentials or unkeyed inputs: what the service says it saw
  (cookie, authorization, API key, forwarded host, body) is what this request carried,
  whether the answer came from the service or from the cache.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from gateway_harness import (
    RawResponse,
    RecordingService,
    free_socket,
    lenient,
    raw_request,
    running,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rtkit.gateway import ApiGateway, ResponseCache, Route
from rtkit.registry import ServiceRegistry
from rtkit_testing import Backend

pytestmark = pytest.mark.slow

ROUTES: dict[str, str | Route] = {
    "/api/users": Route("users", path="/users"),
    "/api/orders": "orders",
    "/api/profile": Route("orders", path="/profile", vary=("Cookie",)),
}
INSIDE = {"users": ("/users",), "orders": ("/api/orders", "/profile")}
CREDENTIALS = ("cookie", "authorization", "x-api-key")


class Live:
    def __init__(self, port: int, services: list[RecordingService]) -> None:
        self.port = port
        self.services = services
        self.checked = {s.name: 0 for s in services}

    def new_paths(self) -> list[tuple[str, str]]:
        """The paths served since the last call, as a lenient server would read them."""
        paths = []
        for service in self.services:
            served = service.served[self.checked[service.name] :]
            self.checked[service.name] += len(served)
            paths += [(service.name, lenient(raw)) for _, raw in served]
        return paths


@contextlib.asynccontextmanager
async def live_gateway(backend: Backend) -> AsyncIterator[Live]:
    cache = ResponseCache.from_url(backend.url, prefix=backend.prefix)
    async with ServiceRegistry.from_url("memory://") as registry:
        socks = [free_socket(), free_socket()]
        services = [
            RecordingService(registry, socks[0], "users"),
            RecordingService(registry, socks[1], "orders"),
        ]
        gateway = ApiGateway(
            registry,
            routes=ROUTES,
            cache=cache,
            rate_limit=None,
            credential_headers=["X-Api-Key"],
            max_body_size=4096,
        )
        async with (
            running(services[0], socks[0]),
            running(services[1], socks[1]),
            running(gateway) as gw,
        ):
            yield Live(gw.port, services)
    await cache.close()


@pytest.fixture
async def live(backend: Backend) -> AsyncIterator[Live]:
    async with live_gateway(backend) as running_gateway:
        yield running_gateway


# -- what to send ---------------------------------------------------------------------

TRICKY_SEGMENTS = [
    "..", ".", "%2e%2e", "%2E%2e", ".%2e", "%2e", "%2f", "%2F", "%5c", "\\", "..;", ";x",
    "..%2f", "%00", "%zz", "%", "%252e%252e", "users", "orders", "profile", "api", "health",
    "services", "admin", "~x", "%7e", "a%2Fb", "", "%c3%a9", "%C3%A9", "\u00e9", "#", "a b",
]  # fmt: skip


def visible(exclude: str) -> st.SearchStrategy[str]:
    return st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters=exclude)


segment = st.one_of(st.sampled_from(TRICKY_SEGMENTS), st.text(visible("?#/"), max_size=6))
paths = st.builds(
    lambda prefix, segments: prefix + "/" + "/".join(segments),
    st.sampled_from(["/api/users", "/api/orders", "/api/profile", "/api", "", "/api/users/x"]),
    st.lists(segment, max_size=5),
)
queries = st.one_of(st.just(""), st.text(visible("#"), max_size=12))
methods = st.sampled_from(
    ["GET", "GET", "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND"]
)
HEADER_NAMES = [
    "Cookie", "Authorization", "Proxy-Authorization", "X-Api-Key", "Host", "X-Forwarded-Host",
    "X-Forwarded-For", "X-Forwarded-Proto", "Forwarded", "X-Real-IP", "X-Original-URL",
    "X-Rewrite-URL", "X-HTTP-Method-Override", "X-Method-Override", "Cache-Control",
    "Accept-Encoding", "Accept-Language", "Range", "If-None-Match", "Expect", "Vary",
    "Content-Type", "Connection", "Pragma", "TE", "Upgrade",
]  # fmt: skip
printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20)
header_values = st.one_of(
    st.sampled_from(["session=a", "session=b", "Bearer a", "Bearer b", "no-cache", "max-age=0"]),
    printable.map(str.strip),
    st.sampled_from(["caf\u00e9", "\u00ff", "\u00a0x"]),  # not ASCII: refused
)
connection_values = st.lists(st.sampled_from(HEADER_NAMES[:8]), max_size=3).map(", ".join)
headers = st.lists(
    st.one_of(
        st.tuples(st.sampled_from([n for n in HEADER_NAMES if n != "Connection"]), header_values),
        st.tuples(st.just("Connection"), connection_values),
        st.tuples(st.from_regex(r"\AX-[A-Za-z0-9-]{1,10}\Z"), printable.map(str.strip)),
    ),
    max_size=6,
)
bodies = st.sampled_from([b"", b"", b"x=1"])
Request = tuple[str, str, str, list[tuple[str, str]], bytes]
# a batch mostly repeats one URL, with other methods, credentials and headers: cache traffic
batches = st.tuples(paths, queries).flatmap(
    lambda url: st.lists(
        st.tuples(methods, st.just(url[0]) | paths, st.just(url[1]), headers, bodies),
        min_size=1,
        max_size=5,
    )
)


# -- what must hold -------------------------------------------------------------------


def _values(sent: list[tuple[str, str]], name: str) -> list[str]:
    return [v for k, v in sent if k.lower() == name]


def _expected(sent: list[tuple[str, str]], name: str) -> list[str]:
    """What the service must have seen of ``name`` for this very request."""
    dropped = {v.strip().lower() for c in _values(sent, "connection") for v in c.split(",")}
    return [] if name in dropped else _values(sent, name)


def check(
    live: Live, method: str, sent: list[tuple[str, str]], body: bytes, r: RawResponse
) -> None:
    assert r.status < 500, (r.status, r.body[:300])
    for service, path in live.new_paths():
        assert any(path == p or path.startswith(p + "/") for p in INSIDE[service]), (service, path)
    if r.status != 200 or method == "HEAD" or not r.body.startswith(b'{"service"'):
        return
    answer: dict[str, Any] = r.json()
    seen = answer["seen"]
    for name in CREDENTIALS:
        assert seen[name] == _expected(sent, name), (name, r.header("x-cache"))
    hosts = _values(sent, "host")
    assert seen["x-forwarded-host"] == ([", ".join(hosts)] if hosts else [])
    assert answer["body"] == body.decode()
    assert answer["method"] == method


async def send(
    live: Live, method: str, path: str, query: str, headers: list[tuple[str, str]], body: bytes
) -> None:
    target = path.encode("utf-8") + (b"?" + query.encode() if query else b"")
    sent = list(headers)
    if not any(k.lower() == "host" for k, _ in sent):
        sent.append(("Host", f"127.0.0.1:{live.port}"))
    wire = [(k.encode(), v.encode("utf-8")) for k, v in sent]
    r = await raw_request(live.port, method, target, wire, body)
    if r.status == 400 and not r.body.startswith(b"{"):
        return  # the HTTP parser refused it before the gateway saw it
    check(live, method, sent, body, r)


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batch=batches)
async def test_random_requests_never_escape_nor_share(live: Live, batch: list[Request]) -> None:
    for method, path, query, headers, body in batch:
        await send(live, method, path, query, headers, body)


async def test_the_same_url_with_different_cookies(live: Live) -> None:
    """The deterministic core of the property: cookies a, b, none, a, b on both routes."""
    for url in ("/api/users/me", "/api/profile"):
        for cookie in ("session=a", "session=b", "", "session=a", "session=b", ""):
            headers = [("Cookie", cookie)] if cookie else []
            await send(live, "GET", url, "", headers, b"")
