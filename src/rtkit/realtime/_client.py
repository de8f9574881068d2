"""``ChatClient``: the chat's client in Python, on python-socketio's ``AsyncClient``.

```python
async with ChatClient() as client:
    client.on_chat_message(lambda m: print(m.username, m.message))
    await client.connect("http://127.0.0.1:8000", token)
    await client.join_room("lobby")
    message_id = await client.send_message("lobby", "Hello World!")
```

Every request waits for the server's ack and raises the error class the server
sent (for example [`NotMember`][rtkit.errors.NotMember], or
[`RateLimited`][rtkit.errors.RateLimited] with ``retry_after``). Callbacks
receive the pydantic wire models ([`ChatMessage`][rtkit.realtime.ChatMessage] ...).
After a reconnection the client joins its rooms again, unless the server
recovered its session (connection state recovery, ``max_disconnection_duration``
on the server): then ``recovered`` is true, the rooms are the server's and
the events missed meanwhile arrive first.

The token may be a *token provider*: a function (sync or async) returning a
token, called on every connection. When the server ends the session because
the token expired (an ``error`` event with code ``token_expired``), a client
with a provider connects again at once with a fresh token and rejoins its rooms.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias, TypeVar

import httpx
import pydantic
import socketio

from .._core.lifecycle import DEFAULT_TIMEOUT, AsyncResource
from ..errors import (
    AuthError,
    BackendUnavailable,
    RateLimited,
    RemoteError,
    RtkitError,
    TokenExpired,
    error_from_payload,
)
from ..telemetry._socketio import ClientHooks, instrument_chat_client
from ._protocol import (
    ChatMessage,
    ErrorInfo,
    FileUploadComplete,
    FileUploadReady,
    FileUploadStart,
    GameMove,
    MessageSent,
    Notification,
    OnlineUserInfo,
    RoomJoined,
    RoomUserEvent,
    TypingEvent,
    UserPresence,
)
from ._socketio_compat import RecoveringClient

__all__ = ["ChatClient", "TokenProvider"]

log = logging.getLogger("rtkit.realtime.client")

T = TypeVar("T")
Callback = Callable[[T], Awaitable[None] | None]

TokenProvider: TypeAlias = Callable[[], str | Awaitable[str]]
"""A function (sync or async) that returns a fresh token, called on every connection."""

_RENEW_ATTEMPTS = 10

_EVENT_MODELS: dict[str, Any] = {
    "user:joined": UserPresence,
    "user:left": UserPresence,
    "users:online": pydantic.TypeAdapter(list[OnlineUserInfo]),
    "room:joined": RoomJoined,
    "room:user:joined": RoomUserEvent,
    "room:user:left": RoomUserEvent,
    "chat:message": ChatMessage,
    "chat:message:sent": MessageSent,
    "typing:start": TypingEvent,
    "typing:stop": TypingEvent,
    "notification:received": Notification,
    "file:upload:start": FileUploadStart,
    "file:upload:ready": FileUploadReady,
    "file:upload:complete": FileUploadComplete,
    "game:move": GameMove,
    "error": ErrorInfo,
}


class ChatClient(AsyncResource):
    """A chat client: the browser client's methods, typed callbacks and automatic room rejoin.

    :meth:`close` (or leaving ``async with``) disconnects for good: afterwards
    every operation raises [`Closed`][rtkit.errors.Closed].
    :meth:`disconnect` only ends the current connection.

    Args:
        timeout: seconds to wait for the connection and for each ack.
        reconnection: reconnect automatically after a lost connection.
        **client_options: passed to ``socketio.AsyncClient``.
    """

    def __init__(
        self, *, timeout: float = DEFAULT_TIMEOUT, reconnection: bool = True, **client_options: Any
    ) -> None:
        self.timeout = timeout
        self.sio = RecoveringClient(reconnection=reconnection, **client_options)
        self.url: str | None = None
        self.rooms: set[str] = set()
        self.current_room: str | None = None
        self._token: str | TokenProvider | None = None
        self._last_token: str | None = None
        self._transports: list[str] = ["websocket"]
        self._typing: set[str] = set()
        self._callbacks: dict[str, list[Callable[[Any], Any]]] = {}
        self._connected_once = False
        self._connect_error: Any = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._telemetry: ClientHooks | None = None
        for event in _EVENT_MODELS:
            self.sio.on(event, self._dispatcher(event))
        self.sio.on("connect", self._on_connect)
        self.sio.on("disconnect", self._on_disconnect)
        self.sio.on("connect_error", self._on_connect_error)
        self.on("error", self._on_error)

    # ------------------------------------------------------------ connection

    @property
    def connected(self) -> bool:
        """Whether the client is connected now."""
        return bool(self.sio.connected)

    @property
    def recovered(self) -> bool:
        """Whether the current connection recovered the session of the previous one."""
        return bool(self.sio.recovered)

    @property
    def sid(self) -> str | None:
        """The Socket.IO session id of the current connection."""
        sid: str | None = self.sio.get_sid()
        return sid

    async def connect(
        self, url: str, token: str | TokenProvider, *, transports: list[str] | None = None
    ) -> None:
        """Connect to the server at ``url`` with ``token`` (sent as the handshake ``auth.token``).

        ``token`` is a token, or a function (sync or async) returning one: it is
        called on this and every later connection (reconnections, and the new
        session after the server ended one whose token expired).

        Raises:
            rtkit.errors.AuthError: The server refused the token
                ([`TokenExpired`][rtkit.errors.TokenExpired] when it expired).
            rtkit.errors.BackendUnavailable: The server could not be reached
                within ``timeout``.
            rtkit.errors.Closed: The client was closed.
        """
        await self._ready()
        self.url = url.rstrip("/")
        self._token = token
        self._transports = transports or ["websocket"]
        await self._open()

    async def _open(self) -> None:
        assert self.url is not None
        self._connect_error = None
        try:
            await self.sio.connect(
                self.url,
                auth=self._auth,
                transports=self._transports,
                wait_timeout=self.timeout,
            )
        except socketio.exceptions.ConnectionError as exc:
            await self.sio.eio.disconnect(abort=True)  # closes the HTTP session
            if self._connect_error is not None:
                raise error_from_payload(self._connect_error) from None
            raise BackendUnavailable(f"could not connect to {self.url}: {exc}") from exc

    async def _auth(self) -> dict[str, str]:
        """The handshake's ``auth``, asked for on every (re)connection."""
        auth: dict[str, str] = self.sio.resume_auth({"token": await self._fresh_token()})
        return auth

    async def _fresh_token(self) -> str:
        token = self._token
        if token is None:
            raise AuthError("no token: connect first")
        if callable(token):
            given = token()
            token = await given if inspect.isawaitable(given) else given
        if not isinstance(token, str):
            raise AuthError(f"the token provider returned {type(token).__name__}, not a str")
        self._last_token = token
        return token

    async def _on_error(self, error: ErrorInfo) -> None:
        if error.code == TokenExpired.code and callable(self._token) and not self.closed:
            self._spawn(self._renew())  # the server disconnects next

    async def _renew(self) -> None:
        """Connect again with a fresh token once the server ended an expired session."""
        async with asyncio.timeout(self.timeout):
            while self.sio.connected or self.sio.eio.state != "disconnected":  # noqa: ASYNC110 (python-socketio sets no event)
                await asyncio.sleep(0.01)
        delay = 0.1
        for _ in range(_RENEW_ATTEMPTS):
            if self.closed:
                return
            try:
                await self._open()
                return
            except AuthError as exc:
                log.warning("could not connect again with a fresh token: %s", exc)
                return
            except BackendUnavailable as exc:
                log.info("connecting again with a fresh token failed (%s); retrying", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def disconnect(self) -> None:
        """End the connection (no reconnection follows; :meth:`connect` may connect again)."""
        await self._ready()
        self._cancel_tasks()
        await self.sio.disconnect()

    async def _start(self) -> None:
        self._telemetry = instrument_chat_client()  # tracing on: requests carry their context

    async def _close(self) -> None:
        """Disconnect, and stop reconnecting, for good."""
        self._cancel_tasks()
        await self.sio.shutdown()

    def _cancel_tasks(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    async def wait(self) -> None:
        """Wait until the connection ends for good."""
        await self._ready()
        await self.sio.wait()

    async def _on_connect(self) -> None:
        if self._connected_once and self.rooms and not self.recovered:
            self._spawn(self._rejoin())
        self._connected_once = True
        await self._fire("connect", None)

    async def _rejoin(self) -> None:
        for room_id in sorted(self.rooms):
            for _ in range(_RENEW_ATTEMPTS):
                try:
                    await self.join_room(room_id)
                    break
                except RateLimited as exc:  # many rooms: wait as the server says
                    await asyncio.sleep(max(exc.retry_after, 0.05))
                except RtkitError as exc:
                    log.warning("could not rejoin room %r: %s", room_id, exc)
                    break

    async def _on_disconnect(self, reason: Any = None) -> None:
        self._typing.clear()
        await self._fire("disconnect", reason)

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _on_connect_error(self, data: Any = None) -> None:
        if isinstance(data, dict):
            extra = data.get("data")
            code = extra.get("code") if isinstance(extra, dict) else None
            message = data.get("message")
            self._connect_error = {"code": code or AuthError.code, "message": message}
        else:
            self._connect_error = {"code": AuthError.code, "message": str(data)}
        await self._fire("connect_error", self._connect_error)

    # ------------------------------------------------------------ requests

    async def _call(self, event: str, data: Any) -> dict[str, Any]:
        await self._ready()
        try:
            if self._telemetry is None:
                reply = await self.sio.call(event, data, timeout=self.timeout)
            else:
                reply = await self._telemetry.call(self.sio, event, data, self.timeout)
        except socketio.exceptions.TimeoutError as exc:
            raise BackendUnavailable(f"no answer to {event} within {self.timeout} s") from exc
        except socketio.exceptions.BadNamespaceError as exc:
            raise BackendUnavailable(f"not connected: {exc}") from exc
        if not isinstance(reply, dict):
            raise RemoteError(f"unexpected answer to {event}: {reply!r:.200}")
        if not reply.get("ok"):
            raise error_from_payload(reply.get("error"))
        return reply

    async def join_room(self, room_id: str) -> RoomJoined:
        """Join ``room_id``; returns the room's user ids. The client rejoins after reconnecting."""
        reply = await self._call("room:join", room_id)
        self.rooms.add(room_id)
        self.current_room = room_id
        return RoomJoined.model_validate(reply)

    async def leave_room(self, room_id: str) -> None:
        """Leave ``room_id``."""
        await self._call("room:leave", room_id)
        self.rooms.discard(room_id)
        self._typing.discard(room_id)
        if self.current_room == room_id:
            self.current_room = None

    async def send_message(self, room_id: str, message: str, type: str = "text") -> str:
        """Post ``message`` to ``room_id``; returns the message id."""
        reply = await self._call(
            "chat:message", {"roomId": room_id, "message": message, "type": type}
        )
        return str(reply["messageId"])

    async def history(
        self, room_id: str, *, before: str | None = None, limit: int = 50
    ) -> list[ChatMessage]:
        """The latest ``limit`` messages of ``room_id`` (older than message id ``before``)."""
        payload: dict[str, Any] = {"roomId": room_id, "limit": limit}
        if before is not None:
            payload["before"] = before
        reply = await self._call("chat:history", payload)
        return [ChatMessage.model_validate(m) for m in reply["messages"]]

    async def start_typing(self, room_id: str) -> None:
        """Tell the room the user is typing (sent once until :meth:`stop_typing`)."""
        await self._ready()
        if room_id not in self._typing:
            self._typing.add(room_id)
            await self._call("typing:start", {"roomId": room_id})

    async def stop_typing(self, room_id: str) -> None:
        """Tell the room the user stopped typing (only if :meth:`start_typing` was sent)."""
        await self._ready()
        if room_id in self._typing:
            self._typing.discard(room_id)
            await self._call("typing:stop", {"roomId": room_id})

    async def send_notification(self, target_user_id: str, type: str, content: Any) -> str:
        """Notify ``target_user_id`` on every connection (or on its next); returns the id."""
        reply = await self._call(
            "notification:send",
            {"targetUserId": target_user_id, "type": type, "content": content},
        )
        return str(reply["notificationId"])

    async def game_move(self, room_id: str, move: Any) -> None:
        """Send a game ``move`` (any JSON) to the others in ``room_id``."""
        await self._call("game:move", {"roomId": room_id, "move": move})

    async def start_upload(self, room_id: str, file_name: str, file_size: int) -> str:
        """Announce an upload to ``room_id``; returns the upload id to ``PUT`` the bytes to."""
        reply = await self._call(
            "file:upload:start", {"roomId": room_id, "fileName": file_name, "fileSize": file_size}
        )
        return str(reply["uploadId"])

    async def upload(self, room_id: str, file_name: str, data: bytes) -> str:
        """Announce and send a file to ``room_id``; returns a download link for this user.

        The link is relative to the server and works for a while without any
        other credential (:meth:`download_url` makes a new one).
        """
        upload_id = await self.start_upload(room_id, file_name, len(data))
        if self.url is None or self._token is None:
            raise BackendUnavailable("not connected")
        token = self._last_token or await self._fresh_token()
        async with httpx.AsyncClient(timeout=self.timeout) as http:
            response = await http.put(
                f"{self.url}/api/uploads/{upload_id}",
                content=data,
                headers={"Authorization": f"Bearer {token}"},
            )
        if response.status_code != 201:
            raise error_from_payload(_error_of(response))
        return str(response.json()["url"])

    async def download_url(self, upload_id: str) -> str:
        """A fresh download link (relative to the server) to a complete upload of one of
        this user's rooms."""
        reply = await self._call("file:download", {"uploadId": upload_id})
        return str(reply["url"])

    async def download(self, url_or_upload_id: str) -> bytes:
        """The bytes of an upload, from a download link or by its upload id."""
        url = url_or_upload_id
        if not url.startswith("/") and "://" not in url:
            url = await self.download_url(url)
        if self.url is None:
            raise BackendUnavailable("not connected")
        async with httpx.AsyncClient(base_url=self.url, timeout=self.timeout) as http:
            response = await http.get(url)
        if response.status_code != 200:
            raise error_from_payload(_error_of(response))
        return response.content

    # ------------------------------------------------------------ callbacks

    def on(self, event: str, callback: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """Call ``callback`` (sync or async) with each ``event``'s payload as a model."""
        self._check_open()
        self._callbacks.setdefault(event, []).append(callback)
        return callback

    def _dispatcher(self, event: str) -> Callable[[Any], Awaitable[None]]:
        model = _EVENT_MODELS[event]

        async def dispatch(data: Any = None, *offset: Any) -> None:
            try:
                if isinstance(model, pydantic.TypeAdapter):
                    value = model.validate_python(data)
                else:
                    value = model.model_validate(data)
            except pydantic.ValidationError:
                log.warning("ignored a malformed %s event: %r", event, data)
                return
            await self._fire(event, value)

        return dispatch

    async def _fire(self, event: str, value: Any) -> None:
        for callback in self._callbacks.get(event, ()):
            try:
                result = callback(value)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("a %s callback failed", event)

    def on_connect(self, callback: Callback[None]) -> Callback[None]:
        """``callback(None)`` after every (re)connection."""
        return self.on("connect", callback)

    def on_disconnect(self, callback: Callback[Any]) -> Callback[Any]:
        """``callback(reason)`` when the connection is lost."""
        return self.on("disconnect", callback)

    def on_user_joined(self, callback: Callback[UserPresence]) -> Callback[UserPresence]:
        """``user:joined``: a user came online."""
        return self.on("user:joined", callback)

    def on_user_left(self, callback: Callback[UserPresence]) -> Callback[UserPresence]:
        """``user:left``: a user went offline."""
        return self.on("user:left", callback)

    def on_online_users(
        self, callback: Callback[list[OnlineUserInfo]]
    ) -> Callback[list[OnlineUserInfo]]:
        """``users:online``: who is online, right after connecting."""
        return self.on("users:online", callback)

    def on_room_joined(self, callback: Callback[RoomJoined]) -> Callback[RoomJoined]:
        """``room:joined``: this client joined a room."""
        return self.on("room:joined", callback)

    def on_room_user_joined(self, callback: Callback[RoomUserEvent]) -> Callback[RoomUserEvent]:
        """``room:user:joined``: someone joined one of this client's rooms."""
        return self.on("room:user:joined", callback)

    def on_room_user_left(self, callback: Callback[RoomUserEvent]) -> Callback[RoomUserEvent]:
        """``room:user:left``: someone left one of this client's rooms."""
        return self.on("room:user:left", callback)

    def on_chat_message(self, callback: Callback[ChatMessage]) -> Callback[ChatMessage]:
        """``chat:message``: a message in one of this client's rooms (its own included)."""
        return self.on("chat:message", callback)

    def on_message_sent(self, callback: Callback[MessageSent]) -> Callback[MessageSent]:
        """``chat:message:sent``: the server kept a message this client sent."""
        return self.on("chat:message:sent", callback)

    def on_typing_start(self, callback: Callback[TypingEvent]) -> Callback[TypingEvent]:
        """``typing:start``: someone else started typing."""
        return self.on("typing:start", callback)

    def on_typing_stop(self, callback: Callback[TypingEvent]) -> Callback[TypingEvent]:
        """``typing:stop``: someone else stopped typing."""
        return self.on("typing:stop", callback)

    def on_notification(self, callback: Callback[Notification]) -> Callback[Notification]:
        """``notification:received``."""
        return self.on("notification:received", callback)

    def on_file_upload_start(
        self, callback: Callback[FileUploadStart]
    ) -> Callback[FileUploadStart]:
        """``file:upload:start``: someone else announced an upload."""
        return self.on("file:upload:start", callback)

    def on_file_upload_ready(
        self, callback: Callback[FileUploadReady]
    ) -> Callback[FileUploadReady]:
        """``file:upload:ready``: this client may now send its upload."""
        return self.on("file:upload:ready", callback)

    def on_file_upload_complete(
        self, callback: Callback[FileUploadComplete]
    ) -> Callback[FileUploadComplete]:
        """``file:upload:complete``: a file is ready for download by the room's members."""
        return self.on("file:upload:complete", callback)

    def on_game_move(self, callback: Callback[GameMove]) -> Callback[GameMove]:
        """``game:move``: someone else moved."""
        return self.on("game:move", callback)

    def on_error(self, callback: Callback[ErrorInfo]) -> Callback[ErrorInfo]:
        """``error``: the server refused an event sent without waiting for an ack."""
        return self.on("error", callback)


def _error_of(response: httpx.Response) -> Any:
    """The ``error`` of a JSON error response (anything else: ``None``, a ``RemoteError``)."""
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("error") if isinstance(body, dict) else None
