"""rtkit's pytest plugin: fixtures on rtkit's in-memory backends, with a ManualClock.

Installed with rtkit (the ``pytest11`` entry point ``rtkit``), so a test only
names a fixture to get it. Each fixture is a fresh, private component (or
helper) for one test, closed after it; the components share the test's
``rtkit_clock``, so ``rtkit_clock.advance(31)`` moves every lease, TTL and rate
limit forward without sleeping.

The async fixtures need pytest-asyncio (in its strict or auto mode); without
it only ``rtkit_clock`` and ``rtkit_memory_url`` are defined. ``-p no:rtkit``
turns the plugin off.
"""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

import pytest

from .._core.clock import ManualClock
from ..eventbus import EventBus
from ..presence import PresenceStore
from ..ratelimit import RateLimiter
from ..registry import ServiceRegistry
from ..rooms import RoomManager
from ._broker import TestBroker
from ._wait import unique_name

if TYPE_CHECKING:
    from ._chat import ChatTestClient

__all__ = [
    "rtkit_broker",
    "rtkit_bus",
    "rtkit_chat",
    "rtkit_clock",
    "rtkit_limiter",
    "rtkit_memory_url",
    "rtkit_presence",
    "rtkit_registry",
    "rtkit_rooms",
]


@pytest.fixture
def rtkit_clock() -> ManualClock:
    """A [`ManualClock`][rtkit.ManualClock] shared by the test's rtkit fixtures."""
    return ManualClock()


@pytest.fixture
def rtkit_memory_url() -> str:
    """``memory://<a name of this test's own>``: components opened on it share state."""
    return f"memory://{unique_name('rtkit-test')}"


_F = TypeVar("_F", bound=Callable[..., Any])


def _async_fixture(function: _F) -> _F:
    import pytest_asyncio

    fixture: Any = pytest_asyncio.fixture(function)
    return cast(_F, fixture)


if importlib.util.find_spec("pytest_asyncio") is not None:

    @_async_fixture
    async def rtkit_bus(rtkit_clock: ManualClock) -> AsyncIterator[EventBus]:
        """A started in-memory [`EventBus`][rtkit.EventBus]: handlers run inside ``publish``."""
        async with EventBus(clock=rtkit_clock) as bus:
            yield bus

    @_async_fixture
    async def rtkit_presence(rtkit_clock: ManualClock) -> AsyncIterator[PresenceStore]:
        """An in-memory [`PresenceStore`][rtkit.PresenceStore] on the test's clock."""
        async with PresenceStore(clock=rtkit_clock) as presence:
            yield presence

    @_async_fixture
    async def rtkit_rooms(
        rtkit_clock: ManualClock, rtkit_presence: PresenceStore
    ) -> AsyncIterator[RoomManager]:
        """An in-memory [`RoomManager`][rtkit.RoomManager], same instance as ``rtkit_presence``."""
        rooms = RoomManager(clock=rtkit_clock, instance_id=rtkit_presence.instance_id)
        async with rooms:
            yield rooms

    @_async_fixture
    async def rtkit_limiter(rtkit_clock: ManualClock) -> AsyncIterator[RateLimiter]:
        """An in-memory [`RateLimiter`][rtkit.RateLimiter]: advance the clock to refill it."""
        async with RateLimiter(clock=rtkit_clock) as limiter:
            yield limiter

    @_async_fixture
    async def rtkit_registry(rtkit_clock: ManualClock) -> AsyncIterator[ServiceRegistry]:
        """An in-memory [`ServiceRegistry`][rtkit.ServiceRegistry]: advance the clock to expire."""
        async with ServiceRegistry(clock=rtkit_clock) as registry:
            yield registry

    @_async_fixture
    async def rtkit_broker() -> AsyncIterator[TestBroker]:
        """A [`TestBroker`][rtkit.testing.TestBroker]: an in-memory broker of this test's own."""
        async with TestBroker() as broker:
            yield broker

    @_async_fixture
    async def rtkit_chat(rtkit_clock: ManualClock) -> AsyncIterator[ChatTestClient]:
        """A [`ChatTestClient`][rtkit.testing.ChatTestClient] on memory stores and the test's clock.

        Needs the ``realtime`` extra.
        """
        from ._chat import ChatTestClient

        async with ChatTestClient(clock=rtkit_clock) as chat:
            yield chat
