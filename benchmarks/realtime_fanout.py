"""Chat fan-out to a room of 50 clients: rtkit vs bare python-socketio vs Node.js socket.io.

Each server runs alone in its own process pinned to core 0; the load generator runs
in another process pinned to core 1 (when the machine has two cores). The load
generator is not python-socketio (50 AsyncClients saturate a core before the server
does) but 50 plain websocket connections speaking the Engine.IO v4 / Socket.IO v5
framing by hand: ``0{...}`` open, ``40{auth}`` connect, ``42[event, data]`` events,
``2``/``3`` ping/pong.

Paced fan-out: one client of the room sends ``chat:message`` (the senders take turns),
and the next message goes out only when all 50 members (sender included) received it.
Reported: deliveries per second and the p50/p99 latency from send to each delivery, and
deliveries per second of the server process's own CPU time (read from ``/proc``; it
hardly depends on other load on the machine; for rtkit on Redis it leaves out the Redis
server's CPU).

The servers do the same broadcast (the protocol's ``chat:message`` to the whole room and
``chat:message:sent`` back to the sender):

- ``rtkit``: ``RealtimeServer`` on memory backends with JWT auth, payload validation,
  the membership check, the per-user rate limit (set high enough not to refuse) and
  message history on;
- ``rtkit on Redis``: the same on Redis (shared presence, rooms, history in Redis Streams,
  emits through python-socketio's Redis manager), as when several instances run; its keys
  carry a prefix of its own and are deleted afterwards;
- ``python-socketio``: a bare ``socketio.AsyncServer`` (no auth check, no validation);
- ``node socket.io``: the official Node.js server (``benchmarks/node/fanout_server.mjs``),
  installed from the npm registry into ``tests/node/node_modules`` (``make testdeps``).

- ``python-socketio on Redis``: the same bare server with python-socketio's
  ``AsyncRedisManager``: the peer of rtkit on Redis.
- ``rtkit + recovery`` and ``rtkit on Redis + recovery``: the rtkit servers with
  connection state recovery on (``max_disconnection_duration=120``): every packet is
  kept (memory, or the Redis stream written in the same script as the publish) and
  carries its offset; their ratio to the same server without recovery is the cost of
  recovery per message.

Rounds are interleaved (each round runs every server once, in rotated order) and the
ratios are taken per round (see ``_harness.py``).

- ``rtkit on Redis, Node adapter protocol`` (only when named in ``--servers``):
  ``rtkit-redis`` with ``adapter="node-redis"``, emits as ``@socket.io/redis-adapter``'s
  msgpack, as beside Node servers.

Run: ``python benchmarks/realtime_fanout.py [--quick] [--rounds 5] [--seconds 2]
[--clients 50] [--servers rtkit,rtkit-redis,bare,bare-redis,node] [--write-docs]``;
``--recovery`` runs the recovery pairs instead (their own table).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _harness as h

ROOT = Path(__file__).resolve().parent.parent
NODE_DIR = ROOT / "tests" / "node"
NODE_SERVER = ROOT / "benchmarks" / "node" / "fanout_server.mjs"
SECRET = "benchmark-secret-benchmark-secret-0123456789"
ROOM = "bench"
SERVER_CORE = 0
LABELS = {
    "rtkit": "rtkit RealtimeServer",
    "rtkit-redis": "rtkit on Redis",
    "rtkit-node-redis": "rtkit on Redis, Node adapter protocol",
    "rtkit-rec": "rtkit + recovery",
    "rtkit-redis-rec": "rtkit on Redis + recovery",
    "bare": "bare python-socketio",
    "bare-redis": "bare python-socketio on Redis",
    "node": "node socket.io",
}
RECOVERY_SECONDS = 120.0  # max_disconnection_duration of the "-rec" servers
RECOVERY_KINDS = ("rtkit", "rtkit-rec", "rtkit-redis", "rtkit-redis-rec")
REDIS_URL = os.environ.get("RTKIT_REDIS_URL", "redis://127.0.0.1:6379")
REDIS_PREFIX = f"rtkit-bench-{os.getpid()}:"
LOADGEN_CORE = 1


# ----------------------------------------------------------------------- helpers


def pin(core: int) -> None:
    """Pin the calling process to ``core`` when the machine has it."""
    if hasattr(os, "sched_setaffinity") and core < (os.cpu_count() or 1):
        os.sched_setaffinity(0, {core})


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes], seconds: float = 30.0) -> None:
    """Wait until something accepts connections on ``port`` (or the process died)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port} after {seconds} s")


