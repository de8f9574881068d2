"""Queues that already exist (issue 14, part 3), on both brokers.

Adopting a queue another service made, naming the dead-letter exchange and
queue, atomic declarations, errors that say what conflicts and what fits, and
counters that tell dead letters from dropped messages.
"""

from __future__ import annotations

from typing import Any

import pytest

from rtkit.errors import ConfigurationError, NotFound, ValidationError
from rtkit.messaging import (
    MessageConsumer,
    MessageProducer,
    RabbitMQService,
    RetryPolicy,
)
from rtkit.messaging.brokers.base import Delivery

from ._helpers import MQ, drain, eventually


async def _failing(payload: Any) -> None:
    raise RuntimeError("card declined")


async def _foreign_queue(service: RabbitMQService, name: str, **arguments: Any) -> None:
    """A queue as another client made it (amqplib's ``assertQueue(q, {durable: true})``)."""
    await service.backend.declare_queue(name, durable=True, arguments=arguments)


async def _node_dead_letter_topology(service: RabbitMQService, queue: str) -> None:
    """What the seed's Node ``consumeWithDLX(queue)`` declares, through the backend."""
    backend = service.backend
    await backend.declare_exchange(f"{queue}_dlx", "direct", durable=True)
    await backend.declare_queue(f"{queue}_dlq", durable=True, arguments={})
    await backend.bind(f"{queue}_dlq", f"{queue}_dlx", f"{queue}_dlq")
    await backend.declare_queue(
        queue,
        durable=True,
        arguments={
            "x-dead-letter-exchange": f"{queue}_dlx",
            "x-dead-letter-routing-key": f"{queue}_dlq",
        },
    )


async def test_a_refused_declaration_names_the_argument_and_declares_nothing(mq: MQ) -> None:
    service = await mq.service()
    queue = mq.queue()
    await _foreign_queue(service, queue)

    with pytest.raises(ConfigurationError) as info:
        await service.declare_queue(queue)
    message = str(info.value)
    assert f"queue {queue!r} exists with x-dead-letter-exchange = (not set)" in message
    assert "this declaration asks for ''" in message
    assert "dead_letter=False" in message and "declare=False" in message
    with pytest.raises(NotFound):  # atomic: no .dlq was created first
        await service.get(f"{queue}.dlq")

    with pytest.raises(ConfigurationError, match=r"durable = True.*durable=True"):
        await service.declare_queue(queue, durable=False, dead_letter=False)
    await service.declare_queue(queue, dead_letter=False)  # what exists: accepted
    assert service.dead_letter_route(queue) is None


async def test_errors_name_an_existing_dead_letter_exchange(mq: MQ) -> None:
    service = await mq.service()
    queue = mq.queue()
    mq.also_delete(queues=(f"{queue}_dlq",), exchanges=(f"{queue}_dlx",))
    await _node_dead_letter_topology(service, queue)

    with pytest.raises(ConfigurationError) as info:
        await service.declare_queue(queue)
    message = str(info.value)
    assert f"x-dead-letter-exchange = '{queue}_dlx'" in message
    assert f"dead_letter_exchange='{queue}_dlx'" in message
    with pytest.raises(ConfigurationError, match=f"dead_letter='{queue}_dlq'"):
        await service.declare_queue(queue, dead_letter="other", dead_letter_exchange=f"{queue}_dlx")
    with pytest.raises(ConfigurationError, match="x-dead-letter-routing-key"):
        await service.declare_queue(queue, dead_letter="other", dead_letter_exchange=f"{queue}_dlx")


async def test_the_node_dead_letter_topology_declared_on_either_side(mq: MQ) -> None:
    """rtkit's ``dead_letter_exchange`` declares exactly what Node's ``consumeWithDLX`` does."""
    service = await mq.service()
    made_by_node, made_by_rtkit = mq.queue("node"), mq.queue("rtkit")
    for queue in (made_by_node, made_by_rtkit):
        mq.also_delete(queues=(f"{queue}_dlq",), exchanges=(f"{queue}_dlx",))
    await _node_dead_letter_topology(service, made_by_node)
    for queue in (made_by_node, made_by_rtkit):
        await service.declare_queue(
            queue, dead_letter=f"{queue}_dlq", dead_letter_exchange=f"{queue}_dlx"
        )
    await _node_dead_letter_topology(service, made_by_rtkit)  # Node's declarations accepted

    producer = MessageProducer(service)
    for queue in (made_by_node, made_by_rtkit):
        assert service.dead_letter_route(queue) == (f"{queue}_dlx", f"{queue}_dlq")
        handle = await MessageConsumer(service).consume(queue, _failing, retry=RetryPolicy.never())
        await producer.send(queue, {"order_id": 7})
        [dead] = await drain(service, f"{queue}_dlq", expect=1)
        assert (dead.reason, dead.error, dead.payload) == (
            "handler_failed",
            "card declined",
            {"order_id": 7},
        )
        await eventually(lambda h=handle: h.dead_lettered == 1)  # counted once confirmed
        assert handle.dropped == 0


