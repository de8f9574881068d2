"""Limits, decisions, and the text form of a limit (``"100/minute"``).

All time arithmetic is done in whole **microseconds** (``int``), so the memory
backend (Python) and the Redis backend (Lua, whose numbers are doubles) take
exactly the same decisions: every integer involved stays far below 2**53.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, get_args

from ..errors import ConfigurationError, RateLimited

__all__ = [
    "US",
    "Algorithm",
    "Decision",
    "Limit",
    "Outcome",
    "make_decision",
    "parse",
    "parse_limit",
]

Algorithm = Literal["gcra", "sliding_window", "sliding_window_counter"]
"""The algorithms a [`Limit`][rtkit.ratelimit.Limit] can use."""

US = 1_000_000
"""Microseconds per second."""

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

Outcome = tuple[bool, int, int, int, int]
"""One limit's verdict, as backends produce it: ``(allowed, limit, remaining,
reset_us, retry_us)``, times in microseconds (a plain tuple: this is the hot path)."""


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
        rtkit.errors.ConfigurationError: A value is out of range.
    """

    amount: int
    period: float
    algorithm: Algorithm = "gcra"
    burst: int | None = None
    period_us: int = field(init=False, repr=False, compare=False)
    capacity: int = field(init=False, repr=False, compare=False)
    emission_us: int = field(init=False, repr=False, compare=False)
    tolerance_us: int = field(init=False, repr=False, compare=False)
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
        object.__setattr__(self, "tolerance_us", emission_us * capacity)
        object.__setattr__(self, "ident", f"{code}:{self.amount}:{period_us}:{capacity}")

    @classmethod
    def parse(cls, text: str, *, algorithm: Algorithm = "gcra", burst: int | None = None) -> Limit:
        """Parse ``"100/minute"``, ``"10/second"``, ``"5/10 seconds"``, ``"1 per day"``.

        Units: ``s``/``sec``/``second``, ``m``/``min``/``minute``, ``h``/``hr``/``hour``,
        ``d``/``day`` (singular or plural), optionally preceded by a count.

        Raises:
            rtkit.errors.ConfigurationError: ``text`` is not a limit.
        """
        if not isinstance(text, str):
            raise ConfigurationError(f"a limit must be a string like '100/minute', got {text!r}")
        return parse(text, algorithm, burst)

    def __str__(self) -> str:
        per = "second" if self.period == 1 else f"{self.period:g} seconds"
        extra = "" if self.burst is None else f", burst {self.burst}"
        return f"{self.amount}/{per} ({self.algorithm}{extra})"


@functools.lru_cache(maxsize=256)
def parse(text: str, algorithm: Algorithm, burst: int | None) -> Limit:
    """The limit ``text`` describes (cached: the limiter's hot path parses strings)."""
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


class Decision(NamedTuple):
    """The answer to a hit or a peek (immutable).

    Attributes:
        allowed: Whether the hit passed (for ``peek``: whether one would pass now).
        limit: The most restrictive limit's capacity: ``amount`` for the window
            algorithms, ``burst`` for GCRA.
        remaining: Hits still possible right now under that limit.
        reset_after: Seconds until that limit is back to its full capacity.
        retry_after: Seconds to wait before the same hit can pass; ``0.0`` when allowed.
    """

    # A named tuple: made on every hit, it costs a fifth of a frozen dataclass.
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


make_decision: Callable[[tuple[bool, int, int, float, float]], Decision] = functools.partial(
    tuple.__new__, Decision
)
"""``Decision`` from one tuple of its five values, without the keyword-argument machinery."""
