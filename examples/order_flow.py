"""An order flow on rtkit messaging: orders, payments and confirmation e-mails.

Three durable queues with their prefetch values: ``order.created`` (5),
``payment.processed`` (3) and ``email.send`` (10). Creating an order sends
``order.created``; its handler processes the order, charges the payment (which
sends ``payment.processed``) and asks for a confirmation e-mail
(``email.send``); the payment handler marks the order paid and updates the
stock. Handlers validate their payloads with pydantic models; failures retry
with back-off and end in ``<queue>.dlq`` with the reason.

Run it on the in-memory broker, or on RabbitMQ with a URL::

    python examples/order_flow.py
    python examples/order_flow.py amqp://guest:guest@localhost:5672/

Every queue name starts with ``--prefix`` (by default a new one per run, so that
runs on a shared broker never meet), and the queues, their dead-letter queues
and their delay tier queues are deleted at the end unless ``--keep`` is given.
"""

from __future__ import annotations

import argparse
import asyncio
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pydantic

from rtkit import MessageConsumer, MessageProducer, RabbitMQService, RetryPolicy


class Item(pydantic.BaseModel):
    """One line of an order."""

    product_id: int
    quantity: int = pydantic.Field(gt=0)
    price: float = pydantic.Field(ge=0)


class OrderCreated(pydantic.BaseModel):
    """The ``order.created`` message."""

    order_id: int
    user_id: int
    items: list[Item]
    total_amount: float
    timestamp: datetime


class PaymentProcessed(pydantic.BaseModel):
    """The ``payment.processed`` message."""

    order_id: int
    payment_id: int
    amount: float
    status: str
    items: list[Item]
    timestamp: datetime


class Email(pydantic.BaseModel):
    """The ``email.send`` message."""

    to: str
    subject: str
    body: str
    type: str


@dataclass
class Shop:
    """The application state the handlers change (a database in real life)."""

    statuses: dict[int, str] = field(default_factory=dict)
    stock: dict[int, int] = field(default_factory=lambda: {1: 100, 2: 100})
    outbox: list[Email] = field(default_factory=list)


class OrderFlow:
    """Wires the three queues, their handlers and the order service together.

    ``prefix`` is put in front of every queue name, so that flows on one broker
    never share queues.
    """

    def __init__(self, service: RabbitMQService, shop: Shop, *, prefix: str = "") -> None:
        self.service = service
        self.shop = shop
        self.producer = MessageProducer(service)
        self.consumer = MessageConsumer(service)
        self.order_created = f"{prefix}order.created"
        self.payment_processed = f"{prefix}payment.processed"
        self.email_send = f"{prefix}email.send"
        self._next_id = 0

    @property
    def queues(self) -> list[str]:
        """The queue names, in order."""
        return [self.order_created, self.payment_processed, self.email_send]

    async def start(self) -> None:
        """Declare the queues (each with a dead-letter queue) and start the consumers."""
        for queue in self.queues:
            await self.service.declare_queue(queue, durable=True)
        consume = self.consumer.consume
        retry = RetryPolicy(max_attempts=3, initial_delay=0.1, max_delay=1.0)
        await consume(self.order_created, self.on_order_created, prefetch=5, model=OrderCreated)
        await consume(self.payment_processed, self.on_payment, prefetch=3, model=PaymentProcessed)
        await consume(self.email_send, self.on_send_email, prefetch=10, model=Email, retry=retry)

    async def stop(self) -> None:
        """Stop the consumers gracefully: handlers already running finish first."""
        await self.consumer.close()  # the service it was given stays open

    # -- the order service ----------------------------------------------------------

    async def create_order(self, user_id: int, items: list[Item]) -> int:
        """Store a new order and announce it on ``order.created``."""
        self._next_id += 1
        order_id = self._next_id
        self.shop.statuses[order_id] = "created"
        await self.producer.send(
            self.order_created,
            OrderCreated(
                order_id=order_id,
                user_id=user_id,
                items=items,
                total_amount=sum(i.price * i.quantity for i in items),
                timestamp=datetime.now(UTC),
            ),
        )
        return order_id

    # -- handlers -------------------------------------------------------------------

    async def on_order_created(self, order: OrderCreated) -> None:
        """Process the order, charge it, and send the confirmation e-mail."""
        self.shop.statuses[order.order_id] = "processing"
        await self.producer.send(
            self.payment_processed,
            PaymentProcessed(
                order_id=order.order_id,
                payment_id=1000 + order.order_id,
                amount=order.total_amount,
                status="success",
                items=order.items,
                timestamp=datetime.now(UTC),
            ),
        )
        await self.producer.send(
            self.email_send,
            Email(
                to=f"user{order.user_id}@example.com",
                subject="Order confirmation",
                body=f"Your order {order.order_id} has been created",
                type="order_confirmation",
            ),
        )

    async def on_payment(self, payment: PaymentProcessed) -> None:
        """Mark the order paid (or failed) and update the stock."""
        if payment.status != "success":
            self.shop.statuses[payment.order_id] = "payment_failed"
            return
        self.shop.statuses[payment.order_id] = "paid"
        for item in payment.items:
            self.shop.stock[item.product_id] = (
                self.shop.stock.get(item.product_id, 0) - item.quantity
            )

    async def on_send_email(self, email: Email) -> None:
        """Send the e-mail (here: put it in the outbox)."""
        self.shop.outbox.append(email)


async def run(url: str = "memory://", *, prefix: str = "", cleanup: bool = True) -> Shop:
    """Run the flow for two orders and return the resulting shop state.

    With ``cleanup`` the queues the flow declared (with their dead-letter and delay
    tier queues) are deleted at the end, also when the flow fails.
    """
    shop = Shop()
    async with RabbitMQService.from_url(url) as service:
        flow = OrderFlow(service, shop, prefix=prefix)
        try:
            await flow.start()
            await _two_orders(flow, shop)
        finally:
            await flow.stop()
            if cleanup:
                for queue in flow.queues:
                    await service.delete_queue(queue)
    return shop


async def _two_orders(flow: OrderFlow, shop: Shop) -> None:
    first = await flow.create_order(1, [Item(product_id=1, quantity=2, price=50)])
    second = await flow.create_order(2, [Item(product_id=2, quantity=1, price=20)])
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while not (
        shop.statuses.get(first) == shop.statuses.get(second) == "paid" and len(shop.outbox) == 2
    ):
        if loop.time() > deadline:
            raise TimeoutError("the order flow did not complete")
        await asyncio.sleep(0.01)


def main() -> None:
    """Entry point: ``python examples/order_flow.py [URL] [--prefix P] [--keep]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "url", nargs="?", default="memory://", help="the broker (default: %(default)s)"
    )
    parser.add_argument(
        "--prefix",
        help="start of every queue name (default: a new one per run, order-flow-<hex>.)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the queues afterwards (default: delete them)"
    )
    args = parser.parse_args()
    prefix = args.prefix if args.prefix is not None else f"order-flow-{uuid.uuid4().hex[:8]}."
    shop = asyncio.run(run(args.url, prefix=prefix, cleanup=not args.keep))
    for order_id, status in sorted(shop.statuses.items()):
        print(f"order {order_id}: {status}")
    print(f"stock: {shop.stock}")
    for email in shop.outbox:
        print(f"email to {email.to}: {email.subject} - {email.body}")
    print(f"queues {prefix}*: " + ("kept" if args.keep else "deleted"))


if __name__ == "__main__":
    main()
