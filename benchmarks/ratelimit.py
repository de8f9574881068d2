"""RateLimiter.hit() throughput: rtkit vs the ``limits`` library, memory and Redis.

Measured in one run, each for ``--seconds`` seconds:

- one hot key, and 10,000 keys hit round-robin;
- memory (sequential), Redis sequential, and Redis with 32 concurrent callers;
- rtkit GCRA (the default), exact sliding window and sliding window counter;
- ``limits`` (async API) moving window and sliding window counter, on its
  ``MemoryStorage`` and its ``RedisStorage`` (with its default client, coredis;
  ``--limits-client redispy`` for redis-py, the client rtkit uses);
- the floor: a bare ``EVALSHA`` of a script that returns 1, through redis-py
  (sequential: one round trip per call; concurrent: 32 callers on its pool).

The limit is 1000 hits per second per key, so a hot key is mostly denied and
10,000 keys are mostly allowed. Each figure is the median of ``--rounds``
rounds of ``--seconds``, the contenders taking turns within each round (the
machine may be shared). Ratios are rtkit's default (GCRA) divided by the named
peer in the same scenario.

Run: ``.venv/bin/python benchmarks/ratelimit.py [--seconds 0.4] [--rounds 5] [--redis URL]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
from limits import RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter, SlidingWindowCounterRateLimiter

from rtkit.ratelimit import Limit, RateLimiter

AMOUNT, PERIOD = 1000, 1.0
CONCURRENCY = 32
Hit = Callable[[str], Awaitable[object]]


async def measure(hit: Hit, keys: list[str], seconds: float, callers: int) -> float:
    """Hits per second of ``callers`` tasks calling ``hit`` over ``keys`` for ``seconds``."""
    done = 0
    stop = time.perf_counter() + seconds

    async def caller(offset: int) -> None:
        nonlocal done
        i = offset
        n = len(keys)
        while time.perf_counter() < stop:
            for _ in range(50):
                await hit(keys[i % n])
                i += 1
            done += 50

    start = time.perf_counter()
    await asyncio.gather(*(caller(c * 7919) for c in range(callers)))
    return done / (time.perf_counter() - start)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=0.4, help="per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--limits-client",
        choices=["coredis", "redispy"],
        default="coredis",
        help="the Redis client limits uses (coredis is its default)",
    )
    parser.add_argument("--redis", default="redis://127.0.0.1:6379")
    args = parser.parse_args()

    run = uuid.uuid4().hex[:8]
    rtkit_prefix = f"rtkit-bench-{run}:"
    limits_prefix = f"rtkit-bench-limits-{run}"
    item = RateLimitItemPerSecond(AMOUNT)
    rtkit_limits = {
        "rtkit gcra": Limit(AMOUNT, PERIOD),
        "rtkit sliding window": Limit(AMOUNT, PERIOD, "sliding_window"),
        "rtkit window counter": Limit(AMOUNT, PERIOD, "sliding_window_counter"),
    }
    admin = aioredis.Redis.from_url(args.redis, decode_responses=True)
    sha = await admin.script_load("return 1")

    rtkit_memory = RateLimiter()
    rtkit_redis = RateLimiter.from_url(args.redis, prefix=rtkit_prefix, failure_policy="closed")
    await rtkit_redis.start()
    limits_memory = MemoryStorage()
    limits_redis = RedisStorage(
        args.redis.replace("redis://", "async+redis://", 1),
        implementation=args.limits_client,
        key_prefix=limits_prefix,
    )

    def contenders(backend: str) -> dict[str, Hit]:
        rtkit = rtkit_memory if backend == "memory" else rtkit_redis
        storage = limits_memory if backend == "memory" else limits_redis
        found: dict[str, Hit] = {}
        for name, limit in rtkit_limits.items():
            found[name] = lambda key, limit=limit: rtkit.hit(key, limit)
        moving = MovingWindowRateLimiter(storage)
        counter = SlidingWindowCounterRateLimiter(storage)
        found["limits moving window"] = lambda key: moving.hit(item, key)
        found["limits window counter"] = lambda key: counter.hit(item, key)
        if backend == "redis":
            found["bare EVALSHA floor"] = lambda key: admin.evalsha(sha, 1, key)
        return found

    scenarios = [
        ("memory", "hot key", 1),
        ("memory", "10,000 keys", 1),
        ("redis", "hot key", 1),
        ("redis", "10,000 keys", 1),
        ("redis", "hot key", CONCURRENCY),
        ("redis", "10,000 keys", CONCURRENCY),
    ]
    results: dict[tuple[str, str, int], dict[str, float]] = {}
    for backend, keyset, callers in scenarios:
        keys = ["hot"] if keyset == "hot key" else [f"ip:{i}" for i in range(10_000)]
        hits = contenders(backend)
        rounds: dict[str, list[float]] = {name: [] for name in hits}
        for _ in range(args.rounds):  # interleaved, so a busy moment hurts everyone
            for name, hit in hits.items():
                rounds[name].append(await measure(hit, keys, args.seconds, callers))
        row = results.setdefault((backend, keyset, callers), {})
        for name, rates in rounds.items():
            row[name] = statistics.median(rates)
            print(f"  {backend:6} {keyset:12} x{callers:<2} {name:22} {row[name]:>10,.0f}/s")

    print()
    print(f"hit()/s, limit {AMOUNT}/{PERIOD:g}s per key; ratio = rtkit gcra / peer")
    header = f"{'scenario':32} {'contender':22} {'hits/s':>10} {'ratio':>7}"
    print(header)
    print("-" * len(header))
    for (backend, keyset, callers), row in results.items():
        label = f"{backend} {keyset}" + (f" x{callers} callers" if callers > 1 else " sequential")
        ours = row["rtkit gcra"]
        for name, rate in row.items():
            ratio = "" if name.startswith("rtkit") else f"{ours / rate:6.2f}x"
            print(f"{label:32} {name:22} {rate:>10,.0f} {ratio:>7}")
            label = ""

    await rtkit_memory.close()
    await rtkit_redis.close()
    keys_left = [k async for k in admin.scan_iter(match=f"rtkit-bench-*{run}*", count=1000)]
    for start in range(0, len(keys_left), 500):
        await admin.delete(*keys_left[start : start + 500])
    await admin.aclose()


if __name__ == "__main__":
    asyncio.run(main())
