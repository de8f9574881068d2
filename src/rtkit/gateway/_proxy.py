"""Proxying: routes, which headers go where, and one upstream exchange with retries."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import httpx
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from .._core.validate import check_host, check_name
from ..errors import (
    ConfigurationError,
    MalformedRequest,
    RemoteError,
    UpstreamTimeout,
    ValidationError,
)
from ..registry import ServiceInstance, ServiceRegistry, Strategy
from ..telemetry._http import upstream_hooks
from ._paths import has_dot_segments, normalize_path, within

__all__ = [
    "CLIENT_FORWARDING",
    "HOP_BY_HOP",
    "NOT_RETURNED",
    "AnyMethod",
    "Route",
    "Upstream",
    "check_header_bytes",
    "check_routes",
    "client_ip",
    "forward_headers",
    "header_names",
    "match_route",
    "strip_hop_by_hop",
]

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

CLIENT_FORWARDING = frozenset(
    {
        "forwarded",
        "x-real-ip",
        "x-client-ip",
        "true-client-ip",
        "x-cluster-client-ip",
        "x-original-url",
        "x-original-uri",
        "x-rewrite-url",
        "x-original-host",
        "x-host",
        "x-envoy-original-path",
    }
)
"""What clients say about forwarding or rewriting (besides ``X-Forwarded-*``): never
forwarded as sent. The gateway sets ``X-Forwarded-*`` and ``X-Real-IP`` itself; an
upstream that read ``Forwarded`` or ``X-Original-URL`` from the client would trust
whatever the client wrote."""

_NOT_FORWARDED = HOP_BY_HOP | CLIENT_FORWARDING | {"host", "content-length"}
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_NOT_PRINTABLE = re.compile(rb"[^\t\x20-\x7e]")
# The front server (uvicorn) adds its own Date and Server headers.
NOT_RETURNED = HOP_BY_HOP | {"content-length", "date", "server"}

Headers = list[tuple[str, str]]
Exchange = tuple[int, Headers, bytes]


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
            [`ServiceRegistry.get_service`][rtkit.registry.ServiceRegistry.get_service]).
        vary: Request header names added to the cache key of this route's responses,
            as if every response said ``Vary`` on them. A request carrying credentials
            (``Authorization``, ``Cookie``, ``Proxy-Authorization`` or the gateway's
            ``credential_headers``) uses the cache only when every credential header
            it carries is named here: ``Route("profile", vary=("Cookie",))`` caches
            each session's responses under that session's cookie. Default: none, so
            requests with credentials always go to the service.
    """

    service: str
    path: str | None = None
    strategy: Strategy = "random"
    vary: tuple[str, ...] = ()


def client_ip(request: Request) -> str:
    """The default rate-limit key: the peer address of the connection."""
    return request.client.host if request.client else "unknown"


def header_names(names: Iterable[str], what: str) -> frozenset[str]:
    """Header names, lower case; ``ConfigurationError`` for one that is no HTTP token."""
    if isinstance(names, str):
        raise ConfigurationError(f"{what} must be a sequence of header names, not a string")
    checked = set()
    for name in names:
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise ConfigurationError(f"{what}: {name!r:.80} is not a header name")
        checked.add(name.lower())
    return frozenset(checked)


def check_header_bytes(raw: Iterable[tuple[bytes, bytes]]) -> None:
    """Refuse a request whose header names or values are not printable ASCII.

    Raises:
        rtkit.errors.MalformedRequest: Naming the first such header.
    """
    for name, value in raw:
        if _NOT_PRINTABLE.search(name) or _NOT_PRINTABLE.search(value):
            shown = name.decode("ascii", "replace")[:80]
            raise MalformedRequest(f"header {shown!r} is not printable ASCII")


def _connection_listed(headers: Sequence[tuple[str, str]]) -> set[str]:
    named: set[str] = set()
    for name, value in headers:
        if name.lower() == "connection":
            named.update(v.strip().lower() for v in value.split(",") if v.strip())
    return named


