"""TRANSITION SHIM (the old layout): deleted once every component has moved to rtkit._core.

Backend selection by URL, Redis connections, key prefixes and Lua scripts.

One URL picks a component's backend::

    memory://                      in-process, the executable specification
    redis://host:6379/0            Redis (also rediss:// and unix:///path?db=0)
    amqp://guest:guest@host:5672/  RabbitMQ (messaging only)

These helpers are shared by every component; they are private, the public
surface is each component's ``from_url``.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import SplitResult, urlsplit

import redis.asyncio as aioredis
import redis.exceptions as redis_errors

from .errors import BackendUnavailable, ConfigurationError

__all__ = [
    "DEFAULT_PREFIX",
    "BackendKind",
    "Keyspace",
    "RedisHandle",
    "backend_kind",
    "load_lua",
    "redis_unavailable",
]

BackendKind = Literal["memory", "redis", "amqp"]

DEFAULT_PREFIX = "rtkit:"

_SCHEMES: dict[str, BackendKind] = {
    "memory": "memory",
    "redis": "redis",
    "rediss": "redis",
    "unix": "redis",
    "amqp": "amqp",
    "amqps": "amqp",
}

_REDIS_ONLY: tuple[BackendKind, ...] = ("redis",)

_PREFIX_RE = re.compile(r"^[A-Za-z0-9_.:\-/]{1,64}$")


def _split(url: str) -> SplitResult:
    if not isinstance(url, str) or not url:
        raise ConfigurationError(f"a backend URL must be a non-empty string, got {url!r}")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError on a bad port)
    except ValueError as exc:
        raise ConfigurationError(f"malformed backend URL {url!r}: {exc}") from exc
    return parts


def backend_kind(
    url: str, *, component: str, allowed: Collection[BackendKind] = ("memory", "redis")
) -> BackendKind:
    """Return which backend ``url`` names, or raise :class:`ConfigurationError`.

    ``component`` names the caller in the error message; ``allowed`` lists the
    backend kinds that component has.
    """
    parts = _split(url)
    kind = _SCHEMES.get(parts.scheme.lower())
    if kind is None or kind not in allowed:
        schemes = sorted(s for s, k in _SCHEMES.items() if k in allowed)
        raise ConfigurationError(
            f"{component} cannot use URL {_redact(url)!r}: unknown scheme "
            f"{parts.scheme!r} (expected one of {', '.join(s + '://' for s in schemes)})"
        )
    if kind == "redis":
        # redis://  alone means localhost:6379, as in redis-py.
        if parts.scheme == "unix":
            if not parts.path:
                raise ConfigurationError(f"malformed Redis URL {_redact(url)!r}: no socket path")
            db = ""
        else:
            db = parts.path.strip("/")
        if db and not db.isdigit():
            raise ConfigurationError(
                f"malformed Redis URL {_redact(url)!r}: database {db!r} is not a number"
            )
    if kind == "amqp" and not parts.hostname:
        raise ConfigurationError(f"malformed AMQP URL {_redact(url)!r}: no host")
    return kind


def _redact(url: str) -> str:
    """``url`` with any password replaced, safe to log."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def check_prefix(prefix: str) -> str:
    """Validate a Redis key prefix and return it."""
    if not isinstance(prefix, str) or not _PREFIX_RE.match(prefix):
        raise ConfigurationError(
            f"invalid key prefix {prefix!r}: 1-64 characters of letters, digits and _.:-/"
        )
    return prefix


@dataclass(frozen=True)
class Keyspace:
    """Names Redis keys and channels under a prefix.

    Every key starts with the prefix. Keys that one Lua script touches together
    share a Redis Cluster hash tag, ``{<component>}``, so every script stays on
    one slot: ``rtkit:{presence}:user:42``.
    """

    prefix: str
    component: str

    @property
    def base(self) -> str:
        """The common start of all of this component's keys."""
        return self.prefix + "{" + self.component + "}"

    def key(self, *parts: str) -> str:
        """The key ``<prefix>{<component>}:part1:part2...``."""
        return ":".join((self.base, *parts))

    def channel(self, *parts: str) -> str:
        """A pub/sub channel name (channels need no hash tag)."""
        return self.prefix + ":".join((self.component, *parts))


def load_lua(package: str, name: str) -> str:
    """Read the Lua script ``resources/<name>`` shipped inside ``package``."""
    return (importlib.resources.files(package) / "resources" / name).read_text("utf-8")


@contextlib.contextmanager
def redis_unavailable(doing: str) -> Iterator[None]:
    """Turn Redis connection failures and time-outs into :class:`BackendUnavailable`."""
    try:
        yield
    except (
        redis_errors.ConnectionError,
        redis_errors.TimeoutError,
        ConnectionError,
        TimeoutError,
    ) as exc:
        raise BackendUnavailable(f"Redis is unavailable while {doing}: {exc}") from exc


class RedisHandle:
    """A Redis client that a component either owns or borrows.

    Pass ``client`` to share one connection pool between several components
    (rtkit never closes a borrowed client); otherwise a client is made from
    ``url`` and closed with the component. rtkit needs ``decode_responses=True``.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        client: aioredis.Redis | None = None,
        timeout: float = 5.0,
    ) -> None:
        if client is None:
            if url is None:
                raise ConfigurationError("give either a Redis URL or a Redis client")
            backend_kind(url, component="Redis", allowed=_REDIS_ONLY)
            client = make_redis_client(url, timeout=timeout)
            self.owned = True
        else:
            kwargs: dict[str, Any] = client.connection_pool.connection_kwargs
            if not kwargs.get("decode_responses", False):
                raise ConfigurationError(
                    "rtkit needs a Redis client made with decode_responses=True "
                    "(rtkit.redis_client(url) makes one)"
                )
            self.owned = False
        self.client: aioredis.Redis = client
        self.timeout = timeout

    async def close(self) -> None:
        """Close the client if this handle owns it."""
        if self.owned:
            await self.client.aclose()


def make_redis_client(url: str, *, timeout: float = 5.0, **kwargs: Any) -> aioredis.Redis:
    """A ``redis.asyncio.Redis`` for rtkit: decoded responses, bounded time-outs."""
    backend_kind(url, component="Redis", allowed=_REDIS_ONLY)
    client: aioredis.Redis = aioredis.Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=kwargs.pop("socket_timeout", timeout),
        socket_connect_timeout=kwargs.pop("socket_connect_timeout", timeout),
        health_check_interval=kwargs.pop("health_check_interval", 30),
        **kwargs,
    )
    return client
