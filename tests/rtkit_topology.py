"""Private Redis topologies for tests: a Redis Cluster and a Sentinel setup.

Both are started from the installed ``redis-server`` binary on free ports, in a
temporary folder, and stopped (only they) afterwards; the shared Redis is never
touched. Tests that need them use the ``redis_cluster`` and ``redis_sentinel``
fixtures (session-scoped: starting a topology takes a few seconds).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from rtkit_testing import ephemeral_low, free_port

__all__ = ["PrivateCluster", "PrivateSentinel", "RedisNode"]


def _bindable(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too, both below the
    ephemeral range: there, any outgoing connection of the suite could take the bus
    port between this check and the node's bind (the node then fails to start)."""
    import random

    top = max(ephemeral_low() - 10_001, 12_100)
    for _ in range(1000):
        port = random.randint(12_000, top)
        if _bindable(port) and _bindable(port + 10_000):
            return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


def _ping(port: int, timeout: float = 0.2) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisNode:
    """One ``redis-server`` process of a topology (killable, freezable, restartable)."""

    def __init__(
        self,
        binary: str,
        folder: Path,
        args: list[str],
        *,
        port: int | None = None,
        conf: Path | None = None,
    ) -> None:
        self.binary = binary
        self.port = port or free_port()
        self.folder = folder / str(self.port)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.args = args
        self.conf = conf
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> None:
        """Start the node and wait until it answers PING."""
        self.process = subprocess.Popen(
            [
                self.binary,
                *([str(self.conf)] if self.conf is not None else []),
                *("--port", str(self.port), "--bind", "127.0.0.1"),
                *("--dir", str(self.folder), "--save", "", "--appendonly", "no"),
                *("--protected-mode", "no"),
                *self.args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if _ping(self.port):
                return
            if self.process.poll() is not None:  # it exited: a port taken meanwhile, say
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis node on port {self.port} did not start")

    def move_to(self, port: int) -> None:
        """Listen on ``port`` from the next start (the node is stopped)."""
        self.port = port
        self.folder = self.folder.parent / str(port)
        self.folder.mkdir(parents=True, exist_ok=True)

    def stop(self) -> None:
        """Kill the node, as a crash would."""
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait()
            self.process = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def cli(self, *args: str) -> str:
        """Run ``redis-cli -p <port> <args>`` and return its output."""
        result = subprocess.run(
            ["redis-cli", "-p", str(self.port), *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return result.stdout


class PrivateCluster:
    """A Redis Cluster of ``masters`` masters, each with ``replicas`` replicas."""

    def __init__(self, masters: int = 3, replicas: int = 1, binary: str | None = None) -> None:
        self.binary = binary or shutil.which("redis-server") or "redis-server"
        self.folder = Path(tempfile.mkdtemp(prefix="rtkit-cluster-"))
        flags = ["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"]
        count = masters * (1 + replicas)
        self.nodes = [
            RedisNode(self.binary, self.folder, flags, port=free_cluster_port())
            for _ in range(count)
        ]
        self.replicas = replicas

    @property
    def url(self) -> str:
        """``redis+cluster://host:port,host:port,...``: every node as a seed."""
        return "redis+cluster://" + ",".join(n.address for n in self.nodes)

    def start(self) -> None:
        """Start every node, then form the cluster and wait until it is ``ok`` (on a
        failure, stop what was started)."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        for node in self.nodes:
            for attempt in range(3):  # a port can still be taken before the node binds it
                try:
                    node.start()
                    break
                except RuntimeError:
                    if attempt == 2:
                        raise
                    node.move_to(free_cluster_port())
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(n.address for n in self.nodes),
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        self.wait_ok()
        self.wait_replicas()

    def wait_replicas(self, timeout: float = 30.0) -> None:
        """Wait until every replica is in sync with its master (a failover needs that)."""
        end = time.monotonic() + timeout
        want = len(self.nodes) - len(self.nodes) // (1 + self.replicas)
        while time.monotonic() < end:
            synced = sum(
                "master_link_status:up" in n.cli("info", "replication")
                for n in self.nodes
                if n.process is not None
            )
            if synced >= want:
                return
            time.sleep(0.1)
        raise RuntimeError("the private Redis Cluster's replicas did not sync")

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Wait until every live node says ``cluster_state:ok``."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            live = [n for n in self.nodes if n.process is not None]
            if all("cluster_state:ok" in n.cli("cluster", "info") for n in live):
                return
            time.sleep(0.1)
        raise RuntimeError("the private Redis Cluster did not become ok")

    def masters(self) -> list[RedisNode]:
        """The nodes that are masters now."""
        found = []
        for node in self.nodes:
            if node.process is not None and "role:master" in node.cli("info", "replication"):
                found.append(node)
        return found

    def stop(self) -> None:
        """Kill every node and remove the folder."""
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


class PrivateSentinel:
    """A master, ``replicas`` replicas and ``sentinels`` sentinels watching ``service``."""

    def __init__(
        self,
        service: str = "rtkit",
        replicas: int = 1,
        sentinels: int = 3,
        binary: str | None = None,
    ) -> None:
        self.binary = binary or shutil.which("redis-server") or "redis-server"
        self.folder = Path(tempfile.mkdtemp(prefix="rtkit-sentinel-"))
        self.service = service
        self.master = RedisNode(self.binary, self.folder, [])
        self.replicas = [
            RedisNode(self.binary, self.folder, ["--replicaof", "127.0.0.1", str(self.master.port)])
            for _ in range(replicas)
        ]
        self.sentinels: list[RedisNode] = []
        for _ in range(sentinels):
            port = free_port()
            conf = self.folder / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\n"
                f"sentinel monitor {service} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {service} 1000\n"
                f"sentinel failover-timeout {service} 5000\n"
                f"sentinel parallel-syncs {service} 1\n"
            )
            self.sentinels.append(
                RedisNode(self.binary, self.folder, ["--sentinel"], port=port, conf=conf)
            )

    @property
    def url(self) -> str:
        """``redis+sentinel://host:port,.../service``."""
        return (
            "redis+sentinel://" + ",".join(s.address for s in self.sentinels) + "/" + self.service
        )

    def start(self) -> None:
        """Start the master, the replicas, then the sentinels (on a failure, stop what
        was started)."""
        try:
            for node in [self.master, *self.replicas, *self.sentinels]:
                node.start()
        except BaseException:
            self.stop()
            raise

    def current_master_port(self) -> int:
        """The master's port as the sentinels see it now."""
        out = self.sentinels[0].cli("sentinel", "get-master-addr-by-name", self.service)
        return int(out.split()[1])

    def stop(self) -> None:
        """Kill every process and remove the folder."""
        for node in [*self.sentinels, *self.replicas, self.master]:
            node.stop()
        shutil.rmtree(self.folder, ignore_errors=True)
