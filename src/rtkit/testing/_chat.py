"""Driving the chat's logic without sockets, and recording what it would send.

Needs the ``realtime`` extra, like the chat itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from .._core.clock import Clock, ManualClock
from ..errors import RtkitError, ValidationError, error_from_payload
from ..presence import PresenceStore
from ..ratelimit import RateLimiter
from ..realtime import (
    ChatMessage,
    MessageStore,
    NotificationStore,
    RoomJoined,
    UploadRegistry,
)
from ..realtime._auth import Identity
from ..realtime._chat import ChatLimits, ChatService, Emit, Outcome
from ..realtime._protocol import socket_error
from ..rooms import RoomManager
from ._wait import DEFAULT_WAIT, Signal

__all__ = ["ChatTestClient", "ChatTestConnection", "Received"]

_Handle = Callable[[ChatService, Identity, str, Any], Awaitable[Outcome]]

# The client events the server handles, and the chat method each goes to.
_EVENTS: dict[str, _Handle] = {
    "room:join": lambda c, w, s, d: c.join_room(w, s, d),
    "room:leave": lambda c, w, s, d: c.leave_room(w, s, d),
    "chat:message": lambda c, w, s, d: c.send_message(w, s, d),
    "chat:history": lambda c, w, s, d: c.history(w, s, d),
    "typing:start": lambda c, w, s, d: c.typing(w, s, d, started=True),
    "typing:stop": lambda c, w, s, d: c.typing(w, s, d, started=False),
    "notification:send": lambda c, w, s, d: c.send_notification(w, s, d),
    "file:upload:start": lambda c, w, s, d: c.start_upload(w, s, d),
    "game:move": lambda c, w, s, d: c.game_move(w, s, d),
}


@dataclass(frozen=True)
class Received:
    """One event a connection would have received: its name and JSON data."""

    event: str
    data: Any


class _MemoryFiles:
    """Uploaded bytes in a dict: the test client's file store."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    async def save(self, upload_id: str, chunks: AsyncIterator[bytes], *, size: int) -> None:
        data = b"".join([chunk async for chunk in chunks])
        if len(data) != size:
            raise ValidationError(f"the body has {len(data)} bytes but {size} were announced")
        self.files[upload_id] = data

    async def open(self, upload_id: str) -> AsyncIterator[bytes]:
        yield self.files[upload_id]

    async def delete(self, upload_id: str) -> None:
        self.files.pop(upload_id, None)

    async def ids(self) -> AsyncIterator[str]:
        for upload_id in list(self.files):
            yield upload_id


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


