"""Idempotency: the ``DedupStore`` component, its protocol (``base``) and backends."""
