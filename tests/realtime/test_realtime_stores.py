"""MessageStore, NotificationStore and UploadRegistry: one contract, memory and Redis."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rtkit import ManualClock
from rtkit._core.ids import new_id
from rtkit.errors import Closed, ConfigurationError, NotFound, PayloadTooLarge, ValidationError
from rtkit.realtime import (
    ChatMessage,
    FileShared,
    HistoryEntry,
    LocalFileStore,
    MessageStore,
    Notification,
    NotificationStore,
    RoomActivity,
    UploadRecord,
    UploadRegistry,
)
from rtkit.realtime.stores.backends.memory import (
    MemoryMessageStoreBackend,
    MemoryNotificationStoreBackend,
)
from rtkit_testing import unique_name

pytestmark = pytest.mark.topologies  # also on the private cluster and Sentinel


def message(room_id: str, text: str) -> ChatMessage:
    return ChatMessage(
        id=new_id(),
        user_id="u1",
        username="Ada",
        message=text,
        type="text",
        timestamp="2026-01-01T00:00:00.000Z",
        room_id=room_id,
    )


def shared(room_id: str, name: str) -> FileShared:
    return FileShared(
        id=new_id(),
        upload_id=new_id(),
        user_id="u2",
        username="Bo",
        file_name=name,
        file_size=12,
        timestamp="2026-01-01T00:00:00.000Z",
        room_id=room_id,
    )


def activity(room_id: str, kind: str) -> RoomActivity:
    return RoomActivity.model_validate(
        {
            "kind": kind,
            "id": new_id(),
            "user_id": "u3",
            "username": "Cy",
            "timestamp": "2026-01-01T00:00:00.000Z",
            "room_id": room_id,
        }
    )


ALL_KINDS = ("message", "file", "join", "leave")


def entry(room_id: str, kind: str, n: int) -> HistoryEntry:
    if kind == "message":
        return message(room_id, f"text {n}")
    if kind == "file":
        return shared(room_id, f"file {n}")
    return activity(room_id, kind)


def note(to: str, content: Any) -> Notification:
    return Notification(
        id=new_id(),
        from_user_id="u1",
        to_user_id=to,
        type="info",
        content=content,
        timestamp="2026-01-01T00:00:00.000Z",
    )


def upload(upload_id: str | None = None) -> UploadRecord:
    return UploadRecord(
        upload_id=upload_id or new_id(),
        room_id="lobby",
        user_id="u1",
        file_name="a.txt",
        file_size=3,
        created_at=1.0,
    )


async def test_history_returns_the_latest_messages_oldest_first(backend: Any) -> None:
    store = MessageStore.from_url(backend.url, prefix=backend.prefix)
    sent = [message("lobby", f"m{i}") for i in range(30)]
    for m in sent:
        await store.append(m)
    await store.append(message("other", "elsewhere"))

    assert await store.history("lobby", limit=5) == sent[-5:]
    assert await store.history("lobby", before=sent[10].id, limit=4) == sent[6:10]
    assert await store.history("lobby", before=sent[2].id, limit=50) == sent[:2]
    assert await store.history("lobby", limit=200) == sent
    assert await store.history("empty") == []
    await store.close()


async def test_history_keeps_file_shares_joins_and_leaves(backend: Any) -> None:
    store = MessageStore.from_url(backend.url, prefix=backend.prefix)
    kept = [
        activity("lobby", "join"),
        message("lobby", "hello"),
        shared("lobby", "plan.txt"),
        activity("lobby", "leave"),
        message("lobby", "bye"),
    ]
    for e in kept:
        await store.append(e)
    await store.append(shared("other", "elsewhere"))

    assert await store.history("lobby") == [kept[1], kept[4]]  # messages only, by default
    assert await store.history("lobby", kinds=ALL_KINDS) == kept
    assert await store.history("lobby", kinds=["join", "leave"]) == [kept[0], kept[3]]
    assert await store.history("lobby", kinds={"file"}) == [kept[2]]
    assert await store.history("lobby", kinds=ALL_KINDS, limit=2) == kept[3:]
    assert await store.history("lobby", kinds=ALL_KINDS, before=kept[3].id, limit=2) == kept[1:3]
    assert [e.kind for e in await store.history("lobby", kinds=ALL_KINDS)] == [
        "join",
        "message",
        "file",
        "leave",
        "message",
    ]
    for bad in (["poll"], [], "file", ["message", None]):
        with pytest.raises(ValidationError):
            await store.history("lobby", kinds=bad)  # type: ignore[arg-type]
    await store.close()


async def test_history_is_bounded_per_room(backend: Any) -> None:
    store = MessageStore.from_url(backend.url, prefix=backend.prefix, max_per_room=10)
    sent = [message("lobby", f"m{i}") for i in range(200)]
    for m in sent:
        await store.append(m)
    kept = await store.history("lobby", limit=200)
    # Redis trims approximately (MAXLEN ~): at least the bound, far below everything.
    assert 10 <= len(kept) < 200
    assert kept == sent[-len(kept) :]
    await store.close()


async def test_history_rejects_bad_arguments(backend: Any) -> None:
    store = MessageStore.from_url(backend.url, prefix=backend.prefix)
    with pytest.raises(ValidationError):
        await store.history("lobby", limit=0)
    with pytest.raises(ValidationError):
        await store.history("lobby", limit=201)
    with pytest.raises(ValidationError):
        await store.history("", limit=5)
    with pytest.raises(ValidationError):
        await store.history("lobby", before="")
    with pytest.raises(PayloadTooLarge):
        await store.history("r" * 300)
    await store.close()


async def test_notifications_are_taken_once_and_bounded(backend: Any) -> None:
    store = NotificationStore.from_url(backend.url, prefix=backend.prefix, max_per_user=3)
    notes = [note("bob", {"n": i}) for i in range(5)]
    for n in notes:
        await store.push(n)
    await store.push(note("carol", "hi"))

    assert await store.take("bob") == notes[-3:]
    assert await store.take("bob") == []
    assert [n.content for n in await store.take("carol")] == ["hi"]
    with pytest.raises(ValidationError):
        await store.take("")
    await store.close()


async def test_upload_registry_claims_once(backend: Any) -> None:
    registry = UploadRegistry.from_url(backend.url, prefix=backend.prefix)
    record = upload()
    await registry.create(record)
    assert await registry.get(record.upload_id) == record
    assert await registry.claim(record.upload_id) == record
    assert await registry.claim(record.upload_id) is None  # busy
    await registry.release(record.upload_id)
    assert await registry.claim(record.upload_id) == record
    done = await registry.complete(record.upload_id)
    assert done.complete
    assert await registry.get(record.upload_id) == done
    assert await registry.claim(record.upload_id) is None  # done
    assert await registry.get("unknown") is None
    assert await registry.claim("unknown") is None
    with pytest.raises(NotFound):  # the same typed error on every backend
        await registry.complete("unknown")
    with pytest.raises(ValidationError):
        await registry.get("")
    await registry.close()


# -- the shape: memory names, Closed, from_url options -----------------------------------


Write = Callable[[Any, str], Awaitable[None]]
Read = Callable[[Any, str], Awaitable[bool]]


async def _write_message(store: Any, key: str) -> None:
    await store.append(message(key, "hi"))


async def _read_message(store: Any, key: str) -> bool:
    return bool(await store.history(key))


async def _write_note(store: Any, key: str) -> None:
    await store.push(note(key, "hi"))


async def _read_note(store: Any, key: str) -> bool:
    return bool(await store.take(key))


async def _write_upload(store: Any, key: str) -> None:
    await store.create(upload(key))


async def _read_upload(store: Any, key: str) -> bool:
    return await store.get(key) is not None


STORES: dict[str, tuple[Any, Write, Read]] = {
    "MessageStore": (MessageStore, _write_message, _read_message),
    "NotificationStore": (NotificationStore, _write_note, _read_note),
    "UploadRegistry": (UploadRegistry, _write_upload, _read_upload),
}


@pytest.mark.parametrize("name", sorted(STORES))
async def test_a_memory_name_is_shared_and_memory_is_private(name: str) -> None:
    cls, write, read = STORES[name]
    shared = f"memory://{unique_name('shared')}"
    first, second = cls.from_url(shared), cls.from_url(shared)
    other_prefix = cls.from_url(shared, prefix="other:")
    private = cls.from_url("memory://")
    key = new_id()
    await write(first, key)
    assert not await read(private, key)
    assert not await read(other_prefix, key)
    assert await read(second, key)
    for store in (first, second, other_prefix, private):
        await store.close()


CLOSED_OPERATIONS: dict[str, list[Callable[[Any], Awaitable[Any]]]] = {
    "MessageStore": [
        lambda s: s.append(message("lobby", "hi")),
        lambda s: s.history("lobby"),
    ],
    "NotificationStore": [
        lambda s: s.push(note("bob", "hi")),
        lambda s: s.take("bob"),
    ],
    "UploadRegistry": [
        lambda s: s.create(upload()),
        lambda s: s.get("x"),
        lambda s: s.claim("x"),
        lambda s: s.release("x"),
        lambda s: s.complete("x"),
    ],
}


@pytest.mark.parametrize("name", sorted(STORES))
async def test_every_operation_after_close_raises_closed(name: str, backend: Any) -> None:
    store = STORES[name][0].from_url(backend.url, prefix=backend.prefix)
    await STORES[name][1](store, new_id())  # used once: started
    never_started = STORES[name][0]()
    for closed in (store, never_started):
        await closed.close()
        await closed.close()
        assert closed.closed
        for operation in CLOSED_OPERATIONS[name]:
            with pytest.raises(Closed):
                await operation(closed)
        with pytest.raises(Closed):
            await closed.start()


def test_from_url_gives_each_option_to_whoever_takes_it() -> None:
    store = MessageStore.from_url("memory://", max_per_room=7)
    assert isinstance(store._backend, MemoryMessageStoreBackend)
    assert store._backend.max_per_room == 7
    with pytest.raises(ConfigurationError, match="max_per_user"):
        MessageStore.from_url("memory://", max_per_user=3)
    with pytest.raises(ConfigurationError, match="bogus"):
        UploadRegistry.from_url("memory://", bogus=1)
    with pytest.raises(ConfigurationError, match="max_per_room"):
        MessageStore.from_url("memory://", max_per_room=0)
    with pytest.raises(ConfigurationError, match=r"MessageStore.*redis://"):
        MessageStore.from_url("amqp://guest:guest@localhost/")


@pytest.mark.redis
async def test_redis_options_reach_the_backend(redis_url: str, redis_prefix: str) -> None:
    notes = NotificationStore.from_url(redis_url, prefix=redis_prefix, ttl=60, timeout=2.0)
    await notes.push(note("bob", "hi"))
    assert [n.content for n in await notes.take("bob")] == ["hi"]
    await notes.close()
    with pytest.raises(ConfigurationError, match="pending_ttl"):
        UploadRegistry.from_url(redis_url, prefix=redis_prefix, pending_ttl=0)
    with pytest.raises(ConfigurationError, match="max_per_user"):
        NotificationStore.from_url(redis_url, prefix=redis_prefix, max_per_user=0)


def test_a_store_takes_a_backend_object() -> None:
    store = MessageStore(MemoryMessageStoreBackend(max_per_room=3))
    assert store._backend.max_per_room == 3  # type: ignore[attr-defined]


# -- files -----------------------------------------------------------------------------


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def _read(chunks: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in chunks])


async def test_local_file_store_keeps_exactly_the_announced_bytes(tmp_path: Path) -> None:
    files = LocalFileStore(tmp_path / "uploads")
    assert not (tmp_path / "uploads").exists()  # made on the first upload, not before
    await files.save("abc-1", _chunks(b"hello ", b"world"), size=11)
    assert await _read(files.open("abc-1")) == b"hello world"

    with pytest.raises(ValidationError):
        await files.save("abc-2", _chunks(b"short"), size=11)
    with pytest.raises(ValidationError):
        await files.save("abc-3", _chunks(b"far too long"), size=3)
    with pytest.raises(ValidationError):
        await files.save("../escape", _chunks(b"x"), size=1)
    with pytest.raises(NotFound):
        await _read(files.open("abc-2"))
    assert sorted(p.name for p in (tmp_path / "uploads").iterdir()) == ["abc-1"]


async def test_a_missing_folder_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        await _read(LocalFileStore(tmp_path / "nowhere").open("abc-1"))


@pytest.mark.redis
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("append"), st.sampled_from(["a", "b"]), st.integers(0, 3)),
            st.tuples(st.just("history"), st.sampled_from(["a", "b", "c"]), st.integers(1, 12)),
        ),
        max_size=40,
    ),
    before_pick=st.integers(0, 1000),
    kinds=st.lists(st.sampled_from(ALL_KINDS), max_size=40),
    wanted=st.one_of(st.none(), st.sets(st.sampled_from(ALL_KINDS), min_size=1)),
)
async def test_redis_history_matches_memory(
    redis_url: str,
    redis_prefix: str,
    ops: list[tuple[str, str, int]],
    before_pick: int,
    kinds: list[str],
    wanted: set[str] | None,
) -> None:
    memory = MessageStore.from_url("memory://", max_per_room=1000)
    redis_store = MessageStore.from_url(redis_url, prefix=f"{redis_prefix}{new_id()}:")
    sent: list[HistoryEntry] = []
    try:
        for i, (op, room, n) in enumerate(ops):
            if op == "append":
                e = entry(room, kinds[i] if i < len(kinds) else "message", n)
                sent.append(e)
                await memory.append(e)
                await redis_store.append(e)
            else:
                before = sent[before_pick % len(sent)].id if sent and before_pick % 2 else None
                options: dict[str, Any] = {"before": before, "limit": n}
                if wanted is not None:
                    options["kinds"] = sorted(wanted)
                expected = await memory.history(room, **options)
                assert await redis_store.history(room, **options) == expected
    finally:
        await redis_store.close()
        await memory.close()


# -- retention: history by length and age, notifications by age, uploads expire ----------


async def test_history_is_kept_by_age(backend: Any) -> None:
    clock = ManualClock(start=1_700_000_000.0)
    store = MessageStore.from_url(backend.url, prefix=backend.prefix, clock=clock, max_age=60)
    first, second = message("lobby", "first"), message("lobby", "second")
    await store.append(first)
    clock.advance(30)
    await store.append(second)
    assert await store.history("lobby") == [first, second]
    clock.advance(30)  # first is 60 s old: gone
    assert await store.history("lobby") == [second]
    clock.advance(30)
    assert await store.history("lobby") == []
    await store.close()


@pytest.mark.redis
async def test_a_redis_room_stream_is_trimmed_by_age_and_expires(
    redis_url: str, redis_prefix: str, redis_client: Any
) -> None:
    clock = ManualClock(start=1_700_000_000.0)
    store = MessageStore.from_url(redis_url, prefix=redis_prefix, clock=clock, max_age=60)
    for i in range(350):
        await store.append(message("lobby", f"old {i}"))
    clock.advance(61)
    fresh = message("lobby", "fresh")
    await store.append(fresh)
    key = f"{{{redis_prefix}messages:lobby}}:stream"
    assert await redis_client.xlen(key) < 350  # MINID ~ dropped the old nodes
    assert 0 < await redis_client.pttl(key) <= 60_000  # and the stream expires
    assert await store.history("lobby", limit=200) == [fresh]
    await store.close()


@pytest.mark.redis
@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("append"), st.sampled_from(["a", "b"]), st.integers(0, 3)),
            st.tuples(st.just("advance"), st.just(""), st.integers(1, 40)),
            st.tuples(st.just("history"), st.sampled_from(["a", "b"]), st.integers(1, 12)),
        ),
        max_size=40,
    )
)
async def test_redis_retention_matches_memory(
    redis_url: str, redis_prefix: str, ops: list[tuple[str, str, int]]
) -> None:
    clock = ManualClock(start=1_700_000_000.0)
    options = {"clock": clock, "max_age": 60, "max_per_room": 1000}
    memory = MessageStore.from_url("memory://", **options)
    redis_store = MessageStore.from_url(redis_url, prefix=f"{redis_prefix}{new_id()}:", **options)
    try:
        for op, room, n in ops:
            if op == "append":
                m = message(room, f"text {n}")
                await memory.append(m)
                await redis_store.append(m)
            elif op == "advance":
                clock.advance(n)
            else:
                expected = await memory.history(room, limit=n)
                assert await redis_store.history(room, limit=n) == expected
    finally:
        await redis_store.close()
        await memory.close()


async def test_memory_notifications_expire_like_a_redis_list() -> None:
    clock = ManualClock(start=1_700_000_000.0)
    store = NotificationStore.from_url("memory://", clock=clock, ttl=60)
    await store.push(note("bob", 1))
    clock.advance(50)
    await store.push(note("bob", 2))  # the list lives 60 s from its last push
    clock.advance(50)
    assert [n.content for n in await store.take("bob")] == [1, 2]
    await store.push(note("carol", 3))
    clock.advance(60)
    assert await store.take("carol") == []
    await store.close()


async def test_upload_records_expire_on_every_backend(backend: Any) -> None:
    clock = ManualClock(start=1_700_000_000.0)
    registry = UploadRegistry.from_url(
        backend.url, prefix=backend.prefix, clock=clock, pending_ttl=10, complete_ttl=100
    )
    pending, done = upload(), upload()
    await registry.create(pending)
    await registry.create(done)
    assert await registry.claim(done.upload_id) == done
    await registry.complete(done.upload_id)  # kept 100 s from now
    assert (await registry.usage("u1")).bytes == 6
    clock.advance(10)
    assert await registry.get(pending.upload_id) is None
    assert await registry.claim(pending.upload_id) is None
    assert await registry.known([pending.upload_id, done.upload_id]) == {done.upload_id}
    assert await registry.purge_expired() == [pending.upload_id]
    assert (await registry.usage("u1")).bytes == 3
    clock.advance(100)
    assert await registry.get(done.upload_id) is None
    assert await registry.purge_expired() == [done.upload_id]
    assert (await registry.usage()).bytes == 0
    await registry.close()


async def test_memory_stores_are_bounded_in_rooms_and_users() -> None:
    messages = MessageStore(MemoryMessageStoreBackend(max_rooms=2))
    for room in ("a", "b", "a", "c"):  # "b" is the least recently written when "c" comes
        await messages.append(message(room, "hi"))
    assert [bool(await messages.history(room)) for room in "abc"] == [True, False, True]
    notes = NotificationStore(MemoryNotificationStoreBackend(max_users=1))
    await notes.push(note("bob", 1))
    await notes.push(note("carol", 2))
    assert await notes.take("bob") == []
    assert [n.content for n in await notes.take("carol")] == [2]
    for store in (messages, notes):
        await store.close()


@pytest.mark.redis
async def test_redis_history_reads_what_older_and_newer_versions_wrote(
    redis_url: str, redis_prefix: str, redis_client: Any
) -> None:
    store = MessageStore.from_url(redis_url, prefix=redis_prefix)
    said, left = message("lobby", "hi"), activity("lobby", "leave")
    await store.append(said)
    key = f"{{{redis_prefix}messages:lobby}}:stream"  # the room's own hash tag
    # A chat message is kept as it always was (no "kind"): older servers read it.
    (_, fields), *_ = await redis_client.xrange(key)
    assert "kind" not in json.loads(fields["m"])
    # An entry of a kind this version does not know (a newer one wrote it) is skipped.
    await redis_client.xadd(key, {"m": json.dumps({"kind": "poll", "id": new_id()})})
    await store.append(left)
    assert await store.history("lobby", kinds=ALL_KINDS) == [said, left]
    await store.close()
