"""The rate limit algorithms: the specification that ``resources/ratelimit.lua`` ports.

``gcra``, ``window`` and ``counter`` decide one limit in whole microseconds;
the Lua script is a line-by-line port of them, so the memory and Redis backends
decide bit for bit alike. ``most_restrictive`` combines the verdicts of the
limits of one hit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .._core.clock import Clock
from ._limits import US, Decision, Limit, Outcome, make_decision

__all__ = [
    "CounterState",
    "counter",
    "gcra",
    "most_restrictive",
    "now_us",
    "window",
    "window_cutoff",
]


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
    return make_decision((allowed, limit, remaining, reset_us / US, retry_us / US))


def now_us(clock: Clock) -> int:
    """``clock.time()`` in whole microseconds."""
    return round(clock.time() * US)
