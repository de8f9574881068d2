"""In-process rate limiter state: the executable specification.

State per (key, limit): GCRA keeps one timestamp (its theoretical arrival time,
stored as a plain ``int``: it is also the state's expiry), the sliding window
counter three integers, the exact sliding window at most ``amount`` timestamps.
Every state has an expiry (when it is equivalent to no state at all); expired
states are dropped by a sweep every ``max(1024, states)`` decisions (amortized
O(1)), and when more than ``max_keys`` states would be kept, the one closest to
expiry among the oldest 32 goes (the state whose loss lets the fewest extra hits
through). ``memory://`` keeps the counts private to one limiter; every limiter
opened on ``memory://NAME`` (same prefix) shares them.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Sequence
from typing import Self

from ..._core.clock import Clock, SystemClock
from ..._core.memory import shared_state
from ..._core.urls import BackendTarget
from ..._core.validate import check_int
from .._algorithms import CounterState, counter, gcra, window, window_cutoff
from .._limits import US, Decision, Limit, Outcome, make_decision

__all__ = ["MemoryRateLimitBackend"]

DEFAULT_MAX_KEYS = 100_000
_SAMPLE = 32  # states looked at to pick one to drop when max_keys is reached

_State = int | deque[int] | CounterState
_Plan = tuple[Outcome, tuple[str, str], _State, int, int]
"""(outcome, slot, state to store, its expiry, the time of the hit)."""


class _Entry:
    """A window or counter state and its expiry (a GCRA state is a bare ``int``)."""

    __slots__ = ("expires", "state")

    def __init__(self, expires: int, state: _State) -> None:
        self.expires = expires
        self.state = state


def _expiry(value: int | _Entry) -> int:
    return value if type(value) is int else value.expires  # type: ignore[union-attr]


class _Counts:
    """What limiters on one ``memory://NAME`` share: the states, oldest first."""

    def __init__(self) -> None:
        self.entries: dict[tuple[str, str], int | _Entry] = {}


