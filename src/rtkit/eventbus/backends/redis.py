"""The Redis EventBus backend: pub/sub on one Redis, a Sentinel-followed master, or a cluster.

One Redis (or Sentinel): every bus on the same Redis, database and prefix
publishes to one classic channel, ``<prefix>eventbus:db<N>:events`` (pub/sub
ignores the database number, so the channel names it), and each process that
subscribes receives every event of its prefix.

A Redis Cluster: events go on ``shards`` shard channels (Redis 7 ``SPUBLISH`` /
``SSUBSCRIBE``), ``{<prefix>eventbus:<bucket>}:events``, the bucket a hash of the
event name's first word. A shard channel lives on the master of its slot, so the
buckets spread over the masters and a message crosses only the node that owns
its bucket. A bus subscribes only to the buckets its patterns can match: a
pattern whose first word is literal (``order.*``, ``order.#``) needs one bucket,
one that starts with a wildcard (``*.created``, ``#``) needs all of them. One
subscription connection per master that owns a wanted bucket; a new pattern that
needs more buckets subscribes to them on the running connections. Events of one
publisher keep their order within a bucket (so for names with the same first
word), not across buckets.

Either way the bus matches event names locally with the same matcher as on
memory, so matching cannot differ between backends; a message's event name is
routed before the envelope is validated, so events nobody here subscribes to
cost a JSON parse and nothing more.

Receiving: a bus subscribes only while it has subscriptions (a bus that only
publishes never reads its own events back). Each subscription connection is read
by one task and watched for silence (``ping_interval``, ``ping_timeout``); when a
connection fails or falls silent the backend subscribes again, retrying with a
capped back-off until Redis answers (on a cluster it re-reads the slot map
first, so after a failover it subscribes on the promoted replica). Events
published while no subscription exists are not received (pub/sub keeps nothing).

Publishing: on a connection of its own (on a cluster, one per master), one
awaited ``publish`` is one round trip. While a round trip is in flight, further
publishes to the same node queue up and go together, in order, in one pipeline
(group commit). Every round trip is bounded by ``timeout``. A bus that just got
its first subscription (or a pattern needing new buckets) waits, before its next
publish goes out, until Redis confirmed the subscription: a bus receives what it
publishes itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections.abc import Awaitable, Callable, Collection
from typing import Any, Self

import pydantic_core
from redis.crc import key_slot

from ..._core.lane import PublishLane as _Lane
from ..._core.lifecycle import DEFAULT_TIMEOUT
from ..._core.redis import (
    Keyspace,
    RedisHandle,
    database_of,
    is_cluster,
    redis_unavailable,
    refresh_topology,
)
from ..._core.urls import BackendTarget
from ..._core.validate import check_int, check_seconds
from ..._core.wire import DedicatedConnection, bulk, new_connection, new_node_connection
from ...errors import BackendUnavailable, RtkitError
from .._wire import EventEnvelope, decode_envelope, encode_envelope, validate_envelope
from ._subscription import SubscriptionConnection
from .base import Deliver, Report, Wants

__all__ = ["RedisEventBusBackend", "buckets_of"]

logger = logging.getLogger("rtkit.eventbus")

_MAX_RECONNECT_DELAY = 2.0
_REFRESH_EVERY = 0.5
DEFAULT_PING_INTERVAL = 5.0
DEFAULT_PING_TIMEOUT = 3.0
DEFAULT_SHARDS = 16
MAX_SHARDS = 1024


def _durations(timeout: float, ping_interval: float, ping_timeout: float) -> tuple[float, ...]:
    """The three durations, checked (``ConfigurationError`` unless positive numbers)."""
    return (
        check_seconds(timeout, "timeout"),
        check_seconds(ping_interval, "ping_interval"),
        check_seconds(ping_timeout, "ping_timeout"),
    )


def bucket_of(name: str, shards: int) -> int:
    """The shard bucket of an event name: a CRC-32 of its first word, modulo ``shards``."""
    return zlib.crc32(name.partition(".")[0].encode()) % shards


def buckets_of(patterns: Collection[str] | None, shards: int) -> set[int]:
    """The buckets a bus with ``patterns`` must hear: one per pattern whose first word is
    literal, every bucket as soon as one starts with ``*`` or ``#`` (or none is known)."""
    if patterns is None:
        return set(range(shards))
    found: set[int] = set()
    for pattern in patterns:
        first = pattern.partition(".")[0]
        if first in ("*", "#"):
            return set(range(shards))
        found.add(bucket_of(first, shards))
    return found


