"""Poison messages and bad headers (issue 10, items 16 and 17), on both brokers.

Whatever a message holds, it ends acked, retried or dead-lettered with a
reason, and the consumer goes on; headers the broker cannot carry are refused
before anything is sent, so they never break the connection.
"""

from __future__ import annotations

import asyncio
import math
import struct
from typing import Any

import pydantic
import pytest

from rtkit.errors import PayloadTooLarge, ValidationError
from rtkit.messaging import DedupStore, Envelope, MessageConsumer, MessageProducer, RetryPolicy
from rtkit.messaging.brokers.base import OutgoingMessage
from rtkit_testing import PrivateRedis

from ._helpers import MQ, Hostile, drain, eventually, nested_table


class Order(pydantic.BaseModel):
    order_id: int


class Seen:
    """A handler that records payloads and envelopes."""

    def __init__(self, *, fail: bool = False) -> None:
        self.items: list[tuple[Any, Envelope]] = []
        self.fail = fail

    async def __call__(self, payload: Any, envelope: Envelope) -> None:
        self.items.append((payload, envelope))
        if self.fail:
            raise RuntimeError("no")

    def ids(self) -> list[str]:
        return [envelope.message_id for _, envelope in self.items]


def _reconnects(mq: MQ, *services: Any) -> int:
    return sum(getattr(s.backend, "reconnects", 0) for s in services) if mq.kind == "amqp" else 0


# -- 16: poison messages ---------------------------------------------------------


@pytest.mark.parametrize("model", [None, Order], ids=["json", "model"])
async def test_bodies_nested_100000_deep_are_dead_lettered_and_the_consumer_goes_on(
    mq: MQ, model: Any
) -> None:
    service = await mq.service()
    queue = mq.queue()
    await service.declare_queue(queue)
    seen = Seen()
    handle = await MessageConsumer(service).consume(queue, seen, prefetch=2, model=model)
    deep = b"[" * 100_000 + b"]" * 100_000
    async with Hostile(mq) as hostile:
        for n in range(2):  # two of them fill the prefetch window of 2
            await hostile.publish(service, queue, deep, message_id=f"deep-{n}")
        await hostile.publish(service, queue, b"{" * 50_000, message_id="unclosed")
        await hostile.publish(service, queue, b'{"order_id": 1}', message_id="sentinel")

    await eventually(lambda: seen.ids() == ["sentinel"], what="the sentinel behind them")
    dead = await drain(service, f"{queue}.dlq", expect=3)
    assert {d.message_id: d.reason for d in dead} == {
        "deep-0": "too_deep",
        "deep-1": "too_deep",
        "unclosed": "too_deep",
    }
    assert "32 levels" in (dead[0].error or "")
    await eventually(
        lambda: (handle.handled, handle.dead_lettered, handle.internal_errors) == (1, 3, 0)
    )  # counted once confirmed
    assert await service.get(queue) is None


async def test_a_producer_refuses_bodies_consumers_would_dead_letter(mq: MQ) -> None:
    service = await mq.service()
    queue = mq.queue()
    await service.declare_queue(queue)
    deep: Any = "bottom"
    for _ in range(40):
        deep = [deep]
    with pytest.raises(ValidationError, match="deeper than 32"):
        await MessageProducer(service).send(queue, deep)
    assert await service.get(queue) is None


ABSURD_COUNTS: list[Any] = [
    "inf",
    "nan",
    "-1",
    "9" * 5000,
    2**63 - 1,
    -(2**63),
    3e38,  # pamqp sends 32-bit floats
    -5,
    [1, 2],
    {"n": 1},
    True,
    None,
    "",
]