class ChatTestConnection:
    """One user's connection, as a Socket.IO client of the chat would see it.

    The request methods mirror [`ChatClient`][rtkit.realtime.ChatClient]'s and
    raise the same [`rtkit.errors`][rtkit.errors] classes; :meth:`emit` sends
    any event and returns the ack as the wire carries it. What the server sends
    to this connection lands in :attr:`received`.

    Attributes:
        identity: Who is connected (user id and display name).
        sid: The connection id, as Socket.IO's.
        received: What the server sent this connection, in order.
        rooms: The Socket.IO rooms it is in (its sid, ``user:<id>``, ``room:<id>``).
        connected: False after :meth:`disconnect`.
    """

    def __init__(self, client: ChatTestClient, identity: Identity, sid: str) -> None:
        self.client = client
        self.identity = identity
        self.sid = sid
        self.received: list[Received] = []
        self.rooms: set[str] = {sid}  # the Socket.IO rooms it is in
        self.connected = True
        self._signal = Signal()

    @property
    def user_id(self) -> str:
        """The connection's user id."""
        return self.identity.user_id

    def _deliver(self, event: str, data: Any) -> None:
        self.received.append(Received(event, data))
        self._signal.notify()

    # ------------------------------------------------------------ what arrived

    def events(self, event: str | None = None) -> list[Any]:
        """The data of every received ``event`` (of every event if ``None``), in order."""
        return [r.data for r in self.received if event is None or r.event == event]

    @property
    def names(self) -> list[str]:
        """The names of the received events, in order."""
        return [r.event for r in self.received]

    async def wait_for(self, event: str, *, count: int = 1, timeout: float = DEFAULT_WAIT) -> Any:
        """Wait until ``count`` ``event``s arrived; return the data of the last of them.

        Raises:
            TimeoutError: Fewer arrived within ``timeout`` seconds.
        """
        try:
            await self._signal.wait_for(
                lambda: len(self.events(event)) >= count, timeout=timeout, what=event
            )
        except TimeoutError:
            raise TimeoutError(
                f"{self.sid} received {len(self.events(event))} of {count} {event!r} "
                f"within {timeout} s; it received: {self.names}"
            ) from None
        return self.events(event)[count - 1]

    def clear(self) -> None:
        """Forget what was received so far."""
        self.received.clear()

    # ------------------------------------------------------------ requests

    async def emit(self, event: str, data: Any = None) -> dict[str, Any]:
        """Send ``event`` as a client would, with an ack; return the ack.

        ``{"ok": True, ...}`` or ``{"ok": False, "error": {"code", "message"}}``,
        exactly as the server answers. An exception that is not an
        [`RtkitError`][rtkit.errors.RtkitError] (a bug) is raised, where the
        server would answer ``internal_error`` and log it.
        """
        return await self.client._handle(self, event, data)

    async def _call(self, event: str, data: Any) -> dict[str, Any]:
        reply = await self.emit(event, data)
        if not reply["ok"]:
            raise error_from_payload(reply["error"])
        return reply

    async def join_room(self, room_id: str) -> RoomJoined:
        """Join ``room_id``; returns the room's user ids."""
        return RoomJoined.model_validate(await self._call("room:join", room_id))

    async def leave_room(self, room_id: str) -> None:
        """Leave ``room_id``."""
        await self._call("room:leave", room_id)

    async def send_message(self, room_id: str, message: str, type: str = "text") -> str:
        """Post ``message`` to ``room_id``; returns the message id."""
        data = {"roomId": room_id, "message": message, "type": type}
        return str((await self._call("chat:message", data))["messageId"])

    async def history(
        self, room_id: str, *, before: str | None = None, limit: int = 50
    ) -> list[ChatMessage]:
        """The latest ``limit`` messages of ``room_id`` (older than message id ``before``)."""
        data: dict[str, Any] = {"roomId": room_id, "limit": limit}
        if before is not None:
            data["before"] = before
        reply = await self._call("chat:history", data)
        return [ChatMessage.model_validate(m) for m in reply["messages"]]

    async def start_typing(self, room_id: str) -> None:
        """Tell the room the user is typing."""
        await self._call("typing:start", {"roomId": room_id})

    async def stop_typing(self, room_id: str) -> None:
        """Tell the room the user stopped typing."""
        await self._call("typing:stop", {"roomId": room_id})

    async def send_notification(self, target_user_id: str, type: str, content: Any) -> str:
        """Notify ``target_user_id``; returns the notification id."""
        data = {"targetUserId": target_user_id, "type": type, "content": content}
        return str((await self._call("notification:send", data))["notificationId"])

    async def game_move(self, room_id: str, move: Any) -> None:
        """Send a game ``move`` to the others in ``room_id``."""
        await self._call("game:move", {"roomId": room_id, "move": move})

    async def start_upload(self, room_id: str, file_name: str, file_size: int) -> str:
        """Announce an upload to ``room_id``; returns the upload id."""
        data = {"roomId": room_id, "fileName": file_name, "fileSize": file_size}
        return str((await self._call("file:upload:start", data))["uploadId"])

    async def upload(self, room_id: str, file_name: str, data: bytes) -> str:
        """Announce and send a file (as ``PUT /api/uploads/{id}`` would); returns its URL.

        The URL is the uploader's signed download link, as the server's ack carries it.
        """
        upload_id = await self.start_upload(room_id, file_name, len(data))
        chat = self.client.chat
        outcome = await chat.receive_upload(self.identity, upload_id, _chunks(data), size=len(data))
        self.client._send(outcome.emits)
        return str(outcome.ack["url"])

    async def download(self, upload_id: str) -> bytes:
        """The bytes of a completed upload (``GET /api/uploads/{id}``), for room members."""
        _, body = await self.client.chat.download(self.identity, upload_id)
        return b"".join([chunk async for chunk in body])

    async def disconnect(self) -> None:
        """Go away, as a closed tab does: the others hear of it."""
        await self.client._disconnect(self)


