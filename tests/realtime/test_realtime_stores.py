"""MessageStore, NotificationStore and UploadRegistry: one contract, memory and Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rtkit import NotFound, PayloadTooLarge, ValidationError, new_id
from rtkit.realtime import (
    LocalFileStore,
    UploadRecord,
    message_store_from_url,
    notification_store_from_url,
    upload_registry_from_url,
)
from rtkit.realtime.models import ChatMessage, Notification


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


def note(to: str, content: Any) -> Notification:
    return Notification(
        id=new_id(),
        from_user_id="u1",
        to_user_id=to,
        type="info",
        content=content,
        timestamp="2026-01-01T00:00:00.000Z",
    )


async def test_history_returns_the_latest_messages_oldest_first(backend: Any) -> None:
    store = message_store_from_url(backend.url, prefix=backend.prefix)
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


async def test_history_is_bounded_per_room(backend: Any) -> None:
    store = message_store_from_url(backend.url, prefix=backend.prefix, max_per_room=10)
    sent = [message("lobby", f"m{i}") for i in range(200)]
    for m in sent:
        await store.append(m)
    kept = await store.history("lobby", limit=200)
    # Redis trims approximately (MAXLEN ~): at least the bound, far below everything.
    assert 10 <= len(kept) < 200
    assert kept == sent[-len(kept) :]
    await store.close()


async def test_history_rejects_bad_arguments(backend: Any) -> None:
    store = message_store_from_url(backend.url, prefix=backend.prefix)
    with pytest.raises(ValidationError):
        await store.history("lobby", limit=0)
    with pytest.raises(ValidationError):
        await store.history("", limit=5)
    with pytest.raises(PayloadTooLarge):
        await store.history("r" * 300)
    await store.close()


async def test_notifications_are_taken_once_and_bounded(backend: Any) -> None:
    store = notification_store_from_url(backend.url, prefix=backend.prefix, max_per_user=3)
    notes = [note("bob", {"n": i}) for i in range(5)]
    for n in notes:
        await store.push(n)
    await store.push(note("carol", "hi"))

    assert await store.take("bob") == notes[-3:]
    assert await store.take("bob") == []
    assert [n.content for n in await store.take("carol")] == ["hi"]
    await store.close()


async def test_upload_registry_claims_once(backend: Any) -> None:
    registry = upload_registry_from_url(backend.url, prefix=backend.prefix)
    record = UploadRecord(
        upload_id=new_id(),
        room_id="lobby",
        user_id="u1",
        file_name="a.txt",
        file_size=3,
        created_at=1.0,
    )
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
    await registry.close()


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def _read(chunks: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in chunks])


async def test_local_file_store_keeps_exactly_the_announced_bytes(tmp_path: Path) -> None:
    files = LocalFileStore(tmp_path / "uploads")
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
)
async def test_redis_history_matches_memory(
    redis_url: str, redis_prefix: str, ops: list[tuple[str, str, int]], before_pick: int
) -> None:
    memory = message_store_from_url("memory://", max_per_room=1000)
    redis_store = message_store_from_url(redis_url, prefix=f"{redis_prefix}{new_id()}:")
    sent: list[ChatMessage] = []
    try:
        for op, room, n in ops:
            if op == "append":
                m = message(room, f"text {n}")
                sent.append(m)
                await memory.append(m)
                await redis_store.append(m)
            else:
                before = sent[before_pick % len(sent)].id if sent and before_pick % 2 else None
                expected = await memory.history(room, before=before, limit=n)
                assert await redis_store.history(room, before=before, limit=n) == expected
    finally:
        await redis_store.close()
