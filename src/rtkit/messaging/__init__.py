"""Messaging: RabbitMQ-style queues, exchanges, retries and dead letters.

``RabbitMQService()`` runs on an in-process broker of its own with RabbitMQ's
semantics; ``RabbitMQService.from_url("amqp://...")`` on RabbitMQ through
aio-pika (``pip install 'rtkit[rabbitmq]'``). Both pass one contract test
suite. ``MessageProducer`` and ``MessageConsumer`` send and consume through a
service; ``DedupStore`` makes handling idempotent.
"""

from __future__ import annotations

from ._consumer import ConsumerHandle, MessageConsumer
from ._models import DeadLetterReason, Envelope, ExchangeKind, Handler, ReceivedMessage
from ._producer import MessageProducer
from ._retry import RetryPolicy
from ._service import RabbitMQService
from .brokers.memory import MemoryBroker
from .dedup._store import DedupStore
from .dedup.base import ClaimState

__all__ = [
    "ClaimState",
    "ConsumerHandle",
    "DeadLetterReason",
    "DedupStore",
    "Envelope",
    "ExchangeKind",
    "Handler",
    "MemoryBroker",
    "MessageConsumer",
    "MessageProducer",
    "RabbitMQService",
    "ReceivedMessage",
    "RetryPolicy",
]
