"""When Redis goes away the chat refuses with ``backend_unavailable`` and recovers after.

A private redis-server on a free port is started and stopped by the test (the
shared server is never touched).
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from realtime_support import Chat, eventually, make_server, serving

from rtkit import BackendUnavailable

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PrivateRedis:
    """A redis-server of this test only, without persistence."""

    def __init__(self, directory: Path) -> None:
        self.port = _free_port()
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
        )
        for _ in range(200):
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("the private redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        pytest.skip("!!! redis-server is not installed: fault test skipped !!!")
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


async def test_a_redis_outage_is_an_error_not_a_crash(private_redis: PrivateRedis) -> None:
    server = make_server(private_redis.url, "rtkit-fault:")
    async with serving(server) as url:
        chat = Chat(url, server)
        ada = await chat.connect("ada")
        await ada.client.join_room("lobby")
        await ada.client.send_message("lobby", "before")

        private_redis.stop()
        with pytest.raises(BackendUnavailable):
            await ada.client.send_message("lobby", "during")
        assert ada.client.connected  # the connection stays up

        private_redis.start()  # an empty Redis on the same port: join again

        async def works_again() -> bool:
            try:
                await ada.client.join_room("lobby")
                await ada.client.send_message("lobby", "after")
            except BackendUnavailable:
                await asyncio.sleep(0.2)
                return False
            return True

        await eventually(works_again, timeout=30)
        history = await ada.client.history("lobby")
        assert [m.message for m in history][-1] == "after"
        await chat.close()
