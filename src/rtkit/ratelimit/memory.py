"""In-process rate limiter state: the executable specification.

State per (key, limit): GCRA and the sliding window counter keep O(1) values,
the exact sliding window at most ``amount`` timestamps. Every state has an
expiry (when it is equivalent to no state at all); expired states are dropped,
and at most ``max_keys`` states are kept (least recently used evicted first).
"""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict, deque
from collections.abc import Sequence

from .._clock import Clock, SystemClock
from .base import (
    US,
    CounterState,
    Limit,
    Outcome,
    counter,
    gcra,
    window,
    window_cutoff,
)

__all__ = ["MemoryStore"]

_State = int | deque[int] | CounterState
_Plan = tuple[Outcome, tuple[str, str], _State, int, int]
"""(outcome, slot, state to store, its expiry, the time of the hit)."""


class _Entry:
    __slots__ = ("expires", "state")

    def __init__(self, expires: int, state: _State) -> None:
        self.expires = expires
        self.state = state


class MemoryStore:
    """Rate limiter state in a bounded, LRU-ordered dict (not thread-safe).

    Args:
        clock: The time source.
        max_keys: The most (key, limit) states kept.
    """

    def __init__(self, *, clock: Clock, max_keys: int) -> None:
        # The system clock's time() is time.time(): call it directly (the hot path).
        self._time = time.time if type(clock) is SystemClock else clock.time
        self._max_keys = max_keys
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self._ops = 0

    def __len__(self) -> int:
        return len(self._entries)

    async def start(self) -> None:
        """Nothing to prepare."""

    async def close(self) -> None:
        """Nothing to release (state is kept: a memory limiter can be reused)."""

    async def reset(self, key: str, limits: Sequence[Limit]) -> None:
        """Forget ``key`` under ``limits``."""
        for limit in limits:
            self._entries.pop((key, limit.ident), None)

    async def decide(
        self, key: str, limits: Sequence[Limit], cost: int, count: bool
    ) -> list[Outcome]:
        """Decide a hit on every limit; record it only if all allow and ``count``."""
        return self.decide_now(key, limits, cost, count)

    def decide_now(
        self, key: str, limits: Sequence[Limit], cost: int, count: bool
    ) -> list[Outcome]:
        """The synchronous body of :meth:`decide` (atomic: it never awaits)."""
        now = round(self._time() * US)  # as now_us(), inlined: the hot path
        if len(limits) == 1:
            plan = self._plan(key, limits[0], now, cost, count)
            if count and plan[0][0]:
                self._commit(plan, cost)
            outcomes = [plan[0]]
        else:
            plans = [self._plan(key, limit, now, cost, count) for limit in limits]
            outcomes = [p[0] for p in plans]
            if count and all(o[0] for o in outcomes):
                for plan in plans:
                    self._commit(plan, cost)
        self._ops += 1
        if self._ops & 15 == 0:
            self._evict(now)
        return outcomes

    def _plan(self, key: str, limit: Limit, now: int, cost: int, count: bool) -> _Plan:
        """Decide one limit; return the outcome and what to store if the hit counts."""
        slot = (key, limit.ident)
        entry = self._entries.get(slot)
        if entry is not None:
            self._entries.move_to_end(slot)
        algorithm = limit.algorithm
        if algorithm == "gcra":
            outcome, tat = gcra(entry.state if entry else None, now, limit, cost, count)  # type: ignore[arg-type]
            return outcome, slot, tat, tat, now
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

    def _commit(self, plan: _Plan, cost: int) -> None:
        _, slot, state, expires, at = plan
        if isinstance(state, deque):  # an exact window: one timestamp per hit
            state.extend(itertools.repeat(at, cost))
        entry = self._entries.get(slot)
        if entry is None:
            self._entries[slot] = _Entry(expires, state)
            if len(self._entries) > self._max_keys:
                self._entries.popitem(last=False)  # the least recently used
        else:
            entry.expires, entry.state = expires, state

    def _evict(self, now: int) -> None:
        """Drop expired states (called every 16 decisions: amortized O(1))."""
        entries = self._entries
        for slot in list(itertools.islice(entries, 32)):  # the least recently used first
            if entries[slot].expires > now:
                break
            del entries[slot]
        if self._ops >= max(1024, len(entries)):  # and all of them, now and then
            self._ops = 0
            for slot in [s for s, e in entries.items() if e.expires <= now]:
                del entries[slot]
