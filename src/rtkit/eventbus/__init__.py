"""EventBus: publish/subscribe of typed events, in one process or across processes.

```python
from rtkit import Event, EventBus

async with EventBus.from_url("redis://127.0.0.1:6379/0") as bus:
    bus.subscribe("order.*", on_order)
    await bus.publish("order.created", {"order_id": 1})
```

The backends (``memory``, ``redis``) and their protocol live in
``rtkit.eventbus.backends``; ``rtkit.backends`` re-exports what a backend author needs.
"""

from __future__ import annotations

from ._bus import DeliveryFailure, EventBus, Subscription
from ._events import Event, EventBusStats, Handler

__all__ = [
    "DeliveryFailure",
    "Event",
    "EventBus",
    "EventBusStats",
    "Handler",
    "Subscription",
]
