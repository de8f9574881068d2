"""One scheme registry for every component: which backend a URL names.

    memory://                  in-process, private to the object
    memory://NAME              in-process, shared by every object of the same
                               component opened with that name (and prefix)
    redis://host:6379/0        Redis (also rediss://, unix:///path?db=0)
    redis+cluster://h:p,h:p    a Redis Cluster (also rediss+cluster://)
    redis+sentinel://h:p,h:p/service[/db]
                               the master Sentinel names (also rediss+sentinel://)
    amqp://user:pass@host/     RabbitMQ (also amqps://)

A URL resolves to a :class:`BackendTarget`: the backend *kind* plus what a
backend needs to open itself (the prefix, a borrowed Redis client, the clock).
Each component lists the kinds it has; :func:`backend_opener` finds the backend
class, whose ``open(target, **options)`` opens it. New schemes register with
:func:`register_scheme`.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, urlsplit

from ..errors import ConfigurationError
from .clock import Clock
from .validate import check_name

__all__ = [
    "DEFAULT_PREFIX",
    "BackendTarget",
    "backend_opener",
    "check_prefix",
    "keywords",
    "redact",
    "redis_hosts",
    "register_scheme",
    "resolve_target",
]

DEFAULT_PREFIX = "rtkit:"
"""The default start of every Redis key and channel."""

MAX_PREFIX_LENGTH = 64

_SCHEMES: dict[str, str] = {
    "memory": "memory",
    "redis": "redis",
    "rediss": "redis",
    "unix": "redis",
    "redis+cluster": "redis",
    "rediss+cluster": "redis",
    "redis+sentinel": "redis",
    "rediss+sentinel": "redis",
    "amqp": "amqp",
    "amqps": "amqp",
}


def register_scheme(scheme: str, kind: str) -> None:
    """Let URLs of ``scheme`` open the backends of ``kind`` (for example ``"redis"``)."""
    _SCHEMES[scheme.lower()] = kind


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***``, safe to log and to raise."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def check_prefix(prefix: Any) -> str:
    """Validate a key prefix (``ConfigurationError``): 1-64 letters, digits and ``_.:-/``."""
    return check_name(prefix, "key prefix", max_length=MAX_PREFIX_LENGTH, error=ConfigurationError)


@dataclass(frozen=True)
class BackendTarget:
    """Where a backend opens: what a component hands a backend's ``open``.

    Attributes:
        component: The component's class name, for messages.
        kind: ``"memory"``, ``"redis"`` or ``"amqp"``.
        url: The URL as given (``repr`` shows it redacted).
        name: For ``memory://NAME``, the name; ``""`` for a private memory backend.
        prefix: The key prefix (Redis keys and channels, and memory sharing).
        redis: A Redis client to borrow instead of making one from ``url``.
        clock: The injected clock, or ``None`` for the backend's own time.
    """

    component: str
    kind: str
    url: str = field(repr=False)
    name: str = ""
    prefix: str = DEFAULT_PREFIX
    redis: Any = field(default=None, repr=False)
    clock: Clock | None = None

    def __repr__(self) -> str:
        return (
            f"BackendTarget({self.component}, {self.kind}, {redact(self.url)!r}, "
            f"name={self.name!r}, prefix={self.prefix!r})"
        )


def redis_hosts(parts: SplitResult, url: str) -> list[tuple[str, int]]:
    """The ``host:port`` pairs of a cluster or sentinel URL (``h1:p1,h2:p2``; port 6379
    or, for sentinels, 26379 when left out)."""
    default = 26379 if parts.scheme.lower().endswith("+sentinel") else 6379
    hosts = []
    for item in parts.netloc.rpartition("@")[2].split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep:
            host, port = item.strip(), ""
        host = host.strip("[]")
        if not host or (sep and not port.isdigit()) or not 0 < int(port or default) < 65536:
            raise ConfigurationError(f"malformed Redis URL {redact(url)!r}: bad host {item!r}")
        hosts.append((host, int(port or default)))
    return hosts


def _split(url: Any, component: str) -> SplitResult:
    if not isinstance(url, str) or not url:
        raise ConfigurationError(f"{component} needs a non-empty backend URL, got {url!r}")
    try:
        parts = urlsplit(url)
        if "+" not in parts.scheme:  # cluster and sentinel URLs list several hosts
            parts.port  # noqa: B018  (raises ValueError on a bad port)
    except ValueError as exc:
        raise ConfigurationError(f"{component}: malformed URL {redact(url)!r}: {exc}") from exc
    return parts


def _check_redis_url(parts: SplitResult, url: str) -> None:
    scheme = parts.scheme.lower()
    if scheme == "unix":
        if not parts.path:
            raise ConfigurationError(f"malformed Redis URL {redact(url)!r}: no socket path")
        return
    if "+" in scheme:
        redis_hosts(parts, url)
    if scheme.endswith("+cluster"):
        if parts.path.strip("/"):
            raise ConfigurationError(
                f"Redis Cluster URL {redact(url)!r} names a database: a cluster has only "
                "database 0 (give each deployment its own prefix instead)"
            )
        return
    if scheme.endswith("+sentinel"):
        service, _, db = parts.path.strip("/").partition("/")
        if not service:
            raise ConfigurationError(
                f"Sentinel URL {redact(url)!r} names no service: "
                "redis+sentinel://host:port[,host:port...]/service_name[/db]"
            )
        if db and not db.isdigit():
            raise ConfigurationError(
                f"malformed Redis URL {redact(url)!r}: database {db!r} is not a number"
            )
        return
    db = parts.path.strip("/")
    if db and not db.isdigit():
        raise ConfigurationError(
            f"malformed Redis URL {redact(url)!r}: database {db!r} is not a number"
        )


def resolve_target(
    component: str,
    url: str,
    *,
    kinds: Collection[str],
    prefix: str | None = None,
    redis: Any = None,
    clock: Clock | None = None,
) -> BackendTarget:
    """Check ``url`` for ``component`` (which has backends of ``kinds``); return the target.

    Raises:
        rtkit.errors.ConfigurationError: An unknown or unsupported scheme (the
            message names the component and the schemes it takes), a malformed
            URL (password redacted), a bad prefix, or a Redis client given with a
            URL that is not a Redis one.
    """
    parts = _split(url, component)
    kind = _SCHEMES.get(parts.scheme.lower())
    if kind is None or kind not in kinds:
        schemes = ", ".join(sorted(s + "://" for s, k in _SCHEMES.items() if k in kinds))
        raise ConfigurationError(
            f"{component} cannot use URL {redact(url)!r}: unknown scheme "
            f"{parts.scheme!r} (expected one of {schemes})"
        )
    if kind == "redis":
        _check_redis_url(parts, url)
    elif redis is not None:
        raise ConfigurationError(f"{component}: a Redis client was given with a {kind}:// URL")
    if kind == "amqp" and not parts.hostname:
        raise ConfigurationError(f"malformed AMQP URL {redact(url)!r}: no host")
    name = ""
    if kind == "memory":
        name = (parts.netloc + parts.path).strip("/")
    return BackendTarget(
        component=component,
        kind=kind,
        url=url,
        name=name,
        prefix=check_prefix(DEFAULT_PREFIX if prefix is None else prefix),
        redis=redis,
        clock=clock,
    )


@functools.cache
def _resolve(path: str) -> Callable[..., Any]:
    module, _, attr = path.partition(":")
    found: Callable[..., Any] = getattr(importlib.import_module(module), attr)
    return found


@functools.cache
def keywords(function: Callable[..., Any]) -> frozenset[str]:
    """The keyword-only arguments ``function`` takes (for splitting ``from_url`` options)."""
    params = inspect.signature(function).parameters.values()
    return frozenset(p.name for p in params if p.kind is p.KEYWORD_ONLY)


def backend_opener(backends: Mapping[str, str], kind: str) -> Callable[..., Any]:
    """The ``open(target, **options)`` of the backend class ``backends[kind]`` names.

    ``backends`` maps kinds to ``"module:Class"``: a component names its backends
    without importing them, so nothing is imported until a URL asks for it.
    """
    opener = _resolve(backends[kind])
    found: Callable[..., Any] = getattr(opener, "open", opener)
    return found
