"""The wire of the Node ``@socket.io/redis-adapter`` 8.x: channels, messages, codec.

Nothing here does I/O: the manager in ``node_redis.py`` carries the bytes.

* Broadcasts: msgpack ``[uid, packet, {rooms, except, flags}]`` published on
  ``<key>#<nsp>#`` or, when it goes to exactly one room, ``<key>#<nsp>#<room>#``
  (every server pattern-subscribes to ``<key>#<nsp>#*``).
* Requests: ``{uid, requestId, type, ...}`` on ``<key>-request#<nsp>#``, and
  their responses ``{requestId, ...}`` on ``<key>-response#<nsp>#`` (or
  ``<key>-response#<nsp>#<uid>#``). The adapter sends both as JSON or msgpack
  and reads either (a message starting with ``{`` is JSON); rtkit sends msgpack,
  which carries bytes.
* ``type`` is the adapter's ``RequestType`` enum (:class:`RequestType`).

Node's msgpack is ``notepack.io`` 3: ``undefined`` and ``null`` become nil,
``Buffer`` and ``ArrayBuffer`` become bin (``bytes`` here), ``Date`` the
timestamp extension (an ISO 8601 string here, as ``JSON.stringify`` gives it
to a Socket.IO client), a whole number an int and any other number a float64.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import secrets
import string
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, TypeVar

import msgpack
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from pydantic import ValidationError as PydanticError

from ...errors import ConfigurationError, MalformedRequest, ValidationError

__all__ = [
    "EVENT",
    "BroadcastOptions",
    "Channels",
    "Packet",
    "Pending",
    "Request",
    "RequestType",
    "Response",
    "RoomNames",
    "args_of",
    "as_list",
    "check_namespaces",
    "decode",
    "decode_broadcast",
    "decode_request",
    "decode_response",
    "encode",
    "handshake",
    "new_uid",
    "text",
]

EVENT = 2  # socket.io-parser's PacketType.EVENT (the adapter never sees BINARY_EVENT)

Room = str | int | float  # a Node room may be a number
_T = TypeVar("_T")


class RequestType(IntEnum):
    """The adapter's ``RequestType`` (``lib/index.ts`` of @socket.io/redis-adapter 8.x)."""

    SOCKETS = 0
    ALL_ROOMS = 1
    REMOTE_JOIN = 2
    REMOTE_LEAVE = 3
    REMOTE_DISCONNECT = 4
    REMOTE_FETCH = 5
    SERVER_SIDE_EMIT = 6
    BROADCAST = 7
    BROADCAST_CLIENT_COUNT = 8
    BROADCAST_ACK = 9


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class BroadcastOptions(_Wire):
    """Who a broadcast reaches: sockets in any of ``rooms`` (all when empty), minus
    the sockets in any room of ``except``."""

    rooms: list[Room] = Field(default_factory=list, max_length=10_000)
    except_: list[Room] = Field(default_factory=list, alias="except", max_length=10_000)
    flags: dict[str, Any] | None = None


class Packet(_Wire):
    """A Socket.IO packet before encoding: ``data`` is ``[event, *args]``."""

    type: int
    data: list[Any] = Field(default_factory=list)
    nsp: str = "/"
    id: int | None = None


class Request(_Wire):
    """A message on the request channel (fields by ``type``)."""

    type: int
    uid: str | None = None
    request_id: str | None = Field(default=None, alias="requestId", max_length=64)
    rooms: list[Room] = Field(default_factory=list, max_length=10_000)
    opts: BroadcastOptions | None = None
    sid: str | None = None
    room: Room | None = None
    close: bool = False
    data: list[Any] | None = None
    packet: Packet | None = None


class Response(_Wire):
    """A message on a response channel (fields by the request's type)."""

    request_id: str = Field(alias="requestId", max_length=64)
    type: int | None = None
    sockets: list[Any] | None = None
    rooms: list[Room] | None = None
    data: Any = None
    client_count: int | None = Field(default=None, alias="clientCount")
    packet: Any = None


