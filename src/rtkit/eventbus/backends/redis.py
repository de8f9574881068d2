"""The Redis EventBus backend: one pub/sub channel per prefix, shared by every process.

Every bus on the same Redis, database and prefix subscribes to one channel,
``<prefix>eventbus:db<N>:events`` (pub/sub ignores the database number, so the
channel names it), and the bus matches event names locally with the
same matcher as on memory; so matching cannot differ between backends and
``subscribe`` takes effect at once, with no round trip. Each process therefore
receives every event of its prefix: give unrelated applications different
prefixes.

Publishing: one awaited ``publish`` is one ``PUBLISH`` round trip. While a
round trip is in flight, further publishes queue up and go together, in order,
in one pipeline (group commit), so many concurrent publishers cost few round
trips. Every round trip is bounded by ``timeout``.

Receiving: one task reads the subscription connection. When the connection
is idle for ``ping_interval`` seconds it sends ``PING``; if nothing comes back
within ``ping_timeout`` seconds (a silently dead connection), or the
connection fails, the backend drops it and subscribes again, retrying with a
capped back-off until Redis answers. Events published while no subscription
exists are not received (Redis pub/sub keeps nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Self

from redis.asyncio.client import PubSub

from ..._core.lifecycle import DEFAULT_TIMEOUT
from ..._core.redis import Keyspace, RedisHandle, redis_unavailable
from ..._core.urls import BackendTarget
from ..._core.validate import check_seconds
from ...errors import BackendUnavailable, RtkitError
from .._wire import decode_envelope, encode_envelope
from .base import Deliver, Report

__all__ = ["RedisEventBusBackend"]

logger = logging.getLogger("rtkit.eventbus")

_WATCHDOG_PING = "rtkit-eventbus-watchdog"
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
        pool = getattr(handle.client, "connection_pool", None)
        database = getattr(pool, "connection_kwargs", {}).get("db", 0)
        self.channel = Keyspace(prefix, "eventbus").channel(f"db{database}", "events")
        """The pub/sub channel every bus of this database and prefix shares."""
        self.reconnects = 0
        self._deliver: Deliver | None = None
        self._report: Report | None = None
        self._reader: asyncio.Task[None] | None = None
        # Group commit: while one round trip is in flight, later publishes queue here.
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

    async def start(self, deliver: Deliver, report: Report, *, receive: bool) -> None:
        """Subscribe (waiting for Redis to confirm) and start the reader task.

        Without ``receive`` (a publish-only bus), only check that Redis answers.
        """
        self._deliver = deliver
        self._report = report
        if not receive:
            with redis_unavailable("connecting"):
                async with asyncio.timeout(self._timeout):
                    await self._handle.client.ping()
            return
        pubsub = await self._open()
        self._reader = asyncio.create_task(self._read_forever(pubsub), name="rtkit-eventbus-reader")

    async def close(self) -> None:
        """Let queued publishes finish, stop the reader, close an owned client."""
        if self._drainer is not None:
            with contextlib.suppress(Exception):
                await self._drainer
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        with contextlib.suppress(Exception):
            await self._handle.close()

    # ------------------------------------------------------------------ publishing

    async def send(self, name: str, event_id: str, timestamp: float, data: bytes) -> None:
        """Publish one encoded event; batched with concurrent publishes."""
        message = encode_envelope(name, event_id, timestamp, data)
        if self._busy:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._queue.append((message, future))
            await future
            return
        self._busy = True
        try:
            await self._publish([message])
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
                    await self._publish([message for message, _ in batch])
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

    async def _publish(self, messages: list[bytes]) -> None:
        client = self._handle.client
        with redis_unavailable("publishing an event"):
            async with asyncio.timeout(self._timeout):
                if len(messages) == 1:
                    await client.publish(self.channel, messages[0])
                else:
                    pipe = client.pipeline(transaction=False)
                    for message in messages:
                        pipe.publish(self.channel, message)
                    await pipe.execute()

    # ------------------------------------------------------------------ receiving

    async def _open(self) -> PubSub:
        """A new subscription, confirmed by Redis within ``timeout``."""
        pubsub = self._handle.client.pubsub()
        try:
            with redis_unavailable("subscribing to events"):
                async with asyncio.timeout(self._timeout):
                    await pubsub.subscribe(self.channel)
                    while True:
                        message = await pubsub.get_message(timeout=self._timeout)
                        if message is not None and message["type"] == "subscribe":
                            return pubsub
        except BaseException:
            await self._discard(pubsub)
            raise

    @staticmethod
    async def _discard(pubsub: PubSub) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _read_forever(self, pubsub: PubSub) -> None:
        delay = 0.05
        while True:
            try:
                await self._listen(pubsub)
            except asyncio.CancelledError:
                await self._discard(pubsub)
                raise
            except Exception as exc:
                logger.warning("EventBus subscription lost (%s), subscribing again", exc)
            await self._discard(pubsub)
            while True:
                try:
                    pubsub = await self._open()
                    break
                except Exception as exc:
                    logger.warning("EventBus cannot subscribe yet (%s)", exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, _MAX_RECONNECT_DELAY)
            delay = 0.05
            self.reconnects += 1

    async def _listen(self, pubsub: PubSub) -> None:
        """Deliver messages until the connection fails or stops answering PING."""
        loop = asyncio.get_running_loop()
        last_heard = loop.time()
        ping_sent: float | None = None
        while True:
            if ping_sent is None:
                wait = self._ping_interval - (loop.time() - last_heard)
            else:
                wait = self._ping_timeout - (loop.time() - ping_sent)
            message = await pubsub.get_message(timeout=max(wait, 0.01))
            now = loop.time()
            if message is None:
                if ping_sent is not None:
                    if now - ping_sent >= self._ping_timeout:
                        raise _DeadSubscription(f"no answer to PING within {self._ping_timeout} s")
                elif now - last_heard >= self._ping_interval:
                    await pubsub.ping(_WATCHDOG_PING)
                    ping_sent = now
                continue
            last_heard = now
            ping_sent = None
            kind = message["type"]
            if kind == "message":
                await self._receive(message["data"])
            elif kind == "subscribe":
                # redis-py re-subscribed by itself after a lost connection.
                self.reconnects += 1

    async def _receive(self, raw: str) -> None:
        assert self._deliver is not None and self._report is not None
        try:
            envelope = decode_envelope(raw)
        except RtkitError as exc:
            await self._report(exc)
            return
        await self._deliver(envelope.name, envelope.id, envelope.ts, envelope.data)
