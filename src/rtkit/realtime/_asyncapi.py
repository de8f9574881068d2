"""The realtime protocol as an AsyncAPI 3.0 document (``rtkit asyncapi``).

Described from the server's side: what clients send is what the server
``receive``s (each with its ack: the operation's reply), what the server
``send``s reaches clients. Payload schemas come from the models of
``_protocol.py`` (client payloads in validation mode, server payloads as
serialized), field names as on the wire (camelCase).
"""

from __future__ import annotations

from typing import Any, Literal

import pydantic

from .._core.asyncapi import ASYNCAPI_VERSION, SchemaBook
from ._protocol import (
    ChatMessage,
    ChatMessageIn,
    DownloadIn,
    ErrorInfo,
    FileUploadComplete,
    FileUploadReady,
    FileUploadStart,
    FileUploadStartIn,
    GameMove,
    GameMoveIn,
    HistoryIn,
    MessageSent,
    Notification,
    NotificationIn,
    OnlineUserInfo,
    RoomIn,
    RoomJoined,
    RoomUserEvent,
    TypingEvent,
    TypingIn,
    UserPresence,
    _Wire,
)

__all__ = ["CLIENT_EVENTS", "SERVER_EVENTS", "asyncapi_document"]


# ---------------------------------------------------------------- acks


class _Ok(_Wire):
    ok: Literal[True]


class EmptyAck(_Ok):
    """The ack of an event that returns nothing but success."""


class RoomJoinedAck(_Ok, RoomJoined):
    """The ack of ``room:join``: the room and its user ids."""


class RoomLeftAck(_Ok):
    """The ack of ``room:leave``."""

    room_id: str


class MessageSentAck(_Ok, MessageSent):
    """The ack of ``chat:message``: the new message's id."""


class HistoryAck(_Ok):
    """The ack of ``chat:history``: the messages, oldest first."""

    messages: list[ChatMessage]


class NotificationAck(_Ok):
    """The ack of ``notification:send``: ``delivered`` is false when kept for later."""

    notification_id: str
    delivered: bool


class UploadReadyAck(_Ok, FileUploadReady):
    """The ack of ``file:upload:start``: ``PUT`` the bytes to ``/api/uploads/{uploadId}``."""


class DownloadAck(_Ok):
    """The ack of ``file:download``: a signed link, valid until ``expiresAt``."""

    upload_id: str
    url: str
    expires_at: str


class ErrorPayload(_Wire):
    """What went wrong (see ``rtkit.errors`` for the codes)."""

    code: str
    message: str
    retry_after: float | None = None


class ErrorAck(_Wire):
    """The ack of a refused event."""

    ok: Literal[False]
    error: ErrorPayload


# ---------------------------------------------------------------- the events

# event -> (payload, its ack, what it does)
CLIENT_EVENTS: dict[str, tuple[Any, type[pydantic.BaseModel], str]] = {
    "room:join": (RoomIn | str, RoomJoinedAck, "Join a room (a room id, or {roomId})."),
    "room:leave": (RoomIn | str, RoomLeftAck, "Leave a room."),
    "chat:message": (ChatMessageIn, MessageSentAck, "Post a message to a room."),
    "chat:history": (HistoryIn, HistoryAck, "The latest messages of a room."),
    "typing:start": (TypingIn, EmptyAck, "Tell a room the user is typing."),
    "typing:stop": (TypingIn, EmptyAck, "Tell a room the user stopped typing."),
    "notification:send": (NotificationIn, NotificationAck, "Notify a user."),
    "file:upload:start": (FileUploadStartIn, UploadReadyAck, "Announce an upload."),
    "file:download": (DownloadIn, DownloadAck, "A fresh download link."),
    "game:move": (GameMoveIn, EmptyAck, "A game move to the others in a room."),
}
"""What clients send: every event the server handles."""

SERVER_EVENTS: dict[str, tuple[Any, str]] = {
    "users:online": (list[OnlineUserInfo], "Who is online, right after connecting."),
    "user:joined": (UserPresence, "A user came online."),
    "user:left": (UserPresence, "A user went offline."),
    "room:joined": (RoomJoined, "This connection joined a room."),
    "room:user:joined": (RoomUserEvent, "Someone joined one of the connection's rooms."),
    "room:user:left": (RoomUserEvent, "Someone left one of the connection's rooms."),
    "chat:message": (ChatMessage, "A message in one of the connection's rooms."),
    "chat:message:sent": (MessageSent, "The server kept a message this connection sent."),
    "typing:start": (TypingEvent, "Someone else started typing."),
    "typing:stop": (TypingEvent, "Someone else stopped typing."),
    "notification:received": (Notification, "A notification for this user."),
    "file:upload:start": (FileUploadStart, "Someone else announced an upload."),
    "file:upload:ready": (FileUploadReady, "This connection may now send its upload."),
    "file:upload:complete": (FileUploadComplete, "A file is ready for the room's members."),
    "game:move": (GameMove, "Someone else moved."),
    "error": (ErrorInfo, "An event sent without an ack was refused."),
}
"""What the server sends."""

