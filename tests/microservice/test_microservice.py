"""MicroService over real HTTP: health, registration lifecycle, errors as JSON."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.gateway_harness import free_socket, running
from rtkit import (
    AuthError,
    BackendUnavailable,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    RtkitError,
    ServiceNotFound,
    ValidationError,
)
from rtkit.microservice import MicroService, status_for
from rtkit.registry import ServiceRegistry


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
            "forbidden": AuthError("not yours", code="forbidden"),
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
    assert shop.stopped
    assert await registry.discover("shop") == []


async def test_runs_without_registry() -> None:
    sock = free_socket()
    async with (
        running(Shop(None, sock.getsockname()[1]), sock) as server,
        httpx.AsyncClient(base_url=server.url) as http,
    ):
        assert (await http.get("/health")).json()["instance_id"] is None


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


def test_status_mapping() -> None:
    assert status_for(ValidationError("x")) == 422
    assert status_for(ValidationError("x", code="bad_request")) == 400
    assert status_for(PayloadTooLarge("x")) == 413
    assert status_for(ServiceNotFound("x")) == 503
    assert status_for(RtkitError("x")) == 500
