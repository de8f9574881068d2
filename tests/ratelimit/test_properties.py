"""Property-based tests: the limits hold for any timing, and Redis decides like memory.

Times are whole microseconds, read from the injected ``ManualClock`` exactly as
the limiter reads them. The guarantees tested, per algorithm:

* ``sliding_window``: in every window ``(t - period, t]`` ending at an admitted
  hit, the admitted cost is at most ``amount``.
* ``gcra``: for every two admitted hits at ``t1 <= t2``, the cost admitted in
  ``[t1, t2]`` is at most ``burst + (t2 - t1) / emission`` where ``emission`` is
  ``period / amount`` rounded up to a whole microsecond (integer arithmetic).
  With the default ``burst == amount`` that is at most ``2 * amount`` in any
  period, and ``amount`` per period on average.
* ``sliding_window_counter`` (approximate): in every fixed window
  ``[k * period, (k + 1) * period)`` the admitted cost is at most ``amount``,
  hence at most ``2 * amount`` in any sliding window of one period.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule, run_state_machine_as_test

from rtkit import ManualClock
from rtkit.ratelimit import Limit, RateLimiter
from rtkit.ratelimit._algorithms import now_us
from rtkit.ratelimit._limits import US

START = 1_800_000_000.0

# (delay in microseconds before the hit, cost)
hits = st.lists(
    st.tuples(
        st.one_of(st.just(0), st.integers(0, 50_000), st.integers(0, 3_000_000)),
        st.integers(1, 3),
    ),
    min_size=1,
    max_size=80,
)
limits = st.builds(
    Limit,
    amount=st.integers(3, 8),
    period=st.sampled_from([0.5, 1.0, 2.5]),
    algorithm=st.sampled_from(["gcra", "sliding_window", "sliding_window_counter"]),
)
gcra_limits = st.builds(
    Limit,
    amount=st.integers(1, 8),
    period=st.sampled_from([0.3, 1.0, 7.0]),
    burst=st.integers(3, 9),
)


async def _admitted(limit: Limit, sequence: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Run ``sequence`` on a memory limiter; return the admitted (time_us, cost)."""
    clock = ManualClock(start=START)
    limiter = RateLimiter(clock=clock)
    admitted = []
    for delay, cost in sequence:
        clock.advance(delay / US)
        if (await limiter.hit("k", limit, cost=cost)).allowed:
            admitted.append((now_us(clock), cost))
    return admitted


@settings(max_examples=150, deadline=None)
@given(limit=limits, sequence=hits)
async def test_each_algorithm_keeps_its_guarantee(
    limit: Limit, sequence: list[tuple[int, int]]
) -> None:
    admitted = await _admitted(limit, sequence)
    assert admitted, "a fresh key always admits its first hit"
    if limit.algorithm == "sliding_window":
        for end, _ in admitted:
            inside = sum(c for t, c in admitted if end - limit.period_us < t <= end)
            assert inside <= limit.amount
    elif limit.algorithm == "gcra":
        _assert_gcra(limit, admitted)
    else:
        per_window: dict[int, int] = {}
        for t, c in admitted:
            per_window[t // limit.period_us] = per_window.get(t // limit.period_us, 0) + c
        assert max(per_window.values()) <= limit.amount


@settings(max_examples=100, deadline=None)
@given(limit=gcra_limits, sequence=hits)
async def test_gcra_with_any_burst(limit: Limit, sequence: list[tuple[int, int]]) -> None:
    _assert_gcra(limit, await _admitted(limit, sequence))


def _assert_gcra(limit: Limit, admitted: list[tuple[int, int]]) -> None:
    for i, (t1, _) in enumerate(admitted):
        total = 0
        for t2, c in admitted[i:]:
            total += c
            assert total * limit.emission_us <= limit.capacity * limit.emission_us + (t2 - t1)


@settings(max_examples=60, deadline=None)
@given(limit=limits)
async def test_a_steady_stream_gets_the_advertised_rate(limit: Limit) -> None:
    """Hitting often for many periods admits about ``amount`` per period.

    The counter is approximate and errs on the strict side: with few hits per
    period it may admit noticeably less (never more).
    """
    step = limit.period_us // (limit.amount * 4)
    periods = 6
    sequence = [(step, 1)] * (periods * limit.amount * 4)
    admitted = len(await _admitted(limit, sequence))
    if limit.algorithm == "sliding_window_counter":
        assert periods * limit.amount // 2 <= admitted <= periods * limit.amount
    else:
        burst = limit.capacity if limit.algorithm == "gcra" else 0
        assert (periods - 1) * limit.amount <= admitted <= periods * limit.amount + burst


# --- memory and Redis decide alike -------------------------------------------

LIMITS = [
    Limit(3, 1, "gcra"),
    Limit(2, 0.7, "gcra", burst=4),
    Limit(4, 1.5, "sliding_window"),
    Limit(5, 3, "sliding_window"),
    Limit(3, 1, "sliding_window_counter"),
    Limit(7, 0.9, "sliding_window_counter"),
]
chosen_limits = st.lists(st.sampled_from(LIMITS), min_size=1, max_size=3)
keys = st.sampled_from(["a", "b"])


class MemoryVsRedis(RuleBasedStateMachine):
    """Random hits, peeks, resets and waits on both backends, with one ManualClock.

    Every decision must be identical, field by field (Redis gets the clock's time).
    """

    url = ""
    prefix = ""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = ManualClock(start=START)
        self.memory = RateLimiter(clock=self.clock)
        self.redis = RateLimiter.from_url(self.url, prefix=self.prefix, clock=self.clock)
        self.run_id = uuid.uuid4().hex[:8]  # a fresh key space for each example

    def both(self, method: str, key: str, limits: list[Limit], **kwargs: int) -> None:
        key = f"{self.run_id}:{key}"
        expected = self.loop.run_until_complete(
            getattr(self.memory, method)(key, *limits, **kwargs)
        )
        actual = self.loop.run_until_complete(getattr(self.redis, method)(key, *limits, **kwargs))
        assert actual == expected

    @rule(seconds=st.one_of(st.integers(0, 50_000), st.integers(0, 2_000_000)))
    def wait(self, seconds: int) -> None:
        self.clock.advance(seconds / US)

    @rule(key=keys, limits=chosen_limits, cost=st.integers(1, 3))
    def hit(self, key: str, limits: list[Limit], cost: int) -> None:
        self.both("hit", key, limits, cost=min([cost, *(lim.capacity for lim in limits)]))

    @rule(key=keys, limits=chosen_limits)
    def peek(self, key: str, limits: list[Limit]) -> None:
        self.both("peek", key, limits)

    @rule(key=keys, limits=chosen_limits)
    def reset(self, key: str, limits: list[Limit]) -> None:
        self.both("reset", key, limits)

    def teardown(self) -> None:
        self.loop.run_until_complete(self.redis.close())
        self.loop.close()


@pytest.mark.redis
def test_memory_and_redis_decide_alike(redis_url: str, redis_prefix: str) -> None:
    MemoryVsRedis.url, MemoryVsRedis.prefix = redis_url, redis_prefix
    run_state_machine_as_test(
        MemoryVsRedis,
        settings=settings(
            max_examples=100,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
