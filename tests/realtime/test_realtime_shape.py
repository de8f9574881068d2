"""The shape RealtimeServer and ChatClient share with every component.

``RealtimeServer()`` works with no arguments; the server closes what it made and
never what it was given; operations after ``close()`` raise ``Closed``; an error
raised on the server reaches the client as the same class (ack or ``error`` event).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from realtime_support import SECRET, Chat, make_server, serving

from rtkit import PresenceStore, RateLimiter, RoomManager
from rtkit.errors import (
    BackendUnavailable,
    Closed,
    ConfigurationError,
    Conflict,
    Forbidden,
    InternalError,
    NotFound,
    NotMember,
    PayloadTooLarge,
    QuotaExceeded,
    RateLimited,
    RemoteError,
    RtkitError,
    TokenExpired,
    TooManyRooms,
    ValidationError,
    error_from_payload,
)
from rtkit.realtime import (
    ChatClient,
    ChatService,
    ErrorInfo,
    LocalFileStore,
    MessageStore,
    NotificationStore,
    RealtimeServer,
    UploadRegistry,
)
from rtkit.realtime._protocol import socket_error
from rtkit_testing import unique_name

ERRORS: list[RtkitError] = [
    ValidationError("bad payload"),
    PayloadTooLarge("too big"),
    NotMember("not in room 'x'"),
    Forbidden("not yours"),
    TooManyRooms("in 3 rooms already"),
    QuotaExceeded("used up"),
    Conflict("already done"),
    RateLimited("slow down", retry_after=2.5),
    TokenExpired("expired"),
    NotFound("no such upload"),
    BackendUnavailable("Redis is down"),
    RemoteError("the other side failed"),
    InternalError("the server failed"),
]


def _ids(error: RtkitError) -> str:
    return type(error).__name__


# -- RealtimeServer() ------------------------------------------------------------------


async def test_a_server_with_no_arguments_chats_with_its_own_tokens(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = RealtimeServer()
    assert "random secret" in caplog.text
    assert server._secret is not None and server._secret not in caplog.text
    async with serving(server) as url:
        ada = ChatClient(reconnection=False)
        bob = ChatClient(reconnection=False)
        async with ada, bob:
            await ada.connect(url, server.issue_token("ada", name="Ada"))
            await bob.connect(url, server.issue_token("bob"))
            await ada.join_room("lobby")
            assert (await bob.join_room("lobby")).users == ["ada", "bob"]
            message_id = await ada.send_message("lobby", "hello")
            assert [m.id for m in await bob.history("lobby")] == [message_id]
            assert (await bob.history("lobby"))[0].username == "Ada"
            with pytest.raises(TokenExpired):
                await ChatClient(reconnection=False).connect(url, server.issue_token("eve", ttl=-5))
    assert server.closed  # the lifespan closed it


async def test_a_server_with_no_arguments_removes_its_upload_folder(tmp_path: Path) -> None:
    server = RealtimeServer()
    async with serving(server) as url, ChatClient(reconnection=False) as ada:
        await ada.connect(url, server.issue_token("ada"))
        await ada.join_room("files")
        link = await ada.upload("files", "a.txt", b"hello")
        async with httpx.AsyncClient(base_url=url) as http:
            auth = {"Authorization": f"Bearer {server.issue_token('ada')}"}
            assert (await http.get(link, headers=auth)).content == b"hello"
        folder = server.chat.files._local.directory  # type: ignore[attr-defined]
        assert folder.is_dir()
    assert not folder.exists()


async def test_a_custom_verifier_has_no_secret_to_issue_tokens() -> None:
    class Nobody:
        async def verify(self, token: str) -> Any:
            raise NotImplementedError

    server = RealtimeServer(verifier=Nobody())
    with pytest.raises(ConfigurationError, match="secret"):
        server.issue_token("ada")
    with pytest.raises(ConfigurationError, match="demo"):
        RealtimeServer(verifier=Nobody(), demo=True)
    await server.close()


# -- ownership -------------------------------------------------------------------------


class CloseSpy:
    """Records which of the watched parts were closed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch
        self.closed: list[str] = []

    def watch(self, name: str, part: Any) -> None:
        original = part.close

        async def close() -> None:
            self.closed.append(name)
            await original()

        self.monkeypatch.setattr(part, "close", close)


