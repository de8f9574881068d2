"""Messaging throughput: rtkit against raw aio-pika and FastStream's RabbitBroker, in one run.

Three figures per library, in messages per second, on RabbitMQ:

* ``publish seq``: confirmed, persistent publishes one after another;
* ``publish conc``: confirmed, persistent publishes with bounded concurrency (100 in flight
  for every library; rtkit also with its default window of 1,000);
* ``consume``: a prefilled queue consumed with prefetch 100, each message acked.

Run: ``python benchmarks/messaging.py [AMQP_URL] [--quick]``. The best of two rounds is kept
(the second runs the libraries in reverse order).
Wall-clock rates swing with other load on the machine; the client CPU time per message
(``time.process_time``) is the steadier comparison.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import aio_pika

from rtkit.messaging import MessageConsumer, MessageProducer, RabbitMQService

URL = next((a for a in sys.argv[1:] if "://" in a), None) or os.environ.get(
    "RTKIT_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"
)
QUICK = "--quick" in sys.argv
N_SEQ = 500 if QUICK else 2000
N_CONC = 2000 if QUICK else 20000
N_CONSUME = 2000 if QUICK else 20000
WINDOW = 100
ROUNDS = 1 if QUICK else 2


def qname(lib: str) -> str:
    return f"rtkit-bench-{lib}-{uuid.uuid4().hex[:8]}"


def body(i: int) -> bytes:
    return json.dumps({"i": i, "payload": "x" * 64}).encode()


async def bounded(n: int, window: int, send: Callable[[int], Awaitable[Any]]) -> None:
    sem = asyncio.Semaphore(window)

    async def one(i: int) -> None:
        async with sem:
            await send(i)

    await asyncio.gather(*(one(i) for i in range(n)))


class Figure(NamedTuple):
    """Messages per second (wall clock) and client CPU microseconds per message."""

    rate: float
    cpu_us: float


async def timed(n: int, run: Callable[[], Awaitable[Any]]) -> Figure:
    started, cpu = time.perf_counter(), time.process_time()
    await run()
    return Figure(n / (time.perf_counter() - started), 1e6 * (time.process_time() - cpu) / n)


class Admin:
    """Declares, prefills and deletes the benchmark queues with raw aio-pika."""

    async def start(self) -> None:
        self.conn = await aio_pika.connect(URL)
        self.ch = await self.conn.channel(publisher_confirms=True)

    async def queue(self, lib: str) -> str:
        name = qname(lib)
        await self.ch.declare_queue(name, durable=True)
        return name

    async def prefill(self, queue: str, n: int) -> None:
        ex = self.ch.default_exchange

        async def send(i: int) -> None:
            await ex.publish(
                aio_pika.Message(body(i), delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=queue,
            )

        await bounded(n, 500, send)

    async def delete(self, queue: str) -> None:
        await self.ch.queue_delete(queue)

    async def close(self) -> None:
        await self.conn.close()


class Tally:
    """Counts handled messages; ``done`` is set at ``n``."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.count = 0
        self.done = asyncio.Event()

    def add(self) -> None:
        self.count += 1
        if self.count >= self.n:
            self.done.set()


# --------------------------------------------------------------------------- aio-pika


async def bench_aio_pika(admin: Admin) -> dict[str, Figure]:
    conn = await aio_pika.connect(URL)
    ch = await conn.channel(publisher_confirms=True)
    ex = ch.default_exchange
    queue = await admin.queue("aiopika")

    async def send(i: int) -> None:
        await ex.publish(
            aio_pika.Message(
                body(i),
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=uuid.uuid4().hex,
                timestamp=time.time(),
                content_type="application/json",
            ),
            routing_key=queue,
        )

    async def seq() -> None:
        for i in range(N_SEQ):
            await send(i)

    out = {"publish seq": await timed(N_SEQ, seq)}
    out["publish conc"] = await timed(N_CONC, lambda: bounded(N_CONC, WINDOW, send))
    await admin.delete(queue)

    queue = await admin.queue("aiopika")
    await admin.prefill(queue, N_CONSUME)
    cch = await conn.channel()
    await cch.set_qos(prefetch_count=100)
    q = await cch.declare_queue(queue, passive=True)
    tally = Tally(N_CONSUME)

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        json.loads(message.body)
        await message.ack()
        tally.add()

    async def consume() -> None:
        await q.consume(on_message)
        await tally.done.wait()

    out["consume"] = await timed(N_CONSUME, consume)
    await conn.close()
    await admin.delete(queue)
    return out


# --------------------------------------------------------------------------- FastStream


