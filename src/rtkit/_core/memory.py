"""Named in-process state: how ``memory://NAME`` objects share what they hold.

``memory://`` gives every object a state of its own. ``memory://NAME`` gives
every object of the same component opened with that name and prefix one shared
state, the way several objects on one Redis share its data: two "instances" in
one test. The state lives while one of its holders does.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from .urls import BackendTarget

__all__ = ["shared_state"]

S = TypeVar("S")

_shared: weakref.WeakValueDictionary[tuple[str, str, str], Any] = weakref.WeakValueDictionary()


def shared_state(target: BackendTarget, factory: Callable[[], S]) -> S:
    """The state of a memory backend: new for ``memory://``, shared for ``memory://NAME``.

    The state must be weak-referenceable (a plain class instance is).
    """
    if not target.name:
        return factory()
    key = (target.component, target.name, target.prefix)
    state: S | None = _shared.get(key)
    if state is None:
        state = factory()
        _shared[key] = state
    return state
