"""What an EventBus backend does: carry encoded events to every bus on the same channel.

Validation, encoding, pattern matching, handler calls, error isolation and
statistics all live in the bus, so backends cannot disagree about them: a
backend only moves events. Implementations: ``memory.py`` (the specification)
and ``redis.py``. This module imports nothing concrete.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

__all__ = ["Deliver", "EventBusBackend", "Report", "Wants"]


class Deliver(Protocol):
    """``deliver(name, event_id, timestamp, data, trace=None)``: hands a received event to
    its bus (``data`` decoded from JSON, fresh for each bus; ``trace``: the envelope's
    ``trace`` field as received, if any, for the bus to continue the publisher's trace)."""

    def __call__(
        self, name: str, event_id: str, timestamp: float, data: Any, trace: Any = None, /
    ) -> Awaitable[None]: ...


Report = Callable[[Exception], Awaitable[None]]
"""``report(error)``: hands the bus a message that could not be decoded."""

Wants = Callable[[str], bool]
"""``wants(name)``: whether the bus has a subscription matching the event name ``name``
(a backend may drop other events before validating them)."""


class EventBusBackend(Protocol):
    """How an [`EventBus`][rtkit.eventbus.EventBus] moves events.

    A backend carries encoded events to every bus on the same channel, the
    publishing bus included, exactly once each, in the order one publisher sent
    them, and calls that bus's ``deliver`` (or ``report`` for a message it cannot
    decode) for each. The channel is the backend's to define: one bus
    (``memory://``), every bus of one ``memory://NAME`` and prefix, every bus on
    one Redis and prefix. A backend class also has ``open(target, **options)``
    (see [`rtkit.backends`][rtkit.backends]).
    """

    kind: str
    """The backend's name in [`EventBus.stats`][rtkit.eventbus.EventBus.stats]."""

    reconnects: int
    """Times the backend re-established its subscription."""

    async def start(
        self, deliver: Deliver, report: Report, *, receive: bool, wants: Wants | None = None
    ) -> None:
        """Connect; with ``receive``, also begin receiving this bus's events.

        Returns once events published from now on arrive. ``wants`` tells which
        event names the bus has subscriptions for.

        Raises:
            rtkit.errors.BackendUnavailable: The backend did not answer in time.
        """
        ...

    # Optional: ``interest(patterns)``, the bus's subscribed patterns whenever they
    # change (before ``start`` too); a backend that routes by event name (sharded
    # Redis) uses it to receive only what those patterns can match.

    def listen(self, on: bool) -> None:
        """Begin (``on``) or end receiving: the bus got its first subscription, or lost its last.

        A backend receives only while its bus has subscriptions. Beginning may
        take a round trip; the bus's own next ``send`` waits for it, so a bus always
        receives what it publishes after subscribing. Ending may be lazy.
        """
        ...

    async def subscribed(self) -> None:
        """Wait until events published from now on arrive (after ``listen(True)``).

        Raises:
            rtkit.errors.BackendUnavailable: The backend did not confirm in time.
        """
        ...

    async def close(self) -> None:
        """Stop receiving and release what the backend created (also when never started)."""
        ...

    def send(self, name: str, event_id: str, timestamp: float, data: bytes) -> Awaitable[None]:
        """Publish one event (``data`` is its JSON); an ``async def`` usually.

        Raises:
            rtkit.errors.BackendUnavailable: The backend did not accept it in time.
        """
        ...
