"""Quotas: every client event has a per-user rate, uploads have byte quotas and expire,
the janitor deletes the files no record knows, memory registries forget, history is kept
by length and age. Issue 10, item 10, over real sockets, HTTP and Redis.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from realtime_support import Chat, eventually, generous, make_server, serving

from rtkit import ManualClock
from rtkit._core.ids import new_id
from rtkit.errors import ConfigurationError, QuotaExceeded, RateLimited
from rtkit.realtime import ChatLimits, UploadQuota, UploadRecord, UploadRegistry
from rtkit.realtime.stores.backends.memory import MemoryUploadRegistryBackend
from rtkit_testing import Backend

MIB = 1024 * 1024


def names_in(folder: Path) -> list[str]:
    """The names of the files in ``folder``, sorted (a quick, local listing)."""
    return sorted(os.listdir(folder))


def upload_id_of(link: str) -> str:
    """The upload id in a download link ``/api/uploads/<id>?...``."""
    return link.split("?")[0].rsplit("/", 1)[1]


# (event, the rate that counts it, a payload)
EVENTS: list[tuple[str, str, Any]] = [
    ("typing:start", "typing_rate", {"roomId": "lobby"}),
    ("typing:stop", "typing_rate", {"roomId": "lobby"}),
    ("game:move", "game_move_rate", {"roomId": "lobby", "move": [1, 2]}),
    ("file:upload:start", "upload_rate", {"roomId": "lobby", "fileName": "a.txt", "fileSize": 1}),
    ("room:join", "room_rate", "lobby"),
    ("room:leave", "room_rate", "elsewhere"),
    ("chat:history", "history_rate", {"roomId": "lobby"}),
    ("chat:message", "message_rate", {"roomId": "lobby", "message": "hi"}),
    ("notification:send", "notification_rate", {"targetUserId": "bob", "type": "x"}),
    ("file:download", "download_rate", {"uploadId": "no-such-upload"}),
    ("no:such:event", "other_rate", {"anything": 1}),
]


@pytest.mark.parametrize(("event", "rate", "payload"), EVENTS, ids=[e[0] for e in EVENTS])
async def test_every_client_event_has_a_per_user_rate(event: str, rate: str, payload: Any) -> None:
    # room:join is counted once by the join below: two allowed, so the second call fails.
    server = make_server("memory://", "rtkit:", limits=generous(**{rate: "3/minute"}))
    async with serving(server) as url:
        chat = Chat(url, server)
        ada = await chat.connect("ada")
        observer = await chat.connect("observer")
        await observer.client.join_room("lobby")
        await ada.client.sio.call("room:join", "lobby")
        codes = []
        for _ in range(4):
            ack = await ada.client.sio.call(event, payload)
            codes.append(None if ack["ok"] else ack["error"]["code"])
        assert "rate_limited" not in codes[:1], codes
        assert codes[-1] == "rate_limited", codes
        ack = await ada.client.sio.call(event, payload)
        assert ack["error"]["code"] == "rate_limited" and ack["error"]["retryAfter"] > 0
        # Without an ack the refusal is an error event, with retryAfter too.
        await ada.client.sio.emit(event, payload)
        error = await ada.seen.wait_for("error", lambda e: e.code == "rate_limited")
        assert error.retry_after is not None and error.retry_after > 0
        # A second connection of the same user shares the count.
        tab = await chat.connect("ada")
        ack = await tab.client.sio.call(event, payload)
        assert ack["error"]["code"] == "rate_limited"
        await chat.close()


async def test_relayed_events_cannot_amplify_a_flood() -> None:
    server = make_server("memory://", "rtkit:", limits=ChatLimits())  # the defaults
    async with serving(server) as url:
        chat = Chat(url, server)
        ada = await chat.connect("ada")
        watchers = [await chat.connect(f"watcher-{i}") for i in range(3)]
        for user in (ada, *watchers):
            await user.client.join_room("lobby")
        relayed = 0
        for _ in range(100):
            for event in ("typing:start", "game:move"):
                ack = await ada.client.sio.call(event, {"roomId": "lobby", "move": 1})
                relayed += ack["ok"]
        defaults = ChatLimits()
        assert defaults.typing_rate == "30/10 seconds"
        assert defaults.game_move_rate == "50/10 seconds"
        assert relayed <= 30 + 50 + 5  # a little refill while the loop runs
        await watchers[0].client.join_room("barrier")
        assert len(watchers[0].seen.of("typing:start")) <= 35
        await chat.close()


@pytest.mark.redis
async def test_rates_are_per_user_across_instances(redis_url: str, redis_prefix: str) -> None:
    limits = generous(game_move_rate="3/minute")
    one, two = (make_server(redis_url, redis_prefix, limits=limits) for _ in range(2))
    async with serving(one) as url_one, serving(two) as url_two:
        first, second = Chat(url_one, one), Chat(url_two, two)
        here, there = await first.connect("ada"), await second.connect("ada")
        await here.client.join_room("chess")
        await here.client.game_move("chess", 1)
        await there.client.game_move("chess", 2)
        await here.client.game_move("chess", 3)
        with pytest.raises(RateLimited):
            await there.client.game_move("chess", 4)
        await first.close()
        await second.close()


async def test_a_flood_of_big_uploads_stops_at_the_default_quota(backend: Backend) -> None:
    server = make_server(backend.url, backend.prefix, limits=generous(upload_rate=None))
    async with serving(server) as url:
        chat = Chat(url, server)
        ada = await chat.connect("ada")
        await ada.client.join_room("files")
        outcomes = []
        for i in range(12):  # the review stored 12 x 10 MiB in half a second
            try:
                await ada.client.start_upload("files", f"big-{i}.bin", 10 * MIB)
                outcomes.append("ok")
            except QuotaExceeded:
                outcomes.append("quota_exceeded")
        assert outcomes == ["ok"] * 10 + ["quota_exceeded"] * 2
        usage = await server.chat.uploads.usage("ada")
        assert (usage.bytes, usage.uploads) == (100 * MIB, 10)
        await chat.close()


async def test_upload_quotas_per_user_and_per_server(backend: Backend) -> None:
    limits = generous(
        max_upload_bytes=10,
        upload_quota_per_user=25,
        upload_quota_per_server=45,
        max_uploads_per_user=4,
    )
    server = make_server(backend.url, backend.prefix, limits=limits)
    async with serving(server) as url:
        chat = Chat(url, server)
        ada, bob, eve = [await chat.connect(name) for name in ("ada", "bob", "eve")]
        for user in (ada, bob, eve):
            await user.client.join_room("files")
        await ada.client.start_upload("files", "a", 10)
        await ada.client.start_upload("files", "b", 10)
        with pytest.raises(QuotaExceeded, match="25 bytes"):
            await ada.client.start_upload("files", "c", 10)  # 30 > 25 for ada
        await ada.client.start_upload("files", "c", 5)  # exactly 25
        await bob.client.start_upload("files", "d", 10)
        await bob.client.start_upload("files", "e", 10)  # 45 on the server
        with pytest.raises(QuotaExceeded, match="upload space"):
            await eve.client.start_upload("files", "f", 1)
        assert await eve.client.start_upload("files", "empty", 0)  # nothing left but 0 bytes
        for name in ("g", "h", "i"):
            await eve.client.start_upload("files", name, 0)
        with pytest.raises(QuotaExceeded, match="uploads already"):
            await eve.client.start_upload("files", "j", 0)  # a count bound too
        assert (await server.chat.uploads.usage()).bytes == 45
        await chat.close()


async def test_uploads_expire_and_the_janitor_deletes_their_files(
    backend: Backend, tmp_path: Path
) -> None:
    clock = ManualClock(start=time.time())
    server = make_server(
        backend.url,
        backend.prefix,
        clock=clock,
        upload_dir=tmp_path,
        pending_ttl=30,
        complete_ttl=60,
        sweep_interval=0.05,
    )
    async with serving(server) as url, httpx.AsyncClient(base_url=url) as http:
        chat = Chat(url, server)
        ada = await chat.connect("ada")
        await ada.client.join_room("files")
        link = await ada.client.upload("files", "kept.txt", b"hello")
        pending = await ada.client.start_upload("files", "never-sent.txt", 7)
        assert (await server.chat.uploads.usage("ada")).bytes == 12
        assert names_in(tmp_path) != []

        clock.advance(31)  # the pending upload expired: its bytes leave the quota
        assert await server.chat.uploads.get(pending) is None
        assert (await server.chat.uploads.usage("ada")).bytes == 5
        assert (await http.get(link)).status_code == 200

        clock.advance(30)  # and now the complete one: the janitor deletes its file

        async def folder_empty() -> bool:
            return names_in(tmp_path) == []

        await eventually(folder_empty)
        assert (await server.chat.uploads.usage()).bytes == 0
        assert (await http.get(link)).status_code in {401, 404}  # expired link, gone file
        fresh = await ada.client.sio.call("file:download", {"uploadId": upload_id_of(link)})
        assert fresh["error"]["code"] == "not_found"
        await chat.close()


@pytest.mark.redis
async def test_the_janitor_deletes_what_a_crashed_instance_left(
    redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    # A crashed instance leaves files behind whose records are gone (never completed,
    # expired) and partial writes; a live instance's janitor removes them, and only them.
    server = make_server(redis_url, redis_prefix, upload_dir=tmp_path)
    async with serving(server) as url:
        chat = Chat(url, server)
        ada = await chat.connect("ada")
        await ada.client.join_room("files")
        link = await ada.client.upload("files", "live.txt", b"still wanted")
        live_id = upload_id_of(link)
        orphan, partial = new_id(), new_id()
        (tmp_path / orphan).write_bytes(b"left by a crashed instance")
        (tmp_path / f".{partial}.x1y2z3").write_bytes(b"half an upl")
        (tmp_path / "not-an-upload.txt").write_bytes(b"someone else's file")

        assert await server.sweep_uploads() == 2
        assert names_in(tmp_path) == sorted([live_id, "not-an-upload.txt"])
        async with httpx.AsyncClient(base_url=url) as http:
            assert (await http.get(link)).content == b"still wanted"
        await chat.close()


async def test_a_memory_upload_registry_forgets() -> None:
    clock = ManualClock(start=1_000.0)
    registry = UploadRegistry(MemoryUploadRegistryBackend(max_records=3), clock=clock)
    records = [
        UploadRecord(
            upload_id=new_id(),
            room_id="r",
            user_id="ada",
            file_name="f",
            file_size=1,
            created_at=clock.time(),
        )
        for _ in range(5)
    ]
    for record in records:
        await registry.create(record)
        clock.advance(1)
    ids = [r.upload_id for r in records]
    assert await registry.known(ids) == set(ids[2:])  # bounded: the oldest went
    assert (await registry.usage("ada")).uploads == 3
    clock.advance(3600)  # and every record expires
    assert await registry.known(ids) == set()
    assert (await registry.usage()).uploads == 0
    await registry.close()


@pytest.mark.redis
async def test_the_quota_is_atomic_under_concurrency(redis_url: str, redis_prefix: str) -> None:
    registry = UploadRegistry.from_url(redis_url, prefix=redis_prefix)
    quota = UploadQuota(user_bytes=100)

    async def one() -> bool:
        record = UploadRecord(
            upload_id=new_id(),
            room_id="r",
            user_id="ada",
            file_name="f",
            file_size=10,
            created_at=0.0,
        )
        try:
            await registry.create(record, quota=quota)
        except QuotaExceeded:
            return False
        return True

    accepted = await asyncio.gather(*(one() for _ in range(50)))
    assert sum(accepted) == 10
    assert (await registry.usage("ada")).bytes == 100
    await registry.close()


async def test_bad_limits_are_refused_at_once() -> None:
    with pytest.raises(ConfigurationError):
        ChatLimits(typing_rate="lots")
    with pytest.raises(ConfigurationError):
        ChatLimits(upload_quota_per_user=-1)
    with pytest.raises(ConfigurationError):
        ChatLimits(download_link_ttl=0)