# ----------------------------------------------------------------------- servers


def rtkit_app(url: str, prefix: str, **options: Any) -> Any:
    """The rtkit chat server with JWT auth, validation, membership checks, history on.

    On ``memory://`` everything is in the process; on Redis, presence, rooms, history
    (Redis Streams) and the rate limit are shared and every emit goes through Redis,
    as when several instances run.
    """
    from rtkit.realtime import ChatLimits, RealtimeServer

    # The per-user rate limit stays on (it is checked for every message), set high
    # enough never to refuse the benchmark's senders.
    limits = ChatLimits(message_rate="1000000/second")
    return RealtimeServer.from_url(url, secret=SECRET, prefix=prefix, limits=limits, **options)


def bare_app(redis_url: str | None = None, prefix: str = "") -> Any:
    """Bare python-socketio doing the same broadcast: no auth check, no validation.

    With ``redis_url``, emits go through python-socketio's ``AsyncRedisManager`` (as
    when several instances run): the peer of rtkit on Redis.
    """
    import socketio

    from rtkit._core.ids import new_id
    from rtkit.realtime._protocol import iso_time

    manager = None
    if redis_url is not None:
        manager = socketio.AsyncRedisManager(redis_url, channel=f"{prefix}bare-socketio")
    sio = socketio.AsyncServer(async_mode="asgi", client_manager=manager)
    users: dict[str, str] = {}

    @sio.event  # type: ignore[misc]
    async def connect(sid: str, environ: dict[str, Any], auth: Any) -> None:
        token = auth.get("token") if isinstance(auth, dict) else None
        if not token:
            raise socketio.exceptions.ConnectionRefusedError("no token")
        users[sid] = str(token)

    @sio.event  # type: ignore[misc]
    async def disconnect(sid: str, *args: Any) -> None:
        users.pop(sid, None)

    @sio.on("room:join")  # type: ignore[misc]
    async def room_join(sid: str, room_id: str) -> None:
        await sio.enter_room(sid, room_id)
        await sio.emit("room:joined", {"roomId": room_id, "users": [users[sid]]}, to=sid)

    @sio.on("chat:message")  # type: ignore[misc]
    async def chat_message(sid: str, data: dict[str, Any]) -> None:
        user = users[sid]
        message = {
            "id": new_id(),
            "userId": user,
            "username": user,
            "message": data["message"],
            "type": data.get("type", "text"),
            "timestamp": iso_time(time.time()),
            "roomId": data["roomId"],
        }
        await sio.emit("chat:message", message, room=data["roomId"])
        await sio.emit("chat:message:sent", {"messageId": message["id"]}, to=sid)

    return socketio.ASGIApp(sio)


def serve(kind: str, port: int, prefix: str) -> None:
    """Run one Python server with uvicorn on ``port`` (in this process, pinned)."""
    import uvicorn

    pin(SERVER_CORE)
    recovery = {"max_disconnection_duration": RECOVERY_SECONDS} if kind.endswith("-rec") else {}
    if kind in ("rtkit", "rtkit-rec"):
        app = rtkit_app("memory://", "rtkit:", **recovery)
    elif kind in ("rtkit-redis", "rtkit-redis-rec"):
        app = rtkit_app(REDIS_URL, prefix, **recovery)
    elif kind == "rtkit-node-redis":  # emits as @socket.io/redis-adapter's msgpack
        options = {"key": prefix + "node"}
        app = rtkit_app(REDIS_URL, prefix, adapter="node-redis", adapter_options=options)
    elif kind == "bare-redis":
        app = bare_app(REDIS_URL, prefix)
    else:
        app = bare_app()
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="error", access_log=False)


