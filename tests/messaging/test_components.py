"""The shared shape on messaging: memory names, ownership of the service, Closed, options."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from rtkit.errors import Closed, ConfigurationError, NotFound, ValidationError
from rtkit.messaging import (
    DedupStore,
    MemoryBroker,
    MessageConsumer,
    MessageProducer,
    RabbitMQService,
    RetryPolicy,
)
from rtkit.messaging.brokers.amqp import AmqpBrokerBackend
from rtkit.messaging.brokers.memory import MemoryBrokerBackend
from rtkit_testing import unique_name

from ._helpers import eventually


async def _noop(payload: Any) -> None:
    return None


async def _has_queue(service: RabbitMQService, queue: str) -> bool:
    try:
        await service.get(queue)
    except NotFound:
        return False
    return True


# -- memory brokers: private unless named ---------------------------------------------


async def test_each_service_has_a_private_broker_unless_named() -> None:
    name = unique_name("broker")
    private = [RabbitMQService(), RabbitMQService(), RabbitMQService.from_url("memory://")]
    named = [RabbitMQService.from_url(f"memory://{name}") for _ in range(2)]
    other_prefix = RabbitMQService.from_url(f"memory://{name}", prefix="other:")
    try:
        await private[0].declare_queue("q")
        for service in private[1:]:
            assert not await _has_queue(service, "q")
        await named[0].declare_queue("q")
        assert await _has_queue(named[1], "q")
        assert not await _has_queue(other_prefix, "q")  # a name is shared within one prefix
        assert named[0].backend.broker is named[1].backend.broker  # type: ignore[attr-defined]
    finally:
        for service in [*private, *named, other_prefix]:
            await service.close()


async def test_producers_and_consumers_share_a_named_broker_with_services() -> None:
    url = f"memory://{unique_name('broker')}"
    async with (
        RabbitMQService.from_url(url) as service,
        MessageProducer.from_url(url) as producer,
        MessageConsumer.from_url(url) as consumer,
    ):
        await service.declare_queue("jobs")
        got: list[Any] = []

        async def handle(payload: Any) -> None:
            got.append(payload)

        await consumer.consume("jobs", handle)
        await producer.send("jobs", "across services")
        await eventually(lambda: got == ["across services"])
    async with MessageProducer.from_url("memory://") as private:
        with pytest.raises(NotFound):
            await private.send("jobs", "nowhere")


async def test_a_memory_broker_of_ones_own_connects_services_and_restarts() -> None:
    broker = MemoryBroker()
    async with RabbitMQService(broker.backend()) as a, RabbitMQService(broker.backend()) as b:
        assert isinstance(a.backend, MemoryBrokerBackend) and a.backend.broker is broker
        await a.declare_queue("shared")
        await MessageProducer(b).send("shared", 1)
        assert broker.message_count("shared") == 1
        await broker.restart()
        assert a.backend.reconnects == b.backend.reconnects == 1
        assert broker.message_count("shared") == 1  # durable queue, persistent message
        assert (await b.get("shared")) is not None


# -- Closed after close, for every operation ---------------------------------------------


async def _all_closed(operations: list[Callable[[], Awaitable[Any]]]) -> None:
    for operation in operations:
        with pytest.raises(Closed):
            await operation()


async def test_every_service_operation_raises_closed_after_close() -> None:
    service = RabbitMQService()
    await service.declare_queue("q")
    await service.close()
    await service.close()  # twice: harmless
    assert service.closed
    assert service.dead_letter_queue("q") == "q.dlq"  # local reads stay readable
    assert service.delay_queues == frozenset() and service.max_message_bytes > 0
    await _all_closed(
        [
            service.start,
            lambda: service.declare_queue("q2"),
            lambda: service.declare_exchange("x"),
            lambda: service.bind("q", "x"),
            lambda: service.delete_queue("q"),
            lambda: service.delete_exchange("x"),
            lambda: service.get("q"),
        ]
    )


async def test_every_producer_operation_raises_closed_after_close() -> None:
    producer = MessageProducer()
    await producer.service.declare_queue("q")
    await producer.send("q", 1)
    await producer.close()
    await producer.close()
    assert producer.closed
    await _all_closed(
        [
            producer.start,
            lambda: producer.send("q", 1),
            lambda: producer.send("q", 1, delay=1.0),
            lambda: producer.publish("x", "key", 1),
            lambda: producer.send_many("q", [1, 2]),
            lambda: producer.request("q", 1),
        ]
    )


async def test_every_consumer_operation_raises_closed_after_close() -> None:
    consumer = MessageConsumer()
    await consumer.service.declare_queue("q")
    handle = await consumer.consume("q", _noop)
    await MessageProducer(consumer.service).send("q", 1)
    await eventually(lambda: handle.handled == 1)
    await consumer.close()
    await consumer.close()
    assert consumer.closed and not handle.active
    assert handle.handled == 1 and handle.retried == handle.dead_lettered == 0  # readable
    await handle.stop()  # a stopped handle stops again harmlessly
    await _all_closed([consumer.start, lambda: consumer.consume("q", _noop)])


async def test_a_client_of_a_closed_service_raises_closed() -> None:
    service = RabbitMQService()
    await service.declare_queue("q")
    producer, consumer = MessageProducer(service), MessageConsumer(service)
    await producer.start()
    await service.close()
    assert not producer.closed and not consumer.closed
    await _all_closed(
        [
            lambda: producer.send("q", 1),
            lambda: producer.request("q", 1),
            lambda: consumer.consume("q", _noop),  # never started: starting raises
        ]
    )
    await producer.close()
    await consumer.close()


# -- who closes the service --------------------------------------------------------------


@pytest.mark.parametrize("client", [MessageProducer, MessageConsumer])
async def test_a_client_closes_the_service_it_made_and_never_one_it_was_given(
    client: type[MessageProducer] | type[MessageConsumer],
) -> None:
    given = RabbitMQService()
    async with client(given) as with_given, client() as private:
        assert with_given.service is given
        assert private.service is not given
        from_url = client.from_url("memory://")
        await from_url.start()
    await from_url.close()
    assert private.service.closed and from_url.service.closed  # its own: closed with it
    assert not given.closed  # given: still open, and still works
    await given.declare_queue("still-works")
    await given.close()


async def test_closing_the_service_stops_the_consumers_gracefully() -> None:
    service = RabbitMQService(close_timeout=5.0)
    await service.declare_queue("q")
    started, finished = asyncio.Event(), []

    async def slow(payload: Any) -> None:
        started.set()
        await asyncio.sleep(0.2)
        finished.append(payload)

    consumer = MessageConsumer(service, close_timeout=0.01)  # the service's bound applies
    handle = await consumer.consume("q", slow)
    await MessageProducer(service).send("q", "in flight")
    await asyncio.wait_for(started.wait(), 5)
    await service.close()
    assert finished == ["in flight"] and handle.handled == 1 and not handle.active


async def test_closing_a_consumer_stops_its_handles_and_leaves_what_it_was_given() -> None:
    async with RabbitMQService() as service, DedupStore() as dedup:
        await service.declare_queue("q")
        consumer = MessageConsumer(service, dedup=dedup)
        handles = [await consumer.consume("q", _noop) for _ in range(2)]
        await consumer.close()
        assert not any(h.active for h in handles)
        assert not service.closed and not dedup.closed
        assert await dedup.claim("still-works") == "new"
        await MessageProducer(service).send("q", "for later")
        assert (await service.get("q")) is not None  # nobody consumes it any more


# -- from_url: each option to its owner ---------------------------------------------------


async def test_from_url_gives_each_option_to_its_owner() -> None:
    producer = MessageProducer.from_url("memory://", max_in_flight=5, max_message_bytes=100)
    assert producer.service.max_message_bytes == 100
    consumer = MessageConsumer.from_url("memory://", close_timeout=3.0)
    assert consumer.close_timeout == consumer.service.close_timeout == 3.0  # named by both
    await producer.close()
    await consumer.close()
    for make in (RabbitMQService.from_url, MessageProducer.from_url, MessageConsumer.from_url):
        with pytest.raises(ConfigurationError, match="unknown option"):
            make("memory://", nonsense=1)
        # a RabbitMQ option on the memory broker is ignored: one call fits every URL
        await make("memory://", connection_name="x").close()


def test_the_rabbitmq_backend_takes_one_timeout() -> None:
    url = "amqp://guest:guest@127.0.0.1:5672/"
    service = RabbitMQService.from_url(
        url, timeout=1.5, reconnect_interval=0.3, connection_name="mine", close_timeout=2.0
    )
    backend = service.backend
    assert isinstance(backend, AmqpBrokerBackend)
    assert (backend.timeout, backend.reconnect_interval) == (1.5, 0.3)
    assert backend.connection_name == "mine" and service.close_timeout == 2.0
    consumer = MessageConsumer.from_url(url, timeout=2.5, dedup=None)
    assert consumer.service.backend.timeout == 2.5  # type: ignore[attr-defined]
    for old in ("connect_timeout", "publish_timeout"):
        with pytest.raises(ConfigurationError, match=old):
            RabbitMQService.from_url(url, **{old: 1.0})
    with pytest.raises(ConfigurationError):
        RabbitMQService.from_url(url, timeout=0)
    with pytest.raises(ConfigurationError, match=r"MessageProducer.*memory://"):
        MessageProducer.from_url("redis://localhost")


def test_bad_settings_raise_configuration_error() -> None:
    for make in (
        lambda: RabbitMQService(max_message_bytes=0),
        lambda: RabbitMQService(close_timeout=0),
        lambda: MessageProducer(max_in_flight=0),
        lambda: MessageConsumer(close_timeout=-1),
    ):
        with pytest.raises(ConfigurationError):
            make()


# -- typed errors for bad arguments -------------------------------------------------------


async def test_bad_arguments_raise_validation_error_and_change_nothing() -> None:
    async with RabbitMQService() as service:
        producer, consumer = MessageProducer(service), MessageConsumer(service)
        await service.declare_queue("q")
        for name in ("amq.mine", "-leading-dash", "", "x" * 201, "sp ace"):
            with pytest.raises(ValidationError):
                await service.declare_queue(name)
        await service.declare_queue("billing/v2")  # slashes are fine
        bad_calls: list[Callable[[], Awaitable[Any]]] = [
            lambda: service.declare_exchange("x", "headers"),  # type: ignore[arg-type]
            lambda: service.bind("q", "amq.topic", "#"),
            lambda: producer.send("q", 1, delay=-1),
            lambda: producer.send("q", 1, delay=86_401),
            lambda: producer.send("q", 1, message_id=""),
            lambda: producer.publish("x", "k" * 256, 1),
            lambda: producer.request("q", 1, timeout=0),
            lambda: consumer.consume("q", _noop, prefetch=0),
            lambda: consumer.consume("q", _noop, prefetch=65_536),
            lambda: consumer.consume("q", "not callable"),  # type: ignore[arg-type]
            lambda: consumer.consume("q", _noop, max_message_bytes=0),
        ]
        for call in bad_calls:
            with pytest.raises(ValidationError):
                await call()
        assert await service.get("q") is None
        assert service.delay_queues == frozenset()


def test_retry_policy_refuses_bad_settings() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(initial_delay=0)
