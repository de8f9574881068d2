"""What the chat logic is made of: its bounds, its results, and the helpers every event uses.

[`ChatService`][rtkit.realtime.ChatService] is assembled from this base, the
upload events (``_chat_files.py``) and the rest (``_chat.py``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, fields
from typing import Any, Literal, TypeVar

import pydantic

from .._core.clock import Clock
from .._core.ids import new_id
from .._core.validate import DEFAULT_PAGE, check_id, check_int, check_seconds, utf8_size
from ..errors import (
    ConfigurationError,
    NotMember,
    PayloadTooLarge,
    RateLimited,
    RtkitError,
    ValidationError,
)
from ..presence import PresenceStore
from ..ratelimit import RateLimiter, parse_limit
from ..rooms import RoomManager
from ._auth import Identity
from ._links import DEFAULT_LINK_TTL, DownloadLinks
from ._protocol import HistoryEntry, RoomActivity, iso_time
from .stores import FileStore, MessageStore, NotificationStore, UploadRegistry

__all__ = [
    "AuthorizeJoin",
    "ChatBase",
    "ChatLimits",
    "Emit",
    "Outcome",
    "json_size",
    "parse_payload",
    "room_channel",
    "user_channel",
]

_M = TypeVar("_M", bound=pydantic.BaseModel)

log = logging.getLogger("rtkit.realtime")

AuthorizeJoin = Callable[[Identity, str], bool | Awaitable[bool]]
"""``authorize_join(identity, room_id)``: may this user join this room? (sync or async)."""

_MIB = 1024 * 1024


def room_channel(room_id: str) -> str:
    """The Socket.IO room of chat room ``room_id``."""
    return "room:" + room_id


def user_channel(user_id: str) -> str:
    """The Socket.IO room holding every connection of ``user_id``."""
    return "user:" + user_id


@dataclass(frozen=True)
class ChatLimits:
    """The bounds the chat enforces (sizes in UTF-8 bytes, rates per user, ``None``: off).

    Rates are texts such as ``"20/10 seconds"`` (GCRA: that many at once, then
    one every ``period / amount``), counted per user across all their
    connections (and every instance, on Redis); every event counts, refused
    ones included. An event over its rate is answered with
    [`RateLimited`][rtkit.errors.RateLimited] (``rate_limited``, ``retryAfter``).

    Attributes:
        max_message_bytes: longest chat message text.
        max_room_id_bytes: longest room id.
        max_file_name_bytes: longest upload file name.
        max_upload_bytes: largest upload.
        max_json_bytes: largest notification ``content`` / game ``move`` (as JSON).
        message_rate: ``chat:message``.
        notification_rate: ``notification:send``.
        typing_rate: ``typing:start`` and ``typing:stop`` together.
        game_move_rate: ``game:move``.
        room_rate: ``room:join`` and ``room:leave`` together (enough for a
            client to rejoin ``max_rooms_per_user`` rooms at once).
        history_rate: ``chat:history``.
        upload_rate: ``file:upload:start``.
        download_rate: ``file:download`` and file downloads together.
        other_rate: events the server does not know.
        connect_rate: connections (a reconnect storm of one user, each of which
            sends the online list, is refused at connect with ``rate_limited``).
        upload_quota_per_user: bytes of one user's live uploads together.
        upload_quota_per_server: bytes of all live uploads of the deployment
            (every instance sharing the upload registry).
        max_uploads_per_user: live uploads one user may have.
        download_link_ttl: seconds a signed download link works.
        max_rooms_per_user: most rooms one user may be in at once.
        max_list: most users / members listed in ``users:online`` and ``room:joined``.
    """

    max_message_bytes: int = 8 * 1024
    max_room_id_bytes: int = 128
    max_file_name_bytes: int = 255
    max_upload_bytes: int = 10 * _MIB
    max_json_bytes: int = 16 * 1024
    message_rate: str | None = "20/10 seconds"
    notification_rate: str | None = "20/10 seconds"
    typing_rate: str | None = "30/10 seconds"
    game_move_rate: str | None = "50/10 seconds"
    room_rate: str | None = "120/minute"
    history_rate: str | None = "30/10 seconds"
    upload_rate: str | None = "10/minute"
    download_rate: str | None = "120/minute"
    other_rate: str | None = "20/10 seconds"
    connect_rate: str | None = "30/minute"
    upload_quota_per_user: int | None = 100 * _MIB
    upload_quota_per_server: int | None = 2048 * _MIB
    max_uploads_per_user: int | None = 100
    download_link_ttl: float = DEFAULT_LINK_TTL
    max_rooms_per_user: int = 100
    max_list: int = 1000

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name.endswith("_rate"):
                if value is not None:
                    parse_limit(value)  # ConfigurationError now, not on the first event
            elif item.name == "download_link_ttl":
                check_seconds(value, item.name)
            elif value is not None:
                check_int(value, item.name, minimum=0, error=ConfigurationError)


@dataclass(frozen=True)
class Emit:
    """Send ``event`` with ``data`` to the Socket.IO room ``to`` (``None``: everyone).

    ``skip_sid`` is left out (the sender, for "to the others").
    """

    event: str
    data: Any
    to: str | None
    skip_sid: str | None = None


@dataclass
class Outcome:
    """What handling one event produced.

    Attributes:
        ack: the data of the success ack (``{"ok": true, **ack}``).
        emits: what to send, in order.
        enter: Socket.IO rooms the connection enters (before the emits).
        leave: Socket.IO rooms the connection leaves (before the emits).
    """

    ack: dict[str, Any] = field(default_factory=dict)
    emits: list[Emit] = field(default_factory=list)
    enter: list[str] = field(default_factory=list)
    leave: list[str] = field(default_factory=list)


def parse_payload(model: type[_M], data: Any, event: str) -> _M:
    """``data`` as ``model``, or a ``ValidationError`` naming the first problems."""
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'payload'}: {err['msg']}"
            for err in exc.errors()[:3]
        )
        raise ValidationError(f"invalid {event} payload: {problems}") from None


def json_size(value: Any, what: str) -> int:
    """The size of ``value`` as compact UTF-8 JSON."""
    return utf8_size(json.dumps(value, separators=(",", ":"), ensure_ascii=False), what)


class ChatBase:
    """The parts and helpers of every chat event ([`ChatService`][rtkit.realtime.ChatService])."""

    presence: PresenceStore
    rooms: RoomManager
    messages: MessageStore
    notifications: NotificationStore
    uploads: UploadRegistry
    files: FileStore
    limiter: RateLimiter | None
    limits: ChatLimits
    clock: Clock
    links: DownloadLinks
    joined: Callable[[str, str], bool] | None

    def _now(self) -> str:
        return iso_time(self.clock.time())

    def _room_id(self, room_id: str) -> str:
        return check_id(room_id, "roomId", max_bytes=self.limits.max_room_id_bytes)

    async def _limit(self, who: Identity, kind: str, rate: str | None) -> None:
        """Count one ``kind`` event of ``who`` against ``rate``; raise when over it.

        The limiter key is ``<kind>:<user id>``: a *key* (up to 512 bytes), so
        every user id the verifier accepts fits.
        """
        if self.limiter is None or rate is None:
            return
        decision = await self.limiter.hit(f"{kind}:{who.user_id}", rate)
        if not decision.allowed:
            raise RateLimited(
                f"too many {kind} events; try again in {decision.retry_after:.1f} s",
                retry_after=decision.retry_after,
            )

    async def _require_member(self, room_id: str, who: Identity, sid: str | None) -> None:
        if sid is not None and self.joined is not None and self.joined(sid, room_id):
            return  # known locally: no round trip to the shared room store
        if not await self.rooms.is_member(room_id, who.user_id):
            raise NotMember(f"you are not a member of room {room_id!r}")

    async def _remember(self, entry: HistoryEntry) -> None:
        """Keep a file share, join or leave in its room's history.

        It already happened (the room was told): a history that cannot be
        written now is logged, and the event goes on.
        """
        try:
            await self.messages.append(entry)
        except RtkitError as exc:
            log.warning(
                "could not keep a %s in the history of room %r: %s", entry.kind, entry.room_id, exc
            )

    async def _remember_activity(
        self, who: Identity, room_id: str, kind: Literal["join", "leave"]
    ) -> None:
        """Keep ``who`` joining or leaving ``room_id`` in its history."""
        entry = RoomActivity(
            kind=kind,
            id=new_id(),
            user_id=who.user_id,
            username=who.username,
            timestamp=self._now(),
            room_id=room_id,
        )
        await self._remember(entry)

    def _check_json(self, value: Any, what: str) -> None:
        if json_size(value, what) > self.limits.max_json_bytes:
            raise PayloadTooLarge(f"{what} is larger than {self.limits.max_json_bytes} bytes")

    async def _member_pages(self, room_id: str) -> AsyncIterator[list[str]]:
        """Every member of ``room_id``, a page at a time."""
        cursor: str | None = None
        while True:
            page = await self.rooms.members(room_id, cursor=cursor, limit=DEFAULT_PAGE)
            yield page.items
            cursor = page.next_cursor
            if cursor is None:
                return

    async def _members(self, room_id: str) -> list[str]:
        """The first ``max_list`` members of ``room_id``."""
        users: list[str] = []
        async for page in self._member_pages(room_id):
            users.extend(page)
            if len(users) >= self.limits.max_list:
                break
        return users[: self.limits.max_list]
