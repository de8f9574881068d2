"""Helpers shared by the test suites (import them: ``from rtkit_testing import ...``).

Fixtures live in ``conftest.py``; nothing here talks to a server.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

__all__ = ["Backend", "unique_name"]


def unique_name(stem: str = "t") -> str:
    """A name no other test uses: for queues, exchanges, rooms, users."""
    return f"{stem}-{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True)
class Backend:
    """What a contract test needs to build a component on one backend."""

    kind: str
    url: str
    prefix: str
