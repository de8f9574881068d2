"""Where a sequential Redis hit's client time goes: CPU µs per call, layer by layer.

Each layer adds one step on the way from the EVALSHA floor (the pre-packed command on
a raw asyncio connection, as in ``ratelimit.py``) to ``RateLimiter.hit``:

* ``lane round trip``: the pre-packed command on the limiter's own connection;
* ``+ packing``: the command packed per call, as the hot path does;
* ``backend.decide``: the backend's general entry (any limits, a list of outcomes);
* ``backend.hit_one``: the backend's one-limit entry (a ``Decision`` from the reply);
* ``limiter.hit``: the public call (argument checks, failure policy).

The layers run interleaved in short slices (order rotated and reversed per round); the
CPU time of this process (``process_time``: the client's work, not Redis's) per call
is reported as the median over the rounds, and as the median per-round difference to
the floor. Sequential wall time per call is shown too, and its ratio floor / layer.

    python benchmarks/ratelimit_layers.py [--calls N] [--rounds N] [--redis URL]
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable

import _harness as h
import redis.asyncio as aioredis

from ratelimit import HOT, MANY, RawConnection
from rtkit.ratelimit import Limit, RateLimiter
from rtkit.ratelimit.backends.redis import RedisRateLimitBackend, _raw

Layer = Callable[[int], Awaitable[None]]


def layers(
    limiter: RateLimiter, backend: RedisRateLimitBackend, raw: RawConnection, keys: list[str]
) -> dict[str, Layer]:
    """Each layer: ``n`` sequential hits over ``keys`` round-robin."""
    limit = Limit(1000, 1.0)
    packed = [backend._pack(key, [limit], 1, True) for key in keys]
    lane, size, limits = backend._lane, len(keys), [limit]

    async def floor(n: int) -> None:
        for i in range(n):
            await raw.call(packed[i % size])

    async def lane_round_trip(n: int) -> None:
        for i in range(n):
            await lane.lone(packed[i % size], _raw)

    async def packing(n: int) -> None:
        for i in range(n):
            await lane.lone(backend._pack_one(keys[i % size], limit), _raw)

    async def decide(n: int) -> None:
        for i in range(n):
            await backend.decide(keys[i % size], limits, 1, True)

    async def hit_one(n: int) -> None:
        for i in range(n):
            await backend.hit_one(keys[i % size], limit)

    async def hit(n: int) -> None:
        for i in range(n):
            await limiter.hit(keys[i % size], limit)

    return {
        "EVALSHA floor (raw)": floor,
        "lane round trip": lane_round_trip,
        "+ packing": packing,
        "backend.decide": decide,
        "backend.hit_one": hit_one,
        "limiter.hit": hit,
    }


async def measure(case: dict[str, Layer], calls: int, rounds: int) -> None:
    names = list(case)
    cpu: dict[str, list[float]] = {name: [] for name in names}
    wall: dict[str, list[float]] = {name: [] for name in names}
    for name in names:
        await case[name](200)  # warm up
    for round_ in range(rounds):
        k = round_ % len(names)
        order = names[k:] + names[:k]
        for name in order if round_ % 2 == 0 else order[::-1]:
            cpu_start, wall_start = time.process_time(), time.perf_counter()
            await case[name](calls)
            cpu[name].append((time.process_time() - cpu_start) / calls * 1e6)
            wall[name].append((time.perf_counter() - wall_start) / calls * 1e6)
    floor = names[0]
    for name in names:
        extra = statistics.median(a - b for a, b in zip(cpu[name], cpu[floor], strict=True))
        ratio = statistics.median(b / a for a, b in zip(wall[name], wall[floor], strict=True))
        print(
            f"  {name:22} CPU {statistics.median(cpu[name]):6.2f} µs/call ({extra:+.2f} vs floor)"
            f"   wall {statistics.median(wall[name]):6.2f} µs/call (floor/layer {ratio:.3f})"
        )


async def main() -> None:
    # the options of every benchmark, so that run_all.py can pass them (a profile: it
    # writes no table, --write-docs and --json change nothing here)
    parser = h.arguments(__doc__, rounds=200)
    parser.add_argument("--calls", type=int, default=300, help="calls per slice (300)")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    args.rounds = h.rounds_of(args, quick=20)
    tag = uuid.uuid4().hex[:8]
    limiter = RateLimiter.from_url(args.redis, prefix=f"rtkit-bench-{tag}:")
    await limiter.hit(HOT[0], Limit(1000, 1.0))  # starts it and connects its lane
    backend = limiter._backend
    assert isinstance(backend, RedisRateLimitBackend)
    raw = RawConnection()
    admin = aioredis.Redis.from_url(args.redis)
    kwargs = admin.connection_pool.connection_kwargs
    await raw.open(kwargs.get("host", "127.0.0.1"), kwargs.get("port", 6379))
    print(f"$ python benchmarks/ratelimit_layers.py --calls {args.calls} --rounds {args.rounds}")
    try:
        for label, keys in (("hot key", HOT), ("10,000 keys", MANY)):
            print(f"Redis sequential, {label}: CPU time of this process per call, median")
            await measure(layers(limiter, backend, raw, keys), args.calls, args.rounds)
    finally:
        await limiter.close()
        await raw.close()
        await h.drop_keys(admin, f"*rtkit-bench-{tag}*")
        await admin.aclose()


if __name__ == "__main__":
    asyncio.run(main())
