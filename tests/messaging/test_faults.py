"""Faults on RabbitMQ: a dead or hanging broker, dropped connections, a killed consumer."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from rtkit.errors import BackendUnavailable
from rtkit.messaging import (
    DedupStore,
    Envelope,
    MessageConsumer,
    MessageProducer,
    RabbitMQService,
)
from rtkit.messaging.brokers.amqp import AmqpBrokerBackend

from ._helpers import MQ, TcpProxy, close_my_connections, eventually

pytestmark = pytest.mark.rabbitmq


async def test_a_broker_that_is_down_raises_backend_unavailable_quickly() -> None:
    service = RabbitMQService.from_url("amqp://guest:guest@127.0.0.1:1/", timeout=2.0)
    started = time.monotonic()
    with pytest.raises(BackendUnavailable):
        await service.start()
    assert time.monotonic() - started < 5
    started = time.monotonic()
    with pytest.raises(BackendUnavailable):  # a later operation tries to connect again
        await service.declare_queue("never-declared")
    assert time.monotonic() - started < 5
    await service.close()


async def test_a_confirm_that_never_comes_raises_within_the_timeout(
    amqp_url: str, rabbit: MQ
) -> None:
    parts = urlsplit(amqp_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5672)
    port = await proxy.start()
    service = RabbitMQService.from_url(
        f"amqp://guest:guest@127.0.0.1:{port}/", timeout=0.5, close_timeout=1.0
    )
    await service.start()
    queue = rabbit.queue()
    await service.declare_queue(queue)
    producer = MessageProducer(service)
    await producer.send(queue, "before")
    proxy.freeze()
    started = time.monotonic()
    with pytest.raises(BackendUnavailable):
        await producer.send(queue, "lost in the void")
    assert time.monotonic() - started < 3
    await proxy.close()  # now the broker is gone altogether
    started = time.monotonic()
    with pytest.raises(BackendUnavailable):
        await producer.send(queue, "nobody home")
    assert time.monotonic() - started < 3
    await service.close()


async def test_reconnect_restores_topology_and_consumers(rabbit: MQ) -> None:
    service = await rabbit.service()
    exchange, queue = rabbit.exchange(), rabbit.queue()
    await service.declare_exchange(exchange, "topic")
    await service.declare_queue(queue)
    await service.bind(queue, exchange, "order.*")
    got: list[Any] = []

    async def handle(payload: Any) -> None:
        got.append(payload)

    await MessageConsumer(service).consume(queue, handle, prefetch=10)
    producer = MessageProducer(service)
    await producer.publish(exchange, "order.created", "before")
    await eventually(lambda: got == ["before"])

    assert await close_my_connections(rabbit.test_id) == 1
    await producer.publish(exchange, "order.created", "after")  # waits for the reconnect
    await eventually(lambda: got == ["before", "after"], timeout=20)
    connection: AmqpBrokerBackend = service.backend  # type: ignore[assignment]
    # aio-pika restores the channels first and runs its reconnect callbacks after.
    await eventually(lambda: connection.reconnects >= 1)
    await eventually(lambda: connection.verifications >= 1)
    assert connection.last_verification == []  # checked after the reconnect, on the broker too
    assert await connection.verify() == []


async def test_a_consumer_channel_closed_by_the_broker_comes_back(rabbit: MQ) -> None:
    service = await rabbit.service()
    queue = rabbit.queue()
    await service.declare_queue(queue)
    got: list[Any] = []

    async def handle(payload: Any) -> None:
        got.append(payload)

    handle_ = await MessageConsumer(service).consume(queue, handle)
    producer = MessageProducer(service)
    await producer.send(queue, 1)
    await eventually(lambda: got == [1])
    consumer = handle_._broker_consumer
    underlay = await consumer.channel.get_underlay_channel()  # type: ignore[union-attr]
    with contextlib.suppress(Exception):
        await underlay.basic_ack(999_999)  # an unknown tag: RabbitMQ closes the channel
    await eventually(lambda: underlay.is_closed)
    await producer.send(queue, 2)
    # The ack of 1 may have been on its way when the channel died: then RabbitMQ
    # redelivers 1 (at-least-once), before or after 2.
    await eventually(lambda: 2 in got, timeout=20)
    assert set(got) == {1, 2} and got.count(2) == 1
    assert await consumer.channel.get_underlay_channel() is not underlay  # type: ignore[union-attr]
    connection: AmqpBrokerBackend = service.backend  # type: ignore[assignment]
    assert await connection.verify() == []


@pytest.mark.slow
async def test_stream_survives_dropped_connections_exactly_once_with_dedup(rabbit: MQ) -> None:
    total = 5000
    service = await rabbit.service(timeout=30.0)
    queue = rabbit.queue("stream")
    await service.declare_queue(queue)
    calls: collections.Counter[int] = collections.Counter()

    async def handle(payload: int) -> None:
        calls[payload] += 1

    dedup = DedupStore(window=600, lease=30)
    handle_ = await MessageConsumer(service, dedup=dedup).consume(queue, handle, prefetch=100)
    producer = MessageProducer(service, max_in_flight=200)

    async def produce() -> None:
        for start in range(0, total, 500):
            await asyncio.gather(
                *(producer.send(queue, i, message_id=f"m-{i}") for i in range(start, start + 500))
            )

    sending = asyncio.create_task(produce())
    await eventually(lambda: len(calls) >= total // 4, timeout=60)
    assert await close_my_connections(rabbit.test_id) >= 1
    await sending
    await eventually(lambda: len(calls) == total, timeout=60, what="every message handled")
    await asyncio.sleep(0.5)
    assert set(calls) == set(range(total))  # none lost
    assert max(calls.values()) == 1  # and, with the dedup store, none handled twice
    assert service.backend.reconnects >= 1  # type: ignore[attr-defined]
    assert handle_.handled == total


@pytest.mark.slow
async def test_unacked_messages_of_a_killed_consumer_are_redelivered(
    amqp_url: str, rabbit: MQ
) -> None:
    service = await rabbit.service()
    queue = rabbit.queue()
    await service.declare_queue(queue)
    producer = MessageProducer(service)
    for i in range(8):
        await producer.send(queue, i)
    script = Path(__file__).with_name("_killable_consumer.py")
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        amqp_url,
        queue,
        f"{rabbit.test_id}-child",
        "5",
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert child.stdout is not None
    taken = [int(await asyncio.wait_for(child.stdout.readline(), 30)) for _ in range(5)]
    child.send_signal(signal.SIGKILL)
    await child.wait()

    got: dict[int, Envelope] = {}

    async def handle(payload: int, envelope: Envelope) -> None:
        got[payload] = envelope

    await MessageConsumer(service).consume(queue, handle)
    await eventually(lambda: len(got) == 8, timeout=30)
    assert {i for i, env in got.items() if env.redelivered} == set(taken)
