"""MicroService: a Starlette ASGI app that registers itself and serves ``/health``."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import pydantic
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import PayloadTooLarge, ValidationError
from ..registry import ServiceRegistry
from ..registry.base import check_service_name
from .errors import exception_handlers

__all__ = ["DEFAULT_MAX_BODY", "BodyLimitMiddleware", "MicroService", "serve"]

log = logging.getLogger("rtkit.microservice")

M = TypeVar("M", bound=pydantic.BaseModel)
Endpoint = Callable[[Request], Awaitable[Response]]

DEFAULT_MAX_BODY = 1024 * 1024
"""Largest request body a `MicroService` accepts by default (1 MiB)."""


class BodyLimitMiddleware:
    """ASGI middleware: reading a request body larger than ``max_body_size`` raises.

    The endpoint that reads the body gets `PayloadTooLarge`, which
    the rtkit exception handlers answer with a JSON 413. A ``Content-Length``
    over the limit fails on the first read, before any byte is buffered.
    """

    def __init__(self, app: ASGIApp, *, max_body_size: int) -> None:
        self.app = app
        self.max_body_size = max_body_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI entry point."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_size
        declared = dict(scope["headers"]).get(b"content-length", b"")
        seen = int(declared) if declared.isdigit() else 0

        async def limited() -> Message:
            nonlocal seen
            if seen > limit:
                raise PayloadTooLarge(f"the request body is larger than {limit} bytes")
            message = await receive()
            if declared.isdigit():
                return message
            seen += len(message.get("body", b""))
            if seen > limit:
                raise PayloadTooLarge(f"the request body is larger than {limit} bytes")
            return message

        await self.app(scope, limited, send)


class MicroService:
    """A service: an ASGI app with ``/health`` that registers itself while it runs.

    On startup (ASGI lifespan) it registers ``name`` at ``advertise_host:port``
    in ``registry`` and heartbeats; on shutdown it deregisters. Errors become
    JSON (``{"error": {"code", "message"}}``) with the status
    `rtkit.microservice.errors.status_for()` gives: an endpoint raises
    `NotFound` and the client gets a 404.

    Subclass it and add routes, or pass ``routes``:

    ```python
    class UserService(MicroService):
        def __init__(self, registry: ServiceRegistry, port: int) -> None:
            super().__init__("user-service", registry=registry, port=port)
            self.add_route("/users/{id:int}", self.get_user)

        async def get_user(self, request: Request) -> Response:
            ...
    ```

    Args:
        name: The service name it registers under.
        registry: Where to register; ``None`` runs it unregistered.
        host: The interface it listens on (used by `serve()`).
        port: Its TCP port (it must be known before startup to register it).
        advertise_host: The address others reach it at (default: ``host``, or
            ``127.0.0.1`` when ``host`` is a wildcard address).
        meta: Metadata to register (JSON, at most 4 KiB).
        ttl: Registration time-to-live in seconds (heartbeat every ``ttl / 3``).
        routes: Extra Starlette routes.
        max_body_size: Larger request bodies are answered with 413.
    """

    def __init__(
        self,
        name: str,
        *,
        registry: ServiceRegistry | None,
        port: int,
        host: str = "127.0.0.1",
        advertise_host: str | None = None,
        meta: dict[str, Any] | None = None,
        ttl: float = 30.0,
        routes: Sequence[BaseRoute] = (),
        max_body_size: int = DEFAULT_MAX_BODY,
    ) -> None:
        self.name = check_service_name(name)
        self.registry = registry
        self.host = host
        self.port = port
        self.advertise_host = advertise_host or (
            "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        )
        self.meta = dict(meta or {})
        self.ttl = ttl
        self.instance_id: str | None = None
        self.app = Starlette(
            routes=[Route("/health", self._health, methods=["GET"]), *routes],
            exception_handlers=exception_handlers(),
            lifespan=self._lifespan,
            middleware=[Middleware(BodyLimitMiddleware, max_body_size=max_body_size)],
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI entry point."""
        await self.app(scope, receive, send)

    def add_route(
        self, path: str, endpoint: Endpoint, *, methods: Sequence[str] = ("GET",)
    ) -> None:
        """Serve ``endpoint`` at ``path`` (Starlette path syntax, e.g. ``/users/{id:int}``)."""
        self.app.router.routes.append(Route(path, endpoint, methods=list(methods)))

    def route(
        self, path: str, *, methods: Sequence[str] = ("GET",)
    ) -> Callable[[Endpoint], Endpoint]:
        """Decorator form of `add_route()`."""

        def decorate(endpoint: Endpoint) -> Endpoint:
            self.add_route(path, endpoint, methods=methods)
            return endpoint

        return decorate

    @staticmethod
    async def parse(request: Request, model: type[M]) -> M:
        """Read the request's JSON body into ``model``.

        Raises:
            ValidationError: Code ``malformed_json`` (400) if the body is not
                JSON; code ``invalid_payload`` (422) if it does not fit ``model``.
        """
        body = await request.body()
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise ValidationError(f"the body is not JSON: {exc}", code="malformed_json") from exc
        try:
            return model.model_validate(data)
        except pydantic.ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            raise ValidationError(f"{where}: {first['msg']}") from exc

    async def health(self) -> dict[str, Any]:
        """The ``/health`` body; override to add checks (raise to report unhealthy)."""
        return {
            "status": "ok",
            "service": self.name,
            "instance_id": self.instance_id,
            "timestamp": datetime.now(UTC).isoformat(),
        }

    async def on_startup(self) -> None:
        """Called on startup before registering; override to open resources."""

    async def on_shutdown(self) -> None:
        """Called on shutdown after deregistering; override to close resources."""

    async def _health(self, request: Request) -> Response:
        return JSONResponse(await self.health())

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        await self.on_startup()
        if self.registry is not None:
            self.instance_id = await self.registry.register(
                self.name, host=self.advertise_host, port=self.port, meta=self.meta, ttl=self.ttl
            )
            log.info("%s registered as %s", self.name, self.instance_id)
        try:
            yield
        finally:
            if self.registry is not None and self.instance_id is not None:
                await self.registry.deregister(self.instance_id)
                self.instance_id = None
            await self.on_shutdown()

    async def serve(self, *, sockets: list[socket.socket] | None = None) -> None:
        """Run this service with uvicorn on ``host:port`` (or on ``sockets``) until stopped."""
        await serve(self, host=self.host, port=self.port, sockets=sockets)


async def serve(
    app: Callable[[Scope, Receive, Send], Awaitable[None]],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    sockets: list[socket.socket] | None = None,
    log_level: str = "warning",
) -> None:
    """Run an ASGI app (a `MicroService`, an ``ApiGateway``) with uvicorn.

    Pass already-bound ``sockets`` to serve on them (for example port-0 sockets
    whose port you needed before startup). Needs the ``server`` extra.
    """
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, lifespan="on", log_level=log_level)
    await uvicorn.Server(config).serve(sockets=sockets)
