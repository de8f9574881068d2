"""A shop's domain events on the rtkit EventBus.

    user registered   -> welcome email, profile          -> user.welcome.completed -> analytics
    order created     -> stock, confirmation, payment     -> payment.processed
    payment processed -> order "paid" (+ loyalty points) or "payment_failed"

The shop (users, orders, stock) and the services (payments, e-mail) each
have a bus of their own. Run them in one process, on two buses sharing the
channel ``memory://domain-events``::

    python examples/domain_events.py

or across two processes on Redis: this process is the shop, a second process
it starts runs the services::

    python examples/domain_events.py --redis redis://127.0.0.1:6379/0

Either way it prints what happens, one whole line at a time (the services'
lines come through this process), and exits by itself (status 0 when every
order ended as expected). On Redis the buses use ``--prefix`` (a new one per
run by default) and pub/sub only: nothing is stored in Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from typing import Literal

import pydantic

from rtkit import Event, EventBus

# --------------------------------------------------------------------------- the events


class Item(pydantic.BaseModel):
    product_id: int
    quantity: int
    price: float


class UserRegistered(pydantic.BaseModel):
    user_id: int
    email: str


class WelcomeCompleted(pydantic.BaseModel):
    user_id: int


class OrderCreated(pydantic.BaseModel):
    order_id: int
    user_id: int
    items: list[Item]
    total_amount: float


class PaymentProcessed(pydantic.BaseModel):
    payment_id: str | None
    order_id: int
    user_id: int
    amount: float
    status: Literal["success", "failed"]


def say(who: str, text: str) -> None:
    """Print one whole line in one write, so that lines never interleave."""
    sys.stdout.write(f"[{who:>8}] {text}\n")
    sys.stdout.flush()


# --------------------------------------------------------------------------- the shop


class Shop:
    """Users, orders and stock: publishes user.registered and order.created."""

    def __init__(self, bus: EventBus, *, expected_orders: int) -> None:
        self.bus = bus
        self.stock = {1: 10, 2: 5}
        self.orders: dict[int, str] = {}
        self.points: dict[int, float] = {}
        self.welcomed: set[int] = set()
        self.awaited: set[int] = set()  # orders whose payment is still to come
        # settled once every expected order is paid or failed (order 1's payment
        # may come back before order 2 is even created)
        self.expected_orders = expected_orders
        self.settled = asyncio.Event()
        bus.subscribe("user.registered", self.on_user_registered, model=UserRegistered)
        bus.subscribe("user.welcome.completed", self.on_welcome_completed, model=WelcomeCompleted)
        bus.subscribe("order.created", self.on_order_created, model=OrderCreated)
        bus.subscribe("payment.processed", self.on_payment_processed, model=PaymentProcessed)

    async def register_user(self, user_id: int, email: str) -> None:
        say("shop", f"user {user_id} registers")
        await self.bus.publish("user.registered", UserRegistered(user_id=user_id, email=email))

    async def create_order(self, order_id: int, user_id: int, items: list[Item]) -> None:
        total = sum(item.price * item.quantity for item in items)
        self.orders[order_id] = "created"
        self.awaited.add(order_id)
        say("shop", f"order {order_id} created, total {total:.2f}")
        event = OrderCreated(order_id=order_id, user_id=user_id, items=items, total_amount=total)
        await self.bus.publish("order.created", event)

    async def on_user_registered(self, event: Event[UserRegistered]) -> None:
        say("shop", f"profile created for user {event.data.user_id}")

    async def on_welcome_completed(self, event: Event[WelcomeCompleted]) -> None:
        self.welcomed.add(event.data.user_id)
        say("shop", f"analytics: user_welcome_completed for user {event.data.user_id}")

    def on_order_created(self, event: Event[OrderCreated]) -> None:
        for item in event.data.items:
            self.stock[item.product_id] -= item.quantity
        say("shop", f"stock updated for order {event.data.order_id}: {self.stock}")

    def on_payment_processed(self, event: Event[PaymentProcessed]) -> None:
        payment = event.data
        if payment.status == "success":
            self.orders[payment.order_id] = "paid"
            self.points[payment.user_id] = self.points.get(payment.user_id, 0) + payment.amount
            say("shop", f"order {payment.order_id}: paid, loyalty points {payment.amount:.0f}")
        else:
            self.orders[payment.order_id] = "payment_failed"
            say("shop", f"order {payment.order_id}: payment_failed")
        self.awaited.discard(payment.order_id)
        if not self.awaited and len(self.orders) == self.expected_orders:
            self.settled.set()


# --------------------------------------------------------------------------- the services


class Services:
    """E-mail and payments: they react to the shop's events."""

    CARD_LIMIT = 500.0

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self.stopped = asyncio.Event()
        bus.subscribe("user.registered", self.send_welcome, model=UserRegistered)
        bus.subscribe("order.created", self.send_confirmation, model=OrderCreated)
        bus.subscribe("order.created", self.charge, model=OrderCreated)
        bus.subscribe("payment.processed", self.notify_payment, model=PaymentProcessed)
        bus.subscribe("shop.closed", lambda event: self.stopped.set())

    async def send_welcome(self, event: Event[UserRegistered]) -> None:
        say("email", f"welcome email to {event.data.email}")
        await self.bus.publish(
            "user.welcome.completed", WelcomeCompleted(user_id=event.data.user_id)
        )

    def send_confirmation(self, event: Event[OrderCreated]) -> None:
        say("email", f"order confirmation for order {event.data.order_id}")

    async def charge(self, event: Event[OrderCreated]) -> None:
        order = event.data
        ok = order.total_amount <= self.CARD_LIMIT
        payment = PaymentProcessed(
            payment_id=uuid.uuid4().hex[:8] if ok else None,
            order_id=order.order_id,
            user_id=order.user_id,
            amount=order.total_amount,
            status="success" if ok else "failed",
        )
        say(
            "payments",
            f"charging {order.total_amount:.2f} for order {order.order_id}: {payment.status}",
        )
        await self.bus.publish("payment.processed", payment)

    def notify_payment(self, event: Event[PaymentProcessed]) -> None:
        word = "succeeded" if event.data.status == "success" else "FAILED"
        say("email", f"payment for order {event.data.order_id} {word}")


