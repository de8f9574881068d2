"""MicroService: a Starlette ASGI app that registers itself and serves ``/health``."""

from __future__ import annotations

import json
import logging
import math
import re
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, Self, TypeVar

import pydantic
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from .._core.component import Component, constructor_options, open_part, split_among_parts
from .._core.urls import BackendTarget
from .._core.validate import check_host, check_name
from ..errors import ConfigurationError, MalformedJson, ValidationError
from ..http import BodyLimitMiddleware, exception_handlers, lifespan
from ..registry import ServiceRegistry
from ..telemetry import HttpTelemetry
from ..telemetry._http import metrics_routes

__all__ = ["DEFAULT_MAX_BODY", "MicroService", "serve"]

log = logging.getLogger("rtkit.microservice")

M = TypeVar("M", bound=pydantic.BaseModel)
Endpoint = Callable[[Request], Awaitable[Response]]

DEFAULT_MAX_BODY = 1024 * 1024
"""The largest request body a ``MicroService`` accepts by default (1 MiB)."""

_WILDCARDS = ("0.0.0.0", "::", "")
_WORD_START = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def kebab(name: str) -> str:
    """``UserService`` -> ``user-service``, ``HTTPProbe`` -> ``http-probe``."""
    return _WORD_START.sub("-", name).lower()


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:40]} is not a finite number")
    return value


