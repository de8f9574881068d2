"""The limiter's share of the one shape: memory names, Closed after close, from_url options."""

from __future__ import annotations

import gc
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from rtkit import ManualClock
from rtkit._core.lifecycle import DEFAULT_TIMEOUT
from rtkit._core.urls import BackendTarget
from rtkit.errors import Closed, ConfigurationError
from rtkit.ratelimit import Limit, RateLimiter
from rtkit.ratelimit.backends.memory import MemoryRateLimitBackend
from rtkit_testing import Backend, unique_name

# -- memory://NAME -------------------------------------------------------------------------


async def test_limiters_on_one_memory_name_share_counts() -> None:
    name = unique_name("limiter")
    a = RateLimiter.from_url(f"memory://{name}")
    b = RateLimiter.from_url(f"memory://{name}")
    apart = [
        RateLimiter.from_url(f"memory://{name}-other"),
        RateLimiter.from_url(f"memory://{name}", prefix="other-app:"),
        RateLimiter.from_url("memory://"),
        RateLimiter(),
    ]
    try:
        for limit in ("2/minute", Limit(2, 60, "sliding_window")):
            assert (await a.hit("ip:1", limit)).allowed
            assert (await b.hit("ip:1", limit)).allowed
            assert not (await a.hit("ip:1", limit)).allowed  # the two hits were counted once
            assert (await b.peek("ip:1", limit)).remaining == 0
            for limiter in apart:
                assert (await limiter.peek("ip:1", limit)).remaining == 2
            await b.reset("ip:1", limit)
            assert (await a.peek("ip:1", limit)).remaining == 2
    finally:
        for limiter in (a, b, *apart):
            await limiter.close()


async def test_the_counts_of_a_memory_name_live_while_a_limiter_holds_them() -> None:
    name = unique_name("limiter")
    a = RateLimiter.from_url(f"memory://{name}")
    await a.hit("k", "1/minute")
    b = RateLimiter.from_url(f"memory://{name}")
    await a.close()
    del a
    gc.collect()
    assert not (await b.peek("k", "1/minute")).allowed  # b still holds them
    await b.close()
    del b
    gc.collect()
    c = RateLimiter.from_url(f"memory://{name}")  # nobody held them: a fresh start
    assert (await c.peek("k", "1/minute")).allowed
    await c.close()


async def test_max_keys_bounds_a_shared_memory_backend() -> None:
    name = unique_name("limiter")
    a = RateLimiter.from_url(f"memory://{name}", max_keys=50, clock=ManualClock())
    b = RateLimiter.from_url(f"memory://{name}", max_keys=50, clock=ManualClock())
    for i in range(500):
        await (a if i % 2 else b).hit(f"ip:{i}", "10/minute")
    assert len(a._backend) == len(b._backend) == 50  # type: ignore[arg-type]
    await a.close()
    await b.close()


# -- Closed after close ----------------------------------------------------------------------

OPERATIONS: dict[str, Callable[[RateLimiter], Awaitable[Any]]] = {
    "start": lambda lim: lim.start(),
    "hit": lambda lim: lim.hit("k", "1/minute"),
    "hit with a bad key": lambda lim: lim.hit("", "1/minute"),
    "peek": lambda lim: lim.peek("k", "1/minute"),
    "reset": lambda lim: lim.reset("k", "1/minute"),
}


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
async def test_every_operation_raises_closed_after_close(backend: Backend, operation: str) -> None:
    limiter = RateLimiter.from_url(backend.url, prefix=backend.prefix)
    assert (await limiter.hit("k", "1/minute")).allowed
    await limiter.close()
    await limiter.close()
    with pytest.raises(Closed):
        await OPERATIONS[operation](limiter)
    assert limiter.failure_policy == "local"  # attributes stay readable


async def test_a_limiter_never_started_closes(backend: Backend) -> None:
    limiter = RateLimiter.from_url(backend.url, prefix=backend.prefix)
    await limiter.close()
    with pytest.raises(Closed):
        await limiter.hit("k", "1/minute")


# -- from_url options ------------------------------------------------------------------------


def test_max_keys_goes_to_the_memory_backend_and_the_limiter() -> None:
    limiter = RateLimiter.from_url("memory://", max_keys=7, retry_interval=3.0)
    backend = limiter._backend
    assert isinstance(backend, MemoryRateLimitBackend)
    assert (backend._max_keys, limiter._max_keys, limiter._retry_interval) == (7, 7, 3.0)


@pytest.mark.redis
async def test_redis_options_go_where_they_belong(redis_url: str) -> None:
    limiter = RateLimiter.from_url(redis_url, max_keys=7, timeout=0.5, failure_policy="closed")
    backend: Any = limiter._backend
    assert (limiter._max_keys, limiter.failure_policy) == (7, "closed")  # the fallback's bound
    assert (backend._timeout, backend._handle.timeout) == (0.5, 0.5)
    await limiter.close()
    default: Any = RateLimiter.from_url(redis_url)
    assert default._backend._timeout == DEFAULT_TIMEOUT == 5.0
    await default.close()


@pytest.mark.redis
async def test_only_a_clock_other_than_the_system_clock_reaches_redis(redis_url: str) -> None:
    clock = ManualClock()
    limiter: Any = RateLimiter.from_url(redis_url, clock=clock)
    assert limiter._backend._clock is clock
    assert limiter._clock is clock
    await limiter.close()
    plain: Any = RateLimiter.from_url(redis_url)
    assert plain._backend._clock is None
    await plain.close()


def test_from_url_refuses_options_nobody_takes() -> None:
    with pytest.raises(ConfigurationError, match=r"RateLimiter\.from_url.*store"):
        RateLimiter.from_url("memory://", store=object())
    # memory waits for nothing: the Redis option is ignored, one call fits every URL
    assert RateLimiter.from_url("memory://", timeout=1) is not None


@pytest.mark.parametrize(
    "options",
    [{"max_keys": 0}, {"max_keys": 1.5}, {"retry_interval": 0}, {"failure_policy": "maybe"}],
)
def test_bad_settings_are_configuration_errors(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        RateLimiter.from_url("memory://", **options)
    with pytest.raises(ConfigurationError):
        RateLimiter(**options)


async def test_a_backend_object_is_used_as_given() -> None:
    target = BackendTarget("RateLimiter", "memory", "memory://shared", name=unique_name())
    async with (
        RateLimiter(MemoryRateLimitBackend.open(target)) as a,
        RateLimiter(MemoryRateLimitBackend.open(target)) as b,
    ):
        await a.hit("k", "1/minute")
        assert not (await b.peek("k", "1/minute")).allowed