def tokens_for(kind: str, count: int) -> list[str]:
    """One token per client: signed JWTs for rtkit, plain names for the others."""
    if not kind.startswith("rtkit"):
        return [f"user{i}" for i in range(count)]
    from rtkit.realtime import issue_token

    return [issue_token(SECRET, f"user{i}", name=f"User {i}") for i in range(count)]


def start_server(kind: str, port: int) -> subprocess.Popen[bytes]:
    """Start the server of ``kind`` in its own process, pinned to the server core."""
    if kind == "node":
        cmd = ["node", str(NODE_SERVER), str(port)]
    else:
        cmd = [sys.executable, __file__, "--serve", kind, "--port", str(port)]
        cmd += ["--prefix", REDIS_PREFIX]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        preexec_fn=lambda: pin(SERVER_CORE),
    )
    wait_listening(port, proc)
    return proc


# ------------------------------------------------------------------ load generator
#
# A minimal websocket client on a raw asyncio Protocol: the `websockets` library costs
# tens of microseconds per frame, which would make the load generator, not the server,
# the bottleneck. Server frames are parsed in place; only the markers are looked for.


@dataclass
class Round:
    """The message in flight: its marker, when it was sent, who still waits for it."""

    marker: bytes = b""
    sent_at: float = 0.0
    pending: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Stats:
    """What the load generator saw."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    measuring: bool = False


CHAT_EVENT = b'42["chat:message"'
CHAT_SUB_EVENT = b'42["chat:message:'


def ws_frame(text: bytes, opcode: int = 0x1) -> bytes:
    """A masked client frame (the all-zero mask leaves the payload as it is)."""
    size = len(text)
    if size < 126:
        head = bytes((0x80 | opcode, 0x80 | size))
    elif size < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + size.to_bytes(8, "big")
    return head + b"\x00\x00\x00\x00" + text


class EngineIOClient(asyncio.Protocol):
    """One Engine.IO v4 websocket connection, counting deliveries of the message in flight."""

    def __init__(self, host: str, path: str, current: Round, stats: Stats) -> None:
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: cnRraXQtYmVuY2htYXJrIQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        self.current, self.stats = current, stats
        self.buffer = bytearray()
        self.upgraded = False
        self.setup = True
        self.inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Send the websocket upgrade request."""
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)

    def send(self, text: bytes, opcode: int = 0x1) -> None:
        """Send one text frame."""
        self.transport.write(ws_frame(text, opcode))

    def data_received(self, data: bytes) -> None:
        """Parse every complete frame; usually straight from ``data``, without copying."""
        if not self.upgraded:
            self.buffer += data
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            if b" 101 " not in self.buffer[:end]:
                raise RuntimeError(f"websocket upgrade refused: {bytes(self.buffer[:end])!r}")
            data = bytes(self.buffer[end + 4 :])
            self.buffer.clear()
            self.upgraded = True
        if self.buffer:
            self.buffer += data
            data = bytes(self.buffer)
            self.buffer.clear()
        used = self.parse(data)
        if used < len(data):
            self.buffer += data[used:]

    def parse(self, buf: bytes) -> int:
        """Handle the complete frames at the start of ``buf``; return the bytes used."""
        pos, size = 0, len(buf)
        while size - pos >= 2:
            length, head = buf[pos + 1] & 0x7F, 2
            if length == 126:
                if size - pos < 4:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif length == 127:
                if size - pos < 10:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            start, end = pos + head, pos + head + length
            if end > size:
                break
            opcode = buf[pos] & 0x0F
            pos = end
            if opcode == 0x1:
                if buf.startswith(CHAT_EVENT, start) and not buf.startswith(CHAT_SUB_EVENT, start):
                    self.delivered(buf.find(self.current.marker, start, end) >= 0)
                else:
                    self.on_packet(buf[start:end])
            elif opcode == 0x9:
                self.send(buf[start:end], 0xA)
        return pos

    def delivered(self, current: bool) -> None:
        """A ``chat:message`` arrived; count it if it is the message in flight."""
        if not current or not self.current.marker:
            return
        if self.stats.measuring:
            self.stats.latencies.append(time.perf_counter() - self.current.sent_at)
        self.current.pending -= 1
        if self.current.pending == 0:
            self.current.done.set()

    def on_packet(self, packet: bytes) -> None:
        """Answer a ping, count an error, or hand the packet to the setup code."""
        if packet == b"2":
            self.send(b"3")
        elif packet.startswith((b'42["error"', b"41")):
            self.stats.errors += 1
            if self.setup:
                self.inbox.put_nowait(packet)
        elif self.setup:
            self.inbox.put_nowait(packet)

    async def expect(self, *prefixes: bytes) -> bytes:
        """The next setup packet starting with one of ``prefixes`` (others are skipped)."""
        while True:
            packet = await asyncio.wait_for(self.inbox.get(), timeout=30)
            if packet.startswith(prefixes):
                return packet


