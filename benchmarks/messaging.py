"""Messaging on RabbitMQ: rtkit against aio-pika (and FastStream), configured as their users do.

Every side uses a robust connection (``aio_pika.connect_robust``, what rtkit uses),
persistent messages with a message id, a timestamp and a content type, and waits for
the broker's publisher confirm of each message (``mandatory`` too). Cases, each a
series of whole rounds (a round is the unit here: N messages), interleaved:

* confirmed publish, one after another: ``await producer.send(queue, payload)``
  against aio-pika ``await exchange.publish(message, routing_key)`` on a confirm
  channel, and FastStream ``await broker.publish(payload, queue=..., persist=True)``;
* confirmed publish, 100 in flight: rtkit ``MessageProducer(max_in_flight=100)
  .send_many(queue, payloads)`` against 100 concurrent aio-pika / FastStream publishes
  (an ``asyncio.Semaphore(100)``);
* in both publish cases, the floor under aio-pika: aiormq's ``channel.basic_publish``
  on a confirm channel with the same properties, awaiting the confirm (what aio-pika
  could at best be on aiormq; rtkit encodes and queues a publish's frames itself, on
  aiormq's connection, so it can be faster than this);
* consume with prefetch 100, one ack per message after the handler: rtkit's
  ``MessageConsumer.consume`` against an aio-pika ``queue.consume`` callback that
  decodes the JSON and awaits ``message.ack()``. On the wire rtkit coalesces the acks
  of handlers that finish in the same event-loop iteration into one ``basic.ack``
  with ``multiple=True``; aio-pika sends one ``basic.ack`` per message. Both start
  consuming inside the timed window (one round trip each) from a queue filled
  beforehand.

Besides the rate, each round records the client's CPU per message (this process)
and the broker's (the ``beam.smp`` process, read from ``/proc`` when RabbitMQ runs
on this machine), and how busy the broker was (CPU seconds per wall second; on
this 2-core machine 2.0 is every core).

    python benchmarks/messaging.py [--quick] [--rounds N] [--amqp URL] [--write-docs]
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import _harness as h
import aio_pika
import aiormq
from pamqp import commands as amqp

from rtkit.messaging import MessageConsumer, MessageProducer, RabbitMQService

WINDOW = 100


def body(i: int) -> dict[str, Any]:
    return {"i": i, "payload": "x" * 64}


def broker_pid() -> int | None:
    """The RabbitMQ server's process on this machine (``beam.smp``), if any."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "beam.smp":
                    return int(entry.name)
            except OSError:
                continue
    return None


