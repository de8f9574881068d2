"""The Redis registry backend: instances shared by every process using one Redis and prefix.

Keys (see ``resources/registry.lua``): each service has its own hash tag,
``{<prefix>registry:<name>}:svc`` (a sorted set of instance ids scored by expiry)
and ``:meta`` (a hash of records), so services spread over a Redis Cluster and a
per-service operation is one script call on one slot: one round trip. The
service list is ``{<prefix>registry}:names``, a sorted set of names scored by the
latest expiry any instance of the service was given (``ZADD GT``, so it only
grows): an ``upsert`` costs a second command there, and ``counts`` reads the list
(one round trip), counts every listed service (one pipelined round trip per
node), then drops the names whose latest expiry has passed. Nothing is removed
from the list by a race: a name goes only once no instance can be live.

Changes are announced inside the scripts: ``PUBLISH`` on the classic channel
``<prefix>registry:db<N>:changed:<name>`` on one Redis or Sentinel, ``SPUBLISH``
on the shard channel ``{<prefix>registry:<name>}:changed`` on a cluster (the
service's slot, so only that node carries it). Time is the Redis server's
(``TIME``), unless the backend was opened with a clock (``target.clock``): then
that clock's time is sent with every call (tests with a ``ManualClock``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Self

from ..._core.clock import Clock
from ..._core.lifecycle import DEFAULT_TIMEOUT
from ..._core.redis import (
    Keyspace,
    RedisHandle,
    database_of,
    is_cluster,
    load_lua,
    publish_command,
    redis_unavailable,
    refresh_topology,
    run_scripts,
)
from ..._core.urls import BackendTarget
from .._models import Record, ServiceInstance, instances_from_json
from .base import ChangeWaiter

__all__ = ["RedisRegistryBackend"]

log = logging.getLogger("rtkit.registry")

_SCRIPT = load_lua("rtkit.registry", "registry.lua")


class _PubSubWaiter:
    """Waits on one change channel; a broken subscription is opened again (after a
    failover: on the new master) at the next wait, the poll covering the gap."""

    def __init__(self, subscribe: Callable[[], Awaitable[Any]], sharded: bool) -> None:
        self._subscribe = subscribe
        self._sharded = sharded
        self.pubsub: Any = None

    async def _next(self, timeout: float) -> Any:
        if self._sharded:
            return await self.pubsub.get_sharded_message(
                ignore_subscribe_messages=True, timeout=timeout
            )
        return await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=timeout)

    async def wait(self, timeout: float) -> None:
        try:
            with redis_unavailable("waiting for registry changes"):
                if self.pubsub is None:
                    self.pubsub = await self._subscribe()
                message = await self._next(timeout)
                while message is not None:  # drain: one look covers them all
                    message = await self._next(0)
        except Exception as exc:  # the poll is the backstop: never let watch() die here
            log.warning("registry change notifications interrupted: %s", exc)
            await self.close()
            await asyncio.sleep(timeout)

    async def close(self) -> None:
        pubsub, self.pubsub = self.pubsub, None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()


class RedisRegistryBackend:
    """Service instances in Redis: one Redis, Sentinel or a Redis Cluster (module docs).

    Args:
        handle: The Redis client, owned or borrowed.
        keys: Where the keys and channels live.
        clock: A clock whose time to send with every call; ``None`` for Redis time.
    """

    def __init__(self, handle: RedisHandle, keys: Keyspace, *, clock: Clock | None = None) -> None:
        self._handle = handle
        self._keys = keys
        self._clock = clock
        self._script = handle.client.register_script(_SCRIPT)
        self._names = keys.shared_key("names")
        self._sharded = is_cluster(handle.client)
        self._publish = publish_command(handle.client)
        # pub/sub ignores the database: classic change channels name it
        self._changed = keys.channel(f"db{database_of(handle.client)}", "changed")

    @classmethod
    def open(cls, target: BackendTarget, *, timeout: float = DEFAULT_TIMEOUT) -> Self:
        """The backend for a Redis URL (or the borrowed client in ``target.redis``).

        Args:
            target: Where to open.
            timeout: Seconds to wait for Redis to connect or answer.
        """
        handle = RedisHandle.open(target, timeout=timeout)
        return cls(handle, Keyspace(target.prefix, "registry"), clock=target.clock)

    def _channel(self, name: str) -> str:
        """The change channel of service ``name``: a shard channel on a cluster."""
        if self._sharded:
            return self._keys.entity_key(name, "changed")
        return f"{self._changed}:{name}"

    def _now(self) -> str:
        return "" if self._clock is None else repr(self._clock.time())

    def _call(self, op: str, name: str, *extra: str) -> tuple[list[str], list[Any]]:
        keys = [self._keys.entity_key(name, "svc"), self._keys.entity_key(name, "meta")]
        return keys, [op, self._now(), self._publish, self._channel(name), *extra]

    async def _run(self, op: str, name: str, *extra: str) -> Any:
        keys, args = self._call(op, name, *extra)
        with redis_unavailable(f"running registry {op}"):
            try:
                return await self._script(keys=keys, args=args)
            except Exception as exc:
                if not self._sharded or not _topology_error(exc):
                    raise
                await refresh_topology(self._handle.client)  # a failover moved the slot
                return await self._script(keys=keys, args=args)

    async def upsert(self, record: Record, ttl: float) -> None:
        """Add ``record`` or extend its life to now + ``ttl``; list the service."""
        _, expiry = await self._run(
            "upsert", record.name, record.instance_id, record.to_json(), repr(float(ttl))
        )
        with redis_unavailable("listing a service"):
            await self._handle.client.zadd(self._names, {record.name: float(expiry)}, gt=True)

    async def remove(self, name: str, instance_id: str) -> bool:
        """Delete one instance; say whether it was live."""
        return bool(await self._run("remove", name, instance_id))

    async def live(self, name: str) -> list[ServiceInstance]:
        """The live instances of ``name``."""
        flat: list[str] = await self._run("live", name)
        rows = []
        for i in range(0, len(flat), 2):  # expiry, "<registered_at> <record json>"
            registered, _, record = flat[i + 1].partition(" ")
            rows.append((registered, flat[i], record))
        return instances_from_json(rows)

    async def counts(self) -> dict[str, int]:
        """The live count of every listed service (each pruned first), then drop the names
        that can have no live instance left."""
        client = self._handle.client
        with redis_unavailable("counting services"):
            names: list[str] = [str(n) for n in await client.zrange(self._names, 0, -1)]
            found = await run_scripts(client, self._script, [self._call("count", n) for n in names])
            for result in found:
                if isinstance(result, Exception):
                    raise result
            now = self._clock.time() if self._clock is not None else await _server_time(client)
            await client.zremrangebyscore(self._names, "-inf", now)
        return {name: int(n) for name, n in zip(names, found, strict=True) if int(n) > 0}

    @contextlib.asynccontextmanager
    async def changes(self, name: str) -> AsyncIterator[ChangeWaiter]:
        """Subscribe to the change channel of ``name`` while the context is open."""
        channel = self._channel(name)
        client = self._handle.client

        async def subscribe() -> Any:
            pubsub = client.pubsub()
            try:
                if self._sharded:
                    await refresh_topology(client)  # the channel's node may have changed
                    await pubsub.ssubscribe(channel)
                else:
                    await pubsub.subscribe(channel)
            except BaseException:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                raise
            return pubsub

        waiter = _PubSubWaiter(subscribe, self._sharded)
        try:
            with redis_unavailable("subscribing to registry changes"):
                waiter.pubsub = await subscribe()
            yield waiter
        finally:
            await waiter.close()

    async def close(self) -> None:
        """Close the Redis client if this backend made it."""
        await self._handle.close()


async def _server_time(client: Any) -> float:
    seconds, micros = await client.time()
    return float(seconds) + float(micros) / 1_000_000


def _topology_error(exc: Exception) -> bool:
    """A cluster's answer that its slot map changed under us (MOVED, or a dead node)."""
    import redis.exceptions as redis_errors

    return isinstance(
        exc, (redis_errors.MovedError, redis_errors.ClusterDownError, redis_errors.ConnectionError)
    )
