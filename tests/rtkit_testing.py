"""Helpers shared by the test suites (import them: ``from rtkit_testing import ...``).

Fixtures live in ``conftest.py``; nothing here talks to a server. What users need
too is packaged in ``rtkit.testing`` (``unique_name`` comes from there); what
stays here is rtkit's own: private Redis servers, CI rules, ports.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass

import pytest

from rtkit.testing import unique_name

__all__ = ["IN_CI", "Backend", "PrivateRedis", "free_port", "require", "unique_name"]

#: Under ``CI=true`` a missing server or tool fails a test instead of skipping it.
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require(problem: str | None) -> None:
    """Skip loudly when something a test needs is missing; fail instead under ``CI=true``."""
    if problem is None:
        return
    if IN_CI:
        pytest.fail(f"required under CI=true but unavailable: {problem}")
    pytest.skip(f"!!! UNAVAILABLE, test skipped: {problem} !!!")


def ephemeral_low() -> int:
    """The lowest port the kernel hands out to outgoing connections (32768 by default)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as ports:
            return int(ports.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now, below the kernel's
    ephemeral range: a port the kernel picked (bind to 0) could go to an outgoing
    connection of the suite before the server meant to listen on it binds it."""
    import random

    top = max(ephemeral_low() - 1, 12_100)
    for _ in range(1000):
        port = random.randint(12_000, top)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port below the ephemeral range")


@dataclass(frozen=True)
class Backend:
    """What a contract test needs to build a component on one backend."""

    kind: str
    url: str
    prefix: str
    topology: str = "single"
    """``single``, ``cluster`` or ``sentinel`` (for ``kind == "redis"``)."""


class PrivateRedis:
    """A redis-server of one test's own, on a free port, that the test may kill,
    freeze (SIGSTOP: sockets stay open, nothing answers) and restart on the same port.

    The shared Redis is never stopped; fault tests use one of these.
    """

    def __init__(self, binary: str = "redis-server", *, start_timeout: float = 20.0) -> None:
        self.binary = binary
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        self.start_timeout = start_timeout
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start (or restart) the server, empty, and wait until it answers PING."""
        self.process = subprocess.Popen(
            [
                *(self.binary, "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--protected-mode", "no"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        end = time.monotonic() + self.start_timeout
        while time.monotonic() < end:
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("private redis-server did not start")

    def stop(self) -> None:
        """Kill the server (as a crash would); :meth:`start` brings up an empty one."""
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait()
            self.process = None

    def freeze(self) -> None:
        """Stop the server answering while its sockets stay open."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """Let a frozen server answer again."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)
