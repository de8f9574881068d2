"""How rtkit encodes message properties for RabbitMQ, and decodes what any producer sent.

Encoding: floats in headers go out as 64-bit doubles (pamqp writes 32-bit
floats, so ``0.1`` arrived as ``0.10000000149011612``), byte strings as AMQP byte
arrays, and headers are checked first: a NaN, an integer beyond 64 bits or a
table larger than the connection's frame makes RabbitMQ close the connection
(every channel and consumer on it), so those raise ``ValidationError`` and
nothing is sent.

Decoding: aiormq decodes every frame with pamqp, and a frame pamqp refuses
kills the connection's reader. A hostile producer can publish such a message
(headers nested thousands deep, a timestamp beyond the year 9999, text that is
not UTF-8); RabbitMQ delivers it, the connection dies, reconnects, gets the same
message again, forever. :func:`install_lenient_decoding` makes the decoding of
those frames total: a frame pamqp decodes is returned unchanged; one it refuses
is decoded again field by field, undecodable headers replaced by one
``x-rtkit-invalid-headers`` header (the consumer dead-letters such a message),
an undecodable timestamp by none, and text by its UTF-8 reading with
replacement characters. It wraps ``pamqp.frame.unmarshal`` for the process,
once; other pamqp users see the same frames as before, except that these no
longer raise.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ...errors import PayloadTooLarge
from .._headers import INVALID_HEADERS, safe_text
from .base import OutgoingMessage

__all__ = ["encode_headers", "header_table", "install_lenient_decoding", "properties"]

_U32 = struct.Struct(">I")
_F64 = struct.Struct(">d")
# frame header and end, class, weight, body size and flags (22), the other properties
_CONTENT_HEADER_ROOM = 22 + 14 * 256


def _field(value: Any) -> bytes:
    from pamqp import encode

    if isinstance(value, float):
        return b"d" + _F64.pack(value)
    if isinstance(value, Mapping):
        return b"F" + encode_headers(value)
    if isinstance(value, list | tuple):
        items = b"".join(_field(item) for item in value)
        return b"A" + _U32.pack(len(items)) + items
    if isinstance(value, bytes | bytearray):
        return b"x" + _U32.pack(len(value)) + bytes(value)
    return encode.encode_table_value(value)


def encode_headers(headers: Mapping[str, Any]) -> bytes:
    """An AMQP field table, floats as doubles (check with ``check_wire_headers`` first)."""
    parts: list[bytes] = []
    for name, value in headers.items():
        key = name.encode("utf-8")
        parts += [bytes((len(key),)), key, _field(value)]
    data = b"".join(parts)
    return _U32.pack(len(data)) + data


def _property_class() -> Any:
    from pamqp.commands import Basic

    class Properties(Basic.Properties):
        """Basic properties whose header table was encoded by :func:`encode_headers`."""

        def encode_property(self, name: str, value: Any) -> bytes:
            if name == "headers":
                raw: bytes = self.__dict__["raw_headers"]
                return raw
            result: bytes = super().encode_property(name, value)
            return result

    return Properties


_PROPERTIES: Any = None


def timestamp_of(seconds: int) -> datetime | None:
    """The AMQP timestamp of ``seconds`` (None: not a date, so it is left out)."""
    try:
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def properties(
    message: OutgoingMessage, frame_max: int = 131_072, headers: bytes | None = None
) -> Any:
    """The AMQP basic properties of ``message`` (its headers checked by the caller);
    ``headers``: its :func:`header_table`, if the caller has it already.

    Raises ``PayloadTooLarge`` for headers that would not fit in one frame of
    this connection (RabbitMQ would close it); nothing is sent then.
    """
    global _PROPERTIES
    if _PROPERTIES is None:
        _PROPERTIES = _property_class()
    raw = header_table(message, frame_max) if headers is None else headers
    props = _PROPERTIES(
        content_type=message.content_type,
        delivery_mode=2 if message.persistent else 1,
        message_id=message.message_id,
        timestamp=timestamp_of(message.timestamp),
        headers=message.headers or None,
        correlation_id=message.correlation_id,
        reply_to=message.reply_to,
    )
    props.__dict__["raw_headers"] = raw
    return props


def header_table(message: OutgoingMessage, frame_max: int = 131_072) -> bytes:
    """``message``'s headers as an AMQP table (empty for none; checked by the caller).

    Raises ``PayloadTooLarge`` for headers that would not fit in one frame of
    this connection (RabbitMQ would close it); nothing is sent then.
    """
    raw = encode_headers(message.headers) if message.headers else b""
    if len(raw) + _CONTENT_HEADER_ROOM > frame_max:
        raise PayloadTooLarge(
            f"the headers take {len(raw)} bytes: more than this connection's frames hold"
        )
    return raw


# -- lenient decoding ------------------------------------------------------------


def _short_text(data: bytes) -> tuple[int, str]:
    length = data[0]
    return length + 1, data[1 : length + 1].decode("utf-8", "replace")


def _skip(data: bytes, data_type: str) -> int:
    """How many bytes a value of ``data_type`` takes, without decoding it."""
    if data_type == "shortstr":
        return 1 + data[0]
    if data_type in ("table", "longstr"):
        return 4 + int(_U32.unpack_from(data)[0])
    sizes = {"octet": 1, "short": 2, "long": 4, "longlong": 8, "timestamp": 8}
    return sizes[data_type]


def _value(data: bytes, data_type: str) -> tuple[int, Any]:
    """Decode one value; what pamqp refuses becomes a stand-in instead of an error."""
    from pamqp import decode

    if data_type == "shortstr":
        return _short_text(data)
    try:
        return decode.by_type(data, data_type)
    except Exception as exc:  # RecursionError, OverflowError, ValueError, ...
        size = _skip(data, data_type)
        if data_type == "table":
            return size, {INVALID_HEADERS: safe_text(f"{type(exc).__name__}: {exc}", 200)}
        if data_type == "longstr":
            return size, data[4:size].decode("utf-8", "replace")
        return size, None


def _lenient_method(data: bytes) -> Any:
    from pamqp import commands, decode

    method = commands.INDEX_MAPPING[int(_U32.unpack_from(data)[0])]()
    data, bit, in_bits = data[4:], 0, False
    for name in method.__slots__:
        data_type = method.amqp_type(name)
        if in_bits and (data_type != "bit" or bit == 8):
            data, bit, in_bits = data[1:], 0, False
        if data_type == "bit":
            setattr(method, name, decode.bit(data, bit)[1])
            bit, in_bits = bit + 1, True
            continue
        consumed, value = _value(data, data_type)
        setattr(method, name, value)
        data = data[consumed:]
    return method


def _lenient_header(data: bytes) -> Any:
    from pamqp import header

    content = header.ContentHeader()
    content.class_id, content.weight, content.body_size = struct.unpack(">HHQ", data[0:12])
    offset, flags = content._get_flags(data[12:])
    data = data[12 + offset :]
    props = content.properties
    for name in props.__slots__:
        if flags & props.flags[name]:
            consumed, value = _value(data, props.amqp_type(name))
            setattr(props, name, value)
            data = data[consumed:]
    return content


def _recover(data_in: bytes) -> tuple[int, int, Any] | None:
    """Decode a method or content header frame that pamqp refused; ``None`` if it cannot."""
    from pamqp import constants

    if len(data_in) < 8:
        return None
    frame_type, channel, size = struct.unpack(">BHI", data_in[0:7])
    byte_count = 7 + size + 1
    frame_data = data_in[7 : byte_count - 1]
    try:
        if frame_type == constants.FRAME_HEADER:
            return byte_count, channel, _lenient_header(frame_data)
        if frame_type == constants.FRAME_METHOD:
            return byte_count, channel, _lenient_method(frame_data)
    except Exception:
        return None
    return None


def install_lenient_decoding() -> None:
    """Make aiormq's frame decoding total (see the module docs); idempotent."""
    import pamqp.frame

    original = pamqp.frame.unmarshal
    if getattr(original, "rtkit_lenient", False):
        return

    def unmarshal(data_in: bytes) -> Any:
        try:
            return original(data_in)
        except Exception:
            recovered = _recover(data_in)
            if recovered is None:
                raise
            return recovered

    unmarshal.rtkit_lenient = True  # type: ignore[attr-defined]
    pamqp.frame.unmarshal = unmarshal
