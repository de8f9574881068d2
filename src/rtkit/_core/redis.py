"""Redis for every backend: one client (owned or borrowed), key names, Lua, errors."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.resources
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
import redis.exceptions as redis_errors
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from ..errors import BackendUnavailable, ConfigurationError
from .lifecycle import DEFAULT_TIMEOUT
from .urls import BackendTarget, redis_hosts, resolve_target
from .validate import check_int, check_seconds

__all__ = [
    "DEFAULT_MAX_CONNECTIONS",
    "Keyspace",
    "RedisHandle",
    "WaitingPool",
    "database_of",
    "is_cluster",
    "load_lua",
    "make_redis_client",
    "publish_command",
    "redis_unavailable",
    "refresh_topology",
    "run_scripts",
]


@dataclass(frozen=True)
class Keyspace:
    """Names Redis keys and channels under a prefix: the one place that names keys.

    The rule (every component): each entity (a service, a limited key, a dedup
    id, a cache entry, a room, a user, an upload) has its own Redis Cluster hash
    tag, and the tag holds the prefix, so entities spread over a cluster's slots
    and two deployments with different prefixes never share a slot through the tag:

        {<prefix><component>:<entity>}:<part>...   entity_key("42", "tokens")
        {<prefix><component>}:<part>...            shared_key("names")

    Every such key starts with ``{<prefix>`` (:attr:`pattern` matches them all).
    What one entity's Lua script touches lives under that entity's tag, so each
    script stays on one slot; what spans entities lives under the component's
    shared tag and is read with one round trip per node. Presence and rooms use a
    fixed set of entities, their 32 buckets (see ``rtkit._core.leases.spread_tags``).
    """

    prefix: str
    component: str

    def tag(self, entity: str | None = None) -> str:
        """The hash tag of ``entity``, or the component's shared tag (``None``)."""
        if entity is None:
            return "{" + self.prefix + self.component + "}"
        return "{" + self.prefix + self.component + ":" + entity + "}"

    def entity_key(self, entity: str, *parts: str) -> str:
        """``{<prefix><component>:<entity>}:part1:part2...`` (the tag alone without parts)."""
        return ":".join((self.tag(entity), *parts))

    def shared_key(self, *parts: str) -> str:
        """``{<prefix><component>}:part1:part2...``: a key that spans entities (one slot)."""
        return ":".join((self.tag(), *parts))

    @property
    def pattern(self) -> str:
        """A ``SCAN MATCH`` pattern for every entity and shared key of this component."""
        return self.tag()[:-1] + "*"

    # -- the old single-slot layout (what scripts/migrate_keys.py moves from) --

    @property
    def base(self) -> str:
        """The common start of the single-slot layout's keys: ``<prefix>{<component>}``."""
        return self.prefix + "{" + self.component + "}"

    def key(self, *parts: str) -> str:
        """The single-slot layout's key ``<prefix>{<component>}:part1:part2...``."""
        return ":".join((self.base, *parts))

    def channel(self, *parts: str) -> str:
        """A classic pub/sub channel name (channels need no hash tag)."""
        return self.prefix + ":".join((self.component, *parts))


def load_lua(package: str, name: str) -> str:
    """Read the Lua script ``resources/<name>`` shipped inside ``package``."""
    return (importlib.resources.files(package) / "resources" / name).read_text("utf-8")


@contextlib.contextmanager
def redis_unavailable(doing: str) -> Iterator[None]:
    """Turn Redis connection failures and time-outs into ``BackendUnavailable``."""
    try:
        yield
    except (
        redis_errors.ConnectionError,
        redis_errors.TimeoutError,
        ConnectionError,
        TimeoutError,
    ) as exc:
        raise BackendUnavailable(f"Redis is unavailable while {doing}: {exc}") from exc


DEFAULT_MAX_CONNECTIONS = 100
"""Connections a client made by rtkit opens to Redis at most; more callers wait for one."""


class WaitingPool(aioredis.BlockingConnectionPool):
    """A connection pool that makes a burst wait for a free connection instead of failing.

    At most ``max_connections`` are open; a caller finding them all busy waits up
    to ``timeout`` seconds for one (a burst of commands, a reconnect storm after
    a Redis restart), and only then fails with a ``ConnectionError`` that says so.
    """

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]
        except redis_errors.ConnectionError as exc:
            if not isinstance(exc.__cause__, asyncio.TimeoutError):
                raise
            raise redis_errors.ConnectionError(
                f"no Redis connection became free within {self.timeout:g} s "
                f"(all {self.max_connections} of this client's connections were busy)"
            ) from exc


