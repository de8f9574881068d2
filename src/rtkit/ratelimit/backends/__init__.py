"""The rate limiter's backends: the protocol (``base``), ``memory`` and ``redis``."""
