"""In-process rate limiter state: the executable specification.

State per (key, limit): GCRA and the sliding window counter keep O(1) values,
the exact sliding window at most ``amount`` timestamps. Every state has an
expiry (when it is equivalent to no state at all); expired states are dropped,
and at most ``max_keys`` states are kept (least recently used evicted first).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Sequence

from .._clock import Clock
from .base import (
    CounterState,
    Limit,
    Outcome,
    counter,
    gcra,
    now_us,
    window,
    window_cutoff,
)

__all__ = ["MemoryStore"]

_State = int | deque[int] | CounterState


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
        self._clock = clock
        self._max_keys = max_keys
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self._ops_since_sweep = 0

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
        now = now_us(self._clock)
        entries = self._entries
        outcomes: list[Outcome] = []
        updates: list[tuple[tuple[str, str], _State, int]] = []
        for limit in limits:
            slot = (key, limit.ident)
            entry = entries.get(slot)
            if entry is not None:
                entries.move_to_end(slot)
            if limit.algorithm == "gcra":
                tat = entry.state if entry is not None else None
                assert tat is None or isinstance(tat, int)
                outcome, new_tat = gcra(tat, now, limit, cost, count)
                updates.append((slot, new_tat, new_tat))
            elif limit.algorithm == "sliding_window":
                stamps = entry.state if entry is not None else deque()
                assert isinstance(stamps, deque)
                at = max(now, stamps[-1]) if stamps else now
                cutoff = window_cutoff(at, limit)
                while stamps and stamps[0] <= cutoff:
                    stamps.popleft()
                outcome = window(stamps, at, limit, cost, count)
                updates.append((slot, stamps, at))
            else:
                state = entry.state if entry is not None else None
                assert state is None or isinstance(state, tuple)
                outcome, new_state = counter(state, now, limit, cost, count)
                index, current, _ = new_state
                base = index * limit.period_us
                expires = base + 2 * limit.period_us if current else base + limit.period_us
                updates.append((slot, new_state, expires))
            outcomes.append(outcome)
        if count and all(o.allowed for o in outcomes):
            for (slot, state, stamp), limit in zip(updates, limits, strict=True):
                if isinstance(state, deque):
                    state.extend([stamp] * cost)
                    expires = stamp + limit.period_us
                else:
                    expires = stamp
                entry = entries.get(slot)
                if entry is None:
                    entries[slot] = _Entry(expires, state)
                else:
                    entry.expires, entry.state = expires, state
        self._evict(now)
        return outcomes

    def _evict(self, now: int) -> None:
        """Drop expired states (amortized O(1)) and keep at most ``max_keys``."""
        entries = self._entries
        for _ in range(2):  # the least recently used ones first
            if not entries:
                break
            slot, entry = next(iter(entries.items()))
            if entry.expires > now:
                break
            del entries[slot]
        self._ops_since_sweep += 1
        if self._ops_since_sweep >= max(1024, len(entries)):
            self._ops_since_sweep = 0
            for slot in [s for s, e in entries.items() if e.expires <= now]:
                del entries[slot]
        while len(entries) > self._max_keys:
            entries.popitem(last=False)
