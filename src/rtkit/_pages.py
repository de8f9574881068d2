"""Cursor pagination shared by every listing API."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["Page"]

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing.

    ``next_cursor`` is ``None`` on the last page; otherwise pass it as
    ``cursor=`` to get the next page. Cursors are opaque strings.
    """

    items: list[T] = field(default_factory=list)
    next_cursor: str | None = None
