"""A ``RabbitMQService``'s topology as an AsyncAPI 3.0 document (``service.asyncapi()``).

Channels are the queues the service declared (each with the ``amqp`` binding that
says so), their dead-letter queues and delay tiers, and the exchanges it declared;
bindings are listed on each queue (``x-bindings``). A queue consumed through the
service has a ``receive`` operation whose message schema is the consumer's model.
"""

from __future__ import annotations

import re
from typing import Any, get_args

from .._core.asyncapi import ASYNCAPI_VERSION, SchemaBook
from ._models import DeadLetterReason

__all__ = ["topology_document"]

_BINDING_VERSION = "0.3.0"
_NOT_A_KEY = re.compile(r"[^A-Za-z0-9._\-]")

_HEADERS = {
    "type": "object",
    "properties": {
        "traceparent": {"type": "string", "description": "W3C trace context (tracing on)."},
        "tracestate": {"type": "string"},
        "x-original-traceparent": {
            "type": "string",
            "description": "The context of the first publish, on retries and dead letters.",
        },
        "x-retry-count": {"type": "integer", "description": "Attempts that failed so far."},
        "x-last-error": {"type": "string", "description": "Why the last attempt failed."},
    },
}

_DEAD_HEADERS = {
    "type": "object",
    "properties": {
        "x-death-reason": {"type": "string", "enum": list(get_args(DeadLetterReason))},
        "x-exception-type": {"type": "string"},
        "x-exception-message": {"type": "string"},
        "x-attempts": {"type": "integer"},
        "x-original-queue": {"type": "string"},
        "x-original-exchange": {"type": "string"},
        "x-original-routing-key": {"type": "string"},
        "x-original-traceparent": {"type": "string"},
    },
}


def _key(name: str) -> str:
    return _NOT_A_KEY.sub("_", name)


def _queue_binding(name: str, durable: bool) -> dict[str, Any]:
    queue = {"name": name, "durable": durable, "exclusive": False, "autoDelete": False}
    return {"amqp": {"is": "queue", "queue": queue, "bindingVersion": _BINDING_VERSION}}


def topology_document(service: Any, *, host: str, title: str) -> dict[str, Any]:
    """The document of ``service`` (see ``RabbitMQService.asyncapi``)."""
    book = SchemaBook()
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    queues: dict[str, bool] = {name: info.durable for name, info in service._queues.items()}
    for name in service._consumed:
        queues.setdefault(name, True)
    for name, durable in queues.items():
        key = _key(name)
        model = service._consumed.get(name)
        message = {
            "name": name,
            "contentType": "application/json",
            "payload": {} if model is None else book.schema(model, "validation"),
            "headers": _HEADERS,
        }
        channel: dict[str, Any] = {
            "address": name,
            "messages": {"message": message},
            "bindings": _queue_binding(name, durable),
        }
        bound = [
            {"exchange": exchange, "routingKey": pattern}
            for (queue, exchange, pattern) in service._bindings
            if queue == name
        ]
        if bound:
            channel["x-bindings"] = bound
        dead = service.dead_letter_queue(name) if name in service._queues else None
        if dead is not None:
            channel["x-dead-letter-queue"] = dead
            channels.setdefault(_key(dead), _dead_channel(dead, durable))
        channels[key] = channel
        if name in service._consumed:
            operations[f"{key}.receive"] = {
                "action": "receive",
                "channel": {"$ref": f"#/channels/{key}"},
                "messages": [{"$ref": f"#/channels/{key}/messages/message"}],
            }
    for tier in sorted(service.delay_queues):
        channels.setdefault(
            _key(tier),
            {
                "address": tier,
                "description": "A delay tier: messages wait here, then go back to their queue.",
                "bindings": _queue_binding(tier, True),
            },
        )
    for name, (kind, durable) in service._exchanges.items():
        exchange = {"name": name, "type": kind, "durable": durable, "autoDelete": False}
        channels.setdefault(
            _key(name),
            {
                "address": name,
                "description": f"A {kind} exchange.",
                "bindings": {
                    "amqp": {
                        "is": "routingKey",
                        "exchange": exchange,
                        "bindingVersion": _BINDING_VERSION,
                    }
                },
            },
        )
    document: dict[str, Any] = {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": title,
            "version": "1.0.0",
            "description": "Queues, exchanges and consumers declared through rtkit.",
        },
        "defaultContentType": "application/json",
        "servers": {"rabbitmq": {"host": host, "protocol": "amqp"}},
        "channels": channels,
        "operations": operations,
    }
    if book.schemas:
        document["components"] = {"schemas": book.schemas}
    return document


def _dead_channel(name: str, durable: bool) -> dict[str, Any]:
    return {
        "address": name,
        "description": "Dead letters: messages that failed for good, with the reason.",
        "messages": {
            "deadLetter": {
                "name": "dead letter",
                "contentType": "application/json",
                "payload": {},
                "headers": _DEAD_HEADERS,
            }
        },
        "bindings": _queue_binding(name, durable),
    }
