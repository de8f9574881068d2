"""Presence: who is online, with several connections per user, across every server instance.

```python
from rtkit.presence import PresenceStore

presence = PresenceStore.from_url("redis://localhost:6379", ttl=30)
await presence.start()
if await presence.connect("42", sid, username="ada"):
    ...  # ada just came online
```
"""

from __future__ import annotations

from .base import (
    MAX_META_BYTES,
    Departure,
    EventPublisher,
    OnlineUser,
    PresenceCount,
    PresenceEvent,
    PresenceStore,
)

__all__ = [
    "MAX_META_BYTES",
    "Departure",
    "EventPublisher",
    "OnlineUser",
    "PresenceCount",
    "PresenceEvent",
    "PresenceStore",
]
