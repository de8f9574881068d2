"""The in-memory broker: RabbitMQ's semantics in one process.

Not a stub: exchanges (direct, topic with ``*``/``#``, fanout) and bindings, the
default exchange, durable flags checked on re-declaration, per-consumer
prefetch windows with round-robin dispatch, ack/nack/reject with and without
requeue (a requeued message goes back to its original position and is flagged
``redelivered``), dead-lettering with ``x-death``, per-queue message TTL (so
delay tiers work), basic.get, publisher confirms with ``mandatory`` returns,
and direct reply-to. It is the executable specification the RabbitMQ backend
is tested against.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import itertools
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .._ids import new_id
from ..errors import BackendUnavailable, ConfigurationError, NotFound, RtkitError
from .base import REPLY_TO, Delivery, ExchangeKind, OutgoingMessage

__all__ = ["MemoryBroker", "MemoryConnection", "topic_matches"]

log = logging.getLogger("rtkit.messaging")


def topic_matches(pattern: str, routing_key: str) -> bool:
    """AMQP topic matching: ``*`` is exactly one word, ``#`` zero or more words."""
    return _match(pattern.split("."), routing_key.split("."))


def _match(pattern: list[str], words: list[str]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_match(rest, words[i:]) for i in range(len(words) + 1))
    if not words:
        return False
    return (head == "*" or head == words[0]) and _match(rest, words[1:])


@dataclass(order=True)
class _Stored:
    seq: int
    message: OutgoingMessage = field(compare=False)
    exchange: str = field(compare=False)
    routing_key: str = field(compare=False)
    redelivered: bool = field(default=False, compare=False)
    expires_at: float | None = field(default=None, compare=False)


@dataclass
class _Exchange:
    kind: ExchangeKind
    durable: bool
    bindings: list[tuple[str, str]] = field(default_factory=list)


@dataclass(eq=False)
class _Queue:
    name: str
    durable: bool
    arguments: dict[str, Any]
    ready: list[_Stored] = field(default_factory=list)
    consumers: list[_Consumer] = field(default_factory=list)
    next_consumer: int = 0
    deleted: bool = False

    @property
    def ttl(self) -> float | None:
        ttl = self.arguments.get("x-message-ttl")
        return None if ttl is None else float(ttl) / 1000.0


class _Consumer:
    def __init__(
        self,
        broker: MemoryBroker,
        connection: MemoryConnection,
        queue: _Queue,
        callback: Callable[[Delivery], Awaitable[None]],
        prefetch: int,
    ) -> None:
        self.broker = broker
        self.connection = connection
        self.queue = queue
        self.callback = callback
        self.prefetch = prefetch
        self.unacked: dict[int, _Stored] = {}
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
        self._shutdown()

    def _detach(self) -> None:
        self.active = False
        if self in self.queue.consumers:
            self.queue.consumers.remove(self)

    def _shutdown(self) -> None:
        self._detach()
        self.closed = True
        self.connection.consumers.discard(self)
        unacked, self.unacked = self.unacked, {}
        for stored in unacked.values():
            self.broker._requeue(self.queue, stored)
        self.broker._dispatch(self.queue)

    def _reattach(self, queue: _Queue) -> None:
        self.queue = queue
        self.active = True
        self.closed = False
        queue.consumers.append(self)
        self.connection.consumers.add(self)
        self.broker._dispatch(queue)


class _MemoryDelivery(Delivery):
    __slots__ = ("_consumer", "_tag")

    def __init__(self, stored: _Stored, consumer: _Consumer | None, tag: int) -> None:
        super().__init__(
            stored.message,
            exchange=stored.exchange,
            routing_key=stored.routing_key,
            redelivered=stored.redelivered,
        )
        self._consumer = consumer
        self._tag = tag

    def _settle(self) -> _Stored | None:
        consumer = self._consumer
        if consumer is None or consumer.closed:
            return None  # auto-acked, or the channel is gone: the ack is dropped
        return consumer.unacked.pop(self._tag, None)

    async def ack(self) -> None:
        """Acknowledge."""
        if self._settle() is not None and self._consumer is not None:
            self._consumer.broker._dispatch(self._consumer.queue)

    async def nack(self, *, requeue: bool) -> None:
        """Reject, requeueing or dead-lettering."""
        stored = self._settle()
        consumer = self._consumer
        if stored is None or consumer is None:
            return
        broker = consumer.broker
        if requeue:
            broker._requeue(consumer.queue, stored)
        else:
            broker._dead_letter(consumer.queue, stored, "rejected")
        broker._dispatch(consumer.queue)


