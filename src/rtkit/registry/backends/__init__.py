"""The registry's backends: the protocol (``base``), ``memory`` and ``redis``."""
