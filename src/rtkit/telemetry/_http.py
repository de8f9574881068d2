"""HTTP: a server span, an access log line and metrics per request; a client span per
exchange of the gateway with a service; the ``/metrics`` endpoint.

:class:`HttpTelemetry` is the ASGI middleware of ``ApiGateway``, ``MicroService``
and ``rtkit serve``. Per request it

* takes the request id from ``X-Request-ID`` (a short token) or makes one, passes
  it on in the request's headers (the gateway forwards it to the service) and
  returns it in the response;
* with tracing on, continues the caller's ``traceparent`` in a SERVER span
  ``<METHOD> <route>`` (HTTP semantic conventions);
* writes one access log line on ``rtkit.access``: method, path (never the query,
  which may hold a signed link), status, duration, route, request id;
* with metrics on, counts the request and its duration by app, route, method and
  status, and the gateway's cache hits and misses (its ``X-Cache`` header).
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ._logging import REQUEST_ID
from ._metrics import http_method
from ._state import Instruments, instruments, settings

__all__ = [
    "HttpTelemetry",
    "UpstreamHooks",
    "metrics_app",
    "metrics_routes",
    "upstream_hooks",
    "with_metrics",
]

access_log = logging.getLogger("rtkit.access")

_T = TypeVar("_T")
ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]

_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:\-]{1,64}")
_UNSET: Any = object()


def _request_id(headers: list[tuple[bytes, bytes]]) -> tuple[str, bool]:
    """The request's id, and whether the client sent it (else a new one)."""
    for name, value in headers:
        if name == b"x-request-id" and _REQUEST_ID.fullmatch(value):
            return value.decode("ascii"), True
    return uuid.uuid4().hex, False


def _route_of(scope: dict[str, Any]) -> str:
    """The route label: the gateway's route prefix, a Starlette route template, or ``none``."""
    route = scope.get("rtkit.route")
    if route is None:
        route = getattr(scope.get("route"), "path", None)
    return route if isinstance(route, str) else "none"


class HttpTelemetry:
    """The ASGI middleware (see the module docs); ``app_name`` is the ``app`` label."""

    def __init__(self, app: ASGIApp, *, app_name: str, skip: tuple[str, ...] = ()) -> None:
        self.app = app
        self.app_name = app_name
        self.skip = skip  # path prefixes neither traced nor logged (Socket.IO's polling)
        self._found: Instruments | None = _UNSET

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """The ASGI entry point."""
        if scope["type"] != "http" or scope["path"].startswith(self.skip or ("\0",)):
            await self.app(scope, receive, send)
            return
        if self._found is _UNSET:  # decided once, at the first request
            self._found = instruments()
        await self._handle(scope, receive, send)

    async def _handle(self, scope: Any, receive: Any, send: Any) -> None:
        headers = list(scope["headers"])
        request_id, given = _request_id(headers)
        if not given:
            headers.append((b"x-request-id", request_id.encode()))
        scope = {**scope, "headers": headers}
        answer: dict[str, Any] = {"status": 500, "cache": None}

        async def respond(message: Any) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
                headers = list(message.get("headers", ()))
                names = {name.lower() for name, _ in headers}
                for name, value in headers:
                    if name.lower() == b"x-cache":
                        answer["cache"] = value.decode("latin-1").lower()
                if b"x-request-id" not in names:  # (a service behind the gateway set it)
                    headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        started = time.perf_counter()
        token = REQUEST_ID.set(request_id)
        try:
            await self._run(scope, receive, respond, answer)
        finally:
            self._done(scope, answer, time.perf_counter() - started, request_id)
            REQUEST_ID.reset(token)

    async def _run(self, scope: Any, receive: Any, send: Any, answer: dict[str, Any]) -> None:
        found = self._found
        tracing = None if found is None else found.tracing
        if tracing is None:
            await self.app(scope, receive, send)
            return
        from ._trace import carrier_of

        method = scope["method"]
        parent = carrier_of({k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]})
        attributes = {
            "http.request.method": http_method(method),
            "url.path": scope["path"],
            "url.scheme": scope.get("scheme", "http"),
            "rtkit.app": self.app_name,
        }
        with tracing.span(method, "server", attributes, parent=parent) as span:
            await self.app(scope, receive, send)
            route = _route_of(scope)
            span.update_name(f"{method} {route}")
            span.set_attribute("http.route", route)
            span.set_attribute("http.response.status_code", answer["status"])
            if answer["status"] >= 500:
                tracing.failed(span, str(answer["status"]))

    def _done(self, scope: Any, answer: dict[str, Any], duration: float, request_id: str) -> None:
        status = answer["status"]
        route = _route_of(scope)
        found = self._found
        metrics = None if found is None else found.metrics
        if metrics is not None:
            method = http_method(scope["method"])
            metrics["rtkit_http_requests_total"].labels(
                self.app_name, route, method, str(status)
            ).inc()
            metrics["rtkit_http_request_duration_seconds"].labels(
                self.app_name, route, method
            ).observe(duration)
            if answer["cache"] in ("hit", "miss"):
                metrics["rtkit_gateway_cache_total"].labels(route, answer["cache"]).inc()
        if access_log.isEnabledFor(logging.INFO):
            access_log.info(
                "%s %s %d %.1fms",
                scope["method"],
                scope["path"],
                status,
                duration * 1000,
                extra={
                    "app": self.app_name,
                    "method": scope["method"],
                    "path": scope["path"],
                    "route": route,
                    "status": status,
                    "duration_ms": round(duration * 1000, 3),
                },
            )


