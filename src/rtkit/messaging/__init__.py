"""Messaging: RabbitMQ-style queues, exchanges, retries and dead letters.

``RabbitMQService.from_url("memory://")`` runs on an in-process broker with
RabbitMQ's semantics; ``RabbitMQService.from_url("amqp://...")`` on RabbitMQ
through aio-pika (``pip install 'rtkit[rabbitmq]'``). Both pass one contract
test suite.
"""

from __future__ import annotations

from .base import (
    DEFAULT_MAX_MESSAGE_BYTES,
    BrokerConnection,
    BrokerConsumer,
    ConsumerHandle,
    DeadLetterReason,
    Delivery,
    Envelope,
    ExchangeKind,
    Handler,
    MessageConsumer,
    MessageProducer,
    OutgoingMessage,
    RabbitMQService,
    ReceivedMessage,
    RetryPolicy,
    delay_tier_ms,
)
from .dedup import ClaimState, DedupStore, MemoryDedupStore, RedisDedupStore, dedup_from_url
from .memory import MemoryBroker, topic_matches

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "BrokerConnection",
    "BrokerConsumer",
    "ClaimState",
    "ConsumerHandle",
    "DeadLetterReason",
    "DedupStore",
    "Delivery",
    "Envelope",
    "ExchangeKind",
    "Handler",
    "MemoryBroker",
    "MemoryDedupStore",
    "MessageConsumer",
    "MessageProducer",
    "OutgoingMessage",
    "RabbitMQService",
    "ReceivedMessage",
    "RedisDedupStore",
    "RetryPolicy",
    "dedup_from_url",
    "delay_tier_ms",
    "topic_matches",
]
