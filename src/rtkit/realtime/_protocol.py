"""The Socket.IO protocol: the payloads both ways as pydantic models, and errors on the wire.

Field names are snake_case in Python and camelCase on the wire (``roomId``,
``userId``, ``joinTime`` ...), exactly as the browser client sends and
expects them. Dump a model for the wire with :func:`wire`; turn an error into
its error ack or ``error`` event with :func:`socket_error`.

Client → server payloads are validated strictly (a number is not a string);
unknown extra fields are ignored so that clients may send more than rtkit reads.
Configurable bounds (message size, room id length ...) are checked by
[`ChatLimits`][rtkit.realtime.ChatLimits], not here.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, JsonValue
from pydantic.alias_generators import to_camel

from ..errors import RtkitError

__all__ = [
    "HISTORY_KINDS",
    "MAX_HISTORY",
    "ChatMessage",
    "ChatMessageIn",
    "DownloadIn",
    "ErrorInfo",
    "FileShared",
    "FileUploadComplete",
    "FileUploadReady",
    "FileUploadStart",
    "FileUploadStartIn",
    "GameMove",
    "GameMoveIn",
    "HistoryEntry",
    "HistoryIn",
    "HistoryKind",
    "MessageSent",
    "Notification",
    "NotificationIn",
    "OnlineUserInfo",
    "RoomActivity",
    "RoomIn",
    "RoomInfoOut",
    "RoomJoined",
    "RoomUserEvent",
    "TypingEvent",
    "TypingIn",
    "UserPresence",
    "entry_from_json",
    "history_wire",
    "iso_time",
    "socket_error",
    "wire",
]

MAX_HISTORY = 200
"""The most entries one ``chat:history`` request (and ``MessageStore.history``) returns."""

HistoryKind = Literal["message", "file", "join", "leave"]
"""What a room's history keeps: chat messages, file shares, joins and leaves."""

HISTORY_KINDS: tuple[HistoryKind, ...] = get_args(HistoryKind)


def iso_time(epoch: float) -> str:
    """``epoch`` seconds as an ISO 8601 UTC string with milliseconds, like JavaScript's Date."""
    text = datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def wire(model: BaseModel) -> dict[str, Any]:
    """The JSON-ready, camelCase dict of ``model``, as sent over Socket.IO."""
    return model.model_dump(mode="json", by_alias=True)


def socket_error(error: RtkitError, *, event: str | None = None) -> dict[str, Any]:
    """``error`` as Socket.IO sends it: the error ack, or with ``event`` the ``error`` event.

    The ack is ``{"ok": false, "error": {code, message, retryAfter?}}``; the
    ``error`` event (for an event sent without an ack) is ``{code, message,
    retryAfter?, event}``. The client turns either back into the same class with
    [`error_from_payload`][rtkit.errors.error_from_payload].
    """
    if event is None:
        return {"ok": False, "error": error.payload()}
    return {**error.payload(), "event": event}


