"""The dedup backend in this process (one consumer process, or tests)."""

from __future__ import annotations

from typing import Self

from ..._core.memory import shared_state
from ..._core.urls import BackendTarget
from .base import ClaimState

__all__ = ["MemoryDedupBackend"]

_PURGE_ABOVE = 1024


class _Marks:
    """The marks of one memory dedup store (shared by name with ``memory://NAME``)."""

    def __init__(self) -> None:
        self.marks: dict[str, tuple[ClaimState, float]] = {}


class MemoryDedupBackend:
    """Marks in a dict, each with its expiry on the store's clock."""

    def __init__(self, state: _Marks | None = None) -> None:
        self._state = state if state is not None else _Marks()

    @classmethod
    def open(cls, target: BackendTarget) -> Self:
        """Private marks for ``memory://``, shared ones for ``memory://NAME``."""
        return cls(shared_state(target, _Marks))

    def _purge(self, now: float) -> None:
        marks = self._state.marks
        if len(marks) > _PURGE_ABOVE:
            self._state.marks = {k: v for k, v in marks.items() if v[1] > now}

    async def claim(self, key: str, *, lease: float, now: float) -> ClaimState:
        """Take ``key`` unless it is busy or done."""
        mark = self._state.marks.get(key)
        if mark is not None and mark[1] > now:
            return mark[0]
        self._purge(now)
        self._state.marks[key] = ("busy", now + lease)
        return "new"

    async def complete(self, key: str, *, window: float, now: float) -> None:
        """Remember ``key`` as handled for ``window`` seconds."""
        self._state.marks[key] = ("done", now + window)

    async def release(self, key: str) -> None:
        """Forget the claim on ``key`` (a completed id stays done)."""
        mark = self._state.marks.get(key)
        if mark is not None and mark[0] == "busy":
            del self._state.marks[key]

    async def close(self) -> None:
        """Nothing to release."""