async def open_client(port: int, token: str, current: Round, stats: Stats) -> EngineIOClient:
    """Open one Engine.IO websocket, connect to ``/`` with ``token`` and join the room."""
    loop = asyncio.get_running_loop()
    path = "/socket.io/?EIO=4&transport=websocket"
    _, client = await loop.create_connection(
        lambda: EngineIOClient(f"127.0.0.1:{port}", path, current, stats), "127.0.0.1", port
    )
    await client.expect(b"0{")
    client.send(b"40" + json.dumps({"token": token}).encode())
    reply = await client.expect(b"40", b"44")
    if reply.startswith(b"44"):
        raise RuntimeError(f"connection refused: {reply!r}")
    client.send(b"42" + json.dumps(["room:join", ROOM]).encode())
    reply = await client.expect(b'42["room:joined"', b'42["error"', b"43")
    if not reply.startswith(b'42["room:joined"'):
        raise RuntimeError(f"room:join refused: {reply!r}")
    client.setup = False
    return client


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, all threads) the process ``pid`` used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def load(
    port: int, pid: int, tokens: list[str], seconds: float, warmup: int
) -> dict[str, Any]:
    """Open the room, send paced messages for ``seconds``; return the figures.

    Besides wall-clock throughput, the server's own CPU time over the measured window
    is read from ``/proc``: deliveries per server CPU second hardly depend on what else
    runs on the machine.
    """
    current, stats = Round(), Stats()
    clients = []
    for token in tokens:  # one at a time: the servers see a realistic join sequence
        clients.append(await open_client(port, token, current, stats))
    messages = count = 0
    started = 0.0
    try:
        while True:
            if count == warmup:
                stats.measuring, started = True, time.perf_counter()
                cpu_started = cpu_seconds(pid)
            if stats.measuring and time.perf_counter() - started >= seconds:
                break
            current.marker = f"m{count:08d}x".encode()
            current.pending = len(clients)
            current.done.clear()
            frame = (
                b"42"
                + json.dumps(
                    ["chat:message", {"roomId": ROOM, "message": current.marker.decode()}]
                ).encode()
            )
            current.sent_at = time.perf_counter()
            clients[count % len(clients)].send(frame)
            await asyncio.wait_for(current.done.wait(), timeout=30)
            count += 1
            messages += stats.measuring
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds(pid) - cpu_started
    finally:
        for client in clients:
            if client.transport is not None:
                client.transport.close()
    latencies = sorted(stats.latencies)
    return {
        "messages": messages,
        "deliveries": len(latencies),
        "seconds": elapsed,
        "per_second": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "errors": stats.errors,
        "per_cpu_second": len(latencies) / cpu if cpu > 0 else 0.0,
    }


