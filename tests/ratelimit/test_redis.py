"""Redis-only behaviour: keys, expiry, Redis time, batching, outages and recovery."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from rtkit import ManualClock, SystemClock
from rtkit.errors import ConfigurationError
from rtkit.ratelimit import Limit, RateLimiter
from rtkit.ratelimit.backends import redis as redis_backend
from rtkit_testing import PrivateRedis

pytestmark = pytest.mark.redis


def _hash_tag(key: str) -> str:
    """What Redis Cluster hashes: the text between the first '{' and the next '}'."""
    start = key.index("{")
    return key[start + 1 : key.index("}", start + 1)]


@pytest.fixture
async def limiter(redis_url: str, redis_prefix: str) -> AsyncIterator[RateLimiter]:
    async with RateLimiter.from_url(redis_url, prefix=redis_prefix) as limiter:
        yield limiter


async def test_time_comes_from_redis_by_default(limiter: RateLimiter) -> None:
    assert (await limiter.hit("k", "1/minute")).allowed
    denied = await limiter.hit("k", "1/minute")
    assert not denied.allowed
    assert 55 < denied.retry_after <= 60


async def test_the_system_clock_does_not_replace_redis_time(
    redis_url: str, redis_prefix: str
) -> None:
    class SkewedClock(SystemClock):
        def time(self) -> float:
            return super().time() - 3600  # an hour behind: ignored, Redis TIME decides

    async with RateLimiter.from_url(redis_url, prefix=redis_prefix, clock=SkewedClock()) as a:
        await a.hit("k", "1/minute")
    async with RateLimiter.from_url(redis_url, prefix=redis_prefix) as b:
        assert not (await b.hit("k", "1/minute")).allowed  # no skew between the two


async def test_keys_share_one_hash_tag_and_expire(
    limiter: RateLimiter, redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    limits = [Limit(5, 2), Limit(5, 3, "sliding_window"), Limit(5, 4, "sliding_window_counter")]
    await limiter.hit("user:{7}", *limits)

    # (COUNT: on a Redis shared with a large keyspace, SCAN may outlast the keys' TTL)
    found = redis_client.scan_iter(match="{" + redis_prefix + "*", count=10_000)
    keys = sorted([k async for k in found])
    assert len(keys) == 3
    assert all(k.startswith("{" + redis_prefix + "ratelimit:user:{7}}:") for k in keys)
    assert len({_hash_tag(k) for k in keys}) == 1  # one cluster slot for the whole hit
    for key in keys:  # idle keys vanish on their own, within two periods at most
        assert 0 < await redis_client.pttl(key) <= 8_001


async def test_idle_keys_vanish(
    limiter: RateLimiter, redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    await limiter.hit("k", Limit(10, 0.05), Limit(10, 0.05, "sliding_window"))
    deadline = time.monotonic() + 10
    while [k async for k in redis_client.scan_iter(match="{" + redis_prefix + "*", count=10_000)]:
        assert time.monotonic() < deadline, "rate limit keys did not expire"
        await asyncio.sleep(0.05)


async def test_concurrent_decisions_share_round_trips(redis_url: str, redis_prefix: str) -> None:
    async with RateLimiter.from_url(redis_url, prefix=redis_prefix) as limiter:
        decisions = await asyncio.gather(
            *(limiter.hit(f"k{i % 10}", "5/minute", "100/hour") for i in range(200))
        )
        backend = limiter._backend  # the Redis backend counts its pipelines
        assert backend.round_trips < 50  # type: ignore[attr-defined]
    assert sum(d.allowed for d in decisions) == 50


async def test_a_borrowed_client_is_left_open(
    redis_url: str, redis_prefix: str, redis_client: aioredis.Redis
) -> None:
    async with RateLimiter.from_url(redis_url, prefix=redis_prefix, redis=redis_client) as rl:
        assert (await rl.hit("k", "1/second")).allowed
    assert await redis_client.ping()


def test_bad_configuration_is_rejected(redis_url: str) -> None:
    with pytest.raises(ConfigurationError):
        RateLimiter.from_url("kafka://localhost")
    with pytest.raises(ConfigurationError):
        RateLimiter.from_url(redis_url, prefix="bad prefix with spaces")
    with pytest.raises(ConfigurationError):
        RateLimiter.from_url(redis_url, failure_policy="maybe")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        RateLimiter.from_url(redis_url, timeout=0)
    with pytest.raises(ConfigurationError):
        RateLimiter.from_url(redis_url, retry_interval=-1)
    with pytest.raises(ConfigurationError):
        RateLimiter(max_keys=0)
    with pytest.raises(ConfigurationError):
        RateLimiter.from_url(redis_url, redis=aioredis.Redis())  # not decode_responses


async def test_the_script_is_reloaded_after_a_script_flush(private_redis: PrivateRedis) -> None:
    async with RateLimiter.from_url(private_redis.url) as limiter:
        assert (await limiter.hit("k", "2/minute")).allowed
        admin = aioredis.Redis.from_url(private_redis.url)
        await admin.script_flush()
        await admin.aclose()
        assert (await limiter.hit("k", "2/minute")).allowed
        assert not (await limiter.hit("k", "2/minute")).allowed


async def test_without_hiredis_the_replies_are_read_by_redis_py(
    private_redis: PrivateRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The lane's own reply protocol needs hiredis; without it redis-py reads (the twin path)
    monkeypatch.setattr(redis_backend, "take_over", lambda conn: None)
    async with RateLimiter.from_url(private_redis.url) as limiter:
        decisions = await asyncio.gather(
            *(limiter.hit(f"k{i % 10}", "5/minute") for i in range(100))
        )
        assert sum(d.allowed for d in decisions) == 50
        assert limiter._backend._lane.wire is None  # type: ignore[attr-defined]
        admin = aioredis.Redis.from_url(private_redis.url)
        await admin.script_flush()
        await admin.aclose()
        assert (await limiter.hit("fresh", "2/minute")).allowed  # reloaded, queued path
        assert (await limiter.hit("fresh", "2/minute")).allowed
        assert not (await limiter.hit("fresh", "2/minute")).allowed


async def test_an_outage_falls_back_then_recovers(private_redis: PrivateRedis) -> None:
    clock = ManualClock()  # drives the retry interval (and the time of decisions)
    async with RateLimiter.from_url(
        private_redis.url, clock=clock, failure_policy="local", retry_interval=1.0, timeout=2
    ) as limiter:
        assert (await limiter.hit("k", "2/minute")).allowed
        assert (await limiter.hit("k", "2/minute")).allowed
        assert not (await limiter.hit("k", "2/minute")).allowed

        private_redis.stop()
        # The local fallback starts from nothing: it allows 2, then denies.
        local = [(await limiter.hit("k", "2/minute")).allowed for _ in range(3)]
        assert local == [True, True, False]

        private_redis.start()  # an empty Redis on the same port
        assert not (await limiter.hit("k", "2/minute")).allowed  # still local until retry
        clock.advance(1.0)
        assert (await limiter.hit("k", "2/minute")).allowed  # Redis again
        assert (await limiter.hit("k", "2/minute")).allowed
        assert not (await limiter.hit("k", "2/minute")).allowed


async def test_a_hung_redis_times_out_into_the_policy(private_redis: PrivateRedis) -> None:
    clock = ManualClock()
    async with RateLimiter.from_url(
        private_redis.url, clock=clock, failure_policy="closed", timeout=1.0
    ) as limiter:
        assert (await limiter.hit("k", "5/minute")).allowed
        private_redis.freeze()  # Redis hangs, sockets stay open
        try:
            started = time.monotonic()
            assert not (await limiter.hit("k", "5/minute")).allowed  # after the timeout
            assert time.monotonic() - started < 10
        finally:
            private_redis.thaw()
        clock.advance(1.0)
        assert (await limiter.hit("k", "5/minute")).allowed  # reconnected
        # The timed-out hit reached Redis and ran once it woke up: a decision that
        # timed out may or may not have been counted (here it was, so 2 are left).
        assert (await limiter.peek("k", "5/minute")).remaining in (2, 3)


async def test_cancelled_callers_do_not_disturb_the_others(
    redis_url: str, redis_prefix: str
) -> None:
    async with RateLimiter.from_url(redis_url, prefix=redis_prefix) as limiter:
        limit = Limit(1000, 60, "sliding_window")
        tasks = [asyncio.create_task(limiter.hit(f"k{i % 3}", limit)) for i in range(300)]
        await asyncio.sleep(0)
        for task in tasks[::7]:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        answered = [r for r in results if not isinstance(r, BaseException)]
        assert len(answered) >= 300 - len(tasks[::7])
        assert all(d.allowed for d in answered)
        # Every hit that was counted is visible, and the limiter still works:
        assert (await limiter.hit("k0", limit)).allowed


async def test_many_callers_each_hit_counted_exactly_once(
    redis_url: str, redis_prefix: str
) -> None:
    limit = Limit(100_000, 60, "sliding_window")
    async with RateLimiter.from_url(redis_url, prefix=redis_prefix) as limiter:

        async def caller(n: int) -> int:
            allowed = 0
            for i in range(40):
                allowed += (await limiter.hit(f"k{(n + i) % 4}", limit)).allowed
                if i % 9 == n % 9:
                    await asyncio.sleep(0)  # callers drift in and out of batches
            return allowed

        totals = await asyncio.wait_for(asyncio.gather(*(caller(n) for n in range(50))), 60)
        assert sum(totals) == 2000
        remaining = [(await limiter.peek(f"k{k}", limit)).remaining for k in range(4)]
        assert sum(limit.amount - r for r in remaining) == 2000


def test_the_packed_command_is_what_redis_py_would_send(redis_url: str) -> None:
    """rtkit packs EVALSHA itself (the hot path): byte for byte redis-py's packing."""
    from redis.asyncio.connection import Connection

    from rtkit.ratelimit.backends.redis import _SHA, RedisRateLimitBackend

    pack = Connection().pack_command
    for clock in (None, ManualClock(start=1_800_000_000.5)):
        limiter = RateLimiter.from_url(redis_url, prefix="p:", clock=clock)
        backend = limiter._backend
        assert isinstance(backend, RedisRateLimitBackend)
        now = "" if clock is None else "1800000000500000"
        for limits in ([Limit(5, 1)], [Limit(5, 1), Limit(9, 60, "sliding_window")]):
            for cost, count in ((1, True), (3, False)):
                args: list[str | int] = []
                for lim in limits:
                    code = lim.ident[0]
                    args += [code, lim.amount, lim.period_us, lim.capacity, lim.emission_us]
                keys = [backend.key("ip:1", lim) for lim in limits]
                expected = b"".join(
                    pack("EVALSHA", _SHA, len(keys), *keys, now, cost, int(count), *args)
                )
                assert backend._pack("ip:1", limits, cost, count) == expected
        for key in ("ip:1", "用户:42", "a}b{c"):  # the hot path's packing: the same bytes
            for limit in (Limit(5, 1), Limit(9, 60, "sliding_window")):
                assert backend._pack_one(key, limit) == backend._pack(key, [limit], 1, True)


async def test_a_killed_connection_falls_into_the_policy_then_reconnects(
    private_redis: PrivateRedis,
) -> None:
    clock = ManualClock()
    async with RateLimiter.from_url(
        private_redis.url, clock=clock, failure_policy="closed", retry_interval=1.0
    ) as limiter:
        assert (await limiter.hit("k", "5/minute")).allowed
        admin = aioredis.Redis.from_url(private_redis.url)
        await admin.client_kill_filter(_type="normal", skipme=True)  # the limiter's lane
        await admin.aclose()
        assert not (await limiter.hit("k", "5/minute")).allowed  # "closed": denied
        clock.advance(1.0)
        assert (await limiter.hit("k", "5/minute")).allowed  # a new connection
        assert (await limiter.peek("k", "5/minute")).remaining == 3
