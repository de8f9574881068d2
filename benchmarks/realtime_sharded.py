"""Socket.IO between instances: one classic channel vs a shard channel per room.

Four python-socketio servers (instances) in this process, each with its manager:
python-socketio's ``AsyncRedisManager`` (one classic channel every instance
reads: ``--adapter socketio``) or rtkit's ``ShardedRedisManager`` (``SPUBLISH`` on
a shard channel per room, ``SSUBSCRIBE``\\ d only by the instances with members in
the room: ``--adapter sharded``), on the shared Redis; and the sharded manager on
a private three-master Redis Cluster (started from ``redis-server``, when present).

100 rooms; the members of each room sit on one instance (even rooms) or two (odd
rooms: the next instance too), three connections per room per instance. The
connections are the managers' own bookkeeping with a counting send instead of a
socket, so the figures are those of the cross-instance path: publish, Redis,
each instance reading and decoding, the local fan-out. Each round sends
``--messages`` emits (50 in flight), each to one room from its first instance,
and waits until every member got it.

Reported per deployment: deliveries per second (every member of the room, on
every instance), deliveries per CPU-second of this process (the four instances'
own CPU, Redis's left out: it hardly depends on other load on the machine), and
the messages each instance's pub/sub connection read, as a
share of the messages sent (Redis-level: counted as each manager reads them,
before it drops its own): the classic channel makes every instance read 100%;
sharded, an instance reads only its rooms' traffic (here 3/8 of it, its echo
included). Rounds are interleaved; the ratio sharded ÷ classic is taken per round.

Run: ``python benchmarks/realtime_sharded.py [--quick] [--rounds 7] [--messages 2000]
[--no-cluster] [--write-docs]``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import _harness as h
import redis.asyncio as aioredis
import socketio

from rtkit._core.redis import make_redis_client
from rtkit.realtime._sessions import socketio_channel
from rtkit.realtime._socketio_compat import initialize_manager, stop_manager
from rtkit.realtime.managers import ClassicRedisManager, ShardedRedisManager

sys.path.insert(0, str(h.ROOT / "tests"))

REDIS_URL = os.environ.get("RTKIT_REDIS_URL", "redis://127.0.0.1:6379")
INSTANCES = 4
ROOMS = 100
PER_ROOM = 3  # connections per room per instance
IN_FLIGHT = 50
LABELS = {
    "classic": "classic channel (one Redis)",
    "sharded": "sharded (one Redis)",
    "sharded-cluster": "sharded (3-master cluster)",
}


@dataclass
class Tally:
    """Deliveries of a deployment; ``reached`` is set once ``target`` is."""

    count: int = 0
    target: int = 0
    reached: asyncio.Event = field(default_factory=asyncio.Event)


class CountingServer(socketio.AsyncServer):  # type: ignore[misc]
    """A python-socketio server whose sends to a connection only count it."""

    def __init__(self, tally: Tally, **kwargs: Any) -> None:
        super().__init__(async_mode="asgi", **kwargs)
        self.tally = tally

    async def _send_eio_packet(self, eio_sid: str, eio_pkt: Any) -> None:
        tally = self.tally
        tally.count += 1
        if tally.count >= tally.target:
            tally.reached.set()


class CountingClassic(ClassicRedisManager):
    """The classic manager, counting the messages its subscription reads."""

    received = 0

    async def _listen(self) -> AsyncIterator[Any]:
        async for message in super()._listen():
            self.received += 1
            yield message


def instances_of(room: int) -> list[int]:
    """The instances with members in ``room``: one, or for every other group of four
    rooms two (the next instance too): each instance has members in 3/8 of the rooms."""
    first = room % INSTANCES
    return [first] if (room // INSTANCES) % 2 == 0 else [first, (first + 1) % INSTANCES]


@dataclass
class Deployment:
    """Four instances on one adapter and Redis."""

    name: str
    servers: list[CountingServer] = field(default_factory=list)
    tally: Tally = field(default_factory=Tally)
    clients: list[Any] = field(default_factory=list)

    @property
    def managers(self) -> list[Any]:
        return [s.manager for s in self.servers]

    async def start(self, url: str, prefix: str) -> None:
        for _ in range(INSTANCES):
            if self.name == "classic":  # (it makes its own client)
                manager: Any = CountingClassic(url, channel=socketio_channel(prefix, None))
            else:
                client = make_redis_client(url)
                self.clients.append(client)
                manager = ShardedRedisManager(client, prefix=prefix)
            server = CountingServer(self.tally, client_manager=manager)
            initialize_manager(server)
            self.servers.append(server)
        await asyncio.sleep(0.5)  # the classic listeners subscribe in the background
        for room in range(ROOMS):
            for i in instances_of(room):
                manager = self.managers[i]
                for _ in range(PER_ROOM):
                    sid = await manager.connect(f"eio-{room}-{i}-{_}", "/")
                    await manager.enter_room(sid, "/", f"room-{room}")

    async def stop(self) -> None:
        for server in self.servers:
            await stop_manager(server, close_redis=True)
        for client in self.clients:
            with suppress(Exception):
                await client.aclose()

    def read(self) -> list[int]:
        return [int(m.received) for m in self.managers]

    async def round(self, messages: int) -> tuple[float, float, list[float]]:
        """Deliveries per second of one round, per CPU-second of this process (the four
        instances), and each instance's read share."""
        expected = sum(len(instances_of(n % ROOMS)) * PER_ROOM for n in range(messages))
        start_read = self.read()
        self.tally.target = self.tally.count + expected
        self.tally.reached.clear()
        loop = asyncio.get_running_loop()
        started, cpu = loop.time(), time.process_time()
        gate = asyncio.Semaphore(IN_FLIGHT)

        async def send(n: int) -> None:
            room = n % ROOMS
            async with gate:
                await self.servers[instances_of(room)[0]].emit(
                    "chat:message", {"n": n, "text": "hello there"}, room=f"room-{room}"
                )

        await asyncio.gather(*(send(n) for n in range(messages)))
        try:
            async with asyncio.timeout(60):
                await self.tally.reached.wait()
        except TimeoutError:
            got = expected - (self.tally.target - self.tally.count)
            raise SystemExit(f"{self.name}: {got} of {expected} deliveries in 60 s") from None
        elapsed, cpu = loop.time() - started, time.process_time() - cpu
        await asyncio.sleep(0.2)  # stragglers (own echoes) counted before the next round
        read = [(b - a) / messages for a, b in zip(start_read, self.read(), strict=True)]
        return expected / elapsed, expected / cpu, read


