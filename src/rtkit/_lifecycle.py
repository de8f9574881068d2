"""TRANSITION SHIM (the old layout): deleted once every component has moved to rtkit._core.

The start/close life cycle every component shares."""

from __future__ import annotations

from types import TracebackType
from typing import Self

__all__ = ["AsyncResource"]


class AsyncResource:
    """A component with ``start()`` and ``close()``, usable as ``async with``.

    ``async with component:`` starts it and closes it on the way out, whatever
    happens inside.
    """

    async def start(self) -> None:
        """Start background work and connect (nothing to do unless overridden)."""

    async def close(self) -> None:
        """Stop background work and release connections (nothing unless overridden)."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