_TRACE_HEADERS = {
    "type": "object",
    "description": (
        "Optional W3C trace context, sent as an extra argument after the payload "
        "(ChatClient sends it when tracing is on; the server ignores what it does not know)."
    ),
    "properties": {
        "traceparent": {"type": "string", "maxLength": 128},
        "tracestate": {"type": "string", "maxLength": 512},
    },
}


_OFFSET_NOTE = (
    "With connection state recovery on (max_disconnection_duration), the payload is "
    "followed by a last argument: the event's offset, a string, which socket.io-client "
    "keeps to resume after a lost connection. Events sent with an ack or binary data "
    "have none."
)


def _key(event: str, suffix: str = "") -> str:
    """``chat:message`` -> ``chatMessage`` (+ suffix): a component key AsyncAPI accepts."""
    words = event.replace(":", " ").split()
    return words[0] + "".join(w[:1].upper() + w[1:] for w in words[1:]) + suffix


def asyncapi_document(*, url: str = "localhost:8000", version: str | None = None) -> dict[str, Any]:
    """The realtime protocol as an AsyncAPI 3.0 document (JSON data).

    Args:
        url: The server's ``host:port`` (the document's server entry).
        version: The document's ``info.version`` (default: rtkit's).
    """
    book = SchemaBook()
    messages: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    root = "#/channels/socketio"
    for event, (payload, ack, summary) in CLIENT_EVENTS.items():
        key = _key(event, "In")
        messages[key] = {
            "name": event,
            "title": f"{event} (client to server)",
            "summary": summary,
            "payload": book.schema(payload, "validation"),
            "headers": _TRACE_HEADERS,
        }
        messages[_key(event, "Ack")] = {
            "name": f"{event} ack",
            "summary": f"The ack of {event} when it succeeded.",
            "payload": book.named(ack.__name__, ack),
        }
        operations[_key(event, "Receive")] = {
            "action": "receive",
            "channel": {"$ref": root},
            "summary": summary,
            "messages": [{"$ref": f"{root}/messages/{key}"}],
            "reply": {
                "channel": {"$ref": root},
                "messages": [
                    {"$ref": f"{root}/messages/{_key(event, 'Ack')}"},
                    {"$ref": f"{root}/messages/errorAck"},
                ],
            },
        }
    messages["errorAck"] = {
        "name": "error ack",
        "summary": "The ack of any refused event.",
        "payload": book.named("ErrorAck", ErrorAck),
    }
    for event, (payload, summary) in SERVER_EVENTS.items():
        key = _key(event, "Out")
        messages[key] = {
            "name": event,
            "title": f"{event} (server to client)",
            "summary": summary,
            "description": _OFFSET_NOTE,
            "payload": book.schema(payload),
        }
        operations[_key(event, "Send")] = {
            "action": "send",
            "channel": {"$ref": root},
            "summary": summary,
            "messages": [{"$ref": f"{root}/messages/{key}"}],
        }
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "rtkit realtime chat",
            "version": version or _version(),
            "description": (
                "The Socket.IO protocol of rtkit's RealtimeServer (Socket.IO 5 on Engine.IO 4, "
                "namespace /). Every client event may ask for an ack: "
                '{"ok": true, ...} on success, {"ok": false, "error": {code, message, '
                "retryAfter?}} when refused; without an ack a refusal comes as an error event."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "chat": {
                "host": url,
                "protocol": "ws",
                "pathname": "/socket.io/",
                "description": "Socket.IO over WebSocket (or HTTP long-polling).",
                "security": [{"$ref": "#/components/securitySchemes/token"}],
            }
        },
        "channels": {
            "socketio": {
                "address": "/",
                "title": "The Socket.IO namespace /",
                "messages": messages,
            }
        },
        "operations": operations,
        "components": {
            "schemas": book.schemas,
            "securitySchemes": {
                "token": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": (
                        "A JWT, sent as the Socket.IO handshake's auth.token (the auth "
                        "payload of the CONNECT packet, not an HTTP header nor the URL)."
                    ),
                }
            },
        },
    }


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("rtkit")
    except metadata.PackageNotFoundError:
        return "0.0.0"