class MemoryBroker:
    """An in-process message broker with RabbitMQ's semantics (see the module docs).

    ``MemoryBroker.named("")`` is the one ``memory://`` URLs share in a process;
    make your own instance for isolation and pass ``broker.connection()`` to
    :class:`~rtkit.messaging.RabbitMQService`.
    """

    _registry: ClassVar[dict[str, MemoryBroker]] = {}

    def __init__(self) -> None:
        self.exchanges: dict[str, _Exchange] = {"": _Exchange("direct", True)}
        self.queues: dict[str, _Queue] = {}
        self._replies: dict[str, asyncio.Future[_Stored]] = {}
        self._seq = itertools.count()
        self._tags = itertools.count(1)
        self._connections: weakref.WeakSet[MemoryConnection] = weakref.WeakSet()

    @classmethod
    def named(cls, name: str = "") -> MemoryBroker:
        """The process-wide broker called ``name`` (made on first use)."""
        broker = cls._registry.get(name)
        if broker is None:
            broker = cls._registry[name] = cls()
        return broker

    def connection(self) -> MemoryConnection:
        """A new connection to this broker."""
        return MemoryConnection(self)

    async def restart(self) -> None:
        """Simulate a broker restart.

        Every connection drops (unacknowledged deliveries go back to their queues);
        only durable exchanges and queues survive, holding only persistent
        messages. Then every connection reconnects, like aio-pika's robust
        connection: it declares its topology again and restarts its consumers.
        """
        connections = [c for c in self._connections if c.open]
        for connection in connections:
            connection._drop()
        for future in self._replies.values():
            if not future.done():
                future.cancel()
        self.exchanges = {n: ex for n, ex in self.exchanges.items() if ex.durable}
        for name, q in list(self.queues.items()):
            if not q.durable:
                self._delete_queue(name)
                continue
            q.consumers.clear()
            q.ready = [m for m in q.ready if m.message.persistent]
            heapq.heapify(q.ready)
        for ex in self.exchanges.values():
            ex.bindings = [b for b in ex.bindings if b[0] in self.queues]
        for connection in connections:
            connection._recover()

    def message_count(self, queue: str) -> int:
        """Ready (not yet delivered) messages in ``queue``."""
        q = self.queues.get(queue)
        return 0 if q is None else len(q.ready)

    # -- topology --------------------------------------------------------------

    def _declare_queue(self, name: str, durable: bool, arguments: dict[str, Any]) -> None:
        q = self.queues.get(name)
        if q is None:
            self.queues[name] = _Queue(name, durable, dict(arguments))
        elif q.durable != durable or q.arguments != arguments:
            raise ConfigurationError(
                f"queue {name!r} exists with other settings (durable={q.durable}, "
                f"arguments={q.arguments})"
            )

    def _declare_exchange(self, name: str, kind: ExchangeKind, durable: bool) -> None:
        ex = self.exchanges.get(name)
        if ex is None:
            self.exchanges[name] = _Exchange(kind, durable)
        elif ex.kind != kind or ex.durable != durable:
            raise ConfigurationError(
                f"exchange {name!r} exists with other settings (kind={ex.kind}, "
                f"durable={ex.durable})"
            )

    def _bind(self, queue: str, exchange: str, routing_key: str) -> None:
        if queue not in self.queues:
            raise NotFound(f"no queue {queue!r}")
        ex = self.exchanges.get(exchange)
        if ex is None:
            raise NotFound(f"no exchange {exchange!r}")
        if (queue, routing_key) not in ex.bindings:
            ex.bindings.append((queue, routing_key))

    def _delete_queue(self, name: str) -> None:
        q = self.queues.pop(name, None)
        if q is None:
            return
        q.deleted = True
        for consumer in list(q.consumers):
            consumer.active = False
        q.consumers.clear()
        for ex in self.exchanges.values():
            ex.bindings = [b for b in ex.bindings if b[0] != name]

    def _delete_exchange(self, name: str) -> None:
        if name:
            self.exchanges.pop(name, None)

    # -- routing ---------------------------------------------------------------

    def _route(self, exchange: str, routing_key: str) -> list[_Queue]:
        ex = self.exchanges.get(exchange)
        if ex is None:
            raise NotFound(f"no exchange {exchange!r}")
        if exchange == "":
            q = self.queues.get(routing_key)
            return [] if q is None else [q]
        names: dict[str, None] = {}
        for queue, key in ex.bindings:
            if (
                ex.kind == "fanout"
                or (ex.kind == "direct" and key == routing_key)
                or (ex.kind == "topic" and topic_matches(key, routing_key))
            ):
                names[queue] = None
        return [self.queues[n] for n in names if n in self.queues]

    def _publish(
        self, exchange: str, routing_key: str, message: OutgoingMessage, *, mandatory: bool
    ) -> None:
        if exchange == "" and routing_key.startswith(REPLY_TO + "."):
            future = self._replies.get(routing_key)
            if future is not None and not future.done():
                future.set_result(_Stored(next(self._seq), message, exchange, routing_key))
            return
        queues = self._route(exchange, routing_key)
        if not queues and mandatory:
            raise NotFound(f"no queue is bound to {exchange!r} with key {routing_key!r}")
        for q in queues:
            self._enqueue(q, _Stored(next(self._seq), message, exchange, routing_key))

    def _enqueue(self, q: _Queue, stored: _Stored) -> None:
        ttl = q.ttl
        if ttl is not None:
            loop = asyncio.get_running_loop()
            stored.expires_at = loop.time() + ttl
            loop.call_later(ttl, self._expire, q)
        heapq.heappush(q.ready, stored)
        self._dispatch(q)

    def _requeue(self, q: _Queue, stored: _Stored) -> None:
        if q.deleted:
            return
        stored.redelivered = True
        heapq.heappush(q.ready, stored)

    def _expire(self, q: _Queue) -> None:
        if q.deleted:
            return
        now = asyncio.get_running_loop().time()
        while q.ready and (q.ready[0].expires_at or now + 1) <= now:
            self._dead_letter(q, heapq.heappop(q.ready), "expired")

    def _dead_letter(self, q: _Queue, stored: _Stored, reason: str) -> None:
        dlx = q.arguments.get("x-dead-letter-exchange")
        if dlx is None or dlx not in self.exchanges:
            return
        routing_key = q.arguments.get("x-dead-letter-routing-key") or stored.routing_key
        headers = dict(stored.message.headers)
        deaths: list[dict[str, Any]] = [dict(d) for d in headers.get("x-death", [])]
        for i, death in enumerate(deaths):
            if death.get("queue") == q.name and death.get("reason") == reason:
                death["count"] = int(death.get("count", 0)) + 1
                deaths.insert(0, deaths.pop(i))
                break
        else:
            deaths.insert(
                0,
                {
                    "count": 1,
                    "reason": reason,
                    "queue": q.name,
                    "time": int(time.time()),
                    "exchange": stored.exchange,
                    "routing-keys": [stored.routing_key],
                },
            )
        headers["x-death"] = deaths
        headers.setdefault("x-first-death-queue", q.name)
        headers.setdefault("x-first-death-reason", reason)
        headers.setdefault("x-first-death-exchange", stored.exchange)
        headers["x-last-death-queue"] = q.name
        headers["x-last-death-reason"] = reason
        headers["x-last-death-exchange"] = stored.exchange
        message = dataclasses.replace(stored.message, headers=headers)
        for target in self._route(dlx, routing_key):
            self._enqueue(target, _Stored(next(self._seq), message, dlx, routing_key))

    def _dispatch(self, q: _Queue) -> None:
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
                self._dead_letter(q, stored, "expired")
                continue
            tag = next(self._tags)
            consumer.unacked[tag] = stored
            task = loop.create_task(
                _call(consumer.callback, _MemoryDelivery(stored, consumer, tag))
            )
            consumer.tasks.add(task)
            task.add_done_callback(_task_done(consumer.tasks))


