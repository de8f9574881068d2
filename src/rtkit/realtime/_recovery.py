"""Connection state recovery: where sessions and missed packets are kept.

Socket.IO's connection state recovery (4.6+): a client that lost its connection
reconnects with its private session id (``pid``) and the offset of the last
packet it saw; the server gives the socket back its id and rooms and replays
the packets it missed. A :class:`RecoveryStore` keeps both for
``duration`` seconds: the sessions of disconnected sockets (by pid) and every
recoverable packet (in order, each with its offset), at most ``max_packets``
per namespace. The memory store is the specification; the Redis store keeps
packets in a stream per namespace (so a client reconnecting to another
instance recovers too) and sessions under their own keys.

The offset of a packet is a string: ``<n>`` in memory, the stream id
``<ms>-<seq>`` on Redis; :func:`offset_key` orders both.
"""

from __future__ import annotations

import json
import re
import secrets
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Protocol

import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict, ValidationError

from .._core.clock import Clock, SystemClock
from .._core.lane import PublishLane
from .._core.lifecycle import DEFAULT_TIMEOUT
from .._core.redis import Keyspace, load_lua, redis_unavailable
from .._core.validate import check_int, check_seconds
from .._core.wire import DedicatedConnection, bulk

__all__ = [
    "DEFAULT_MAX_PACKETS",
    "MemoryRecoveryStore",
    "Missed",
    "RecoveryStore",
    "RedisRecoveryStore",
    "Restored",
    "Session",
    "is_recoverable",
    "new_pid",
    "offset_key",
    "parse_resume",
]

DEFAULT_MAX_PACKETS = 10_000
"""Recoverable packets kept per namespace (older ones are trimmed first)."""

# Why a connection ended, as python-socketio says it: these may come back and recover
# (as in Node); a client or server that disconnected on purpose does not.
_RECOVERABLE_REASONS = frozenset({"transport close", "transport error", "ping timeout"})
_OFFSET_RE = re.compile(r"^[0-9]{1,20}(-[0-9]{1,20})?$")
_PID_RE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
_PACKAGE = "rtkit.realtime"
_SLACK = 1000  # packets a Redis stream may hold beyond max_packets (trimmed by MAXLEN ~)

OffsetKey = tuple[int, int]


def offset_key(offset: str) -> OffsetKey:
    """The order of an offset (``<n>`` or ``<ms>-<seq>``, checked by :func:`parse_resume`)."""
    first, _, second = offset.partition("-")
    return int(first), int(second or 0)


def is_recoverable(reason: Any) -> bool:
    """Whether a connection that ended for ``reason`` keeps its session."""
    return reason in _RECOVERABLE_REASONS


def new_pid() -> str:
    """A private session id: shown to its client only, never broadcast."""
    return secrets.token_urlsafe(16)


def parse_resume(auth: Any) -> tuple[str, str | None] | None:
    """``(pid, offset)`` from a CONNECT packet's auth, or None when it asks no recovery.

    A malformed pid or offset asks none (the connection starts a new session).
    """
    if not isinstance(auth, dict):
        return None
    pid, offset = auth.get("pid"), auth.get("offset")
    if not isinstance(pid, str) or not _PID_RE.match(pid):
        return None
    if offset is not None and (not isinstance(offset, str) or not _OFFSET_RE.match(offset)):
        return None
    return pid, offset


