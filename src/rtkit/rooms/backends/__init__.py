"""Where a RoomManager keeps its data: the protocol (``base``), memory and Redis."""
