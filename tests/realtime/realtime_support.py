"""Helpers for the realtime tests: a RealtimeServer on a real socket, connected clients."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from rtkit.realtime import ChatClient, ChatLimits, RealtimeServer, issue_token

SECRET = "test-secret-" + "x" * 32


def token_for(user_id: str, name: str | None = None, ttl: float = 600) -> str:
    """A valid token for ``user_id`` signed with the tests' secret."""
    return issue_token(SECRET, user_id, name=name, ttl=ttl)


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    """Run ``app`` with uvicorn on a free 127.0.0.1 port; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on", ws="websockets-sansio")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    for _ in range(1000):
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    if task.done():
        task.result()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)
        sock.close()


class Recorder:
    """Records every typed event a ChatClient receives."""

    EVENTS = (
        "user:joined",
        "user:left",
        "users:online",
        "room:joined",
        "room:user:joined",
        "room:user:left",
        "chat:message",
        "chat:message:sent",
        "typing:start",
        "typing:stop",
        "notification:received",
        "file:upload:start",
        "file:upload:ready",
        "file:upload:complete",
        "game:move",
        "error",
    )

    def __init__(self, client: ChatClient) -> None:
        self.events: list[tuple[str, Any]] = []
        self._changed = asyncio.Event()
        for event in self.EVENTS:
            client.on(event, self._recorder(event))

    def _recorder(self, event: str) -> Callable[[Any], None]:
        def record(value: Any) -> None:
            self.events.append((event, value))
            self._changed.set()

        return record

    def of(self, event: str) -> list[Any]:
        """Every payload received for ``event`` so far."""
        return [value for name, value in self.events if name == event]

    async def wait_for(
        self, event: str, predicate: Callable[[Any], bool] = lambda _: True, timeout: float = 15
    ) -> Any:
        """The first ``event`` payload matching ``predicate`` (waits up to ``timeout``)."""
        async with asyncio.timeout(timeout):
            while True:
                for value in self.of(event):
                    if predicate(value):
                        return value
                self._changed.clear()
                await self._changed.wait()


@dataclass
class User:
    """A connected test user."""

    user_id: str
    client: ChatClient
    seen: Recorder


@dataclass
class Chat:
    """A running server and a way to connect users to it."""

    url: str
    server: RealtimeServer
    users: list[User] = field(default_factory=list)

    async def connect(self, user_id: str, name: str | None = None, url: str | None = None) -> User:
        """Connect a new ChatClient as ``user_id`` (to ``url``, default this server)."""
        client = ChatClient(reconnection_delay=0.2, reconnection_delay_max=0.5)
        seen = Recorder(client)
        await client.connect(url or self.url, token_for(user_id, name))
        user = User(user_id, client, seen)
        self.users.append(user)
        return user

    async def close(self) -> None:
        """Disconnect every user."""
        for user in self.users:
            await user.client.disconnect()


@dataclass
class FuzzRoom:
    """An attacker and an observer in room ``lobby``, and the messages acknowledged so far."""

    attacker: User
    observer: User
    server: RealtimeServer
    acked: set[str] = field(default_factory=set)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 15) -> None:
    """Poll ``check`` until it is true (generous deadline, no timing assumptions)."""
    async with asyncio.timeout(timeout):
        while not await check():  # noqa: ASYNC110  (polls state in other processes)
            await asyncio.sleep(0.05)


RATES = (
    "message_rate",
    "notification_rate",
    "typing_rate",
    "game_move_rate",
    "room_rate",
    "history_rate",
    "upload_rate",
    "download_rate",
    "other_rate",
)


def generous(**limits: Any) -> ChatLimits:
    """ChatLimits whose rates no test reaches by accident (``limits`` overrides)."""
    rates = [rate for rate in RATES if rate in ChatLimits.__dataclass_fields__]
    return ChatLimits(**{**dict.fromkeys(rates, "1000/second"), **limits})


def make_server(url: str, prefix: str, **kwargs: Any) -> RealtimeServer:
    """A RealtimeServer on ``url`` with the tests' secret (and generous rates)."""
    kwargs.setdefault("limits", generous())
    return RealtimeServer.from_url(url, secret=SECRET, prefix=prefix, **kwargs)
