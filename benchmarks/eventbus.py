"""EventBus throughput against its peers, in one run.

In-process: publish N events to 1 and to 10 async handlers, timed until every
handler ran, with rtkit's memory EventBus, blinker (``Signal.send_async``) and
pyee (``AsyncIOEventEmitter``).

Redis: publish N events with the subscriber in another process, with rtkit's
Redis EventBus and with raw redis-py pub/sub: awaited one by one (throughput
and p50 latency), and from 100 concurrent tasks (raw: pipelines of 100).
Each Redis figure is the publishing side's rate; the table also says whether
the subscriber process got every message.

    python benchmarks/eventbus.py [--events N] [--redis URL] [--no-redis]

Needs the ``bench`` extra (pyee, blinker). Never part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import blinker
import pyee.asyncio
import redis.asyncio as aioredis

from rtkit import Event, EventBus

REPEATS = 5

# --------------------------------------------------------------------------- in process


async def bench_rtkit(events: int, handlers: int) -> float:
    count = 0

    async with EventBus() as bus:
        for _ in range(handlers):

            async def handler(event: Event[Any]) -> None:
                nonlocal count
                count += 1

            bus.subscribe("bench.event", handler)
        started = time.perf_counter()
        for i in range(events):
            await bus.publish("bench.event", {"i": i})
        elapsed = time.perf_counter() - started
    assert count == events * handlers
    return events / elapsed


async def bench_blinker(events: int, handlers: int) -> float:
    count = 0
    signal = blinker.Signal()
    receivers = []
    for _ in range(handlers):

        async def handler(sender: Any, **kwargs: Any) -> None:
            nonlocal count
            count += 1

        receivers.append(handler)  # blinker holds receivers weakly
        signal.connect(handler)
    started = time.perf_counter()
    for i in range(events):
        await signal.send_async("bench", data={"i": i})
    elapsed = time.perf_counter() - started
    assert count == events * handlers
    return events / elapsed


async def bench_pyee(events: int, handlers: int) -> float:
    count = 0
    expected = events * handlers
    done = asyncio.Event()
    emitter = pyee.asyncio.AsyncIOEventEmitter()

    for _ in range(handlers):  # pyee keeps one copy of a function: one closure each

        async def handler(data: Any) -> None:
            nonlocal count
            count += 1
            if count == expected:
                done.set()

        emitter.add_listener("bench.event", handler)
    started = time.perf_counter()
    for i in range(events):
        emitter.emit("bench.event", {"i": i})
    await done.wait()
    elapsed = time.perf_counter() - started
    return events / elapsed


async def best_of(runs: dict[str, Callable[[], Awaitable[float]]]) -> dict[str, float]:
    """Each run REPEATS times, interleaved (the machine's load drifts), keeping the best."""
    rates = dict.fromkeys(runs, 0.0)
    for _ in range(REPEATS):
        for name, run in runs.items():
            rates[name] = max(rates[name], await run())
    return rates


# --------------------------------------------------------------------------- Redis


SUBSCRIBER = """
import asyncio, sys
import redis.asyncio as aioredis
from rtkit import EventBus

async def main(kind, url, name, expected):
    count = 0
    done = asyncio.Event()
    def seen(*args):
        nonlocal count
        count += 1
        if count >= expected:
            done.set()
    async def wait_and_report(ready):
        print(ready, flush=True)
        try:
            await asyncio.wait_for(done.wait(), 120)
        except TimeoutError:
            pass
        print(count, flush=True)
    if kind == "raw":
        client = aioredis.Redis.from_url(url)
        pubsub = client.pubsub()
        await pubsub.subscribe(name)
        async def read():
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
                if message is not None:
                    seen()
        reader = asyncio.create_task(read())
        await wait_and_report("ready")
        reader.cancel()
    else:
        async with EventBus.from_url(url, prefix=name) as bus:
            bus.subscribe("*", seen)
            await wait_and_report("ready")

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
"""


class Subscriber:
    """A subscriber in another process that counts what it receives."""

    def __init__(self, kind: str, url: str, name: str, expected: int) -> None:
        self.args = (kind, url, name, str(expected))
        self.process: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> Subscriber:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", SUBSCRIBER, *self.args, stdout=asyncio.subprocess.PIPE
        )
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), 30)
        assert line.strip() == b"ready", line
        return self

    async def received(self) -> int:
        assert self.process is not None and self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), 150)
        return int(line)

    async def __aexit__(self, *exc: object) -> None:
        assert self.process is not None
        if self.process.returncode is None:
            self.process.kill()
        await self.process.wait()


async def raw_sequential(client: aioredis.Redis, channel: str, events: int) -> list[float]:
    latencies = []
    for i in range(events):
        started = time.perf_counter()
        await client.publish(channel, json.dumps({"i": i}))
        latencies.append(time.perf_counter() - started)
    return latencies


async def raw_pipelined(client: aioredis.Redis, channel: str, events: int) -> None:
    for start in range(0, events, 100):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(start + 100, events)):
            pipe.publish(channel, json.dumps({"i": i}))
        await pipe.execute()


