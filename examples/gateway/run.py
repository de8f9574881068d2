"""The seed's microservices demo: an API gateway in front of a user and an order service.

    python examples/gateway/run.py                 # everything in memory
    python examples/gateway/run.py --redis redis://127.0.0.1:6379/0

Starts the user service, the order service and the gateway with uvicorn on
127.0.0.1 (free ports unless ``--port`` is given for the gateway), prints the
gateway's URL and serves until Ctrl-C. Then try::

    curl -i http://127.0.0.1:<port>/api/users      # proxied, X-Cache: MISS then HIT
    curl -i http://127.0.0.1:<port>/services       # {"services": {"order-service": 1, ...}}
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
from collections.abc import Iterator

import uvicorn
from services import OrderService, UserService

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


async def main(redis_url: str | None, port: int, prefix: str) -> None:
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
    print("stopped", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", metavar="URL", help="use Redis instead of memory")
    parser.add_argument("--port", type=int, default=0, help="gateway port (default: a free one)")
    parser.add_argument("--prefix", default="rtkit-example:", help="Redis key prefix")
    args = parser.parse_args()
    asyncio.run(main(args.redis, args.port, args.prefix))
