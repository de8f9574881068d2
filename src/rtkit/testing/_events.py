"""Recording the events of an EventBus, and waiting for one."""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self

from ..eventbus import Event, EventBus
from ..eventbus._events import compile_pattern
from ._wait import DEFAULT_WAIT, Signal

__all__ = ["EventRecorder"]


class EventRecorder:
    """Subscribes to ``pattern`` on ``bus`` and keeps every event it receives.

    The subscription starts at once (before anything is published) and ends
    with :meth:`close`, or at the end of a ``with`` / ``async with`` block.
    It works on every backend: on Redis, events arrive when Redis delivers them,
    so wait for them with :meth:`wait_for` rather than reading
    :attr:`events` right after ``publish``.

    Example:
        ```python
        async with EventBus() as bus:
            with EventRecorder(bus, "order.*") as events:
                await bus.publish("order.created", {"id": 1})
                event = await events.wait_for("order.created")
                assert event.data == {"id": 1}
        ```

    Args:
        bus: The bus to listen to.
        pattern: What to record, in the bus's pattern syntax (default: everything).
        model: Parse ``event.data`` to this pydantic model, as ``subscribe`` does.
    """

    def __init__(self, bus: EventBus, pattern: str = "#", *, model: Any = None) -> None:
        self.events: list[Event[Any]] = []
        self._signal = Signal()
        self._subscription = bus.subscribe(pattern, self._record, model=model)

    def _record(self, event: Event[Any]) -> None:
        self.events.append(event)
        self._signal.notify()

    @property
    def names(self) -> list[str]:
        """The names of the events received so far, in order."""
        return [event.name for event in self.events]

    @property
    def data(self) -> list[Any]:
        """The data of the events received so far, in order."""
        return [event.data for event in self.events]

    def matching(self, pattern: str) -> list[Event[Any]]:
        """The events received so far whose name matches ``pattern``."""
        compiled = compile_pattern(pattern)
        return [event for event in self.events if compiled.matches(event.name)]

    async def wait_for(
        self, pattern: str = "#", *, count: int = 1, timeout: float = DEFAULT_WAIT
    ) -> Event[Any]:
        """Wait until ``count`` events matching ``pattern`` arrived; return the last of them.

        Events that arrived before the call count too.

        Raises:
            TimeoutError: Fewer arrived within ``timeout`` seconds (the message
                lists what did arrive).
        """
        compiled = compile_pattern(pattern)

        def arrived() -> list[Event[Any]]:
            return [event for event in self.events if compiled.matches(event.name)]

        try:
            await self._signal.wait_for(
                lambda: len(arrived()) >= count, timeout=timeout, what=pattern
            )
        except TimeoutError:
            raise TimeoutError(
                f"{len(arrived())} of {count} events {pattern!r} within {timeout} s; "
                f"received: {self.names}"
            ) from None
        return arrived()[count - 1]

    def clear(self) -> None:
        """Forget the events received so far."""
        self.events.clear()

    def close(self) -> None:
        """Stop recording (the events stay readable)."""
        self._subscription.unsubscribe()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
