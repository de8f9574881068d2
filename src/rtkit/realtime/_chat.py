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

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from .._core.clock import Clock, SystemClock
from .._core.ids import new_id
from .._core.pages import Page
from .._core.validate import DEFAULT_PAGE, check_id, utf8_size
from ..errors import Forbidden, PayloadTooLarge, ValidationError
from ..presence import PresenceStore
from ..ratelimit import RateLimiter
from ..rooms import RoomManager
from ._auth import Identity
from ._chat_base import (
    AuthorizeJoin,
    ChatLimits,
    Emit,
    Outcome,
    parse_payload,
    room_channel,
    user_channel,
)
from ._chat_files import ChatFiles
from ._links import DownloadLinks
from ._protocol import (
    ChatMessage,
    ChatMessageIn,
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
    history_wire,
    iso_time,
    wire,
)
from .stores import (
    FileStore,
    MessageStore,
    NotificationStore,
    UploadRegistry,
)

__all__ = [
    "AuthorizeJoin",
    "ChatLimits",
    "ChatService",
    "Emit",
    "Handler",
    "Outcome",
    "room_channel",
    "user_channel",
]

Handler = Callable[[Identity, str, Any], Awaitable["Outcome"]]
"""A client event's handler: ``(who, sid, data) -> Outcome``."""


