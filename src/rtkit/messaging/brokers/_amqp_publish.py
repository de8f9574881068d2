"""A shorter publish path on aiormq: a publish's frames encoded once and queued whole.

aiormq's ``basic_publish`` marshals its three frames through pamqp's generic encoder
and takes the channel's lock and two timeouts per message: with a hundred publishes
in flight that is about a fifth of the client's CPU per message, and the client's
CPU is what bounds the rate. Here (:func:`encode_publish`) the frames come from a
fixed encoder (the method frame cached per exchange and routing key) and
(:func:`queue_publish`) are put on the connection's write queue in one piece, joined
to the batch of publishes waiting at its end (the writer writes a batch with one call;
a batch takes publishes up to ``BATCH_BYTES``), with the confirm registered where
aiormq registers its own (the channel's ``delivery_tag``, ``confirmations`` and
``message_id_delivery_tag``), so acks, nacks, returns and a closing channel settle it
as they settle aiormq's.

Both give way to ``basic_publish`` (they return ``None``) when anything is unusual:
a property pamqp would refuse, a full write queue, or aiormq's own publish holding
the channel's lock (it has taken a delivery tag and not yet queued its frames).

Relied on (``tests/messaging/test_amqp_publish.py`` checks it, and that the bytes
are pamqp's): aiormq's ``Channel.delivery_tag``, ``confirmations``,
``message_id_delivery_tag``, ``write_queue``, ``publisher_confirms``,
``max_content_size``, ``create_future`` and its private lock
(``_Channel__lock``); ``aiormq.abc.ChannelFrame``, whose ``payload`` the
connection's writer reads once per item; and the write queue's ``_queue`` deque.
"""

from __future__ import annotations

import asyncio
import struct
from functools import partial
from typing import Any

from ._amqp_codec import timestamp_of
from .base import OutgoingMessage

__all__ = ["encode_publish", "queue_publish"]

_FRAME = struct.Struct(">BHI")  # type, channel, size
_END = b"\xce"
_METHOD, _HEADER, _BODY = 1, 2, 3
_PUBLISH = struct.Struct(">HHH").pack(60, 40, 0)  # Basic.Publish, reserved ticket
_CONTENT = struct.Struct(">HHQH")  # class 60, weight 0, body size, property flags
_U64 = struct.Struct(">Q")
_MAX_SHORT = 255
_MAX_EXCHANGE = 127  # pamqp's Basic.Publish.validate
_YEAR_10000 = 253_402_300_800

# Property flags, in the order the properties are written (AMQP 0-9-1, basic class).
_CONTENT_TYPE, _HEADERS, _DELIVERY_MODE = 0x8000, 0x2000, 0x1000
_CORRELATION_ID, _REPLY_TO, _MESSAGE_ID, _TIMESTAMP = 0x400, 0x200, 0x80, 0x40

#: Method frames of recent (channel, exchange, routing key, mandatory): a producer
#: sends to a few queues over and over. Emptied when it reaches this size.
METHOD_CACHE_SIZE = 1024

_methods: dict[tuple[int, str, str, bool], bytes] = {}

#: A batch takes no more publishes past this size: the next one queues a new item, so
#: a writer held back by the socket makes publishers wait on aiormq's bounded queue.
BATCH_BYTES = 1 << 20


def _frame(kind: int, channel: int, payload: bytes) -> bytes:
    return _FRAME.pack(kind, channel, len(payload)) + payload + _END


def _short(text: str) -> bytes | None:
    raw = text.encode("utf-8")
    return bytes((len(raw),)) + raw if len(raw) <= _MAX_SHORT else None


def _exchange_ok(name: str) -> bool:
    """pamqp's own rule for an exchange name in ``basic.publish`` (on a cache miss only)."""
    from pamqp.constants import DOMAIN_REGEX

    return len(name) <= _MAX_EXCHANGE and DOMAIN_REGEX["exchange-name"].fullmatch(name) is not None


def _method(channel: int, exchange: str, routing_key: str, mandatory: bool) -> bytes | None:
    key = (channel, exchange, routing_key, mandatory)
    frame = _methods.get(key)
    if frame is None:
        name, route = _short(exchange), _short(routing_key)
        if name is None or route is None or not _exchange_ok(exchange):
            return None
        frame = _frame(_METHOD, channel, _PUBLISH + name + route + bytes((int(mandatory),)))
        if len(_methods) >= METHOD_CACHE_SIZE:
            _methods.clear()
        _methods[key] = frame
    return frame


def _texts(message: OutgoingMessage) -> tuple[int, list[bytes]] | None:
    """The flags and values of the text properties after the delivery mode, in order
    (None: one is too long)."""
    flags, parts = 0, []
    for flag, text in (
        (_CORRELATION_ID, message.correlation_id),
        (_REPLY_TO, message.reply_to),
        (_MESSAGE_ID, message.message_id),
    ):
        if text:
            value = _short(text)
            if value is None:
                return None
            flags |= flag
            parts.append(value)
    return flags, parts


