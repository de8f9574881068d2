"""The Socket.IO chat server: python-socketio's ``AsyncServer`` wired to the chat logic.

The wiring is thin on purpose: authenticate the handshake, hand every event to
the chat logic, carry out the [`Outcome`][rtkit.realtime.Outcome], turn errors
into an error ack (when the client asked for one) or an ``error`` event. The
HTTP side is in ``_routes.py``; python-socketio's internals in
``_socketio_compat.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar, Protocol, Self, TypeVar

import redis.asyncio as aioredis
import socketio
from socketio.exceptions import ConnectionRefusedError as SocketRefused

from .._core.clock import Clock
from .._core.component import Component, split_options
from .._core.leases import DEFAULT_TTL
from .._core.lifecycle import DEFAULT_TIMEOUT, Janitor
from .._core.redis import make_redis_client
from .._core.urls import BackendTarget, keywords
from .._core.validate import check_seconds
from ..errors import AuthError, ConfigurationError, InternalError, RtkitError, TokenExpired
from ..http import lifespan
from ..presence import PresenceStore
from ..ratelimit import RateLimiter
from ..rooms import RoomManager
from ..telemetry._socketio import ServerHooks, instrument_socketio, observed
from ._auth import Identity, TokenVerifier, issue_token
from ._chat import AuthorizeJoin, ChatLimits, ChatService, Emit, Handler, Outcome, room_channel
from ._holds import Holds, choose_adapter, recovering_manager, server_manager
from ._page import ChatPage
from ._protocol import socket_error
from ._recovery import DEFAULT_MAX_PACKETS
from ._routes import ChatRoutes
from ._sessions import (
    STORE_OPTIONS,
    CrashAnnouncer,
    ExpiryWatch,
    choose_verifier,
    download_links,
    store_options,
)
from ._socketio_compat import (
    AckAwareServer,
    ack_wanted,
    after_ack,
    emit_all,
    initialize_manager,
    is_connected,
    recovered_from,
    stop_manager,
)
from .stores import (
    FileStore,
    LocalFileStore,
    MessageStore,
    NotificationStore,
    UploadRegistry,
)
from .stores._files import TemporaryFileStore

__all__ = ["DEFAULT_SWEEP_INTERVAL", "RealtimeServer"]

DEFAULT_SWEEP_INTERVAL = 60.0
"""Seconds between two runs of the upload janitor."""

_EXPIRY_CHECK = 1.0  # seconds between two looks for connections whose token expired

log = logging.getLogger("rtkit.realtime")

_P = TypeVar("_P", bound="_Part")

# What RealtimeServer.from_url opens itself (the rest of its options go to the constructor).
_PARTS = frozenset(
    {"presence", "rooms", "messages", "notifications", "uploads", "limiter", "client_manager"}
)
_FROM_URL_ONLY = frozenset({"timeout", "upload_dir", "adapter", "adapter_options"}) | STORE_OPTIONS


class _Part(Protocol):
    """A part the server may have made, and then closes."""

    async def close(self) -> None: ...


class RealtimeServer(Component):
    """rtkit's Socket.IO chat server (the chat protocol), secure, typed and multi-instance.

    ``RealtimeServer()`` runs on private memory stores;
    ``RealtimeServer.from_url(url, prefix=..., redis=..., clock=..., **options)``
    opens every store (presence, rooms, history, notifications, uploads, the rate
    limit) on one URL, sharing one Redis client (borrowed when ``redis=`` is
    given), and on Redis carries every emit to the other instances through the
    manager ``adapter`` names (``"socketio"``, ``"sharded"``, ``"node-redis"``; see
    ``rtkit.realtime.managers.make_manager``).
    ``from_url`` takes the constructor's options except the parts it opens, plus
    ``adapter`` and ``adapter_options``, ``upload_dir`` (a
    [`LocalFileStore`][rtkit.realtime.LocalFileStore] folder),
    ``timeout`` (of the Redis client it makes) and the stores' retention:
    ``max_per_room`` and ``max_age`` (history), ``max_per_user`` (notifications),
    ``pending_ttl``, ``complete_ttl`` and ``max_records`` (uploads).

    The server is an ASGI application (also ``asgi_app``): run it with uvicorn,
    or mount it. Socket.IO is served at ``/socket.io/``. It closes what it made
    (its own stores, its Redis client) and never what it was given.

    With neither ``secret`` nor ``verifier``, tokens are signed with a random
    secret of this process (a warning says so):
    [`issue_token`][rtkit.realtime.RealtimeServer.issue_token] makes them, for
    tests and demos. A connection ends when its token expires: the server
    sends an ``error`` event with code ``token_expired`` and disconnects it.

    Args:
        presence: the [`PresenceStore`][rtkit.PresenceStore] (default: a private one).
        rooms: the [`RoomManager`][rtkit.RoomManager] (default: a private one with
            the presence store's ``instance_id``).
        messages: chat history (default: a private memory store).
        notifications: notifications for offline users (default: private, in memory).
        uploads: upload records (default: private, in memory).
        files: uploaded bytes (default: a temporary folder, removed on close).
        limiter: the [`RateLimiter`][rtkit.RateLimiter] of the rates in ``limits``
            (default: a private one).
        verifier: checks handshake and HTTP tokens (default: a
            [`JWTVerifier`][rtkit.realtime.JWTVerifier] on ``secret``).
        secret: the HS256 secret of the default verifier and of demo logins; the
            key of download links is derived from it.
        limits: sizes, rates and quotas.
        client_manager: python-socketio's manager (one of ``rtkit.realtime.managers``
            makes emits reach every instance's clients). The server starts it,
            stops it on close, and closes its Redis client only when it made it.
        client_js_url: where the chat page loads the Socket.IO browser client
            from (default: the copy of ``socket.io-client`` built into rtkit,
            served by this server, so the page needs no internet).
        client_js_integrity: the Subresource Integrity value of the script at
            ``client_js_url`` (``"sha384-..."``): computed by rtkit for the
            pinned ``socket.io-client`` version on a CDN, required for any other
            script from another site (``"none"``: load it unchecked).
        demo: adds ``POST /api/demo/login`` that gives a token to anyone (never in production).
        cors_allowed_origins: passed to python-socketio (default: same origin only).
        presence_ttl: the instance lease, in seconds, of the presence and room
            stores the server makes: a crashed instance's users are gone within
            about twice this.
        authorize_join: ``authorize_join(identity, room_id) -> bool`` (or an
            awaitable of one), asked before every ``room:join``; a join it does
            not answer ``True`` is refused with ``forbidden``. Without it anyone
            may join any room.
        download_secret: the key of download links (at least 32 bytes; default:
            derived from ``secret``, else random: links then work only on this
            instance). Every instance must have the same one.
        sweep_interval: seconds between two runs of the upload janitor, which
            forgets expired uploads and deletes the files no upload record knows.
        max_disconnection_duration: seconds a client may take to come back after a
            lost connection and get its session (sid, rooms, missed events); 0: off.
        max_recovery_packets: events kept for recovery, at most.
        clock: where timestamps come from.
    """

    # The kinds of URL from_url takes; _from_target opens every part itself.
    _backends: ClassVar[Mapping[str, str]] = {"memory": "", "redis": ""}

    def __init__(
        self,
        *,
        presence: PresenceStore | None = None,
        rooms: RoomManager | None = None,
        messages: MessageStore | None = None,
        notifications: NotificationStore | None = None,
        uploads: UploadRegistry | None = None,
        files: FileStore | None = None,
        limiter: RateLimiter | None = None,
        verifier: TokenVerifier | None = None,
        secret: str | None = None,
        limits: ChatLimits | None = None,
        client_manager: socketio.AsyncManager | None = None,
        client_js_url: str | None = None,
        client_js_integrity: str | None = None,
        demo: bool = False,
        cors_allowed_origins: str | list[str] | None = None,
        presence_ttl: float = DEFAULT_TTL,
        authorize_join: AuthorizeJoin | None = None,
        download_secret: str | bytes | None = None,
        sweep_interval: float = DEFAULT_SWEEP_INTERVAL,
        max_disconnection_duration: float = 0.0,
        max_recovery_packets: int = DEFAULT_MAX_PACKETS,
        clock: Clock | None = None,
    ) -> None:
        # (first: a bad page setting is refused before anything is made)
        page = ChatPage(
            client_js_url=client_js_url, client_js_integrity=client_js_integrity, demo=demo
        )
        self._secret, self.verifier = choose_verifier(secret, verifier, demo)
        limits = limits or ChatLimits()
        links = download_links(download_secret, secret, limits.download_link_ttl, clock)
        self._owned: list[_Part] = []
        self._redis: aioredis.Redis | None = None
        self._announcer = CrashAnnouncer()
        if presence is None:
            presence = self._own(
                PresenceStore.from_url(
                    "memory://", ttl=presence_ttl, clock=clock, bus=self._announcer
                )
            )
        if rooms is None:
            rooms = self._own(
                RoomManager.from_url(
                    "memory://",
                    instance_id=presence.instance_id,
                    ttl=presence_ttl,
                    clock=clock,
                    bus=self._announcer,
                )
            )
        self._temp_files: TemporaryFileStore | None = None
        if files is None:
            files = self._temp_files = TemporaryFileStore()
        self.presence = presence
        self.rooms = rooms
        self.limiter = limiter or self._own(RateLimiter.from_url("memory://", clock=clock))
        self.chat = ChatService(
            presence=presence,
            rooms=rooms,
            messages=messages or self._own(MessageStore(clock=clock)),
            notifications=notifications or self._own(NotificationStore(clock=clock)),
            uploads=uploads or self._own(UploadRegistry(clock=clock)),
            files=files,
            limiter=self.limiter,
            limits=limits,
            clock=clock,
            links=links,
            joined=self._joined,
            authorize_join=authorize_join,
        )
        self.demo = demo
        self.client_js_url = page.client_js_url
        self._owns_manager = client_manager is None
        client_manager, self.recovery = recovering_manager(
            client_manager, max_disconnection_duration, max_recovery_packets, clock
        )
        self._holds = Holds(self.chat, self.recovery, self._send)  # and who comes and goes
        self._who: dict[str, Identity] = {}
        self._entered: dict[str, set[str]] = {}  # sid -> Socket.IO rooms it entered
        self._tasks: set[asyncio.Task[None]] = set()
        self._expiry = ExpiryWatch()
        self._sweeper = Janitor(
            self.chat.sweep_uploads,
            check_seconds(sweep_interval, "sweep_interval"),
            "rtkit-upload-janitor",
        )
        self._expirer = Janitor(self._every_second, _EXPIRY_CHECK, "rtkit-session-expiry")
        self._telemetry: ServerHooks | None = None
        self.sio = self._socketio(client_manager, cors_allowed_origins)
        routes = ChatRoutes(
            chat=self.chat,
            verifier=self.verifier,
            send=self._send,
            issue=self._demo_token if demo else None,
            page=page,
        )
        self.http = routes.app(lifespan(self))
        self.asgi_app = socketio.ASGIApp(self.sio, other_asgi_app=self.http)
        self._announcer.attach(self.presence.instance_id, self.sio.emit)

    def _own(self, part: _P) -> _P:
        self._owned.append(part)
        return part

    def _socketio(
        self, manager: socketio.AsyncManager | None, origins: str | list[str] | None
    ) -> AckAwareServer:
        kwargs: dict[str, Any] = {"async_mode": "asgi", "cors_allowed_origins": origins}
        if manager is not None:
            kwargs["client_manager"] = manager
        sio = AckAwareServer(**kwargs)
        sio.recovery_data = lambda sid: {"user": self._who[sid].user_id} if sid in self._who else {}
        sio.on("connect", self._on_connect)
        sio.on("disconnect", self._on_disconnect)
        for event, handler in self.chat.handlers().items():
            sio.on(event, self._handler(event, handler))
        sio.on("*", self._unknown)
        return sio

    @classmethod
    def _from_target(cls, target: BackendTarget, options: Mapping[str, Any]) -> Self:
        """Open every store on ``target`` (one Redis client for all) and build the server."""
        mine, own = split_options(
            cls.__name__, options, _FROM_URL_ONLY, keywords(cls.__init__) - _PARTS - {"clock"}
        )
        kept = store_options(mine)
        adapter = choose_adapter(target, mine, own)  # (before anything is made)
        if mine.get("upload_dir") is not None:
            if own.get("files") is not None:
                raise ConfigurationError("RealtimeServer.from_url: give upload_dir or files")
            own["files"] = LocalFileStore(mine["upload_dir"])
        made: aioredis.Redis | None = None
        if target.kind == "redis" and target.redis is None:
            made = make_redis_client(target.url, timeout=mine.get("timeout", DEFAULT_TIMEOUT))
        url, ttl, clock = target.url, own.get("presence_ttl", DEFAULT_TTL), target.clock
        shared: dict[str, Any] = {"prefix": target.prefix, "redis": made or target.redis}
        announcer = CrashAnnouncer()
        presence = PresenceStore.from_url(url, **shared, ttl=ttl, clock=clock, bus=announcer)
        rooms = RoomManager.from_url(
            url, **shared, instance_id=presence.instance_id, ttl=ttl, clock=clock, bus=announcer
        )
        manager = None
        if adapter is not None:
            manager = server_manager(adapter, target, shared["redis"], mine, own)
        server = cls(
            presence=presence,
            rooms=rooms,
            messages=MessageStore.from_url(url, **shared, clock=clock, **kept["messages"]),
            notifications=NotificationStore.from_url(
                url, **shared, clock=clock, **kept["notifications"]
            ),
            uploads=UploadRegistry.from_url(url, **shared, clock=clock, **kept["uploads"]),
            limiter=RateLimiter.from_url(url, **shared, clock=clock),
            client_manager=manager,
            clock=clock,
            **own,
        )
        server._adopt(made)
        if manager is not None and hasattr(manager, "socket_data"):
            manager.socket_data = server._socket_data  # what Node servers see (node-redis)
        server._announcer = announcer
        announcer.attach(presence.instance_id, server.sio.emit)
        return server

    def _adopt(self, redis: aioredis.Redis | None) -> None:
        """``from_url`` made every part: close them all (and ``redis``) on close."""
        chat = self.chat
        self._owned = [
            self.rooms,
            self.presence,
            self.limiter,
            chat.messages,
            chat.notifications,
            chat.uploads,
        ]
        self._redis = redis
        self._owns_manager = True

    # ------------------------------------------------------------ life cycle

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """The ASGI entry point (Socket.IO at ``/socket.io/``, HTTP routes otherwise)."""
        await self.asgi_app(scope, receive, send)

    async def _start(self) -> None:
        """Start presence and room heartbeats, the janitors and the cross-instance listener."""
        await self.presence.start()
        await self.rooms.start()
        await self.limiter.start()
        self._telemetry = instrument_socketio(self)
        initialize_manager(self.sio)
        self._sweeper.start()
        self._expirer.start()

    async def _close(self) -> None:
        """Disconnect everyone, stop background work, close what this server made."""
        await self._expirer.stop()
        await self._sweeper.stop()
        if self._started:
            for sid in list(self._who):
                with contextlib.suppress(Exception):
                    await self.sio.disconnect(sid)
            for task in list(self._tasks):
                task.cancel()
            await stop_manager(self.sio, close_redis=self._owns_manager)
            await self.sio.shutdown()
        try:
            if self._owns_manager and self.recovery is not None:
                await self.recovery.close()  # its connection (a Redis store's)
            for part in self._owned:
                await part.close()
            if self._redis is not None:
                await self._redis.aclose()
        finally:
            if self._temp_files is not None:
                self._temp_files.cleanup()

    def issue_token(self, user_id: str, *, name: str | None = None, ttl: float = 3600.0) -> str:
        """A token for ``user_id`` signed with this server's secret (tests, demos, tools).

        Raises:
            rtkit.errors.ConfigurationError: The server has a custom verifier and no secret.
            rtkit.errors.Closed: The server was closed.
        """
        self._check_open()
        if self._secret is None:
            raise ConfigurationError("this server verifies tokens without a secret to sign them")
        return issue_token(self._secret, user_id, name=name, ttl=ttl)

    def _demo_token(self, user_id: str, name: str) -> str:
        return self.issue_token(user_id, name=name, ttl=12 * 3600.0)

    async def purge_expired(self) -> None:
        """Run one purge pass now, as the background janitors do every ``ttl / 3`` seconds.

        Renews this instance's presence and room leases and removes the
        connections of instances whose leases expired (crashed ones), sending
        ``user:left`` and ``room:user:left`` for the users who left with them.

        Raises:
            rtkit.errors.Closed: The server was closed.
        """
        await self._ready()
        await self.presence.purge_expired()
        await self.rooms.purge_expired()  # the rooms' bus announces who left

    async def sweep_uploads(self) -> int:
        """Run the upload janitor now (it runs every ``sweep_interval`` seconds).

        Forgets expired uploads (their bytes leave the quotas) and deletes the
        files that no live upload record knows, including those a crashed
        instance left. Returns how many uploads' files it removed.

        Raises:
            rtkit.errors.Closed: The server was closed.
        """
        await self._ready()
        return await self.chat.sweep_uploads()

    async def expire_sessions(self) -> int:
        """End every connection whose token has expired now; return how many.

        Each gets an ``error`` event ``{code: "token_expired", message}`` and
        is disconnected. A background task does this every second; an event
        from such a connection ends it at once too.

        Raises:
            rtkit.errors.Closed: The server was closed.
        """
        await self._ready()
        due = self._expiry.due(self.chat.clock.time(), self._who)
        for sid in due:
            await self._end_session(sid)
        return len(due)

    async def _every_second(self) -> None:
        await self.expire_sessions()
        await self._holds.release_due()  # lost connections whose recovery time passed

    def recovered(self, sid: str) -> bool:
        """Whether connection ``sid`` recovered its session (connection state recovery)."""
        return recovered_from(self.sio, sid) is not None

    def _expired(self, who: Identity) -> bool:
        return who.expires_at is not None and who.expires_at <= self.chat.clock.time()

    async def _end_session(self, sid: str, event: str | None = None) -> None:
        """Tell ``sid`` its token expired (an ``error`` event), then disconnect it."""
        if sid not in self._who:
            return
        error = TokenExpired("the authentication token expired: connect again with a fresh one")
        data = {**error.payload(), "event": event}  # an error event, not an ack
        with contextlib.suppress(Exception):
            await self.sio.emit("error", data, to=sid, ignore_queue=True)
        await self.sio.disconnect(sid)

    # ------------------------------------------------------------ Socket.IO

    async def _on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        token = auth.get("token") if isinstance(auth, dict) else None
        if not token:
            raise SocketRefused(
                "authentication token missing: pass it as auth.token", {"code": AuthError.code}
            )
        restored = recovered_from(self.sio, sid)
        try:
            if not self._live:
                await self._ready()
            who = await self.verifier.verify(token)
            outcome = await self._holds.connect(who, sid, restored)
        except RtkitError as exc:
            raise SocketRefused(exc.message, {"code": exc.code}) from None
        self._who[sid] = who
        self._expiry.watch(sid, who, self._who)
        await self._apply(sid, outcome)
        if restored is not None:
            return  # no welcome: it missed nothing (replayed) and saw nobody leave
        task = asyncio.create_task(self._welcome(who, sid))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _welcome(self, who: Identity, sid: str) -> None:
        # The connect handler runs before the client is told it is connected:
        # wait for that, so the welcome arrives after the "connect" on the client.
        for _ in range(400):
            if is_connected(self.sio, sid):
                break
            await asyncio.sleep(0.005)
        try:
            await self._send(await self.chat.welcome(who, sid))
        except Exception:
            log.exception("could not welcome %s", sid)

    async def _on_disconnect(self, sid: str, reason: Any = None) -> None:
        who = self._who.pop(sid, None)
        entered = self._entered.pop(sid, set())
        if who is None:
            return
        try:
            await self._send(await self._holds.disconnect(who, sid, entered, reason))
        except Exception:
            log.exception("could not record the departure of %s", sid)

    def _handler(self, event: str, handle: Handler) -> Callable[..., Awaitable[Any]]:
        async def on_event(sid: str, *args: Any) -> Any:
            wanted = ack_wanted()
            who = self._who.get(sid)
            if who is None:
                return None
            if self._expired(who):
                return await self._refuse_expired(sid, event, wanted)
            try:
                if not self._live:
                    await self._ready()
                outcome = await handle(who, sid, args[0] if args else None)
                await self._apply(sid, outcome)
            except RtkitError as exc:
                return await self._fail(sid, event, exc, wanted)
            except Exception:
                log.exception("%s from %s failed", event, sid)
                error = InternalError("the server failed to handle this event")
                return await self._fail(sid, event, error, wanted)
            return {"ok": True, **outcome.ack}

        return observed(self, event, on_event)  # a span and metrics when telemetry is on

    async def _unknown(self, event: Any, sid: str, *args: Any) -> Any:
        """An event no handler knows: counted against ``other_rate``, refused."""
        name = event if isinstance(event, str) else repr(event)

        async def refuse(who: Identity, sid: str, data: Any) -> Outcome:
            return await self.chat.unknown_event(who, sid, name, data)

        return await self._handler(name[:80], refuse)(sid, *args)

    async def _refuse_expired(self, sid: str, event: str, wanted: bool) -> dict[str, Any] | None:
        """An event from a connection whose token expired: refuse it, then end the connection."""
        if not wanted:
            await self._end_session(sid, event)
            return None

        async def end() -> None:
            await self._end_session(sid)

        after_ack(end)
        return socket_error(TokenExpired("the authentication token expired"))

    async def _fail(
        self, sid: str, event: str, exc: RtkitError, ack_wanted: bool
    ) -> dict[str, Any] | None:
        if self._telemetry is not None:
            self._telemetry.failed(exc.code)
        if ack_wanted:
            return socket_error(exc)
        await self.sio.emit("error", socket_error(exc, event=event), to=sid)
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

    def _socket_data(self, sid: str) -> dict[str, str] | None:
        """``socket.data`` of ``sid`` for Node servers' ``fetchSockets()``: who it is."""
        who = self._who.get(sid)
        return None if who is None else {"userId": who.user_id, "username": who.username}

    def _joined(self, sid: str, room_id: str) -> bool:
        return room_channel(room_id) in self._entered.get(sid, ())

    async def _send(self, emits: list[Emit]) -> None:
        if self.recovery is not None:  # one order for every event (and one round trip)
            return await emit_all(self.sio, [(e.event, e.data, e.to, e.skip_sid) for e in emits])
        for emit in emits:
            # A connection of this instance is reached directly, not through Redis.
            local = emit.to is not None and emit.to in self._who
            await self.sio.emit(
                emit.event, emit.data, to=emit.to, skip_sid=emit.skip_sid, ignore_queue=local
            )
