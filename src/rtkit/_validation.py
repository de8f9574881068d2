"""TRANSITION SHIM (the old layout): deleted once every component has moved to rtkit._core.

Small input checks shared by the components."""

from __future__ import annotations

from typing import Any

from .errors import PayloadTooLarge, ValidationError

__all__ = ["MAX_ID_BYTES", "check_id"]

MAX_ID_BYTES = 256


def check_id(value: Any, what: str, *, max_bytes: int = MAX_ID_BYTES) -> str:
    """Return ``value`` if it is a usable identifier, else raise :class:`ValidationError`.

    An identifier is a non-empty ``str`` of at most ``max_bytes`` UTF-8 bytes
    with no control characters.
    """
    if not isinstance(value, str):
        raise ValidationError(f"{what} must be a string, got {type(value).__name__}")
    if not value:
        raise ValidationError(f"{what} must not be empty")
    if len(value.encode("utf-8", "surrogatepass")) > max_bytes:
        raise PayloadTooLarge(f"{what} is longer than {max_bytes} bytes")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValidationError(f"{what} must not contain control characters")
    return value
