"""EventBus against its peers: blinker and pyee in process, raw redis-py pub/sub on Redis.

Cases (each an interleaved series of short slices, see ``_harness.py``):

* in process, 1 and 10 async handlers: rtkit ``EventBus()`` ``await publish`` against
  blinker ``await Signal.send_async`` (timed until every handler ran) and pyee
  ``AsyncIOEventEmitter.emit`` (timed until every scheduled handler ran);
* Redis, awaited one by one: rtkit ``EventBus.from_url(redis)`` (the default bus, with
  no subscription in the publishing process) ``await publish`` against raw redis-py
  ``await client.publish(channel, json.dumps(data))``;
* Redis, 100 concurrent publishers: 100 tasks each awaiting rtkit's ``publish``, against
  raw redis-py sending pipelines of 100 ``PUBLISH`` (the fastest way raw redis-py has).

On Redis each side has a subscriber in another process (rtkit: an ``EventBus`` with a
``"*"`` handler; raw: redis-py ``pubsub.listen()`` decoding the JSON); after every slice
the harness waits, outside the timed window, until that subscriber got every message,
so neither side leaves a backlog for the other's slice, and checks that nothing was lost.

    python benchmarks/eventbus.py [--quick] [--rounds N] [--slice-ms MS] [--redis URL]
        [--no-redis] [--write-docs] [--baseline REF]

``--baseline REF`` also runs the in-process cases against rtkit as it was at git commit
REF (its ``src/rtkit``, imported as another package), interleaved with this tree's: the
ratio per round is what a change costs or gains (the telemetry overhead figure of the
observability guide comes from ``--baseline`` at the commit before telemetry, no tracer
provider configured).

Needs the ``bench`` extra (pyee, blinker).
"""

from __future__ import annotations

import asyncio
import importlib.util
import io
import json
import subprocess
import sys
import tarfile
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import _harness as h
import blinker
import pyee.asyncio
import redis.asyncio as aioredis

from rtkit import Event, EventBus

# --------------------------------------------------------------------------- in process


def load_baseline(ref: str) -> Any:
    """rtkit as it was at git ``ref``, imported as the package ``rtkit_baseline``."""
    archive = subprocess.run(
        ["git", "-C", str(h.ROOT), "archive", ref, "src/rtkit"], capture_output=True, check=True
    ).stdout
    target = Path(tempfile.mkdtemp(prefix="rtkit-baseline-"))
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    package = target / "src" / "rtkit"
    spec = importlib.util.spec_from_file_location(
        "rtkit_baseline", package / "__init__.py", submodule_search_locations=[str(package)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["rtkit_baseline"] = module
    spec.loader.exec_module(module)
    return module


async def rtkit_batch(handlers: int, bus_class: Any = EventBus) -> tuple[EventBus, h.Batch]:
    bus = bus_class()
    count = 0

    for _ in range(handlers):

        async def handler(event: Event[Any]) -> None:
            nonlocal count
            count += 1

        bus.subscribe("bench.event", handler)
    await bus.start()

    async def batch(n: int) -> None:
        nonlocal count
        count = 0
        publish = bus.publish
        for i in range(n):
            await publish("bench.event", {"i": i})
        assert count == n * handlers

    return bus, batch


def blinker_batch(handlers: int) -> tuple[list[Any], h.Batch]:
    signal = blinker.Signal()
    count = 0
    receivers = []
    for _ in range(handlers):

        async def handler(sender: Any, **kwargs: Any) -> None:
            nonlocal count
            count += 1

        receivers.append(handler)  # blinker holds receivers weakly
        signal.connect(handler)

    async def batch(n: int) -> None:
        nonlocal count
        count = 0
        send = signal.send_async
        for i in range(n):
            await send("bench", data={"i": i})
        assert count == n * handlers

    return receivers, batch


def pyee_batch(handlers: int) -> h.Batch:
    emitter = pyee.asyncio.AsyncIOEventEmitter()
    state = {"count": 0, "expected": 0}
    done = asyncio.Event()

    for _ in range(handlers):  # pyee keeps one copy of a function: one closure each

        async def handler(data: Any) -> None:
            state["count"] += 1
            if state["count"] == state["expected"]:
                done.set()

        emitter.add_listener("bench.event", handler)

    async def batch(n: int) -> None:
        state["count"], state["expected"] = 0, n * handlers
        done.clear()
        emit = emitter.emit
        for i in range(n):
            emit("bench.event", {"i": i})
        await done.wait()

    return batch


async def in_process(
    run: h.Run, rounds: int, slice_ms: float, baseline: tuple[str, Any] | None = None
) -> None:
    for handlers in (1, 10):
        bus, ours = await rtkit_batch(handlers)
        keep, blink = blinker_batch(handlers)
        batches = {"rtkit": ours, "blinker": blink, "pyee": pyee_batch(handlers)}
        peers = ["blinker", "pyee"]
        labels = {
            "rtkit": "rtkit EventBus() (memory)",
            "blinker": "blinker send_async",
            "pyee": "pyee AsyncIOEventEmitter",
        }
        old_bus = None
        if baseline is not None:
            ref, module = baseline
            old_bus, old = await rtkit_batch(handlers, module.EventBus)
            batches, peers = {"rtkit": ours, "baseline": old}, ["baseline"]
            labels["baseline"] = f"rtkit EventBus() at {ref}"
        figures = await h.alternate(batches, rounds=rounds, slice_ms=slice_ms)
        await bus.close()
        if old_bus is not None:
            await old_bus.close()
        del keep
        case = f"in process, {handlers} async handler{'s' if handlers > 1 else ''}"
        run.add(
            h.compare(
                case,
                figures,
                "rtkit",
                peers,
                unit="events/s",
                goals={"blinker": "≥ 1.1x"} if handlers == 1 else None,
                labels=labels,
            )
        )


# --------------------------------------------------------------------------- Redis


SUBSCRIBER = """
import asyncio, json, sys
import redis.asyncio as aioredis
from rtkit import EventBus

async def main(kind, url, name):
    count = 0
    def seen(*args):
        nonlocal count
        count += 1
    async def serve():
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        print("ready", flush=True)
        while line := await reader.readline():
            expected = int(line)
            for _ in range(3000):  # up to 30 s
                if count >= expected:
                    break
                await asyncio.sleep(0.01)
            print(count, flush=True)
    if kind == "raw":
        client = aioredis.Redis.from_url(url)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(name)
        async def read():
            async for message in pubsub.listen():
                json.loads(message["data"])
                seen()
        task = asyncio.create_task(read())
        await serve()
        task.cancel()
    else:
        async with EventBus.from_url(url, prefix=name) as bus:
            bus.subscribe("*", seen)
            await serve()

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
"""


class Subscriber:
    """A subscriber in another process that counts what it receives."""

    def __init__(self, kind: str, url: str, name: str) -> None:
        self.args = (kind, url, name)
        self.process: asyncio.subprocess.Process | None = None
        self.sent = 0
        self.lost = 0

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            SUBSCRIBER,
            *self.args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), 30)
        assert line.strip() == b"ready", line
        await asyncio.sleep(0.2)  # the subscription is confirmed before "ready"; be generous

    async def caught_up(self) -> None:
        """Wait until the subscriber received everything sent so far (outside the timing)."""
        assert self.process is not None and self.process.stdin and self.process.stdout
        self.process.stdin.write(b"%d\n" % self.sent)
        await self.process.stdin.drain()
        got = int(await asyncio.wait_for(self.process.stdout.readline(), 60))
        self.lost = self.sent - got

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