def _parts(server: RealtimeServer) -> dict[str, Any]:
    chat = server.chat
    return {
        "presence": server.presence,
        "rooms": server.rooms,
        "limiter": server.limiter,
        "messages": chat.messages,
        "notifications": chat.notifications,
        "uploads": chat.uploads,
    }


@pytest.mark.parametrize("made_by", ["constructor", "from_url"])
async def test_the_server_closes_the_parts_it_made(
    made_by: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if made_by == "constructor":
        server = RealtimeServer(secret=SECRET)
    else:
        server = RealtimeServer.from_url(f"memory://{unique_name('own')}", secret=SECRET)
    spy = CloseSpy(monkeypatch)
    for name, part in _parts(server).items():
        spy.watch(name, part)
    async with server:
        await server.purge_expired()
    assert sorted(spy.closed) == sorted(_parts(server))


async def test_the_server_never_closes_what_it_was_given(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    presence = PresenceStore.from_url("memory://")
    given = {
        "presence": presence,
        "rooms": RoomManager.from_url("memory://", instance_id=presence.instance_id),
        "limiter": RateLimiter.from_url("memory://"),
        "messages": MessageStore(),
        "notifications": NotificationStore(),
        "uploads": UploadRegistry(),
    }
    spy = CloseSpy(monkeypatch)
    for name, part in given.items():
        spy.watch(name, part)
    server = RealtimeServer(secret=SECRET, files=LocalFileStore(tmp_path / "files"), **given)
    assert _parts(server) == given
    async with serving(server) as url, ChatClient(reconnection=False) as ada:
        await ada.connect(url, server.issue_token("ada"))
        await ada.join_room("lobby")
        await ada.send_message("lobby", "kept")
        await ada.upload("lobby", "a.txt", b"abc")
    assert server.closed
    assert spy.closed == []
    assert [m.message for m in await given["messages"].history("lobby")] == ["kept"]
    assert (tmp_path / "files").is_dir()  # a given file store keeps its files
    for part in given.values():
        await part.close()


# -- Closed ----------------------------------------------------------------------------


async def test_server_operations_after_close_raise_closed() -> None:
    started, never_started = RealtimeServer(secret=SECRET), RealtimeServer(secret=SECRET)
    await started.start()
    for server in (started, never_started):
        await server.close()
        await server.close()  # twice: harmless
        with pytest.raises(Closed):
            await server.purge_expired()
        with pytest.raises(Closed):
            server.issue_token("ada")
        with pytest.raises(Closed):
            await server.start()


CLIENT_OPERATIONS: list[Callable[[ChatClient], Any]] = [
    lambda c: c.connect("http://127.0.0.1:9", "token"),
    lambda c: c.disconnect(),
    lambda c: c.wait(),
    lambda c: c.join_room("lobby"),
    lambda c: c.leave_room("lobby"),
    lambda c: c.send_message("lobby", "hi"),
    lambda c: c.history("lobby"),
    lambda c: c.start_typing("lobby"),
    lambda c: c.stop_typing("lobby"),
    lambda c: c.send_notification("bob", "ping", None),
    lambda c: c.game_move("lobby", 1),
    lambda c: c.start_upload("lobby", "a.txt", 1),
    lambda c: c.upload("lobby", "a.txt", b"a"),
]


async def test_every_client_operation_after_close_raises_closed(memory_chat: Chat) -> None:
    user = await memory_chat.connect("ada")
    await user.client.join_room("lobby")
    await user.client.close()
    assert not user.client.connected
    for operation in CLIENT_OPERATIONS:
        with pytest.raises(Closed):
            await operation(user.client)
    with pytest.raises(Closed):
        user.client.on_chat_message(lambda m: None)
    memory_chat.users.remove(user)  # closed already


async def test_leaving_async_with_disconnects_the_client(memory_chat: Chat) -> None:
    watcher = await memory_chat.connect("watcher")
    async with ChatClient(reconnection=False) as client:
        await client.connect(memory_chat.url, memory_chat.server.issue_token("leaver"))
        await watcher.seen.wait_for("user:joined", lambda u: u.user_id == "leaver")
    await watcher.seen.wait_for("user:left", lambda u: u.user_id == "leaver")
    assert client.closed


def test_the_ack_wait_is_timeout() -> None:
    assert ChatClient().timeout == 5.0
    assert ChatClient(timeout=1.5).timeout == 1.5


# -- errors on the wire ----------------------------------------------------------------


@pytest.mark.parametrize("error", ERRORS, ids=_ids)
def test_an_error_payload_comes_back_as_its_class(error: RtkitError) -> None:
    ack = socket_error(error)
    assert ack == {"ok": False, "error": error.payload()}
    for payload in (ack["error"], socket_error(error, event="game:move")):
        back = error_from_payload(payload)
        assert type(back) is type(error)
        assert (back.code, back.message) == (error.code, error.message)
        assert getattr(back, "retry_after", None) == getattr(error, "retry_after", None)
    assert socket_error(error, event="game:move")["event"] == "game:move"


@pytest.fixture
async def failing(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A served server whose ``game:move`` raises ``failing.error``."""

    class Failing:
        error: BaseException = RuntimeError("boom")

    async def game_move(self: ChatService, who: Any, sid: str, data: Any) -> Any:
        raise Failing.error

    monkeypatch.setattr(ChatService, "game_move", game_move)
    server = make_server("memory://", "rtkit:")
    async with serving(server) as url:
        chat = Chat(url, server)
        Failing.user = await chat.connect("ada")  # type: ignore[attr-defined]
        try:
            yield Failing
        finally:
            await chat.close()


@pytest.mark.parametrize("error", ERRORS, ids=_ids)
async def test_a_server_error_reaches_the_client_as_its_class(failing: Any, error: Any) -> None:
    failing.error = error
    client = failing.user.client
    with pytest.raises(type(error)) as raised:
        await client.game_move("lobby", 1)
    assert type(raised.value) is type(error)
    assert raised.value.message == error.message
    assert getattr(raised.value, "retry_after", None) == getattr(error, "retry_after", None)

    # Without an ack, the same payload arrives as an ``error`` event.
    await client.sio.emit("game:move", {"roomId": "lobby", "move": 1})
    event = await failing.user.seen.wait_for("error")
    assert isinstance(event, ErrorInfo)
    assert (event.code, event.message, event.event) == (error.code, error.message, "game:move")
    assert event.retry_after == getattr(error, "retry_after", None)


async def test_an_unexpected_failure_is_an_internal_error(failing: Any) -> None:
    failing.error = RuntimeError("a bug")
    with pytest.raises(InternalError) as raised:
        await failing.user.client.game_move("lobby", 1)
    assert "a bug" not in raised.value.message  # details stay in the server's log
    assert failing.user.client.connected


# -- from_url --------------------------------------------------------------------------


def test_from_url_splits_its_options(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="bogus"):
        RealtimeServer.from_url("memory://", bogus=1)
    with pytest.raises(ConfigurationError, match="presence"):  # opened by from_url itself
        RealtimeServer.from_url("memory://", presence=PresenceStore())
    with pytest.raises(ConfigurationError, match="upload_dir or files"):
        RealtimeServer.from_url(
            "memory://", upload_dir=str(tmp_path), files=LocalFileStore(tmp_path)
        )
    with pytest.raises(ConfigurationError, match=r"RealtimeServer.*memory://"):
        RealtimeServer.from_url("amqp://guest:guest@localhost/")
    with pytest.raises(ConfigurationError, match="prefix"):
        RealtimeServer.from_url("memory://", prefix="")


async def test_from_url_gives_the_lease_to_presence_and_rooms(tmp_path: Path) -> None:
    server = RealtimeServer.from_url(
        "memory://", secret=SECRET, presence_ttl=12.0, upload_dir=str(tmp_path), timeout=1.0
    )
    assert server.presence.ttl == server.rooms.ttl == 12.0
    assert server.rooms.instance_id == server.presence.instance_id
    assert isinstance(server.chat.files, LocalFileStore)
    assert server.chat.files.directory == tmp_path
    await server.close()


@pytest.mark.redis
async def test_from_url_on_redis_shares_one_client_and_closes_it(
    redis_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = RealtimeServer.from_url(redis_url, secret=SECRET, prefix=redis_prefix)
    made = server._redis
    assert made is not None
    chat = server.chat
    for store in (chat.messages, chat.notifications, chat.uploads):
        assert store._backend._handle.client is made  # type: ignore[attr-defined]
    closed: list[bool] = []
    original = made.aclose

    async def aclose() -> None:
        closed.append(True)
        await original()

    monkeypatch.setattr(made, "aclose", aclose)
    async with server:
        assert await server.presence.connect("ada", "sid-1")
        assert await server.presence.is_online("ada")
    assert closed == [True]
