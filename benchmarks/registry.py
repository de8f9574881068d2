"""discover() with 1,000 live instances of one service: latency and Redis round trips.

Compares rtkit's ServiceRegistry (memory; Redis: one Lua script) with the seed's
Redis model (``KEYS service:<name>:*`` then one ``GET`` per key) and a pipelined
variant of it (``KEYS`` then one ``MGET``), in one run on the same Redis.

    python benchmarks/registry.py [--redis URL] [--instances 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis

from rtkit.registry import ServiceRegistry


class Counting:
    """Counts the commands (round trips, none of these calls are pipelined) a client sends."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.calls = 0
        original = client.execute_command

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return await original(*args, **kwargs)

        client.execute_command = counted  # type: ignore[method-assign]


async def measure(
    label: str, call: Callable[[], Awaitable[int]], rounds: int, counter: Counting | None
) -> dict[str, Any]:
    for _ in range(3):
        await call()  # warm up (script load, connections)
    before = counter.calls if counter else 0
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        found = await call()
        times.append(time.perf_counter() - start)
    trips = (counter.calls - before) / rounds if counter else 0
    times.sort()
    return {
        "label": label,
        "found": found,
        "p50": statistics.median(times) * 1000,
        "p99": times[min(len(times) - 1, int(len(times) * 0.99))] * 1000,
        "trips": trips,
    }


async def main(url: str, instances: int) -> None:
    prefix = f"rtkit-bench-{uuid.uuid4().hex[:8]}:"
    client = aioredis.Redis.from_url(url, decode_responses=True)
    counter = Counting(client)
    memory = ServiceRegistry()
    shared = ServiceRegistry.from_url(url, prefix=prefix, redis=client)
    rows = []
    try:
        for registry in (memory, shared):
            for port in range(instances):
                await registry.register(
                    "bench", host="10.0.0.1", port=1000 + port, ttl=600, heartbeat=False
                )
        seed_keys = [f"{prefix}seed:service:bench:{uuid.uuid4()}" for _ in range(instances)]
        pipe = client.pipeline(transaction=False)
        for port, key in enumerate(seed_keys):
            pipe.set(key, json.dumps({"host": "10.0.0.1", "port": 1000 + port}), ex=600)
        await pipe.execute()

        async def rtkit_memory() -> int:
            return len(await memory.discover("bench"))

        async def rtkit_redis() -> int:
            return len(await shared.discover("bench"))

        async def seed_get_each() -> int:
            keys = await client.keys(f"{prefix}seed:service:bench:*")
            return len([json.loads(v) for k in keys if (v := await client.get(k))])

        async def seed_mget() -> int:
            keys = await client.keys(f"{prefix}seed:service:bench:*")
            return len([json.loads(v) for v in await client.mget(keys) if v])

        rows.append(await measure("rtkit memory", rtkit_memory, 200, None))
        rows.append(await measure("rtkit Redis (1 Lua script)", rtkit_redis, 200, counter))
        rows.append(await measure("seed: KEYS + GET each", seed_get_each, 10, counter))
        rows.append(await measure("seed pipelined: KEYS + MGET", seed_mget, 100, counter))
    finally:
        await shared.close()
        await memory.close()
        async for key in client.scan_iter(match=prefix + "*", count=1000):
            await client.delete(key)
        await client.aclose()

    base = rows[1]["p50"]
    print(f"discover() of {instances} live instances, sequential calls")
    print(
        f"{'implementation':30} {'found':>6} {'p50 ms':>9} {'p99 ms':>9} {'round trips':>12} "
        f"{'p50 vs rtkit Redis':>19}"
    )
    for row in rows:
        trips = f"{row['trips']:.0f}" if row["trips"] else "-"
        print(
            f"{row['label']:30} {row['found']:>6} {row['p50']:>9.2f} {row['p99']:>9.2f} "
            f"{trips:>12} {row['p50'] / base:>18.2f}x"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--instances", type=int, default=1000)
    args, _ = parser.parse_known_args()
    asyncio.run(main(args.redis, args.instances))