async def redis_cases(run: h.Run, url: str, rounds: int, slice_ms: float) -> None:
    tag = uuid.uuid4().hex[:8]
    channel = f"rtkit-bench-{tag}:raw"
    prefix = f"rtkit-bench-{tag}:"
    client = aioredis.Redis.from_url(url)
    run.server("Redis", (await client.info("server"))["redis_version"])
    bus = EventBus.from_url(url, prefix=prefix)
    await bus.start()
    subs = {"raw": Subscriber("raw", url, channel), "rtkit": Subscriber("bus", url, prefix)}
    for sub in subs.values():
        await sub.start()

    def counted(name: str, batch: Callable[[int], Awaitable[None]]) -> h.Batch:
        async def wrapped(n: int) -> None:
            subs[name].sent += n
            await batch(n)

        return wrapped

    async def raw_sequential(n: int) -> None:
        publish = client.publish
        for i in range(n):
            await publish(channel, json.dumps({"i": i}))

    async def rtkit_sequential(n: int) -> None:
        publish = bus.publish
        for i in range(n):
            await publish("bench.event", {"i": i})

    async def raw_pipelined(n: int) -> None:
        for start in range(0, n, 100):
            pipe = client.pipeline(transaction=False)
            for i in range(start, min(start + 100, n)):
                pipe.publish(channel, json.dumps({"i": i}))
            await pipe.execute()

    async def rtkit_concurrent(n: int) -> None:
        async def task(k: int) -> None:
            for i in range(k, n, 100):
                await bus.publish("bench.event", {"i": i})

        await asyncio.gather(*(task(k) for k in range(min(n, 100))))

    async def after(name: str) -> None:
        await subs[name].caught_up()

    labels = {
        "rtkit": "rtkit EventBus (Redis, default)",
        "raw": "raw redis-py publish",
    }
    try:
        for case, ours, theirs, goal, peer in (
            (
                "Redis, awaited one by one",
                rtkit_sequential,
                raw_sequential,
                "≥ 0.95x",
                "raw redis-py publish",
            ),
            (
                "Redis, 100 concurrent publishers",
                rtkit_concurrent,
                raw_pipelined,
                "≥ 0.8x",
                "raw redis-py, pipelines of 100",
            ),
        ):
            figures = await h.alternate(
                {"rtkit": counted("rtkit", ours), "raw": counted("raw", theirs)},
                rounds=rounds,
                slice_ms=slice_ms,
                after=after,
            )
            run.add(
                h.compare(
                    case,
                    figures,
                    "rtkit",
                    ["raw"],
                    unit="events/s",
                    goals={"raw": goal},
                    labels={**labels, "raw": peer},
                )
            )
        for name, sub in subs.items():
            run.note(
                f"{labels[name] if name == 'rtkit' else 'raw redis-py'}: its subscriber process "
                f"received {sub.sent - sub.lost:,} of {sub.sent:,} events"
            )
    finally:
        for sub in subs.values():
            await sub.stop()
        await bus.close()
        await client.aclose()


async def main() -> None:
    parser = h.arguments(__doc__, rounds=30)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--no-redis", action="store_true")
    parser.add_argument("--baseline", metavar="REF", help="compare with rtkit at git REF")
    args = parser.parse_args()
    rounds = h.rounds_of(args)
    run = h.Run("eventbus", args, ["blinker", "pyee"])
    baseline = None if args.baseline is None else (args.baseline, load_baseline(args.baseline))
    await in_process(run, rounds, args.slice_ms, baseline)
    if baseline is not None:  # a comparison of two trees: nothing else, no docs
        run.finish(None)
        return
    if not args.no_redis:
        await redis_cases(run, args.redis, rounds, args.slice_ms)
    run.finish("eventbus.md")


if __name__ == "__main__":
    h.run(main)