# ------------------------------------------------------------------ the gateway's upstream


def upstream_hooks() -> UpstreamHooks | None:
    """The hooks of a starting gateway's upstream exchanges; ``None`` when telemetry is off."""
    found = instruments()
    if found is None or (found.tracing is None and found.metrics is None):
        return None
    return UpstreamHooks(found)


def _error_kind(exc: BaseException) -> str:
    import httpx

    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return "connect"
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "protocol"
    if type(exc).__name__ == "_TooLarge":
        return "too_large"
    return "other"


class UpstreamHooks:
    """A CLIENT span per exchange, its context in the request's ``traceparent``; metrics."""

    def __init__(self, found: Instruments) -> None:
        self.tracing = found.tracing
        self.metrics = found.metrics

    async def exchange(
        self, service: str, request: Any, exchange: Callable[[Any], Awaitable[_T]]
    ) -> _T:
        """Run ``exchange(request)`` (an ``httpx.Request``) in a CLIENT span, counted."""
        started = time.perf_counter()
        try:
            if self.tracing is None:
                return await exchange(request)
            return await self._traced(service, request, exchange)
        except Exception as exc:
            if self.metrics is not None:
                errors = self.metrics["rtkit_gateway_upstream_errors_total"]
                errors.labels(service, _error_kind(exc)).inc()
            raise
        finally:
            if self.metrics is not None:
                duration = self.metrics["rtkit_gateway_upstream_duration_seconds"]
                duration.labels(service).observe(time.perf_counter() - started)

    async def _traced(
        self, service: str, request: Any, exchange: Callable[[Any], Awaitable[_T]]
    ) -> _T:
        assert self.tracing is not None
        url = request.url
        attributes = {
            "http.request.method": http_method(request.method),
            "server.address": url.host,
            "server.port": url.port or 80,
            "url.full": str(url.copy_with(query=None)),
            "peer.service": service,
        }
        with self.tracing.span(request.method, "client", attributes) as span:
            for name in ("traceparent", "tracestate"):
                if name in request.headers:
                    del request.headers[name]
            request.headers.update(self.tracing.carrier())
            result = await exchange(request)
            status = result[0]  # type: ignore[index]
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                self.tracing.failed(span, str(status))
            return result


# ------------------------------------------------------------------ /metrics


def metrics_app(registry: Any = None) -> ASGIApp:
    """An ASGI app answering with the metrics of ``registry`` (default: rtkit's) in the
    Prometheus text format (OpenMetrics when the scraper asks for it).

    Raises:
        rtkit.errors.ConfigurationError: Metrics are not enabled and no registry is given.
    """
    from prometheus_client import make_asgi_app

    from ..errors import ConfigurationError

    if registry is None:
        if settings.metrics is None:
            raise ConfigurationError("metrics are off: call rtkit.telemetry.enable_metrics()")
        registry = settings.metrics.registry
    app: ASGIApp = make_asgi_app(registry)
    return app


def with_metrics(app: ASGIApp, *, path: str = "/metrics", registry: Any = None) -> ASGIApp:
    """``app``, answering ``GET path`` with the metrics itself (everything else goes to ``app``)."""
    exposition = metrics_app(registry)

    async def dispatch(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == path:
            await exposition(scope, receive, send)
        else:
            await app(scope, receive, send)

    return dispatch


def metrics_routes(metrics: bool) -> list[Any]:
    """The Starlette route of ``GET /metrics`` when ``metrics`` (turning metrics on), else none."""
    if not metrics:
        return []
    from starlette.routing import Route

    from ._metrics import enable

    if settings.metrics is None:  # else: the registry the application chose
        enable()
    return [Route("/metrics", _Asgi(metrics_app()), methods=["GET"])]


class _Asgi:
    """An ASGI app as a Starlette endpoint (a plain function would be taken for a view)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)
