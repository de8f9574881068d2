"""Where the chat keeps its state: history, pending notifications, uploads.

Each store is a component on a memory or Redis backend (``from_url``); this
package needs no extra.
"""

from __future__ import annotations

from ._files import LocalFileStore
from ._messages import MessageStore
from ._notifications import NotificationStore
from ._uploads import UploadRegistry
from .backends.base import FileStore, UploadQuota, UploadRecord, UploadUsage

__all__ = [
    "FileStore",
    "LocalFileStore",
    "MessageStore",
    "NotificationStore",
    "UploadQuota",
    "UploadRecord",
    "UploadRegistry",
    "UploadUsage",
]
