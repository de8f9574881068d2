"""The data of the in-memory broker: stored messages, exchanges, queues, ``x-death``.

Also how a queue re-declaration is compared with what exists, as RabbitMQ does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ..._core.topic import TopicPattern
from ...errors import ConfigurationError
from .._models import ExchangeKind
from ._conflicts import ABSENT, CHECKED_QUEUE_ARGUMENTS, inequivalent
from .base import OutgoingMessage

__all__ = ["Exchange", "Queue", "Stored", "died", "exchange_conflict", "queue_conflict"]


@dataclass(order=True)
class Stored:
    seq: int
    message: OutgoingMessage = field(compare=False)
    exchange: str = field(compare=False)
    routing_key: str = field(compare=False)
    redelivered: bool = field(default=False, compare=False)
    expires_at: float | None = field(default=None, compare=False)


@dataclass
class Exchange:
    kind: ExchangeKind
    durable: bool
    # (queue, binding key) -> the compiled key; insertion-ordered, no duplicates
    bindings: dict[tuple[str, str], TopicPattern] = field(default_factory=dict)

    def routes(self, routing_key: str) -> list[str]:
        names: dict[str, None] = {}
        for (queue, key), pattern in self.bindings.items():
            if (
                self.kind == "fanout"
                or (self.kind == "direct" and key == routing_key)
                or (self.kind == "topic" and pattern.matches(routing_key))
            ):
                names[queue] = None
        return list(names)

    def unbind_queue(self, queue: str) -> None:
        self.bindings = {b: p for b, p in self.bindings.items() if b[0] != queue}


@dataclass(eq=False)
class Queue:
    name: str
    durable: bool
    arguments: dict[str, Any]
    ready: list[Stored] = field(default_factory=list)
    consumers: list[Any] = field(default_factory=list)  # the broker's consumers
    next_consumer: int = 0
    deleted: bool = False

    @property
    def ttl(self) -> float | None:
        ttl = self.arguments.get("x-message-ttl")
        return None if ttl is None else float(ttl) / 1000.0


def queue_conflict(q: Queue, durable: bool, arguments: dict[str, Any]) -> ConfigurationError | None:
    """The error RabbitMQ gives for declaring ``q`` again so, or ``None`` if equivalent.

    ``durable`` first, then the arguments RabbitMQ compares, in its order; it
    ignores the others, and so does this.
    """
    if q.durable != durable:
        return inequivalent("queue", q.name, "durable", q.durable, durable)
    for arg in CHECKED_QUEUE_ARGUMENTS:
        current, asked = q.arguments.get(arg, ABSENT), arguments.get(arg, ABSENT)
        if current != asked:
            return inequivalent("queue", q.name, arg, current, asked)
    return None


def exchange_conflict(
    name: str, ex: Exchange, kind: ExchangeKind, durable: bool
) -> ConfigurationError | None:
    """The error RabbitMQ gives for declaring exchange ``ex`` again so, or ``None``."""
    if ex.kind != kind:
        return inequivalent("exchange", name, "type", ex.kind, kind)
    if ex.durable != durable:
        return inequivalent("exchange", name, "durable", ex.durable, durable)
    return None


def died(queue: str, stored: Stored, reason: str) -> dict[str, Any]:
    """The headers of a dead-lettered message: ``x-death`` and its summaries, as RabbitMQ."""
    headers = dict(stored.message.headers)
    deaths: list[dict[str, Any]] = [dict(d) for d in headers.get("x-death", [])]
    for i, death in enumerate(deaths):
        if death.get("queue") == queue and death.get("reason") == reason:
            death["count"] = int(death.get("count", 0)) + 1
            deaths.insert(0, deaths.pop(i))
            break
    else:
        deaths.insert(
            0,
            {
                "count": 1,
                "reason": reason,
                "queue": queue,
                "time": int(time.time()),
                "exchange": stored.exchange,
                "routing-keys": [stored.routing_key],
            },
        )
    headers["x-death"] = deaths
    headers.setdefault("x-first-death-queue", queue)
    headers.setdefault("x-first-death-reason", reason)
    headers.setdefault("x-first-death-exchange", stored.exchange)
    headers["x-last-death-queue"] = queue
    headers["x-last-death-reason"] = reason
    headers["x-last-death-exchange"] = stored.exchange
    return headers