class Channels:
    """The channels of one namespace under ``key``."""

    def __init__(self, key: str, nsp: str) -> None:
        self.nsp = nsp
        self.broadcast = f"{key}#{nsp}#"
        self.request = f"{key}-request#{nsp}#"
        self.response = f"{key}-response#{nsp}#"

    def pattern(self) -> str:
        """The glob pattern of every broadcast channel (special characters escaped)."""
        return "".join("\\" + c if c in "*?[]\\" else c for c in self.broadcast) + "*"

    def room_channel(self, rooms: list[Any]) -> str:
        """Where a broadcast to ``rooms`` goes: the room's own channel for exactly one."""
        return f"{self.broadcast}{rooms[0]}#" if len(rooms) == 1 else self.broadcast

    def response_to(self, uid: str | None, specific: bool) -> str:
        """The response channel of the requester ``uid``."""
        return f"{self.response}{uid}#" if specific and uid else self.response

    def room_of(self, channel: str) -> str | None:
        """The room a broadcast channel names ("" for none), ``None`` if not ours."""
        if not channel.startswith(self.broadcast) or not channel.endswith("#"):
            return None
        return channel[len(self.broadcast) : -1]


class RoomNames:
    """How rooms are named on each side: rtkit's Socket.IO room ``<prefix>R`` is the
    Node servers' room ``R`` (an empty prefix: the same names on both sides).

    With ``"room:"``, rtkit's chat room ``R`` (Socket.IO room ``room:R``) is the
    room ``R`` of the Node.js chat server rtkit's protocol comes from, which joins
    sockets to bare room ids.
    """

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix

    def to_node(self, rooms: list[Any]) -> list[Any]:
        """rtkit's names as the Node servers know them."""
        p = self.prefix
        return [r[len(p) :] if p and isinstance(r, str) and r.startswith(p) else r for r in rooms]

    def candidates(self, rooms: list[Any]) -> list[Any]:
        """The rooms here a Node name may mean (itself, and the prefixed name)."""
        p = self.prefix
        return rooms + [p + r for r in rooms if p and isinstance(r, str)] if p else rooms

    def joined(self, room: Any) -> Any:
        """The room here a socket joins for the Node name ``room``."""
        return self.prefix + room if self.prefix and isinstance(room, str) else room

    def local(self, options: BroadcastOptions) -> BroadcastOptions:
        """Node's broadcast options in the names of this server."""
        return BroadcastOptions.model_construct(
            rooms=self.candidates(options.rooms),
            except_=self.candidates(options.except_),
            flags=options.flags,
        )


_ALPHABET = string.ascii_letters + string.digits


