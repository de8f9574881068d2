"""The Redis registry: instances shared by every process using one Redis and prefix.

See ``resources/registry.lua`` for the key model: no ``KEYS``, one sorted set per
service scored by expiry (Redis server time), a hash of records, a set of names.
Every operation is one Lua script call, so one round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub

from .._backends import Keyspace, RedisHandle, load_lua, redis_unavailable
from .._clock import Clock
from .base import ServiceInstance, ServiceRegistry, _Record, _Waiter, instances_from_json

__all__ = ["RedisServiceRegistry"]

log = logging.getLogger("rtkit.registry")


class _PubSubWaiter(_Waiter):
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


class RedisServiceRegistry(ServiceRegistry):
    """A `ServiceRegistry` on Redis (``redis://...``)."""

    def __init__(
        self,
        url: str | None = None,
        *,
        prefix: str = "rtkit:",
        redis: aioredis.Redis | None = None,
        clock: Clock | None = None,
        prune_interval: float = 5.0,
        poll_interval: float = 5.0,
    ) -> None:
        super().__init__(clock=clock, prune_interval=prune_interval, poll_interval=poll_interval)
        self._handle = RedisHandle(url, client=redis)
        self._keys = Keyspace(prefix, "registry")
        self._script = self._handle.client.register_script(
            load_lua("rtkit.registry", "registry.lua")
        )
        self._injected_clock = clock is not None

    async def _run(self, op: str, name: str = "", *extra: str) -> Any:
        now = repr(self._clock.time()) if self._injected_clock else ""
        keys = [self._keys.key("names")]
        if name:
            keys += [self._keys.key("svc", name), self._keys.key("meta", name)]
        args = [op, now, self._keys.base, self._keys.channel("changed") + ":", name, *extra]
        with redis_unavailable(f"running registry {op}"):
            return await self._script(keys=keys, args=args)

    async def _upsert(self, record: _Record, ttl: float) -> None:
        await self._run(
            "upsert", record.name, record.instance_id, record.to_json(), repr(float(ttl))
        )

    async def _remove(self, name: str, instance_id: str) -> bool:
        return bool(await self._run("remove", name, instance_id))

    async def _live(self, name: str) -> list[ServiceInstance]:
        flat: list[str] = await self._run("live", name)
        rows = []
        for i in range(0, len(flat), 2):  # expiry, "<registered_at> <record json>"
            registered, _, record = flat[i + 1].partition(" ")
            rows.append((registered, flat[i], record))
        return instances_from_json(rows)

    async def _counts(self) -> dict[str, int]:
        flat: list[Any] = await self._run("counts")
        return {str(flat[i]): int(flat[i + 1]) for i in range(0, len(flat), 2)}

    @contextlib.asynccontextmanager
    async def _changes(self, name: str) -> AsyncIterator[_Waiter]:
        pubsub = self._handle.client.pubsub()
        try:
            with redis_unavailable("subscribing to registry changes"):
                await pubsub.subscribe(self._keys.channel("changed", name))
            yield _PubSubWaiter(pubsub)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _close_backend(self) -> None:
        await self._handle.close()
