"""Messages on the wire: JSON bodies, application headers, names rtkit checks.

Imports no component and no backend.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import pydantic
import pydantic_core

from .._core.validate import MAX_JSON_DEPTH, check_name, utf8_size
from ..errors import PayloadTooLarge, ValidationError
from ._headers import safe_headers, safe_text
from .brokers.base import JSON_CONTENT_TYPE

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "check_queue",
    "check_routing_key",
    "clean_headers",
    "decode_any",
    "encode",
    "is_json",
    "nests_too_deep",
    "text",
]

DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024
"""Largest message body rtkit sends or accepts by default (1 MiB)."""

MAX_QUEUE_NAME = 200
"""Queue and exchange names stay short enough for rtkit's ``.dlq`` and
``.delay.<ms>ms`` suffixes to fit AMQP's 255-byte names."""

_MAX_HEADER_TEXT = 1000
_MAX_ROUTING_KEY = 255
# JSON strings (escapes included), whose brackets do not nest anything.
_JSON_STRING = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
# Headers the broker adds on dead-lettering; never copied onto a republished message.
_BROKER_HEADERS = ("x-death", "x-first-death-", "x-last-death-")


def check_queue(name: Any, what: str = "queue name") -> str:
    """A queue or exchange name: a name (see the validation guide), not starting ``amq.``."""
    check_name(name, what, max_length=MAX_QUEUE_NAME)
    if name.startswith("amq."):
        raise ValidationError(f"invalid {what} {name!r:.80}: names starting 'amq.' are reserved")
    return str(name)


def check_routing_key(key: Any, what: str = "routing key") -> str:
    """A routing key or binding pattern: a string of at most 255 UTF-8 bytes."""
    if not isinstance(key, str) or utf8_size(key, what) > _MAX_ROUTING_KEY:
        raise ValidationError(f"a {what} is a string of at most {_MAX_ROUTING_KEY} bytes")
    return key


def nests_too_deep(body: bytes, max_depth: int = MAX_JSON_DEPTH) -> bool:
    """Whether the JSON text ``body`` nests arrays and objects deeper than ``max_depth``.

    Decided without parsing (a parser would recurse once per level): brackets
    inside strings are removed, then each pass removes the innermost bracket
    pairs, so nesting deeper than ``max_depth`` is what remains after
    ``max_depth`` passes. Bodies with few brackets are answered by counting.
    Text that is not JSON at all is left for the parser to refuse.
    """
    if body.count(b"[") + body.count(b"{") <= max_depth:
        return False
    brackets = _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    for _ in range(max_depth):
        inner = brackets.replace(b"[]", b"").replace(b"{}", b"")
        if inner == brackets:  # not JSON: deep if it opens too many before closing any
            return len(brackets) - len(brackets.lstrip(b"[{")) > max_depth
        brackets = inner
    return b"[" in brackets or b"{" in brackets


def encode(message: Any, max_bytes: int) -> bytes:
    """``message`` (a pydantic model or a JSON-able value) as JSON of at most ``max_bytes``.

    At most ``MAX_JSON_DEPTH`` levels deep, as consumers accept.
    """
    try:
        if isinstance(message, pydantic.BaseModel):
            body = message.model_dump_json().encode()
        else:
            body = pydantic_core.to_json(message)  # bounds its own recursion
    except (pydantic_core.PydanticSerializationError, TypeError, ValueError) as exc:
        raise ValidationError(f"message is not JSON-serializable: {exc}") from exc
    if len(body) > max_bytes:
        raise PayloadTooLarge(f"message is {len(body)} bytes, more than the {max_bytes} allowed")
    if nests_too_deep(body):
        raise ValidationError(f"message nests deeper than {MAX_JSON_DEPTH} levels")
    return body


def decode_any(body: bytes) -> Any:
    """The JSON in ``body``, or ``None`` if it is not JSON (or nests too deep)."""
    if nests_too_deep(body):
        return None
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


def is_json(content_type: str | None) -> bool:
    """Whether a body of ``content_type`` is JSON (no content type counts as JSON)."""
    if not content_type or content_type == JSON_CONTENT_TYPE:
        return True
    return content_type.split(";", 1)[0].strip().lower() in ("application/json", "text/json")


def text(value: object) -> str:
    """``value`` as header text, cut to a bounded length, always valid UTF-8."""
    return safe_text(value, _MAX_HEADER_TEXT)


def clean_headers(headers: Mapping[str, Any]) -> dict[str, Any]:
    """The headers of a received message to send again with it (a retry, a dead letter).

    Without the ones the broker adds on dead-lettering, and without any AMQP
    cannot carry or that would make the table too large.
    """
    kept = {
        k: v
        for k, v in headers.items()
        if not (isinstance(k, str) and k.startswith(_BROKER_HEADERS))
    }
    return safe_headers(kept)
