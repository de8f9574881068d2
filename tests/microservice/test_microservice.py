"""MicroService over real HTTP: health, registration life cycle, errors as JSON."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

import rtkit
from gateway.gateway_harness import free_socket, running
from rtkit.errors import (
    AuthError,
    BackendUnavailable,
    Closed,
    ConfigurationError,
    Forbidden,
    MalformedJson,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    RtkitError,
    ServiceNotFound,
    ValidationError,
)
from rtkit.http import status_for
from rtkit.microservice import MicroService
from rtkit.registry import ServiceRegistry
from rtkit_testing import Backend


class Item(BaseModel):
    name: str
    qty: int


class Shop(MicroService):
    def __init__(self, registry: ServiceRegistry | None, port: int) -> None:
        super().__init__(
            "shop", registry=registry, port=port, meta={"zone": "a"}, max_body_size=100
        )
        self.add_route("/items", self.create, methods=["POST"])
        self.add_route("/fail/{kind}", self.fail)
        self.started = self.stopped = False

    async def on_startup(self) -> None:
        self.started = True

    async def on_shutdown(self) -> None:
        self.stopped = True

    async def create(self, request: Request) -> Response:
        item = await self.parse(request, Item)
        return JSONResponse(item.model_dump(), status_code=201)

    async def fail(self, request: Request) -> Response:
        errors: dict[str, Exception] = {
            "notfound": NotFound("no such thing"),
            "auth": AuthError("bad token"),
            "forbidden": Forbidden("not yours"),
            "limited": RateLimited(retry_after=2.5),
            "down": BackendUnavailable("redis is down"),
            "crash": RuntimeError("secret internals"),
        }
        raise errors[request.path_params["kind"]]


@pytest.fixture
async def registry() -> AsyncIterator[ServiceRegistry]:
    async with ServiceRegistry.from_url("memory://") as registry:
        yield registry


async def test_registers_while_running(registry: ServiceRegistry) -> None:
    sock = free_socket()
    shop = Shop(registry, sock.getsockname()[1])
    async with running(shop, sock) as server:
        assert shop.started
        [instance] = await registry.discover("shop")
        assert (instance.instance_id, instance.port) == (shop.instance_id, server.port)
        assert instance.meta == {"zone": "a"}
        async with httpx.AsyncClient(base_url=server.url) as http:
            health = (await http.get("/health")).json()
        assert health["status"] == "ok"
        assert (health["service"], health["instance_id"]) == ("shop", instance.instance_id)
    assert shop.stopped and shop.closed
    assert await registry.discover("shop") == []  # the given registry is still open


async def test_runs_on_a_private_registry() -> None:
    sock = free_socket()
    shop = Shop(None, sock.getsockname()[1])
    async with (
        running(shop, sock) as server,
        httpx.AsyncClient(base_url=server.url) as http,
    ):
        instance_id = (await http.get("/health")).json()["instance_id"]
        assert [i.instance_id for i in await shop.registry.discover("shop")] == [instance_id]
    with pytest.raises(Closed):  # its own registry closed with it
        await shop.registry.discover("shop")


@pytest.mark.parametrize(
    ("kind", "status", "code"),
    [
        ("notfound", 404, "not_found"),
        ("auth", 401, "unauthorized"),
        ("forbidden", 403, "forbidden"),
        ("limited", 429, "rate_limited"),
        ("down", 503, "backend_unavailable"),
        ("crash", 500, "internal_error"),
    ],
)
async def test_errors_become_json(kind: str, status: int, code: str) -> None:
    sock = free_socket()
    async with (
        running(Shop(None, sock.getsockname()[1]), sock) as server,
        httpx.AsyncClient(base_url=server.url) as http,
    ):
        r = await http.get(f"/fail/{kind}")
    assert (r.status_code, r.json()["error"]["code"]) == (status, code)
    assert "secret" not in r.text or kind != "crash"
    if kind == "limited":
        assert r.headers["retry-after"] == "3"


async def test_request_validation() -> None:
    sock = free_socket()
    async with (
        running(Shop(None, sock.getsockname()[1]), sock) as server,
        httpx.AsyncClient(base_url=server.url) as http,
    ):
        r = await http.post("/items", json={"name": "pen", "qty": 2})
        assert (r.status_code, r.json()) == (201, {"name": "pen", "qty": 2})
        r = await http.post("/items", content=b"{not json")
        assert (r.status_code, r.json()["error"]["code"]) == (400, "malformed_json")
        r = await http.post("/items", json={"name": "pen", "qty": "many"})
        assert (r.status_code, r.json()["error"]["code"]) == (422, "invalid_payload")
        assert "qty" in r.json()["error"]["message"]
        r = await http.post("/items", json={"name": "x" * 200, "qty": 1})
        assert (r.status_code, r.json()["error"]["code"]) == (413, "payload_too_large")
        r = await http.get("/nowhere")
        assert (r.status_code, r.json()["error"]["code"]) == (404, "not_found")
        r = await http.delete("/items")
        assert (r.status_code, r.json()["error"]["code"]) == (405, "method_not_allowed")


class Anything(BaseModel):
    value: object = None
    amount: float = 0.0


async def test_hostile_json_is_a_400_never_a_500(caplog: pytest.LogCaptureFixture) -> None:
    """Nesting past the parser's stack, NaN and infinities: 400 malformed_json, no traceback."""
    service = MicroService("hostile")

    @service.route("/any", methods=["POST"])
    async def accept(request: Request) -> Response:
        return JSONResponse((await service.parse(request, Anything)).model_dump())

    sock = free_socket()
    service.port = sock.getsockname()[1]
    bodies = [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"value": ' * 5000 + b"1" + b"}" * 5000,
        b'{"amount": NaN}',
        b'{"amount": Infinity}',
        b'{"amount": -Infinity}',
        b'{"amount": 1e999}',
    ]
    async with running(service, sock) as server, httpx.AsyncClient(base_url=server.url) as http:
        for body in bodies:
            r = await http.post("/any", content=body)
            assert (r.status_code, r.json()["error"]["code"]) == (400, "malformed_json")
        r = await http.post("/any", json={"value": [[[1]]], "amount": 2.5})
        assert (r.status_code, r.json()) == (200, {"value": [[[1]]], "amount": 2.5})
    assert not [rec for rec in caplog.records if rec.exc_info]


