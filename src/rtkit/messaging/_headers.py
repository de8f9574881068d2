"""Message headers: what AMQP can carry, within bounds, and how to read them defensively.

RabbitMQ closes the whole connection (every channel and consumer on it) when a
header table holds a NaN or an infinity, or makes the content frame larger than
the negotiated ``frame_max``; the AMQP client refuses integers beyond 64 bits.
So headers are checked before anything is sent, and a message that arrived with
headers rtkit cannot send again has them filtered when it is retried or
dead-lettered. Imports no component and no backend.
"""

from __future__ import annotations

import datetime
import decimal
import math
from collections.abc import Mapping
from typing import Any

from ..errors import PayloadTooLarge, ValidationError

__all__ = [
    "INVALID_HEADERS",
    "MAX_HEADERS_BYTES",
    "MAX_HEADER_DEPTH",
    "MAX_HEADER_NAME_BYTES",
    "MAX_HEADER_TEXT_BYTES",
    "check_headers",
    "check_wire_headers",
    "count_header",
    "safe_headers",
    "safe_text",
]

MAX_HEADER_NAME_BYTES = 128
"""The longest header name, in UTF-8 bytes (AMQP clients cut longer ones)."""

MAX_HEADER_TEXT_BYTES = 16 * 1024
"""The longest string (or byte string) header value, in UTF-8 bytes."""

MAX_HEADERS_BYTES = 64 * 1024
"""The largest header table, as AMQP encodes it (RabbitMQ's frames are 128 KiB)."""

MAX_HEADER_DEPTH = 8
"""The deepest nesting of arrays and tables inside a header (foreign messages only)."""

INVALID_HEADERS = "x-rtkit-invalid-headers"
"""Set by the RabbitMQ backend on a delivery whose headers it could not decode."""

_INT64 = (-(2**63), 2**63 - 1)
_MAX_COUNT = 2**31 - 1
_MAX_COUNT_TEXT = 19
_SCALARS = "str, int, float, bool or None"


def safe_text(value: object, limit: int = 1000) -> str:
    """``value`` as text of at most ``limit`` characters that always encodes as UTF-8."""
    try:
        text = str(value)
    except Exception:
        text = f"<unprintable {type(value).__name__}>"
    return text[:limit].encode("utf-8", "replace").decode("utf-8")


def _utf8(text: str, what: str) -> int:
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValidationError(f"{what} is not valid Unicode text") from None


def _name_size(name: Any) -> int:
    if not isinstance(name, str) or not name:
        raise ValidationError(f"header names must be non-empty strings, got {name!r:.80}")
    size = _utf8(name, f"header name {name!r:.80}")
    if size > MAX_HEADER_NAME_BYTES:
        raise ValidationError(
            f"header name {name[:40]!r}... is longer than {MAX_HEADER_NAME_BYTES} bytes"
        )
    return 1 + size


def _scalar_size(name: str, value: Any, nested: bool) -> int | None:
    """The encoded size of a scalar value, ``None`` if it is not one (bytes: only ``nested``)."""
    if value is None or isinstance(value, bool):
        return 2
    if isinstance(value, int):
        if not _INT64[0] <= value <= _INT64[1]:
            raise ValidationError(f"header {name!r:.80} is outside the signed 64-bit range")
        return 9
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError(f"header {name!r:.80} must be a finite number, got {value!r}")
        return 9
    if isinstance(value, str):
        size = _utf8(value, f"header {name!r:.80}")
    elif nested and isinstance(value, bytes | bytearray):
        size = len(value)
    else:
        return None
    if size > MAX_HEADER_TEXT_BYTES:
        raise PayloadTooLarge(f"header {name!r:.80} is larger than {MAX_HEADER_TEXT_BYTES} bytes")
    return 5 + size


