"""Microservices behind an API gateway: a user and an order service, discovered and proxied.

    python examples/gateway/run.py                 # everything in memory
    python examples/gateway/run.py --redis redis://127.0.0.1:6379/0

Starts the user service, the order service and the gateway with uvicorn on
127.0.0.1 (free ports unless ``--port`` is given for the gateway), prints the
gateway's URL and serves until Ctrl-C. Then try::

    curl -i http://127.0.0.1:<port>/api/users      # proxied, X-Cache: MISS then HIT
    curl -i http://127.0.0.1:<port>/services       # {"services": {"order-service": 1, ...}}

On Redis every key starts with ``--prefix`` (a new one per run by default); at
exit the services deregister and the example deletes the rate-limit and cache
keys it made, unless ``--keep`` is given.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import uuid
from collections.abc import Iterator

import uvicorn
from services import OrderService, UserService

import rtkit
from rtkit.gateway import ApiGateway, Route


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to this script (three share a loop)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind(port: int = 0) -> socket.socket:
    """A listening TCP socket on 127.0.0.1 (port 0: a free one)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


async def delete_keys(redis_url: str, prefix: str) -> int:
    """Delete what the example left under ``prefix``: its registry, rate-limit and cache keys."""
    client = rtkit.redis_client(redis_url)
    deleted = 0
    try:
        # every key of a component starts with {<prefix><component> (rtkit's key rule)
        for part in ("registry", "ratelimit", "gateway-cache"):
            keys = [key async for key in client.scan_iter(match=f"{{{prefix}{part}*", count=500)]
            if keys:
                deleted += await client.delete(*keys)
    finally:
        await client.aclose()
    return deleted


async def main(redis_url: str | None, port: int, prefix: str, keep: bool = False) -> None:
    # memory://example: a memory name, so the three share one in-process registry
    url = redis_url or "memory://example"
    sockets = [bind(), bind(), bind(port)]
    # each opens its own registry on the URL (and closes it when it stops)
    users = UserService.from_url(url, prefix=prefix, port=sockets[0].getsockname()[1])
    orders = OrderService.from_url(url, prefix=prefix, port=sockets[1].getsockname()[1])
    gateway = ApiGateway.from_url(
        url,
        prefix=prefix,
        cache=True,  # a ResponseCache on the URL too
        routes={
            "/api/users": Route("user-service", path="/users"),
            "/api/orders": Route("order-service", path="/orders"),
        },
        rate_limit="100/minute",
    )
    servers = [
        _Server(uvicorn.Config(app, lifespan="on", log_level="warning"))
        for app in (users, orders, gateway)
    ]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    services = [
        asyncio.create_task(server.serve(sockets=[sock]))
        for server, sock in zip(servers[:2], sockets[:2], strict=True)
    ]
    while not all(s.started for s in servers[:2]):  # noqa: ASYNC110 (uvicorn has no event)
        await asyncio.sleep(0.05)
    front = asyncio.create_task(servers[2].serve(sockets=[sockets[2]]))
    while not servers[2].started:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    backend = "Redis" if redis_url else "memory"
    print(f"gateway listening on http://127.0.0.1:{sockets[2].getsockname()[1]} ({backend})")
    print(f"user-service on :{users.port}, order-service on :{orders.port}", flush=True)

    await stop.wait()
    servers[2].should_exit = True  # the gateway first, then the services deregister
    await front
    for server in servers[:2]:
        server.should_exit = True
    await asyncio.gather(*services)  # each lifespan closed what it opened
    if redis_url and not keep:
        print(f"deleted {await delete_keys(redis_url, prefix)} keys under {prefix}", flush=True)
    print("stopped", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", metavar="URL", help="use Redis instead of memory")
    parser.add_argument("--port", type=int, default=0, help="gateway port (default: a free one)")
    parser.add_argument(
        "--prefix", help="Redis key prefix (default: a new one per run, rtkit-example-<hex>:)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the Redis keys at exit (default: delete them)"
    )
    args = parser.parse_args()
    prefix = args.prefix or f"rtkit-example-{uuid.uuid4().hex[:8]}:"
    asyncio.run(main(args.redis, args.port, prefix, args.keep))