class ChatService(ChatFiles):
    """rtkit's chat behaviour on shared presence, rooms and stores.

    Args:
        presence: who is online.
        rooms: room membership.
        messages: where chat messages are kept.
        notifications: where notifications for offline users wait.
        uploads: the shared upload records.
        files: where uploaded bytes go.
        limiter: counts every event against its rate in ``limits`` (``None``:
            no rate limits).
        limits: the bounds, rates and quotas.
        clock: where timestamps come from.
        links: signs download links (default: a random key of this process,
            with ``limits.download_link_ttl``).
        joined: an optional fast, local answer to "is connection ``sid`` in room
            ``room_id``?" (the server knows which Socket.IO rooms its own
            connections entered); ``True`` skips the shared membership lookup,
            ``False`` falls back to it.
        authorize_join: ``authorize_join(identity, room_id) -> bool`` (or an
            awaitable of one), asked before every ``room:join``: ``False``
            refuses it with [`Forbidden`][rtkit.errors.Forbidden]. Without it
            anyone may join any room.
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
        links: DownloadLinks | None = None,
        joined: Callable[[str, str], bool] | None = None,
        authorize_join: AuthorizeJoin | None = None,
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
        self.links = links or DownloadLinks(ttl=self.limits.download_link_ttl, clock=self.clock)
        self.joined = joined
        self.authorize_join = authorize_join

    def handlers(self) -> dict[str, Handler]:
        """The handler of each client event of the protocol, by its name."""
        return {
            "room:join": self.join_room,
            "room:leave": self.leave_room,
            "chat:message": self.send_message,
            "chat:history": self.history,
            "typing:start": lambda w, s, d: self.typing(w, s, d, started=True),
            "typing:stop": lambda w, s, d: self.typing(w, s, d, started=False),
            "notification:send": self.send_notification,
            "file:upload:start": self.start_upload,
            "file:download": self.download_link,
            "game:move": self.game_move,
        }

    # ------------------------------------------------------------ connection

    async def connect(self, who: Identity, sid: str) -> Outcome:
        """A connection was authenticated: record presence, tell the others if the user is new.

        Enters ``user:<id>``; ``user:joined`` goes to everybody else only on the
        user's first connection. Call :meth:`welcome` once the client is connected.
        Connections count against ``limits.connect_rate``.
        """
        await self._limit(who, "connect", self.limits.connect_rate)
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
        for room_id in left:
            await self._remember_activity(who, room_id, "leave")
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

    async def park(self, who: Identity, sid: str, hold: str, room_ids: list[str]) -> list[Emit]:
        """A connection that may recover went away: its presence and rooms pass to ``hold``.

        ``hold`` (a connection id of this instance that no client has) keeps the
        user online and in ``room_ids`` while the session may come back, so
        nobody sees the user leave and return; :meth:`disconnect` of ``hold``
        ends it (``user:left`` and ``room:user:left`` then, if they apply).
        """
        await self.presence.connect(who.user_id, hold, username=who.username)
        for room_id in room_ids:
            await self.rooms.join(room_id, who.user_id, hold)
        return await self.disconnect(who, sid)

    async def resume(self, who: Identity, sid: str, room_ids: list[str]) -> Outcome:
        """A connection recovered its session (here or on another instance): present again,
        back in ``room_ids``. Announced only to those who saw the user go (a hold that
        ended meanwhile, its instance gone)."""
        first = await self.presence.connect(who.user_id, sid, username=who.username)
        channels = [room_channel(room_id) for room_id in room_ids]
        outcome = Outcome(enter=[user_channel(who.user_id), *channels])
        if first:
            event = UserPresence(user_id=who.user_id, username=who.username, time=self._now())
            outcome.emits.append(Emit("user:joined", wire(event), to=None, skip_sid=sid))
        for room_id in room_ids:
            if await self.rooms.join(room_id, who.user_id, sid):
                joined = RoomUserEvent(user_id=who.user_id, username=who.username, room_id=room_id)
                outcome.emits.append(
                    Emit("room:user:joined", wire(joined), to=room_channel(room_id), skip_sid=sid)
                )
        return outcome

    # ------------------------------------------------------------ rooms

    async def join_room(self, who: Identity, sid: str, data: Any) -> Outcome:
        """``room:join`` (a bare room id or ``{roomId}``).

        The others in the room get ``room:user:joined`` when the user is new to
        it (and the room's history keeps the join); the joiner gets
        ``room:joined {roomId, users}``. With an ``authorize_join`` hook, a join
        it refuses is ``Forbidden``.
        """
        await self._limit(who, "room", self.limits.room_rate)
        if isinstance(data, str):
            data = {"roomId": data}
        room_id = self._room_id(parse_payload(RoomIn, data, "room:join").room_id)
        await self._authorize(who, room_id)
        # the room limit is checked in the same atomic step as the join (TooManyRooms)
        new = await self.rooms.join(
            room_id, who.user_id, sid, max_rooms=self.limits.max_rooms_per_user
        )
        users = await self._members(room_id)
        joined = RoomJoined(room_id=room_id, users=users)
        outcome = Outcome(ack=wire(joined), enter=[room_channel(room_id)])
        if new:
            await self._remember_activity(who, room_id, "join")
            event = RoomUserEvent(user_id=who.user_id, username=who.username, room_id=room_id)
            outcome.emits.append(
                Emit("room:user:joined", wire(event), to=room_channel(room_id), skip_sid=sid)
            )
        outcome.emits.append(Emit("room:joined", wire(joined), to=sid))
        return outcome

    async def leave_room(self, who: Identity, sid: str, data: Any) -> Outcome:
        """``room:leave``: ``room:user:left`` to the others (and the room's history) once the
        user left completely."""
        await self._limit(who, "room", self.limits.room_rate)
        if isinstance(data, str):
            data = {"roomId": data}
        room_id = self._room_id(parse_payload(RoomIn, data, "room:leave").room_id)
        await self._require_member(room_id, who, sid)
        gone = await self.rooms.leave(room_id, sid)
        outcome = Outcome(ack={"roomId": room_id}, leave=[room_channel(room_id)])
        if gone:
            await self._remember_activity(who, room_id, "leave")
            event = RoomUserEvent(user_id=who.user_id, username=who.username, room_id=room_id)
            outcome.emits.append(
                Emit("room:user:left", wire(event), to=room_channel(room_id), skip_sid=sid)
            )
        return outcome

    # ------------------------------------------------------------ chat

    async def send_message(self, who: Identity, sid: str, data: Any) -> Outcome:
        """``chat:message``: kept, sent to the whole room, ``chat:message:sent`` to the sender."""
        await self._limit(who, "chat", self.limits.message_rate)
        payload = parse_payload(ChatMessageIn, data, "chat:message")
        room_id = self._room_id(payload.room_id)
        if not payload.message.strip():
            raise ValidationError("message must not be empty")
        if utf8_size(payload.message, "message") > self.limits.max_message_bytes:
            raise PayloadTooLarge(f"message is longer than {self.limits.max_message_bytes} bytes")
        await self._require_member(room_id, who, sid)
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
        """``chat:history {roomId, before?, limit, kinds?}``: a room's latest entries (members).

        ``kinds`` (default ``["message"]``) picks chat messages, file shares
        (``"file"``), joins and leaves; each entry of the ack has its ``kind``.
        """
        await self._limit(who, "history", self.limits.history_rate)
        payload = parse_payload(HistoryIn, data, "chat:history")
        room_id = self._room_id(payload.room_id)
        if payload.before is not None:
            check_id(payload.before, "before")
        await self._require_member(room_id, who, sid)
        entries = await self.messages.history(
            room_id, before=payload.before, limit=payload.limit, kinds=payload.kinds
        )
        return Outcome(ack={"messages": [history_wire(entry) for entry in entries]})

    async def typing(self, who: Identity, sid: str, data: Any, *, started: bool) -> Outcome:
        """``typing:start`` / ``typing:stop``: to the others in the room."""
        await self._limit(who, "typing", self.limits.typing_rate)
        name = "typing:start" if started else "typing:stop"
        room_id = self._room_id(parse_payload(TypingIn, data, name).room_id)
        await self._require_member(room_id, who, sid)
        event = TypingEvent(user_id=who.user_id, username=who.username, room_id=room_id)
        return Outcome(emits=[Emit(name, wire(event), to=room_channel(room_id), skip_sid=sid)])

    async def game_move(self, who: Identity, sid: str, data: Any) -> Outcome:
        """``game:move``: to the others in the room."""
        await self._limit(who, "game", self.limits.game_move_rate)
        payload = parse_payload(GameMoveIn, data, "game:move")
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
        await self._limit(who, "notification", self.limits.notification_rate)
        payload = parse_payload(NotificationIn, data, "notification:send")
        target = check_id(payload.target_user_id, "targetUserId")
        self._check_json(payload.content, "content")
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

    async def unknown_event(self, who: Identity, sid: str, event: str, data: Any) -> Outcome:
        """An event the chat does not know: counted (``other_rate``), then refused."""
        await self._limit(who, "other", self.limits.other_rate)
        raise ValidationError(f"unknown event {event!r:.80}")

    async def _authorize(self, who: Identity, room_id: str) -> None:
        if self.authorize_join is None:
            return
        allowed = self.authorize_join(who, room_id)
        if inspect.isawaitable(allowed):
            allowed = await allowed
        if allowed is not True:
            raise Forbidden(f"you may not join room {room_id!r}")

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
