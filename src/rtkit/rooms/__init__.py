"""Rooms: membership shared by every server instance, per connection, reported per user.

```python
from rtkit.rooms import RoomManager

rooms = RoomManager.from_url("redis://localhost:6379", ttl=30)
await rooms.start()
if await rooms.join("lobby", "42", sid):
    ...  # announce room:user:joined
```
"""

from __future__ import annotations

from .base import RoomDeparture, RoomInfo, RoomManager

__all__ = ["RoomDeparture", "RoomInfo", "RoomManager"]
