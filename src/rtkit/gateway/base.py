"""ApiGateway: an ASGI app that proxies to discovered services, rate limits and caches."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route as StarletteRoute
from starlette.types import Receive, Scope, Send

from .._clock import Clock, SystemClock
from ..errors import ConfigurationError, ServiceNotFound
from ..microservice.base import BodyLimitMiddleware
from ..microservice.errors import error_response, exception_handlers
from ..ratelimit import Decision, Limit, RateLimiter
from ..registry import ServiceInstance, ServiceRegistry, Strategy
from ..registry.base import check_service_name
from .cache import CachedResponse, ResponseCache, parse_cache_control, seconds

__all__ = ["HOP_BY_HOP", "ApiGateway", "Route"]

log = logging.getLogger("rtkit.gateway")

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
"""Headers that concern one connection and are never forwarded (RFC 9110 7.6.1)."""

_NOT_FORWARDED = HOP_BY_HOP | {"host", "content-length"}
# The front server (uvicorn) adds its own Date and Server headers.
_NOT_RETURNED = HOP_BY_HOP | {"content-length", "date", "server"}


@dataclass(frozen=True)
class Route:
    """Where the gateway sends requests under a path prefix.

    Attributes:
        service: The service name to discover.
        path: What replaces the matched prefix in the upstream path (``None``:
            the path is forwarded unchanged). With ``{"/api/users":
            Route("user-service", path="/users")}``, ``/api/users/7?x=1`` goes to
            ``/users/7?x=1`` on a ``user-service`` instance.
        strategy: How to pick the instance (see
            `ServiceRegistry.get_service()`).
    """

    service: str
    path: str | None = None
    strategy: Strategy = "random"


def client_ip(request: Request) -> str:
    """The default rate-limit key: the peer address of the connection."""
    return request.client.host if request.client else "unknown"


def _connection_listed(headers: Sequence[tuple[str, str]]) -> set[str]:
    named: set[str] = set()
    for name, value in headers:
        if name.lower() == "connection":
            named.update(v.strip().lower() for v in value.split(",") if v.strip())
    return named


def strip_hop_by_hop(
    headers: Sequence[tuple[str, str]], extra: frozenset[str] = HOP_BY_HOP
) -> list[tuple[str, str]]:
    """``headers`` without hop-by-hop ones: the standard list, ``extra`` and those
    named in ``Connection``."""
    drop = extra | _connection_listed(headers)
    return [(k, v) for k, v in headers if k.lower() not in drop]


class ApiGateway:
    """An ASGI API gateway in front of services found in a `ServiceRegistry`.

    Every request whose path starts with a route prefix is proxied (any method,
    body, query) to an instance of the route's service, over a pooled
    ``httpx.AsyncClient``:

    - hop-by-hop headers (and those named in ``Connection``) are dropped both
      ways; ``X-Forwarded-For`` gets the client address appended,
      ``X-Forwarded-Proto`` and ``X-Forwarded-Host`` are set;
    - no live instance, or every tried instance refusing the connection: 502;
      the upstream answering too slowly (``timeout`` for the whole exchange): 504;
    - per-client rate limit (``rate_limit``, keyed by ``client_key``): each
      proxied response carries ``RateLimit-Limit``, ``RateLimit-Remaining``,
      ``RateLimit-Reset``; over the limit: 429 with ``Retry-After``;
    - GET responses with status 200 are cached (``cache``) keyed by method, path
      with query and the values of the response's ``Vary`` headers, for the
      response's ``s-maxage``/``max-age`` or ``cache_ttl`` seconds; never when
      the response says ``no-store``, ``no-cache`` or ``private``, sets a cookie,
      or has ``Vary: *``. A request with ``Cache-Control: no-store`` bypasses the
      cache, ``no-cache`` or ``max-age=0`` skips the lookup, ``max-age=N`` accepts
      only entries at most N seconds old. Requests with ``Authorization`` are
      never cached. Cache-eligible responses carry ``X-Cache: HIT`` or ``MISS``
      (hits also ``Age``).

    ``GET /health`` answers ``{"status": "ok"}``; ``GET /services`` lists every
    service with its live instance count. Other paths: 404. Errors are JSON
    ``{"error": {"code", "message"}}``.

    Args:
        registry: Where services are discovered.
        routes: Path prefix to service name or `Route`
            (``{"/api/users": "user-service"}``); the longest prefix wins.
        limiter: The rate limiter (default: a new in-memory one; pass a Redis
            one to share limits between gateway processes).
        rate_limit: One or more limits per client (``"100/minute"`` or
            [`Limit`][rtkit.ratelimit.Limit] objects, all counted at once); ``None``
            disables rate limiting.
        client_key: Maps a request to its rate-limit key (default: the peer IP;
            behind a trusted proxy, read ``X-Forwarded-For`` yourself).
        cache: The response cache; ``None`` disables caching.
        cache_ttl: Seconds to cache a response that gives no ``max-age``.
        timeout: Seconds for a whole upstream exchange (504 beyond).
        max_body_size: Larger request bodies: 413.
        max_response_size: Larger upstream responses: 502.
        max_connections: Size of the upstream connection pool.
        retries: Other instances tried when one refuses the connection (the
            request was not sent, so this is safe for every method).
        discovery_ttl: Seconds the gateway reuses a service's instance list before
            asking the registry again (0: ask for every request). A refused
            connection always asks again, so a vanished instance costs at most
            one retry.
        clock: Where the age of cached responses is read from (tests inject a
            [`ManualClock`][rtkit.ManualClock]; give the cache the same one).
    """

    def __init__(
        self,
        registry: ServiceRegistry,
        *,
        routes: Mapping[str, str | Route],
        limiter: RateLimiter | None = None,
        rate_limit: str | Limit | Sequence[str | Limit] | None = "100/minute",
        client_key: Callable[[Request], str] = client_ip,
        cache: ResponseCache | None = None,
        cache_ttl: float = 60.0,
        timeout: float = 10.0,
        max_body_size: int = 10 * 1024 * 1024,
        max_response_size: int = 50 * 1024 * 1024,
        max_connections: int = 100,
        retries: int = 1,
        discovery_ttl: float = 1.0,
        clock: Clock | None = None,
    ) -> None:
        self.registry = registry
        self._clock: Clock = clock or SystemClock()
        self.routes = self._check_routes(routes)
        self._own_limiter = limiter is None and rate_limit is not None
        self.limiter = RateLimiter() if limiter is None and rate_limit is not None else limiter
        self.rate_limits: list[str | Limit]
        if rate_limit is None:
            self.rate_limits = []
        elif isinstance(rate_limit, str | Limit):
            self.rate_limits = [rate_limit]
        else:
            self.rate_limits = list(rate_limit)
        for limit in self.rate_limits:  # fail now, not on the first request
            if isinstance(limit, str):
                Limit.parse(limit)
        self.client_key = client_key
        self.cache = cache
        self.cache_ttl = cache_ttl
        if timeout <= 0 or retries < 0:
            raise ConfigurationError("timeout must be positive and retries not negative")
        self.timeout = timeout
        self.max_response_size = max_response_size
        self.retries = retries
        self.discovery_ttl = discovery_ttl
        self._discovered: dict[str, tuple[float, list[ServiceInstance]]] = {}
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            follow_redirects=False,
            trust_env=False,
        )
        for name in ("accept", "accept-encoding", "user-agent"):
            del self.client.headers[name]  # forward the client's, not httpx's defaults
        self.app = Starlette(
            routes=[
                StarletteRoute("/health", self._health, methods=["GET"]),
                StarletteRoute("/services", self._services, methods=["GET"]),
                StarletteRoute("/{path:path}", _AnyMethod(self._proxy)),
            ],
            exception_handlers=exception_handlers(),
            middleware=[Middleware(BodyLimitMiddleware, max_body_size=max_body_size)],
            lifespan=self._lifespan,
        )

    @staticmethod
    def _check_routes(routes: Mapping[str, str | Route]) -> list[tuple[str, Route]]:
        checked = []
        for prefix, target in routes.items():
            route = Route(target) if isinstance(target, str) else target
            if not prefix.startswith("/") or (prefix != "/" and prefix.endswith("/")):
                raise ConfigurationError(f"route prefix {prefix!r} must start and not end with /")
            if route.path is not None and not route.path.startswith("/"):
                raise ConfigurationError(f"route path {route.path!r} must start with /")
            check_service_name(route.service)
            checked.append((prefix.rstrip("/"), route))
        return sorted(checked, key=lambda item: -len(item[0]))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI entry point."""
        await self.app(scope, receive, send)

    async def aclose(self) -> None:
        """Close the upstream connection pool (and the limiter the gateway made itself)."""
        await self.client.aclose()
        if self._own_limiter and self.limiter is not None:
            await self.limiter.close()

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await self.aclose()

    # -- endpoints ------------------------------------------------------------------------

    async def _health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "timestamp": datetime.now(UTC).isoformat()})

    async def _services(self, request: Request) -> Response:
        return JSONResponse({"services": await self.registry.services()})

    def _match(self, raw_path: str) -> tuple[Route, str] | None:
        for prefix, route in self.routes:
            if raw_path == prefix or raw_path.startswith(prefix + "/") or prefix == "":
                rest = raw_path[len(prefix) :]
                if route.path is None:
                    return route, raw_path
                return route, (route.path.rstrip("/") + rest) or "/"
        return None

    async def _proxy(self, request: Request) -> Response:
        raw_path = request.scope.get("raw_path", b"").decode("latin-1") or request.url.path
        raw_path = raw_path.partition("?")[0]
        matched = self._match(raw_path)
        if matched is None:
            return error_response(404, "not_found", f"no route for {request.url.path}")
        route, upstream_path = matched
        query = request.scope.get("query_string", b"").decode("latin-1")
        upstream_path += f"?{query}" if query else ""

        limit_headers: dict[str, str] = {}
        if self.limiter is not None and self.rate_limits:
            decision: Decision = await self.limiter.hit(self.client_key(request), *self.rate_limits)
            limit_headers = decision.headers()
            if not decision.allowed:
                return error_response(
                    429, "rate_limited", "too many requests", headers=limit_headers
                )

        cache_url = f"{raw_path}?{query}" if query else raw_path
        cacheable, lookup = self._request_cacheability(request)
        if cacheable and lookup and self.cache is not None:
            hit = await self.cache.lookup("GET", cache_url, request.headers)
            if hit is not None and self._fresh_enough(request, hit):
                return self._replay(hit, limit_headers)

        response = await self._forward(request, route, upstream_path)
        if response is None:
            return error_response(
                502,
                "bad_gateway",
                f"no instance of {route.service} answered",
                headers=limit_headers,
            )
        if isinstance(response, Response):
            response.headers.update(limit_headers)
            return response
        status, headers, body = response
        # HEAD: no body here, the upstream's Content-Length tells the size
        dropped = _NOT_RETURNED - {"content-length"} if request.method == "HEAD" else _NOT_RETURNED
        headers = strip_hop_by_hop(headers, dropped)
        if cacheable:
            headers.append(("x-cache", "MISS"))
            await self._maybe_store(request, cache_url, status, headers, body)
        return self._respond(request.method, status, headers, body, limit_headers)

    # -- forwarding -----------------------------------------------------------------------

    def _forward_headers(self, request: Request) -> list[tuple[str, str]]:
        headers = strip_hop_by_hop(request.headers.items(), _NOT_FORWARDED)
        headers = [(k, v) for k, v in headers if not k.lower().startswith("x-forwarded-")]
        forwarded_for = [v for k, v in request.headers.items() if k == "x-forwarded-for"]
        forwarded_for.append(client_ip(request))
        headers.append(("x-forwarded-for", ", ".join(forwarded_for)))
        headers.append(("x-forwarded-proto", request.url.scheme))
        if "host" in request.headers:
            headers.append(("x-forwarded-host", request.headers["host"]))
        return headers

    async def _forward(
        self, request: Request, route: Route, upstream_path: str
    ) -> tuple[int, list[tuple[str, str]], bytes] | Response | None:
        """Send the request upstream; ``None`` when no instance could be reached."""
        body = await request.body()
        headers = self._forward_headers(request)
        tried: set[str] = set()
        for _ in range(self.retries + 1):
            try:
                instance = await self._pick(route, tried)
            except ServiceNotFound:
                return None
            tried.add(instance.instance_id)
            upstream = self.client.build_request(
                request.method, instance.url + upstream_path, headers=headers, content=body
            )
            try:
                with self.registry.track(instance):
                    async with asyncio.timeout(self.timeout):
                        return await self._exchange(upstream)
            except (TimeoutError, httpx.TimeoutException) as exc:
                if isinstance(exc, httpx.ConnectTimeout):
                    continue
                log.warning("%s %s timed out", request.method, instance.url)
                return error_response(
                    504, "gateway_timeout", f"{route.service} did not answer in time"
                )
            except (httpx.ConnectError, httpx.RemoteProtocolError) as exc:
                log.warning("%s %s: %s", request.method, instance.url, exc)
            except _TooLarge:
                return error_response(
                    502, "bad_gateway", f"the response of {route.service} is too large"
                )
            except httpx.HTTPError as exc:
                log.warning("%s %s failed: %s", request.method, instance.url, exc)
                return None
        return None

    async def _pick(self, route: Route, tried: set[str]) -> ServiceInstance:
        now = time.monotonic()
        cached = self._discovered.get(route.service)
        if cached is None or cached[0] <= now or tried:
            instances = await self.registry.discover(route.service)
            if self.discovery_ttl > 0:
                self._discovered[route.service] = (now + self.discovery_ttl, instances)
        else:
            instances = cached[1]
        candidates = [i for i in instances if i.instance_id not in tried]
        return self.registry.pick(route.service, candidates, route.strategy)

    async def _exchange(self, upstream: httpx.Request) -> tuple[int, list[tuple[str, str]], bytes]:
        response = await self.client.send(upstream, stream=True)
        try:
            chunks, size = [], 0
            async for chunk in response.aiter_raw():  # still encoded: forwarded as is
                size += len(chunk)
                if size > self.max_response_size:
                    raise _TooLarge
                chunks.append(chunk)
        finally:
            await response.aclose()
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers.raw]
        return response.status_code, headers, b"".join(chunks)

    # -- responses and caching ------------------------------------------------------------

    @staticmethod
    def _respond(
        method: str,
        status: int,
        headers: list[tuple[str, str]],
        body: bytes,
        limit_headers: Mapping[str, str],
    ) -> Response:
        response = Response(content=b"" if method == "HEAD" else body, status_code=status)
        # Response computed content-length; keep it, add the upstream's headers verbatim
        # (repeated ones such as Set-Cookie included).
        own = [(k, v) for k, v in response.raw_headers if k == b"content-length"]
        if method == "HEAD":
            own = []
        response.raw_headers = own + [
            (k.lower().encode("latin-1"), v.encode("latin-1"))
            for k, v in [*headers, *limit_headers.items()]
        ]
        return response

    def _request_cacheability(self, request: Request) -> tuple[bool, bool]:
        """(may the response be cached, may the cache answer)."""
        if self.cache is None or request.method != "GET" or "authorization" in request.headers:
            return False, False
        cc = parse_cache_control(request.headers.getlist("cache-control"))
        if "no-store" in cc:
            return True, False
        return True, "no-cache" not in cc and seconds(cc, "max-age") != 0

    def _fresh_enough(self, request: Request, hit: CachedResponse) -> bool:
        cc = parse_cache_control(request.headers.getlist("cache-control"))
        max_age = seconds(cc, "max-age")
        age = self._clock.time() - hit.stored_at
        return max_age is None or age <= max_age

    def _replay(self, hit: CachedResponse, limit_headers: Mapping[str, str]) -> Response:
        age = max(0, int(self._clock.time() - hit.stored_at))
        headers = [(k, v) for k, v in hit.headers if k.lower() not in ("x-cache", "age")]
        headers += [("x-cache", "HIT"), ("age", str(age))]
        return self._respond("GET", hit.status, headers, hit.body, limit_headers)

    async def _maybe_store(
        self,
        request: Request,
        url: str,
        status: int,
        headers: list[tuple[str, str]],
        body: bytes,
    ) -> None:
        assert self.cache is not None
        if status != 200:
            return
        if "no-store" in parse_cache_control(request.headers.getlist("cache-control")):
            return
        response_headers = Headers(raw=[(k.lower().encode(), v.encode()) for k, v in headers])
        cc = parse_cache_control(response_headers.getlist("cache-control"))
        if {"no-store", "no-cache", "private"} & cc.keys() or "set-cookie" in response_headers:
            return
        vary = sorted(
            {
                v.strip().lower()
                for value in response_headers.getlist("vary")
                for v in value.split(",")
                if v.strip()
            }
        )
        if "*" in vary:
            return
        ttl = seconds(cc, "s-maxage")
        ttl = seconds(cc, "max-age") if ttl is None else ttl
        stored = CachedResponse(
            status=status,
            headers=[(k, v) for k, v in headers if k.lower() != "x-cache"],
            body=body,
            stored_at=self._clock.time(),
        )
        await self.cache.store(
            "GET", url, request.headers, stored, vary, self.cache_ttl if ttl is None else ttl
        )


class _AnyMethod:
    """An ASGI endpoint (Starlette routes restrict plain functions to GET/HEAD)."""

    def __init__(self, handler: Callable[[Request], Awaitable[Response]]) -> None:
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.handler(Request(scope, receive))
        await response(scope, receive, send)


class _TooLarge(Exception):
    """An upstream response exceeded ``max_response_size``."""
