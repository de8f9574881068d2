"""The RateLimiter contract, run on every backend (memory and Redis)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from rtkit import ManualClock
from rtkit.errors import ConfigurationError, PayloadTooLarge, RateLimited, ValidationError
from rtkit.ratelimit import Decision, Limit, RateLimiter

pytestmark = pytest.mark.topologies  # also on the private cluster and Sentinel

ALGORITHMS = ["gcra", "sliding_window", "sliding_window_counter"]


@pytest.fixture
def clock() -> ManualClock:
    # Aligned on a whole minute, so fixed windows start "now".
    return ManualClock(start=1_800_000_000.0)


@pytest.fixture
async def limiter(backend: Any, clock: ManualClock) -> AsyncIterator[RateLimiter]:
    async with RateLimiter.from_url(
        backend.url,
        prefix=backend.prefix,
        clock=clock,
    ) as limiter:
        yield limiter


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_allows_up_to_the_limit_then_denies(limiter: RateLimiter, algorithm: str) -> None:
    limit = Limit(5, 60, algorithm)

    decisions = [await limiter.hit("user:1", limit) for _ in range(6)]

    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0, 0]
    assert all(d.limit == 5 for d in decisions)
    assert all(d.retry_after == 0.0 for d in decisions[:5])
    assert decisions[5].retry_after > 0
    with pytest.raises(RateLimited) as caught:
        decisions[5].raise_for_limit()
    assert caught.value.retry_after == decisions[5].retry_after


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_a_denied_hit_passes_after_retry_after(
    limiter: RateLimiter, clock: ManualClock, algorithm: str
) -> None:
    limit = Limit(3, 10, algorithm)
    for _ in range(3):
        assert (await limiter.hit("k", limit)).allowed
    denied = await limiter.hit("k", limit)
    assert not denied.allowed

    clock.advance(denied.retry_after)

    assert (await limiter.hit("k", limit)).allowed


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_keys_are_independent(limiter: RateLimiter, algorithm: str) -> None:
    limit = Limit(1, 60, algorithm)
    assert (await limiter.hit("a", limit)).allowed
    assert not (await limiter.hit("a", limit)).allowed
    assert (await limiter.hit("b", limit)).allowed
    for key in ("用户:42", "ip:2001:db8::1", "{braces}", "a}b{c", "chat:" + "é" * 128):
        assert (await limiter.hit(key, limit)).allowed
        assert not (await limiter.hit(key, limit)).allowed
        await limiter.reset(key, limit)
        assert (await limiter.hit(key, limit)).allowed


async def test_limit_strings_use_gcra(limiter: RateLimiter) -> None:
    first = await limiter.hit("ip:203.0.113.9", "2/minute")
    assert first == Decision(True, 2, 1, 30.0, 0.0)
    assert (await limiter.hit("ip:203.0.113.9", "2/minute")).allowed
    third = await limiter.hit("ip:203.0.113.9", Limit(2, 60))  # the same limit
    assert not third.allowed
    assert third.retry_after == 30.0


async def test_several_limits_are_counted_all_or_none(
    limiter: RateLimiter, clock: ManualClock
) -> None:
    per_second = Limit(2, 1, "sliding_window")
    per_minute = Limit(3, 60, "sliding_window")

    assert (await limiter.hit("k", per_second, per_minute)).allowed
    assert (await limiter.hit("k", per_second, per_minute)).allowed
    denied = await limiter.hit("k", per_second, per_minute)  # per_second is full
    assert not denied.allowed
    assert denied.retry_after == 1.0
    # The denied hit was not counted under per_minute either:
    assert (await limiter.peek("k", per_minute)).remaining == 1

    clock.advance(1)
    allowed = await limiter.hit("k", per_second, per_minute)
    assert allowed.allowed
    assert allowed.remaining == 0  # the most restrictive: per_minute
    assert allowed.limit == 3
    denied = await limiter.hit("k", per_second, per_minute)
    assert not denied.allowed
    assert denied.retry_after == 59.0  # per_minute decides now


async def test_peek_does_not_count(limiter: RateLimiter) -> None:
    limit = Limit(2, 60, "sliding_window")
    fresh = await limiter.peek("k", limit)
    assert fresh == Decision(True, 2, 2, 0.0, 0.0)
    await limiter.hit("k", limit)
    assert (await limiter.peek("k", limit)).remaining == 1
    assert (await limiter.peek("k", limit)).remaining == 1
    await limiter.hit("k", limit)
    full = await limiter.peek("k", limit)
    assert not full.allowed
    assert full.retry_after == 60.0


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_reset_forgets_a_key(limiter: RateLimiter, algorithm: str) -> None:
    limit = Limit(1, 60, algorithm)
    await limiter.hit("k", limit)
    assert not (await limiter.hit("k", limit)).allowed
    await limiter.reset("k", limit)
    assert (await limiter.hit("k", limit)).allowed


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_cost_counts_several_hits(limiter: RateLimiter, algorithm: str) -> None:
    limit = Limit(10, 60, algorithm)
    assert (await limiter.hit("k", limit, cost=7)).remaining == 3
    denied = await limiter.hit("k", limit, cost=4)
    assert not denied.allowed
    assert denied.remaining == 3
    assert (await limiter.hit("k", limit, cost=3)).remaining == 0


async def test_gcra_burst(limiter: RateLimiter, clock: ManualClock) -> None:
    limit = Limit(1, 1, burst=3)  # one per second, three at once
    assert [(await limiter.hit("k", limit)).allowed for _ in range(4)] == [True] * 3 + [False]
    clock.advance(1)
    assert (await limiter.hit("k", limit)).allowed
    assert not (await limiter.hit("k", limit)).allowed


async def test_concurrent_hits_never_exceed_the_limit(limiter: RateLimiter) -> None:
    limit = Limit(25, 60, "sliding_window")
    decisions = await asyncio.gather(*(limiter.hit("hot", limit) for _ in range(100)))
    assert sum(d.allowed for d in decisions) == 25


@pytest.mark.parametrize(
    ("key", "error"),
    [
        ("", ValidationError),
        ("x" * 513, PayloadTooLarge),
        ("é" * 257, PayloadTooLarge),
        ("a\nb", ValidationError),
        ("\ud800", ValidationError),  # a lone surrogate is not text
        (b"k", ValidationError),
        (None, ValidationError),
    ],
)
async def test_bad_keys_are_rejected(
    limiter: RateLimiter, key: str, error: type[Exception]
) -> None:
    with pytest.raises(error):
        await limiter.hit(key, "1/second")
    with pytest.raises(error):
        await limiter.peek(key, "1/second")
    with pytest.raises(error):
        await limiter.reset(key, "1/second")


async def test_a_key_of_a_kind_and_any_id_fits(limiter: RateLimiter) -> None:
    from rtkit._core.validate import MAX_ID_BYTES, MAX_KEY_BYTES

    assert MAX_KEY_BYTES == 512
    longest_id = "\U0001f600" * (MAX_ID_BYTES // 4)  # 256 bytes of UTF-8
    for key in ("x" * MAX_KEY_BYTES, f"user:{longest_id}", "é" * (MAX_KEY_BYTES // 2)):
        assert (await limiter.hit(key, "1/minute")).allowed
        assert not (await limiter.hit(key, "1/minute")).allowed
        await limiter.reset(key, "1/minute")
        assert (await limiter.peek(key, "1/minute")).remaining == 1


async def test_bad_arguments_are_rejected(limiter: RateLimiter) -> None:
    with pytest.raises(ConfigurationError, match="at least one limit"):
        await limiter.hit("k")
    with pytest.raises(ConfigurationError, match="cannot parse"):
        await limiter.hit("k", "lots/minute")
    with pytest.raises(ConfigurationError):
        await limiter.hit("k", 5)
    with pytest.raises(ValidationError, match="cost"):
        await limiter.hit("k", "5/minute", cost=0)
    with pytest.raises(ValidationError, match="never pass"):
        await limiter.hit("k", "5/minute", cost=6)
    # Nothing was counted by the rejected calls:
    assert (await limiter.peek("k", "5/minute")).remaining == 5