def cpu_of(pid: int | None) -> float:
    """CPU seconds (user + system) the process ``pid`` used so far; 0 if unknown."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def bounded(n: int, window: int, send: Callable[[int], Awaitable[Any]]) -> None:
    sem = asyncio.Semaphore(window)

    async def one(i: int) -> None:
        async with sem:
            await send(i)

    await asyncio.gather(*(one(i) for i in range(n)))


class Tally:
    def __init__(self, n: int) -> None:
        self.n, self.count, self.done = n, 0, asyncio.Event()

    def add(self) -> None:
        self.count += 1
        if self.count >= self.n:
            self.done.set()


class Meter:
    """Runs one round and records its rate, the client's and the broker's CPU."""

    def __init__(self, broker: int | None) -> None:
        self.broker = broker
        self.client_us: dict[str, list[float]] = {}
        self.broker_us: dict[str, list[float]] = {}
        self.broker_busy: dict[str, list[float]] = {}
        self.client_busy: dict[str, list[float]] = {}

    def wrap(self, name: str, n: int, run: Callable[[], Awaitable[Any]]) -> h.Measure:
        async def measure() -> float:
            wall, cpu, broker = time.perf_counter(), time.process_time(), cpu_of(self.broker)
            await run()
            wall = time.perf_counter() - wall
            cpu = time.process_time() - cpu
            broker = cpu_of(self.broker) - broker
            self.client_us.setdefault(name, []).append(1e6 * cpu / n)
            self.broker_us.setdefault(name, []).append(1e6 * broker / n)
            self.broker_busy.setdefault(name, []).append(broker / wall)
            self.client_busy.setdefault(name, []).append(cpu / wall)
            return n / wall

        return measure


async def main() -> None:
    parser = h.arguments(__doc__, rounds=10)
    parser.add_argument(
        "--amqp", default=os.environ.get("RTKIT_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    )
    args = parser.parse_args()
    rounds = h.rounds_of(args, quick=2)
    n_seq, n_conc, n_consume = (300, 2000, 2000) if args.quick else (500, 4000, 4000)
    run = h.Run("messaging", args, ["aio-pika", "aiormq", "faststream"])
    url = args.amqp
    meter = Meter(broker_pid())
    if meter.broker is None:
        run.note("RabbitMQ does not run on this machine: its CPU is not measured.")

    from faststream.rabbit import RabbitBroker

    admin = await aio_pika.connect_robust(url)
    admin_ch = await admin.channel(publisher_confirms=True)
    run.server("RabbitMQ", str(admin.transport.connection.server_properties.get("version", "?")))
    queues, declared = {}, []
    for lib in ("rtkit", "aiopika", "faststream", "aiormq"):
        queues[lib] = f"rtkit-bench-{lib}-{uuid.uuid4().hex[:8]}"
        declared.append(await admin_ch.declare_queue(queues[lib], durable=True))

    service = RabbitMQService.from_url(url, connection_name="rtkit-bench")
    await service.start()
    seq_producer = MessageProducer(service)
    window_producer = MessageProducer(service, max_in_flight=WINDOW)
    peer = await aio_pika.connect_robust(url)
    peer_ch = await peer.channel(publisher_confirms=True)
    exchange = peer_ch.default_exchange
    stream = RabbitBroker(url, logger=None)
    await stream.connect()
    raw = await aiormq.connect(url)
    raw_ch = await raw.channel(publisher_confirms=True)

    async def aio_send(i: int) -> None:
        await exchange.publish(
            aio_pika.Message(
                json.dumps(body(i)).encode(),
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=uuid.uuid4().hex,
                timestamp=time.time(),
                content_type="application/json",
            ),
            routing_key=queues["aiopika"],
        )

    async def floor_send(i: int) -> None:
        props = amqp.Basic.Properties(
            content_type="application/json",
            delivery_mode=2,
            message_id=uuid.uuid4().hex,
            timestamp=datetime.now(UTC),
        )
        await raw_ch.basic_publish(
            json.dumps(body(i)).encode(),
            routing_key=queues["aiormq"],
            properties=props,
            mandatory=True,
        )

    async def stream_send(i: int) -> None:
        await stream.publish(body(i), queue=queues["faststream"], persist=True)

    async def rtkit_seq() -> None:
        for i in range(n_seq):
            await seq_producer.send(queues["rtkit"], body(i))

    async def aio_seq() -> None:
        for i in range(n_seq):
            await aio_send(i)

    async def floor_seq() -> None:
        for i in range(n_seq):
            await floor_send(i)

    async def stream_seq() -> None:
        for i in range(n_seq):
            await stream_send(i)

    payloads = [body(i) for i in range(n_conc)]

    async def purge() -> None:
        for queue in declared:
            await queue.purge()

    labels = {
        "rtkit": "rtkit MessageProducer",
        "aio-pika": "aio-pika exchange.publish",
        "faststream": "FastStream broker.publish",
        "aiormq": "aiormq basic_publish (aio-pika's floor)",
    }
    try:
        for case, n, measures, goal in (
            (
                "RabbitMQ confirmed publish, sequential",
                n_seq,
                {
                    "rtkit": rtkit_seq,
                    "aio-pika": aio_seq,
                    "faststream": stream_seq,
                    "aiormq": floor_seq,
                },
                None,
            ),
            (
                f"RabbitMQ confirmed publish, {WINDOW} in flight",
                n_conc,
                {
                    "rtkit": lambda: window_producer.send_many(queues["rtkit"], payloads),
                    "aio-pika": lambda: bounded(n_conc, WINDOW, aio_send),
                    "faststream": lambda: bounded(n_conc, WINDOW, stream_send),
                    "aiormq": lambda: bounded(n_conc, WINDOW, floor_send),
                },
                "≥ 1.3x",
            ),
        ):
            wrapped = {name: meter.wrap(f"{case}/{name}", n, m) for name, m in measures.items()}
            figures: dict[str, list[float]] = {name: [] for name in wrapped}
            for round_ in range(rounds):
                for name in h.order(list(wrapped), round_):
                    figures[name].append(await wrapped[name]())
                    await purge()
            run.add(
                h.compare(
                    case,
                    figures,
                    "rtkit",
                    ["aio-pika", "faststream", "aiormq"],
                    unit="msg/s",
                    goals={"aio-pika": goal} if goal else None,
                    labels=labels,
                )
            )
            cpu_rows(run, meter, case, list(wrapped), labels)

        # --- consume -------------------------------------------------------------
        consumer = MessageConsumer(service)
        aio_queue = await peer_ch.declare_queue(queues["aiopika"], passive=True)
        consume_ch = await peer.channel()
        await consume_ch.set_qos(prefetch_count=WINDOW)
        aio_consume_queue = await consume_ch.declare_queue(queues["aiopika"], passive=True)
        del aio_queue

        async def prefill(queue: str) -> None:
            ex = admin_ch.default_exchange

            async def send(i: int) -> None:
                await ex.publish(
                    aio_pika.Message(
                        json.dumps(body(i)).encode(),
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        content_type="application/json",
                        message_id=uuid.uuid4().hex,
                    ),
                    routing_key=queue,
                )

            await bounded(n_consume, 500, send)

        async def rtkit_consume() -> None:
            tally = Tally(n_consume)

            async def handle(payload: dict[str, Any]) -> None:
                tally.add()

            handle_ = await consumer.consume(queues["rtkit"], handle, prefetch=WINDOW)
            await tally.done.wait()
            await handle_.stop()

        async def aio_consume() -> None:
            tally = Tally(n_consume)

            async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                json.loads(message.body)
                await message.ack()
                tally.add()

            tag = await aio_consume_queue.consume(on_message)
            await tally.done.wait()
            await aio_consume_queue.cancel(tag)

        consume_case = f"RabbitMQ consume, prefetch {WINDOW}, ack each"
        measures = {
            "rtkit": meter.wrap(f"{consume_case}/rtkit", n_consume, rtkit_consume),
            "aio-pika": meter.wrap(f"{consume_case}/aio-pika", n_consume, aio_consume),
        }
        figures = {name: [] for name in measures}
        for round_ in range(rounds):
            for name in h.order(list(measures), round_):
                await prefill(queues["rtkit" if name == "rtkit" else "aiopika"])
                figures[name].append(await measures[name]())
                await purge()
        consume_labels = {"rtkit": "rtkit MessageConsumer", "aio-pika": "aio-pika queue.consume"}
        run.add(
            h.compare(
                consume_case, figures, "rtkit", ["aio-pika"], unit="msg/s", labels=consume_labels
            )
        )
        cpu_rows(run, meter, consume_case, list(measures), consume_labels)
        run.note(
            "Acks: both sides ack each message after its handler returned; rtkit sends the "
            "acks of handlers that finished in the same event-loop iteration as one "
            "`basic.ack` with `multiple=True`, aio-pika one `basic.ack` per message."
        )
        run.note(
            "Client CPU = this process's CPU time per message; broker CPU = the RabbitMQ "
            "server's (`beam.smp`) per message, and its CPU seconds per wall second (2.0 "
            "is both cores of this machine). When the broker is that busy, it is the bound; "
            "a client busy near 1.0 (one core: the event loop is one thread) is bound by its "
            "own CPU per message."
        )
    finally:
        for queue in declared:
            await queue.delete(if_unused=False, if_empty=False)
        await stream.stop()
        await raw.close()
        await peer.close()
        await service.close()
        await admin.close()
    run.finish("messaging.md")


def cpu_rows(run: h.Run, meter: Meter, case: str, names: list[str], labels: dict[str, str]) -> None:
    """Per contender: client CPU and broker CPU per message, and how busy the broker was."""
    for name in names:
        key = f"{case}/{name}"
        run.add(
            [
                h.Row(case, f"{labels[name]}: client CPU", meter.client_us[key], "µs/msg"),
                h.Row(case, f"{labels[name]}: client busy", meter.client_busy[key], "CPU-s/s"),
                h.Row(case, f"{labels[name]}: broker CPU", meter.broker_us[key], "µs/msg"),
                h.Row(case, f"{labels[name]}: broker busy", meter.broker_busy[key], "CPU-s/s"),
            ]
        )


if __name__ == "__main__":
    h.run(main)
