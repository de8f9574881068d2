"""rtkit.testing.TestBroker: the in-memory broker of one test, with ways to look inside."""

from __future__ import annotations

import pydantic
import pytest

from rtkit import MessageProducer, RabbitMQService, RetryPolicy
from rtkit.errors import Closed, RemoteError
from rtkit.messaging import Envelope
from rtkit.testing import TestBroker


class Order(pydantic.BaseModel):
    order_id: int


async def test_code_under_test_connects_by_url_and_its_messages_are_seen() -> None:
    async with TestBroker() as broker:
        # the application's own service, opened from the URL its settings hold
        async with RabbitMQService.from_url(broker.url) as app:
            await app.declare_queue("email.send")
            await MessageProducer(app).send("email.send", {"to": "a@example.com"})
        message = await broker.wait_for_message("email.send")
        assert message.payload == {"to": "a@example.com"}
        assert broker.message_count("email.send") == 0
        assert await broker.get("email.send") is None
        with pytest.raises(TimeoutError, match=r"email\.send"):
            await broker.wait_for_message("email.send", timeout=0.05)


async def test_handlers_run_with_retries_and_dead_letters() -> None:
    async with TestBroker() as broker:
        mq = await broker.service()
        await mq.declare_queue("orders")
        seen: list[tuple[int, int]] = []

        async def handle(order: Order, envelope: Envelope) -> None:
            seen.append((order.order_id, envelope.attempt))
            if order.order_id == 2:
                raise RuntimeError("card declined")

        retry = RetryPolicy(max_attempts=2, initial_delay=0.01, jitter=0)
        handle_ = await broker.consume("orders", handle, model=Order, retry=retry)
        await broker.send("orders", Order(order_id=1))
        await broker.send("orders", Order(order_id=2))
        await broker.wait_handled(handle_, 2)
        dead = await broker.wait_for_dead_letter("orders")
        assert (dead.reason, dead.error, dead.attempts) == ("handler_failed", "card declined", 2)
        assert sorted(seen) == [(1, 1), (2, 1), (2, 2)]
        assert (handle_.handled, handle_.retried, handle_.dead_lettered) == (1, 1, 1)


async def test_a_tap_sees_what_goes_through_an_exchange() -> None:
    async with TestBroker() as broker:
        mq = await broker.service()
        await mq.declare_exchange("events", "topic")
        await mq.declare_queue("billing")
        await mq.bind("billing", "events", "order.#")
        tap = await broker.tap("events", "order.*")
        await broker.publish("events", "order.created", {"id": 1})
        await broker.publish("events", "user.created", {"id": 2})
        tapped = await tap.wait_for()
        assert (tapped.routing_key, tapped.payload) == ("order.created", {"id": 1})
        assert tap.payloads == [{"id": 1}]
        assert (await broker.wait_for_message("billing")).payload == {"id": 1}  # still routed


async def test_requests_and_a_broker_restart() -> None:
    async with TestBroker() as broker:
        mq = await broker.service()
        await mq.declare_queue("prices")

        async def price(query: dict[str, str]) -> dict[str, int]:
            if query["sku"] == "??":
                raise LookupError("unknown sku")
            return {"price": 42}

        await broker.consume("prices", price, retry=RetryPolicy.never())
        assert await broker.request("prices", {"sku": "A1"}, timeout=5) == {"price": 42}
        with pytest.raises(RemoteError):
            await broker.request("prices", {"sku": "??"}, timeout=5)
        await broker.broker.restart()
        assert await broker.request("prices", {"sku": "A1"}, timeout=5) == {"price": 42}


async def test_everything_it_made_is_closed_and_names_are_its_own() -> None:
    first, second = TestBroker(), TestBroker()
    assert first.url != second.url and TestBroker.__test__ is False
    async with first:
        service = await first.service()
        await service.declare_queue("q")
    with pytest.raises(Closed):
        await service.declare_queue("q")
    with pytest.raises(RuntimeError, match="start"):
        _ = second.broker