def _bind(host: str) -> socket.socket:
    """A TCP socket bound to a free port on ``host`` (not listening yet)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    return sock


class MicroService(Component):
    """A service: an ASGI app with ``/health`` that registers itself while it runs.

    ``start()`` (the ASGI lifespan calls it) runs
    [`on_startup`][rtkit.microservice.MicroService.on_startup], then registers
    ``name`` at ``advertise_host:port`` in ``registry``, which heartbeats;
    ``close()`` deregisters, then runs
    [`on_shutdown`][rtkit.microservice.MicroService.on_shutdown], and closes the
    registry if the service made it. After ``close()`` the service answers 503
    [`Closed`][rtkit.errors.Closed]. Errors become JSON (``{"error": {"code",
    "message"}}``) with the status of ``rtkit.http.status_for``: an endpoint
    raises [`NotFound`][rtkit.errors.NotFound] and the client gets a 404.

    Subclass it and add routes, or pass ``routes``:

    ```python
    class UserService(MicroService):
        name = "user-service"

        def __init__(self, registry: ServiceRegistry | None = None, port: int = 0) -> None:
            super().__init__(registry=registry, port=port)
            self.add_route("/users/{id:int}", self.get_user)

        async def get_user(self, request: Request) -> Response:
            ...
    ```

    ``MicroService.from_url(url, *, prefix=None, redis=None, clock=None,
    **options)`` opens its registry on ``url`` and owns it; ``options`` are the
    constructor's arguments and the registry's options. A subclass that changes
    the constructor keeps a ``registry`` keyword for it.

    Args:
        name: The service name it registers under (default: the class attribute
            ``name``, else the class name in kebab case, ``UserService`` ->
            ``user-service``).
        registry: Where to register (default: a private in-memory registry,
            ``service.registry``, closed with the service; a given one stays open).
        port: Its TCP port. ``0``: a free port is bound when the service starts
            (or is served) and that port is registered; with a server of your
            own, pass the port it listens on.
        host: The interface it listens on (used by
            [`serve`][rtkit.microservice.MicroService.serve]).
        advertise_host: The address others reach it at (default: ``host``, or
            ``127.0.0.1`` when ``host`` is a wildcard address): a hostname, an
            IPv4 or an IPv6 literal.
        meta: Metadata to register (JSON, at most 4 KiB).
        ttl: Registration time-to-live in seconds (heartbeat every ``ttl / 3``).
        routes: Extra Starlette routes.
        max_body_size: Larger request bodies are answered with 413.
        metrics: Count rtkit's metrics
            ([`enable_metrics`][rtkit.telemetry.enable_metrics]) and serve them at
            ``GET /metrics``. Needs the ``otel`` extra.

    Raises:
        rtkit.errors.ConfigurationError: A bad service name or ``advertise_host``.
    """

    name: str
    _backends: ClassVar[Mapping[str, str]] = dict.fromkeys(("memory", "redis"), "")

    def __init__(
        self,
        name: str | None = None,
        *,
        registry: ServiceRegistry | None = None,
        port: int = 0,
        host: str = "127.0.0.1",
        advertise_host: str | None = None,
        meta: dict[str, Any] | None = None,
        ttl: float = 30.0,
        routes: Sequence[BaseRoute] = (),
        max_body_size: int = DEFAULT_MAX_BODY,
        metrics: bool = False,
    ) -> None:
        name = name or getattr(type(self), "name", None) or kebab(type(self).__name__)
        self.name = check_name(name, "service name", error=ConfigurationError)
        self._owns_registry = registry is None
        self.registry = registry if registry is not None else ServiceRegistry.from_url("memory://")
        self.host = host
        self.port = port
        self.advertise_host = advertise_host or ("127.0.0.1" if host in _WILDCARDS else host)
        try:  # what the registry would refuse at start(), refused now
            check_host(self.advertise_host, "advertise_host")
        except ValidationError as exc:
            raise ConfigurationError(str(exc)) from None
        self.meta = dict(meta or {})
        self.ttl = ttl
        self.instance_id: str | None = None
        self._socket: socket.socket | None = None
        self.app = Starlette(
            routes=[
                Route("/health", self._health, methods=["GET"]),
                *metrics_routes(metrics),
                *routes,
            ],
            exception_handlers=exception_handlers(),
            lifespan=lifespan(self),
            middleware=[
                Middleware(HttpTelemetry, app_name=self.name),  # spans, access log, metrics
                Middleware(BodyLimitMiddleware, max_body_size=max_body_size),
            ],
        )

    @classmethod
    def _from_target(cls, target: BackendTarget, options: Mapping[str, Any]) -> Self:
        own = constructor_options(cls) - {"registry"}
        parts = {"registry": ServiceRegistry}
        mine, registry_options = split_among_parts(cls.__name__, options, own, parts)
        registry = open_part(ServiceRegistry, target, registry_options["registry"])
        service = cls(registry=registry, **mine)
        service._owns_registry = True
        return service

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
        """Decorator form of [`add_route`][rtkit.microservice.MicroService.add_route]."""

        def decorate(endpoint: Endpoint) -> Endpoint:
            self.add_route(path, endpoint, methods=methods)
            return endpoint

        return decorate

    @staticmethod
    async def parse(request: Request, model: type[M]) -> M:
        """Read the request's JSON body into ``model``.

        Raises:
            rtkit.errors.MalformedJson: The body is not JSON (400): not JSON at all,
                ``NaN`` or an infinite number, or nested deeper than the parser's
                stack allows.
            rtkit.errors.ValidationError: It does not fit ``model`` (422).
        """
        body = await request.body()
        try:
            data = json.loads(body, parse_constant=_no_constant, parse_float=_finite)
        except ValueError as exc:
            raise MalformedJson(f"the body is not JSON: {exc}") from exc
        except RecursionError:  # a hostile body: never a 500
            raise MalformedJson("the body is not JSON: it nests too deeply") from None
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
        """Called by ``start()`` before registering; override to open resources."""

    async def on_shutdown(self) -> None:
        """Called by ``close()`` after deregistering; override to close resources."""

    async def _health(self, request: Request) -> Response:
        self._check_open()
        return JSONResponse(await self.health())

    def _reserve_port(self) -> socket.socket:
        if self._socket is None:
            self._socket = _bind(self.host)
            self.port = self._socket.getsockname()[1]
        return self._socket

    async def _start(self) -> None:
        if self.port == 0:
            self._reserve_port()
        await self.on_startup()
        self.instance_id = await self.registry.register(
            self.name, host=self.advertise_host, port=self.port, meta=self.meta, ttl=self.ttl
        )
        log.info("%s registered as %s", self.name, self.instance_id)

    async def _close(self) -> None:
        try:
            if self._started:
                if self.instance_id is not None:
                    await self.registry.deregister(self.instance_id)
                await self.on_shutdown()
        finally:
            if self._owns_registry:
                await self.registry.close()
            if self._socket is not None:
                self._socket.close()

    async def serve(self, *, sockets: list[socket.socket] | None = None) -> None:
        """Run this service with uvicorn on ``host:port`` (or on ``sockets``) until stopped.

        With port ``0`` and no ``sockets``, it serves on the free port it binds
        (and registers); with ``sockets``, port ``0`` becomes the first one's port.
        """
        self._check_open()
        if sockets is None and (self.port == 0 or self._socket is not None):
            sockets = [self._reserve_port()]
        elif sockets and self.port == 0:
            self.port = sockets[0].getsockname()[1]
        await serve(self, host=self.host, port=self.port, sockets=sockets)


async def serve(
    app: Callable[[Scope, Receive, Send], Awaitable[None]],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    sockets: list[socket.socket] | None = None,
    log_level: str = "warning",
) -> None:
    """Run an ASGI app (a ``MicroService``, an ``ApiGateway``) with uvicorn.

    Pass already-bound ``sockets`` to serve on them (for example port-0 sockets
    whose port you needed before startup). Needs the ``server`` extra.
    """
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, lifespan="on", log_level=log_level)
    await uvicorn.Server(config).serve(sockets=sockets)