def database_of(client: Any) -> int:
    """The database number ``client`` talks to (0 when it has none, as on a cluster).

    Redis pub/sub ignores the database number, so channels name it: deployments on
    different databases of one Redis must never hear each other.
    """
    pool = getattr(client, "connection_pool", None)
    return int(getattr(pool, "connection_kwargs", {}).get("db", 0) or 0)


def is_cluster(client: Any) -> bool:
    """Whether ``client`` is a ``RedisCluster`` (it routes each key to the node of its slot)."""
    return hasattr(client, "nodes_manager") and not hasattr(client, "connection_pool")


def publish_command(client: Any) -> str:
    """``SPUBLISH`` on a cluster (a shard channel lives on one node, like a key), else
    ``PUBLISH`` (a classic channel: one Redis, or the Sentinel-followed master)."""
    return "SPUBLISH" if is_cluster(client) else "PUBLISH"


async def refresh_topology(client: Any) -> None:
    """Re-read a cluster's slot map (after a failover or a resharding); else nothing.

    Best effort: a cluster that cannot answer yet is asked again by the next caller.
    """
    if is_cluster(client):
        with contextlib.suppress(Exception):
            await client.nodes_manager.initialize()


async def run_scripts(
    client: Any, script: Any, calls: list[tuple[list[str], list[Any]]]
) -> list[Any]:
    """Run a registered ``script`` once per ``(keys, args)``, pipelined: one round trip
    on one Redis, one per node (in parallel) on a cluster. Each call's keys share a slot.

    An error reply comes back in the list, in its call's place; a script Redis lost
    (a restart, a failover to a replica that never ran it) is loaded and run again.
    """
    results: list[Any] = []
    for attempt in range(2):
        async with client.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
            results = await pipe.execute(raise_on_error=False)
        if attempt or not any(isinstance(r, redis_errors.NoScriptError) for r in results):
            break
        await client.script_load(script.script)  # on a cluster: on every master
    return results


def make_redis_client(
    url: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    **kwargs: Any,
) -> aioredis.Redis:
    """A ``redis.asyncio.Redis`` for rtkit: decoded responses, bounded time-outs.

    ``timeout`` bounds connecting, each round trip and the wait for a free
    connection: at most ``max_connections`` are open at once, and a burst of
    commands queues for them instead of failing. A command whose pooled
    connection turns out dead (Redis restarted) is sent once more on a new
    connection; a time-out is never retried. Pass the client as ``redis=``
    to several components to share one connection pool; rtkit never closes a
    client it was given.

    Raises:
        rtkit.errors.ConfigurationError: A bad URL, ``timeout`` or ``max_connections``.
    """
    resolve_target("Redis", url, kinds=("redis",))
    timeout = check_seconds(timeout, "timeout")
    max_connections = check_int(max_connections, "max_connections")
    options: dict[str, Any] = {
        "decode_responses": True,
        "socket_timeout": kwargs.pop("socket_timeout", timeout),
        "socket_connect_timeout": kwargs.pop("socket_connect_timeout", timeout),
        **kwargs,
    }
    scheme = urlsplit(url).scheme.lower()
    if scheme.endswith("+cluster"):
        # a RedisCluster: not a Redis subclass, but it takes the commands rtkit sends
        return cast("aioredis.Redis", _cluster_client(url, max_connections, options))
    if scheme.endswith("+sentinel"):
        return _sentinel_client(url, timeout, max_connections, options)
    pool = WaitingPool.from_url(
        url,
        health_check_interval=options.pop("health_check_interval", 30),
        max_connections=max_connections,
        timeout=timeout,
        retry=options.pop("retry", Retry(NoBackoff(), 1, (redis_errors.ConnectionError,))),
        **options,
    )
    client: aioredis.Redis = aioredis.Redis.from_pool(pool)
    return client


def _credentials(url: str) -> dict[str, Any]:
    parts = urlsplit(url)
    found: dict[str, Any] = {"ssl": parts.scheme.lower().startswith("rediss")}
    if parts.username:
        found["username"] = unquote(parts.username)
    if parts.password:
        found["password"] = unquote(parts.password)
    return found


def _cluster_client(url: str, max_connections: int, options: dict[str, Any]) -> Any:
    """A :class:`WaitingCluster` seeded with every node the URL lists."""
    from redis.asyncio.cluster import ClusterNode

    nodes = [ClusterNode(host, port) for host, port in redis_hosts(urlsplit(url), url)]
    return _waiting_cluster_class()(
        startup_nodes=nodes, max_connections=max_connections, **_credentials(url), **options
    )


