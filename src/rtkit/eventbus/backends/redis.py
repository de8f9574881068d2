"""The Redis EventBus backend: one pub/sub channel per prefix, shared by every process.

Every bus on the same Redis, database and prefix publishes to one channel,
``<prefix>eventbus:db<N>:events`` (pub/sub ignores the database number, so the
channel names it), and the bus matches event names locally with the same
matcher as on memory; so matching cannot differ between backends. Each process
that subscribes receives every event of its prefix: give unrelated applications
different prefixes.

Receiving: a bus subscribes to the channel only while it has subscriptions (a
bus that only publishes never reads its own events back). One task reads a
connection of its own in a blocking loop that handles every message a read
brought in; a message's event name is routed before the envelope is validated,
so events nobody here subscribes to cost a JSON parse and nothing more. When the
connection is idle for ``ping_interval`` seconds it sends ``PING``; if nothing
comes back within ``ping_timeout`` seconds (a silently dead connection), or the
connection fails, the backend drops it and subscribes again, retrying with a
capped back-off until Redis answers. A bus whose last subscription went away
stops reading at its next idle check. Events published while no subscription
exists are not received (Redis pub/sub keeps nothing).

Publishing: on a connection of its own, one awaited ``publish`` is one
``PUBLISH`` round trip. While a round trip is in flight, further publishes queue
up and go together, in order, in one pipeline (group commit), so many
concurrent publishers cost few round trips. Every round trip is bounded by
``timeout``. A bus that just got its first subscription waits, before its next
publish goes out, until Redis confirmed the subscription: a bus receives what it
publishes itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Self

import pydantic_core

from ..._core.lifecycle import DEFAULT_TIMEOUT
from ..._core.redis import Keyspace, RedisHandle, database_of, redis_unavailable
from ..._core.urls import BackendTarget
from ..._core.validate import check_seconds
from ..._core.wire import PUSH, DedicatedConnection, bare_streams, bulk, new_connection
from ...errors import BackendUnavailable, RtkitError
from .._wire import EventEnvelope, decode_envelope, encode_envelope, validate_envelope
from .base import Deliver, Report, Wants

__all__ = ["RedisEventBusBackend"]

logger = logging.getLogger("rtkit.eventbus")

_WATCHDOG_PING = b"rtkit-eventbus-watchdog"
_MAX_RECONNECT_DELAY = 2.0
DEFAULT_PING_INTERVAL = 5.0
DEFAULT_PING_TIMEOUT = 3.0


def _durations(timeout: float, ping_interval: float, ping_timeout: float) -> tuple[float, ...]:
    """The three durations, checked (``ConfigurationError`` unless positive numbers)."""
    return (
        check_seconds(timeout, "timeout"),
        check_seconds(ping_interval, "ping_interval"),
        check_seconds(ping_timeout, "ping_timeout"),
    )


class _DeadSubscription(Exception):
    """The subscription connection stopped answering PING."""


class RedisEventBusBackend:
    """Carries events through one Redis pub/sub channel (see the module docs).

    Args:
        handle: The Redis client, owned (closed with the backend) or borrowed.
        prefix: The key prefix; the channel is ``<prefix>eventbus:db<N>:events``
            (``N``: the database of the client).
        timeout: Bound, in seconds, on each publish round trip and on subscribing.
        ping_interval: Idle seconds before the subscription connection is PINGed.
        ping_timeout: Seconds to wait for the PING's answer before subscribing again.

    Raises:
        rtkit.errors.ConfigurationError: A duration that is not a positive number.
    """

    kind = "redis"

    def __init__(
        self,
        handle: RedisHandle,
        *,
        prefix: str,
        timeout: float = DEFAULT_TIMEOUT,
        ping_interval: float = DEFAULT_PING_INTERVAL,
        ping_timeout: float = DEFAULT_PING_TIMEOUT,
    ) -> None:
        self._timeout, self._ping_interval, self._ping_timeout = _durations(
            timeout, ping_interval, ping_timeout
        )
        self._handle = handle
        database = database_of(handle.client)
        self.channel = Keyspace(prefix, "eventbus").channel(f"db{database}", "events")
        """The pub/sub channel every bus of this database and prefix shares."""
        self.reconnects = 0
        self._deliver: Deliver | None = None
        self._report: Report | None = None
        self._wants: Wants = _everything
        # Receiving: wanted while the bus has subscriptions; confirmed once Redis said so.
        self._wanted = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reader: asyncio.Task[None] | None = None
        self._confirmed: asyncio.Future[None] | None = None
        # Publishing: a connection of its own; group commit while a round trip is in flight.
        self._publisher = DedicatedConnection(
            handle.client, timeout=self._timeout, doing="publishing an event"
        )
        self._head = b""
        self._busy = False
        self._queue: list[tuple[bytes, asyncio.Future[None]]] = []
        self._drainer: asyncio.Task[None] | None = None

    @classmethod
    def open(
        cls,
        target: BackendTarget,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        ping_interval: float = DEFAULT_PING_INTERVAL,
        ping_timeout: float = DEFAULT_PING_TIMEOUT,
    ) -> Self:
        """The backend for a Redis target (its client borrowed when the target has one).

        Args:
            target: Where to connect, and the prefix.
            timeout: Bound, in seconds, on each publish round trip and on
                subscribing (and so on ``start``).
            ping_interval: Idle seconds before the subscription connection is PINGed.
            ping_timeout: Seconds to wait for the PING's answer before subscribing again.
        """
        _durations(timeout, ping_interval, ping_timeout)  # before making a client
        return cls(
            RedisHandle.open(target, timeout=timeout),
            prefix=target.prefix,
            timeout=timeout,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
        )

    # ------------------------------------------------------------------ lifecycle

    async def start(
        self, deliver: Deliver, report: Report, *, receive: bool, wants: Wants | None = None
    ) -> None:
        """Connect the publishing connection; with ``receive``, subscribe and wait for Redis.

        Raises:
            rtkit.errors.BackendUnavailable: Redis did not answer within ``timeout``.
        """
        self._deliver = deliver
        self._report = report
        self._wants = wants or _everything
        self._loop = asyncio.get_running_loop()
        self._head = b"*3\r\n$7\r\nPUBLISH\r\n" + bulk(self.channel.encode())
        await self._publisher.open()
        if receive:
            self.listen(True)
            try:
                await self.subscribed()
            except BaseException:
                await self._stop_reading()
                raise

    def listen(self, on: bool) -> None:
        """Subscribe (soon) when ``on``; with ``off``, stop reading at the next idle check.

        A publish of this bus waits until Redis confirmed a new subscription.
        """
        self._wanted = on
        loop = self._loop
        if not on or loop is None:
            return
        if self._confirmed is None:
            self._confirmed = loop.create_future()
        if self._reader is None or self._reader.done():  # (subscribe() may run outside the loop)
            self._reader = loop.create_task(self._read_forever(), name="rtkit-eventbus-reader")

    async def _stop_reading(self) -> None:
        self._wanted = False
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        self._confirmed = None

    async def close(self) -> None:
        """Let queued publishes finish, stop the reader, close the connections."""
        if self._drainer is not None:
            with contextlib.suppress(Exception):
                await self._drainer
        await self._stop_reading()
        await self._publisher.shut()
        with contextlib.suppress(Exception):
            await self._handle.close()

    # ------------------------------------------------------------------ publishing

    async def send(self, name: str, event_id: str, timestamp: float, data: bytes) -> None:
        """Publish one encoded event; batched with concurrent publishes."""
        message = encode_envelope(name, event_id, timestamp, data)
        command = b"%b$%d\r\n%b\r\n" % (self._head, len(message), message)
        confirmed = self._confirmed
        if confirmed is not None and not confirmed.done():
            await self.subscribed()
        if self._busy:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._queue.append((command, future))
            await future
            return
        self._busy = True
        try:
            await self._publisher.call(command)
        finally:
            if self._queue:
                self._drainer = asyncio.create_task(self._drain())
            else:
                self._busy = False

    async def _drain(self) -> None:
        """Send everything queued meanwhile, one pipeline per round trip, in order."""
        try:
            while True:
                if not self._queue:
                    # The publishers just answered often publish again at once: let
                    # them queue up, so that their events share the next round trip.
                    await asyncio.sleep(0)
                    if not self._queue:
                        break
                batch, self._queue = self._queue, []
                try:
                    await self._publisher.call(b"".join(c for c, _ in batch), len(batch))
                except BaseException as exc:
                    error = exc if isinstance(exc, RtkitError) else BackendUnavailable(str(exc))
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    if not isinstance(exc, Exception):
                        raise
                else:
                    for _, future in batch:
                        if not future.done():
                            future.set_result(None)
        finally:
            self._busy = False
            self._drainer = None

    async def subscribed(self) -> None:
        """Wait until Redis confirmed the subscription (at most ``timeout``)."""
        confirmed = self._confirmed
        if confirmed is None or confirmed.done():
            return
        try:
            async with asyncio.timeout(self._timeout):
                await asyncio.shield(confirmed)
        except TimeoutError:
            raise BackendUnavailable(
                f"Redis did not confirm the subscription within {self._timeout:g} s"
            ) from None

    # ------------------------------------------------------------------ receiving

    async def _read_forever(self) -> None:
        """Subscribe, read until the connection fails, again; end when no longer wanted."""
        delay = 0.05
        failed = False
        while self._wanted:
            reader = _Subscription(self)
            try:
                await reader.open()
            except asyncio.CancelledError:
                await reader.close()
                raise
            except Exception as exc:
                await reader.close()
                logger.warning("EventBus cannot subscribe yet (%s)", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _MAX_RECONNECT_DELAY)
                continue
            delay = 0.05
            if failed:
                self.reconnects += 1
            if self._confirmed is not None and not self._confirmed.done():
                self._confirmed.set_result(None)
            try:
                await reader.run()
                failed = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failed = True
                if self._wanted:
                    logger.warning("EventBus subscription lost (%s), subscribing again", exc)
            finally:
                await reader.close()
        self._confirmed = None

    async def receive(self, raw: bytes | str) -> None:
        """One message from the channel: route on its name, then validate and deliver."""
        assert self._deliver is not None and self._report is not None
        try:
            envelope = self._envelope(raw)
        except RtkitError as exc:
            await self._report(exc)
            return
        if envelope is not None:
            await self._deliver(
                envelope.name, envelope.id, envelope.ts, envelope.data, envelope.trace
            )

    def _envelope(self, raw: bytes | str) -> EventEnvelope | None:
        """The message's event, or ``None`` for an event nobody here subscribes to."""
        try:
            parsed = pydantic_core.from_json(raw)
        except ValueError:
            return decode_envelope(raw)  # not JSON: raises, saying what is wrong
        name = parsed.get("name") if type(parsed) is dict else None
        if type(name) is str and not self._wants(name):
            return None  # routed on the name: no need to validate the rest
        return validate_envelope(parsed)


