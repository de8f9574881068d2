"""Cursor pagination shared by every listing API."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["Page", "page_of_sorted"]

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing.

    ``next_cursor`` is ``None`` on the last page; otherwise pass it as
    ``cursor=`` to get the next page. Cursors are opaque strings.
    """

    items: list[T] = field(default_factory=list)
    next_cursor: str | None = None


def page_of_sorted(items: list[str], cursor: str | None, limit: int) -> Page[str]:
    """The page of sorted ``items`` after ``cursor``: the specification of lexical paging.

    A cursor is the last item of the previous page, so paging stays correct
    while items come and go.
    """
    start = 0 if cursor is None else bisect.bisect_right(items, cursor)
    chunk = items[start : start + limit + 1]
    if len(chunk) > limit:
        return Page(chunk[:limit], chunk[limit - 1])
    return Page(chunk, None)
