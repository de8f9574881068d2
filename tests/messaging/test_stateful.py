"""Hypothesis stateful test: the in-memory broker and RabbitMQ deliver the same things.

The same bindings, publishes (to a topic exchange and straight to queues),
failing handlers and malformed bodies are applied to both brokers; after every
batch both must show the same observable deliveries: per queue, the order of
first deliveries (prefetch 1, so AMQP guarantees it), every attempt of every
message, and what ended in each dead-letter queue, with the reason. A model of
topic routing says what both should show.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from rtkit._core.topic import topic_matches
from rtkit.messaging import (
    Envelope,
    MessageConsumer,
    MessageProducer,
    RabbitMQService,
    RetryPolicy,
)
from rtkit.messaging.brokers.base import OutgoingMessage
from rtkit_testing import unique_name

QUEUES = 3
PATTERNS = ["order.*", "order.#", "*.created", "#", "payment.done"]
KEYS = ["order.created", "order.paid.eu", "payment.done", "user.created", "order"]
RETRY = RetryPolicy(max_attempts=3, initial_delay=0.01, multiplier=1.5, max_delay=0.03)


class World:
    """One broker with a topic exchange, three consumed queues and what they saw."""

    def __init__(self, url: str, stem: str) -> None:
        self.url = url
        self.exchange = f"{stem}-x"
        self.queues = [f"{stem}-q{i}" for i in range(QUEUES)]
        self.attempts: dict[str, list[tuple[int, int]]] = collections.defaultdict(list)
        self.finished: set[tuple[str, int]] = set()
        self.dead: dict[str, list[tuple[int, str, int]]] = collections.defaultdict(list)
        options = {"connection_name": f"{stem}-conn"} if url.startswith("amqp") else {}
        self.service = RabbitMQService.from_url(url, **options)
        self.producer = MessageProducer(self.service)
        self.consumer = MessageConsumer(self.service, close_timeout=2.0)

    async def start(self) -> None:
        await self.service.start()
        await self.service.declare_exchange(self.exchange, "topic", durable=False)
        for queue in self.queues:
            await self.service.declare_queue(queue, durable=False)
            await self.consumer.consume(queue, self._handler(queue), prefetch=1, retry=RETRY)

    def _handler(self, queue: str) -> Any:
        async def handle(payload: dict[str, int], envelope: Envelope) -> None:
            self.attempts[queue].append((payload["n"], envelope.attempt))
            if envelope.attempt <= payload["fail"]:
                raise RuntimeError("planned failure")
            self.finished.add((queue, payload["n"]))

        return handle

    async def collect_dead(self) -> None:
        for queue in self.queues:
            while (message := await self.service.get(f"{queue}.dlq")) is not None:
                n = int(message.headers.get("n", -1))
                self.dead[queue].append((n, message.reason or "", message.attempts))
                self.finished.add((queue, n))

    async def stop(self) -> None:
        await self.consumer.close()  # graceful; the service stays open to clean up
        for queue in self.queues:
            await self.service.delete_queue(queue)
        await self.service.delete_exchange(self.exchange)
        await self.service.close()

    def observed(self) -> dict[str, Any]:
        return {
            q: {
                "first": [n for n, attempt in self.attempts[q] if attempt == 1],
                "attempts": sorted(self.attempts[q]),
                "dead": sorted(self.dead[q]),
            }
            for q in range(QUEUES)
            for q in [self.queues[q]]
        }


class BrokersAgree(RuleBasedStateMachine):
    """Applies one sequence of operations to both brokers."""

    amqp_url = ""

    def __init__(self) -> None:
        super().__init__()
        self.runner = asyncio.Runner()
        stem = unique_name("rtkit-test-hyp")
        self.worlds = [
            World(f"memory://{stem}", stem),
            World(self.amqp_url, stem),
        ]
        self.bindings: set[tuple[int, str]] = set()
        self.expected: set[tuple[int, int]] = set()  # (queue index, n)
        self.n = 0

    def _run(self, coro: Any) -> Any:
        return self.runner.run(coro)

    async def _both(self, op: Any) -> None:
        for world in self.worlds:
            await op(world)

    @initialize()
    def start(self) -> None:
        self._run(self._both(lambda w: w.start()))

    @rule(queue=st.integers(0, QUEUES - 1), pattern=st.sampled_from(PATTERNS))
    def bind(self, queue: int, pattern: str) -> None:
        self.bindings.add((queue, pattern))
        self._run(self._both(lambda w: w.service.bind(w.queues[queue], w.exchange, pattern)))

    @rule(key=st.sampled_from(KEYS), fail=st.integers(0, 3))
    def publish(self, key: str, fail: int) -> None:
        self.n += 1
        n = self.n
        for queue, pattern in self.bindings:
            if topic_matches(pattern, key):
                self.expected.add((queue, n))
        self._run(
            self._both(
                lambda w: w.producer.publish(
                    w.exchange, key, {"n": n, "fail": fail}, headers={"n": n}
                )
            )
        )

    @rule(queue=st.integers(0, QUEUES - 1), fail=st.integers(0, 3))
    def send(self, queue: int, fail: int) -> None:
        self.n += 1
        n = self.n
        self.expected.add((queue, n))
        self._run(
            self._both(
                lambda w: w.producer.send(w.queues[queue], {"n": n, "fail": fail}, headers={"n": n})
            )
        )

    @rule(queue=st.integers(0, QUEUES - 1), body=st.sampled_from([b"{oops", b"\xff\xfe"]))
    def send_garbage(self, queue: int, body: bytes) -> None:
        self.n += 1
        n = self.n
        self.expected.add((queue, n))
        message = OutgoingMessage(body=body, message_id=f"junk-{n}", timestamp=0, headers={"n": n})
        self._run(
            self._both(
                lambda w: w.service.backend.publish("", w.queues[queue], message, mandatory=True)
            )
        )

    @rule()
    def settle_and_compare(self) -> None:
        async def settle(world: World) -> None:
            want = {(world.queues[q], n) for q, n in self.expected}
            deadline = time.monotonic() + 30
            while True:
                await world.collect_dead()
                if world.finished >= want:
                    return
                if time.monotonic() > deadline:
                    raise AssertionError(f"{world.url}: missing {sorted(want - world.finished)}")
                await asyncio.sleep(0.02)

        self._run(self._both(settle))
        self._run(asyncio.sleep(0.05))
        memory, rabbit = (w.observed() for w in self.worlds)
        memory_view = list(memory.values())
        rabbit_view = list(rabbit.values())
        assert memory_view == rabbit_view
        for q, view in enumerate(memory_view):
            delivered = {n for n, _ in view["attempts"]} | {n for n, _, _ in view["dead"]}
            assert delivered == {n for qq, n in self.expected if qq == q}

    def teardown(self) -> None:
        try:
            self.settle_and_compare()
        finally:
            self._run(self._both(lambda w: w.stop()))
            self.runner.close()


@pytest.mark.rabbitmq
@pytest.mark.slow
def test_memory_broker_and_rabbitmq_agree(amqp_url: str) -> None:
    BrokersAgree.amqp_url = amqp_url
    run = BrokersAgree.TestCase
    run.settings = settings(
        max_examples=10,
        stateful_step_count=10,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    run().runTest()
