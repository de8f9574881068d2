"""ApiGateway: an ASGI app that proxies to discovered services, rate limits and caches."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, Self
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route as StarletteRoute
from starlette.types import Receive, Scope, Send

from .._core.clock import Clock, SystemClock
from .._core.component import Component, constructor_options, open_part, split_among_parts
from .._core.urls import BackendTarget
from .._core.validate import check_int, check_seconds
from ..errors import ConfigurationError, MalformedRequest, NotFound, RateLimited, RtkitError
from ..http import BodyLimitMiddleware, error_response, exception_handlers, lifespan
from ..ratelimit import Limit, RateLimiter
from ..registry import ServiceRegistry
from ..telemetry import HttpTelemetry
from ..telemetry._http import metrics_routes
from ._cache import (
    CREDENTIAL_HEADERS,
    CachedResponse,
    ResponseCache,
    fresh_enough,
    request_policy,
    storable,
    unsafe,
)
from ._paths import encode_query, normalize_path, same_origin_target
from ._proxy import (
    NOT_RETURNED,
    AnyMethod,
    Headers,
    Route,
    Upstream,
    check_header_bytes,
    check_routes,
    client_ip,
    forward_headers,
    header_names,
    match_route,
    strip_hop_by_hop,
)

__all__ = ["ApiGateway"]

log = logging.getLogger("rtkit.gateway")

Limits = str | Limit | Sequence[str | Limit]

# Set by the gateway from the connection, so always part of the cache key: an
# upstream building links from them cannot poison the cache for other hosts.
_ALWAYS_KEYED = ("x-forwarded-host", "x-forwarded-proto")


def _limits(rate_limit: Limits | None) -> list[str | Limit]:
    if rate_limit is None:
        return []
    limits = [rate_limit] if isinstance(rate_limit, str | Limit) else list(rate_limit)
    for limit in limits:  # fail now, not on the first request
        if isinstance(limit, str):
            Limit.parse(limit)
    return limits


class ApiGateway(Component):
    """An ASGI API gateway in front of registered services.

    Services are found in a [`ServiceRegistry`][rtkit.registry.ServiceRegistry].

    The request path is normalised first (RFC 3986: percent-encodings, then
    dot-segments), and a path that cannot be normalised safely (an encoded ``/``,
    ``\\`` or NUL, a stray ``%``, ``..;``) is refused with 400 ``malformed_request``,
    as is a request with a header that is not printable ASCII (logged in one line).
    Every request whose normalised path starts with a route prefix is proxied (any
    method, body, query) to an instance of the route's service, over a pooled
    ``httpx.AsyncClient``; the upstream path never leaves the route's path:

    - hop-by-hop headers (and those named in ``Connection``) are dropped both
      ways; so are the client's ``X-Forwarded-*``, ``Forwarded``, ``X-Real-IP``,
      ``X-Original-URL`` and the like (``CLIENT_FORWARDING``); ``X-Forwarded-For``
      gets the client address appended, ``X-Forwarded-Proto``,
      ``X-Forwarded-Host`` and ``X-Real-IP`` are set;
    - no live instance: 503; every tried instance refusing the connection: 502;
      the upstream answering too slowly (``upstream_timeout`` for the whole
      exchange): 504;
    - per-client rate limit (``rate_limit``, keyed by ``client_key``): each
      proxied response carries ``RateLimit-Limit``, ``RateLimit-Remaining``,
      ``RateLimit-Reset``; over the limit: 429 with ``Retry-After``;
    - GET responses with status 200 are cached (``cache``) keyed by method,
      normalised path with query, ``X-Forwarded-Host`` and ``X-Forwarded-Proto``
      as sent upstream, the route's ``Route.vary`` headers and the values of the
      response's ``Vary`` headers (and ``Accept-Encoding`` when it has a
      ``Content-Encoding``), for the response's ``s-maxage``/``max-age`` or
      ``cache_ttl`` seconds; never when the response says ``no-store``,
      ``no-cache`` or ``private``, sets a cookie, or has ``Vary: *``. A request
      with ``Cache-Control: no-store`` bypasses the cache, ``no-cache`` or
      ``max-age=0`` skips the lookup, ``max-age=N`` accepts only entries at most N
      seconds old. A request with a body or a method override
      (``X-HTTP-Method-Override``...) never uses the cache, nor does one with
      credentials (``Authorization``, ``Cookie``, ``Proxy-Authorization``,
      ``credential_headers``) unless its route names each of them in
      ``Route.vary``. Cache-eligible responses carry ``X-Cache: HIT`` or ``MISS``
      (hits also ``Age``). A successful (2xx, 3xx) unsafe request (any method but
      GET, HEAD, OPTIONS, TRACE, or a method override) invalidates what is stored
      for its URL and for the same-origin ``Location`` and ``Content-Location``
      it is answered with (RFC 9111 4.4).

    ``GET /health`` answers ``{"status": "ok"}``; ``GET /services`` lists every
    service with its live instance count. Other paths: 404. Errors are JSON
    ``{"error": {"code", "message"}}`` with the status of
    ``rtkit.http.status_for``.

    ``ApiGateway.from_url(url, *, prefix=None, redis=None, clock=None, **options)``
    opens the gateway's registry and limiter on ``url`` (``memory://``,
    ``memory://NAME`` or a Redis URL), and a
    [`ResponseCache`][rtkit.gateway.ResponseCache] too with ``cache=True``; the
    gateway owns and closes them. ``options`` are the constructor's keyword
    arguments (``registry`` and ``limiter`` aside; ``cache`` may also be a cache
    of your own, which stays yours) and the options of the parts, each given to
    every part that takes it (``timeout`` on Redis, ``max_entries`` for a memory
    cache, ...); an option nobody takes is a
    [`ConfigurationError`][rtkit.errors.ConfigurationError].

    The ASGI lifespan calls ``start()`` and ``close()``. The gateway closes what
    it made (its connection pool, and the registry, limiter and cache it made
    itself), never what it was given; after ``close()`` it answers every request
    with 503 [`Closed`][rtkit.errors.Closed].

    Args:
        registry: Where services are discovered (default: a private in-memory
            registry, empty until something registers in ``gateway.registry``).
        routes: Path prefix to service name or [`Route`][rtkit.gateway.Route]
            (``{"/api/users": "user-service"}``); the longest prefix wins. No
            routes: only ``/health`` and ``/services``.
        limiter: The rate limiter (default: a private in-memory one; pass a Redis
            one to share limits between gateway processes).
        cache: The response cache; ``None`` disables caching.
        rate_limit: One or more limits per client (``"100/minute"`` or
            [`Limit`][rtkit.ratelimit.Limit] objects, all counted at once); ``None``
            disables rate limiting.
        client_key: Maps a request to its rate-limit key (default: the peer IP;
            behind a trusted proxy, read ``X-Forwarded-For`` yourself).
        credential_headers: More request headers that carry credentials
            (``X-Api-Key``...), treated like ``Authorization`` and ``Cookie`` by the
            cache.
        cache_ttl: Seconds to cache a response that gives no ``max-age``.
        upstream_timeout: Seconds for a whole upstream exchange (504 beyond).
        max_body_size: Larger request bodies: 413.
        max_response_size: Larger upstream responses: 502.
        max_connections: Size of the upstream connection pool.
        retries: Other instances tried when one refuses the connection (the
            request was not sent, so this is safe for every method).
        discovery_ttl: Seconds the gateway reuses a service's instance list before
            asking the registry again (0: ask for every request). A refused
            connection always asks again, so a vanished instance costs at most
            one retry.
        clock: Where the age of cached responses is read from, and the time of
            the registry and limiter the gateway makes itself (tests inject a
            [`ManualClock`][rtkit.ManualClock]; give the cache the same one).
        metrics: Count rtkit's metrics
            ([`enable_metrics`][rtkit.telemetry.enable_metrics]) and serve them at
            ``GET /metrics`` (to every client that reaches the gateway: restrict
            the path in front of it). Needs the ``otel`` extra.

    Raises:
        rtkit.errors.ConfigurationError: A bad route, limit or setting.
    """

    # Its parts open their own backends on the URL (see from_url).
    _backends: ClassVar[Mapping[str, str]] = dict.fromkeys(("memory", "redis"), "")

    def __init__(
        self,
        registry: ServiceRegistry | None = None,
        *,
        routes: Mapping[str, str | Route] | None = None,
        limiter: RateLimiter | None = None,
        cache: ResponseCache | None = None,
        rate_limit: Limits | None = "100/minute",
        client_key: Callable[[Request], str] = client_ip,
        credential_headers: Iterable[str] = (),
        cache_ttl: float = 60.0,
        upstream_timeout: float = 10.0,
        max_body_size: int = 10 * 1024 * 1024,
        max_response_size: int = 50 * 1024 * 1024,
        max_connections: int = 100,
        retries: int = 1,
        discovery_ttl: float = 1.0,
        clock: Clock | None = None,
        metrics: bool = False,
    ) -> None:
        self._clock: Clock = clock or SystemClock()
        self.routes = check_routes(routes or {})
        self.rate_limits = _limits(rate_limit)
        self._owned: list[Any] = []
        self.registry = registry if registry is not None else self._own(_private_registry(clock))
        if limiter is None and self.rate_limits:
            limiter = self._own(RateLimiter(clock=clock))
        self.limiter = limiter
        self.cache = cache
        self.client_key = client_key
        self.credential_headers = CREDENTIAL_HEADERS | header_names(
            credential_headers, "credential_headers"
        )
        self.cache_ttl = cache_ttl
        self._upstream_options: dict[str, Any] = {
            "timeout": check_seconds(upstream_timeout, "upstream_timeout"),
            "max_response_size": max_response_size,
            "max_connections": max_connections,
            "retries": check_int(retries, "retries", minimum=0),
            "discovery_ttl": discovery_ttl,
        }
        self._upstream: Upstream | None = None
        self.app = Starlette(
            routes=[
                StarletteRoute("/health", self._health, methods=["GET"]),
                StarletteRoute("/services", self._services, methods=["GET"]),
                *metrics_routes(metrics),
                StarletteRoute("/{path:path}", AnyMethod(self._proxy)),
            ],
            exception_handlers=exception_handlers(),
            middleware=[
                Middleware(HttpTelemetry, app_name="gateway"),  # spans, access log, metrics
                Middleware(BodyLimitMiddleware, max_body_size=max_body_size),
            ],
            lifespan=lifespan(self),
        )

    def _own(self, part: Any) -> Any:
        self._owned.append(part)
        return part

    @classmethod
    def _from_target(cls, target: BackendTarget, options: Mapping[str, Any]) -> Self:
        options = dict(options)
        cache = options.pop("cache", None)
        if not (cache is None or isinstance(cache, bool | ResponseCache)):
            raise ConfigurationError(f"cache must be True, False or a ResponseCache, got {cache!r}")
        parts: dict[str, type[Any]] = {"registry": ServiceRegistry}
        if "rate_limit" not in options or options["rate_limit"] is not None:
            parts["limiter"] = RateLimiter
        if cache is True:
            parts["cache"] = ResponseCache
        own = constructor_options(cls) - {"registry", "limiter"}  # cache: popped
        mine, part_options = split_among_parts(cls.__name__, options, own, parts)
        opened = {name: open_part(parts[name], target, part_options[name]) for name in parts}
        if cache is not True:
            opened["cache"] = cache or None  # yours (or none): never closed by the gateway
        gateway = cls(**opened, clock=target.clock, **mine)
        gateway._owned.extend(opened[name] for name in parts)
        return gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI entry point."""
        await self.app(scope, receive, send)

    async def _start(self) -> None:
        if self._upstream is None:  # a start that failed half way may be tried again
            self._upstream = Upstream(self.registry, **self._upstream_options)
        for part in self._owned:
            await part.start()

    async def _close(self) -> None:
        if self._upstream is not None:
            await self._upstream.close()
        for part in reversed(self._owned):
            await part.close()

    # -- endpoints ------------------------------------------------------------------------

    async def _health(self, request: Request) -> Response:
        self._check_open()
        return JSONResponse({"status": "ok", "timestamp": datetime.now(UTC).isoformat()})

    async def _services(self, request: Request) -> Response:
        self._check_open()
        return JSONResponse({"services": await self.registry.services()})

    async def _proxy(self, request: Request) -> Response:
        if not self._live:
            await self._ready()
        try:
            path, query = _checked_target(request.scope)
        except MalformedRequest as exc:
            log.warning("refused %s request: %s", request.method, exc)
            return error_response(exc)
        matched = match_route(self.routes, path)
        request.scope["rtkit.route"] = next(  # the route prefix: the metrics' label
            (p for p, r in self.routes if matched and r is matched[0]), "none"
        )
        if matched is None:
            raise NotFound(f"no route for {path}")
        route, upstream_path = matched
        url = f"{path}?{query}" if query else path  # the cache's name for it

        limit_headers, denied = await self._rate_limit(request)
        if denied is not None:
            return denied
        sent = forward_headers(request)
        may_store, may_answer = self._cache_policy(request, route)
        if may_answer:
            hit = await self._lookup(request, url, sent)
            if hit is not None:
                return self._replay(hit, limit_headers)

        assert self._upstream is not None
        target = f"{upstream_path}?{query}" if query else upstream_path
        try:
            status, headers, body = await self._upstream.send(request, route, target, sent)
        except RtkitError as exc:  # ServiceNotFound 503, RemoteError 502, UpstreamTimeout 504
            return error_response(exc, headers=limit_headers)
        # HEAD: no body here, the upstream's Content-Length tells the size
        dropped = NOT_RETURNED - {"content-length"} if request.method == "HEAD" else NOT_RETURNED
        headers = strip_hop_by_hop(headers, dropped)
        if 200 <= status < 400 and unsafe(request.method, request.headers):
            await self._invalidate(request, path, url, headers)
        if may_store:
            headers = [(k, v) for k, v in headers if k.lower() != "x-cache"]
            headers.append(("x-cache", "MISS"))
            await self._maybe_store(request, route, url, sent, status, headers, body)
        return self._respond(request.method, status, headers, body, limit_headers)

    async def _rate_limit(self, request: Request) -> tuple[dict[str, str], Response | None]:
        """The ``RateLimit-*`` headers, and the 429 to answer when over the limit."""
        if self.limiter is None or not self.rate_limits:
            return {}, None
        decision = await self.limiter.hit(self.client_key(request), *self.rate_limits)
        headers = decision.headers()
        if decision.allowed:
            return headers, None
        denied = RateLimited("too many requests", retry_after=decision.retry_after)
        return headers, error_response(denied, headers=headers)

    def _cache_policy(self, request: Request, route: Route) -> tuple[bool, bool]:
        if self.cache is None:
            return False, False
        return request_policy(
            request.method, request.headers, keyed=route.vary, credentials=self.credential_headers
        )

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

    def _age(self, hit: CachedResponse) -> float:
        return self._clock.time() - hit.stored_at

    def _replay(self, hit: CachedResponse, limit_headers: Mapping[str, str]) -> Response:
        age = max(0, int(self._age(hit)))
        headers = [(k, v) for k, v in hit.headers if k.lower() not in ("x-cache", "age")]
        headers += [("x-cache", "HIT"), ("age", str(age))]
        return self._respond("GET", hit.status, headers, hit.body, limit_headers)

    async def _lookup(self, request: Request, url: str, sent: Headers) -> CachedResponse | None:
        """A stored response fresh enough for ``request``, keyed on every credential it
        carries (``_cache_policy`` let it through only if its route keys on them)."""
        assert self.cache is not None
        keyed = [name for name in self.credential_headers if name in request.headers]
        hit = await self.cache.lookup("GET", url, sent, keyed=keyed)
        if hit is None or not fresh_enough(request.headers, self._age(hit)):
            return None
        return hit

    async def _maybe_store(
        self,
        request: Request,
        route: Route,
        url: str,
        sent: Headers,
        status: int,
        headers: Headers,
        body: bytes,
    ) -> None:
        assert self.cache is not None
        rules = storable(status, request.headers, headers)
        if rules is None:
            return
        vary, ttl = rules
        stored = CachedResponse(
            status=status,
            headers=[(k, v) for k, v in headers if k.lower() != "x-cache"],
            body=body,
            stored_at=self._clock.time(),
        )
        keyed = sorted({*vary, *route.vary, *_ALWAYS_KEYED})
        await self.cache.store(
            "GET", url, sent, stored, keyed, self.cache_ttl if ttl is None else ttl
        )

    async def _invalidate(self, request: Request, path: str, url: str, headers: Headers) -> None:
        """RFC 9111 4.4: the target URL and the same-origin URLs the response names."""
        if self.cache is None:
            return
        origin = (request.url.scheme, request.headers.get("host", "").lower())
        urls = {url}
        for name, value in headers:
            if name.lower() in ("location", "content-location"):
                named = same_origin_target(value, path, origin)
                if named is not None:
                    urls.add(named)
        for each in sorted(urls):
            await self.cache.invalidate(each)


def _checked_target(scope: Scope) -> tuple[str, str]:
    """The request's normalised path and its query as forwarded.

    Raises:
        rtkit.errors.MalformedRequest: A header that is not printable ASCII, or a
            path that cannot be normalised safely.
    """
    check_header_bytes(scope["headers"])
    return normalize_path(_raw_path(scope)), encode_query(scope.get("query_string", b""))


def _raw_path(scope: Scope) -> bytes:
    """The request path as the client sent it (still percent-encoded)."""
    raw = scope.get("raw_path")
    if raw is None:  # a server without raw_path: re-encode the decoded path
        return quote(scope["path"], safe="/!$&'()*+,;=:@~").encode("ascii")
    return bytes(raw).partition(b"?")[0]


def _private_registry(clock: Clock | None) -> ServiceRegistry:
    return ServiceRegistry.from_url("memory://", clock=clock)
