"""The in-memory broker's AMQP semantics, and the pure helpers."""

from __future__ import annotations

import asyncio
import random

import pytest

from rtkit._core.topic import TopicPattern
from rtkit.messaging import (
    MemoryBroker,
    MessageConsumer,
    MessageProducer,
    RabbitMQService,
    RetryPolicy,
)
from rtkit.messaging._retry import delay_tier_ms
from rtkit.messaging.brokers.base import Delivery, OutgoingMessage


def message(n: int) -> OutgoingMessage:
    return OutgoingMessage(body=str(n).encode(), message_id=f"m{n}", timestamp=0)


@pytest.mark.parametrize(
    ("pattern", "key", "expected"),
    [
        ("order.*", "order.created", True),
        ("order.*", "order.created.eu", False),
        ("order.*", "order", False),
        ("order.#", "order", True),
        ("order.#", "order.a.b", True),
        ("#", "anything.at.all", True),
        ("*.created", "user.created", True),
        ("#.eu", "order.paid.eu", True),
        ("a.#.z", "a.z", True),
        ("a.#.z", "a.b.c.z", True),
        ("a.*.z", "a.z", False),
        ("exact", "exact", True),
        ("exact", "other", False),
    ],
)
async def test_topic_matching(pattern: str, key: str, expected: bool) -> None:
    assert TopicPattern(pattern).matches(key) is expected
    async with RabbitMQService() as service:  # the broker routes with the same matcher
        await service.declare_exchange("x", "topic")
        await service.declare_queue("q")
        await service.bind("q", "x", pattern)
        await MessageProducer(service).publish("x", key, key)
        got = await service.get("q")
        assert (got is not None and got.payload == key) is expected


@pytest.mark.parametrize(
    ("pattern", "key", "matches"),
    [
        (".".join(["#"] * 20), ".".join(["w"] * 50), True),
        # "#" words kept apart by literals (so they cannot collapse into one): a
        # backtracking matcher takes hours on these, the linear one microseconds
        (".".join(["#", "a"] * 20), ".".join(["a"] * 50), True),
        (".".join(["#", "a"] * 20), ".".join(["a"] * 49 + ["b"]), False),
    ],
)
async def test_twenty_hash_words_against_a_50_word_key_route(
    pattern: str, key: str, matches: bool
) -> None:
    assert pattern.split(".").count("#") == 20 and len(key.split(".")) == 50
    # the matcher's work is bounded in tests/test_core.py; here the broker routes with it
    async with RabbitMQService() as service:  # the broker routes with the same matcher
        await service.declare_exchange("x", "topic")
        await service.declare_queue("q")
        await service.bind("q", "x", pattern)
        await MessageProducer(service).publish("x", key, "k")
        assert (await service.get("q") is not None) is matches


def test_delay_tiers_are_few_and_deterministic() -> None:
    assert delay_tier_ms(0.1) == 100
    assert delay_tier_ms(0.123) == 120
    assert delay_tier_ms(1.26) == 1200
    assert delay_tier_ms(30) == 33_000
    assert delay_tier_ms(0) == 1
    for ms in range(1, 100_000, 7):
        assert 0.89 < delay_tier_ms(ms / 1000) / ms < 1.12
    policy = RetryPolicy()  # 1, 2, 4 ... 60 s, +-10 %
    rng = random.Random(1)
    tiers = {delay_tier_ms(policy.delay(n, rng)) for n in range(1, 10) for _ in range(100)}
    assert len(tiers) <= 20


def test_retry_policy_backs_off_exponentially_with_capped_jitter() -> None:
    policy = RetryPolicy(initial_delay=0.1, multiplier=2, max_delay=1.0, jitter=0.2)
    rng = random.Random(7)
    for retry, base in [(1, 0.1), (2, 0.2), (3, 0.4)]:
        for _ in range(20):
            assert base * 0.8 <= policy.delay(retry, rng) <= base * 1.2
    assert all(policy.delay(20, rng) <= 1.0 for _ in range(20))
    assert RetryPolicy.never().max_attempts == 1
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)


async def test_requeue_keeps_position_and_sets_redelivered() -> None:
    broker = MemoryBroker()
    conn = broker.backend()
    await conn.connect()
    await conn.declare_queue("q", durable=True, arguments={})
    for n in range(3):
        await conn.publish("", "q", message(n), mandatory=True)
    seen: list[Delivery] = []

    async def hold(d: Delivery) -> None:
        seen.append(d)

    consumer = await conn.consume("q", hold, prefetch=2)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert [d.message.body for d in seen] == [b"0", b"1"]
    await consumer.close()  # both go back, in front of "2"
    got = [await conn.get("q") for _ in range(3)]
    assert [(d.message.body, d.redelivered) for d in got if d] == [
        (b"0", True),
        (b"1", True),
        (b"2", False),
    ]


async def test_reject_dead_letters_with_x_death_and_ttl_expires() -> None:
    broker = MemoryBroker()
    conn = broker.backend()
    await conn.connect()
    await conn.declare_queue("dead", durable=True, arguments={})
    args = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dead"}
    await conn.declare_queue("work", durable=True, arguments=args)
    await conn.declare_queue("wait", durable=True, arguments={"x-message-ttl": 30, **args})
    await conn.publish("", "work", message(1), mandatory=True)

    async def reject(d: Delivery) -> None:
        await d.nack(requeue=False)

    consumer = await conn.consume("work", reject, prefetch=1)
    await conn.publish("", "wait", message(2), mandatory=True)
    await asyncio.sleep(0.1)
    await consumer.close()
    first, second = await conn.get("dead"), await conn.get("dead")
    assert first is not None and second is not None
    death = first.message.headers["x-death"][0]
    assert (death["queue"], death["reason"], death["count"]) == ("work", "rejected", 1)
    assert second.message.headers["x-death"][0]["reason"] == "expired"
    assert second.message.headers["x-first-death-queue"] == "wait"
    assert second.routing_key == "dead"


async def test_a_restart_keeps_durable_things_and_consumers_come_back() -> None:
    broker = MemoryBroker()
    async with RabbitMQService(broker.backend()) as service:
        producer = MessageProducer(service)
        await service.declare_queue("durable")
        await service.declare_queue("transient", durable=False, dead_letter=False)
        await producer.send("durable", "kept")
        await producer.send("durable", "lost", persistent=False)
        await producer.send("transient", "lost too")
        release = asyncio.Event()
        got: list[str] = []

        async def handle(payload: str) -> None:
            await release.wait()
            got.append(payload)

        await MessageConsumer(service).consume("durable", handle, prefetch=1)
        await asyncio.sleep(0.01)  # "kept" is in flight, unacked

        await broker.restart()
        assert service.backend.reconnects == 1  # type: ignore[attr-defined]
        assert broker.message_count("transient") == 0  # re-declared, empty
        release.set()
        await producer.send("durable", "after")
        for _ in range(100):
            if len(got) >= 3:
                break
            await asyncio.sleep(0.01)
        # "kept" ran in the dropped channel (its ack was dropped), then was redelivered
        assert got == ["kept", "kept", "after"]