async def test_the_broker_dead_letters_through_the_named_exchange(mq: MQ) -> None:
    """A message the broker rejects takes the same way (the memory broker agrees)."""
    service = await mq.service()
    queue = mq.queue()
    mq.also_delete(queues=(f"{queue}_dlq",), exchanges=(f"{queue}_dlx",))
    await service.declare_queue(
        queue, dead_letter=f"{queue}_dlq", dead_letter_exchange=f"{queue}_dlx"
    )
    rejected: list[str] = []

    async def reject(delivery: Delivery) -> None:
        rejected.append(delivery.message.message_id)
        await delivery.nack(requeue=False)

    consumer = await service.backend.consume(queue, reject, prefetch=1)
    message_id = await MessageProducer(service).send(queue, "refused")
    [dead] = await drain(service, f"{queue}_dlq", expect=1)
    await consumer.close()
    assert rejected == [message_id] and dead.message_id == message_id
    [death] = dead.headers["x-death"]
    assert (death["queue"], death["reason"], death["exchange"]) == (queue, "rejected", "")
    assert dead.headers["x-first-death-queue"] == queue


async def test_adopting_declares_nothing_and_checks_what_it_names(mq: MQ) -> None:
    service = await mq.service()
    queue, missing = mq.queue(), mq.queue("missing")
    with pytest.raises(NotFound, match="declare=False adopts a queue that exists"):
        await service.declare_queue(missing, declare=False)
    with pytest.raises(NotFound):  # nothing was declared
        await service.get(missing)

    await _foreign_queue(service, queue, **{"x-max-length": 1000})
    with pytest.raises(NotFound, match="dead_letter=False"):
        await service.declare_queue(queue, declare=False)  # no <queue>.dlq
    with pytest.raises(NotFound, match="dead_letter_exchange="):
        await service.declare_queue(
            queue, declare=False, dead_letter="x", dead_letter_exchange=mq.exchange("missing")
        )
    with pytest.raises(ConfigurationError, match="rtkit does not set x-max-length"):
        await service.declare_queue(queue, dead_letter=False)

    failed = mq.queue("failed")
    await service.declare_queue(failed, dead_letter=False)
    await service.declare_queue(queue, declare=False, dead_letter=failed)
    handle = await MessageConsumer(service).consume(queue, _failing, retry=RetryPolicy.never())
    await MessageProducer(service).send(queue, "lost cause")
    [dead] = await drain(service, failed, expect=1)
    assert dead.reason == "handler_failed"
    await eventually(lambda: handle.dead_lettered == 1)  # counted once confirmed
    assert handle.dropped == 0


async def test_a_message_with_nowhere_to_go_counts_as_dropped(mq: MQ) -> None:
    service = await mq.service()
    none, gone = mq.queue("none"), mq.queue("gone")
    await service.declare_queue(none, dead_letter=False)
    await service.declare_queue(gone)
    await service.backend.delete_queue(f"{gone}.dlq")  # deleted behind rtkit's back
    consumer, producer = MessageConsumer(service), MessageProducer(service)
    handles = [await consumer.consume(q, _failing, retry=RetryPolicy.never()) for q in (none, gone)]
    for q in (none, gone):
        await producer.send(q, "doomed")
    await eventually(lambda: all(h.dropped == 1 for h in handles))
    assert [h.dead_lettered for h in handles] == [0, 0]
    for q in (none, gone):
        assert await service.get(q) is None


async def test_exchanges_conflict_by_kind_and_can_be_adopted(mq: MQ) -> None:
    service = await mq.service()
    exchange = mq.exchange()
    with pytest.raises(NotFound):
        await service.declare_exchange(exchange, "topic", declare=False)
    await service.declare_exchange(exchange, "topic")
    with pytest.raises(ConfigurationError, match=r"exists with type = 'topic'.*kind='topic'"):
        await service.declare_exchange(exchange, "direct")
    await service.declare_exchange(exchange, "direct", declare=False)  # only checks it exists


async def test_bad_topology_options_are_refused(mq: MQ) -> None:
    service = await mq.service()
    queue = mq.queue()
    with pytest.raises(ValidationError):
        await service.declare_queue(queue, dead_letter=False, dead_letter_exchange="dlx")
    with pytest.raises(ValidationError):
        await service.declare_queue(queue, dead_letter_exchange="bad name!")
    with pytest.raises(ValidationError):
        await service.declare_queue(queue, declare="no")  # type: ignore[arg-type]
    with pytest.raises(NotFound):
        await service.get(queue)
