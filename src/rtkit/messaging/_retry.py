"""Retries: the back-off policy and the delay tiers that hold messages while they wait."""

from __future__ import annotations

import math
import random

import pydantic

__all__ = ["RetryPolicy", "delay_tier_ms"]

_E12 = (1.0, 1.2, 1.5, 1.8, 2.2, 2.7, 3.3, 3.9, 4.7, 5.6, 6.8, 8.2)


def delay_tier_ms(delay: float) -> int:
    """The delay tier (milliseconds) that serves a delay of ``delay`` seconds.

    Delays snap to the nearest value of the E12 series (1.0, 1.2, 1.5, 1.8, 2.2,
    2.7, 3.3, 3.9, 4.7, 5.6, 6.8, 8.2 times a power of ten; at most about 10 % off),
    so jittered back-offs share a small, deterministic set of tier queues: about
    twelve per tenfold range of delays.
    """
    ms = max(1.0, delay * 1000)
    decade = 10.0 ** math.floor(math.log10(ms))
    candidates = [step * decade for step in _E12] + [10 * decade]
    best = min(candidates, key=lambda c: abs(math.log(c / ms)))
    return max(1, round(best))


class RetryPolicy(pydantic.BaseModel):
    """How often and how late a failed message is tried again.

    The first delivery is attempt 1; after attempt ``max_attempts`` fails the
    message goes to the dead-letter queue. Retry ``n`` waits
    ``initial_delay * multiplier ** (n - 1)`` seconds, plus or minus
    ``jitter`` (a fraction), capped at ``max_delay``.

    Example:
        ```python
        policy = RetryPolicy(max_attempts=5, initial_delay=0.5, max_delay=30)
        # retries after about 0.5, 1, 2 and 4 s (plus or minus 10 %), then a dead letter
        ```
    """

    model_config = pydantic.ConfigDict(frozen=True)

    max_attempts: int = pydantic.Field(3, ge=1, le=100)
    initial_delay: float = pydantic.Field(1.0, gt=0, le=86_400)
    multiplier: float = pydantic.Field(2.0, ge=1, le=100)
    max_delay: float = pydantic.Field(60.0, gt=0, le=86_400)
    jitter: float = pydantic.Field(0.1, ge=0, le=1)

    @classmethod
    def never(cls) -> RetryPolicy:
        """No retries: the first failure dead-letters the message."""
        return cls(max_attempts=1)

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        """The back-off in seconds before retry number ``retry`` (1-based)."""
        base = self.initial_delay * self.multiplier ** max(0, retry - 1)
        base = min(base, self.max_delay)
        spread = base * self.jitter * (rng or random).uniform(-1.0, 1.0)
        return max(0.001, min(self.max_delay, base + spread))