def run_load(kind: str, port: int, pid: int, clients: int, seconds: float) -> dict[str, Any]:
    """Run the load generator in a separate process pinned to the other core."""
    job = {
        "port": port,
        "pid": pid,
        "tokens": tokens_for(kind, clients),
        "seconds": seconds,
        "warmup": 50,
    }
    out = subprocess.run(
        [sys.executable, __file__, "--loadgen"],
        input=json.dumps(job).encode(),
        capture_output=True,
        check=False,
        timeout=seconds + 180,
    )
    if out.returncode:
        raise RuntimeError(out.stderr.decode(errors="replace")[-2000:])
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def loadgen_main() -> None:
    """Entry point of the load generator process: a JSON job on stdin, figures on stdout."""
    pin(LOADGEN_CORE)
    job = json.loads(sys.stdin.read())
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    result = runner(load(job["port"], job["pid"], job["tokens"], job["seconds"], job["warmup"]))
    print(json.dumps(result))


# --------------------------------------------------------------------------- main


def ensure_node_deps() -> bool:
    """Install the official socket.io from the npm registry if ``make testdeps`` did not."""
    if not shutil.which("node"):
        return False
    if not (NODE_DIR / "node_modules" / "socket.io").is_dir():
        if not shutil.which("npm"):
            return False
        cmd = ["npm", "install", "--prefix", str(NODE_DIR), "--no-audit", "--no-fund"]
        subprocess.run(cmd, check=False)
    return (NODE_DIR / "node_modules" / "socket.io").is_dir()


def redis_answers() -> bool:
    """Whether the benchmark's Redis answers."""
    import redis

    try:
        with redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2) as client:
            return bool(client.ping())
    except redis.RedisError:
        return False


def delete_redis_keys(prefix: str) -> None:
    """Delete every key the Redis-backed server made (it had this run's own prefix)."""
    import redis

    with redis.Redis.from_url(REDIS_URL) as client:
        keys = [
            key
            for match in (prefix + "*", "{" + prefix + "*")  # both key layouts
            for key in client.scan_iter(match=match, count=1000)
        ]
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])


