"""Unique, time-sortable identifiers."""

from __future__ import annotations

import uuid_utils

__all__ = ["new_id"]


def new_id() -> str:
    """Return a new UUIDv7 as a 36-character string.

    UUIDv7 ids sort by creation time (millisecond precision, monotonic within
    one process), so message ids, upload ids and instance ids order naturally.
    """
    return str(uuid_utils.uuid7())
