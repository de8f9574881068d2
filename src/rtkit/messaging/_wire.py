"""Messages on the wire: JSON bodies, application headers, names rtkit checks.

Imports no component and no backend.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pydantic
import pydantic_core

from .._core.validate import check_name, utf8_size
from ..errors import PayloadTooLarge, ValidationError
from .brokers.base import JSON_CONTENT_TYPE

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "check_headers",
    "check_queue",
    "check_routing_key",
    "clean_headers",
    "decode_any",
    "encode",
    "is_json",
    "text",
]

DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024
"""Largest message body rtkit sends or accepts by default (1 MiB)."""

MAX_QUEUE_NAME = 200
"""Queue and exchange names stay short enough for rtkit's ``.dlq`` and
``.delay.<ms>ms`` suffixes to fit AMQP's 255-byte names."""

_MAX_HEADER_TEXT = 1000
_MAX_HEADER_NAME = 128
_MAX_ROUTING_KEY = 255
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


def encode(message: Any, max_bytes: int) -> bytes:
    """``message`` (a pydantic model or a JSON-able value) as JSON of at most ``max_bytes``."""
    try:
        if isinstance(message, pydantic.BaseModel):
            body = message.model_dump_json().encode()
        else:
            body = pydantic_core.to_json(message)
    except (pydantic_core.PydanticSerializationError, TypeError, ValueError) as exc:
        raise ValidationError(f"message is not JSON-serializable: {exc}") from exc
    if len(body) > max_bytes:
        raise PayloadTooLarge(f"message is {len(body)} bytes, more than the {max_bytes} allowed")
    return body


def decode_any(body: bytes) -> Any:
    """The JSON in ``body``, or ``None`` if it is not JSON."""
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None


def is_json(content_type: str | None) -> bool:
    """Whether a body of ``content_type`` is JSON (no content type counts as JSON)."""
    if not content_type or content_type == JSON_CONTENT_TYPE:
        return True
    return content_type.split(";", 1)[0].strip().lower() in ("application/json", "text/json")


def text(value: object) -> str:
    """``value`` as header text, cut to a bounded length."""
    return str(value)[:_MAX_HEADER_TEXT]


def clean_headers(headers: Mapping[str, Any]) -> dict[str, Any]:
    """``headers`` without the ones the broker adds on dead-lettering."""
    return {k: v for k, v in headers.items() if not k.startswith(_BROKER_HEADERS)}


def check_headers(headers: Mapping[str, Any] | None) -> dict[str, Any]:
    """Application headers: names of 1-128 characters, str/int/float/bool/None values."""
    if headers is None:
        return {}
    if not isinstance(headers, Mapping):
        raise ValidationError("headers must be a mapping of str to str/int/float/bool/None")
    out: dict[str, Any] = {}
    for key, value in headers.items():
        if not isinstance(key, str) or not key or len(key) > _MAX_HEADER_NAME:
            raise ValidationError(f"invalid header name {key!r}")
        if value is not None and not isinstance(value, str | int | float | bool):
            raise ValidationError(f"header {key!r} must be str, int, float, bool or None")
        out[key] = value
    return out
