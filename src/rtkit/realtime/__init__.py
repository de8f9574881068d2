"""The seed's Socket.IO chat, secure, typed and multi-instance (needs ``rtkit[server]``).

[`RealtimeServer`][rtkit.realtime.RealtimeServer] serves the chat protocol over
python-socketio; [`ChatClient`][rtkit.realtime.ChatClient] speaks it from Python.
The logic lives in [`ChatService`][rtkit.realtime.ChatService], testable without
a socket.
"""

from __future__ import annotations

from .auth import Identity, JWTVerifier, TokenVerifier, issue_token
from .chat import ChatLimits, ChatService, Emit, Outcome, room_channel, user_channel
from .client import ChatClient
from .messages import (
    MemoryMessageStore,
    MemoryNotificationStore,
    MessageStore,
    NotificationStore,
    RedisMessageStore,
    RedisNotificationStore,
    message_store_from_url,
    notification_store_from_url,
)
from .server import DEFAULT_CLIENT_JS_URL, RealtimeServer
from .uploads import (
    FileStore,
    LocalFileStore,
    MemoryUploadRegistry,
    RedisUploadRegistry,
    UploadRecord,
    UploadRegistry,
    upload_registry_from_url,
)

__all__ = [
    "DEFAULT_CLIENT_JS_URL",
    "ChatClient",
    "ChatLimits",
    "ChatService",
    "Emit",
    "FileStore",
    "Identity",
    "JWTVerifier",
    "LocalFileStore",
    "MemoryMessageStore",
    "MemoryNotificationStore",
    "MemoryUploadRegistry",
    "MessageStore",
    "NotificationStore",
    "Outcome",
    "RealtimeServer",
    "RedisMessageStore",
    "RedisNotificationStore",
    "RedisUploadRegistry",
    "TokenVerifier",
    "UploadRecord",
    "UploadRegistry",
    "issue_token",
    "message_store_from_url",
    "notification_store_from_url",
    "room_channel",
    "upload_registry_from_url",
    "user_channel",
]
