"""A Node Socket.IO server with ``@socket.io/redis-adapter`` as a child process.

``tests/node/redis_adapter_peer.mjs`` runs the server and any number of
``socket.io-client`` clients (of it or of an rtkit server); :class:`NodePeer`
sends it one JSON command per line and reads the answer.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from rtkit_process import NODE_DIR

from rtkit_testing import require

SCRIPT = NODE_DIR / "redis_adapter_peer.mjs"
_ANSWER_TIMEOUT = 20.0


def node_problem() -> str | None:
    """Why the Node peer cannot run here (``None``: it can)."""
    if shutil.which("node") is None:
        return "node is not installed"
    if not (NODE_DIR / "node_modules" / "@socket.io" / "redis-adapter").is_dir():
        return "@socket.io/redis-adapter is not installed (run make testdeps)"
    return None


class NodePeer:
    """The running Node server: ``url``, its adapter's ``uid``, and :meth:`call`."""

    def __init__(self, proc: asyncio.subprocess.Process, url: str, uid: str) -> None:
        self.proc = proc
        self.url = url
        self.uid = uid
        self._ids = itertools.count(1)
        self._lock = asyncio.Lock()

    async def call(self, cmd: str, **args: Any) -> Any:
        """Run command ``cmd`` in the Node process; its result (raises on its error)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        assert not {"id", "cmd"} & set(args), "id and cmd name the command itself"
        async with self._lock:
            number = next(self._ids)
            line = json.dumps({"id": number, "cmd": cmd, **args}) + "\n"
            self.proc.stdin.write(line.encode())
            await self.proc.stdin.drain()
            while True:
                raw = await asyncio.wait_for(self.proc.stdout.readline(), _ANSWER_TIMEOUT)
                if not raw:
                    raise RuntimeError(f"the Node peer exited during {cmd}")
                answer = json.loads(raw)
                if answer.get("id") == number:
                    break
        if "error" in answer:
            raise RuntimeError(f"Node {cmd}: {answer['error']}")
        return answer["result"]

    async def events(self, name: str) -> list[dict[str, Any]]:
        """Every event client ``name`` received so far: ``{event, args}``."""
        result: list[dict[str, Any]] = await self.call("events", name=name)
        return result

    async def wait_event(
        self, name: str, event: str, match: Callable[[list[Any]], bool] = lambda _: True
    ) -> list[Any]:
        """The arguments of the first ``event`` client ``name`` got that ``match`` accepts."""

        async def found() -> list[Any] | None:
            for entry in await self.events(name):
                if entry["event"] == event and match(entry["args"]):
                    return list(entry["args"])
            return None

        return await _poll(found)


async def _poll(check: Callable[[], Awaitable[Any]], timeout: float = 15) -> Any:
    async with asyncio.timeout(timeout):
        while (value := await check()) is None:  # noqa: ASYNC110  (another process)
            await asyncio.sleep(0.05)
        return value


@asynccontextmanager
async def node_peer(redis_url: str, key: str, *, specific: bool = False) -> AsyncIterator[NodePeer]:
    """Start the Node server on ``redis_url`` with adapter key ``key`` (and
    ``publishOnSpecificResponseChannel: specific``); stop it after."""
    require(node_problem())
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(SCRIPT),
        json.dumps({"redis": redis_url, "key": key, "specific": specific}),
        cwd=NODE_DIR,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        ready = json.loads(await asyncio.wait_for(proc.stdout.readline(), _ANSWER_TIMEOUT))
        peer = NodePeer(proc, ready["url"], ready["uid"])
        yield peer
        await peer.call("quit")
        await asyncio.wait_for(proc.wait(), 10)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