async def test_absurd_retry_counts_read_as_numbers_and_the_consumer_goes_on(mq: MQ) -> None:
    service = await mq.service()
    queue = mq.queue()
    await service.declare_queue(queue)
    seen = Seen()
    await MessageConsumer(service).consume(queue, seen, prefetch=2)
    async with Hostile(mq) as hostile:
        for n, count in enumerate(ABSURD_COUNTS):
            headers = {"x-retry-count": count, "x-attempts": count}
            await hostile.publish(service, queue, b"1", headers=headers, message_id=f"m{n}")

    await eventually(lambda: len(seen.items) == len(ABSURD_COUNTS))
    attempts = {env.message_id: env.attempt for _, env in seen.items}
    assert all(isinstance(a, int) and 1 <= a <= 2**31 for a in attempts.values())
    assert attempts["m0"] == attempts["m1"] == attempts["m2"] == attempts["m3"] == 1
    assert attempts["m4"] == 2**31  # clamped: a handler failure dead-letters it at once


async def test_infinite_and_nan_retry_counts_on_the_memory_broker() -> None:
    """Only a broker's own internals can carry these (RabbitMQ refuses them on the wire)."""
    mq = MQ("memory", "memory://")
    try:
        service = await mq.service()
        queue = mq.queue()
        await service.declare_queue(queue)
        seen, failing = Seen(), Seen(fail=True)
        await MessageConsumer(service).consume(queue, seen, prefetch=2)
        other = mq.queue()
        await service.declare_queue(other)
        handle = await MessageConsumer(service).consume(
            other, failing, prefetch=2, retry=RetryPolicy.never()
        )
        async with Hostile(mq) as hostile:
            for value in (math.inf, -math.inf, math.nan):
                for target in (queue, other):
                    await hostile.publish(
                        service, target, b"1", headers={"x-retry-count": value}, message_id="m"
                    )
        await eventually(lambda: len(seen.items) == 3 and handle.dead_lettered == 3)
        assert [env.attempt for _, env in seen.items] == [1, 1, 1]
        dead = await drain(service, f"{other}.dlq", expect=3)
        assert {d.reason for d in dead} == {"handler_failed"}
    finally:
        await mq.cleanup()