def main() -> None:
    """Benchmark each server in interleaved rounds; ratios per round, median (min-max)."""
    parser = h.arguments(__doc__, rounds=5)
    parser.add_argument("--seconds", type=float, default=2.0, help="measured time per round")
    parser.add_argument("--clients", type=int, default=50, help="members of the room")
    parser.add_argument(
        "--servers",
        default="rtkit,rtkit-redis,bare,bare-redis,node",
        help="which servers, comma-separated",
    )
    parser.add_argument(
        "--recovery",
        action="store_true",
        help="the cost of connection state recovery: rtkit with and without it, in memory "
        "and on Redis (its own table in the guide)",
    )
    parser.add_argument(
        "--serve",
        choices=[
            "rtkit",
            "rtkit-rec",
            "rtkit-redis",
            "rtkit-redis-rec",
            "rtkit-node-redis",
            "bare",
            "bare-redis",
        ],
        help=argparse.SUPPRESS,
    )
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--prefix", default=REDIS_PREFIX, help=argparse.SUPPRESS)
    parser.add_argument("--loadgen", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.loadgen:
        loadgen_main()
        return
    if args.serve:
        serve(args.serve, args.port, args.prefix)
        return
    rounds = h.rounds_of(args, quick=2)
    seconds = min(args.seconds, 1.0) if args.quick else args.seconds
    name = "realtime_recovery" if args.recovery else "realtime_fanout"
    run = h.Run(name, args, ["python-socketio", "python-engineio", "uvicorn"])

    wanted = set(RECOVERY_KINDS if args.recovery else args.servers.split(","))
    kinds = [k for k in LABELS if k in wanted]
    if "node" in kinds:
        if ensure_node_deps():
            node = subprocess.run(["node", "--version"], capture_output=True, text=True)
            run.server("Node.js", node.stdout.strip())
        else:
            kinds.remove("node")
            run.note("node socket.io: skipped (node/npm or the npm package is missing)")
    if any("redis" in k for k in kinds):
        if redis_answers():
            run.server("Redis", redis_version())
        else:
            kinds = [k for k in kinds if "redis" not in k]
            run.note(f"the Redis servers were skipped (no Redis at {REDIS_URL})")
    ports = {kind: free_port() for kind in kinds}
    procs = {kind: start_server(kind, ports[kind]) for kind in kinds}
    results: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
    try:
        for round_ in range(rounds):  # interleaved: other load on the machine hits all alike
            for kind in h.order(kinds, round_):
                figures = run_load(kind, ports[kind], procs[kind].pid, args.clients, seconds)
                results[kind].append(figures)
    finally:
        for proc in procs.values():
            proc.terminate()
            proc.wait(timeout=10)
        if any("redis" in k for k in procs):
            delete_redis_keys(REDIS_PREFIX)
    report(run, results, args.clients)
    run.finish("realtime.md")


def report(run: h.Run, results: dict[str, list[dict[str, Any]]], clients: int) -> None:
    """The rows: wall-clock and per-CPU-second deliveries, with the issue's pairings."""
    wall = {k: [r["per_second"] for r in rs] for k, rs in results.items()}
    cpu = {k: [r["per_cpu_second"] for r in rs] for k, rs in results.items()}
    for kind, rs in results.items():
        p50 = [r["p50_ms"] for r in rs]
        run.add(
            [
                h.Row("fan-out, wall clock", LABELS[kind], wall[kind], "deliveries/s"),
                h.Row(
                    "fan-out, per CPU-second of the server",
                    LABELS[kind],
                    cpu[kind],
                    "deliveries/CPU-s",
                    note=f"p50 {statistics.median(p50):.2f} ms",
                ),
            ]
        )
    for ours, peer, figure, goal in (
        ("rtkit", "bare", wall, None),
        ("rtkit-redis", "bare-redis", wall, "≥ 1.0x"),
        ("rtkit", "bare", cpu, None),
        ("rtkit-redis", "bare-redis", cpu, None),
        ("rtkit-node-redis", "rtkit-redis", wall, None),
        ("rtkit-node-redis", "rtkit-redis", cpu, None),
        ("rtkit", "node", cpu, "≥ 0.4x (moonshot 0.5x)"),
        ("rtkit-redis", "node", cpu, None),
        ("rtkit-rec", "rtkit", wall, "≥ 0.9x (recovery costs < 10%)"),
        ("rtkit-redis-rec", "rtkit-redis", wall, "≥ 0.9x (recovery costs < 10%)"),
        ("rtkit-rec", "rtkit", cpu, "≥ 0.9x (recovery costs < 10%)"),
        ("rtkit-redis-rec", "rtkit-redis", cpu, "≥ 0.9x (recovery costs < 10%)"),
    ):
        if ours in figure and peer in figure:
            case = "fan-out, wall clock" if figure is wall else "fan-out, per CPU-second"
            run.add(
                [
                    h.Row(
                        f"{case}: ratio",
                        LABELS[ours],
                        figure[ours],
                        "deliveries/s" if figure is wall else "deliveries/CPU-s",
                        ratio_to=LABELS[peer],
                        ratio=h.ratios(figure[ours], figure[peer]),
                        goal=goal or "",
                    )
                ]
            )
    micro = {k: [1e6 / v for v in vs if v] for k, vs in cpu.items()}
    run.note(
        f"A room of {clients} clients; one message at a time (the next when all members got "
        "it). Server CPU per delivery, µs, median: "
        + ", ".join(f"{LABELS[k]} {statistics.median(v):.1f}" for k, v in micro.items() if v)
        + ". The Python servers run under uvicorn on its default loop ("
        + uvicorn_loop()
        + "), pinned to core 0, the load generator to core 1; Redis and other work share "
        "the machine."
    )


def uvicorn_loop() -> str:
    """The event loop uvicorn's ``loop="auto"`` picks: uvloop when it is installed."""
    try:
        import uvloop
    except ImportError:
        return "asyncio's"
    return f"uvloop {uvloop.__version__}"


def redis_version() -> str:
    import redis

    with redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2) as client:
        return str(client.info("server")["redis_version"])


if __name__ == "__main__":
    main()