async def bus_sequential(bus: EventBus, events: int) -> list[float]:
    latencies = []
    for i in range(events):
        started = time.perf_counter()
        await bus.publish("bench.event", {"i": i})
        latencies.append(time.perf_counter() - started)
    return latencies


async def bus_concurrent(bus: EventBus, events: int) -> None:
    async def task(n: int) -> None:
        for i in range(n, events, 100):
            await bus.publish("bench.event", {"i": i})

    await asyncio.gather(*(task(n) for n in range(100)))


async def run_raw(
    client: aioredis.Redis, url: str, mode: str, events: int
) -> tuple[float, float, bool]:
    channel = f"rtkit-bench-{uuid.uuid4().hex[:8]}:raw"
    p50 = 0.0
    async with Subscriber("raw", url, channel, events) as sub:
        started = time.perf_counter()
        if mode == "sequential":
            p50 = statistics.median(await raw_sequential(client, channel, events)) * 1e6
        else:
            await raw_pipelined(client, channel, events)
        rate = events / (time.perf_counter() - started)
        return rate, p50, await sub.received() == events


async def run_bus(
    url: str, mode: str, events: int, publish_only: bool
) -> tuple[float, float, bool]:
    prefix = f"rtkit-bench-{uuid.uuid4().hex[:8]}:"
    p50 = 0.0
    async with (
        Subscriber("bus", url, prefix, events) as sub,
        EventBus.from_url(url, prefix=prefix, publish_only=publish_only) as bus,
    ):
        started = time.perf_counter()
        if mode == "sequential":
            p50 = statistics.median(await bus_sequential(bus, events)) * 1e6
        else:
            await bus_concurrent(bus, events)
        rate = events / (time.perf_counter() - started)
        return rate, p50, await sub.received() == events


async def redis_rows(url: str, events: int) -> list[tuple[str, float, float, str, bool]]:
    rows = []
    client = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        for mode in ("sequential", "concurrent"):
            runs = {
                "raw": lambda m=mode: run_raw(client, url, m, events),
                "bus": lambda m=mode: run_bus(url, m, events, False),
                "bus, publish_only": lambda m=mode: run_bus(url, m, events, True),
            }
            best: dict[str, tuple[float, float]] = {}
            all_received = dict.fromkeys(runs, True)
            for _ in range(REPEATS):  # interleaved: the machine's load drifts
                for name, run in runs.items():
                    rate, p50, ok = await run()
                    all_received[name] = all_received[name] and ok
                    if name not in best or rate > best[name][0]:
                        best[name] = (rate, p50)
            label = "awaited one by one" if mode == "sequential" else "100 concurrent publishers"
            raw_rate = best["raw"][0]
            for name, (rate, p50) in best.items():
                if name == "raw":
                    who = "raw redis-py" + ("" if mode == "sequential" else " pipelined x100")
                    ratio = ""
                else:
                    who = "rtkit EventBus" + name[3:]
                    ratio = f"{rate / raw_rate:.2f}x raw"
                rows.append((f"{label}: {who}", rate, p50, ratio, all_received[name]))
    finally:
        await client.aclose()
    return rows


# --------------------------------------------------------------------------- main


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--no-redis", action="store_true")
    args = parser.parse_args()
    events = args.events

    print(f"In-process publish, {events} events, best of {REPEATS}, timed until all handlers ran")
    print(f"{'handlers':>8}  {'library':<28}{'events/s':>12}  ratio")
    for handlers in (1, 10):
        rates = await best_of(
            {
                "rtkit": lambda h=handlers: bench_rtkit(events, h),
                "blinker": lambda h=handlers: bench_blinker(events, h),
                "pyee": lambda h=handlers: bench_pyee(events, h),
            }
        )
        rtkit_rate, blinker_rate, pyee_rate = rates["rtkit"], rates["blinker"], rates["pyee"]
        print(f"{handlers:>8}  {'blinker send_async':<28}{blinker_rate:>12,.0f}")
        print(f"{handlers:>8}  {'pyee AsyncIOEventEmitter':<28}{pyee_rate:>12,.0f}")
        print(
            f"{handlers:>8}  {'rtkit EventBus (memory)':<28}{rtkit_rate:>12,.0f}  "
            f"{rtkit_rate / blinker_rate:.2f}x blinker, {rtkit_rate / pyee_rate:.2f}x pyee"
        )

    if args.no_redis:
        return
    redis_events = max(events // 4, 1000)
    print(
        f"\nRedis publish, {redis_events} events, subscriber in another process, best of {REPEATS}"
    )
    print(f"{'':<62}{'events/s':>10}{'p50 µs':>9}  {'ratio':<10} all received")
    for label, rate, p50, ratio, ok in await redis_rows(args.redis, redis_events):
        p50_text = f"{p50:.0f}" if p50 else "-"
        print(f"{label:<62}{rate:>10,.0f}{p50_text:>9}  {ratio:<10} {ok}")


if __name__ == "__main__":
    asyncio.run(main())