class MemoryRateLimitBackend:
    """Rate limiter state in a bounded dict (not thread-safe).

    Decisions never await, so they are atomic under asyncio.

    Args:
        counts: The shared state (``open`` passes it); ``None`` for a private one.
        clock: The time source (default: the system clock).
        max_keys: The most (key, limit) states kept.

    Raises:
        rtkit.errors.ConfigurationError: ``max_keys`` is not an int >= 1.
    """

    def __init__(
        self,
        counts: _Counts | None = None,
        *,
        clock: Clock | None = None,
        max_keys: int = DEFAULT_MAX_KEYS,
    ) -> None:
        # The system clock's time() is time.time(): call it directly (the hot path).
        self._time = time.time if clock is None or type(clock) is SystemClock else clock.time
        self._max_keys = check_int(max_keys, "max_keys")
        self._counts = counts if counts is not None else _Counts()
        self._entries = self._counts.entries
        self._ops = 0
        self._sweep_at = 1024

    @classmethod
    def open(cls, target: BackendTarget, *, max_keys: int = DEFAULT_MAX_KEYS) -> Self:
        """The backend for ``memory://`` (private) or ``memory://NAME`` (shared).

        Args:
            target: Where to open.
            max_keys: The most (key, limit) states kept.
        """
        return cls(shared_state(target, _Counts), clock=target.clock, max_keys=max_keys)

    def __len__(self) -> int:
        return len(self._entries)

    async def start(self) -> None:
        """Nothing to prepare."""

    async def close(self) -> None:
        """Nothing to release (the counts stay for other holders of the state)."""

    async def reset(self, key: str, limits: Sequence[Limit]) -> None:
        """Forget ``key`` under ``limits``."""
        for limit in limits:
            self._entries.pop((key, limit.ident), None)

    async def decide(
        self, key: str, limits: Sequence[Limit], cost: int, count: bool
    ) -> list[Outcome]:
        """Decide a hit on every limit; record it only if all allow and ``count``."""
        return self.decide_now(key, limits, cost, count)

    def hit_gcra(self, key: str, limit: Limit) -> Decision:
        """A counted hit of cost 1 on one GCRA limit: :func:`gcra` fused with its decision.

        The hot path of ``RateLimiter.hit``: the same arithmetic as ``gcra()`` and
        ``most_restrictive()`` (``tests/ratelimit`` holds them equal), in one frame.
        """
        now = round(self._time() * US)
        slot = (key, limit.ident)
        entries = self._entries
        tat: int | None = entries.get(slot)  # type: ignore[assignment]  # GCRA: a bare int
        self._ops += 1
        if self._ops >= self._sweep_at:
            self._sweep(now)
        interval = limit.emission_us
        tolerance = limit.tolerance_us
        base = now if tat is None or tat < now else tat
        new_tat = base + interval
        used = new_tat - now
        if used <= tolerance:
            entries[slot] = new_tat
            if tat is None and len(entries) > self._max_keys:
                self._make_room(now, slot)
            remaining = (tolerance - used) // interval
            return make_decision((True, limit.capacity, remaining, used / US, 0.0))
        used = base - now
        return make_decision(
            (
                False,
                limit.capacity,
                max(0, (tolerance - used) // interval),
                used / US,
                (new_tat - tolerance - now) / US,
            )
        )

    def decide_now(
        self, key: str, limits: Sequence[Limit], cost: int, count: bool
    ) -> list[Outcome]:
        """The synchronous body of :meth:`decide` (atomic: it never awaits)."""
        now = round(self._time() * US)  # as now_us(), inlined: the hot path
        self._ops += 1
        if self._ops >= self._sweep_at:
            self._sweep(now)
        if len(limits) == 1:
            plan = self._plan(key, limits[0], now, cost, count)
            if count and plan[0][0]:
                self._commit(plan, cost, now)
            return [plan[0]]
        plans = [self._plan(key, limit, now, cost, count) for limit in limits]
        outcomes = [p[0] for p in plans]
        if count and all(o[0] for o in outcomes):
            for plan in plans:
                self._commit(plan, cost, now)
        return outcomes

    def _plan(self, key: str, limit: Limit, now: int, cost: int, count: bool) -> _Plan:
        """Decide one limit; return the outcome and what to store if the hit counts."""
        slot = (key, limit.ident)
        value = self._entries.get(slot)
        algorithm = limit.algorithm
        if algorithm == "gcra":
            outcome, tat = gcra(value, now, limit, cost, count)  # type: ignore[arg-type]
            return outcome, slot, tat, tat, now
        entry: _Entry | None = value  # type: ignore[assignment]
        if algorithm == "sliding_window":
            stamps: deque[int] = entry.state if entry else deque()  # type: ignore[assignment]
            at = max(now, stamps[-1]) if stamps else now
            cutoff = window_cutoff(at, limit)
            while stamps and stamps[0] <= cutoff:
                stamps.popleft()
            outcome = window(stamps, at, limit, cost, count)
            return outcome, slot, stamps, at + limit.period_us, at
        outcome, state = counter(entry.state if entry else None, now, limit, cost, count)  # type: ignore[arg-type]
        index, current, _ = state
        windows = 2 if current else 1
        return outcome, slot, state, (index + windows) * limit.period_us, now

    def _commit(self, plan: _Plan, cost: int, now: int) -> None:
        _, slot, state, expires, at = plan
        entries = self._entries
        if isinstance(state, deque):  # an exact window: one timestamp per hit
            state.extend(itertools.repeat(at, cost))
        old = entries.get(slot)
        if type(state) is int:  # GCRA: the state is its own expiry
            entries[slot] = state
        elif old is None or type(old) is int:
            entries[slot] = _Entry(expires, state)
        else:
            old.expires, old.state = expires, state  # type: ignore[union-attr]
        if old is None and len(entries) > self._max_keys:
            self._make_room(now, slot)

    def _make_room(self, now: int, keep: tuple[str, str]) -> None:
        """Drop one state (``max_keys`` was passed): an expired one, else the closest to expiry.

        Looks at the oldest ``_SAMPLE`` states (never ``keep``, the one just added);
        the live ones looked at and kept move to the back, so the next look sees others.
        """
        entries = self._entries
        sample = [s for s in itertools.islice(entries, _SAMPLE + 1) if s != keep][:_SAMPLE]
        victim = min(sample, key=lambda s: _expiry(entries[s]))
        del entries[victim]
        for slot in sample:
            if slot is victim:
                continue
            value = entries.pop(slot)
            if _expiry(value) > now:
                entries[slot] = value  # to the back

    def _sweep(self, now: int) -> None:
        """Drop every expired state (every ``max(1024, states)`` decisions: amortized O(1))."""
        entries = self._entries
        for slot in [s for s, v in entries.items() if _expiry(v) <= now]:
            del entries[slot]
        self._ops = 0
        self._sweep_at = max(1024, len(entries))
