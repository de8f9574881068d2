"""One validation vocabulary for every component: ids, names, times, metadata, pages.

The rules (documented once, in ``docs/guides/validation.md``):

* an **id** (user, connection, room, message, upload, cursor) is any non-empty
  text of at most :data:`MAX_ID_BYTES` UTF-8 bytes without control characters;
* a **key** built from a short kind and an id (``chat:<user id>``, a rate-limit
  key) may be up to :data:`MAX_KEY_BYTES`, so every key made of an id fits;
* a **name** chosen by the application (service, queue, exchange, instance)
  is 1-:data:`MAX_NAME_LENGTH` letters, digits and ``_.:-/``, starting with a
  letter or digit;
* a **host** is a hostname (dot-separated labels of letters, digits, ``-`` and
  ``_``), an IPv4 literal or an IPv6 literal (unbracketed), nothing else;
* a **duration** is a finite number of seconds in a stated range;
* **metadata** is a JSON object of at most :data:`MAX_META_BYTES` and
  :data:`MAX_JSON_DEPTH` levels;
* a **page** asks for 1-:data:`MAX_PAGE` items after an opaque cursor.

A bad argument to an operation raises ``ValidationError`` (or ``PayloadTooLarge``)
and changes nothing; a bad setting given to a constructor raises
``ConfigurationError``.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from typing import Any

from ..errors import ConfigurationError, PayloadTooLarge, RtkitError, ValidationError

__all__ = [
    "DEFAULT_PAGE",
    "MAX_ID_BYTES",
    "MAX_JSON_DEPTH",
    "MAX_KEY_BYTES",
    "MAX_META_BYTES",
    "MAX_NAME_LENGTH",
    "MAX_PAGE",
    "check_cursor",
    "check_host",
    "check_id",
    "check_int",
    "check_json_depth",
    "check_key",
    "check_limit",
    "check_meta",
    "check_name",
    "check_seconds",
    "utf8_size",
]

MAX_ID_BYTES = 256
"""The longest id, in UTF-8 bytes."""

MAX_KEY_BYTES = 512
"""The longest key made of a kind and an id (rate-limit keys), in UTF-8 bytes."""

MAX_NAME_LENGTH = 255
"""The longest application-chosen name (service, queue, exchange, instance)."""

MAX_META_BYTES = 4096
"""The largest metadata object, as compact JSON."""

MAX_JSON_DEPTH = 32
"""The deepest nesting of metadata and other JSON payloads rtkit accepts."""

MAX_PAGE = 1000
"""The most items one page of a listing may ask for."""

DEFAULT_PAGE = 100
"""The page size when none is given."""

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-/]*")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_LABEL_RE = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
MAX_HOSTNAME_LENGTH = 253

ErrorClass = type[RtkitError]


def utf8_size(text: str, what: str) -> int:
    """The UTF-8 size of ``text``; ``ValidationError`` if it holds a lone surrogate."""
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValidationError(f"{what} is not valid Unicode text") from None


def check_id(value: Any, what: str, *, max_bytes: int = MAX_ID_BYTES) -> str:
    """Return ``value`` if it is a usable id, else raise ``ValidationError``.

    An id is a non-empty ``str`` of valid Unicode, at most ``max_bytes`` UTF-8
    bytes, with no control characters (``PayloadTooLarge`` when too long).
    """
    if not isinstance(value, str):
        raise ValidationError(f"{what} must be a string, got {type(value).__name__}")
    if not value:
        raise ValidationError(f"{what} must not be empty")
    if len(value) > max_bytes or utf8_size(value, what) > max_bytes:
        raise PayloadTooLarge(f"{what} is longer than {max_bytes} bytes")
    if _CONTROL_RE.search(value):
        raise ValidationError(f"{what} must not contain control characters")
    return value


def check_key(value: Any, what: str) -> str:
    """:func:`check_id` with the longer :data:`MAX_KEY_BYTES` bound of composed keys."""
    return check_id(value, what, max_bytes=MAX_KEY_BYTES)


def check_name(
    value: Any,
    what: str,
    *,
    max_length: int = MAX_NAME_LENGTH,
    error: ErrorClass = ValidationError,
) -> str:
    """Return ``value`` if it is a usable name, else raise ``error``.

    A name is 1-``max_length`` letters, digits and ``_.:-/``, starting with a
    letter or digit (``user-service``, ``orders.created``, ``billing/v2``).
    """
    if not isinstance(value, str) or not value or len(value) > max_length:
        raise error(
            f"invalid {what} {value!r:.80}: 1-{max_length} letters, digits and _.:-/, "
            "starting with a letter or digit"
        )
    if not _NAME_RE.fullmatch(value):
        raise error(
            f"invalid {what} {value!r:.80}: use letters, digits and _.:-/, "
            "starting with a letter or digit"
        )
    return value


def check_host(value: Any, what: str = "host") -> str:
    """Return ``value`` if it is a hostname, an IPv4 or an IPv6 literal, else raise.

    Anything else (userinfo ``u@host``, a port, a path, ``#``, spaces, brackets,
    an IPv6 zone, ``1.2.3`` or ``01.2.3.4``) is refused with ``ValidationError``, so a
    host can never change the meaning of a URL built from it.
    """
    host = check_id(value, what)
    if ":" in host:
        if "%" not in host:
            try:
                ipaddress.IPv6Address(host)
                return host
            except ValueError:
                pass
        raise ValidationError(f"{what} {host!r:.80} is not an IPv6 address (no brackets, no zone)")
    name = host[:-1] if host.endswith(".") else host
    labels = name.split(".")
    if len(name) > MAX_HOSTNAME_LENGTH or not all(_LABEL_RE.fullmatch(label) for label in labels):
        raise ValidationError(f"{what} {host!r:.80} is not a hostname or an IP address")
    if labels[-1].isdigit():  # numeric: an IPv4 literal or nothing (1.2.3 is ambiguous)
        try:
            ipaddress.IPv4Address(name)
        except ValueError:
            raise ValidationError(f"{what} {host!r:.80} is not an IPv4 address") from None
    return host


def check_seconds(
    value: Any,
    what: str,
    *,
    minimum: float = 0.0,
    maximum: float = math.inf,
    error: ErrorClass = ConfigurationError,
) -> float:
    """Return ``value`` as a float if it is a duration in ``(minimum, maximum]``.

    The bounds: above ``minimum`` (0 by default, so strictly positive) and at most
    ``maximum``; NaN, infinities and booleans are refused with ``error``.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise error(f"{what} must be a number of seconds, got {type(value).__name__}")
    if not math.isfinite(value) or not minimum < value <= maximum:
        bound = "" if maximum == math.inf else f" and at most {maximum:g}"
        raise error(f"{what} must be more than {minimum:g} seconds{bound}, got {value!r}")
    return float(value)