class RedisEventBusBackend:
    """Carries events through Redis pub/sub (see the module docs).

    Args:
        handle: The Redis client, owned (closed with the backend) or borrowed.
        prefix: The key prefix; the channel is ``<prefix>eventbus:db<N>:events``
            (``N``: the database of the client), or on a cluster the shard channels
            ``{<prefix>eventbus:<bucket>}:events``.
        timeout: Bound, in seconds, on each publish round trip and on subscribing.
        ping_interval: Idle seconds before a subscription connection is PINGed.
        ping_timeout: Seconds to wait for the PING's answer before subscribing again.
        shards: On a cluster, how many shard channels (event-name buckets) events
            spread over (16); every bus of a deployment must use the same number.

    Raises:
        rtkit.errors.ConfigurationError: A duration that is not a positive number, or
            ``shards`` outside 1-1024.
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
        shards: int = DEFAULT_SHARDS,
    ) -> None:
        self._timeout, self._ping_interval, self._ping_timeout = _durations(
            timeout, ping_interval, ping_timeout
        )
        self._shards = check_int(shards, "shards", maximum=MAX_SHARDS)
        self._handle = handle
        client = handle.client
        self.sharded = is_cluster(client)
        """Whether events go on shard channels (a Redis Cluster)."""
        keys = Keyspace(prefix, "eventbus")
        self.channel = keys.channel(f"db{database_of(client)}", "events")
        """The classic pub/sub channel every bus of this database and prefix shares."""
        self.channels = [keys.entity_key(str(b), "events") for b in range(self._shards)]
        """On a cluster, the shard channel of each bucket."""
        self._heads = [b"*3\r\n$8\r\nSPUBLISH\r\n" + bulk(c.encode()) for c in self.channels]
        self._slots = [key_slot(c.encode()) for c in self.channels]
        self.reconnects = 0
        self._deliver: Deliver | None = None
        self._report: Report | None = None
        self._wants: Wants = _everything
        # Receiving: wanted while the bus has subscriptions; confirmed once Redis said so.
        self._wanted = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reader: asyncio.Task[None] | None = None
        self._confirmed: asyncio.Future[None] | None = None
        self._buckets: set[int] = set(range(self._shards))
        self._interest_known = False
        self._grow = asyncio.Event()
        self._pending: set[str] = set()  # shard channels asked for, not yet confirmed
        self._requested: set[str] = set()  # shard channels asked for on the open readers
        self._readers: dict[str, SubscriptionConnection] = {}
        # Publishing: a connection of its own (one per master); group commit per connection.
        self._head = b"*3\r\n$7\r\nPUBLISH\r\n" + bulk(self.channel.encode())
        self._lane = _Lane(
            DedicatedConnection(client, timeout=self._timeout, doing="publishing an event"),
            self._refresh_soon,
            "an event",
        )
        self._lanes: dict[str, _Lane] = {}
        self._refreshed = -_REFRESH_EVERY
        self._refreshing: asyncio.Task[None] | None = None

    @classmethod
    def open(
        cls,
        target: BackendTarget,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        ping_interval: float = DEFAULT_PING_INTERVAL,
        ping_timeout: float = DEFAULT_PING_TIMEOUT,
        shards: int = DEFAULT_SHARDS,
    ) -> Self:
        """The backend for a Redis target (its client borrowed when the target has one).

        Args:
            target: Where to connect, and the prefix.
            timeout: Bound, in seconds, on each publish round trip and on
                subscribing (and so on ``start``).
            ping_interval: Idle seconds before a subscription connection is PINGed.
            ping_timeout: Seconds to wait for the PING's answer before subscribing again.
            shards: On a cluster, the number of shard channels (16; the same for
                every bus of a deployment).
        """
        _durations(timeout, ping_interval, ping_timeout)  # before making a client
        check_int(shards, "shards", maximum=MAX_SHARDS)
        return cls(
            RedisHandle.open(target, timeout=timeout),
            prefix=target.prefix,
            timeout=timeout,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            shards=shards,
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
        if not self.sharded:
            await self._lane.connection.open()
        else:  # read the slot map: publishing and subscribing route by it
            with redis_unavailable("reading the Redis Cluster's slot map"):
                async with asyncio.timeout(self._timeout):
                    await self._handle.client.initialize()
        if receive:
            self.listen(True)
            try:
                await self.subscribed()
            except BaseException:
                await self._stop_reading()
                raise

    def interest(self, patterns: Collection[str]) -> None:
        """The bus's patterns now: on a cluster, subscribe to the buckets they need.

        Buckets are added while the bus listens (a publish of this bus waits until
        Redis confirmed them) and dropped at the next resubscription.
        """
        if not self.sharded:
            return
        wanted = buckets_of(patterns, self._shards)
        if not self._interest_known:
            self._interest_known = True
            self._buckets = wanted
            return
        if wanted <= self._buckets:
            return
        self._buckets |= wanted
        if self._reader is not None and not self._reader.done() and self._loop is not None:
            if self._confirmed is None or self._confirmed.done():
                self._confirmed = self._loop.create_future()
            self._grow.set()

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
            read = self._read_sharded if self.sharded else self._read_forever
            self._reader = loop.create_task(read(), name="rtkit-eventbus-reader")

    async def _stop_reading(self) -> None:
        self._wanted = False
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        self._confirmed = None

    async def close(self) -> None:
        """Let queued publishes finish, stop the readers, close the connections."""
        for lane in (self._lane, *self._lanes.values()):
            await lane.finish()
        await self._stop_reading()
        if self._refreshing is not None:
            self._refreshing.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._refreshing
        for lane in (self._lane, *self._lanes.values()):
            await lane.connection.shut()
        with contextlib.suppress(Exception):
            await self._handle.close()

    # ------------------------------------------------------------------ publishing

    async def send(self, name: str, event_id: str, timestamp: float, data: bytes) -> None:
        """Publish one encoded event; batched with concurrent publishes to the same node."""
        message = encode_envelope(name, event_id, timestamp, data)
        confirmed = self._confirmed
        if confirmed is not None and not confirmed.done():
            await self.subscribed()
        if not self.sharded:
            command = b"%b$%d\r\n%b\r\n" % (self._head, len(message), message)
            await self._lane.send(command)
            return
        bucket = bucket_of(name, self._shards)
        command = b"%b$%d\r\n%b\r\n" % (self._heads[bucket], len(message), message)
        await self._lane_for(self._slots[bucket]).send(command)

    def _lane_for(self, slot: int) -> _Lane:
        """The publishing lane of the master that owns ``slot``."""
        nodes: Any = getattr(self._handle.client, "nodes_manager")  # noqa: B009
        node = nodes.get_node_from_slot(slot)
        lane = self._lanes.get(node.name)
        if lane is None:
            connection = DedicatedConnection(
                self._handle.client,
                timeout=self._timeout,
                doing="publishing an event",
                connect=lambda: new_node_connection(node),
            )
            lane = self._lanes[node.name] = _Lane(connection, self._refresh_soon, "an event")
        return lane

    def _refresh_soon(self) -> None:
        """A node failed us: re-read the slot map in the background (cluster only)."""
        if not self.sharded or self._loop is None:
            return
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = self._loop.create_task(self._refresh())

    async def _refresh(self) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() - self._refreshed < _REFRESH_EVERY:
            await asyncio.sleep(_REFRESH_EVERY)
        self._refreshed = loop.time()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self._timeout):
                await refresh_topology(self._handle.client)

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

    def _confirm(self) -> None:
        if self._confirmed is not None and not self._confirmed.done():
            self._confirmed.set_result(None)

    def confirmed(self, channel: str) -> None:
        """A sharded subscription to ``channel`` is in effect."""
        self._pending.discard(channel)
        if not self._pending:
            self._confirm()

    async def _read_forever(self) -> None:
        """Subscribe, read until the connection fails, again; end when no longer wanted."""
        readers: list[SubscriptionConnection] = []

        async def open_() -> None:
            readers[:] = [
                SubscriptionConnection(self, new_connection(self._handle.client), sharded=False)
            ]
            await readers[0].open([self.channel])

        async def close() -> None:
            if readers:
                await readers.pop().close()

        await self._keep_reading(open_, lambda: readers[0].run(), close)

    async def _read_sharded(self) -> None:
        """On a cluster: one subscription per master owning a wanted bucket; when one
        fails, drop them all, re-read the slot map and subscribe again."""

        async def open_() -> None:
            self._grow.clear()
            await self._open_readers({self.channels[b] for b in self._buckets})

        await self._keep_reading(
            open_, self._run_readers, self._close_readers, self._refresh, lambda: not self._pending
        )

    async def _keep_reading(
        self,
        open_: Callable[[], Awaitable[None]],
        run: Callable[[], Awaitable[None]],
        close: Callable[[], Awaitable[None]],
        refresh: Callable[[], Awaitable[None]] | None = None,
        ready: Callable[[], bool] = lambda: True,
    ) -> None:
        """The one resubscribe loop of both layouts: open the subscriptions (backing off
        while Redis refuses), confirm them once ``ready()``, ``run`` them until they fail,
        ``close`` them, ``refresh`` the topology after a failure; end when not wanted."""
        delay = 0.05
        failed = False
        while self._wanted:
            try:
                await open_()
            except asyncio.CancelledError:
                await close()
                raise
            except Exception as exc:
                await close()
                logger.warning("EventBus cannot subscribe yet (%s)", exc)
                if refresh is not None:
                    await refresh()
                await asyncio.sleep(delay)
                delay = min(delay * 2, _MAX_RECONNECT_DELAY)
                continue
            delay = 0.05
            if failed:
                self.reconnects += 1
            if ready():
                self._confirm()
            try:
                await run()
                failed = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failed = True
                if self._wanted:
                    logger.warning("EventBus subscription lost (%s), subscribing again", exc)
            finally:
                await close()
            if failed and refresh is not None:
                await refresh()
        self._confirmed = None

    def _by_node(self, channels: Collection[str]) -> dict[Any, list[str]]:
        nodes: Any = getattr(self._handle.client, "nodes_manager")  # noqa: B009
        found: dict[Any, list[str]] = {}
        for channel in channels:
            node = nodes.get_node_from_slot(key_slot(channel.encode()))
            found.setdefault(node, []).append(channel)
        return found

    async def _open_readers(self, channels: Collection[str]) -> None:
        """Subscribe to ``channels``: on the running connection of their node, or a new one."""
        self._pending |= set(channels)
        self._requested |= set(channels)
        for node, mine in self._by_node(channels).items():
            reader = self._readers.get(node.name)
            if reader is not None:
                await reader.add(mine)
                continue
            reader = SubscriptionConnection(self, new_node_connection(node), sharded=True)
            self._readers[node.name] = reader
            await reader.open(mine)

    async def _close_readers(self) -> None:
        readers, self._readers = self._readers, {}
        self._pending, self._requested = set(), set()
        for reader in readers.values():
            await reader.close()

    async def _run_readers(self) -> None:
        """Read every subscription; add buckets as patterns need them; end on the first
        failure (raised) or when no longer wanted."""
        running: dict[asyncio.Task[None], str] = {}
        grow: asyncio.Task[Any] | None = None
        try:
            while True:
                for name, reader in self._readers.items():
                    if name not in running.values():
                        running[asyncio.ensure_future(reader.run())] = name
                if grow is None:
                    grow = asyncio.ensure_future(self._grow.wait())
                done, _ = await asyncio.wait([*running, grow], return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task is grow:
                        continue
                    task.result()  # raises the reader's failure
                    return  # a reader stopped: the bus no longer listens
                if grow in done:
                    grow = None
                    self._grow.clear()
                    wanted = {self.channels[b] for b in self._buckets}
                    await self._open_readers(wanted - self._requested)
        finally:
            for task in (*running, *([grow] if grow is not None else [])):
                task.cancel()
            for task in (*running, *([grow] if grow is not None else [])):
                with contextlib.suppress(BaseException):
                    await task

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


def _everything(name: str) -> bool:
    return True
