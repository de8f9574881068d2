"""EventBus: publish/subscribe of typed events, in one process or across processes.

```python
from rtkit import Event, EventBus

async with EventBus.from_url("redis://127.0.0.1:6379/0") as bus:
    bus.subscribe("order.*", on_order)
    await bus.publish("order.created", {"order_id": 1})
```
"""

from __future__ import annotations

from .base import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    DEFAULT_PUBLISH_TIMEOUT,
    DeliveryFailure,
    Event,
    EventBus,
    EventBusStats,
    EventEnvelope,
    Handler,
    Pattern,
    Subscription,
    Transport,
    check_event_name,
    matches,
)

__all__ = [
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "DEFAULT_PUBLISH_TIMEOUT",
    "DeliveryFailure",
    "Event",
    "EventBus",
    "EventBusStats",
    "EventEnvelope",
    "Handler",
    "Pattern",
    "Subscription",
    "Transport",
    "check_event_name",
    "matches",
]
