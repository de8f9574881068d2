"""The memory backend stays bounded: idle keys go, and there is a maximum."""

from __future__ import annotations

from rtkit import ManualClock
from rtkit.ratelimit import Limit, RateLimiter


def _stored(limiter: RateLimiter) -> int:
    return len(limiter._backend)  # type: ignore[arg-type]


async def test_the_number_of_keys_is_bounded() -> None:
    limiter = RateLimiter(max_keys=50, clock=ManualClock())
    for i in range(1_000):
        assert (await limiter.hit(f"ip:{i}", "10/minute")).allowed
    assert _stored(limiter) == 50
    # The most recent keys are kept:
    assert (await limiter.peek("ip:999", "10/minute")).remaining == 9


async def test_idle_keys_are_evicted() -> None:
    clock = ManualClock()
    limiter = RateLimiter(clock=clock)
    limits = [Limit(5, 1), Limit(5, 1, "sliding_window"), Limit(5, 1, "sliding_window_counter")]
    for i in range(3_000):
        await limiter.hit(f"old:{i}", *limits)
    assert _stored(limiter) == 9_000
    clock.advance(2.0)  # every state above has expired
    for i in range(3_000):
        await limiter.hit(f"new:{i}", limits[0])
    assert _stored(limiter) == 3_000


async def test_peek_and_denied_hits_store_nothing_new() -> None:
    limiter = RateLimiter(clock=ManualClock())
    await limiter.peek("k", "1/second")
    assert _stored(limiter) == 0


async def test_a_sliding_window_keeps_at_most_amount_timestamps() -> None:
    clock = ManualClock()
    limiter = RateLimiter(clock=clock)
    limit = Limit(20, 1, "sliding_window")
    for _ in range(500):
        await limiter.hit("k", limit)
        clock.advance(0.01)
    (entry,) = limiter._backend._entries.values()  # type: ignore[attr-defined]
    assert len(entry.state) <= 20