class Session(BaseModel):
    """A disconnected socket, kept until it recovers or ``expires_at`` passes.

    ``origin``: the last offset its instance had handled when it connected;
    ``sent``: the last offset sent to it (None: nothing); ``seen``: the last
    offset its instance had handled when it disconnected. A packet it may have
    missed comes after ``sent`` (what it saw is at most that), or after
    ``origin`` when it saw nothing; when it saw all that was sent, only packets
    after ``seen`` can be missing.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    pid: str
    sid: str
    namespace: str
    rooms: list[str]
    origin: str
    sent: str | None
    seen: str
    data: dict[str, Any]
    expires_at: float

    def base(self, offset: str | None) -> str:
        """The offset after which a client that saw ``offset`` missed packets."""
        if offset == self.sent or (offset is None and self.sent is None):
            return self.seen
        if offset is None or offset_key(offset) < offset_key(self.origin):
            return self.origin
        return offset

    def wants(self, room: Any, skip: Any) -> bool:
        """Whether a packet to ``room`` (None, a name or names) skipping ``skip`` was for it."""
        skipped = skip if isinstance(skip, list) else [skip]
        if self.sid in skipped:
            return False
        if room is None:
            return True
        rooms = [room] if isinstance(room, str) else room
        return any(r in self.rooms for r in rooms)


@dataclass(frozen=True)
class Missed:
    """A packet kept for recovery: its offset and its python-socketio message."""

    offset: str
    message: dict[str, Any]


@dataclass(frozen=True)
class Restored:
    """A session being restored: the packets it missed, read up to offset ``read``."""

    session: Session
    read: str
    packets: list[Missed]


class RecoveryStore(Protocol):
    """Where sessions and packets wait (memory: :class:`MemoryRecoveryStore`)."""

    duration: float
    max_packets: int
    clock: Clock

    async def head(self, namespace: str) -> str:
        """The offset of the newest packet of ``namespace`` kept now (``0``/``0-0``: none)."""
        ...

    async def save(self, session: Session) -> None:
        """Keep ``session`` until ``session.expires_at``."""
        ...

    async def take(self, pid: str) -> Session | None:
        """Remove and return the live session ``pid`` (None: unknown or expired)."""
        ...

    async def missed(self, namespace: str, after: str) -> list[Missed] | None:
        """The packets after ``after`` in order, or None when some were trimmed already."""
        ...

    async def close(self) -> None:
        """Release what the store holds."""
        ...


class _Bounds:
    """The bounds every store checks alike: how long and how many packets it keeps."""

    def __init__(self, duration: float, max_packets: int, clock: Clock | None) -> None:
        self.duration = check_seconds(duration, "max_disconnection_duration")
        self.max_packets = check_int(max_packets, "max_packets", minimum=1)
        self.clock: Clock = clock or SystemClock()


class MemoryRecoveryStore(_Bounds):
    """Sessions and packets in this process (the specification of the Redis store).

    Packets older than ``duration`` or beyond ``max_packets`` are trimmed on append;
    expired sessions are dropped as new ones arrive.
    """

    def __init__(
        self,
        *,
        duration: float,
        max_packets: int = DEFAULT_MAX_PACKETS,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(duration, max_packets, clock)
        self._seq = 0
        # namespace -> (seq, at, message), oldest first; the highest trimmed seq
        self._packets: dict[str, deque[tuple[int, float, dict[str, Any]]]] = {}
        self._trimmed: dict[str, int] = {}
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def append(self, namespace: str, message: dict[str, Any]) -> str:
        """Keep ``message`` (its ``data`` ends with the offset returned) and trim."""
        self._seq += 1
        offset = str(self._seq)
        message["data"] = [*message["data"], offset]
        now = self.clock.time()
        packets = self._packets.setdefault(namespace, deque())
        packets.append((self._seq, now, message))
        while packets and (len(packets) > self.max_packets or packets[0][1] < now - self.duration):
            self._trimmed[namespace] = packets.popleft()[0]
        return offset

    async def head(self, namespace: str) -> str:
        packets = self._packets.get(namespace)
        return str(packets[-1][0]) if packets else str(self._trimmed.get(namespace, 0))

    async def save(self, session: Session) -> None:
        self._sessions.pop(session.pid, None)
        self._sessions[session.pid] = session
        now = self.clock.time()
        while self._sessions:
            oldest = next(iter(self._sessions.values()))
            if oldest.expires_at > now:
                break
            self._sessions.popitem(last=False)

    async def take(self, pid: str) -> Session | None:
        session = self._sessions.pop(pid, None)
        if session is None or session.expires_at <= self.clock.time():
            return None
        return session

    async def missed(self, namespace: str, after: str) -> list[Missed] | None:
        seq = offset_key(after)[0]
        if seq < self._trimmed.get(namespace, 0) or seq > self._seq:
            return None
        packets = self._packets.get(namespace, deque())
        return [Missed(str(s), m) for s, _, m in packets if s > seq]

    async def close(self) -> None:
        self._packets.clear()
        self._sessions.clear()


class RedisRecoveryStore(_Bounds):
    """Sessions and packets in Redis: a client recovers on any instance.

    Each namespace's packets are a stream ``{<prefix>recovery:ns:<namespace>}:packets``
    (trimmed to about ``max_packets``); each session a key
    ``{<prefix>recovery:<pid>}:session`` that expires with it. A packet is
    added and published in one script, so that its offset (the stream id) is
    in the message every instance delivers, and the stream's order is the
    order of delivery.

    Packets go out on a connection of the store's own, pre-packed, the ones sent
    while a round trip is in flight together in the next (``timeout`` bounds each);
    sessions and replays use ``redis``. ``close()`` closes that connection.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        prefix: str = "rtkit:",
        duration: float,
        max_packets: int = DEFAULT_MAX_PACKETS,
        clock: Clock | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        super().__init__(duration, max_packets, clock)
        self._redis = redis
        self._keys = Keyspace(prefix, "recovery")
        self._missed = redis.register_script(load_lua(_PACKAGE, "recovery_missed.lua"))
        # EVAL, not EVALSHA: Redis keeps it compiled all the same, and a restart or a
        # failover that lost the script costs nothing
        script = load_lua(_PACKAGE, "recovery_publish.lua").encode()
        self._eval = bulk(b"EVAL") + bulk(script) + bulk(b"1")
        connection = DedicatedConnection(
            redis, timeout=timeout, doing="keeping packets for recovery"
        )
        self._lane = PublishLane(connection, connection.drop, "packets for recovery")

    def stream(self, namespace: str) -> str:
        """The key of ``namespace``'s packet stream."""
        return self._keys.entity_key("ns:" + namespace, "packets")

    def _session_key(self, pid: str) -> str:
        return self._keys.entity_key(pid, "session")

    async def publish(self, namespace: str, channel: str, parts: list[tuple[str, str]]) -> None:
        """Keep each message ``head + offset + tail`` of ``parts`` (``(head, tail)``
        pairs) and publish it on ``channel``, in order, in one round trip.

        Raises:
            rtkit.errors.BackendUnavailable: Redis did not take them within ``timeout``,
                or refused them.
        """
        if not parts:
            return
        command = [
            b"*%d\r\n%b" % (6 + 2 * len(parts), self._eval),
            bulk(self.stream(namespace).encode()),
            bulk(b"%d" % self.max_packets),
            bulk(channel.encode()),
        ]
        for head, tail in parts:
            command += (bulk(head.encode()), bulk(tail.encode()))
        await self._lane.send(b"".join(command))

    async def head(self, namespace: str) -> str:
        with redis_unavailable("reading the recovery stream"):
            newest = await self._redis.xrevrange(self.stream(namespace), count=1)
        return str(newest[0][0]) if newest else "0-0"

    async def save(self, session: Session) -> None:
        ttl_ms = int((session.expires_at - self.clock.time()) * 1000)
        if ttl_ms <= 0:
            return
        with redis_unavailable("keeping a session for recovery"):
            await self._redis.set(
                self._session_key(session.pid), session.model_dump_json(), px=ttl_ms
            )

    async def take(self, pid: str) -> Session | None:
        with redis_unavailable("taking a session for recovery"):
            raw = await self._redis.getdel(self._session_key(pid))
        if raw is None:
            return None
        try:
            session = Session.model_validate_json(raw)
        except ValidationError:
            return None
        return session if session.expires_at > self.clock.time() else None

    async def missed(self, namespace: str, after: str) -> list[Missed] | None:
        if "-" not in after:
            return None
        # MAXLEN ~ keeps up to a stream node (100 entries) more than max_packets
        count = self.max_packets + _SLACK
        with redis_unavailable("reading missed packets"):
            reply = await self._missed(keys=[self.stream(namespace)], args=[after, count])
        if not reply or int(reply[0]) != 1 or len(reply) > 3 * count:
            return None  # (more than it may keep: packets after those would be lost)
        found: list[Missed] = []
        for i in range(1, len(reply), 3):
            offset, head, tail = str(reply[i]), str(reply[i + 1]), str(reply[i + 2])
            found.append(Missed(offset, json.loads(head + json.dumps(offset) + tail)))
        return found

    async def close(self) -> None:
        """Close the store's connection (``redis`` is the caller's: it stays open)."""
        await self._lane.finish()
        await self._lane.connection.shut()
