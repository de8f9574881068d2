"""EventBus backends: the protocol (``base``), in memory (``memory``) and on Redis (``redis``)."""