# --------------------------------------------------------------------------- running it


async def run_shop(bus: EventBus) -> int:
    shop = Shop(bus, expected_orders=2)
    bus.subscribe("*", lambda event: say("monitor", f"event {event.name}"))  # every event
    await shop.register_user(1, "user@example.com")
    await shop.create_order(
        1, 1, [Item(product_id=1, quantity=2, price=50), Item(product_id=2, quantity=1, price=30)]
    )
    await shop.create_order(2, 1, [Item(product_id=2, quantity=3, price=300)])
    await asyncio.wait_for(shop.settled.wait(), 30)
    stats = bus.stats()
    say("shop", f"orders: {shop.orders}; welcomed: {sorted(shop.welcomed)}")
    say("shop", f"listeners: {dict(stats.listeners)}")
    say(
        "shop",
        f"published {stats.published}, received {stats.received}, "
        f"handler calls {stats.delivered}, errors {stats.errors}",
    )
    expected = {1: "paid", 2: "payment_failed"}
    return 0 if shop.orders == expected and shop.welcomed == {1} and not stats.errors else 1


async def in_memory() -> int:
    # Two buses on one memory:// name share a channel, as the two processes share Redis.
    async with (
        EventBus.from_url("memory://domain-events") as shop_bus,
        EventBus.from_url("memory://domain-events") as services_bus,
    ):
        Services(services_bus)
        return await run_shop(shop_bus)


async def shop_on_redis(url: str, prefix: str) -> int:
    async with EventBus.from_url(url, prefix=prefix) as bus:
        ready = asyncio.Event()
        bus.subscribe("services.ready", lambda event: ready.set())
        # The services' output comes through a pipe and is printed here line by
        # line, so the two processes' lines never cut into each other.
        worker = await asyncio.create_subprocess_exec(
            *(sys.executable, __file__, "--redis", url, "--prefix", prefix, "--services"),
            stdout=asyncio.subprocess.PIPE,
        )
        assert worker.stdout is not None
        relay = asyncio.create_task(_relay(worker.stdout))
        try:
            await asyncio.wait_for(ready.wait(), 30)
            say("shop", f"the services run in process {worker.pid}")
            status = await run_shop(bus)
            await bus.publish("shop.closed")
            worker_status = await asyncio.wait_for(worker.wait(), 30)
            await asyncio.wait_for(relay, 30)
            return status or worker_status
        finally:
            if worker.returncode is None:
                worker.kill()
                await worker.wait()


async def _relay(lines: asyncio.StreamReader) -> None:
    """Print the services' lines, each whole, among this process's own."""
    while line := await lines.readline():
        sys.stdout.write(line.decode(errors="replace"))
        sys.stdout.flush()


async def services_on_redis(url: str, prefix: str) -> int:
    async with EventBus.from_url(url, prefix=prefix) as bus:
        services = Services(bus)
        await bus.publish("services.ready")
        await asyncio.wait_for(services.stopped.wait(), 60)
        return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--redis", metavar="URL", help="run on Redis, in two processes")
    parser.add_argument("--prefix", help="Redis key prefix (default: a new one per run)")
    parser.add_argument("--services", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.redis is None:
        return asyncio.run(in_memory())
    prefix = args.prefix or f"rtkit-example-{uuid.uuid4().hex[:8]}:"
    if args.services:
        return asyncio.run(services_on_redis(args.redis, prefix))
    return asyncio.run(shop_on_redis(args.redis, prefix))


if __name__ == "__main__":
    sys.exit(main())
