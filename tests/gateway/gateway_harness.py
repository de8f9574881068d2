"""Run ASGI apps with uvicorn on free 127.0.0.1 ports inside a test, and an echo service."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import uvicorn
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from rtkit.microservice import MicroService
from rtkit.registry import ServiceRegistry

ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # pytest owns the signals
        yield


def free_socket() -> socket.socket:
    """A socket bound to a free port on 127.0.0.1."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


class Running:
    """A uvicorn server running an app in this event loop."""

    def __init__(self, app: Any, sock: socket.socket) -> None:
        self.port: int = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = _Server(
            uvicorn.Config(
                app,
                lifespan="on",
                log_level="warning",
                timeout_graceful_shutdown=1,
                proxy_headers=False,  # the gateway itself handles X-Forwarded-*
            )
        )
        self.sock = sock
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self.server.serve(sockets=[self.sock]))
        async with asyncio.timeout(20):
            while not self.server.started:
                if self.task.done():
                    self.task.result()
                await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self.task is not None and not self.task.done():
            self.server.should_exit = True
            await self.task


@contextlib.asynccontextmanager
async def running(app: Any, sock: socket.socket | None = None) -> AsyncIterator[Running]:
    """Serve ``app`` until the block ends."""
    server = Running(app, sock or free_socket())
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


class EchoService(MicroService):
    """A test upstream: reflects requests, counts hits, sleeps, sends odd headers."""

    def __init__(self, registry: ServiceRegistry, sock: socket.socket, name: str = "echo") -> None:
        super().__init__(name, registry=registry, port=sock.getsockname()[1])
        self.hits = itertools.count(1)
        self.add_route("/echo/{rest:path}", self.echo, methods=ALL_METHODS)
        self.add_route("/counter", self.counter)
        self.add_route("/slow", self.slow)
        self.add_route("/status/{code:int}", self.status)

    async def echo(self, request: Request) -> Response:
        body = await request.body()
        return JSONResponse(
            {
                "service": self.name,
                "port": self.port,
                "method": request.method,
                "path": request.url.path,
                "query": request.url.query,
                "headers": [[k, v] for k, v in request.headers.items()],
                "body": body.decode("utf-8", "replace"),
            },
            headers={
                "Connection": "X-Upstream-Hop",
                "X-Upstream-Hop": "secret",
                "Keep-Alive": "timeout=5",
                "X-Upstream-End": "kept",
            },
        )

    async def counter(self, request: Request) -> Response:
        headers = {}
        if "cc" in request.query_params:
            headers["Cache-Control"] = request.query_params["cc"]
        if "vary" in request.query_params:
            headers["Vary"] = request.query_params["vary"]
        if "cookie" in request.query_params:
            headers["Set-Cookie"] = "session=1"
        lang = request.headers.get("accept-language", "")
        return JSONResponse({"n": next(self.hits), "lang": lang}, headers=headers)

    async def slow(self, request: Request) -> Response:
        await asyncio.sleep(float(request.query_params.get("s", "2")))
        return JSONResponse({"slow": True})

    async def status(self, request: Request) -> Response:
        return JSONResponse({"n": next(self.hits)}, status_code=request.path_params["code"])