def _properties(message: OutgoingMessage, headers: bytes) -> tuple[int, bytes] | None:
    """The property flags and values pamqp would write for ``message`` (None: it would
    refuse them, or a timestamp it cannot write)."""
    flags, parts = _DELIVERY_MODE, []
    if message.content_type:
        content_type = _short(message.content_type)
        if content_type is None:
            return None
        flags |= _CONTENT_TYPE
        parts.append(content_type)
    if headers:
        flags |= _HEADERS
        parts.append(headers)
    parts.append(b"\x02" if message.persistent else b"\x01")
    texts = _texts(message)
    if texts is None:
        return None
    flags |= texts[0]
    parts += texts[1]
    seconds = message.timestamp
    if 0 <= seconds < _YEAR_10000:
        flags |= _TIMESTAMP
        parts.append(_U64.pack(seconds))
    elif timestamp_of(seconds) is not None:
        return None  # a date before 1970: pamqp refuses it
    # (not a date at all: left out, as properties() leaves it out)
    return flags, b"".join(parts)


def encode_publish(
    channel: int,
    exchange: str,
    routing_key: str,
    mandatory: bool,
    message: OutgoingMessage,
    headers: bytes,
    max_content: int,
) -> bytes | None:
    """The frames of one ``basic.publish`` of ``message``, as pamqp would write them.

    ``headers`` is the header table already encoded (``encode_headers``; empty for
    none), ``max_content`` the most body bytes one frame of the connection holds.
    ``None`` when pamqp would refuse the message (``basic_publish`` raises then).
    """
    method = _method(channel, exchange, routing_key, mandatory)
    props = _properties(message, headers)
    if method is None or props is None:
        return None
    body = message.body
    content = _CONTENT.pack(60, 0, len(body), props[0]) + props[1]
    frames = [method, _frame(_HEADER, channel, content)]
    for start in range(0, len(body), max_content):
        frames.append(_frame(_BODY, channel, body[start : start + max_content]))
    return b"".join(frames)


def _forget(ids: dict[str, int], message_id: str, tag: int, _: object) -> None:
    if ids.get(message_id) == tag:
        del ids[message_id]


_Batch: Any = None


def _batch_class() -> Any:
    from aiormq.abc import ChannelFrame

    class Batch(ChannelFrame):
        """Publishes queued as one item: the writer writes them with one call."""

        parts: list[bytes]
        size: int

        def __init__(self, frames: bytes) -> None:
            object.__setattr__(self, "parts", [frames])
            object.__setattr__(self, "size", len(frames))
            object.__setattr__(self, "should_close", False)
            object.__setattr__(self, "drain_future", None)

        @property
        def payload(self) -> bytes:
            return b"".join(self.parts)

    return Batch


def _put(queue: asyncio.Queue[Any], frames: bytes) -> bool:
    """Append ``frames`` to the batch at the end of ``queue`` (the writer has not
    taken it, and nothing is after it), else queue a new batch if there is room."""
    global _Batch
    if _Batch is None:
        _Batch = _batch_class()
    waiting = queue._queue  # type: ignore[attr-defined]
    if waiting and type(waiting[-1]) is _Batch and waiting[-1].size < BATCH_BYTES:
        last = waiting[-1]
        last.parts.append(frames)
        object.__setattr__(last, "size", last.size + len(frames))
        return True
    if queue.full():
        return False
    queue.put_nowait(_Batch(frames))
    return True


def queue_publish(channel: Any, frames: bytes, message_id: str) -> asyncio.Future[Any] | None:
    """Queue ``frames`` (one publish) on aiormq ``channel``; the future of its confirm.

    ``None`` (nothing done) when ``basic_publish`` must take it: the message has no id
    (aiormq gives it one, by which a returned message is matched), the channel is
    closed or has no confirms, the write queue is full, or aiormq's own publish holds
    the lock between taking its delivery tag and queueing its frames.
    """
    if (
        not message_id
        or channel.is_closed
        or not channel.publisher_confirms
        or channel._Channel__lock.locked()
    ):
        return None
    if not _put(channel.write_queue, frames):
        return None
    channel.delivery_tag += 1
    tag = channel.delivery_tag
    confirmation: asyncio.Future[Any] = channel.create_future()
    channel.confirmations[tag] = confirmation
    ids = channel.message_id_delivery_tag
    ids[message_id] = tag  # a returned (unroutable) message is matched by its id
    confirmation.add_done_callback(partial(_forget, ids, message_id, tag))
    return confirmation
