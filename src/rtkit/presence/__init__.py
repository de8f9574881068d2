"""Presence: who is online, with several connections per user, across every server instance.

```python
from rtkit.presence import PresenceStore

async with PresenceStore.from_url("redis://localhost:6379/0", ttl=30) as presence:
    if await presence.connect("42", "sid-a", username="ada"):
        ...  # ada just came online
```
"""

from __future__ import annotations

from ._store import Departure, EventPublisher, PresenceEvent, PresenceStore
from .backends.base import OnlineUser, PresenceCount

__all__ = [
    "Departure",
    "EventPublisher",
    "OnlineUser",
    "PresenceCount",
    "PresenceEvent",
    "PresenceStore",
]
