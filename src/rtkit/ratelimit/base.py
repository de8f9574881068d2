"""The rate limiter's public contract and the algorithms every backend shares.

All time arithmetic is done in whole **microseconds** (``int``), so the memory
backend (Python) and the Redis backend (Lua, whose numbers are doubles) take
exactly the same decisions: every integer involved stays far below 2**53. The
functions ``gcra``, ``window`` and ``counter`` below are the specification;
``resources/ratelimit.lua`` is a line-by-line port of them.
"""

from __future__ import annotations

import functools
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol, get_args

from .._backends import DEFAULT_PREFIX, backend_kind
from .._clock import Clock, SystemClock
from .._lifecycle import AsyncResource
from .._validation import check_id
from ..errors import BackendUnavailable, ConfigurationError, RateLimited, ValidationError

if TYPE_CHECKING:
    import redis.asyncio as aioredis

__all__ = [
    "Algorithm",
    "Decision",
    "FailurePolicy",
    "Limit",
    "RateLimiter",
    "parse_limit",
]

logger = logging.getLogger("rtkit.ratelimit")

Algorithm = Literal["gcra", "sliding_window", "sliding_window_counter"]
"""The algorithms a [`Limit`][rtkit.ratelimit.Limit] can use."""

FailurePolicy = Literal["open", "closed", "local"]
"""What a Redis-backed limiter does while Redis is unreachable."""

US = 1_000_000
"""Microseconds per second."""

MAX_COST = 1_000_000
MAX_LIMITS_PER_CALL = 16
MAX_WINDOW_AMOUNT = 100_000
# Keeps every time value (now + tolerance) an exact integer in a double.
_MAX_SPAN_US = 2**48

_ALGORITHMS: tuple[str, ...] = get_args(Algorithm)
_ALGO_CODES: dict[str, str] = {"gcra": "g", "sliding_window": "w", "sliding_window_counter": "c"}

_UNITS: dict[str, float] = {}
for _names, _seconds in (
    (("s", "sec", "secs", "second", "seconds"), 1.0),
    (("m", "min", "mins", "minute", "minutes"), 60.0),
    (("h", "hr", "hrs", "hour", "hours"), 3600.0),
    (("d", "day", "days"), 86400.0),
):
    for _name in _names:
        _UNITS[_name] = _seconds