async def test_an_unexpected_failure_dead_letters_with_a_reason(
    mq: MQ, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = await mq.service()
    queue = mq.queue()
    await service.declare_queue(queue)
    seen = Seen()
    handle = await MessageConsumer(service).consume(queue, seen, prefetch=1)

    def broken(msg: OutgoingMessage) -> None:
        if msg.message_id == "poison":
            raise KeyError("a bug in rtkit")

    monkeypatch.setattr(handle, "_problem", broken)  # the pipeline itself fails
    producer = MessageProducer(service)
    await producer.send(queue, "x", message_id="poison")
    await producer.send(queue, "y", message_id="fine")
    await eventually(lambda: seen.ids() == ["fine"])
    [dead] = await drain(service, f"{queue}.dlq", expect=1)
    assert (dead.reason, dead.error_type) == ("internal_error", "KeyError")
    await eventually(
        lambda: (handle.internal_errors, handle.dead_lettered) == (1, 1)
    )  # counted once confirmed


async def test_a_handler_that_raises_cancelled_error_itself_fails_like_any_other(mq: MQ) -> None:
    service = await mq.service()
    queue = mq.queue()
    await service.declare_queue(queue)
    seen = Seen()

    async def confused(payload: Any, envelope: Envelope) -> None:
        if payload == "cancel":
            raise asyncio.CancelledError("not really cancelled")
        await seen(payload, envelope)

    handle = await MessageConsumer(service).consume(
        queue, confused, prefetch=1, retry=RetryPolicy.never()
    )
    producer = MessageProducer(service)
    await producer.send(queue, "cancel", message_id="confused")
    await producer.send(queue, "next", message_id="next")
    await eventually(lambda: seen.ids() == ["next"])
    [dead] = await drain(service, f"{queue}.dlq", expect=1)
    assert (dead.message_id, dead.reason, dead.error_type) == (
        "confused",
        "handler_failed",
        "RuntimeError",
    )
    await eventually(lambda: handle.dead_lettered == 1)


@pytest.mark.redis
async def test_a_dedup_store_outage_requeues_instead_of_stalling(
    mq: MQ, private_redis: PrivateRedis
) -> None:
    """A claim that fails (Redis down) used to escape: the delivery stayed unacknowledged."""
    service = await mq.service()
    queue = mq.queue()
    await service.declare_queue(queue)
    seen = Seen()
    async with DedupStore.from_url(private_redis.url, timeout=0.5) as dedup:
        handle = await MessageConsumer(service, dedup=dedup).consume(queue, seen, prefetch=1)
        private_redis.stop()
        await MessageProducer(service).send(queue, "during the outage", message_id="order-1")
        await asyncio.sleep(1.5)  # claims fail; the message goes back to the queue meanwhile
        assert seen.items == []
        private_redis.start()  # an empty Redis on the same port
        await eventually(lambda: seen.ids() == ["order-1"])
        await eventually(lambda: handle.handled == 1)
        assert (handle.dead_lettered, handle.internal_errors) == (0, 0)


# -- 17: bad headers -------------------------------------------------------------

BAD_HEADERS: list[tuple[dict[str, Any], type[Exception]]] = [
    ({"n": math.nan}, ValidationError),
    ({"n": math.inf}, ValidationError),
    ({"n": -math.inf}, ValidationError),
    ({"n": 10**30}, ValidationError),
    ({"n": -(2**63) - 1}, ValidationError),
    ({"n": "x" * 300_000}, PayloadTooLarge),
    ({"n" * 129: 1}, ValidationError),
    ({"": 1}, ValidationError),
    ({"n": "\ud800"}, ValidationError),
    ({"n": [1, 2]}, ValidationError),
    ({"n": b"bytes"}, ValidationError),
    ({f"h{i}": "x" * 16_000 for i in range(5)}, PayloadTooLarge),
]


@pytest.mark.parametrize(("headers", "error"), BAD_HEADERS, ids=range(len(BAD_HEADERS)))
async def test_headers_the_broker_cannot_carry_are_refused_and_nothing_is_sent(
    mq: MQ, headers: dict[str, Any], error: type[Exception]
) -> None:
    service = await mq.service()
    queue = mq.queue()
    await service.declare_queue(queue)
    seen = Seen()
    await MessageConsumer(service).consume(queue, seen)
    producer = MessageProducer(service)
    with pytest.raises(error):
        await producer.send(queue, "bad", headers=headers)
    with pytest.raises(error):
        await producer.publish(queue, "key", "bad", headers=headers)
    await producer.send(queue, "good", headers={"ok": 1})
    await eventually(lambda: len(seen.items) == 1)
    await asyncio.sleep(0.3)  # anything bad would have arrived, or closed the connection
    assert [payload for payload, _ in seen.items] == ["good"]
    assert _reconnects(mq, service) == 0


async def test_a_backend_refuses_bad_headers_too(mq: MQ) -> None:
    service = await mq.service()
    queue = mq.queue()
    await service.declare_queue(queue)
    message = OutgoingMessage(body=b"1", message_id="m", timestamp=0, headers={"n": math.nan})
    with pytest.raises(ValidationError):
        await service.backend.publish("", queue, message, mandatory=True)
    assert await service.get(queue) is None
    assert _reconnects(mq, service) == 0


async def test_headers_within_the_bounds_arrive_as_sent(mq: MQ) -> None:
    service = await mq.service()
    queue = mq.queue()
    await service.declare_queue(queue)
    seen = Seen()
    await MessageConsumer(service).consume(queue, seen)
    headers = {
        "tenth": 0.1,  # 64-bit: not 0.10000000149011612
        "tiny": 5e-324,
        "big": 1.7976931348623157e308,
        "max": 2**63 - 1,
        "min": -(2**63),
        "text": "é" * 8000,  # 16,000 bytes
        "flag": False,
        "nothing": None,
        "n" * 128: 1,
    }
    await MessageProducer(service).send(queue, "x", headers=headers)
    await eventually(lambda: len(seen.items) == 1)
    got = dict(seen.items[0][1].headers)
    assert {k: got[k] for k in headers} == headers
    assert type(got["tenth"]) is float


# -- what a client library cannot even decode (RabbitMQ) ---------------------------------


@pytest.mark.rabbitmq
async def test_frames_the_client_cannot_decode_never_break_the_connection(
    amqp_url: str, rabbit: MQ
) -> None:
    """Headers nested 3,000 deep, a timestamp past the year 9999, text that is not UTF-8.

    Before, each made aiormq's reader fail: the connection died, came back, got
    the same message again, forever, and every consumer on it stalled.
    """
    service = await rabbit.service()
    queue = rabbit.queue()
    await service.declare_queue(queue)
    seen = Seen()
    handle = await MessageConsumer(service).consume(queue, seen, prefetch=2)
    bad_name = b"\x02\xff\xfeV"
    async with Hostile(rabbit) as hostile:
        await hostile.publish(service, queue, b"1", raw={"headers": nested_table(3000)})
        await hostile.publish(
            service, queue, b"2", raw={"headers": struct.pack(">I", len(bad_name)) + bad_name}
        )
        await hostile.publish(
            service, queue, b"3", message_id="ts", raw={"timestamp": struct.pack(">Q", 2**63 - 1)}
        )
        await hostile.publish(
            service, queue, b"4", message_id="utf8", raw={"message_id": b"\x02\xff\xfe"}
        )
        await hostile.publish(service, queue, b'"sentinel"', message_id="sentinel")

    await eventually(lambda: "sentinel" in seen.ids(), what="the sentinel behind them")
    dead = await drain(service, f"{queue}.dlq", expect=2)
    assert [d.reason for d in dead] == ["invalid_headers", "invalid_headers"]
    assert sorted(str(payload) for payload, _ in seen.items) == ["3", "4", "sentinel"]
    ts = next(env for _, env in seen.items if env.message_id == "ts")
    assert ts.timestamp == 0  # no such date: left out
    assert "\N{REPLACEMENT CHARACTER}" in next(
        env.message_id for payload, env in seen.items if payload == 4
    )
    await eventually(
        lambda: (handle.handled, handle.dead_lettered) == (3, 2)
    )  # counted once confirmed
    assert service.backend.reconnects == 0  # type: ignore[attr-defined]


@pytest.mark.rabbitmq
async def test_a_reply_to_address_that_crashes_the_broker_disrupts_nothing(rabbit: MQ) -> None:
    """RabbitMQ 3.x closes the connection that publishes to a forged direct reply-to key."""
    service = await rabbit.service()
    queue = rabbit.queue()
    await service.declare_queue(queue)
    seen, failing = Seen(), Seen(fail=True)
    await MessageConsumer(service).consume(queue, seen)
    other = rabbit.queue()
    await service.declare_queue(other)
    await MessageConsumer(service).consume(other, failing, retry=RetryPolicy.never())
    forged = "amq.rabbitmq.reply-to.g1h2AA5yZXBseUAxMjcuMC4wLjEAAAAAAAAAAQ==.xyz"
    async with Hostile(rabbit) as hostile:
        for target in (queue, other):
            await hostile.publish(service, target, b"1", reply_to=forged, message_id="forged")
    await MessageProducer(service).send(queue, "after")
    await eventually(lambda: seen.ids()[-1:] != ["forged"] and len(seen.items) == 2)
    await drain(service, f"{other}.dlq", expect=1)
    await asyncio.sleep(0.3)
    assert seen.ids() == ["forged", seen.ids()[1]]  # each handled once: never redelivered
    assert service.backend.reconnects == 0  # type: ignore[attr-defined]
