"""Rooms: membership shared by every server instance, per connection, reported per user.

```python
from rtkit.rooms import RoomManager

async with RoomManager.from_url("redis://localhost:6379/0", ttl=30) as rooms:
    if await rooms.join("lobby", "42", "sid-a"):
        ...  # announce room:user:joined
```
"""

from __future__ import annotations

from ._manager import RoomEvent, RoomManager
from .backends.base import RoomDeparture, RoomInfo

__all__ = ["RoomDeparture", "RoomEvent", "RoomInfo", "RoomManager"]