class ChatTestClient:
    """Drives the chat server's logic without sockets and records what it would send.

    Every connection made with :meth:`connect` gets, in its ``received`` list, exactly the
    events the [`RealtimeServer`][rtkit.realtime.RealtimeServer] would send it:
    the same [`ChatService`][rtkit.realtime.ChatService] decides, and the
    Socket.IO rooms (``room:<id>``, ``user:<id>``, each sid) are followed the
    way python-socketio follows them. :attr:`emits` lists every emit in order.

    By default the chat runs on private memory stores and a
    [`ManualClock`][rtkit.ManualClock] (:attr:`clock`: advance it to get past a
    rate limit without sleeping). ``url`` puts the stores elsewhere:
    ``memory://NAME`` to share them with other components of the test,
    ``redis://...`` (with a ``prefix``) to run the same checks on Redis.

    Example:
        ```python
        async with ChatTestClient() as chat:
            ada = await chat.connect("42", "Ada")
            bob = await chat.connect("43", "Bob")
            await ada.join_room("lobby")
            await bob.join_room("lobby")
            await ada.send_message("lobby", "hi")
            message = await bob.wait_for("chat:message")
            assert message["username"] == "Ada"
        ```

    Attributes:
        chat: The [`ChatService`][rtkit.realtime.ChatService] driven.
        clock: Its clock.
        emits: Every [`Emit`][rtkit.realtime.Emit] the server would have sent, in order.
        connections: The connections still connected, by sid.

    Args:
        chat: A chat service of your own to drive (it is not closed); by
            default one is made on ``url``.
        url: Where the stores live (``memory://`` by default).
        prefix: Their key prefix (Redis, memory names).
        clock: Where time comes from (default: a new ``ManualClock``).
        limits: The chat's bounds and rates (default: ``ChatLimits()``).
    """

    __test__ = False  # not a test class, whatever its name says

    def __init__(
        self,
        chat: ChatService | None = None,
        *,
        url: str = "memory://",
        prefix: str | None = None,
        clock: Clock | None = None,
        limits: ChatLimits | None = None,
    ) -> None:
        self.clock: Clock = clock or (chat.clock if chat is not None else ManualClock())
        self.connections: dict[str, ChatTestConnection] = {}
        self.emits: list[Emit] = []
        self._parts: list[Any] = []
        self._count = 0
        self.chat = chat if chat is not None else self._make(url, prefix, limits)

    def _make(self, url: str, prefix: str | None, limits: ChatLimits | None) -> ChatService:
        shared: dict[str, Any] = {"prefix": prefix}
        presence = PresenceStore.from_url(url, **shared, clock=self.clock)
        rooms = RoomManager.from_url(
            url, **shared, instance_id=presence.instance_id, clock=self.clock
        )
        self._parts = [
            rooms,
            presence,
            limiter := RateLimiter.from_url(url, **shared, clock=self.clock),
            messages := MessageStore.from_url(url, **shared),
            notifications := NotificationStore.from_url(url, **shared),
            uploads := UploadRegistry.from_url(url, **shared),
        ]
        return ChatService(
            presence=presence,
            rooms=rooms,
            messages=messages,
            notifications=notifications,
            uploads=uploads,
            files=_MemoryFiles(),
            limiter=limiter,
            limits=limits,
            clock=self.clock,
            joined=self._joined,
        )

    def _joined(self, sid: str, room_id: str) -> bool:
        connection = self.connections.get(sid)
        return connection is not None and f"room:{room_id}" in connection.rooms

    # ------------------------------------------------------------ life cycle

    async def close(self) -> None:
        """Disconnect everyone, then close the stores this client made."""
        for connection in list(self.connections.values()):
            await self._disconnect(connection)
        for part in self._parts:
            await part.close()
        self._parts = []

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ------------------------------------------------------------ connections

    async def connect(
        self, user_id: str, username: str | None = None, *, sid: str | None = None
    ) -> ChatTestConnection:
        """Connect ``user_id`` (an authenticated handshake) and return the connection.

        It receives ``users:online`` and its pending notifications, the others
        ``user:joined`` on the user's first connection, as on the server.
        """
        self._count += 1
        identity = Identity(user_id, username or user_id)
        connection = ChatTestConnection(self, identity, sid or f"sid-{self._count}")
        outcome = await self.chat.connect(identity, connection.sid)
        self.connections[connection.sid] = connection
        self._apply(connection, outcome)
        self._send(await self.chat.welcome(identity, connection.sid))
        return connection

    async def _disconnect(self, connection: ChatTestConnection) -> None:
        if self.connections.pop(connection.sid, None) is None:
            return
        connection.connected = False
        self._send(await self.chat.disconnect(connection.identity, connection.sid))

    async def _handle(
        self, connection: ChatTestConnection, event: str, data: Any
    ) -> dict[str, Any]:
        handle = _EVENTS.get(event)
        if handle is None:
            raise ValueError(f"the chat server handles no {event!r} event: {sorted(_EVENTS)}")
        if not connection.connected:
            raise RuntimeError(f"{connection.sid} is disconnected")
        try:
            outcome = await handle(self.chat, connection.identity, connection.sid, data)
        except RtkitError as exc:
            return socket_error(exc)
        self._apply(connection, outcome)
        return {"ok": True, **outcome.ack}

    def _apply(self, connection: ChatTestConnection, outcome: Outcome) -> None:
        connection.rooms.difference_update(outcome.leave)
        connection.rooms.update(outcome.enter)
        self._send(outcome.emits)

    def _send(self, emits: list[Emit]) -> None:
        for emit in emits:
            self.emits.append(emit)
            for connection in list(self.connections.values()):
                if connection.sid == emit.skip_sid:
                    continue
                if emit.to is None or emit.to in connection.rooms:
                    connection._deliver(emit.event, emit.data)
