"""discover() with 1,000 live instances of one service: rtkit against the KEYS-based Redis model.

Compares rtkit's ServiceRegistry on Redis (one Lua script per ``discover``) with the
the KEYS-based model (``KEYS service:<name>:*`` then one ``GET`` per key) and its pipelined
variant (``KEYS`` then one ``MGET``), on the same Redis, as interleaved slices of
sequential ``discover`` calls (see ``_harness.py``); rtkit's memory registry is shown
as the ceiling. Round trips per call are counted on the client.

    python benchmarks/registry.py [--quick] [--rounds N] [--redis URL] [--instances 1000]
        [--write-docs]
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import _harness as h
import redis.asyncio as aioredis

from rtkit.registry import ServiceRegistry


class Counting:
    """Counts the commands (round trips: none of these calls are pipelined) a client sends."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.calls = 0
        original = client.execute_command

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return await original(*args, **kwargs)

        client.execute_command = counted  # type: ignore[method-assign]


def repeat(call: Callable[[], Awaitable[int]], expected: int) -> h.Batch:
    async def batch(n: int) -> None:
        for _ in range(n):
            assert await call() == expected

    return batch


async def main() -> None:
    parser = h.arguments(__doc__, rounds=20)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--instances", type=int, default=1000)
    args = parser.parse_args()
    rounds = h.rounds_of(args)
    instances = args.instances
    run = h.Run("registry", args)
    prefix = f"rtkit-bench-{uuid.uuid4().hex[:8]}:"
    client = aioredis.Redis.from_url(args.redis, decode_responses=True)
    run.server("Redis", (await client.info("server"))["redis_version"])
    counter = Counting(client)
    memory = ServiceRegistry()
    shared = ServiceRegistry.from_url(args.redis, prefix=prefix, redis=client)
    try:
        for registry in (memory, shared):
            for port in range(instances):
                await registry.register(
                    "bench", host="10.0.0.1", port=1000 + port, ttl=600, heartbeat=False
                )
        keys_model = [f"{prefix}keysmodel:service:bench:{uuid.uuid4()}" for _ in range(instances)]
        pipe = client.pipeline(transaction=False)
        for port, key in enumerate(keys_model):
            pipe.set(key, json.dumps({"host": "10.0.0.1", "port": 1000 + port}), ex=600)
        await pipe.execute()

        async def rtkit_memory() -> int:
            return len(await memory.discover("bench"))

        async def rtkit_redis() -> int:
            return len(await shared.discover("bench"))

        async def keys_get_each() -> int:
            keys = await client.keys(f"{prefix}keysmodel:service:bench:*")
            return len([json.loads(v) for k in keys if (v := await client.get(k))])

        async def keys_mget() -> int:
            keys = await client.keys(f"{prefix}keysmodel:service:bench:*")
            return len([json.loads(v) for v in await client.mget(keys) if v])

        calls = {
            "rtkit": rtkit_redis,
            "KEYS pipelined": keys_mget,
            "KEYS": keys_get_each,
            "rtkit memory": rtkit_memory,
        }
        trips = {}
        for name, call in calls.items():
            before = counter.calls
            await call()
            trips[name] = counter.calls - before
        figures = await h.alternate(
            {name: repeat(call, instances) for name, call in calls.items()},
            rounds=rounds,
            slice_ms=args.slice_ms,
        )
        labels = {
            "rtkit": f"rtkit ServiceRegistry (Redis), {trips['rtkit']} round trip",
            "KEYS pipelined": (
                f"KEYS registry, pipelined: KEYS + MGET, {trips['KEYS pipelined']} round trips"
            ),
            "KEYS": f"KEYS registry: KEYS + GET each, {trips['KEYS']} round trips",
            "rtkit memory": "rtkit ServiceRegistry() (memory)",
        }
        run.add(
            h.compare(
                f"discover() of {instances:,} live instances, sequential",
                figures,
                "rtkit",
                ["KEYS pipelined", "KEYS", "rtkit memory"],
                unit="calls/s",
                labels=labels,
            )
        )
    finally:
        await shared.close()
        await memory.close()
        await h.drop_keys(client, prefix + "*", "{" + prefix + "*")
        await client.aclose()
    run.finish("registry.md")


if __name__ == "__main__":
    h.run(main)