async def _call(callback: Callable[[Delivery], Awaitable[None]], delivery: Delivery) -> None:
    await callback(delivery)


def _task_done(tasks: set[asyncio.Task[None]]) -> Callable[[asyncio.Task[None]], None]:
    def done(task: asyncio.Task[None]) -> None:
        tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a message callback failed", exc_info=task.exception())

    return done


class MemoryConnection:
    """A connection to a :class:`MemoryBroker`; implements the broker protocol."""

    def __init__(self, broker: MemoryBroker) -> None:
        self.broker = broker
        self.consumers: set[_Consumer] = set()
        self.open = False
        self.reconnects = 0
        # What this connection declared, replayed after a broker restart.
        self._queues: dict[str, tuple[bool, dict[str, Any]]] = {}
        self._exchanges: dict[str, tuple[ExchangeKind, bool]] = {}
        self._bindings: list[tuple[str, str, str]] = []
        self._consumers: list[_Consumer] = []

    def _check(self) -> MemoryBroker:
        if not self.open:
            raise BackendUnavailable("the in-memory broker connection is closed")
        return self.broker

    async def connect(self) -> None:
        """Open the connection."""
        self.open = True
        self.broker._connections.add(self)

    async def close(self) -> None:
        """Close every consumer channel (requeueing unacked deliveries)."""
        for consumer in list(self.consumers):
            await consumer.close()
        self._consumers.clear()
        self.open = False

    def _drop(self) -> None:
        for consumer in list(self.consumers):
            consumer._shutdown()
        self.open = False

    def _recover(self) -> None:
        broker = self.broker
        self.open = True
        self.reconnects += 1
        for name, (kind, durable) in self._exchanges.items():
            with contextlib.suppress(RtkitError):
                broker._declare_exchange(name, kind, durable)
        for name, (durable, arguments) in self._queues.items():
            with contextlib.suppress(RtkitError):
                broker._declare_queue(name, durable, arguments)
        for binding in self._bindings:
            with contextlib.suppress(RtkitError):
                broker._bind(*binding)
        self._consumers = [c for c in self._consumers if not c.retired]
        for consumer in self._consumers:
            q = broker.queues.get(consumer.queue.name)
            if q is not None:
                consumer._reattach(q)

    async def declare_queue(self, name: str, *, durable: bool, arguments: dict[str, Any]) -> None:
        """Declare a queue."""
        self._check()._declare_queue(name, durable, arguments)
        self._queues[name] = (durable, dict(arguments))

    async def declare_exchange(self, name: str, kind: ExchangeKind, *, durable: bool) -> None:
        """Declare an exchange."""
        self._check()._declare_exchange(name, kind, durable)
        self._exchanges[name] = (kind, durable)

    async def bind(self, queue: str, exchange: str, routing_key: str) -> None:
        """Bind a queue to an exchange."""
        self._check()._bind(queue, exchange, routing_key)
        if (queue, exchange, routing_key) not in self._bindings:
            self._bindings.append((queue, exchange, routing_key))

    async def delete_queue(self, name: str) -> None:
        """Delete a queue."""
        self._check()._delete_queue(name)
        self._queues.pop(name, None)
        self._bindings = [b for b in self._bindings if b[0] != name]

    async def delete_exchange(self, name: str) -> None:
        """Delete an exchange."""
        self._check()._delete_exchange(name)
        self._exchanges.pop(name, None)
        self._bindings = [b for b in self._bindings if b[1] != name]

    async def publish(
        self, exchange: str, routing_key: str, message: OutgoingMessage, *, mandatory: bool
    ) -> None:
        """Publish (confirmed at once)."""
        self._check()._publish(exchange, routing_key, message, mandatory=mandatory)

    async def get(self, queue: str) -> Delivery | None:
        """basic.get with auto-ack."""
        broker = self._check()
        q = broker.queues.get(queue)
        if q is None:
            raise NotFound(f"no queue {queue!r}")
        broker._expire(q)
        if not q.ready:
            return None
        return _MemoryDelivery(heapq.heappop(q.ready), None, 0)

    async def consume(
        self, queue: str, callback: Callable[[Delivery], Awaitable[None]], *, prefetch: int
    ) -> _Consumer:
        """Start a consumer with its own prefetch window."""
        broker = self._check()
        q = broker.queues.get(queue)
        if q is None:
            raise NotFound(f"no queue {queue!r}")
        consumer = _Consumer(broker, self, q, callback, prefetch)
        q.consumers.append(consumer)
        self.consumers.add(consumer)
        self._consumers.append(consumer)
        broker._dispatch(q)
        return consumer

    async def request(
        self, exchange: str, routing_key: str, message: OutgoingMessage, *, timeout: float
    ) -> Delivery:
        """Publish with a direct reply-to address and wait for the reply."""
        broker = self._check()
        reply_to = f"{REPLY_TO}.{new_id()}"
        future: asyncio.Future[_Stored] = asyncio.get_running_loop().create_future()
        broker._replies[reply_to] = future
        try:
            broker._publish(
                exchange,
                routing_key,
                dataclasses.replace(message, reply_to=reply_to),
                mandatory=True,
            )
            try:
                stored = await asyncio.wait_for(future, timeout)
            except TimeoutError:
                raise BackendUnavailable(
                    f"no reply from {routing_key!r} within {timeout} s"
                ) from None
        finally:
            broker._replies.pop(reply_to, None)
        return _MemoryDelivery(stored, None, 0)
