"""Socket.IO instrumentation: a SERVER span per handled event, a CLIENT span per request.

Trace context travels with an event as an optional extra argument, after the
payload: ``socket.emit("chat:message", payload, {"traceparent": ..., "tracestate":
...}, ack)``. ``ChatClient`` sends it when tracing is on; the server reads it when
present (bounded: see ``rtkit.telemetry._trace.carrier_of``) and ignores it
otherwise, so clients that never send it (the browser page, the official
JavaScript client) and servers that never read it (older rtkit) keep working.

The server's hooks also set the connection id for log lines, count events by
name (``unknown`` for names the server does not know: the client chooses the
text) and outcome, and report the connection gauges when scraped.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ._logging import CONNECTION_ID
from ._state import Instruments, instruments

__all__ = [
    "ClientHooks",
    "ServerHooks",
    "instrument_chat_client",
    "instrument_socketio",
    "observed",
]

_OUTCOME: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "rtkit_socketio_outcome", default=None
)
_NOT_EVENTS = frozenset({"connect", "disconnect", "*"})


def instrument_socketio(server: Any) -> ServerHooks | None:
    """The hooks of a starting ``RealtimeServer``; ``None`` when telemetry is off."""
    found = instruments()
    if found is None:
        return None
    hooks = ServerHooks(server, found)
    if found.metrics is not None:
        found.metrics.watch(hooks)
    return hooks


def observed(
    server: Any, event: str, on_event: Callable[..., Awaitable[Any]]
) -> Callable[..., Awaitable[Any]]:
    """The handler of ``event``: ``on_event``, through ``server._telemetry`` when it is on."""

    async def handle(sid: str, *args: Any) -> Any:
        hooks = server._telemetry
        if hooks is None:
            return await on_event(sid, *args)
        return await hooks.event(event, sid, args, on_event)

    return handle


class ServerHooks:
    """What a ``RealtimeServer`` does around each event when telemetry is on."""

    def __init__(self, server: Any, found: Instruments) -> None:
        self.server = server
        self.tracing = found.tracing
        self.metrics = found.metrics
        self.ids = found.ids
        self.known = frozenset(server.sio.handlers.get("/", {})) - _NOT_EVENTS

    async def event(
        self, event: str, sid: str, args: tuple[Any, ...], handle: Callable[..., Awaitable[Any]]
    ) -> Any:
        """``handle(sid, *args)``: one client event, in a SERVER span, counted."""
        name = event if event in self.known else "unknown"
        outcome = ["ok"]
        marks = _OUTCOME.set(outcome)
        connection = CONNECTION_ID.set(sid)
        started = time.perf_counter()
        try:
            if self.tracing is None:
                return await handle(sid, *args)
            return await self._traced(name, sid, args, handle)
        finally:
            CONNECTION_ID.reset(connection)
            _OUTCOME.reset(marks)
            metrics = self.metrics
            if metrics is not None:
                metrics["rtkit_socketio_events_total"].labels(name, outcome[0]).inc()
                metrics["rtkit_socketio_event_duration_seconds"].labels(name).observe(
                    time.perf_counter() - started
                )

    async def _traced(
        self, name: str, sid: str, args: tuple[Any, ...], handle: Callable[..., Awaitable[Any]]
    ) -> Any:
        assert self.tracing is not None
        from ._trace import carrier_of

        parent = carrier_of(args[1]) if len(args) > 1 else None
        attributes = {
            "network.protocol.name": "socket.io",
            "socketio.namespace": "/",
            "socketio.event": name,
            "rtkit.connection.id": sid,
        }
        with self.tracing.span(name, "server", attributes, parent=parent):
            return await handle(sid, *args)

    def failed(self, code: str) -> None:
        """The event being handled was refused with ``code`` (an error ack or event)."""
        outcome = _OUTCOME.get()
        if outcome is not None:
            outcome[0] = code
        if self.tracing is not None:
            self.tracing.failed(self.tracing.current_span(), code)

    def gauges(self) -> dict[str, float]:
        """The connection gauges of this server (read when metrics are scraped)."""
        server = self.server
        if server.closed:
            return {}
        return {
            "rtkit_socketio_connections": len(server._who),
            "rtkit_presence_connections": len(server.presence._held),
            "rtkit_presence_users": len(server.presence._local_users),
        }


def instrument_chat_client() -> ClientHooks | None:
    """The hooks of a ``ChatClient``; ``None`` unless tracing is on."""
    found = instruments()
    if found is None or found.tracing is None:
        return None
    return ClientHooks(found)


class ClientHooks:
    """A CLIENT span per ``ChatClient`` request, its context sent along with the event."""

    def __init__(self, found: Instruments) -> None:
        assert found.tracing is not None
        self.tracing = found.tracing

    async def call(self, sio: Any, event: str, data: Any, timeout: float) -> Any:
        """``sio.call(event, data)`` in a CLIENT span, sending its context as an extra argument."""
        attributes = {"network.protocol.name": "socket.io", "socketio.event": event}
        with self.tracing.span(event, "client", attributes) as span:
            reply = await sio.call(event, (data, self.tracing.carrier()), timeout=timeout)
            if isinstance(reply, dict) and reply.get("ok") is False:
                error = reply.get("error")
                code = error.get("code") if isinstance(error, dict) else None
                self.tracing.failed(span, str(code or "error"))
            return reply