def strip_hop_by_hop(
    headers: Sequence[tuple[str, str]], extra: frozenset[str] = HOP_BY_HOP
) -> Headers:
    """``headers`` without hop-by-hop ones: the standard list, ``extra`` and those
    named in ``Connection``."""
    drop = extra | _connection_listed(headers)
    return [(k, v) for k, v in headers if k.lower() not in drop]


def forward_headers(request: Request) -> Headers:
    """The request's headers as sent upstream.

    Hop-by-hop headers and what the client says about forwarding (``X-Forwarded-*``
    and ``CLIENT_FORWARDING``) are dropped; the gateway sets ``X-Forwarded-For``
    (the client's list with the peer address appended), ``X-Forwarded-Proto``,
    ``X-Forwarded-Host`` (the request's ``Host``) and ``X-Real-IP`` (the peer).
    """
    headers = strip_hop_by_hop(request.headers.items(), _NOT_FORWARDED)
    headers = [(k, v) for k, v in headers if not k.lower().startswith("x-forwarded-")]
    peer = client_ip(request)
    forwarded_for = [v for k, v in request.headers.items() if k == "x-forwarded-for"]
    forwarded_for.append(peer)
    headers.append(("x-forwarded-for", ", ".join(forwarded_for)))
    headers.append(("x-forwarded-proto", request.url.scheme))
    if "host" in request.headers:
        headers.append(("x-forwarded-host", ", ".join(request.headers.getlist("host"))))
    headers.append(("x-real-ip", peer))
    return headers


def _canonical(path: str, what: str) -> str:
    """A configured prefix or path in the normal form requests are matched in."""
    try:
        if has_dot_segments(path.encode("utf-8")):
            raise ConfigurationError(f"{what} {path!r} must not hold . or .. segments")
        return normalize_path(path.encode("utf-8"))
    except MalformedRequest as exc:
        raise ConfigurationError(f"{what} {path!r}: {exc}") from None


def check_routes(routes: Mapping[str, str | Route]) -> list[tuple[str, Route]]:
    """The routes as ``(prefix, Route)``, longest prefix first, in normal form
    (``/caf%C3%A9`` for ``/café``; ``vary`` names in lower case).

    Raises:
        rtkit.errors.ConfigurationError: A prefix or path not starting with ``/``
            (or a prefix ending with one), holding dot-segments or an encoded ``/``,
            a bad service name or ``vary`` header name.
    """
    checked = []
    for prefix, target in routes.items():
        route = Route(target) if isinstance(target, str) else target
        if not prefix.startswith("/") or (prefix != "/" and prefix.endswith("/")):
            raise ConfigurationError(f"route prefix {prefix!r} must start and not end with /")
        if route.path is not None and not route.path.startswith("/"):
            raise ConfigurationError(f"route path {route.path!r} must start with /")
        check_name(route.service, "service name", error=ConfigurationError)
        path = None if route.path is None else _canonical(route.path, "route path")
        vary = tuple(sorted(header_names(route.vary, "Route.vary")))
        route = dataclasses.replace(route, path=path, vary=vary)
        checked.append((_canonical(prefix, "route prefix").rstrip("/"), route))
    return sorted(checked, key=lambda item: -len(item[0]))


def match_route(routes: list[tuple[str, Route]], path: str) -> tuple[Route, str] | None:
    """The route for ``path`` (normalised; whole segments) and the upstream path, if any.

    The upstream path is always the route's ``path`` (or prefix) or under it.
    """
    for prefix, route in routes:
        if within(path, prefix):
            if route.path is None:
                return route, path
            upstream = (route.path.rstrip("/") + path[len(prefix) :]) or "/"
            if not within(upstream, route.path):  # cannot happen on a normalised path
                raise MalformedRequest("the path leaves its route")
            return route, upstream
    return None


