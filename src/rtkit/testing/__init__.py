"""Helpers for testing code that uses rtkit: fixtures, recorders, a test broker, a chat client.

Everything here runs on rtkit's real in-memory backends (the specification the
Redis and RabbitMQ backends are tested against), never on mocks:

- [`EventRecorder`][rtkit.testing.EventRecorder] keeps what an
  [`EventBus`][rtkit.EventBus] delivers and waits for an event;
- [`TestBroker`][rtkit.testing.TestBroker] is a RabbitMQ-like broker of one
  test's own, with ways to wait for messages, dead letters and consumers;
- [`ChatTestClient`][rtkit.testing.ChatTestClient] drives the chat server's
  logic without sockets and records what each connection would receive (it
  needs the ``realtime`` extra);
- [`wait_until`][rtkit.testing.wait_until] and
  [`unique_name`][rtkit.testing.unique_name] for the rest;
- a pytest plugin (installed with rtkit) with fixtures for all of these and a
  [`ManualClock`][rtkit.ManualClock]: see the "Testing your app" guide.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .._core.clock import ManualClock
from ._broker import Tap, TappedMessage, TestBroker
from ._events import EventRecorder
from ._wait import DEFAULT_WAIT, unique_name, wait_until

if TYPE_CHECKING:  # the realtime extra: imported on first use
    from ._chat import ChatTestClient, ChatTestConnection, Received

_REALTIME_EXTRA = {"ChatTestClient", "ChatTestConnection", "Received"}


def __getattr__(name: str) -> Any:
    """Import the chat helpers, which need the ``realtime`` extra, on first use."""
    if name not in _REALTIME_EXTRA:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        module = importlib.import_module("._chat", __name__)
    except ImportError as exc:
        raise ImportError(
            f"rtkit.testing.{name} needs the realtime extra ({exc}): pip install 'rtkit[realtime]'"
        ) from exc
    found = getattr(module, name)
    globals()[name] = found
    return found


__all__ = [
    "DEFAULT_WAIT",
    "ChatTestClient",
    "ChatTestConnection",
    "EventRecorder",
    "ManualClock",
    "Received",
    "Tap",
    "TappedMessage",
    "TestBroker",
    "unique_name",
    "wait_until",
]
