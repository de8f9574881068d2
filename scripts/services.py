"""Make sure Redis and RabbitMQ answer before the tests run.

Reads ``RTKIT_REDIS_URL`` and ``RTKIT_AMQP_URL``; starts a local
``redis-server`` / ``rabbitmq-server`` when one is installed and nothing
answers. Never stops a server. Exits 0 either way: the tests themselves decide
whether a missing backend is a skip (laptop) or a failure (``CI=true``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from urllib.parse import urlsplit

REDIS_URL = os.environ.get("RTKIT_REDIS_URL", "redis://127.0.0.1:6379")
AMQP_URL = os.environ.get("RTKIT_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


def answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def wait_for(host: str, port: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if answers(host, port):
            return True
        time.sleep(0.5)
    return False


def ensure(name: str, url: str, default_port: int, start: list[str], wait: float) -> None:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or default_port
    if answers(host, port):
        print(f"services: {name} answers at {host}:{port}")
        return
    local = host in {"127.0.0.1", "localhost", "::1"}
    if local and shutil.which(start[0]):
        print(f"services: {name} is not running; starting: {' '.join(start)}")
        subprocess.run(start, check=False)
        if wait_for(host, port, wait):
            print(f"services: {name} started")
            return
    print(f"services: WARNING: {name} does not answer at {host}:{port}", file=sys.stderr)


def main() -> None:
    redis_port = urlsplit(REDIS_URL).port or 6379
    ensure(
        "Redis",
        REDIS_URL,
        6379,
        [
            "redis-server",
            "--daemonize",
            "yes",
            "--bind",
            "127.0.0.1",
            "--port",
            str(redis_port),
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        15,
    )
    ensure("RabbitMQ", AMQP_URL, 5672, ["rabbitmq-server", "-detached"], 90)


if __name__ == "__main__":
    main()