class _Subscription:
    """One subscription connection: subscribe, read in a blocking loop, watch for silence."""

    def __init__(self, backend: RedisEventBusBackend) -> None:
        self.backend = backend
        self.conn = new_connection(backend._handle.client)
        self.loop = asyncio.get_running_loop()
        self.heard = self.loop.time()
        self.pinged: float | None = None
        self.busy = False  # handlers are running: silence on the socket means nothing
        self.dead: str | None = None
        self.stopping = False
        self.timer: asyncio.TimerHandle | None = None
        self.tasks: set[asyncio.Task[Any]] = set()

    async def open(self) -> None:
        """Connect and subscribe, confirmed by Redis within ``timeout``."""
        with redis_unavailable("subscribing to events"):
            async with asyncio.timeout(self.backend._timeout):
                await self.conn.connect()  # type: ignore[no-untyped-call]
                await self.conn.send_command("SUBSCRIBE", self.backend.channel)
                while True:
                    reply = await self.conn.read_response()
                    if isinstance(reply, list) and _text(reply[0]) == "subscribe":
                        return

    async def run(self) -> None:
        """Deliver messages until the connection fails, falls silent, or is not wanted."""
        self.heard = self.loop.time()
        self.timer = self.loop.call_at(self.heard + self.backend._ping_interval, self._watch)
        wire = bare_streams(self.conn)
        while True:
            self.busy = False
            try:
                replies = await self._read(wire)
            except Exception:
                if self.dead is not None:
                    raise _DeadSubscription(self.dead) from None
                if self.stopping:
                    return
                raise
            self.heard = self.loop.time()
            self.pinged = None
            self.busy = True
            for reply in replies:
                await self._handle(reply)

    async def _read(self, wire: Any) -> list[Any]:
        """Wait for data; return every complete reply it brought (hiredis), or one."""
        if wire is None:
            return [await self.conn.read_response()]
        reader, _, parser = wire
        out: list[Any] = []
        while not out:
            data = await reader.read(65536)
            if not data:
                raise ConnectionError("Redis closed the subscription connection")
            parser.feed(data)
            reply = parser.gets()
            while reply is not False:
                out.append(reply)
                reply = parser.gets()
        return out

    async def _handle(self, reply: Any) -> None:
        if not isinstance(reply, list | PUSH) or not reply:
            return  # a RESP3 PONG
        kind = _text(reply[0])
        if kind == "message":
            await self.backend.receive(reply[2])
        elif kind == "subscribe":  # subscribed again on the same connection
            self.backend.reconnects += 1

    def _watch(self) -> None:
        """The idle check: PING a silent connection, drop one that does not answer."""
        backend = self.backend
        now = self.loop.time()
        if self.busy:  # handlers are running: the socket's silence means nothing
            self.heard = now
        elif self.pinged is not None:
            if now - self.pinged >= backend._ping_timeout:
                self.dead = f"no answer to PING within {backend._ping_timeout} s"
                self._spawn(self.conn.disconnect(nowait=True))
                return
        elif now - self.heard >= backend._ping_interval:
            if not backend._wanted:  # no subscriptions left: stop reading
                self.stopping = True
                self._spawn(self.conn.disconnect(nowait=True))
                return
            self.pinged = now
            self._spawn(self._ping())
        if self.pinged is not None:
            due = self.pinged + backend._ping_timeout
        else:
            due = self.heard + backend._ping_interval
        self.timer = self.loop.call_at(due, self._watch)

    async def _ping(self) -> None:
        with contextlib.suppress(Exception):
            await self.conn.send_command("PING", _WATCHDOG_PING)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await self.conn.disconnect()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _everything(name: str) -> bool:
    return True