def check_int(
    value: Any,
    what: str,
    *,
    minimum: int = 1,
    maximum: int | None = None,
    error: ErrorClass = ConfigurationError,
) -> int:
    """Return ``value`` if it is an ``int`` (not a bool) from ``minimum`` to ``maximum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise error(f"{what} must be an integer, got {type(value).__name__}")
    if value < minimum or (maximum is not None and value > maximum):
        upper = "" if maximum is None else f" to {maximum}"
        raise error(f"{what} must be an integer from {minimum}{upper}, got {value!r}")
    return value


def check_json_depth(value: Any, what: str, *, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Raise ``ValidationError`` if ``value`` nests lists and dicts deeper than ``max_depth``.

    Iterative, so a hostile payload cannot exhaust the stack while being checked.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth > max_depth:
            raise ValidationError(f"{what} nests deeper than {max_depth} levels")
        stack.extend((child, depth + 1) for child in children)


def check_meta(meta: Any, what: str = "meta", *, max_bytes: int = MAX_META_BYTES) -> str:
    """Return ``meta`` (a dict with str keys) as compact JSON, or raise ``ValidationError``.

    At most ``max_bytes`` as UTF-8 JSON (``PayloadTooLarge`` beyond) and
    :data:`MAX_JSON_DEPTH` levels deep; NaN and infinities are refused.
    """
    if not isinstance(meta, dict) or not all(isinstance(k, str) for k in meta):
        raise ValidationError(f"{what} must be a dict with str keys")
    check_json_depth(meta, what)
    try:
        text = json.dumps(meta, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{what} must be JSON-serializable: {exc}") from exc
    if utf8_size(text, what) > max_bytes:
        raise PayloadTooLarge(f"{what} is larger than {max_bytes} bytes as JSON")
    return text


def check_cursor(cursor: Any) -> str | None:
    """A page cursor: ``None`` for the first page, else an id."""
    return None if cursor is None else check_id(cursor, "cursor")


def check_limit(limit: Any) -> int:
    """A page size: an int from 1 to :data:`MAX_PAGE`."""
    return check_int(limit, "limit", maximum=MAX_PAGE, error=ValidationError)
