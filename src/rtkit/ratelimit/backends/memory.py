"""In-process rate limiter state: the executable specification.

State per (key, limit): GCRA and the sliding window counter keep O(1) values,
the exact sliding window at most ``amount`` timestamps. Every state has an
expiry (when it is equivalent to no state at all); expired states are dropped,
and at most ``max_keys`` states are kept (least recently used evicted first).
``memory://`` keeps the counts private to one limiter; every limiter opened on
``memory://NAME`` (same prefix) shares them.
"""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from typing import Self

from ..._core.clock import Clock, SystemClock
from ..._core.memory import shared_state
from ..._core.urls import BackendTarget
from ..._core.validate import check_int
from .._algorithms import CounterState, counter, gcra, window, window_cutoff
from .._limits import US, Limit, Outcome

__all__ = ["MemoryRateLimitBackend"]

DEFAULT_MAX_KEYS = 100_000

_State = int | deque[int] | CounterState
_Plan = tuple[Outcome, tuple[str, str], _State, int, int]
"""(outcome, slot, state to store, its expiry, the time of the hit)."""


class _Entry:
    __slots__ = ("expires", "state")

    def __init__(self, expires: int, state: _State) -> None:
        self.expires = expires
        self.state = state


class _Counts:
    """What limiters on one ``memory://NAME`` share: the states, least recently used first."""

    def __init__(self) -> None:
        self.entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()


class MemoryRateLimitBackend:
    """Rate limiter state in a bounded, LRU-ordered dict (not thread-safe).

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