@asynccontextmanager
async def private_cluster(wanted: bool) -> AsyncIterator[str | None]:
    """A private three-master cluster's URL (``None`` when not wanted or not possible)."""
    if not wanted or not (shutil.which("redis-server") and shutil.which("redis-cli")):
        yield None
        return
    from rtkit_topology import PrivateCluster

    cluster = PrivateCluster(replicas=0)
    cluster.start()
    try:
        yield cluster.url
    finally:
        cluster.stop()


async def main() -> None:
    parser = h.arguments(__doc__, rounds=7)
    parser.add_argument("--messages", type=int, default=2000, help="emits per round")
    parser.add_argument("--no-cluster", action="store_true", help="skip the private cluster")
    args = parser.parse_args()
    rounds = h.rounds_of(args, quick=3)
    messages = 300 if args.quick and args.messages == 2000 else args.messages
    run = h.Run("realtime_sharded", args, packages=["python-socketio"])
    probe = aioredis.Redis.from_url(REDIS_URL)
    run.server("redis", (await probe.info("server"))["redis_version"])
    await probe.aclose()
    prefix = f"rtkit-bench-sharded-{os.getpid()}:"
    async with AsyncExitStack() as stack:
        cluster = await stack.enter_async_context(private_cluster(not args.no_cluster))
        targets = {"classic": REDIS_URL, "sharded": REDIS_URL}
        if cluster is not None:
            targets["sharded-cluster"] = cluster
        deployments = {}
        for name, url in targets.items():
            deployment = Deployment("classic" if name == "classic" else "sharded")
            stack.push_async_callback(deployment.stop)
            await deployment.start(url, f"{prefix}{name}:")
            deployments[name] = deployment
            await deployment.round(messages // 4)  # warm up
        reads: dict[str, list[float]] = {name: [] for name in deployments}
        per_cpu_s: dict[str, list[float]] = {name: [] for name in deployments}

        def measure(name: str) -> h.Measure:
            async def one() -> float:
                rate, per_cpu, read = await deployments[name].round(messages)
                reads[name].append(statistics.mean(read))
                per_cpu_s[name].append(per_cpu)
                return rate

            return one

        figures = await h.alternate_rounds(
            {name: measure(name) for name in deployments}, rounds=rounds
        )
    peers = [n for n in deployments if n != "classic"]
    for case, values, unit in (
        (f"fan-out, {INSTANCES} instances, {ROOMS} rooms, wall clock", figures, "deliv/s"),
        (f"fan-out, {INSTANCES} instances, per CPU-second", per_cpu_s, "deliv/CPU-s"),
    ):
        run.add([h.Row(case, LABELS["classic"], values["classic"], unit)])
        run.add(
            h.Row(
                case,
                LABELS[name],
                values[name],
                unit,
                ratio_to=LABELS["classic"],
                ratio=h.ratios(values[name], values["classic"]),
            )
            for name in peers
        )
    shares = "; ".join(f"{LABELS[n]} {h.spread(reads[n], '{:.0%}')}" for n in deployments)
    run.note(
        "Messages each instance's pub/sub connection read, as a share of the messages "
        f"sent (mean of the four instances, median (min-max) over the rounds): {shares}. "
        f"Expected: 100% on the classic channel; {3 / 8:.1%} sharded (each instance has "
        "members in 3/8 of the rooms, and reads its own messages back)."
    )
    run.note(
        f"{messages} emits per round, {IN_FLIGHT} in flight, {PER_ROOM} connections per room "
        "per instance; the four instances share this process (one core): the classic "
        "channel's cost is every instance decoding every message."
    )
    run.finish("realtime.md")


if __name__ == "__main__":
    h.run(main)
