"""The Socket.IO chat server: python-socketio's ``AsyncServer`` wired to the chat logic.

The wiring is thin on purpose: authenticate the handshake, hand every event to
the chat logic, carry out the [`Outcome`][rtkit.realtime.Outcome], turn errors
into an error ack (when the client asked for one) or an ``error`` event. The HTTP
side (Starlette) serves the chat page, the seed's ``/api/online-users`` and
``/api/rooms``, ``/health``, uploads, and in demo mode a login endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import html
import logging
import re
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import redis.asyncio as aioredis
import socketio
from socketio.exceptions import ConnectionRefusedError as SocketRefused
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .._backends import DEFAULT_PREFIX, backend_kind, check_prefix, make_redis_client
from .._clock import Clock
from .._leases import Janitor
from .._lifecycle import AsyncResource
from .._validation import check_id
from ..errors import (
    AuthError,
    BackendUnavailable,
    ConfigurationError,
    NotFound,
    PayloadTooLarge,
    RtkitError,
    ValidationError,
)
from ..presence import PresenceStore
from ..ratelimit import RateLimiter
from ..rooms import RoomManager
from .auth import Identity, JWTVerifier, TokenVerifier, issue_token
from .chat import ChatLimits, ChatService, Emit, Outcome, room_channel
from .messages import (
    MessageStore,
    NotificationStore,
    message_store_from_url,
    notification_store_from_url,
)
from .models import ErrorInfo, RoomUserEvent, UserPresence, iso_time, wire
from .uploads import FileStore, LocalFileStore, UploadRegistry, upload_registry_from_url

__all__ = ["DEFAULT_CLIENT_JS_URL", "RealtimeServer"]

DEFAULT_CLIENT_JS_URL = "https://cdn.socket.io/4.8.1/socket.io.min.js"
STATIC_DIR = Path(__file__).parent / "static"

log = logging.getLogger("rtkit.realtime")

_ACK_WANTED: contextvars.ContextVar[bool] = contextvars.ContextVar("rtkit_ack", default=False)
_MAX_LIST = 1000  # also the largest page the presence and room stores serve
_DEMO_NAME = re.compile(r"^[^\x00-\x1f\x7f]{1,64}$")


class _AckAwareServer(socketio.AsyncServer):  # type: ignore[misc]
    """An ``AsyncServer`` whose handlers can tell whether the client asked for an ack."""

    async def _handle_event_internal(
        self, server: Any, sid: str, eio_sid: str, data: Any, namespace: str, id: Any
    ) -> None:
        token = _ACK_WANTED.set(id is not None)
        try:
            await super()._handle_event_internal(server, sid, eio_sid, data, namespace, id)
        finally:
            _ACK_WANTED.reset(token)


def _error_payload(exc: RtkitError) -> dict[str, Any]:
    payload = wire(ErrorInfo(code=exc.code, message=exc.message))
    del payload["event"]
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        payload["retryAfter"] = retry_after
    return payload


def _http_status(exc: RtkitError) -> int:
    if isinstance(exc, PayloadTooLarge):
        return 413
    if exc.code == "conflict":
        return 409
    if isinstance(exc, ValidationError):
        return 400
    if isinstance(exc, AuthError):
        return 403 if exc.code in {"forbidden", "not_member"} else 401
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, BackendUnavailable):
        return 503
    if exc.code == "rate_limited":
        return 429
    return 500


def _error_response(exc: RtkitError) -> JSONResponse:
    return JSONResponse({"error": _error_payload(exc)}, status_code=_http_status(exc))


def _slug(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40]
    return slug or secrets.token_hex(4)


Handler = Callable[[Identity, str, Any], Awaitable[Outcome]]


class _CrashAnnouncer:
    """The PresenceStore's event sink: says ``user:left`` for users of crashed instances.

    A user's connections on a crashed instance are purged by whichever live
    instance notices the expired lease first; that instance tells everybody.
    Departures through this instance's own disconnects are announced by the chat.
    """

    def __init__(self) -> None:
        self.server: RealtimeServer | None = None

    async def publish(self, name: str, data: dict[str, Any], /) -> object:
        server = self.server
        if server is None or name != "presence.offline":
            return None
        if data.get("instance_id") == server.presence.instance_id:
            return None
        user_id = str(data["user_id"])
        event = UserPresence(
            user_id=user_id,
            username=str(data.get("username") or user_id),
            time=iso_time(float(data["time"])),
        )
        await server.sio.emit("user:left", wire(event))
        return None


class RealtimeServer(AsyncResource):
    """The seed's Socket.IO chat server, secure, typed and multi-instance.

    Build it with [`from_url`][rtkit.realtime.RealtimeServer.from_url] (one URL
    for every store) or give each part. It is an ASGI application (also
    available as ``asgi_app``): run it with uvicorn, or mount it. Socket.IO is
    served at ``/socket.io/``.

    Args:
        presence: the `rtkit.PresenceStore`.
        rooms: the `rtkit.RoomManager`.
        verifier: checks handshake and HTTP tokens; default: a
            [`JWTVerifier`][rtkit.realtime.JWTVerifier] on ``secret``.
        secret: the HS256 secret (needed for the default verifier and demo logins).
        messages: chat history (default: in memory).
        notifications: notifications for offline users (default: in memory).
        uploads: upload records (default: in memory).
        files: uploaded bytes (default: a temporary folder).
        limiter: the `rtkit.RateLimiter` of ``limits.message_rate``
            (default: an in-memory one).
        limits: sizes and rates.
        client_manager: python-socketio's manager; an ``AsyncRedisManager`` makes
            emits reach the clients of every instance.
        client_js_url: where the chat page loads the Socket.IO client from.
        demo: adds ``POST /api/demo/login`` that gives a token to anyone (never in production).
        cors_allowed_origins: passed to python-socketio (default: same origin only).
        clock: where timestamps come from.
        closing: extra ``close()`` coroutines run by :meth:`close` (what ``from_url`` made).
    """

    def __init__(
        self,
        *,
        presence: PresenceStore,
        rooms: RoomManager,
        verifier: TokenVerifier | None = None,
        secret: str | None = None,
        messages: MessageStore | None = None,
        notifications: NotificationStore | None = None,
        uploads: UploadRegistry | None = None,
        files: FileStore | None = None,
        limiter: RateLimiter | None = None,
        limits: ChatLimits | None = None,
        client_manager: socketio.AsyncManager | None = None,
        client_js_url: str = DEFAULT_CLIENT_JS_URL,
        demo: bool = False,
        cors_allowed_origins: str | list[str] | None = None,
        clock: Clock | None = None,
        closing: list[Callable[[], Awaitable[None]]] | None = None,
    ) -> None:
        if verifier is None:
            if secret is None:
                raise ConfigurationError("give a token verifier or a JWT secret")
            verifier = JWTVerifier(secret)
        if demo and secret is None:
            raise ConfigurationError("demo mode needs the JWT secret to issue tokens")
        if limiter is None:
            limiter = RateLimiter(clock=clock)
        self._tmpdir: str | None = None
        if files is None:
            self._tmpdir = tempfile.mkdtemp(prefix="rtkit-uploads-")
            files = LocalFileStore(self._tmpdir)
        self.presence = presence
        self.rooms = rooms
        self.limiter = limiter
        self.verifier = verifier
        self.chat = ChatService(
            presence=presence,
            rooms=rooms,
            messages=messages or message_store_from_url(),
            notifications=notifications or notification_store_from_url(),
            uploads=uploads or upload_registry_from_url(),
            files=files,
            limiter=limiter,
            limits=limits,
            clock=clock,
            joined=self._joined,
        )
        self._secret = secret
        self.demo = demo
        self.client_js_url = client_js_url
        self._closing = closing or []
        self._who: dict[str, Identity] = {}
        self._entered: dict[str, set[str]] = {}  # sid -> Socket.IO rooms it entered
        self._tasks: set[asyncio.Task[None]] = set()
        self._started = False
        self._room_janitor = Janitor(self._purge_rooms, rooms.ttl / 3, "realtime-rooms")
        kwargs: dict[str, Any] = {
            "async_mode": "asgi",
            "cors_allowed_origins": cors_allowed_origins,
        }
        if client_manager is not None:
            kwargs["client_manager"] = client_manager
        self.sio = _AckAwareServer(**kwargs)
        self.sio.on("connect", self._on_connect)
        self.sio.on("disconnect", self._on_disconnect)
        chat = self.chat
        events: dict[str, Handler] = {
            "room:join": chat.join_room,
            "room:leave": chat.leave_room,
            "chat:message": chat.send_message,
            "chat:history": chat.history,
            "typing:start": lambda w, s, d: chat.typing(w, s, d, started=True),
            "typing:stop": lambda w, s, d: chat.typing(w, s, d, started=False),
            "notification:send": chat.send_notification,
            "file:upload:start": chat.start_upload,
            "game:move": chat.game_move,
        }
        for event, handler in events.items():
            self.sio.on(event, self._handler(event, handler))
        if demo:
            log.warning(
                "!!! DEMO MODE: POST /api/demo/login gives a token to ANYONE for ANY name. "
                "Never expose this server to untrusted networks. !!!"
            )
        self.http = Starlette(routes=self._routes(), lifespan=self._lifespan)
        self.asgi_app = socketio.ASGIApp(self.sio, other_asgi_app=self.http)

    @classmethod
    def from_url(
        cls,
        url: str = "memory://",
        *,
        secret: str | None = None,
        verifier: TokenVerifier | None = None,
        prefix: str = DEFAULT_PREFIX,
        redis: aioredis.Redis | None = None,
        upload_dir: str | None = None,
        limits: ChatLimits | None = None,
        presence_ttl: float = 30.0,
        clock: Clock | None = None,
        **kwargs: Any,
    ) -> RealtimeServer:
        """A server whose every store lives on ``url`` (``memory://`` or ``redis://...``).

        On Redis one connection pool serves presence, rooms, history,
        notifications, uploads and the rate limit; python-socketio's
        ``AsyncRedisManager`` (channel ``<prefix>socketio``) carries emits between
        instances, so several processes on one Redis behave as one server. When
        an instance crashes, its users are purged from presence within
        ``2 * presence_ttl`` seconds and the instance that purges them sends
        ``user:left`` for those who went offline with it.
        Other keyword arguments go to the constructor.
        """
        kind = backend_kind(url, component="RealtimeServer")
        check_prefix(prefix)
        closing: list[Callable[[], Awaitable[None]]] = []
        client = redis
        if kind == "redis" and client is None:
            client = make_redis_client(url)
            closing.append(client.aclose)
        announcer = _CrashAnnouncer()
        presence = PresenceStore.from_url(
            url, prefix=prefix, redis=client, ttl=presence_ttl, clock=clock, bus=announcer
        )
        rooms = RoomManager.from_url(
            url,
            prefix=prefix,
            redis=client,
            instance_id=presence.instance_id,
            ttl=presence_ttl,
            clock=clock,
        )
        manager = None
        if kind == "redis":
            manager = socketio.AsyncRedisManager(url, channel=prefix + "socketio")
        files = LocalFileStore(upload_dir) if upload_dir is not None else None
        server = cls(
            presence=presence,
            rooms=rooms,
            verifier=verifier,
            secret=secret,
            messages=message_store_from_url(url, prefix=prefix, redis=client),
            notifications=notification_store_from_url(url, prefix=prefix, redis=client),
            uploads=upload_registry_from_url(url, prefix=prefix, redis=client),
            files=files,
            limiter=RateLimiter.from_url(url, prefix=prefix, redis=client, clock=clock),
            limits=limits,
            client_manager=manager,
            clock=clock,
            closing=closing,
            **kwargs,
        )
        announcer.server = server
        return server

    # ------------------------------------------------------------ lifecycle

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """The ASGI entry point (Socket.IO at ``/socket.io/``, HTTP routes otherwise)."""
        await self.asgi_app(scope, receive, send)

    async def start(self) -> None:
        """Start presence and room heartbeats and the cross-instance listener."""
        if self._started:
            return
        self._started = True
        await self.presence.start()
        # The room lease is renewed by this server's own janitor (instead of
        # ``rooms.start()``) so that the departures it purges can be announced.
        await self._purge_rooms()
        self._room_janitor.start()
        await self.limiter.start()
        if not self.sio.manager_initialized:
            self.sio.manager_initialized = True
            self.sio.manager.initialize()

    async def close(self) -> None:
        """Disconnect everyone, stop background work, close the stores and ``closing``."""
        if not self._started:
            if self._tmpdir is not None:
                shutil.rmtree(self._tmpdir, ignore_errors=True)
            return
        self._started = False
        for sid in list(self._who):
            with contextlib.suppress(Exception):
                await self.sio.disconnect(sid)
        for task in list(self._tasks):
            task.cancel()
        manager = self.sio.manager
        thread = getattr(manager, "thread", None)
        if thread is not None:
            thread.cancel()
            await asyncio.gather(thread, return_exceptions=True)
        redis_conn = getattr(manager, "redis", None)
        if redis_conn is not None:
            with contextlib.suppress(Exception):
                await redis_conn.aclose()
        await self.sio.shutdown()
        await self._room_janitor.stop()
        await self.rooms.close()
        await self.presence.close()
        await self.limiter.close()
        for store in (self.chat.messages, self.chat.notifications, self.chat.uploads):
            await store.close()
        for close in self._closing:
            await close()
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        await self.start()
        try:
            yield
        finally:
            await self.close()

    async def purge_expired(self) -> None:
        """Run one purge pass now, as the background janitors do every ``ttl / 3`` seconds.

        Renews this instance's presence and room leases and removes the
        connections of instances whose leases expired (crashed ones), sending
        ``user:left`` and ``room:user:left`` for the users who left with them.
        """
        await self.presence.purge_expired()
        await self._purge_rooms()

    async def _purge_rooms(self) -> None:
        """Renew the room lease, purge crashed instances, announce who left which room."""
        for gone in await self.rooms.purge_expired():
            if gone.left:
                event = RoomUserEvent(
                    user_id=gone.user_id, username=gone.user_id, room_id=gone.room_id
                )
                await self.sio.emit("room:user:left", wire(event), to=room_channel(gone.room_id))

    # ------------------------------------------------------------ Socket.IO

    async def _on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        token = auth.get("token") if isinstance(auth, dict) else None
        if not token:
            raise SocketRefused(
                "authentication token missing: pass it as auth.token", {"code": "unauthorized"}
            )
        try:
            who = await self.verifier.verify(token)
            outcome = await self.chat.connect(who, sid)
        except RtkitError as exc:
            raise SocketRefused(exc.message, {"code": exc.code}) from None
        self._who[sid] = who
        await self._apply(sid, outcome)
        task = asyncio.create_task(self._welcome(who, sid))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _welcome(self, who: Identity, sid: str) -> None:
        # The connect handler runs before the client is told it is connected:
        # wait for that, so the welcome arrives after the "connect" on the client.
        for _ in range(400):
            if self.sio.manager.is_connected(sid, "/"):
                break
            await asyncio.sleep(0.005)
        try:
            await self._send(await self.chat.welcome(who, sid))
        except Exception:
            log.exception("could not welcome %s", sid)

    async def _on_disconnect(self, sid: str, reason: Any = None) -> None:
        who = self._who.pop(sid, None)
        self._entered.pop(sid, None)
        if who is None:
            return
        try:
            await self._send(await self.chat.disconnect(who, sid))
        except Exception:
            log.exception("could not record the departure of %s", sid)

    def _handler(self, event: str, handle: Handler) -> Callable[..., Awaitable[Any]]:
        async def on_event(sid: str, *args: Any) -> Any:
            ack_wanted = _ACK_WANTED.get()
            who = self._who.get(sid)
            if who is None:
                return None
            try:
                outcome = await handle(who, sid, args[0] if args else None)
                await self._apply(sid, outcome)
            except RtkitError as exc:
                return await self._fail(sid, event, exc, ack_wanted)
            except Exception:
                log.exception("%s from %s failed", event, sid)
                error = RtkitError("the server failed to handle this event", code="internal_error")
                return await self._fail(sid, event, error, ack_wanted)
            return {"ok": True, **outcome.ack}

        return on_event

    async def _fail(
        self, sid: str, event: str, exc: RtkitError, ack_wanted: bool
    ) -> dict[str, Any] | None:
        payload = _error_payload(exc)
        if ack_wanted:
            return {"ok": False, "error": payload}
        await self.sio.emit("error", {**payload, "event": event}, to=sid)
        return None

    async def _apply(self, sid: str, outcome: Outcome) -> None:
        # (a late event of a connection that is already gone tracks nothing)
        entered = self._entered.setdefault(sid, set()) if sid in self._who else set()
        for room in outcome.leave:
            entered.discard(room)
            await self.sio.leave_room(sid, room)
        for room in outcome.enter:
            entered.add(room)
            await self.sio.enter_room(sid, room)
        await self._send(outcome.emits)

    def _joined(self, sid: str, room_id: str) -> bool:
        return room_channel(room_id) in self._entered.get(sid, ())

    async def _send(self, emits: list[Emit]) -> None:
        for emit in emits:
            # A connection of this instance is reached directly, not through Redis.
            local = emit.to is not None and emit.to in self._who
            await self.sio.emit(
                emit.event, emit.data, to=emit.to, skip_sid=emit.skip_sid, ignore_queue=local
            )

    # ------------------------------------------------------------ HTTP

    def _routes(self) -> list[Route | Mount]:
        return [
            Route("/", self._page, methods=["GET"]),
            Route("/health", self._health, methods=["GET"]),
            Route("/api/online-users", self._online_users, methods=["GET"]),
            Route("/api/rooms", self._rooms, methods=["GET"]),
            Route("/api/demo/login", self._demo_login, methods=["POST"]),
            Route("/api/uploads/{upload_id}", self._put_upload, methods=["PUT"]),
            Route("/api/uploads/{upload_id}", self._get_upload, methods=["GET"]),
            Mount("/static", StaticFiles(directory=STATIC_DIR, check_dir=False), name="static"),
        ]

    async def _page(self, request: Request) -> Response:
        try:
            page = (STATIC_DIR / "index.html").read_text("utf-8")
        except FileNotFoundError:
            return Response("the chat page is not installed", status_code=404)
        page = page.replace("__RTKIT_CLIENT_JS_URL__", html.escape(self.client_js_url, quote=True))
        page = page.replace("__RTKIT_DEMO__", "true" if self.demo else "false")
        return HTMLResponse(page)

    async def _health(self, request: Request) -> Response:
        try:
            count = await self.presence.count()
        except RtkitError as exc:
            return _error_response(exc)
        return JSONResponse(
            {"status": "ok", "users": count.users, "connections": count.connections}
        )

    @staticmethod
    def _paging(request: Request) -> tuple[str | None, int]:
        cursor = request.query_params.get("cursor") or None
        raw = request.query_params.get("limit", "100")
        if not raw.isdigit() or not 1 <= int(raw) <= _MAX_LIST:
            raise ValidationError(f"limit must be an integer from 1 to {_MAX_LIST}")
        if cursor is not None:
            check_id(cursor, "cursor")
        return cursor, int(raw)

    async def _online_users(self, request: Request) -> Response:
        try:
            cursor, limit = self._paging(request)
            page = await self.chat.online_users(cursor, limit)
            count = await self.presence.count()
        except RtkitError as exc:
            return _error_response(exc)
        return JSONResponse(
            {
                "count": count.users,
                "users": [wire(user) for user in page.items],
                "nextCursor": page.next_cursor,
            }
        )

    async def _rooms(self, request: Request) -> Response:
        try:
            cursor, limit = self._paging(request)
            page = await self.chat.room_list(cursor, limit)
            count = await self.rooms.count()
        except RtkitError as exc:
            return _error_response(exc)
        return JSONResponse(
            {
                "count": count,
                "rooms": [wire(room) for room in page.items],
                "nextCursor": page.next_cursor,
            }
        )

    async def _demo_login(self, request: Request) -> Response:
        if not self.demo or self._secret is None:
            return JSONResponse({"error": {"code": "not_found", "message": "Not Found"}}, 404)
        try:
            body = await request.json()
        except ValueError:
            body = None
        name = body.get("name") if isinstance(body, dict) else None
        if not isinstance(name, str) or not _DEMO_NAME.match(name.strip()):
            return _error_response(
                ValidationError("name must be 1-64 characters without control characters")
            )
        name = name.strip()
        user_id = "demo-" + _slug(name)
        token = issue_token(self._secret, user_id, name=name, ttl=12 * 3600)
        return JSONResponse({"token": token, "userId": user_id, "username": name})

    async def _identify(self, request: Request, *, query_token: bool) -> Identity:
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else ""
        if not token and query_token:
            token = request.query_params.get("token", "")
        if not token:
            raise AuthError("authentication token missing: send Authorization: Bearer <token>")
        return await self.verifier.verify(token)

    async def _put_upload(self, request: Request) -> Response:
        try:
            who = await self._identify(request, query_token=False)
            length = request.headers.get("content-length")
            if length is not None and not length.isdigit():
                raise ValidationError("bad Content-Length")
            emits = await self.chat.receive_upload(
                who,
                request.path_params["upload_id"],
                request.stream(),
                size=None if length is None else int(length),
            )
        except RtkitError as exc:
            return _error_response(exc)
        await self._send(emits)
        done = emits[0].data
        return JSONResponse({"ok": True, "uploadId": done["uploadId"], "url": done["url"]}, 201)

    async def _get_upload(self, request: Request) -> Response:
        try:
            who = await self._identify(request, query_token=True)
            record, chunks = await self.chat.download(who, request.path_params["upload_id"])
        except RtkitError as exc:
            return _error_response(exc)
        disposition = f"attachment; filename*=UTF-8''{quote(record.file_name, safe='')}"
        return StreamingResponse(
            chunks,
            media_type="application/octet-stream",
            headers={
                "Content-Disposition": disposition,
                "Content-Length": str(record.file_size),
                "X-Content-Type-Options": "nosniff",
                "Cache-Control": "private, no-store",
            },
        )