@functools.cache
def _waiting_cluster_class() -> type:
    """``WaitingCluster``, made on first use (``redis.asyncio.cluster`` loads lazily)."""
    from redis.asyncio.cluster import RedisCluster

    class WaitingCluster(RedisCluster):
        """A ``RedisCluster`` whose commands wait for a free connection to their node.

        redis-py's cluster nodes refuse a command past ``max_connections`` busy
        connections (``MaxConnectionsError``); like :class:`WaitingPool`, a burst
        here waits up to the socket timeout for one of the node's connections.
        """

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._rtkit_wait = float(kwargs.get("socket_timeout") or DEFAULT_TIMEOUT)
            self._rtkit_limit = int(kwargs.get("max_connections") or DEFAULT_MAX_CONNECTIONS)
            self._rtkit_gates: dict[str, asyncio.Semaphore] = {}

        async def _execute_command(self, target_node: Any, *args: Any, **kwargs: Any) -> Any:
            gate = self._rtkit_gates.get(target_node.name)
            if gate is None:
                gate = self._rtkit_gates[target_node.name] = asyncio.Semaphore(self._rtkit_limit)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self._rtkit_wait
            try:
                async with asyncio.timeout_at(deadline):
                    await gate.acquire()
            except TimeoutError:
                raise self._rtkit_busy(target_node) from None
            try:
                while True:
                    try:
                        return await super()._execute_command(target_node, *args, **kwargs)
                    except redis_errors.MaxConnectionsError:
                        # refused before sending (connections held outside the gate:
                        # pipelines, the slot map's reads): wait a little, try again
                        if loop.time() >= deadline:
                            raise self._rtkit_busy(target_node) from None
                        await asyncio.sleep(0.002)
            finally:
                gate.release()

        async def _execute_pipeline_by_slot(  # type: ignore[override]
            self, command: str, slots_to_args: Any
        ) -> list[Any]:
            """A multi-key command (``DEL``, ``MGET``...): one gated command per slot, at
            once, rather than redis-py's pipeline (which would bypass the wait)."""
            return list(
                await asyncio.gather(
                    *(self.execute_command(command, *args) for args in slots_to_args.values())
                )
            )

        def _rtkit_busy(self, node: Any) -> redis_errors.ConnectionError:
            return redis_errors.ConnectionError(
                f"no Redis connection to {node.name} became free within "
                f"{self._rtkit_wait:g} s (all {self._rtkit_limit} were busy)"
            )

    return WaitingCluster


def _sentinel_client(
    url: str, timeout: float, max_connections: int, options: dict[str, Any]
) -> aioredis.Redis:
    """The master the URL's sentinels name, followed through failovers."""
    from redis.asyncio.sentinel import Sentinel

    parts = urlsplit(url)
    service, _, db = parts.path.strip("/").partition("/")
    credentials = _credentials(url)
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        redis_hosts(parts, url),
        sentinel_kwargs={"socket_timeout": timeout, "socket_connect_timeout": timeout},
        **credentials,
        **options,
    )
    client: aioredis.Redis = sentinel.master_for(
        service, db=int(db or 0), max_connections=max_connections
    )
    return client


def _decodes(client: Any) -> bool:
    pool = getattr(client, "connection_pool", None)
    kwargs: dict[str, Any] = getattr(pool, "connection_kwargs", {})
    if pool is None:  # a RedisCluster keeps its options with its nodes
        nodes = getattr(client, "nodes_manager", None)
        kwargs = getattr(nodes, "connection_kwargs", {})
    return bool(kwargs.get("decode_responses", False))


class RedisHandle:
    """A Redis client that a backend either owns or borrows.

    Borrowed (``client`` given): shared with others and never closed here.
    Owned (made from ``url``): closed by :meth:`close`. rtkit needs clients made
    with ``decode_responses=True``.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        client: aioredis.Redis | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if client is None:
            if url is None:
                raise ConfigurationError("give either a Redis URL or a Redis client")
            client = make_redis_client(url, timeout=timeout)
            self.owned = True
        else:
            if not _decodes(client):
                raise ConfigurationError(
                    "rtkit needs a Redis client made with decode_responses=True "
                    "(rtkit.redis_client(url) makes one)"
                )
            self.owned = False
        self.client: aioredis.Redis = client
        self.timeout = timeout

    @classmethod
    def open(cls, target: BackendTarget, *, timeout: float = DEFAULT_TIMEOUT) -> RedisHandle:
        """The client for a backend target: the borrowed one, or a new one from its URL.

        Raises:
            rtkit.errors.ConfigurationError: ``timeout`` is not a positive number of seconds.
        """
        return cls(target.url, client=target.redis, timeout=check_seconds(timeout, "timeout"))

    async def close(self) -> None:
        """Close the client if this handle owns it (a borrowed client stays open)."""
        if self.owned:
            await self.client.aclose()
