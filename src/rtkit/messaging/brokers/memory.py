"""The in-memory broker: RabbitMQ's semantics in one process.

Not a stub: exchanges (direct, topic with ``*``/``#``, fanout) and bindings, the
default exchange, re-declarations compared as RabbitMQ compares them (the same
``ConfigurationError``, see ``_conflicts.py``) and passive declarations,
per-consumer prefetch windows with round-robin dispatch, ack/nack/reject with
and without requeue (a requeued message goes back to its original position and
is flagged ``redelivered``), dead-lettering with ``x-death`` through the default
or a named exchange, per-queue message TTL (so delay tiers work), basic.get,
publisher confirms with ``mandatory`` returns, the header checks RabbitMQ makes
on publish, and direct reply-to. It is the executable specification the
RabbitMQ backend is tested against. ``MemoryBroker.publish`` (the broker itself,
not a connection) takes any message, as a foreign client's would arrive.

``memory://`` gives a service a broker of its own; ``memory://NAME`` one broker
shared by every service opened with that name in the process. A test that
needs the broker itself (to :meth:`~MemoryBroker.restart` it, or to count
messages) makes one and connects services to it:

```python
broker = MemoryBroker()
service = RabbitMQService(broker.backend())
```
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import itertools
import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, Self

from ..._core.ids import new_id
from ..._core.memory import shared_state
from ..._core.topic import TopicPattern
from ..._core.urls import BackendTarget
from ...errors import BackendUnavailable, Closed, NotFound, RtkitError
from .._headers import check_wire_headers
from .._models import ExchangeKind
from ._memory_model import Exchange, Queue, Stored, died, exchange_conflict, queue_conflict
from .base import REPLY_TO, Delivery, OutgoingMessage

__all__ = ["MemoryBroker", "MemoryBrokerBackend"]

log = logging.getLogger("rtkit.messaging")


class _Consumer:
    def __init__(
        self,
        backend: MemoryBrokerBackend,
        queue: Queue,
        callback: Callable[[Delivery], Awaitable[None]],
        prefetch: int,
    ) -> None:
        self.broker = backend.broker
        self.backend = backend
        self.queue = queue
        self.callback = callback
        self.prefetch = prefetch
        self.unacked: dict[int, Stored] = {}
        self.active = True
        self.closed = False
        self.retired = False
        self.tasks: set[asyncio.Task[None]] = set()

    def has_room(self) -> bool:
        return self.active and not self.closed and len(self.unacked) < self.prefetch

    async def cancel(self) -> None:
        """Stop new deliveries."""
        self.retired = True
        self._detach()

    async def close(self) -> None:
        """Close the channel: unacknowledged deliveries are requeued."""
        self.retired = True
        self.shutdown()

    def _detach(self) -> None:
        self.active = False
        if self in self.queue.consumers:
            self.queue.consumers.remove(self)

    def shutdown(self) -> None:
        self._detach()
        self.closed = True
        self.backend.channels.discard(self)
        unacked, self.unacked = self.unacked, {}
        for stored in unacked.values():
            self.broker.requeue(self.queue, stored)
        self.broker.dispatch(self.queue)

    def reattach(self, queue: Queue) -> None:
        self.queue = queue
        self.active = True
        self.closed = False
        queue.consumers.append(self)
        self.backend.channels.add(self)
        self.broker.dispatch(queue)


class _MemoryDelivery(Delivery):
    __slots__ = ("_consumer", "_tag")

    def __init__(self, stored: Stored, consumer: _Consumer | None, tag: int) -> None:
        super().__init__(
            stored.message,
            exchange=stored.exchange,
            routing_key=stored.routing_key,
            redelivered=stored.redelivered,
        )
        self._consumer = consumer
        self._tag = tag

    def _settle(self) -> Stored | None:
        consumer = self._consumer
        if consumer is None or consumer.closed:
            return None  # auto-acked, or the channel is gone: the ack is dropped
        return consumer.unacked.pop(self._tag, None)

    async def ack(self) -> None:
        """Acknowledge."""
        if self._settle() is not None and self._consumer is not None:
            self._consumer.broker.dispatch(self._consumer.queue)

    async def nack(self, *, requeue: bool) -> None:
        """Reject, requeueing or dead-lettering."""
        stored = self._settle()
        consumer = self._consumer
        if stored is None or consumer is None:
            return
        broker = consumer.broker
        if requeue:
            broker.requeue(consumer.queue, stored)
        else:
            broker.dead_letter(consumer.queue, stored, "rejected")
        broker.dispatch(consumer.queue)


class MemoryBroker:
    """An in-process message broker with RabbitMQ's semantics (see the module docs).

    Connect a service to it with ``RabbitMQService(broker.backend())``.
    """

    def __init__(self) -> None:
        self._exchanges: dict[str, Exchange] = {"": Exchange("direct", True)}
        self._queues: dict[str, Queue] = {}
        self._replies: dict[str, asyncio.Future[Stored]] = {}
        self._seq = itertools.count()
        self._tags = itertools.count(1)
        self._connections: weakref.WeakSet[MemoryBrokerBackend] = weakref.WeakSet()

    def backend(self) -> MemoryBrokerBackend:
        """A new connection to this broker, for ``RabbitMQService(backend)``."""
        return MemoryBrokerBackend(self)

    async def restart(self) -> None:
        """Simulate a broker restart.

        Every connection drops (unacknowledged deliveries go back to their queues);
        only durable exchanges and queues survive, holding only persistent
        messages. Then every connection reconnects, like aio-pika's robust
        connection: it declares its topology again and restarts its consumers.
        """
        connections = [c for c in self._connections if c.connected]
        for connection in connections:
            connection.drop()
        for future in self._replies.values():
            if not future.done():
                future.cancel()
        self._exchanges = {n: ex for n, ex in self._exchanges.items() if ex.durable}
        for name, q in list(self._queues.items()):
            if not q.durable:
                self.delete_queue(name)
                continue
            q.consumers.clear()
            q.ready = [m for m in q.ready if m.message.persistent]
            heapq.heapify(q.ready)
        for ex in self._exchanges.values():
            ex.bindings = {b: p for b, p in ex.bindings.items() if b[0] in self._queues}
        for connection in connections:
            connection.recover()

    def message_count(self, queue: str) -> int:
        """Ready (not yet delivered) messages in ``queue``."""
        q = self._queues.get(queue)
        return 0 if q is None else len(q.ready)

    # -- topology (for the connections) ---------------------------------------------

    def register(self, connection: MemoryBrokerBackend) -> None:
        self._connections.add(connection)

    def queue(self, name: str) -> Queue:
        q = self._queues.get(name)
        if q is None:
            raise NotFound(f"no queue {name!r}")
        return q

    def declare_queue(self, name: str, durable: bool, arguments: dict[str, Any]) -> None:
        q = self._queues.get(name)
        if q is None:
            self._queues[name] = Queue(name, durable, dict(arguments))
        elif (conflict := queue_conflict(q, durable, arguments)) is not None:
            raise conflict

    def declare_exchange(self, name: str, kind: ExchangeKind, durable: bool) -> None:
        ex = self._exchanges.get(name)
        if ex is None:
            self._exchanges[name] = Exchange(kind, durable)
        elif (conflict := exchange_conflict(name, ex, kind, durable)) is not None:
            raise conflict

    def exchange(self, name: str) -> Exchange:
        ex = self._exchanges.get(name)
        if ex is None:
            raise NotFound(f"no exchange {name!r}")
        return ex

    def bind(self, queue: str, exchange: str, routing_key: str) -> None:
        self.queue(queue)
        ex = self.exchange(exchange)
        if (queue, routing_key) not in ex.bindings:
            ex.bindings[(queue, routing_key)] = TopicPattern(routing_key)

    def delete_queue(self, name: str) -> None:
        q = self._queues.pop(name, None)
        if q is None:
            return
        q.deleted = True
        for consumer in list(q.consumers):
            consumer.active = False
        q.consumers.clear()
        for ex in self._exchanges.values():
            ex.unbind_queue(name)

    def delete_exchange(self, name: str) -> None:
        if name:
            self._exchanges.pop(name, None)

    # -- routing ---------------------------------------------------------------

    def _route(self, exchange: str, routing_key: str) -> list[Queue]:
        ex = self._exchanges.get(exchange)
        if ex is None:
            raise NotFound(f"no exchange {exchange!r}")
        if exchange == "":
            q = self._queues.get(routing_key)
            return [] if q is None else [q]
        return [self._queues[n] for n in ex.routes(routing_key) if n in self._queues]

    def publish(
        self, exchange: str, routing_key: str, message: OutgoingMessage, *, mandatory: bool
    ) -> None:
        if exchange == "" and routing_key.startswith(REPLY_TO + "."):
            future = self._replies.get(routing_key)
            if future is not None and not future.done():
                future.set_result(Stored(next(self._seq), message, exchange, routing_key))
            return
        queues = self._route(exchange, routing_key)
        if not queues and mandatory:
            raise NotFound(f"no queue is bound to {exchange!r} with key {routing_key!r}")
        for q in queues:
            self._enqueue(q, Stored(next(self._seq), message, exchange, routing_key))

    def _enqueue(self, q: Queue, stored: Stored) -> None:
        ttl = q.ttl
        if ttl is not None:
            loop = asyncio.get_running_loop()
            stored.expires_at = loop.time() + ttl
            loop.call_later(ttl, self.expire, q)
        heapq.heappush(q.ready, stored)
        self.dispatch(q)

    def requeue(self, q: Queue, stored: Stored) -> None:
        if q.deleted:
            return
        stored.redelivered = True
        heapq.heappush(q.ready, stored)

    def expire(self, q: Queue) -> None:
        if q.deleted:
            return
        now = asyncio.get_running_loop().time()
        while q.ready and (q.ready[0].expires_at or now + 1) <= now:
            self.dead_letter(q, heapq.heappop(q.ready), "expired")

    def take(self, q: Queue) -> Stored | None:
        """basic.get: the next ready message, after dead-lettering the expired ones."""
        self.expire(q)
        return heapq.heappop(q.ready) if q.ready else None

    def dead_letter(self, q: Queue, stored: Stored, reason: str) -> None:
        dlx = q.arguments.get("x-dead-letter-exchange")
        if dlx is None or dlx not in self._exchanges:
            return
        routing_key = q.arguments.get("x-dead-letter-routing-key") or stored.routing_key
        message = dataclasses.replace(stored.message, headers=died(q.name, stored, reason))
        for target in self._route(dlx, routing_key):
            self._enqueue(target, Stored(next(self._seq), message, dlx, routing_key))

    def dispatch(self, q: Queue) -> None:
        if q.deleted:
            return
        loop = asyncio.get_running_loop()
        while q.ready and q.consumers:
            n = len(q.consumers)
            for i in range(n):
                consumer = q.consumers[(q.next_consumer + i) % n]
                if consumer.has_room():
                    q.next_consumer = (q.next_consumer + i + 1) % n
                    break
            else:
                return
            stored = heapq.heappop(q.ready)
            if stored.expires_at is not None and stored.expires_at <= loop.time():
                self.dead_letter(q, stored, "expired")
                continue
            tag = next(self._tags)
            consumer.unacked[tag] = stored
            task = loop.create_task(
                _call(consumer.callback, _MemoryDelivery(stored, consumer, tag))
            )
            consumer.tasks.add(task)
            task.add_done_callback(_task_done(consumer.tasks))

    async def request(
        self, exchange: str, routing_key: str, message: OutgoingMessage, timeout: float
    ) -> Delivery:
        reply_to = f"{REPLY_TO}.{new_id()}"
        future: asyncio.Future[Stored] = asyncio.get_running_loop().create_future()
        self._replies[reply_to] = future
        try:
            asked = dataclasses.replace(message, reply_to=reply_to)
            self.publish(exchange, routing_key, asked, mandatory=True)
            try:
                stored = await asyncio.wait_for(future, timeout)
            except TimeoutError:
                raise BackendUnavailable(
                    f"no reply from {routing_key!r} within {timeout} s"
                ) from None
        finally:
            self._replies.pop(reply_to, None)
        return _MemoryDelivery(stored, None, 0)


async def _call(callback: Callable[[Delivery], Awaitable[None]], delivery: Delivery) -> None:
    await callback(delivery)


def _task_done(tasks: set[asyncio.Task[None]]) -> Callable[[asyncio.Task[None]], None]:
    def done(task: asyncio.Task[None]) -> None:
        tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a message callback failed", exc_info=task.exception())

    return done


class MemoryBrokerBackend:
    """A connection to a [`MemoryBroker`][rtkit.messaging.MemoryBroker]: the broker backend.

    ``MemoryBrokerBackend()`` connects to a new broker of its own;
    ``MemoryBrokerBackend(broker)`` (or ``broker.backend()``) to ``broker``.

    Attributes:
        broker: The broker this connection talks to.
        reconnects: How many broker restarts this connection recovered from.
    """

    def __init__(self, broker: MemoryBroker | None = None) -> None:
        self.broker = broker if broker is not None else MemoryBroker()
        self.channels: set[_Consumer] = set()
        self.connected = False
        self.closed = False
        self.reconnects = 0
        # What this connection declared, replayed after a broker restart.
        self._queues: dict[str, tuple[bool, dict[str, Any]]] = {}
        self._exchanges: dict[str, tuple[ExchangeKind, bool]] = {}
        self._bindings: list[tuple[str, str, str]] = []
        self._consumers: list[_Consumer] = []

    @classmethod
    def open(cls, target: BackendTarget) -> Self:
        """A connection to the broker of ``target``: private, or shared by its name."""
        return cls(shared_state(target, MemoryBroker))

    def _check(self) -> MemoryBroker:
        if self.closed:
            raise Closed("this in-memory broker connection is closed")
        if not self.connected:
            raise BackendUnavailable("the in-memory broker connection is not open")
        return self.broker

    async def connect(self) -> None:
        """Open the connection."""
        if self.closed:
            raise Closed("this in-memory broker connection is closed")
        self.connected = True
        self.broker.register(self)

    async def close(self) -> None:
        """Close every consumer channel (requeueing unacked deliveries)."""
        self.closed = True
        for consumer in list(self.channels):
            await consumer.close()
        self._consumers.clear()
        self.connected = False

    def drop(self) -> None:
        """The broker went away: channels close, unacked deliveries are requeued."""
        for consumer in list(self.channels):
            consumer.shutdown()
        self.connected = False

    def recover(self) -> None:
        """Reconnect after a restart: declare the topology again, restart the consumers."""
        broker = self.broker
        self.connected = True
        self.reconnects += 1
        for name, (kind, durable) in self._exchanges.items():
            with contextlib.suppress(RtkitError):
                broker.declare_exchange(name, kind, durable)
        for name, (durable, arguments) in self._queues.items():
            with contextlib.suppress(RtkitError):
                broker.declare_queue(name, durable, arguments)
        for binding in self._bindings:
            with contextlib.suppress(RtkitError):
                broker.bind(*binding)
        self._consumers = [c for c in self._consumers if not c.retired]
        for consumer in self._consumers:
            with contextlib.suppress(NotFound):
                consumer.reattach(broker.queue(consumer.queue.name))

    async def declare_queue(
        self, name: str, *, durable: bool, arguments: dict[str, Any], passive: bool = False
    ) -> None:
        """Declare a queue (``passive``: only check that it exists)."""
        broker = self._check()
        if passive:
            broker.queue(name)
            return
        broker.declare_queue(name, durable, arguments)
        self._queues[name] = (durable, dict(arguments))

    async def declare_exchange(
        self, name: str, kind: ExchangeKind, *, durable: bool, passive: bool = False
    ) -> None:
        """Declare an exchange (``passive``: only check that it exists)."""
        broker = self._check()
        if passive:
            broker.exchange(name)
            return
        broker.declare_exchange(name, kind, durable)
        self._exchanges[name] = (kind, durable)

    async def bind(self, queue: str, exchange: str, routing_key: str) -> None:
        """Bind a queue to an exchange."""
        self._check().bind(queue, exchange, routing_key)
        if (queue, exchange, routing_key) not in self._bindings:
            self._bindings.append((queue, exchange, routing_key))

    async def delete_queue(self, name: str) -> None:
        """Delete a queue."""
        self._check().delete_queue(name)
        self._queues.pop(name, None)
        self._bindings = [b for b in self._bindings if b[0] != name]

    async def delete_exchange(self, name: str) -> None:
        """Delete an exchange."""
        self._check().delete_exchange(name)
        self._exchanges.pop(name, None)
        self._bindings = [b for b in self._bindings if b[1] != name]

    async def publish(
        self, exchange: str, routing_key: str, message: OutgoingMessage, *, mandatory: bool
    ) -> None:
        """Publish (confirmed at once); headers RabbitMQ would refuse raise ``ValidationError``."""
        broker = self._check()
        check_wire_headers(message.headers)
        broker.publish(exchange, routing_key, message, mandatory=mandatory)

    async def reply(self, routing_key: str, message: OutgoingMessage) -> None:
        """Send a reply once (to a queue, or a direct reply-to address)."""
        await self.publish("", routing_key, message, mandatory=False)

    async def get(self, queue: str) -> Delivery | None:
        """basic.get with auto-ack."""
        broker = self._check()
        stored = broker.take(broker.queue(queue))
        return None if stored is None else _MemoryDelivery(stored, None, 0)

    async def consume(
        self, queue: str, callback: Callable[[Delivery], Awaitable[None]], *, prefetch: int
    ) -> _Consumer:
        """Start a consumer with its own prefetch window."""
        broker = self._check()
        q = broker.queue(queue)
        consumer = _Consumer(self, q, callback, prefetch)
        q.consumers.append(consumer)
        self.channels.add(consumer)
        self._consumers.append(consumer)
        broker.dispatch(q)
        return consumer

    async def request(
        self, exchange: str, routing_key: str, message: OutgoingMessage, *, timeout: float
    ) -> Delivery:
        """Publish with a direct reply-to address and wait for the reply."""
        return await self._check().request(exchange, routing_key, message, timeout)
