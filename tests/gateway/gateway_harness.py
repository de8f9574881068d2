"""Run ASGI apps with uvicorn on free 127.0.0.1 ports inside a test, and an echo service."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import unquote_to_bytes

import uvicorn
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

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


class RawResponse:
    """A response read off the wire: status, headers (lower-case names), body."""

    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name), None)

    def json(self) -> Any:
        return json.loads(self.body)


async def raw_request(
    port: int,
    method: bytes | str,
    target: bytes | str,
    headers: list[tuple[bytes | str, bytes | str]] | None = None,
    body: bytes = b"",
) -> RawResponse:
    """Send one request exactly as given (no URL normalisation), read the response."""

    def b(text: bytes | str) -> bytes:
        return text if isinstance(text, bytes) else text.encode("latin-1")

    lines = [b(method) + b" " + b(target) + b" HTTP/1.1"]
    given = headers or []
    if not any(b(k).lower() == b"host" for k, _ in given):
        lines.append(b"host: 127.0.0.1:%d" % port)
    lines += [b(k) + b": " + b(v) for k, v in given]
    framed = any(b(k).lower() in (b"content-length", b"transfer-encoding") for k, _ in given)
    if body and not framed:
        lines.append(b"content-length: %d" % len(body))
    lines.append(b"connection: close")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 20)
    finally:
        writer.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    while head.startswith(b"HTTP/1.1 1"):  # interim responses (100 Continue)
        head, _, rest = rest.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    pairs = [line.split(":", 1) for line in header_lines]
    parsed = [(k.strip().lower(), v.strip()) for k, v in pairs]
    length = next((int(v) for k, v in parsed if k == "content-length"), len(rest))
    return RawResponse(int(status_line.split()[1]), parsed, rest[:length])


class _AnyMethod:
    """An ASGI endpoint object: Starlette routes any method to it."""

    def __init__(self, handler: Any) -> None:
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.handler(Request(scope, receive))
        await response(scope, receive, send)


class RecordingService(MicroService):
    """A test upstream that answers every path and method, and records each path served.

    The answer names the service, a counter and what the request carried that a
    response could depend on (cookie, authorization, forwarded host...), with
    ``Cache-Control: max-age=60`` so the gateway caches it. ``?status=N`` answers N,
    ``?location=URL`` adds a ``Location``.
    """

    def __init__(self, registry: ServiceRegistry, sock: socket.socket, name: str) -> None:
        super().__init__(name, registry=registry, port=sock.getsockname()[1])
        self.hits = itertools.count(1)
        self.served: list[tuple[str, bytes]] = []  # (method, raw path)
        self.app.router.routes.append(Route("/{rest:path}", _AnyMethod(self.answer)))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":  # every path, /health included
            self.served.append((scope["method"], scope["raw_path"]))
        await super().__call__(scope, receive, send)

    async def answer(self, request: Request) -> Response:
        seen = {name: request.headers.getlist(name) for name in SEEN_HEADERS}
        query = request.query_params
        headers = {"Cache-Control": "max-age=60"}
        for name in ("location", "content-location"):
            if name in query:
                headers[name] = query[name]
        return JSONResponse(
            {
                "service": self.name,
                "n": next(self.hits),
                "method": request.method,
                "path": request.url.path,
                "body": (await request.body()).decode("utf-8", "replace"),
                "seen": seen,
            },
            status_code=int(query.get("status", "200")),
            headers=headers,
        )


SEEN_HEADERS = (
    "cookie",
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-for",
    "x-real-ip",
    "forwarded",
    "x-original-url",
    "x-rewrite-url",
    "x-http-method-override",
)


def lenient(raw_path: bytes) -> str:
    """The path a lenient upstream could make of ``raw_path``: percent-decoded once,
    ``\\`` read as ``/``, dot-segments removed."""
    path = unquote_to_bytes(raw_path).decode("latin-1").replace("\\", "/")
    out: list[str] = []
    for segment in path.split("/")[1:]:
        if segment == "..":
            if out:
                out.pop()
        elif segment != ".":
            out.append(segment)
    return "/" + "/".join(out)