def _wire_size(name: str, value: Any, nested: bool) -> int:
    """The encoded size of one header value, or ``ValidationError`` (iterative: no recursion)."""
    total = 0
    todo: list[tuple[Any, int]] = [(value, 1)]
    while todo:
        item, depth = todo.pop()
        size = _scalar_size(name, item, nested)
        if size is not None:
            total += size
        elif not nested:
            raise ValidationError(f"header {name!r:.80} must be {_SCALARS}")
        elif isinstance(item, decimal.Decimal):
            if not item.is_finite():
                raise ValidationError(f"header {name!r:.80} must be a finite number")
            total += 6
        elif isinstance(item, datetime.datetime):
            total += 9
        elif depth > MAX_HEADER_DEPTH:
            raise ValidationError(f"header {name!r:.80} nests deeper than {MAX_HEADER_DEPTH}")
        elif isinstance(item, list | tuple):
            total += 5
            todo.extend((child, depth + 1) for child in item)
        elif isinstance(item, Mapping):
            total += 5
            for key, child in item.items():
                total += _name_size(key)
                todo.append((child, depth + 1))
        else:
            raise ValidationError(f"header {name!r:.80} has a value AMQP cannot carry")
    return total


def _table_size(headers: Mapping[str, Any], nested: bool) -> int:
    total = 4
    for name, value in headers.items():
        size = _scalar_size(name, value, nested)  # the common case, without a walk
        if size is None:
            size = _wire_size(name, value, nested)
        total += _name_size(name) + size
    if total > MAX_HEADERS_BYTES:
        raise PayloadTooLarge(f"the headers are larger than {MAX_HEADERS_BYTES} bytes as AMQP")
    return total


def check_headers(headers: Mapping[str, Any] | None) -> dict[str, Any]:
    """Application headers to send, checked: nothing AMQP or RabbitMQ would refuse.

    Names are 1-128 UTF-8 bytes; values are ``str`` (at most 16 KiB), ``int``
    (signed 64-bit), finite ``float``, ``bool`` or ``None``; the whole table is
    at most 64 KiB encoded. ``ValidationError`` (``PayloadTooLarge`` for sizes)
    otherwise.
    """
    if headers is None:
        return {}
    if not isinstance(headers, Mapping):
        raise ValidationError(f"headers must be a mapping of str to {_SCALARS}")
    out = dict(headers)
    _table_size(out, nested=False)
    return out


def check_wire_headers(headers: Mapping[str, Any]) -> None:
    """``ValidationError`` unless the broker can carry ``headers`` (what backends check).

    Besides the application scalars: bytes, decimals, timestamps, and arrays and
    tables nested at most 8 deep, as foreign producers may send them.
    """
    _table_size(headers, nested=True)


def safe_headers(headers: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of a received ``headers`` table that can be sent again, within bounds.

    Entries AMQP cannot carry are dropped; if the rest is too large, the largest
    entries go first.
    """
    sizes: dict[str, int] = {}
    for name, value in headers.items():
        try:
            sizes[name] = _name_size(name) + _wire_size(name, value, nested=True)
        except ValidationError:
            continue
    budget = MAX_HEADERS_BYTES // 2  # room for the headers rtkit adds
    for name in sorted(sizes, key=sizes.__getitem__, reverse=True):
        if sum(sizes.values()) <= budget:
            break
        del sizes[name]
    return {name: headers[name] for name in sizes}


def count_header(value: Any, default: int) -> int:
    """A counter header (``x-retry-count``) as an ``int`` from 0 to 2**31 - 1.

    Anything else a producer may put there (text, NaN, infinities, huge numbers,
    tables) reads as ``default``, or is clamped; it never raises.
    """
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, str | bytes | bytearray):
        if len(value) > _MAX_COUNT_TEXT:  # int() of long digit strings is slow
            return default
        try:
            value = int(value)
        except ValueError:
            return default
    if isinstance(value, int | float | decimal.Decimal):
        try:
            return min(_MAX_COUNT, max(0, int(value)))
        except (ValueError, OverflowError, ArithmeticError):
            return default
    return default