def new_uid() -> str:
    """A 6-character id, as the adapter's ``uid2(6)`` makes for servers and requests."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(6))


# ---------------------------------------------------------------- codec

_TIMESTAMP_MARKS = (b"\xd6\xff", b"\xd7\xff", b"\xc7\x0c\xff")  # the timestamp extension


def encode(value: Any) -> bytes:
    """msgpack as notepack.io reads it (bytes as bin, str as str, float64).

    Raises:
        rtkit.errors.ValidationError: A value msgpack cannot carry (an int past
            64 bits, an object that is not JSON-like).
    """
    try:
        return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValidationError(f"cannot send this to Node servers: {exc}") from None


def decode(raw: bytes, *, max_bytes: int) -> Any:
    """A message as the adapter reads it: JSON when it starts with ``{``, else msgpack.

    Raises:
        rtkit.errors.MalformedRequest: Neither, or larger than ``max_bytes``.
    """
    if len(raw) > max_bytes:
        raise MalformedRequest(f"a Node adapter message of {len(raw)} bytes (limit {max_bytes})")
    try:
        if raw[:1] == b"{":
            return json.loads(raw)
        value = msgpack.unpackb(raw, raw=False, strict_map_key=False, timestamp=3)
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError) as exc:
        raise MalformedRequest(f"not a Node adapter message: {exc}") from None
    if any(mark in raw for mark in _TIMESTAMP_MARKS):
        value = _dates_as_text(value)  # (a string may hold these bytes too: then nothing changes)
    return value


def _dates_as_text(value: Any) -> Any:
    """``datetime`` → what ``JSON.stringify`` makes of a ``Date``, everywhere in ``value``."""
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if isinstance(value, list):
        return [_dates_as_text(item) for item in value]
    if isinstance(value, dict):
        return {key: _dates_as_text(item) for key, item in value.items()}
    return value


_BROADCAST = TypeAdapter(tuple[str, Packet | None, BroadcastOptions])


def decode_broadcast(raw: bytes, *, max_bytes: int) -> tuple[str, Packet | None, BroadcastOptions]:
    """``[uid, packet, opts]`` of a broadcast channel.

    Raises:
        rtkit.errors.MalformedRequest: Not such a message.
    """
    return _valid(_BROADCAST, decode(raw, max_bytes=max_bytes))


_REQUEST = TypeAdapter(Request)
_RESPONSE = TypeAdapter(Response)


def decode_request(raw: bytes, *, max_bytes: int) -> Request:
    """A message of a request channel.

    Raises:
        rtkit.errors.MalformedRequest: Not such a message.
    """
    return _valid(_REQUEST, decode(raw, max_bytes=max_bytes))


def decode_response(raw: bytes, *, max_bytes: int) -> Response:
    """A message of a response channel.

    Raises:
        rtkit.errors.MalformedRequest: Not such a message.
    """
    return _valid(_RESPONSE, decode(raw, max_bytes=max_bytes))


def _valid(adapter: TypeAdapter[_T], value: Any) -> _T:
    try:
        return adapter.validate_python(value)
    except PydanticError as exc:
        raise MalformedRequest(f"not a Node adapter message: {exc.errors()[0]['msg']}") from None


# ---------------------------------------------------------------- helpers


def check_namespaces(given: Iterable[str]) -> list[str]:
    """The namespaces a manager shares (``"/"``, ``"/chat"``...).

    Raises:
        rtkit.errors.ConfigurationError: Not such names.
    """
    names = [given] if isinstance(given, str) else list(given)
    if not names or any(not isinstance(n, str) or not n.startswith("/") for n in names):
        raise ConfigurationError("NodeRedisManager: namespaces are names like '/' or '/chat'")
    return names


def text(value: Any) -> str:
    """A channel name Redis gave as bytes."""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def as_list(value: Any) -> list[Any]:
    """A room (or sid) or several, as a list."""
    if value is None:
        return []
    if isinstance(value, (str, bytes, int, float)) or not isinstance(value, Iterable):
        return [value]
    return list(value)


def args_of(data: Any) -> list[Any]:
    """python-socketio's emit ``data``: a tuple is several arguments, ``None`` none."""
    if isinstance(data, tuple):
        return list(data)
    return [] if data is None else [data]


@dataclass
class Pending:
    """A request of a server: the answers so far, and how many it waits for."""

    type: RequestType
    expected: int
    done: asyncio.Future[list[Any]]
    items: list[Any] = field(default_factory=list)
    answers: int = 0

    def add(self, response: Response) -> None:
        self.answers += 1
        if self.type is RequestType.SERVER_SIDE_EMIT:
            self.items.append(response.data)
        elif self.type is RequestType.ALL_ROOMS:
            self.items.extend(response.rooms or [])
        else:
            self.items.extend(response.sockets or [])
        if self.answers >= self.expected and not self.done.done():
            self.done.set_result(self.items)


# ---------------------------------------------------------------- fetchSockets

# Credentials never leave the process: Node would publish the handshake's auth (the
# token) and cookies on Redis for every fetchSockets; rtkit leaves them out.
_SECRET_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})


def handshake(environ: dict[str, Any], issued_ms: int) -> dict[str, Any]:
    """A Node ``socket.handshake`` of a python-socketio connection (without ``auth``
    and credential headers)."""
    headers = {
        name[5:].lower().replace("_", "-"): value
        for name, value in environ.items()
        if name.startswith("HTTP_") and isinstance(value, str)
    }
    for name in _SECRET_HEADERS:
        headers.pop(name, None)
    query_string = environ.get("QUERY_STRING", "")
    query = dict(urllib.parse.parse_qsl(query_string if isinstance(query_string, str) else ""))
    path = environ.get("PATH_INFO", "/socket.io/")
    issued = dt.datetime.fromtimestamp(issued_ms / 1000, dt.UTC)
    return {
        "headers": headers,
        "time": issued.strftime("%a %b %d %Y %H:%M:%S GMT+0000 (Coordinated Universal Time)"),
        "address": environ.get("REMOTE_ADDR", ""),
        "xdomain": "origin" in headers,
        "secure": environ.get("wsgi.url_scheme") == "https",
        "issued": issued_ms,
        "url": f"{path}?{query_string}" if query_string else path,
        "query": query,
        "auth": {},
    }
