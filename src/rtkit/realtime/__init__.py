"""A Socket.IO chat: secure, typed and multi-instance.

[`RealtimeServer`][rtkit.realtime.RealtimeServer] serves the chat protocol over
python-socketio; [`ChatClient`][rtkit.realtime.ChatClient] speaks it from Python.
The logic lives in [`ChatService`][rtkit.realtime.ChatService], testable without
a socket. The server, the client, the chat logic and the tokens need the
``realtime`` extra (``pip install 'rtkit[realtime]'``) and are imported on first
use; the stores and the wire models need only rtkit itself.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .._extras import REALTIME, missing_extra
from ._protocol import (
    ChatMessage,
    ErrorInfo,
    FileShared,
    FileUploadComplete,
    FileUploadReady,
    FileUploadStart,
    GameMove,
    HistoryEntry,
    MessageSent,
    Notification,
    OnlineUserInfo,
    RoomActivity,
    RoomJoined,
    RoomUserEvent,
    TypingEvent,
    UserPresence,
)
from .stores import (
    FileStore,
    LocalFileStore,
    MessageStore,
    NotificationStore,
    UploadQuota,
    UploadRecord,
    UploadRegistry,
    UploadUsage,
)

if TYPE_CHECKING:  # the realtime extra (python-socketio, Starlette, httpx, PyJWT): imported lazily
    from ._auth import Identity, JWTVerifier, TokenVerifier, issue_token
    from ._chat import AuthorizeJoin, ChatLimits, ChatService, Emit, Outcome
    from ._client import ChatClient, TokenProvider
    from ._server import RealtimeServer

_SERVER_EXTRA = {
    "AuthorizeJoin": "._chat",
    "ChatClient": "._client",
    "ChatLimits": "._chat",
    "ChatService": "._chat",
    "Emit": "._chat",
    "Identity": "._auth",
    "JWTVerifier": "._auth",
    "Outcome": "._chat",
    "RealtimeServer": "._server",
    "TokenProvider": "._client",
    "TokenVerifier": "._auth",
    "issue_token": "._auth",
}


def __getattr__(name: str) -> Any:
    """Import the names that need the ``realtime`` extra on first use."""
    module = _SERVER_EXTRA.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        found = getattr(importlib.import_module(module, __name__), name)
    except ImportError as exc:
        raise missing_extra(f"rtkit.realtime.{name}", REALTIME, exc) from exc
    globals()[name] = found
    return found


__all__ = [
    "AuthorizeJoin",
    "ChatClient",
    "ChatLimits",
    "ChatMessage",
    "ChatService",
    "Emit",
    "ErrorInfo",
    "FileShared",
    "FileStore",
    "FileUploadComplete",
    "FileUploadReady",
    "FileUploadStart",
    "GameMove",
    "HistoryEntry",
    "Identity",
    "JWTVerifier",
    "LocalFileStore",
    "MessageSent",
    "MessageStore",
    "Notification",
    "NotificationStore",
    "OnlineUserInfo",
    "Outcome",
    "RealtimeServer",
    "RoomActivity",
    "RoomJoined",
    "RoomUserEvent",
    "TokenProvider",
    "TokenVerifier",
    "TypingEvent",
    "UploadQuota",
    "UploadRecord",
    "UploadRegistry",
    "UploadUsage",
    "UserPresence",
    "issue_token",
]
