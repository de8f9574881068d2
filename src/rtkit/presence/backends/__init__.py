"""Where a PresenceStore keeps its data: the protocol (``base``), memory and Redis."""