def test_advertise_host_is_a_host() -> None:
    for bad in ("u@host", "host/x", "host:80", "[::1]", "two words"):
        with pytest.raises(ConfigurationError, match="advertise_host"):
            MicroService("svc", advertise_host=bad)
    assert MicroService("svc", host="0.0.0.0").advertise_host == "127.0.0.1"
    assert MicroService("svc", advertise_host="::1").advertise_host == "::1"


async def test_parse_raises_typed_errors() -> None:
    async def receive_body(body: bytes) -> Request:
        async def receive() -> dict[str, object]:
            return {"type": "http.request", "body": body, "more_body": False}

        return Request({"type": "http", "method": "POST", "headers": []}, receive)

    with pytest.raises(MalformedJson):
        await MicroService.parse(await receive_body(b"{nope"), Item)
    with pytest.raises(ValidationError) as info:
        await MicroService.parse(await receive_body(b'{"name": "pen"}'), Item)
    assert type(info.value) is ValidationError and "qty" in str(info.value)


def test_status_mapping() -> None:
    assert status_for(ValidationError("x")) == 422
    assert status_for(MalformedJson("x")) == 400
    assert status_for(PayloadTooLarge("x")) == 413
    assert status_for(ServiceNotFound("x")) == 503
    assert status_for(RtkitError("x")) == 500


# -- the shape: names, life cycle, ownership, from_url ---------------------------------


class UserService(MicroService):
    pass


class Named(MicroService):
    name = "billing/v2"


def test_names() -> None:
    assert MicroService().name == "micro-service"
    assert UserService().name == "user-service"
    assert Named().name == "billing/v2"
    assert Named("other").name == "other"
    with pytest.raises(ConfigurationError):
        MicroService("not a name")


async def test_port_zero_binds_and_registers_a_free_port(registry: ServiceRegistry) -> None:
    service = UserService(registry=registry)
    assert (service.port, service.instance_id) == (0, None)
    async with service:
        [instance] = await registry.discover("user-service")
        assert instance.port == service.port != 0
        assert instance.instance_id == service.instance_id
    assert await registry.discover("user-service") == []
    assert service.instance_id is not None  # still readable after close


async def test_serve_on_a_free_port(registry: ServiceRegistry) -> None:
    service = UserService(registry=registry)
    task = asyncio.create_task(service.serve())
    try:
        async with asyncio.timeout(20):
            while not await registry.discover("user-service"):  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.port}") as http:
            assert (await http.get("/health")).json()["service"] == "user-service"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await service.close()
    assert await registry.discover("user-service") == []


async def test_closed_after_close(registry: ServiceRegistry) -> None:
    service = MicroService(registry=registry, port=9)
    async with service:
        pass
    await service.close()
    assert service.closed
    with pytest.raises(Closed):
        await service.start()
    with pytest.raises(Closed):
        await service.serve()
    transport = httpx.ASGITransport(app=service)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as http:
        r = await http.get("/health")
    assert (r.status_code, r.json()["error"]["code"]) == (503, "closed")
    await registry.register("svc", host="127.0.0.1", port=9, heartbeat=False)  # still open


async def test_never_started_closes_its_registry() -> None:
    service = MicroService()
    await service.close()
    with pytest.raises(Closed):
        await service.registry.discover("micro-service")


async def test_from_url_owns_its_registry(backend: Backend) -> None:
    service = MicroService.from_url(backend.url, prefix=backend.prefix, name="shop", ttl=10)
    async with service:
        assert service.ttl == 10
        [instance] = await service.registry.discover("shop")
        assert instance.expires_at - instance.registered_at == pytest.approx(10, abs=1)
    with pytest.raises(Closed):
        await service.registry.discover("shop")
    with pytest.raises(ConfigurationError, match="nope"):
        MicroService.from_url(backend.url, nope=1)
    with pytest.raises(ConfigurationError, match=r"MicroService.*memory://"):
        MicroService.from_url("nope://x")


@pytest.mark.redis
async def test_from_url_borrows_a_redis_client(redis_url: str, redis_prefix: str) -> None:
    client = rtkit.redis_client(redis_url)
    try:
        async with MicroService.from_url(redis_url, redis=client, prefix=redis_prefix) as service:
            other = ServiceRegistry.from_url(redis_url, prefix=redis_prefix)
            async with other:
                [instance] = await other.discover("micro-service")
            assert instance.port == service.port
        assert await client.ping()
    finally:
        await client.aclose()


async def test_a_memory_name_shares_the_registry() -> None:
    one = MicroService.from_url("memory://svc-shared", name="one")
    two = MicroService.from_url("memory://svc-shared", name="two")
    async with one, two:
        assert [i.instance_id for i in await two.registry.discover("one")] == [one.instance_id]
