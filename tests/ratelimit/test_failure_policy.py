"""What a Redis-backed limiter does when Redis cannot be reached (a closed port)."""

from __future__ import annotations

import logging
import socket

import pytest

from rtkit import ManualClock
from rtkit.ratelimit import Decision, RateLimiter


@pytest.fixture
def dead_url() -> str:
    """A Redis URL on a port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"redis://127.0.0.1:{port}"


async def test_local_is_the_default_and_limits_in_process(
    dead_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    limiter = RateLimiter.from_url(dead_url, timeout=1)
    assert limiter.failure_policy == "local"
    with caplog.at_level(logging.WARNING, logger="rtkit.ratelimit"):
        async with limiter:
            decisions = [await limiter.hit("ip:1", "3/minute") for _ in range(4)]
            assert (await limiter.peek("ip:1", "3/minute")).remaining == 0
            await limiter.reset("ip:1", "3/minute")
            assert (await limiter.peek("ip:1", "3/minute")).remaining == 3
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert 19 < decisions[3].retry_after <= 20
    warnings = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(warnings) == 1  # logged once per outage, not once per hit


async def test_open_allows_everything(dead_url: str) -> None:
    async with RateLimiter.from_url(dead_url, failure_policy="open", timeout=1) as limiter:
        decisions = [await limiter.hit("ip:1", "3/minute") for _ in range(10)]
    assert all(d == Decision(True, 3, 3, 0.0, 0.0) for d in decisions)


async def test_closed_denies_everything(dead_url: str) -> None:
    clock = ManualClock()
    async with RateLimiter.from_url(
        dead_url, failure_policy="closed", retry_interval=2.0, clock=clock, timeout=1
    ) as limiter:
        decision = await limiter.hit("ip:1", "3/minute")
        assert decision == Decision(False, 3, 0, 2.0, 2.0)
        clock.advance(2.0)  # Redis is tried again, and still fails
        assert not (await limiter.hit("ip:1", "3/minute")).allowed


async def test_bad_input_is_still_rejected_while_redis_is_down(dead_url: str) -> None:
    from rtkit.errors import ConfigurationError, ValidationError

    async with RateLimiter.from_url(dead_url, failure_policy="open", timeout=1) as limiter:
        with pytest.raises(ValidationError):
            await limiter.hit("", "3/minute")
        with pytest.raises(ConfigurationError):
            await limiter.hit("k", "3/fortnight")