class AnyMethod:
    """An ASGI endpoint (Starlette routes restrict plain functions to GET/HEAD)."""

    def __init__(self, handler: Callable[[Request], Awaitable[Response]]) -> None:
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI entry point."""
        response = await self.handler(Request(scope, receive))
        await response(scope, receive, send)


def _instance_url(instance: ServiceInstance, target: str) -> httpx.URL:
    """The URL of ``target`` on ``instance``, built from parts, never parsed from text.

    A registry refuses hosts that are not a hostname or an IP literal; a record
    written some other way is checked again here, so an instance's address can never
    bring userinfo (and with it an ``Authorization`` of its own) or another path.
    """
    check_host(instance.host)
    return httpx.URL(
        scheme="http", host=instance.host, port=instance.port, raw_path=target.encode()
    )


class _TooLarge(Exception):
    """An upstream response exceeded ``max_response_size``."""


class Upstream:
    """Sends requests to service instances over one pooled ``httpx.AsyncClient``.

    An instance refusing the connection is retried on another (``retries``);
    instance lists are reused for ``discovery_ttl`` seconds.
    """

    def __init__(
        self,
        registry: ServiceRegistry,
        *,
        timeout: float,
        max_response_size: int,
        max_connections: int,
        retries: int,
        discovery_ttl: float,
    ) -> None:
        self.registry = registry
        self.timeout = timeout
        self.max_response_size = max_response_size
        self.retries = retries
        self.discovery_ttl = discovery_ttl
        self._discovered: dict[str, tuple[float, list[ServiceInstance]]] = {}
        self.hooks = upstream_hooks()  # spans and metrics per exchange when telemetry is on
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

    async def close(self) -> None:
        """Close the connection pool."""
        await self.client.aclose()

    async def send(self, request: Request, route: Route, target: str, headers: Headers) -> Exchange:
        """Send ``request`` to an instance of ``route.service`` at ``target``.

        Args:
            request: The client's request (its method and body are sent).
            route: Where to.
            target: The upstream path and query, normalised and percent-encoded.
            headers: The headers to send (``forward_headers``).

        Raises:
            rtkit.errors.ServiceNotFound: No instance is live (503).
            rtkit.errors.RemoteError: No live instance answered, or the answer is
                too large (502).
            UpstreamTimeout: The exchange took longer than ``timeout`` (504).
        """
        body = await request.body()
        tried: set[str] = set()
        for _ in range(self.retries + 1):
            instance = await self._pick(route, tried)
            if instance is None:
                break
            tried.add(instance.instance_id)
            try:
                url = _instance_url(instance, target)
            except (ValidationError, httpx.InvalidURL) as exc:
                log.warning("instance %s has an unusable address: %s", instance.instance_id, exc)
                continue
            upstream = self.client.build_request(request.method, url, headers=headers, content=body)
            try:
                with self.registry.track(instance):
                    if self.hooks is not None:
                        return await self.hooks.exchange(route.service, upstream, self._in_time)
                    return await self._in_time(upstream)
            except (TimeoutError, httpx.TimeoutException) as exc:
                if isinstance(exc, httpx.ConnectTimeout):
                    continue
                log.warning("%s %s timed out", request.method, instance.url)
                raise UpstreamTimeout(f"{route.service} did not answer in time") from None
            except (httpx.ConnectError, httpx.RemoteProtocolError) as exc:
                log.warning("%s %s: %s", request.method, instance.url, exc)
            except _TooLarge:
                raise RemoteError(f"the response of {route.service} is too large") from None
            except httpx.HTTPError as exc:
                log.warning("%s %s failed: %s", request.method, instance.url, exc)
                break
        raise RemoteError(f"no instance of {route.service} answered")

    async def _pick(self, route: Route, tried: set[str]) -> ServiceInstance | None:
        """An instance not tried yet; ``None`` when every live one was.

        Raises:
            rtkit.errors.ServiceNotFound: No instance is live.
        """
        now = time.monotonic()
        cached = self._discovered.get(route.service)
        if cached is None or cached[0] <= now or tried:
            instances = await self.registry.discover(route.service)
            if self.discovery_ttl > 0:
                self._discovered[route.service] = (now + self.discovery_ttl, instances)
        else:
            instances = cached[1]
        candidates = [i for i in instances if i.instance_id not in tried]
        if instances and not candidates:
            return None
        return self.registry.pick(route.service, candidates, route.strategy)

    async def _in_time(self, upstream: httpx.Request) -> Exchange:
        async with asyncio.timeout(self.timeout):
            return await self._exchange(upstream)

    async def _exchange(self, upstream: httpx.Request) -> Exchange:
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