async def bench_faststream(admin: Admin) -> dict[str, Figure]:
    from faststream.rabbit import Channel, RabbitBroker, RabbitQueue

    broker = RabbitBroker(URL, logger=None)
    await broker.connect()
    queue = await admin.queue("faststream")

    async def send(i: int) -> None:
        await broker.publish({"i": i, "payload": "x" * 64}, queue=queue, persist=True)

    async def seq() -> None:
        for i in range(N_SEQ):
            await send(i)

    out = {"publish seq": await timed(N_SEQ, seq)}
    out["publish conc"] = await timed(N_CONC, lambda: bounded(N_CONC, WINDOW, send))
    await broker.stop()
    await admin.delete(queue)

    queue = await admin.queue("faststream")
    await admin.prefill(queue, N_CONSUME)
    consumer = RabbitBroker(URL, logger=None)
    tally = Tally(N_CONSUME)

    @consumer.subscriber(RabbitQueue(queue, durable=True), channel=Channel(prefetch_count=100))
    async def handle(payload: dict[str, Any]) -> None:
        tally.add()

    async def consume() -> None:
        await consumer.start()
        await tally.done.wait()

    out["consume"] = await timed(N_CONSUME, consume)
    await consumer.stop()
    await admin.delete(queue)
    return out


# --------------------------------------------------------------------------- rtkit


async def bench_rtkit(admin: Admin) -> dict[str, Figure]:
    service = RabbitMQService.from_url(URL, connection_name="rtkit-bench")
    await service.start()
    queue = await admin.queue("rtkit")
    payload = {"payload": "x" * 64}
    seq_producer = MessageProducer(service)

    async def seq() -> None:
        for i in range(N_SEQ):
            await seq_producer.send(queue, {"i": i, **payload})

    out = {"publish seq": await timed(N_SEQ, seq)}
    p100 = MessageProducer(service, max_in_flight=WINDOW)
    messages = [{"i": i, **payload} for i in range(N_CONC)]
    out["publish conc"] = await timed(N_CONC, lambda: p100.send_many(queue, messages))
    wide = MessageProducer(service)  # the default confirm window (1,000)
    out["publish conc (window 1000)"] = await timed(N_CONC, lambda: wide.send_many(queue, messages))
    await admin.delete(queue)

    queue = await admin.queue("rtkit")
    await admin.prefill(queue, N_CONSUME)
    tally = Tally(N_CONSUME)

    async def handle(payload: dict[str, Any]) -> None:
        tally.add()

    async def consume() -> None:
        await MessageConsumer(service).consume(queue, handle, prefetch=100)
        await tally.done.wait()

    out["consume"] = await timed(N_CONSUME, consume)
    await service.close()
    await admin.delete(queue)
    return out


async def main() -> None:
    admin = Admin()
    await admin.start()
    results: dict[str, dict[str, Figure]] = {}
    benches = {"aio-pika": bench_aio_pika, "FastStream": bench_faststream, "rtkit": bench_rtkit}
    try:
        for round_ in range(ROUNDS):
            order = list(benches.items())
            for lib, bench in order if round_ % 2 == 0 else reversed(order):
                figures = await bench(admin)
                best = results.setdefault(lib, {})
                for key, value in figures.items():
                    old = best.get(key, Figure(0.0, float("inf")))
                    best[key] = Figure(max(old.rate, value.rate), min(old.cpu_us, value.cpu_us))
    finally:
        await admin.close()

    rows = ["publish seq", "publish conc", "publish conc (window 1000)", "consume"]
    print(f"best of {ROUNDS} round(s); ratios against raw aio-pika (higher is better)")
    for title, metric, higher_is_better in (
        ("messages/s", "rate", True),
        ("client CPU us/message", "cpu_us", False),
    ):
        print(f"\n{title:<28}{'aio-pika':>10}{'FastStream':>18}{'rtkit':>18}")
        for row in rows:
            base = results["aio-pika"]
            ref = getattr(base[row if row in base else "publish conc"], metric)
            cells = [f"{getattr(base[row], metric):>10.0f}" if row in base else f"{'-':>10}"]
            for lib in ("FastStream", "rtkit"):
                figure = results[lib].get(row)
                if figure is None:
                    cells.append(f"{'-':>18}")
                else:
                    value = getattr(figure, metric)
                    ratio = value / ref if higher_is_better else ref / value
                    cells.append(f"{value:>9.0f} ({ratio:4.2f}x)")
            print(f"{row:<28}{''.join(cells)}")
    print("\n(rtkit's 'window 1000' row is compared with aio-pika's 100-in-flight figure)")


if __name__ == "__main__":
    asyncio.run(main())