class _Wire(BaseModel):
    """Base of every payload: camelCase aliases, populate by either name."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, frozen=True, extra="ignore"
    )


class _Inbound(_Wire):
    """Base of client → server payloads: strict types."""

    model_config = ConfigDict(strict=True)


# ---------------------------------------------------------------- client -> server


class RoomIn(_Inbound):
    """``room:join`` / ``room:leave``: a bare room id string, or ``{roomId}``."""

    room_id: str


class TypingIn(_Inbound):
    """``typing:start`` / ``typing:stop`` ``{roomId}``."""

    room_id: str


class ChatMessageIn(_Inbound):
    """``chat:message`` ``{roomId, message, type='text'}``."""

    room_id: str
    message: str
    type: str = Field(default="text", pattern=r"^[A-Za-z][A-Za-z0-9_.\-]{0,31}$")


class NotificationIn(_Inbound):
    """``notification:send`` ``{targetUserId, type, content}``; ``content`` is any JSON."""

    target_user_id: str
    type: str = Field(default="info", pattern=r"^[A-Za-z][A-Za-z0-9_.:\-]{0,63}$")
    content: JsonValue = None


class FileUploadStartIn(_Inbound):
    """``file:upload:start`` ``{roomId, fileName, fileSize}``."""

    room_id: str
    file_name: str
    file_size: int = Field(ge=0)


class DownloadIn(_Inbound):
    """``file:download`` ``{uploadId}``: a fresh signed link to a complete upload."""

    upload_id: str


class GameMoveIn(_Inbound):
    """``game:move`` ``{roomId, move}``; ``move`` is any JSON."""

    room_id: str
    move: JsonValue = None


def _messages_only() -> list[HistoryKind]:
    return ["message"]


class HistoryIn(_Inbound):
    """``chat:history`` ``{roomId, before?, limit, kinds?}``: the latest entries before ``before``.

    ``kinds`` picks what to return: ``["message"]`` (the default: chat messages
    only), or any of ``"message"``, ``"file"``, ``"join"``, ``"leave"``.
    """

    room_id: str
    before: str | None = None
    limit: int = Field(default=50, ge=1, le=MAX_HISTORY)
    kinds: list[HistoryKind] = Field(default_factory=_messages_only, min_length=1, max_length=8)


# ---------------------------------------------------------------- server -> client


class UserPresence(_Wire):
    """``user:joined`` / ``user:left`` ``{userId, username, time}``."""

    user_id: str
    username: str
    time: str


class OnlineUserInfo(_Wire):
    """One entry of ``users:online`` and of ``GET /api/online-users``."""

    user_id: str
    username: str
    join_time: str


class RoomJoined(_Wire):
    """``room:joined`` ``{roomId, users}``: the user ids in the room."""

    room_id: str
    users: list[str]


class RoomUserEvent(_Wire):
    """``room:user:joined`` / ``room:user:left`` ``{userId, username, roomId}``."""

    user_id: str
    username: str
    room_id: str


class ChatMessage(_Wire):
    """``chat:message`` to the room, and what the message store keeps.

    ``id`` is unique and time-sortable (UUIDv7); ``timestamp`` is ISO 8601.
    """

    id: str
    user_id: str
    username: str
    message: str
    type: str
    timestamp: str
    room_id: str

    @property
    def kind(self) -> Literal["message"]:
        """What this history entry is (not on the wire of ``chat:message``)."""
        return "message"


class MessageSent(_Wire):
    """``chat:message:sent`` ``{messageId}`` back to the sender."""

    message_id: str


class TypingEvent(_Wire):
    """``typing:start`` / ``typing:stop`` ``{userId, username, roomId}`` to the others."""

    user_id: str
    username: str
    room_id: str


class Notification(_Wire):
    """``notification:received``: ``{id, fromUserId, toUserId, type, content, timestamp, read}``."""

    id: str
    from_user_id: str
    to_user_id: str
    type: str
    content: JsonValue = None
    timestamp: str
    read: bool = False


class FileUploadStart(_Wire):
    """``file:upload:start`` to the others in the room."""

    id: str
    user_id: str
    room_id: str
    file_name: str
    file_size: int
    upload_id: str
    timestamp: str


class FileUploadReady(_Wire):
    """``file:upload:ready`` ``{uploadId}`` to the uploader: now ``PUT`` the bytes."""

    upload_id: str


class FileUploadComplete(_Wire):
    """``file:upload:complete`` to each member of the room: the file is stored.

    ``url`` is a download link signed for the member who receives it; it works
    for ``ChatLimits.download_link_ttl`` seconds (``file:download`` gives a new one).
    """

    upload_id: str
    room_id: str
    file_name: str
    file_size: int
    url: str
    user_id: str
    id: str | None = None
    username: str | None = None
    timestamp: str | None = None


class FileShared(_Wire):
    """A room's history entry: a file was shared (its upload completed).

    ``id`` is the entry's (time-sortable); ``file:download {uploadId}`` gives a
    link to the file.
    """

    kind: Literal["file"] = "file"
    id: str
    upload_id: str
    user_id: str
    username: str
    file_name: str
    file_size: int
    timestamp: str
    room_id: str


class RoomActivity(_Wire):
    """A room's history entry: a user joined it (first connection in) or left it (last out)."""

    kind: Literal["join", "leave"]
    id: str
    user_id: str
    username: str
    timestamp: str
    room_id: str


class GameMove(_Wire):
    """``game:move`` to the others ``{userId, move, timestamp, roomId}``."""

    user_id: str
    move: JsonValue = None
    timestamp: str
    room_id: str


class RoomInfoOut(_Wire):
    """One entry of ``GET /api/rooms`` ``{id, userCount, createdAt}``."""

    id: str
    user_count: int
    created_at: str


class ErrorInfo(_Wire):
    """The ``error`` event ``{code, message, retryAfter?, event}``: an event sent without an ack
    was refused (see [`rtkit.errors`][rtkit.errors] for the codes)."""

    code: str
    message: str
    retry_after: float | None = None
    event: str | None = None


HistoryEntry = ChatMessage | FileShared | RoomActivity
"""One entry of a room's history (its ``kind`` says which)."""

_ENTRIES: dict[str, type[HistoryEntry]] = {
    "message": ChatMessage,
    "file": FileShared,
    "join": RoomActivity,
    "leave": RoomActivity,
}


def entry_from_json(raw: str | bytes) -> HistoryEntry | None:
    """The history entry stored as ``raw`` (chat messages are stored without a ``kind``).

    ``None`` for a kind this version does not know (written by a newer one).
    """
    data = json.loads(raw)
    model = _ENTRIES.get(data.get("kind", "message")) if isinstance(data, dict) else None
    return None if model is None else model.model_validate(data)


def history_wire(entry: HistoryEntry) -> dict[str, Any]:
    """``entry`` as ``chat:history`` sends it: its wire form, with its ``kind``."""
    return {**wire(entry), "kind": entry.kind}
