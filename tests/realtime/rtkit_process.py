"""Run ``rtkit serve`` as a real child process on a free 127.0.0.1 port.

Used by the browser, Node interop and multi-instance tests: the server is started
exactly as a user starts it (the CLI, ``RTKIT_SECRET`` in the environment).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from rtkit.realtime import issue_token
from rtkit_testing import free_port

SECRET = "interop-secret-" + "k" * 40
ROOT = Path(__file__).resolve().parents[2]
NODE_DIR = ROOT / "tests" / "node"
CLIENT_JS = NODE_DIR / "node_modules" / "socket.io-client" / "dist" / "socket.io.min.js"


def token_for(user_id: str, name: str | None = None, ttl: float = 600) -> str:
    """A token for ``user_id`` signed with the secret the child servers use."""
    return issue_token(SECRET, user_id, name=name, ttl=ttl)


@dataclass
class ServerProcess:
    """A running ``rtkit serve`` child process."""

    url: str
    proc: asyncio.subprocess.Process
    log_path: Path

    def log(self) -> str:
        """What the server wrote to stderr so far."""
        return self.log_path.read_text(errors="replace")

    async def kill(self) -> None:
        """SIGKILL the server: no clean shutdown, as in a crash."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def stop(self) -> None:
        """Stop the server cleanly (SIGTERM), or kill it if it hangs."""
        if self.proc.returncode is not None:
            return
        self.proc.terminate()
        try:
            await asyncio.wait_for(self.proc.wait(), timeout=15)
        except TimeoutError:
            await self.kill()


async def _wait_healthy(server: ServerProcess, timeout: float) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=2) as http:
        async with asyncio.timeout(timeout):
            while True:
                if server.proc.returncode is not None:
                    raise RuntimeError(f"rtkit serve exited early:\n{server.log()[-3000:]}")
                try:
                    if (await http.get("/health")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)


@asynccontextmanager
async def rtkit_serve(
    *args: str, port: int | None = None, timeout: float = 60
) -> AsyncIterator[ServerProcess]:
    """Start ``rtkit serve ARGS`` on ``port`` (default: a free one); yield it once it answers."""
    port = port or free_port()
    env = {**os.environ, "RTKIT_SECRET": SECRET}
    with tempfile.TemporaryDirectory(prefix="rtkit-serve-") as tmp:
        log_path = Path(tmp) / "server.log"
        with log_path.open("wb") as log:
            proc = await asyncio.create_subprocess_exec(
                *(sys.executable, "-m", "rtkit.cli", "serve", "--port", str(port), *args),
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )
        server = ServerProcess(f"http://127.0.0.1:{port}", proc, log_path)
        try:
            await _wait_healthy(server, timeout)
            yield server
        finally:
            await server.stop()
