"""The Redis registry backend: instances shared by every process using one Redis and prefix.

See ``resources/registry.lua`` for the key model: no ``KEYS``, one sorted set per
service scored by expiry, a hash of records, a set of names. Every operation is
one Lua script call, so one round trip. Time is the Redis server's (``TIME``),
unless the backend was opened with a clock (``target.clock``): then that clock's
time is sent with every call (tests with a ``ManualClock``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any, Self

from redis.asyncio.client import PubSub

from ..._core.clock import Clock
from ..._core.lifecycle import DEFAULT_TIMEOUT
from ..._core.redis import Keyspace, RedisHandle, database_of, load_lua, redis_unavailable
from ..._core.urls import BackendTarget
from .._models import Record, ServiceInstance, instances_from_json
from .base import ChangeWaiter

__all__ = ["RedisRegistryBackend"]

log = logging.getLogger("rtkit.registry")

_SCRIPT = load_lua("rtkit.registry", "registry.lua")


class _PubSubWaiter:
    def __init__(self, pubsub: PubSub) -> None:
        self.pubsub = pubsub

    async def wait(self, timeout: float) -> None:
        try:
            with redis_unavailable("waiting for registry changes"):
                message = await self.pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=timeout
                )
                while message is not None:  # drain: one look covers them all
                    message = await self.pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=0
                    )
        except Exception as exc:  # the poll is the backstop: never let watch() die here
            log.warning("registry change notifications interrupted: %s", exc)
            await asyncio.sleep(timeout)


class RedisRegistryBackend:
    """Service instances in Redis (``redis://``, ``rediss://``, ``unix://``).

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
        # pub/sub ignores the database: the change channels name it
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

    async def _run(self, op: str, name: str = "", *extra: str) -> Any:
        now = "" if self._clock is None else repr(self._clock.time())
        keys = [self._keys.key("names")]
        if name:
            keys += [self._keys.key("svc", name), self._keys.key("meta", name)]
        args = [op, now, self._keys.base, self._changed + ":", name, *extra]
        with redis_unavailable(f"running registry {op}"):
            return await self._script(keys=keys, args=args)

    async def upsert(self, record: Record, ttl: float) -> None:
        """Add ``record`` or extend its life to now + ``ttl``."""
        await self._run(
            "upsert", record.name, record.instance_id, record.to_json(), repr(float(ttl))
        )

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
        """The live count of every service with live instances."""
        flat: list[Any] = await self._run("counts")
        return {str(flat[i]): int(flat[i + 1]) for i in range(0, len(flat), 2)}

    @contextlib.asynccontextmanager
    async def changes(self, name: str) -> AsyncIterator[ChangeWaiter]:
        """Subscribe to the change channel of ``name`` while the context is open."""
        pubsub = self._handle.client.pubsub()
        try:
            with redis_unavailable("subscribing to registry changes"):
                await pubsub.subscribe(f"{self._changed}:{name}")
            yield _PubSubWaiter(pubsub)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def close(self) -> None:
        """Close the Redis client if this backend made it."""
        await self._handle.close()
