"""The messaging contract: the same observable behaviour on the in-memory broker and RabbitMQ."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pydantic
import pytest

from rtkit.errors import (
    BackendUnavailable,
    Closed,
    ConfigurationError,
    NotFound,
    PayloadTooLarge,
    RemoteError,
    ValidationError,
)
from rtkit.messaging import (
    DedupStore,
    Envelope,
    MessageConsumer,
    MessageProducer,
    RabbitMQService,
    RetryPolicy,
)
from rtkit.messaging.brokers.base import OutgoingMessage

from ._helpers import MQ, drain, eventually

FAST = RetryPolicy(max_attempts=3, initial_delay=0.05, multiplier=2.0, max_delay=0.2)


class Order(pydantic.BaseModel):
    order_id: int
    total: float


class Inbox:
    """A handler that records what it received."""

    def __init__(self, fail_times: int = 0, *, delay: float = 0.0) -> None:
        self.items: list[tuple[Any, Envelope]] = []
        self.fail_times = fail_times
        self.delay = delay
        self.calls = 0

    async def __call__(self, payload: Any, envelope: Envelope) -> None:
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.calls <= self.fail_times:
            raise RuntimeError(f"boom {self.calls}")
        self.items.append((payload, envelope))

    @property
    def payloads(self) -> list[Any]:
        return [p for p, _ in self.items]


async def test_send_and_consume_with_id_timestamp_and_persistence(mq: MQ) -> None:
    service = await mq.service()
    queue = mq.queue()
    await service.declare_queue(queue)
    producer, consumer, inbox = MessageProducer(service), MessageConsumer(service), Inbox()

    before = int(time.time())
    first = await producer.send(queue, {"hello": "world"})
    second = await producer.send(queue, [1, 2, 3], headers={"tenant": "a"}, message_id="my-id-1")
    await consumer.consume(queue, inbox, prefetch=5)

    await eventually(lambda: len(inbox.items) == 2)
    assert inbox.payloads == [{"hello": "world"}, [1, 2, 3]]
    env1, env2 = inbox.items[0][1], inbox.items[1][1]
    assert env1.message_id == first and len(first) == 36
    assert env2.message_id == second == "my-id-1"
    assert env2.headers["tenant"] == "a"
    assert before <= env1.timestamp <= time.time() + 1
    assert env1.attempt == 1 and not env1.redelivered
    assert env1.queue == queue and env1.exchange == "" and env1.routing_key == queue
    assert first != await producer.send(queue, 1)  # ids are unique


async def test_pydantic_model_in_and_out(mq: MQ) -> None:
    service = await mq.service()
    queue = mq.queue()
    await service.declare_queue(queue)
    got: list[Order] = []

    async def handle(order: Order) -> None:
        got.append(order)

    await MessageConsumer(service).consume(queue, handle, model=Order)
    await MessageProducer(service).send(queue, Order(order_id=7, total=99.5))
    await eventually(lambda: got == [Order(order_id=7, total=99.5)])


async def test_exchanges_route_by_kind(mq: MQ) -> None:
    service = await mq.service()
    producer = MessageProducer(service)
    direct, topic, fanout = mq.exchange("direct"), mq.exchange("topic"), mq.exchange("fanout")
    await service.declare_exchange(direct, "direct")
    await service.declare_exchange(topic, "topic")
    await service.declare_exchange(fanout, "fanout")
    q_direct, q_star, q_hash, q_fan1, q_fan2 = (mq.queue() for _ in range(5))
    for q in (q_direct, q_star, q_hash, q_fan1, q_fan2):
        await service.declare_queue(q)
    await service.bind(q_direct, direct, "email")
    await service.bind(q_star, topic, "order.*")
    await service.bind(q_hash, topic, "order.#")
    await service.bind(q_fan1, fanout)
    await service.bind(q_fan2, fanout)

    await producer.publish(direct, "email", "d1")
    await producer.publish(direct, "sms", "dropped")  # no binding: dropped, as in AMQP
    for key in ("order.created", "order.paid.eu", "order", "user.created"):
        await producer.publish(topic, key, key)
    await producer.publish(fanout, "ignored", "f1")

    async def contents(queue: str, n: int) -> list[Any]:
        return [m.payload for m in await drain(service, queue, expect=n)]

    assert await contents(q_direct, 1) == ["d1"]
    assert await contents(q_star, 1) == ["order.created"]
    assert await contents(q_hash, 3) == ["order.created", "order.paid.eu", "order"]
    assert await contents(q_fan1, 1) == ["f1"]
    assert await contents(q_fan2, 1) == ["f1"]
    for q in (q_direct, q_star, q_hash, q_fan1):
        assert await service.get(q) is None


async def test_send_to_a_missing_queue_raises_not_found(mq: MQ) -> None:
    service = await mq.service()
    with pytest.raises(NotFound):
        await MessageProducer(service).send(mq.queue("missing"), {"x": 1})


async def test_bad_arguments_raise_typed_errors(mq: MQ) -> None:
    service = await mq.service(max_message_bytes=100)
    producer = MessageProducer(service)
    queue = mq.queue()
    await service.declare_queue(queue)
    with pytest.raises(ValidationError):
        await service.declare_queue("bad name!")
    with pytest.raises(ValidationError):
        await producer.send(queue, object())
    with pytest.raises(PayloadTooLarge):
        await producer.send(queue, "x" * 200)
    with pytest.raises(ValidationError):
        await producer.send(queue, 1, headers={"h": [1, 2]})  # type: ignore[dict-item]
    with pytest.raises(ConfigurationError):
        await service.declare_queue(queue, durable=False)  # exists with other settings
    assert await service.get(queue) is None  # nothing was half-sent


async def test_prefetch_is_per_consumer(mq: MQ) -> None:
    service = await mq.service()
    slow_q, fast_q = mq.queue("slow"), mq.queue("fast")
    await service.declare_queue(slow_q)
    await service.declare_queue(fast_q)
    release = asyncio.Event()
    running = {slow_q: 0, fast_q: 0}
    peak = {slow_q: 0, fast_q: 0}

    def handler(queue: str) -> Any:
        async def handle(payload: Any) -> None:
            running[queue] += 1
            peak[queue] = max(peak[queue], running[queue])
            await release.wait()
            running[queue] -= 1

        return handle

    producer, consumer = MessageProducer(service), MessageConsumer(service)
    for i in range(10):
        await producer.send(slow_q, i)
        await producer.send(fast_q, i)
    slow = await consumer.consume(slow_q, handler(slow_q), prefetch=2)
    fast = await consumer.consume(fast_q, handler(fast_q), prefetch=5)
    await eventually(lambda: running[slow_q] == 2 and running[fast_q] == 5)
    await asyncio.sleep(0.2)
    assert peak == {slow_q: 2, fast_q: 5}
    release.set()
    await eventually(lambda: slow.handled == 10 and fast.handled == 10)
    assert peak == {slow_q: 2, fast_q: 5}


async def test_failures_retry_with_backoff_then_succeed(mq: MQ) -> None:
    service = await mq.service()
    queue = mq.queue()
    await service.declare_queue(queue)
    inbox = Inbox(fail_times=2)
    sub = await MessageConsumer(service).consume(queue, inbox, retry=FAST)
    started = time.monotonic()
    await MessageProducer(service).send(queue, {"n": 1})
    await eventually(lambda: len(inbox.items) == 1)
    payload, envelope = inbox.items[0]
    assert payload == {"n": 1}
    assert envelope.attempt == 3
    assert envelope.headers["x-retry-count"] == 2
    assert "boom 2" in envelope.headers["x-last-error"]
    assert time.monotonic() - started >= 0.1  # two back-offs of >= 45 ms
    assert sub.retried == 2 and sub.handled == 1
    assert await service.get(f"{queue}.dlq") is None


async def test_poison_message_is_dead_lettered_with_reason_after_last_attempt(mq: MQ) -> None:
    service = await mq.service()
    queue = mq.queue()
    await service.declare_queue(queue)
    inbox = Inbox(fail_times=1000)
    sub = await MessageConsumer(service).consume(queue, inbox, retry=FAST)
    message_id = await MessageProducer(service).send(queue, {"poison": True})

    [dead] = await drain(service, f"{queue}.dlq", expect=1)
    assert dead.payload == {"poison": True}
    assert dead.message_id == message_id
    assert dead.reason == "handler_failed"
    assert dead.error_type == "RuntimeError"
    assert dead.error == "boom 3"
    assert dead.attempts == 3
    assert dead.headers["x-original-queue"] == queue
    await asyncio.sleep(0.4)
    assert inbox.calls == 3  # never loops
    assert sub.dead_lettered == 1


async def test_invalid_payload_goes_to_dlq_and_the_consumer_keeps_going(mq: MQ) -> None:
    service = await mq.service()
    queue = mq.queue()
    await service.declare_queue(queue)
    got: list[Order] = []

    async def handle(order: Order) -> None:
        got.append(order)

    await MessageConsumer(service).consume(queue, handle, model=Order, retry=FAST)
    producer = MessageProducer(service)
    await producer.send(queue, {"order_id": "not a number", "total": 1})
    await producer.send(queue, {"order_id": 2, "total": 3})

    await eventually(lambda: len(got) == 1)
    [dead] = await drain(service, f"{queue}.dlq", expect=1)
    assert dead.reason == "validation_failed"
    assert "order_id" in (dead.error or "")
    assert dead.attempts == 0


async def test_bad_input_goes_to_dlq_with_a_reason(mq: MQ) -> None:
    service = await mq.service()
    queue = mq.queue()
    await service.declare_queue(queue)
    inbox = Inbox()
    await MessageConsumer(service).consume(queue, inbox, max_message_bytes=1000)

    def raw(body: bytes, content_type: str | None = "application/json") -> OutgoingMessage:
        return OutgoingMessage(
            body=body,
            message_id=f"raw-{len(body)}-{content_type}",
            timestamp=0,
            content_type=content_type,
        )

    await service.backend.publish("", queue, raw(b"{not json"), mandatory=True)
    await service.backend.publish("", queue, raw(b"<xml/>", "application/xml"), mandatory=True)
    await service.backend.publish("", queue, raw(b'"' + b"x" * 2000 + b'"'), mandatory=True)
    await service.backend.publish("", queue, raw(b'{"ok": 1}', None), mandatory=True)

    await eventually(lambda: inbox.payloads == [{"ok": 1}])
    dead = await drain(service, f"{queue}.dlq", expect=3)
    assert sorted(d.reason or "" for d in dead) == ["content_type", "invalid_json", "too_large"]


async def test_delayed_delivery_uses_independent_tiers(mq: MQ) -> None:
    service = await mq.service()
    queue = mq.queue()
    await service.declare_queue(queue)
    inbox = Inbox()
    await MessageConsumer(service).consume(queue, inbox)
    producer = MessageProducer(service)
    started = time.monotonic()
    await producer.send(queue, "late", delay=0.6)
    await producer.send(queue, "soon", delay=0.1)
    await producer.send(queue, "now")

    await eventually(lambda: len(inbox.items) == 3)
    assert inbox.payloads == ["now", "soon", "late"]  # a long delay never blocks a short one
    assert time.monotonic() - started >= 0.5
    assert service.delay_queue_name(queue, 0.1) == f"{queue}.delay.100ms"
    assert service.delay_queue_name(queue, 0.6) in service.delay_queues


async def test_request_reply(mq: MQ) -> None:
    service = await mq.service()
    queue = mq.queue()
    await service.declare_queue(queue)

    async def double(payload: dict[str, int]) -> dict[str, int]:
        if payload["n"] < 0:
            raise ValueError("negative")
        return {"n": payload["n"] * 2}

    await MessageConsumer(service).consume(queue, double, retry=RetryPolicy.never())
    producer = MessageProducer(service)
    replies = await asyncio.gather(*(producer.request(queue, {"n": i}) for i in range(5)))
    assert replies == [{"n": 2 * i} for i in range(5)]
    with pytest.raises(RemoteError) as info:
        await producer.request(queue, {"n": -1})
    assert info.value.code == "remote_error"
    assert "negative" in str(info.value)


async def test_request_without_a_consumer_times_out(mq: MQ) -> None:
    service = await mq.service()
    queue = mq.queue()
    await service.declare_queue(queue)
    started = time.monotonic()
    with pytest.raises(BackendUnavailable):
        await MessageProducer(service).request(queue, {"n": 1}, timeout=0.3)
    assert time.monotonic() - started < 5


async def test_graceful_stop_lets_in_flight_handlers_finish(mq: MQ) -> None:
    service = await mq.service()
    queue = mq.queue()
    await service.declare_queue(queue)
    inbox = Inbox(delay=0.3)
    sub = await MessageConsumer(service, close_timeout=5.0).consume(queue, inbox, prefetch=3)
    for i in range(6):
        await MessageProducer(service).send(queue, i)
    await eventually(lambda: sub.in_flight == 3)
    await sub.stop()
    assert sorted(inbox.payloads) == [0, 1, 2]  # in-flight finished and were acked
    assert inbox.calls == 3  # nothing new was taken
    rest = await drain(service, queue, expect=3)
    assert sorted(m.payload for m in rest) == [3, 4, 5]
    assert await service.get(queue) is None


async def test_stop_deadline_cancels_and_the_message_is_redelivered(mq: MQ) -> None:
    service = await mq.service()
    queue = mq.queue()
    await service.declare_queue(queue)
    stuck = asyncio.Event()

    async def hang(payload: Any) -> None:
        stuck.set()
        await asyncio.sleep(60)

    sub = await MessageConsumer(service, close_timeout=0.2).consume(queue, hang)
    await MessageProducer(service).send(queue, "stuck")
    await asyncio.wait_for(stuck.wait(), 10)
    started = time.monotonic()
    await sub.stop()
    assert time.monotonic() - started < 5
    inbox = Inbox()
    await MessageConsumer(service).consume(queue, inbox)
    await eventually(lambda: inbox.payloads == ["stuck"])
    assert inbox.items[0][1].redelivered


async def test_dedup_store_runs_a_handler_once_per_message_id(mq: MQ) -> None:
    service = await mq.service()
    queue = mq.queue()
    await service.declare_queue(queue)
    inbox = Inbox()
    sub = await MessageConsumer(service, dedup=DedupStore()).consume(queue, inbox)
    producer = MessageProducer(service)
    for _ in range(3):
        await producer.send(queue, "once", message_id="order-1")
    await producer.send(queue, "other", message_id="order-2")
    await eventually(lambda: sub.handled + sub.duplicates == 4)
    assert sorted(inbox.payloads) == ["once", "other"]
    assert sub.duplicates == 2


async def test_operations_start_the_service_and_unknown_urls_are_refused(mq: MQ) -> None:
    service = RabbitMQService.from_url(mq.url)  # not started: the first operation connects
    mq.services.append(service)
    queue = mq.queue()
    await service.declare_queue(queue)
    assert await service.get(queue) is None
    await service.close()
    with pytest.raises(Closed):
        await service.declare_queue(mq.queue())
    with pytest.raises(ConfigurationError):
        RabbitMQService.from_url("redis://localhost")


async def test_a_pending_retry_survives_a_consumer_restart(mq: MQ) -> None:
    service = await mq.service()
    queue = mq.queue()
    await service.declare_queue(queue)
    first = Inbox(fail_times=1)
    handle = await MessageConsumer(service).consume(queue, first, retry=FAST)
    await MessageProducer(service).send(queue, "job")
    await eventually(lambda: handle.retried == 1)
    await handle.stop()  # the retry waits in the broker, not in this consumer

    second = Inbox()
    await MessageConsumer(service).consume(queue, second, retry=FAST)
    await eventually(lambda: second.payloads == ["job"])
    assert second.items[0][1].attempt == 2
    assert first.calls == 1


async def test_replicas_share_a_queue(mq: MQ) -> None:
    service = await mq.service()
    queue = mq.queue()
    await service.declare_queue(queue)
    a, b = Inbox(delay=0.01), Inbox(delay=0.01)
    await MessageConsumer(service).consume(queue, a, prefetch=1)
    await MessageConsumer(service).consume(queue, b, prefetch=1)
    for i in range(20):
        await MessageProducer(service).send(queue, i)
    await eventually(lambda: len(a.items) + len(b.items) == 20)
    assert sorted(a.payloads + b.payloads) == list(range(20))
    assert a.items and b.items  # round robin between the replicas


async def test_missing_queues_and_exchanges_raise_not_found(mq: MQ) -> None:
    service = await mq.service()
    queue = mq.queue()
    await service.declare_queue(queue)

    async def handle(payload: Any) -> None:
        pass

    with pytest.raises(NotFound):
        await MessageConsumer(service).consume(mq.queue("missing"), handle)
    with pytest.raises(NotFound):
        await service.bind(queue, mq.exchange("missing"), "key")
    with pytest.raises(NotFound):
        await service.get(mq.queue("missing"))
    # the service still works afterwards
    await MessageProducer(service).send(queue, "still fine")
    [message] = await drain(service, queue, expect=1)
    assert message.payload == "still fine"


async def test_a_slow_handler_does_not_hold_back_the_others(mq: MQ) -> None:
    service = await mq.service()
    queue = mq.queue()
    await service.declare_queue(queue)
    release = asyncio.Event()
    done: list[int] = []

    async def handle(n: int) -> None:
        if n == 0:
            await release.wait()
        done.append(n)

    await MessageConsumer(service).consume(queue, handle, prefetch=2)
    for n in range(10):
        await MessageProducer(service).send(queue, n)
    await eventually(lambda: sorted(done) == list(range(1, 10)))  # acked out of order
    release.set()
    await eventually(lambda: len(done) == 10)
    await asyncio.sleep(0.1)
    assert await service.get(queue) is None  # everything was acked
