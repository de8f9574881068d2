"""The ``rtkit`` command: ``rtkit token`` and ``rtkit serve`` (the README's ``make run``)."""

from __future__ import annotations

import asyncio
import os
import sys

import httpx
import pytest
import websockets
from realtime_support import SECRET
from rtkit_process import rtkit_serve

from rtkit.cli import main
from rtkit.realtime import Identity, JWTVerifier
from rtkit_testing import free_port

pytestmark = pytest.mark.slow


async def test_token_prints_a_token_the_server_accepts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RTKIT_SECRET", SECRET)
    assert main(["token", "42", "--name", "Ada", "--ttl", "60"]) == 0
    token = capsys.readouterr().out.strip()
    assert await JWTVerifier(SECRET).verify(token) == Identity("42", "Ada")


def test_a_secret_is_required(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("RTKIT_SECRET", raising=False)
    assert main(["token", "42"]) == 2
    assert main(["serve"]) == 2
    assert "RTKIT_SECRET" in caplog.text
    monkeypatch.setenv("RTKIT_SECRET", "short")
    assert main(["serve"]) == 2
    assert "at least 32 bytes" in caplog.text


async def test_serve_demo_runs_the_chat_with_a_loud_warning() -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "RTKIT_SECRET"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "rtkit.cli",
        "serve",
        "--demo",
        "--port",
        str(port),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            async with asyncio.timeout(30):
                while True:
                    try:
                        if (await http.get("/health")).status_code == 200:
                            break
                    except httpx.TransportError:
                        await asyncio.sleep(0.1)
            login = await http.post("/api/demo/login", json={"name": "Ada"})
            assert login.json()["userId"] == "demo-ada"
            assert 'data-demo="true"' in (await http.get("/")).text
    finally:
        process.terminate()
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
    log = stderr.decode()
    assert "DEMO MODE" in log and "RTKIT_SECRET is not set" in log


def test_serve_adapter(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from rtkit.cli import SOCKETIO_ADAPTERS
    from rtkit.realtime.managers import ADAPTERS

    assert SOCKETIO_ADAPTERS == ADAPTERS
    monkeypatch.setenv("RTKIT_SECRET", SECRET)
    assert main(["serve", "--adapter", "sharded"]) == 2  # memory: no instances to reach
    assert "an adapter needs a Redis URL" in caplog.text


@pytest.mark.parametrize(("args", "compressed"), [((), False), (("--ws-compression",), True)])
async def test_serve_compresses_websockets_only_when_asked(
    args: tuple[str, ...], compressed: bool
) -> None:
    # Off by default, as in Socket.IO's Node server: compression is per recipient, so a
    # broadcast could not be framed once for all of them.
    async with rtkit_serve(*args) as server:
        url = server.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket"
        async with websockets.connect(url, compression="deflate") as ws:  # offers it
            agreed = ws.response.headers.get("Sec-WebSocket-Extensions") or ""
            assert ("permessage-deflate" in agreed) is compressed
            assert (await ws.recv()).startswith("0{")  # the Engine.IO open packet
