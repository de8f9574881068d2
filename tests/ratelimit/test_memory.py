"""The memory backend stays bounded: idle keys go, and there is a maximum."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from rtkit import ManualClock
from rtkit.ratelimit import Limit, RateLimiter
from rtkit.ratelimit._algorithms import most_restrictive
from rtkit.ratelimit.backends.memory import MemoryRateLimitBackend


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


@settings(max_examples=100, deadline=None)
@given(
    limit=st.builds(
        Limit,
        amount=st.integers(1, 8),
        period=st.sampled_from([0.3, 1.0, 7.0]),
        burst=st.one_of(st.none(), st.integers(1, 9)),
    ),
    delays=st.lists(st.one_of(st.just(0), st.integers(0, 3_000_000)), min_size=1, max_size=60),
)
def test_the_fused_gcra_path_decides_like_the_specification(
    limit: Limit, delays: list[int]
) -> None:
    """``hit_gcra`` (the hot path) equals ``gcra()`` + ``most_restrictive()``, hit by hit."""
    clock = ManualClock()
    fused = MemoryRateLimitBackend(clock=clock)
    general = MemoryRateLimitBackend(clock=clock)
    for delay in delays:
        clock.advance(delay / 1_000_000)
        expected = most_restrictive(general.decide_now("k", [limit], 1, True))
        assert fused.hit_gcra("k", limit) == expected
        assert fused._entries == general._entries


async def test_the_state_closest_to_expiry_makes_room() -> None:
    clock = ManualClock()
    limiter = RateLimiter(max_keys=3, clock=clock)
    await limiter.hit("ip:busy", Limit(10, 60), cost=9)  # 9 of 10 used: far from expiry
    await limiter.hit("ip:idle", Limit(10, 60))  # 1 of 10 used: close to expiry
    await limiter.hit("ip:other", Limit(10, 60), cost=5)
    await limiter.hit("ip:new", Limit(10, 60))
    assert _stored(limiter) == 3
    assert (await limiter.peek("ip:busy", Limit(10, 60))).remaining == 1  # kept
    assert (await limiter.peek("ip:idle", Limit(10, 60))).remaining == 10  # dropped
