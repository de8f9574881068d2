"""The chat logic, without sockets: validation, membership, limits and who receives what.

[`ChatService`][rtkit.realtime.ChatService] turns one client event into an
[`Outcome`][rtkit.realtime.Outcome]: the data of the success ack, the
Socket.IO rooms the connection enters or leaves, and the list of
[`Emit`][rtkit.realtime.Emit]s to send. The server only carries them out, so
everything here is testable by calling methods. Errors are raised as
[`RtkitError`][rtkit.errors.RtkitError] subclasses, before anything changes.

Socket.IO room names: a chat room ``R`` is ``room:R``, every connection of user
``U`` is in ``user:U`` (so a notification reaches all of them, on any instance).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pydantic

from .._core.clock import Clock, SystemClock
from .._core.ids import new_id
from .._core.pages import Page
from .._core.validate import DEFAULT_PAGE, check_id, utf8_size
from ..errors import (
    Conflict,
    Forbidden,
    NotFound,
    NotMember,
    PayloadTooLarge,
    RateLimited,
    ValidationError,
)
from ..presence import PresenceStore
from ..ratelimit import RateLimiter
from ..rooms import RoomManager
from ._auth import Identity
from ._protocol import (
    ChatMessage,
    ChatMessageIn,
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
    RoomInfoOut,
    RoomJoined,
    RoomUserEvent,
    TypingEvent,
    TypingIn,
    UserPresence,
    iso_time,
    wire,
)
from .stores import (
    FileStore,
    MessageStore,
    NotificationStore,
    UploadRecord,
    UploadRegistry,
)

__all__ = [
    "ChatLimits",
    "ChatService",
    "Emit",
    "Outcome",
    "room_channel",
    "user_channel",
]

_M = TypeVar("_M", bound=pydantic.BaseModel)


def room_channel(room_id: str) -> str:
    """The Socket.IO room of chat room ``room_id``."""
    return "room:" + room_id


def user_channel(user_id: str) -> str:
    """The Socket.IO room holding every connection of ``user_id``."""
    return "user:" + user_id


@dataclass(frozen=True)
class ChatLimits:
    """The bounds the chat enforces (all sizes in UTF-8 bytes).

    Attributes:
        max_message_bytes: longest chat message text.
        max_room_id_bytes: longest room id.
        max_file_name_bytes: longest upload file name.
        max_upload_bytes: largest upload.
        max_json_bytes: largest notification ``content`` / game ``move`` (as JSON).
        message_rate: per-user chat message limit such as ``"20/10 seconds"``;
            ``None`` turns it off.
        notification_rate: per-user ``notification:send`` limit (``None``: off).
        max_rooms_per_user: most rooms one user may be in at once.
        max_list: most users / members listed in ``users:online`` and ``room:joined``.
    """

    max_message_bytes: int = 8 * 1024
    max_room_id_bytes: int = 128
    max_file_name_bytes: int = 255
    max_upload_bytes: int = 10 * 1024 * 1024
    max_json_bytes: int = 16 * 1024
    message_rate: str | None = "20/10 seconds"
    notification_rate: str | None = "20/10 seconds"
    max_rooms_per_user: int = 100
    max_list: int = 1000


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


def _parse(model: type[_M], data: Any, event: str) -> _M:
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'payload'}: {err['msg']}"
            for err in exc.errors()[:3]
        )
        raise ValidationError(f"invalid {event} payload: {problems}") from None


def _json_size(value: Any, what: str) -> int:
    return utf8_size(json.dumps(value, separators=(",", ":"), ensure_ascii=False), what)


class ChatService:
    """The chat's behaviour on shared presence, rooms and stores.

    Args:
        presence: who is online.
        rooms: room membership.
        messages: where chat messages are kept.
        notifications: where notifications for offline users wait.
        uploads: the shared upload records.
        files: where uploaded bytes go.
        limiter: counts ``limits.message_rate`` and ``notification_rate``
            (``None``: no rate limit).
        limits: the bounds.
        clock: where timestamps come from.
        upload_url: the download URL of an upload id.
        joined: an optional fast, local answer to "is connection ``sid`` in room
            ``room_id``?" (the server knows which Socket.IO rooms its own
            connections entered); ``True`` skips the shared membership lookup,
            ``False`` falls back to it.
    """

    def __init__(
        self,
        *,
        presence: PresenceStore,
        rooms: RoomManager,
        messages: MessageStore,
        notifications: NotificationStore,
        uploads: UploadRegistry,
        files: FileStore,
        limiter: RateLimiter | None = None,
        limits: ChatLimits | None = None,
        clock: Clock | None = None,
        upload_url: Callable[[str], str] = lambda upload_id: f"/api/uploads/{upload_id}",
        joined: Callable[[str, str], bool] | None = None,
    ) -> None:
        self.presence = presence
        self.rooms = rooms
        self.messages = messages
        self.notifications = notifications
        self.uploads = uploads
        self.files = files
        self.limiter = limiter
        self.limits = limits or ChatLimits()
        self.clock = clock or SystemClock()
        self.upload_url = upload_url
        self.joined = joined

    # ------------------------------------------------------------ helpers

    def _now(self) -> str:
        return iso_time(self.clock.time())

    def _room_id(self, room_id: str) -> str:
        return check_id(room_id, "roomId", max_bytes=self.limits.max_room_id_bytes)

    async def _limit(self, who: Identity, kind: str, rate: str | None) -> None:
        """Count one ``kind`` action of ``who`` against ``rate``; raise when over it."""
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

    def _check_json(self, value: Any, what: str) -> None:
        if _json_size(value, what) > self.limits.max_json_bytes:
            raise PayloadTooLarge(f"{what} is larger than {self.limits.max_json_bytes} bytes")

    async def _members(self, room_id: str) -> list[str]:
        users: list[str] = []
        cursor: str | None = None
        while len(users) < self.limits.max_list:
            page = await self.rooms.members(room_id, cursor=cursor, limit=DEFAULT_PAGE)
            users.extend(page.items)
            cursor = page.next_cursor
            if cursor is None:
                break
        return users[: self.limits.max_list]

    # ------------------------------------------------------------ connection

    async def connect(self, who: Identity, sid: str) -> Outcome:
        """A connection was authenticated: record presence, tell the others if the user is new.

        Enters ``user:<id>``; ``user:joined`` goes to everybody else only on the
        user's first connection. Call :meth:`welcome` once the client is connected.
        """
        first = await self.presence.connect(who.user_id, sid, username=who.username)
        outcome = Outcome(enter=[user_channel(who.user_id)])
        if first:
            event = UserPresence(user_id=who.user_id, username=who.username, time=self._now())
            outcome.emits.append(Emit("user:joined", wire(event), to=None, skip_sid=sid))
        return outcome

    async def welcome(self, who: Identity, sid: str) -> list[Emit]:
        """``users:online`` and the notifications kept while the user was offline, to ``sid``."""
        users = await self.online_users(limit=self.limits.max_list)
        emits = [Emit("users:online", [wire(user) for user in users.items], to=sid)]
        for note in await self.notifications.take(who.user_id):
            emits.append(Emit("notification:received", wire(note), to=sid))
        return emits

    async def disconnect(self, who: Identity, sid: str) -> list[Emit]:
        """A connection went away: leave its rooms, drop its presence, tell who must know.

        ``room:user:left`` goes to each room the user left completely; ``user:left``
        to everybody only when the user's last connection went.
        """
        left = await self.rooms.leave_all(sid)
        departure = await self.presence.disconnect(sid)
        emits = [
            Emit(
                "room:user:left",
                wire(RoomUserEvent(user_id=who.user_id, username=who.username, room_id=room_id)),
                to=room_channel(room_id),
                skip_sid=sid,
            )
            for room_id in left
        ]
        if departure is not None and departure.offline:
            event = UserPresence(user_id=who.user_id, username=who.username, time=self._now())
            emits.append(Emit("user:left", wire(event), to=None, skip_sid=sid))
        return emits

    # ------------------------------------------------------------ rooms

    async def join_room(self, who: Identity, sid: str, data: Any) -> Outcome:
        """``room:join`` (a bare room id or ``{roomId}``).

        The others in the room get ``room:user:joined`` when the user is new to
        it; the joiner gets ``room:joined {roomId, users}``.
        """
        if isinstance(data, str):
            data = {"roomId": data}
        room_id = self._room_id(_parse(RoomIn, data, "room:join").room_id)
        # the room limit is checked in the same atomic step as the join (TooManyRooms)
        new = await self.rooms.join(
            room_id, who.user_id, sid, max_rooms=self.limits.max_rooms_per_user
        )
        users = await self._members(room_id)
        joined = RoomJoined(room_id=room_id, users=users)
        outcome = Outcome(ack=wire(joined), enter=[room_channel(room_id)])
        if new:
            event = RoomUserEvent(user_id=who.user_id, username=who.username, room_id=room_id)
            outcome.emits.append(
                Emit("room:user:joined", wire(event), to=room_channel(room_id), skip_sid=sid)
            )
        outcome.emits.append(Emit("room:joined", wire(joined), to=sid))
        return outcome

    async def leave_room(self, who: Identity, sid: str, data: Any) -> Outcome:
        """``room:leave``: ``room:user:left`` to the others once the user left completely."""
        if isinstance(data, str):
            data = {"roomId": data}
        room_id = self._room_id(_parse(RoomIn, data, "room:leave").room_id)
        await self._require_member(room_id, who, sid)
        gone = await self.rooms.leave(room_id, sid)
        outcome = Outcome(ack={"roomId": room_id}, leave=[room_channel(room_id)])
        if gone:
            event = RoomUserEvent(user_id=who.user_id, username=who.username, room_id=room_id)
            outcome.emits.append(
                Emit("room:user:left", wire(event), to=room_channel(room_id), skip_sid=sid)
            )
        return outcome

    # ------------------------------------------------------------ chat

    async def send_message(self, who: Identity, sid: str, data: Any) -> Outcome:
        """``chat:message``: kept, sent to the whole room, ``chat:message:sent`` to the sender."""
        payload = _parse(ChatMessageIn, data, "chat:message")
        room_id = self._room_id(payload.room_id)
        if not payload.message.strip():
            raise ValidationError("message must not be empty")
        if utf8_size(payload.message, "message") > self.limits.max_message_bytes:
            raise PayloadTooLarge(f"message is longer than {self.limits.max_message_bytes} bytes")
        await self._require_member(room_id, who, sid)
        await self._limit(who, "chat", self.limits.message_rate)
        message = ChatMessage(
            id=new_id(),
            user_id=who.user_id,
            username=who.username,
            message=payload.message,
            type=payload.type,
            timestamp=self._now(),
            room_id=room_id,
        )
        await self.messages.append(message)
        sent = wire(MessageSent(message_id=message.id))
        return Outcome(
            ack=sent,
            emits=[
                Emit("chat:message", wire(message), to=room_channel(room_id)),
                Emit("chat:message:sent", sent, to=sid),
            ],
        )

    async def history(self, who: Identity, sid: str, data: Any) -> Outcome:
        """``chat:history {roomId, before?, limit}``: the room's latest messages, for members."""
        payload = _parse(HistoryIn, data, "chat:history")
        room_id = self._room_id(payload.room_id)
        if payload.before is not None:
            check_id(payload.before, "before")
        await self._require_member(room_id, who, sid)
        messages = await self.messages.history(room_id, before=payload.before, limit=payload.limit)
        return Outcome(ack={"messages": [wire(m) for m in messages]})

    async def typing(self, who: Identity, sid: str, data: Any, *, started: bool) -> Outcome:
        """``typing:start`` / ``typing:stop``: to the others in the room."""
        name = "typing:start" if started else "typing:stop"
        room_id = self._room_id(_parse(TypingIn, data, name).room_id)
        await self._require_member(room_id, who, sid)
        event = TypingEvent(user_id=who.user_id, username=who.username, room_id=room_id)
        return Outcome(emits=[Emit(name, wire(event), to=room_channel(room_id), skip_sid=sid)])

    async def game_move(self, who: Identity, sid: str, data: Any) -> Outcome:
        """``game:move``: to the others in the room."""
        payload = _parse(GameMoveIn, data, "game:move")
        room_id = self._room_id(payload.room_id)
        self._check_json(payload.move, "move")
        await self._require_member(room_id, who, sid)
        event = GameMove(
            user_id=who.user_id, move=payload.move, timestamp=self._now(), room_id=room_id
        )
        return Outcome(
            emits=[Emit("game:move", wire(event), to=room_channel(room_id), skip_sid=sid)]
        )

    # ------------------------------------------------------------ notifications

    async def send_notification(self, who: Identity, sid: str, data: Any) -> Outcome:
        """``notification:send``: to every connection of the target, or kept until it connects."""
        payload = _parse(NotificationIn, data, "notification:send")
        target = check_id(payload.target_user_id, "targetUserId")
        self._check_json(payload.content, "content")
        await self._limit(who, "notification", self.limits.notification_rate)
        note = Notification(
            id=new_id(),
            from_user_id=who.user_id,
            to_user_id=target,
            type=payload.type,
            content=payload.content,
            timestamp=self._now(),
        )
        if await self.presence.is_online(target):
            return Outcome(
                ack={"notificationId": note.id, "delivered": True},
                emits=[Emit("notification:received", wire(note), to=user_channel(target))],
            )
        await self.notifications.push(note)
        return Outcome(ack={"notificationId": note.id, "delivered": False})

    # ------------------------------------------------------------ uploads

    async def start_upload(self, who: Identity, sid: str, data: Any) -> Outcome:
        """``file:upload:start``: announced to the others, ``file:upload:ready`` back."""
        payload = _parse(FileUploadStartIn, data, "file:upload:start")
        room_id = self._room_id(payload.room_id)
        name = check_id(payload.file_name, "fileName", max_bytes=self.limits.max_file_name_bytes)
        if "/" in name or "\\" in name or name in {".", ".."}:
            raise ValidationError("fileName must be a plain file name, without a path")
        if payload.file_size > self.limits.max_upload_bytes:
            raise PayloadTooLarge(f"fileSize is larger than {self.limits.max_upload_bytes} bytes")
        await self._require_member(room_id, who, sid)
        now = self.clock.time()
        record = UploadRecord(
            upload_id=new_id(),
            room_id=room_id,
            user_id=who.user_id,
            file_name=name,
            file_size=payload.file_size,
            created_at=now,
        )
        await self.uploads.create(record)
        start = FileUploadStart(
            id=new_id(),
            user_id=who.user_id,
            room_id=room_id,
            file_name=name,
            file_size=record.file_size,
            upload_id=record.upload_id,
            timestamp=iso_time(now),
        )
        ready = wire(FileUploadReady(upload_id=record.upload_id))
        return Outcome(
            ack=ready,
            emits=[
                Emit("file:upload:start", wire(start), to=room_channel(room_id), skip_sid=sid),
                Emit("file:upload:ready", ready, to=sid),
            ],
        )

    async def receive_upload(
        self, who: Identity, upload_id: str, body: AsyncIterator[bytes], *, size: int | None
    ) -> list[Emit]:
        """The uploader sends the announced bytes; the room then gets ``file:upload:complete``.

        ``size`` is the request's Content-Length (``None`` if absent); it must
        equal the announced size, and so must the body.
        """
        check_id(upload_id, "uploadId")
        record = await self.uploads.get(upload_id)
        if record is None:
            raise NotFound(f"upload {upload_id!r} is unknown or expired")
        if record.user_id != who.user_id:
            raise Forbidden("only the user who announced this upload may send it")
        if size is not None and size != record.file_size:
            raise ValidationError(
                f"the body has {size} bytes but {record.file_size} bytes were announced"
            )
        if await self.uploads.claim(upload_id) is None:
            raise Conflict("this upload is complete or already in progress")
        try:
            await self.files.save(upload_id, body, size=record.file_size)
        except BaseException:
            await self.uploads.release(upload_id)
            raise
        await self.uploads.complete(upload_id)
        done = FileUploadComplete(
            upload_id=upload_id,
            room_id=record.room_id,
            file_name=record.file_name,
            file_size=record.file_size,
            url=self.upload_url(upload_id),
            user_id=who.user_id,
        )
        return [Emit("file:upload:complete", wire(done), to=room_channel(record.room_id))]

    async def download(
        self, who: Identity, upload_id: str
    ) -> tuple[UploadRecord, AsyncIterator[bytes]]:
        """A completed upload's record and bytes, for members of its room only.

        The first chunk is read here, so a file missing from the store (say, an
        instance without the shared upload folder) is a ``NotFound`` now rather
        than a broken response later.
        """
        check_id(upload_id, "uploadId")
        record = await self.uploads.get(upload_id)
        if record is None or not record.complete:
            raise NotFound(f"upload {upload_id!r} does not exist or is not complete")
        await self._require_member(record.room_id, who, None)
        chunks = self.files.open(upload_id)
        first = await anext(chunks, b"")

        async def body() -> AsyncIterator[bytes]:
            if first:
                yield first
            async for chunk in chunks:
                yield chunk

        return record, body()

    # ------------------------------------------------------------ listings

    async def online_users(
        self, cursor: str | None = None, limit: int = DEFAULT_PAGE
    ) -> Page[OnlineUserInfo]:
        """One page of online users, as the wire shows them (at most ``limit``)."""
        items: list[OnlineUserInfo] = []
        while True:
            page = await self.presence.online_users(
                cursor=cursor, limit=min(DEFAULT_PAGE, limit - len(items))
            )
            items.extend(
                OnlineUserInfo(
                    user_id=user.user_id,
                    username=user.username or user.user_id,
                    join_time=iso_time(user.joined_at),
                )
                for user in page.items
            )
            cursor = page.next_cursor
            if cursor is None or len(items) >= limit:
                return Page(items, cursor)

    async def room_list(
        self, cursor: str | None = None, limit: int = DEFAULT_PAGE
    ) -> Page[RoomInfoOut]:
        """One page of rooms with their user counts, as the wire shows them."""
        page = await self.rooms.rooms(cursor=cursor, limit=limit)
        items = [
            RoomInfoOut(
                id=room.room_id, user_count=room.user_count, created_at=iso_time(room.created_at)
            )
            for room in page.items
        ]
        return Page(items, page.next_cursor)
