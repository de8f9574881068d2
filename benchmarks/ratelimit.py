"""RateLimiter.hit() against the ``limits`` library and the bare EVALSHA round trip.

Cases (each an interleaved series of short slices, see ``_harness.py``), limit
1000 hits per second per key (a hot key is then mostly denied, 10,000 keys mostly
allowed):

* memory, sequential, one hot key and 10,000 keys round-robin: rtkit's default
  (GCRA) ``await limiter.hit(key, limit)`` against ``limits``' async API on its
  ``MemoryStorage`` with the fixed window, the moving window and the sliding window
  counter strategies;
* Redis, sequential, hot key and 10,000 keys: rtkit against ``limits`` on redis-py
  (``implementation="redispy"``: its common client, not its default coredis) with the
  same three strategies, and against the **EVALSHA floor**: rtkit's own script with
  the very same keys and arguments (so the server does the same work), sent
  pre-packed on a raw asyncio connection (the least client work there is: write the
  bytes, parse the reply with hiredis) and through redis-py's ``evalsha``; rtkit and
  the raw floor also run as a pair of their own, in half slices and four times the
  rounds (the gap is a few per cent of a round trip, less than the drift between
  slices six contenders apart);
* Redis, 32 concurrent callers, hot key: rtkit against ``limits`` (redis-py) and
  redis-py ``evalsha`` on its connection pool.

    python benchmarks/ratelimit.py [--quick] [--rounds N] [--slice-ms MS] [--redis URL]
        [--write-docs]
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import _harness as h
import hiredis
import redis.asyncio as aioredis
from limits import RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import (
    FixedWindowRateLimiter,
    MovingWindowRateLimiter,
    SlidingWindowCounterRateLimiter,
)

from rtkit.ratelimit import Limit, RateLimiter
from rtkit.ratelimit.backends.redis import _SCRIPT, RedisRateLimitBackend

AMOUNT, PERIOD = 1000, 1.0
CONCURRENCY = 32
HOT = ["ip:203.0.113.9"]
MANY = [f"ip:10.{i // 256 % 256}.{i % 256}.{i // 65536}" for i in range(10_000)]
LIMITS_STRATEGIES = {
    "limits fixed window": FixedWindowRateLimiter,
    "limits moving window": MovingWindowRateLimiter,
    "limits window counter": SlidingWindowCounterRateLimiter,
}


def sequential(hit: Any, keys: list[str]) -> h.Batch:
    """``n`` awaited hits, one after another, over ``keys`` round-robin."""
    state = {"i": 0}
    size = len(keys)

    async def batch(n: int) -> None:
        i = state["i"]
        for _ in range(n):
            await hit(keys[i % size])
            i += 1
        state["i"] = i

    return batch


def concurrent(hit: Any, keys: list[str], callers: int) -> h.Batch:
    """``n`` hits shared by ``callers`` concurrent tasks."""
    size = len(keys)

    async def batch(n: int) -> None:
        async def caller(c: int) -> None:
            for i in range(c, n, callers):
                await hit(keys[i % size])

        await asyncio.gather(*(caller(c) for c in range(callers)))

    return batch


class RawConnection:
    """A bare asyncio Redis connection: write pre-packed bytes, parse the reply with hiredis."""

    async def open(self, host: str, port: int) -> None:
        self.reader, self.writer = await asyncio.open_connection(host, port)
        self.parser = hiredis.Reader()

    async def call(self, command: bytes) -> Any:
        self.writer.write(command)
        parser = self.parser
        reply = parser.gets()
        while reply is False:
            parser.feed(await self.reader.read(65536))
            reply = parser.gets()
        return reply

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def memory_cases(run: h.Run, rounds: int, slice_ms: float) -> None:
    item = RateLimitItemPerSecond(AMOUNT)
    limit = Limit(AMOUNT, PERIOD)
    for label, keys in (("hot key", HOT), ("10,000 keys", MANY)):
        limiter = RateLimiter()
        batches = {"rtkit": sequential(lambda key, lim=limiter: lim.hit(key, limit), keys)}
        for name, strategy in LIMITS_STRATEGIES.items():
            hit = strategy(MemoryStorage()).hit  # a storage each: their keys would collide
            batches[name] = sequential(lambda key, hit=hit: hit(item, key), keys)
        figures = await h.alternate(batches, rounds=rounds, slice_ms=slice_ms)
        await limiter.close()
        run.add(
            h.compare(
                f"memory, {label}",
                figures,
                "rtkit",
                list(LIMITS_STRATEGIES),
                unit="hits/s",
                goals={"limits fixed window": "≥ 2x", "limits moving window": "≥ 2x"}
                if label == "hot key"
                else None,
                labels={"rtkit": "rtkit RateLimiter() GCRA"},
            )
        )


async def redis_cases(run: h.Run, url: str, rounds: int, slice_ms: float) -> None:
    tag = uuid.uuid4().hex[:8]
    prefix = f"rtkit-bench-{tag}:"
    admin = aioredis.Redis.from_url(url, decode_responses=True)
    run.server("Redis", (await admin.info("server"))["redis_version"])
    sha = await admin.script_load(_SCRIPT)
    limiter = RateLimiter.from_url(url, prefix=prefix, failure_policy="closed")
    await limiter.start()
    backend = limiter._backend
    assert isinstance(backend, RedisRateLimitBackend)
    limit = Limit(AMOUNT, PERIOD)
    item = RateLimitItemPerSecond(AMOUNT)
    strategies = {  # a storage (key prefix) each: their keys would collide
        name: strategy(
            RedisStorage(
                url.replace("redis://", "async+redis://", 1),
                implementation="redispy",
                key_prefix=f"rtkit-bench-limits-{tag}-{i}",
            )
        )
        for i, (name, strategy) in enumerate(LIMITS_STRATEGIES.items())
    }
    raw = RawConnection()
    connection = admin.connection_pool.connection_kwargs
    await raw.open(connection.get("host", "127.0.0.1"), connection.get("port", 6379))
    py = aioredis.Redis.from_url(url)  # redis-py as its users make it
    tail = ("", "1", "1", "g", AMOUNT, limit.period_us, limit.capacity, limit.emission_us)

    def rtkit(keys: list[str]) -> h.Batch:
        return sequential(lambda key: limiter.hit(key, limit), keys)

    def floor(keys: list[str]) -> h.Batch:
        packed = {key: backend._pack(key, [limit], 1, True) for key in keys}
        return sequential(lambda key: raw.call(packed[key]), keys)

    def redis_py(keys: list[str]) -> h.Batch:
        names = {key: backend.key(key, limit) for key in keys}
        return sequential(lambda key: py.evalsha(sha, 1, names[key], *tail), keys)

    labels = {"rtkit": "rtkit RateLimiter (Redis) GCRA"}
    try:
        for label, keys in (("hot key", HOT), ("10,000 keys", MANY)):
            batches = {"rtkit": rtkit(keys), "EVALSHA, redis-py": redis_py(keys)}
            for name, strategy in strategies.items():
                batches[name] = sequential(lambda key, s=strategy: s.hit(item, key), keys)
            figures = await h.alternate(batches, rounds=rounds, slice_ms=slice_ms)
            peers = [n for n in batches if n != "rtkit"]
            case = f"Redis sequential, {label}"
            run.add(h.compare(case, figures, "rtkit", peers, unit="hits/s", labels=labels))
            # Against the floor the gap is a few per cent of a round trip: the two alone,
            # in half slices, so that the server's and the loopback's drift hits both.
            batches = {"rtkit": rtkit(keys), "EVALSHA, raw connection": floor(keys)}
            figures = await h.alternate(batches, rounds=4 * rounds, slice_ms=slice_ms / 2)
            run.add(
                h.compare(
                    f"{case}, against the floor alone",
                    figures,
                    "rtkit",
                    ["EVALSHA, raw connection"],
                    unit="hits/s",
                    goals={"EVALSHA, raw connection": "≥ 0.95x"},
                    labels=labels,
                )
            )
        names = {HOT[0]: backend.key(HOT[0], limit)}
        batches = {
            "rtkit": concurrent(lambda key: limiter.hit(key, limit), HOT, CONCURRENCY),
            "EVALSHA, redis-py pool": concurrent(
                lambda key: py.evalsha(sha, 1, names[key], *tail), HOT, CONCURRENCY
            ),
        }
        for name, strategy in strategies.items():
            batches[name] = concurrent(lambda key, s=strategy: s.hit(item, key), HOT, CONCURRENCY)
        figures = await h.alternate(batches, rounds=rounds, slice_ms=slice_ms)
        run.add(
            h.compare(
                f"Redis, {CONCURRENCY} concurrent callers, hot key",
                figures,
                "rtkit",
                [n for n in batches if n != "rtkit"],
                unit="hits/s",
                labels={"rtkit": "rtkit RateLimiter (Redis) GCRA"},
            )
        )
        run.note(
            "The EVALSHA floor runs rtkit's own Lua script with the same keys and arguments "
            "(the same work in Redis): the raw connection writes pre-packed bytes and parses "
            "the reply with hiredis, the least client work possible; redis-py's `evalsha` is "
            "the same call as a redis-py user would write it."
        )
    finally:
        await limiter.close()
        await raw.close()
        await py.aclose()
        await h.drop_keys(admin, f"rtkit-bench-*{tag}*")
        await admin.aclose()


async def main() -> None:
    parser = h.arguments(__doc__, rounds=30)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--no-redis", action="store_true")
    args = parser.parse_args()
    rounds = h.rounds_of(args)
    run = h.Run("ratelimit", args, ["limits"])
    await memory_cases(run, rounds, args.slice_ms)
    if not args.no_redis:
        await redis_cases(run, args.redis, rounds, args.slice_ms)
    run.finish("ratelimit.md")


if __name__ == "__main__":
    h.run(main)
