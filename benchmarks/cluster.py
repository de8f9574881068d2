"""The event bus and the rate limiter on one Redis node vs a three-master Redis Cluster.

The same rtkit component, made with ``from_url``, on a private Redis node
(``redis://``) and on a private three-master cluster (``redis+cluster://``, no
replicas), both started from ``redis-server`` for the run, in interleaved slices;
the ratio is cluster ÷ one node, per round.

* event bus, publish only (no subscriber): awaited one by one, and 100 concurrent
  publishers (group commit per node: one pipeline per master on the cluster, with
  events spread over the 16 shard channels by the first word of their names);
* rate limiter, GCRA ``1000000/second`` on 1,000 keys: sequential decisions, and
  100 concurrent callers (batched per node).

All masters run on this machine, sharing its two cores with the client (and other
work): the cluster adds no CPU here, so the ratio shows what the cluster's routing
costs (or saves, by spreading the pipelines over three server processes), not the
capacity a cluster of real machines adds.

Run: ``python benchmarks/cluster.py [--quick] [--rounds 21] [--slice-ms 100]``.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import uuid
from contextlib import AsyncExitStack

import _harness as h
import redis.asyncio as aioredis

from rtkit import EventBus, RateLimiter

sys.path.insert(0, str(h.ROOT / "tests"))

LIMIT = "1000000/second"
KEYS = [f"user:{i}" for i in range(1000)]
CALLERS = 100
NAMES = [f"{word}.happened" for word in ("order", "user", "cart", "mail", "audit", "stock")]


def sequential_publish(bus: EventBus) -> h.Batch:
    async def batch(n: int) -> None:
        for i in range(n):
            await bus.publish(NAMES[i % len(NAMES)], {"i": i})

    return batch


def concurrent_publish(bus: EventBus) -> h.Batch:
    async def batch(n: int) -> None:
        async def task(k: int) -> None:
            for i in range(k, n, CALLERS):
                await bus.publish(NAMES[i % len(NAMES)], {"i": i})

        await asyncio.gather(*(task(k) for k in range(min(n, CALLERS))))

    return batch


def sequential_hits(limiter: RateLimiter) -> h.Batch:
    state = {"i": 0}

    async def batch(n: int) -> None:
        i = state["i"]
        for _ in range(n):
            await limiter.hit(KEYS[i % len(KEYS)], LIMIT)
            i += 1
        state["i"] = i

    return batch


def concurrent_hits(limiter: RateLimiter) -> h.Batch:
    async def batch(n: int) -> None:
        async def caller(c: int) -> None:
            for i in range(c, n, CALLERS):
                await limiter.hit(KEYS[i % len(KEYS)], LIMIT)

        await asyncio.gather(*(caller(c) for c in range(min(n, CALLERS))))

    return batch


async def main() -> None:
    parser = h.arguments(__doc__, rounds=21, slice_ms=100.0)
    args = parser.parse_args()
    rounds = h.rounds_of(args, quick=3)
    if not (shutil.which("redis-server") and shutil.which("redis-cli")):
        print("skipped: needs redis-server and redis-cli to start a private cluster")
        return
    from rtkit_topology import PrivateCluster, RedisNode

    run = h.Run("cluster", args)
    cluster = PrivateCluster(replicas=0)
    cluster.start()
    node = RedisNode(cluster.binary, cluster.folder, [])  # one node, as private as the cluster
    node.start()
    probe = aioredis.Redis(port=node.port)
    run.server("Redis", (await probe.info("server"))["redis_version"])
    await probe.aclose()
    prefix = f"rtkit-bench-{uuid.uuid4().hex[:8]}:"
    urls = {"one node": f"redis://{node.address}/0", "cluster": cluster.url}
    try:
        async with AsyncExitStack() as stack:
            buses, limiters = {}, {}
            for name, url in urls.items():
                buses[name] = await stack.enter_async_context(
                    EventBus.from_url(url, prefix=prefix, publish_only=True)
                )
                limiters[name] = await stack.enter_async_context(
                    RateLimiter.from_url(url, prefix=prefix, failure_policy="closed")
                )
            cases = [
                ("event bus, awaited publish", sequential_publish, buses, "events/s"),
                ("event bus, 100 concurrent publishers", concurrent_publish, buses, "events/s"),
                ("rate limiter, sequential", sequential_hits, limiters, "decisions/s"),
                ("rate limiter, 100 concurrent callers", concurrent_hits, limiters, "decisions/s"),
            ]
            for case, make, parts, unit in cases:
                batches = {name: make(part) for name, part in parts.items()}  # type: ignore[arg-type]
                figures = await h.alternate(batches, rounds=rounds, slice_ms=args.slice_ms)
                labels = {"cluster": "3-master cluster", "one node": "one Redis node"}
                run.add(h.compare(case, figures, "cluster", ["one node"], unit=unit, labels=labels))
    finally:
        node.stop()
        cluster.stop()
    run.note(
        "The one node, the three masters (all private, started for this run) and the client "
        "share this 2-core machine with other work: a "
        "ratio near 1x says the cluster's routing costs little; it cannot show the capacity "
        "that masters on their own machines add."
    )
    run.finish("deployment.md")


if __name__ == "__main__":
    h.run(main)
