"""The rate limiter: argument checks, the failure policy and its local fallback.

The algorithms are in ``_algorithms.py``; a backend (``backends/base.py``)
keeps the counts. A memory backend is called synchronously (the hot path: a
decision never awaits), any other backend through its protocol, with the
failure policy answering while it is unavailable.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Literal, get_args

from .._core.clock import Clock, SystemClock
from .._core.component import Component
from .._core.validate import check_int, check_key, check_seconds
from ..errors import BackendUnavailable, ConfigurationError, ValidationError
from ..telemetry._metrics import count_decisions
from ._algorithms import most_restrictive
from ._limits import US, Decision, Limit, Outcome, parse
from .backends.base import RateLimitBackend
from .backends.memory import DEFAULT_MAX_KEYS, MemoryRateLimitBackend

__all__ = ["FailurePolicy", "RateLimiter"]

logger = logging.getLogger("rtkit.ratelimit")

FailurePolicy = Literal["open", "closed", "local"]
"""What a Redis-backed limiter does while Redis is unreachable."""

MAX_COST = 1_000_000
MAX_LIMITS_PER_CALL = 16

_POLICIES: tuple[str, ...] = get_args(FailurePolicy)
# The int 1 (CPython keeps one): ``cost is _ONE`` is one check for "1, and not True or 1.0";
# any other cost of 1 just takes the general path.
_ONE = 1
_KEY = "rate limit key"


class RateLimiter(Component):
    """Counts hits per key against one or more limits; memory or Redis backed.

    ``RateLimiter()`` is a private in-memory limiter (one process);
    ``RateLimiter.from_url("redis://...")`` shares the counts between every
    process on that Redis and prefix, ``from_url("memory://NAME")`` between the
    limiters of one process opened with that name. After `close()` every
    operation raises [`Closed`][rtkit.errors.Closed].

    ```python
    limiter = RateLimiter()
    decision = await limiter.hit("ip:203.0.113.9", "100/minute")
    ```

    Args:
        backend: Where the counts are kept; ``None`` for a private memory backend.
        clock: Where time comes from (default: the system clock). On Redis,
            ``from_url`` gives the backend this clock: unless it is the system
            clock, its time is sent with every decision instead of Redis ``TIME``.
        max_keys: At most this many (key, limit) states are kept in memory (by
            the memory backend, and by the local fallback); beyond that the state
            closest to expiry among the oldest few is dropped (it starts afresh if
            it comes back). Expired states are dropped too (amortized O(1) per hit).
        failure_policy: What happens while a remote backend is unreachable:
            ``"local"`` (default) decides with an in-process memory limiter,
            ``"open"`` allows every hit, ``"closed"`` denies every hit.
        retry_interval: After a failure, the remote backend is not tried again
            for this many seconds (the policy answers meanwhile).

    Raises:
        rtkit.errors.ConfigurationError: A bad setting.
    """

    _backends = {
        "memory": "rtkit.ratelimit.backends.memory:MemoryRateLimitBackend",
        "redis": "rtkit.ratelimit.backends.redis:RedisRateLimitBackend",
    }

    def __init__(
        self,
        backend: RateLimitBackend | None = None,
        *,
        clock: Clock | None = None,
        max_keys: int = DEFAULT_MAX_KEYS,
        failure_policy: FailurePolicy = "local",
        retry_interval: float = 1.0,
    ) -> None:
        if failure_policy not in _POLICIES:
            raise ConfigurationError(
                f"unknown failure_policy {failure_policy!r} (expected one of "
                f"{', '.join(_POLICIES)})"
            )
        self._clock: Clock = clock or SystemClock()
        self._retry_interval = check_seconds(retry_interval, "retry_interval")
        self._max_keys = check_int(max_keys, "max_keys")
        if backend is None:
            backend = MemoryRateLimitBackend(clock=clock, max_keys=max_keys)
        self._backend: RateLimitBackend = backend
        # A memory backend is called synchronously: hence atomic without a lock.
        self._memory = backend if isinstance(backend, MemoryRateLimitBackend) else None
        # A remote backend's one-limit, cost-1 hit, if it has one (Redis: a fused round trip).
        self._hit_one: Callable[[str, Limit], Awaitable[Decision]] | None = (
            None if self._memory is not None else getattr(backend, "hit_one", None)
        )
        self.failure_policy: FailurePolicy = failure_policy
        self._down_until: float | None = None
        self._fallback: MemoryRateLimitBackend | None = None

    async def _start(self) -> None:
        """Connect and prepare the backend (if it is unreachable, the policy applies)."""
        counted = count_decisions(self.hit)
        if counted is not None:  # metrics on: decisions are counted (rtkit.telemetry)
            self.hit = counted  # type: ignore[method-assign]
        try:
            await self._backend.start()
        except BackendUnavailable as exc:
            self._mark_down(exc)

    async def _close(self) -> None:
        """Release the backend (a borrowed Redis client stays open)."""
        await self._backend.close()

    async def hit(self, key: str, *limits: Limit | str, cost: int = 1) -> Decision:
        """Count a hit of ``cost`` on ``key`` against every limit, atomically.

        Either every limit allows it and it is counted under all of them, or it
        is counted under none. Denied hits are not counted.

        Args:
            key: What is limited, e.g. ``"ip:203.0.113.9"``: a *key* in rtkit's
                validation rules (a short kind and an id; at most 512 bytes).
            *limits: One or more [`Limit`][rtkit.ratelimit.Limit] objects or
                strings like ``"100/minute"`` (strings use GCRA).
            cost: How many hits this counts as (at most each limit's capacity).

        Returns:
            The most restrictive limit's [`Decision`][rtkit.ratelimit.Decision].

        Raises:
            rtkit.errors.ValidationError: A bad key or cost.
            rtkit.errors.ConfigurationError: No limits, or a malformed limit.
            rtkit.errors.Closed: The limiter was closed.
        """
        if not self._live:
            await self._ready()
        if cost is _ONE and len(limits) == 1:  # the hot path: one limit, a cost of 1
            limit: Limit | str | None = limits[0]
            if type(limit) is not Limit:
                limit = parse(limit, "gcra", None) if type(limit) is str else None  # cached
            if limit is not None and type(key) is str and 0 < len(key) <= 64 and key.isprintable():
                memory = self._memory
                if memory is not None:
                    if limit.algorithm == "gcra":
                        return memory.hit_gcra(key, limit)  # in one frame
                elif self._hit_one is not None and self._down_until is None:
                    try:
                        return await self._hit_one(key, limit)  # Redis: straight to the lane
                    except BackendUnavailable as exc:
                        self._mark_down(exc)
                    return await self._decide(key, (limit,), 1, count=True)
        memory = self._memory
        parsed = self._check(key, limits, cost)
        if memory is not None:
            return most_restrictive(memory.decide_now(key, parsed, cost, True))
        if self._down_until is None:  # the backend is up: ask it (one frame less)
            try:
                return most_restrictive(await self._backend.decide(key, parsed, cost, True))
            except BackendUnavailable as exc:
                self._mark_down(exc)
        return await self._decide(key, parsed, cost, count=True)

    async def peek(self, key: str, *limits: Limit | str) -> Decision:
        """What a hit of cost 1 would get now, without counting it.

        ``remaining`` is the number of hits still possible (before any new hit).

        Raises:
            rtkit.errors.ValidationError: A bad key.
            rtkit.errors.ConfigurationError: No limits, or a malformed limit.
            rtkit.errors.Closed: The limiter was closed.
        """
        if not self._live:
            await self._ready()
        parsed = self._check(key, limits, 1)
        if self._memory is not None:
            return most_restrictive(self._memory.decide_now(key, parsed, 1, False))
        return await self._decide(key, parsed, 1, count=False)

    async def reset(self, key: str, *limits: Limit | str) -> None:
        """Forget ``key``'s hits under ``limits``, as if it had never been seen.

        Raises:
            rtkit.errors.ValidationError: A bad key.
            rtkit.errors.ConfigurationError: No limits, or a malformed limit.
            rtkit.errors.Closed: The limiter was closed.
        """
        await self._ready()
        key = check_key(key, _KEY)
        parsed = _normalize(limits)
        try:
            if self._backend_usable():
                await self._backend.reset(key, parsed)
                return
        except BackendUnavailable as exc:
            self._mark_down(exc)
        if self._fallback is not None:
            await self._fallback.reset(key, parsed)

    @staticmethod
    def _check(key: str, limits: Sequence[Limit | str], cost: int) -> Sequence[Limit]:
        """Validate a call's arguments (fast for the common case); return the limits."""
        if not (type(key) is str and 0 < len(key) <= 64 and key.isprintable()):
            check_key(key, _KEY)  # the slow path explains what is wrong
        parsed: Sequence[Limit]
        if len(limits) != 1:
            parsed = _normalize(limits)
        elif type(limits[0]) is Limit:
            parsed = limits  # type: ignore[assignment]
        elif type(limits[0]) is str:
            parsed = (parse(limits[0], "gcra", None),)  # cached
        else:
            parsed = _normalize(limits)
        if type(cost) is not int or cost != 1:
            _check_cost(cost, parsed)
        return parsed

    async def _decide(
        self, key: str, limits: Sequence[Limit], cost: int, *, count: bool
    ) -> Decision:
        if self._backend_usable():
            try:
                return most_restrictive(await self._backend.decide(key, limits, cost, count))
            except BackendUnavailable as exc:
                self._mark_down(exc)
        return most_restrictive(await self._degraded(key, limits, cost, count))

    def _backend_usable(self) -> bool:
        if self._down_until is None:
            return True
        if self._clock.monotonic() < self._down_until:
            return False
        self._down_until = None
        logger.info("rate limiter: trying the backend again")
        return True

    def _mark_down(self, exc: BackendUnavailable) -> None:
        if self._memory is not None:
            raise exc
        if self._down_until is None:
            self._fallback = None  # each outage starts with a fresh local limiter
            logger.warning(
                "rate limiter backend unavailable, failure policy %r applies: %s",
                self.failure_policy,
                exc,
            )
        self._down_until = self._clock.monotonic() + self._retry_interval

    async def _degraded(
        self, key: str, limits: Sequence[Limit], cost: int, count: bool
    ) -> list[Outcome]:
        if self.failure_policy == "local":
            if self._fallback is None:
                self._fallback = MemoryRateLimitBackend(clock=self._clock, max_keys=self._max_keys)
            return await self._fallback.decide(key, limits, cost, count)
        if self.failure_policy == "open":
            return [(True, lim.capacity, lim.capacity, 0, 0) for lim in limits]
        wait = round(self._retry_interval * US)
        return [(False, lim.capacity, 0, wait, wait) for lim in limits]


def _check_cost(cost: int, limits: Sequence[Limit]) -> None:
    if not isinstance(cost, int) or isinstance(cost, bool) or not 1 <= cost <= MAX_COST:
        raise ValidationError(f"cost must be an int from 1 to {MAX_COST}, got {cost!r}")
    for limit in limits:
        if cost > limit.capacity:
            raise ValidationError(
                f"a hit of cost {cost} can never pass the limit {limit} (capacity {limit.capacity})"
            )


def _normalize(limits: Sequence[Limit | str]) -> list[Limit]:
    if not limits:
        raise ConfigurationError("give at least one limit, e.g. '100/minute'")
    if len(limits) > MAX_LIMITS_PER_CALL:
        raise ConfigurationError(f"at most {MAX_LIMITS_PER_CALL} limits per call")
    parsed: dict[str, Limit] = {}  # by ident: equivalent limits share one state
    for item in limits:
        if isinstance(item, str):
            item = parse(item, "gcra", None)
        elif not isinstance(item, Limit):
            raise ConfigurationError(
                f"a limit must be a Limit or a string like '100/minute', got {item!r}"
            )
        parsed.setdefault(item.ident, item)
    return list(parsed.values())
