"""The shared pieces: backend URLs, key prefixes, ids, clock, errors, id checks."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

import rtkit
from rtkit._backends import Keyspace, RedisHandle, backend_kind, check_prefix, redis_unavailable
from rtkit._validation import check_id


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("memory://", "memory"),
        ("redis://127.0.0.1:6379/0", "redis"),
        ("redis://:secret@localhost", "redis"),
        ("rediss://cache.example:6380/2", "redis"),
        ("unix:///run/redis.sock?db=1", "redis"),
    ],
)
def test_backend_urls_pick_the_backend(url: str, kind: str) -> None:
    assert backend_kind(url, component="Test") == kind


def test_amqp_only_where_allowed() -> None:
    assert backend_kind("amqp://guest:guest@h/", component="T", allowed=("amqp",)) == "amqp"
    with pytest.raises(rtkit.ConfigurationError, match="unknown scheme"):
        backend_kind("amqp://guest:guest@h/", component="EventBus")


@pytest.mark.parametrize(
    "url",
    ["", "nope://x", "redis://host:notaport", "redis://host/abc", "unix://", "x"],
)
def test_bad_urls_raise_configuration_error_naming_the_url(url: str) -> None:
    with pytest.raises(rtkit.ConfigurationError) as info:
        backend_kind(url, component="EventBus")
    assert repr(url)[1:-1] in str(info.value) or url == ""


def test_passwords_are_not_echoed_in_errors() -> None:
    with pytest.raises(rtkit.ConfigurationError) as info:
        backend_kind("bogus://user:hunter2@host/", component="EventBus")
    assert "hunter2" not in str(info.value)


def test_keys_carry_the_prefix_and_one_hash_tag_per_component() -> None:
    keys = Keyspace("app1:", "presence")
    assert keys.key("user", "42") == "app1:{presence}:user:42"
    assert keys.channel("events") == "app1:presence:events"
    assert check_prefix("rtkit:") == "rtkit:"
    for bad in ["", "has space", "x" * 65, "brace{"]:
        with pytest.raises(rtkit.ConfigurationError):
            check_prefix(bad)


def test_ids_are_unique_and_time_sortable() -> None:
    ids = [rtkit.new_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)


def test_manual_clock_moves_only_forward() -> None:
    clock = rtkit.ManualClock(start=100.0)
    clock.advance(1.5)
    assert clock.time() == clock.monotonic() == 101.5
    with pytest.raises(ValueError):
        clock.advance(-1)
    assert isinstance(rtkit.SystemClock(), rtkit.Clock)


def test_error_hierarchy_and_codes() -> None:
    limited = rtkit.RateLimited(retry_after=2.5)
    assert isinstance(limited, rtkit.RtkitError)
    assert limited.retry_after == 2.5 and limited.code == "rate_limited"
    assert issubclass(rtkit.ServiceNotFound, rtkit.NotFound)
    assert issubclass(rtkit.PayloadTooLarge, rtkit.ValidationError)
    assert rtkit.AuthError("x", code="token_expired").code == "token_expired"


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("", rtkit.ValidationError),
        (42, rtkit.ValidationError),
        (None, rtkit.ValidationError),
        ("a\nb", rtkit.ValidationError),
        ("x" * 257, rtkit.PayloadTooLarge),
        ("é" * 129, rtkit.PayloadTooLarge),
    ],
)
def test_check_id_rejects_bad_ids(value: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        check_id(value, "user_id")


def test_check_id_accepts_ordinary_ids() -> None:
    assert check_id("user-42", "user_id") == "user-42"
    assert check_id("x" * 256, "user_id") == "x" * 256


async def test_borrowed_redis_client_must_decode_responses(redis_url: str) -> None:
    raw = aioredis.Redis.from_url(redis_url)
    try:
        with pytest.raises(rtkit.ConfigurationError, match="decode_responses"):
            RedisHandle(client=raw)
    finally:
        await raw.aclose()
    shared = rtkit.redis_client(redis_url)
    handle = RedisHandle(client=shared)
    await handle.close()  # borrowed: still usable afterwards
    assert await shared.ping()
    await shared.aclose()


async def test_unreachable_redis_raises_backend_unavailable() -> None:
    client = rtkit.redis_client("redis://127.0.0.1:1/0", timeout=0.5)
    try:
        with pytest.raises(rtkit.BackendUnavailable, match="pinging"), redis_unavailable("pinging"):
            await client.ping()
    finally:
        await client.aclose()
