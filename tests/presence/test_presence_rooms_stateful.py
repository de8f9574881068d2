"""Memory is the specification: random steps on memory and on Redis must look the same.

A hypothesis state machine drives server instances on both backends with the
same connect / disconnect / join (with and without a room limit) / leave /
leave_all / crash / close / purge / time-advance steps (one ManualClock for
both), plus the faults the heartbeat repairs: a transition that reached the
backend but not the store (a lost reply), and a backend that lost all its data.
After every step it requires equal observations: every return value, every page
of every listing, every published presence and rooms event.

Each store starts with its first operation, and its janitor then beats every
``ttl / 3`` seconds of real time: the lease is an hour long so that no janitor
beats within an example (only the manual clock moves); time advances by the
same fractions of the ttl as ever (0.05, 0.3, 0.6 and 1.1 ttl).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import hypothesis.strategies as st
import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from presence_support import RecordingBus, lose_data, masters_of

from rtkit import ManualClock, PresenceStore, RoomManager, redis_client
from rtkit_testing import Backend

pytestmark = [pytest.mark.redis, pytest.mark.slow]

TTL = 3600.0
USERS = ["u0", "u1", "u2", "ü3", "0190a3c4-5b6d-7e8f-9a0b-1c2d3e4f5a6b"]  # a UUID: packed
SIDS = ["s0", "s1", "s2", "s3", "s4"]
ROOMS = ["r0", "r1", "r2"]
NAMES = [None, "Ada", "Bob"]


@dataclass
class Instance:
    presence: PresenceStore
    rooms: RoomManager


@dataclass
class Side:
    """One backend: its server instances (alive ones by id) and its event log."""

    url: str
    prefix: str
    client: aioredis.Redis | None
    bus: RecordingBus = field(default_factory=RecordingBus)
    alive: dict[str, Instance] = field(default_factory=dict)
    dead: list[Instance] = field(default_factory=list)


class PresenceAndRooms(RuleBasedStateMachine):
    """The same random steps on memory and on Redis."""

    redis_url = "redis://127.0.0.1:6379"
    topology = "single"

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = ManualClock(start=1_700_000_000.0)
        self.prefix = f"rtkit-test-{uuid.uuid4().hex[:12]}:"
        client = self.loop.run_until_complete(self._client())
        self.sides = [
            Side(f"memory://{uuid.uuid4().hex}", "rtkit:", None),
            Side(self.redis_url, self.prefix, client),
        ]
        self.next_instance = 0
        self.order: list[str] = []  # ids of alive instances, same on both sides
        for _ in range(2):
            self._new_instance()

    async def _client(self) -> aioredis.Redis:
        return redis_client(self.redis_url)

    def _new_instance(self) -> None:
        iid = f"i{self.next_instance}"
        self.next_instance += 1
        self.order.append(iid)
        for side in self.sides:
            common: dict[str, Any] = {
                "prefix": side.prefix,
                "instance_id": iid,
                "ttl": TTL,
                "redis": side.client,
                "clock": self.clock,
            }
            side.alive[iid] = Instance(
                PresenceStore.from_url(side.url, bus=side.bus, **common),
                RoomManager.from_url(side.url, bus=side.bus, **common),
            )

    def _both(self, index: int, step: Callable[[Instance], Awaitable[Any]]) -> Any:
        """Run ``step`` on the instance ``index`` of both sides; require the same outcome."""
        iid = self.order[index % len(self.order)]
        results = []
        for side in self.sides:
            try:
                results.append(self.loop.run_until_complete(step(side.alive[iid])))
            except Exception as exc:
                results.append(type(exc))
        assert results[0] == results[1], f"memory {results[0]!r} != redis {results[1]!r}"
        return results[0]

    @rule(
        i=st.integers(0, 2),
        user=st.sampled_from(USERS),
        sid=st.sampled_from(SIDS),
        name=st.sampled_from(NAMES),
    )
    def connect(self, i: int, user: str, sid: str, name: str | None) -> None:
        self._both(i, lambda inst: inst.presence.connect(user, sid, username=name))

    @rule(i=st.integers(0, 2), sid=st.sampled_from(SIDS))
    def disconnect(self, i: int, sid: str) -> None:
        self._both(i, lambda inst: inst.presence.disconnect(sid))

    @rule(
        i=st.integers(0, 2),
        room=st.sampled_from(ROOMS),
        user=st.sampled_from(USERS),
        sid=st.sampled_from(SIDS),
        most=st.sampled_from([None, 0, 1, 2]),
    )
    def join(self, i: int, room: str, user: str, sid: str, most: int | None) -> None:
        self._both(i, lambda inst: inst.rooms.join(room, user, sid, max_rooms=most))

    @rule(i=st.integers(0, 2), user=st.sampled_from(USERS), sid=st.sampled_from(SIDS))
    def lost_connect_reply(self, i: int, user: str, sid: str) -> None:
        """A connect that ran on the backend but whose reply never reached the store."""

        async def step(inst: Instance) -> Any:
            p = inst.presence
            now = self.clock.time()
            return await p._backend.connect(p.instance_id, user, sid, None, None, now, TTL)

        self._both(i, step)

    @rule(
        i=st.integers(0, 2),
        room=st.sampled_from(ROOMS),
        user=st.sampled_from(USERS),
        sid=st.sampled_from(SIDS),
    )
    def lost_join_reply(self, i: int, room: str, user: str, sid: str) -> None:
        """A join that ran on the backend but whose reply never reached the store."""

        async def step(inst: Instance) -> Any:
            r = inst.rooms
            return await r._backend.join(r.instance_id, room, user, sid, self.clock.time(), TTL)

        self._both(i, step)

    @rule()
    def lose_everything(self) -> None:
        """The backend restarts without its data (Redis without persistence)."""
        for side in self.sides:
            inst = side.alive[self.order[0]]
            kind = "redis" if side.client is not None else "memory"
            lose_data(
                Backend(kind, side.url, side.prefix, self.topology), inst.presence, inst.rooms
            )

    @rule(i=st.integers(0, 2), room=st.sampled_from(ROOMS), sid=st.sampled_from(SIDS))
    def leave(self, i: int, room: str, sid: str) -> None:
        self._both(i, lambda inst: inst.rooms.leave(room, sid))

    @rule(i=st.integers(0, 2), sid=st.sampled_from(SIDS))
    def leave_all(self, i: int, sid: str) -> None:
        self._both(i, lambda inst: inst.rooms.leave_all(sid))

    @rule(i=st.integers(0, 2))
    def purge(self, i: int) -> None:
        async def step(inst: Instance) -> Any:
            return await inst.presence.purge_expired(), await inst.rooms.purge_expired()

        self._both(i, step)

    @rule(seconds=st.sampled_from([180.0, 1080.0, 2160.0, 3960.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(i=st.integers(0, 2))
    def crash(self, i: int) -> None:
        """The instance stops without a word: no close, no heartbeat any more."""
        iid = self.order.pop(i % len(self.order))
        for side in self.sides:
            side.dead.append(side.alive.pop(iid))
        if not self.order:
            self._new_instance()

    @rule(i=st.integers(0, 2))
    def close(self, i: int) -> None:
        async def step(inst: Instance) -> None:
            await inst.presence.close()
            await inst.rooms.close()

        self._both(i, step)
        self.crash(i)  # closed instances leave the alive list the same way

    @rule()
    def start_instance(self) -> None:
        if len(self.order) < 3:
            self._new_instance()

    @invariant()
    def observations_agree(self) -> None:
        observed = [self.loop.run_until_complete(self._observe(side)) for side in self.sides]
        assert observed[0] == observed[1]
        assert self.sides[0].bus.events == self.sides[1].bus.events

    async def _observe(self, side: Side) -> dict[str, Any]:
        inst = side.alive[self.order[0]]
        presence, rooms = inst.presence, inst.rooms
        seen: dict[str, Any] = {"count": await presence.count()}
        pages, cursor = [], None
        while True:
            page = await presence.online_users(cursor=cursor, limit=2)
            pages.append(page)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        seen["online"] = pages
        online = [u for p in pages for u in p.items]
        assert seen["count"].users == len(online)
        assert seen["count"].connections == sum(u.connections for u in online)
        for user in USERS:
            seen[f"conns:{user}"] = await presence.connections(user)
            seen[f"online:{user}"] = await presence.is_online(user)
            seen[f"rooms_of:{user}"] = await rooms.rooms_of(user)
        room_pages, cursor = [], None
        while True:
            room_page = await rooms.rooms(cursor=cursor, limit=2)
            room_pages.append(room_page)
            if room_page.next_cursor is None:
                break
            cursor = room_page.next_cursor
        seen["rooms"] = room_pages
        seen["room_count"] = await rooms.count()
        assert seen["room_count"] == sum(len(p.items) for p in room_pages)
        for room in ROOMS:
            seen[f"members:{room}"] = await rooms.members(room, limit=3)
            seen[f"member:{room}"] = [await rooms.is_member(room, u) for u in USERS]
        return seen

    def teardown(self) -> None:
        async def close() -> None:
            # the janitors of the instances that were never closed (crashed ones included)
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            client = self.sides[1].client
            assert client is not None
            await client.aclose()

        self.loop.run_until_complete(close())
        self.loop.close()
        for sync in masters_of(Backend("redis", self.redis_url, self.prefix, self.topology)):
            try:
                for match in (self.prefix + "*", "{" + self.prefix + "*"):
                    keys = list(sync.scan_iter(match=match, count=1000))
                    for key in keys:
                        sync.delete(key)
            finally:
                sync.close()


def test_memory_and_redis_agree_step_by_step(
    any_redis: str, request: pytest.FixtureRequest
) -> None:
    """On the shared Redis, the private cluster and the private Sentinel setup."""
    PresenceAndRooms.redis_url = any_redis
    PresenceAndRooms.topology = request.node.callspec.params["any_redis"]
    run_state_machine_as_test(
        PresenceAndRooms,
        settings=settings(
            # the private topologies add ~80 s at 25 examples: fewer there, same steps
            max_examples=25 if PresenceAndRooms.topology == "single" else 10,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