_LIMIT_RE = re.compile(
    r"^\s*(?P<amount>\d+)\s*(?:/|\bper\b)\s*(?P<count>\d+(?:\.\d+)?)?\s*(?P<unit>[a-z]+)\s*$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Limit:
    """At most ``amount`` hits per ``period`` seconds, enforced by ``algorithm``.

    Algorithms:

    * ``"gcra"`` (the default): a token bucket (generic cell rate algorithm) that
      refills one hit every ``period / amount`` seconds and holds at most ``burst``
      hits (default ``amount``). O(1) state: one timestamp.
    * ``"sliding_window"``: exact; never more than ``amount`` hits in *any*
      window of ``period`` seconds. Keeps at most ``amount`` timestamps per key.
    * ``"sliding_window_counter"``: approximate sliding window from two fixed
      window counters weighted by overlap. O(1) state.

    Args:
        amount: Hits allowed per period (at least 1).
        period: The period in seconds (at least 1 ms).
        algorithm: One of ``"gcra"``, ``"sliding_window"``, ``"sliding_window_counter"``.
        burst: GCRA only: how many hits may pass at once (default ``amount``).

    Raises:
        ConfigurationError: A value is out of range.
    """

    amount: int
    period: float
    algorithm: Algorithm = "gcra"
    burst: int | None = None
    period_us: int = field(init=False, repr=False, compare=False)
    capacity: int = field(init=False, repr=False, compare=False)
    emission_us: int = field(init=False, repr=False, compare=False)
    ident: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.amount, int) or isinstance(self.amount, bool) or self.amount < 1:
            raise ConfigurationError(f"a limit's amount must be an int >= 1, got {self.amount!r}")
        if (
            not isinstance(self.period, int | float)
            or isinstance(self.period, bool)
            or not math.isfinite(self.period)
            or self.period < 0.001
        ):
            raise ConfigurationError(
                f"a limit's period must be a number of seconds >= 0.001, got {self.period!r}"
            )
        if self.algorithm not in _ALGORITHMS:
            raise ConfigurationError(
                f"unknown rate limit algorithm {self.algorithm!r} "
                f"(expected one of {', '.join(_ALGORITHMS)})"
            )
        if self.burst is not None:
            if self.algorithm != "gcra":
                raise ConfigurationError("burst applies to the gcra algorithm only")
            if not isinstance(self.burst, int) or isinstance(self.burst, bool) or self.burst < 1:
                raise ConfigurationError(f"burst must be an int >= 1, got {self.burst!r}")
        if self.algorithm == "sliding_window" and self.amount > MAX_WINDOW_AMOUNT:
            raise ConfigurationError(
                f"an exact sliding window keeps one timestamp per hit: amount must be "
                f"<= {MAX_WINDOW_AMOUNT} (use gcra or sliding_window_counter)"
            )
        period_us = round(self.period * US)
        capacity = self.burst if self.burst is not None else self.amount
        emission_us = -(-period_us // self.amount)  # ceil: never faster than asked
        if max(period_us, emission_us * capacity) > _MAX_SPAN_US:
            raise ConfigurationError(f"limit {self.amount}/{self.period}s spans too long a time")
        code = _ALGO_CODES[self.algorithm]
        object.__setattr__(self, "period_us", period_us)
        object.__setattr__(self, "capacity", capacity)
        object.__setattr__(self, "emission_us", emission_us)
        object.__setattr__(self, "ident", f"{code}:{self.amount}:{period_us}:{capacity}")

    @classmethod
    def parse(cls, text: str, *, algorithm: Algorithm = "gcra", burst: int | None = None) -> Limit:
        """Parse ``"100/minute"``, ``"10/second"``, ``"5/10 seconds"``, ``"1 per day"``.

        Units: ``s``/``sec``/``second``, ``m``/``min``/``minute``, ``h``/``hr``/``hour``,
        ``d``/``day`` (singular or plural), optionally preceded by a count.

        Raises:
            ConfigurationError: ``text`` is not a limit.
        """
        if not isinstance(text, str):
            raise ConfigurationError(f"a limit must be a string like '100/minute', got {text!r}")
        return _parse(text, algorithm, burst)

    def __str__(self) -> str:
        per = "second" if self.period == 1 else f"{self.period:g} seconds"
        extra = "" if self.burst is None else f", burst {self.burst}"
        return f"{self.amount}/{per} ({self.algorithm}{extra})"


@functools.lru_cache(maxsize=256)
def _parse(text: str, algorithm: Algorithm, burst: int | None) -> Limit:
    match = _LIMIT_RE.match(text)
    unit = _UNITS.get(match.group("unit").lower()) if match else None
    if match is None or unit is None:
        raise ConfigurationError(
            f"cannot parse rate limit {text!r}: expected e.g. '100/minute', "
            "'5/10 seconds' or '1000 per hour'"
        )
    count = float(match.group("count") or 1)
    return Limit(int(match.group("amount")), count * unit, algorithm, burst)


parse_limit = Limit.parse
"""The same as [`Limit.parse`][rtkit.ratelimit.Limit.parse]."""


@dataclass(frozen=True)
class Decision:
    """The answer to a hit or a peek.

    Attributes:
        allowed: Whether the hit passed (for ``peek``: whether one would pass now).
        limit: The most restrictive limit's capacity: ``amount`` for the window
            algorithms, ``burst`` for GCRA.
        remaining: Hits still possible right now under that limit.
        reset_after: Seconds until that limit is back to its full capacity.
        retry_after: Seconds to wait before the same hit can pass; ``0.0`` when allowed.
    """

    allowed: bool
    limit: int
    remaining: int
    reset_after: float
    retry_after: float

    def headers(self) -> dict[str, str]:
        """HTTP headers describing this decision.

        ``RateLimit-Limit``, ``RateLimit-Remaining``, ``RateLimit-Reset`` (whole
        seconds, rounded up) and, when denied, ``Retry-After``.
        """
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(math.ceil(self.reset_after)),
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        return headers

    def raise_for_limit(self) -> None:
        """Raise [`RateLimited`][rtkit.errors.RateLimited] if this hit was denied."""
        if not self.allowed:
            raise RateLimited(retry_after=self.retry_after)


Outcome = tuple[bool, int, int, int, int]
"""One limit's verdict, as backends produce it: ``(allowed, limit, remaining,
reset_us, retry_us)``, times in microseconds (a plain tuple: this is the hot path)."""


# --- the algorithms (ported line by line to resources/ratelimit.lua) ---------


def gcra(tat: int | None, now: int, limit: Limit, cost: int, count: bool) -> tuple[Outcome, int]:
    """GCRA: decide a hit of ``cost`` against theoretical arrival time ``tat``.

    Returns the outcome and the new ``tat`` (to store only if every limit of the
    hit allowed it and ``count`` is true). Any admitted sequence satisfies: in
    every interval ``[t1, t2]`` at most ``burst + (t2 - t1) / emission`` hits.
    """
    interval = limit.emission_us
    tolerance = interval * limit.capacity
    base = now if tat is None or tat < now else tat
    new_tat = base + cost * interval
    allowed = new_tat - now <= tolerance
    used = new_tat if allowed and count else base
    remaining = max(0, (tolerance - (used - now)) // interval)
    retry = 0 if allowed else new_tat - tolerance - now
    return (allowed, limit.capacity, remaining, used - now, retry), new_tat


def window(entries: Sequence[int], now: int, limit: Limit, cost: int, count: bool) -> Outcome:
    """Exact sliding window over ``entries``, one timestamp per counted hit.

    ``entries`` must be sorted and hold only hits newer than ``now - period``
    (see :func:`window_cutoff`); ``now`` must not be older than the newest
    entry. A hit is allowed if ``len(entries) + cost <= amount``; if counted,
    ``cost`` copies of ``now`` are appended by the caller.
    """
    size = len(entries)
    allowed = size + cost <= limit.amount
    counted = allowed and count
    remaining = limit.amount - size - (cost if counted else 0)
    if counted:
        reset = limit.period_us
    elif size:
        reset = entries[size - 1] + limit.period_us - now
    else:
        reset = 0
    retry = 0 if allowed else entries[size + cost - limit.amount - 1] + limit.period_us - now
    return (allowed, limit.amount, remaining, reset, retry)


def window_cutoff(now: int, limit: Limit) -> int:
    """Entries at or before this time have left the window ending at ``now``."""
    return now - limit.period_us


CounterState = tuple[int, int, int]
"""(window index, hits in that window, hits in the window before)."""


def counter(
    state: CounterState | None, now: int, limit: Limit, cost: int, count: bool
) -> tuple[Outcome, CounterState]:
    """Sliding window counter: two fixed windows, the older one weighted by overlap.

    Windows are aligned on multiples of ``period`` since the epoch. Float
    arithmetic is written in the same order as in the Lua port, so both give
    bit-identical results.
    """
    period = limit.period_us
    amount = limit.amount
    index = now // period
    current = previous = 0
    if state is not None:
        s_index, s_current, s_previous = state
        if s_index > index:  # the clock went backwards: stay in the stored window
            index = s_index
            now = s_index * period
        if s_index == index:
            current, previous = s_current, s_previous
        elif s_index == index - 1:
            previous = s_current
    elapsed = now - index * period
    period_f = float(period)
    weighted = previous * (period_f - elapsed) / period_f
    allowed = weighted + current + cost <= amount
    counted = allowed and count
    new_current = current + cost if counted else current
    remaining = max(0, math.floor(amount - new_current - weighted))
    if new_current > 0:
        reset = 2 * period - elapsed
    elif previous > 0:
        reset = period - elapsed
    else:
        reset = 0
    if allowed:
        retry = 0
    else:
        room = amount - cost
        if current <= room:
            retry = math.ceil(period_f - (room - current) * period_f / previous) - elapsed
        else:
            retry = period - elapsed + math.ceil(period_f - room * period_f / current)
        retry = max(1, retry)
    return (allowed, amount, remaining, reset, retry), (index, new_current, previous)


def most_restrictive(outcomes: Sequence[Outcome]) -> Decision:
    """Combine per-limit outcomes: a denial beats an allowance.

    Among denials the longest ``retry_after`` wins; among allowances the fewest
    ``remaining`` (then the longest ``reset_after``).
    """
    if len(outcomes) == 1:
        pick = outcomes[0]
    elif denied := [o for o in outcomes if not o[0]]:
        pick = max(denied, key=lambda o: (o[4], o[3]))  # longest retry, then reset
    else:
        pick = min(outcomes, key=lambda o: (o[2], -o[3]))  # fewest remaining
    allowed, limit, remaining, reset_us, retry_us = pick
    return Decision(allowed, limit, remaining, reset_us / US, retry_us / US)


def now_us(clock: Clock) -> int:
    """``clock.time()`` in whole microseconds."""
    return round(clock.time() * US)


# --- the limiter ---------------------------------------------------------------


class Store(Protocol):
    """What a backend implements (internal; the memory and Redis modules)."""

    async def decide(
        self, key: str, limits: Sequence[Limit], cost: int, count: bool
    ) -> list[Outcome]:
        """Decide (and if ``count`` and all allowed, record) a hit on every limit at once."""
        ...

    async def reset(self, key: str, limits: Sequence[Limit]) -> None:
        """Forget the state of ``key`` under ``limits``."""
        ...

    async def start(self) -> None:
        """Prepare (connect, load scripts)."""
        ...

    async def close(self) -> None:
        """Release resources."""
        ...


_POLICIES: tuple[str, ...] = get_args(FailurePolicy)


class RateLimiter(AsyncResource):
    """Counts hits per key against one or more limits; memory or Redis backed.

    ``RateLimiter()`` is the in-memory limiter (one process);
    [`RateLimiter.from_url`][rtkit.ratelimit.RateLimiter.from_url] picks the
    backend from a URL.

    >>> limiter = RateLimiter()
    >>> decision = await limiter.hit("ip:203.0.113.9", "100/minute")  # doctest: +SKIP

    Args:
        clock: Where time comes from (default: the system clock).
        max_keys: At most this many (key, limit) states are kept in memory; the
            least recently used is evicted beyond that (it starts afresh if it
            comes back). Expired states are evicted too (checked every 16 hits).
        failure_policy: Redis backend only: ``"local"`` (default) decides with an
            in-process memory limiter while Redis is unreachable, ``"open"``
            allows every hit, ``"closed"`` denies every hit.
        retry_interval: Redis backend only: after a failure, Redis is not tried
            again for this many seconds (the policy answers meanwhile).
        store: Internal: the backend (``from_url`` passes it).
    """

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        max_keys: int = 100_000,
        failure_policy: FailurePolicy = "local",
        retry_interval: float = 1.0,
        store: Store | None = None,
    ) -> None:
        from .memory import MemoryStore

        if failure_policy not in _POLICIES:
            raise ConfigurationError(
                f"unknown failure_policy {failure_policy!r} (expected one of "
                f"{', '.join(_POLICIES)})"
            )
        if not isinstance(max_keys, int) or max_keys < 1:
            raise ConfigurationError(f"max_keys must be an int >= 1, got {max_keys!r}")
        if not retry_interval > 0:
            raise ConfigurationError(f"retry_interval must be > 0, got {retry_interval!r}")
        self._clock: Clock = clock or SystemClock()
        self._max_keys = max_keys
        self._memory = MemoryStore(clock=self._clock, max_keys=max_keys) if store is None else None
        self._store: Store = store or self._memory  # type: ignore[assignment]
        self._remote = store is not None
        self.failure_policy: FailurePolicy = failure_policy
        self._retry_interval = retry_interval
        self._down_until: float | None = None
        self._fallback: MemoryStore | None = None
        self._started = False

    @classmethod
    def from_url(
        cls,
        url: str = "memory://",
        *,
        prefix: str = DEFAULT_PREFIX,
        redis: aioredis.Redis | None = None,
        clock: Clock | None = None,
        failure_policy: FailurePolicy = "local",
        timeout: float = 1.0,
        max_keys: int = 100_000,
        retry_interval: float = 1.0,
    ) -> RateLimiter:
        """A limiter on the backend that ``url`` names.

        Args:
            url: ``memory://`` or ``redis://host:6379/0``.
            prefix: Redis key prefix. Keys look like ``<prefix>ratelimit:{<key>}:...``:
                one Redis Cluster hash tag per limited key, so every limit of one
                hit lives in one slot.
            redis: An existing ``redis.asyncio.Redis`` (``decode_responses=True``)
                to share its connection pool; not closed by the limiter.
            clock: Memory: the time source. Redis: by default the time is read
                from Redis (``TIME``) so hosts with skewed clocks agree; if a clock
                other than [`SystemClock`][rtkit.SystemClock] is given, its time
                is sent with every decision instead (for tests with a
                [`ManualClock`][rtkit.ManualClock]).
            failure_policy: ``"local"``, ``"open"`` or ``"closed"``; see the class.
            timeout: Redis connect and reply timeout in seconds.
            max_keys: Bound of the memory backend (and of the local fallback).
            retry_interval: Seconds between attempts to reach a failed Redis.

        Raises:
            ConfigurationError: Unknown URL scheme, bad prefix or option.
        """
        kind = backend_kind(url, component="RateLimiter")
        if not (isinstance(timeout, int | float) and 0 < timeout < math.inf):
            raise ConfigurationError(f"timeout must be a number of seconds > 0, got {timeout!r}")
        if kind == "memory":  # like every component, ignores ``redis``
            return cls(
                clock=clock,
                max_keys=max_keys,
                failure_policy=failure_policy,
                retry_interval=retry_interval,
            )
        from .redis import RedisStore

        script_clock = None if clock is None or isinstance(clock, SystemClock) else clock
        store = RedisStore(url, prefix=prefix, client=redis, clock=script_clock, timeout=timeout)
        return cls(
            clock=clock,
            max_keys=max_keys,
            failure_policy=failure_policy,
            retry_interval=retry_interval,
            store=store,
        )

    async def start(self) -> None:
        """Connect and load the Redis script (optional: the first hit does it too).

        If Redis is unreachable this logs a warning and the failure policy applies.
        """
        if self._started:
            return
        self._started = True
        try:
            await self._store.start()
        except BackendUnavailable as exc:
            self._mark_down(exc)

    async def close(self) -> None:
        """Release the Redis connection (a borrowed client stays open)."""
        self._started = False
        await self._store.close()

    async def hit(self, key: str, *limits: Limit | str, cost: int = 1) -> Decision:
        """Count a hit of ``cost`` on ``key`` against every limit, atomically.

        Either every limit allows it and it is counted under all of them, or it
        is counted under none. Denied hits are not counted.

        Args:
            key: What is limited, e.g. ``"ip:203.0.113.9"`` (at most 256 bytes).
            *limits: One or more [`Limit`][rtkit.ratelimit.Limit] objects or
                strings like ``"100/minute"`` (strings use GCRA).
            cost: How many hits this counts as (at most each limit's capacity).

        Returns:
            The most restrictive limit's [`Decision`][rtkit.ratelimit.Decision].

        Raises:
            ValidationError: A bad key or cost.
            ConfigurationError: No limits, or a malformed limit.
        """
        parsed = self._check(key, limits, cost)
        if self._memory is not None:  # synchronous, hence atomic without a lock
            return most_restrictive(self._memory.decide_now(key, parsed, cost, True))
        return await self._decide(key, parsed, cost, count=True)

    async def peek(self, key: str, *limits: Limit | str) -> Decision:
        """What a hit of cost 1 would get now, without counting it.

        ``remaining`` is the number of hits still possible (before any new hit).
        """
        parsed = self._check(key, limits, 1)
        if self._memory is not None:
            return most_restrictive(self._memory.decide_now(key, parsed, 1, False))
        return await self._decide(key, parsed, 1, count=False)

    async def reset(self, key: str, *limits: Limit | str) -> None:
        """Forget ``key``'s hits under ``limits``, as if it had never been seen."""
        key = check_id(key, "rate limit key")
        parsed = _normalize(limits)
        try:
            if self._backend_usable():
                await self._store.reset(key, parsed)
                return
        except BackendUnavailable as exc:
            self._mark_down(exc)
        if self._fallback is not None:
            await self._fallback.reset(key, parsed)

    @staticmethod
    def _check(key: str, limits: Sequence[Limit | str], cost: int) -> Sequence[Limit]:
        """Validate a call's arguments (fast for the common case); return the limits."""
        if not (type(key) is str and 0 < len(key) <= 64 and key.isprintable()):
            check_id(key, "rate limit key")  # the slow path explains what is wrong
        parsed: Sequence[Limit]
        if len(limits) != 1:
            parsed = _normalize(limits)
        elif type(limits[0]) is Limit:
            parsed = limits  # type: ignore[assignment]
        elif type(limits[0]) is str:
            parsed = (_parse(limits[0], "gcra", None),)  # cached
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
                return most_restrictive(await self._store.decide(key, limits, cost, count))
            except BackendUnavailable as exc:
                self._mark_down(exc)
        return most_restrictive(await self._degraded(key, limits, cost, count))

    def _backend_usable(self) -> bool:
        if self._down_until is None:
            return True
        if self._clock.monotonic() < self._down_until:
            return False
        self._down_until = None
        logger.info("rate limiter: trying Redis again")
        return True

    def _mark_down(self, exc: BackendUnavailable) -> None:
        if not self._remote:
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
            from .memory import MemoryStore

            if self._fallback is None:
                self._fallback = MemoryStore(clock=self._clock, max_keys=self._max_keys)
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
            item = _parse(item, "gcra", None)
        elif not isinstance(item, Limit):
            raise ConfigurationError(
                f"a limit must be a Limit or a string like '100/minute', got {item!r}"
            )
        parsed.setdefault(item.ident, item)
    return list(parsed.values())
