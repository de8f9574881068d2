"""The ``rtkit`` command: ``rtkit serve`` runs the chat server, ``rtkit token`` signs a token,
``rtkit asyncapi`` writes the realtime protocol as an AsyncAPI document.

The parser needs nothing beyond rtkit itself, so ``rtkit --version``, ``rtkit
--help`` and ``rtkit asyncapi`` work everywhere; ``serve`` and ``token`` need the
``realtime`` extra (``pip install 'rtkit[realtime]'``) and say so when it is
missing. See the realtime and observability guides.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from ._core.leases import DEFAULT_TTL
from ._core.urls import DEFAULT_PREFIX

__all__ = ["LOG_FORMATS", "LOG_LEVELS", "SECRET_ENV", "build_parser", "main"]

SECRET_ENV = "RTKIT_SECRET"
"""The environment variable holding the JWT secret (never a command-line argument)."""

LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
"""uvicorn's log levels."""

LOG_FORMATS = ("text", "json")
"""``text`` lines, or one JSON object per line (with request, connection and trace ids)."""


def _port(text: str) -> int:
    port = int(text)
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a TCP port (1-65535)")
    return port


def _seconds(text: str) -> float:
    seconds = float(text)
    if not 0 < seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of seconds")
    return seconds


def _seconds_or_off(text: str) -> float:
    seconds = float(text)
    if not 0 <= seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not 0 (off) or a number of seconds")
    return seconds


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``rtkit`` command."""
    parser = argparse.ArgumentParser(
        prog="rtkit",
        description="rtkit's realtime chat server and its tokens.",
        epilog=f"The JWT secret comes from ${SECRET_ENV} (at least 32 bytes).",
    )
    parser.add_argument("--version", action="version", version=f"rtkit {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_serve(commands)
    token = commands.add_parser(
        "token",
        help=f"print a token signed with ${SECRET_ENV}",
        description=f"Print a JWT for USER_ID, signed with ${SECRET_ENV}.",
    )
    token.add_argument("user_id", metavar="USER_ID", help="the user the token is for")
    token.add_argument("--name", help="display name (default: the user id)")
    token.add_argument(
        "--ttl", type=_seconds, default=3600.0, help="lifetime in seconds (default: %(default)s)"
    )
    asyncapi = commands.add_parser(
        "asyncapi",
        help="write the realtime protocol as an AsyncAPI 3.0 document",
        description="Write the Socket.IO protocol of the chat server (every event both ways, "
        "its payload schema, its acks and errors) as an AsyncAPI 3.0 document.",
    )
    asyncapi.add_argument(
        "--format",
        choices=("json", "yaml", "typescript"),
        default="json",
        help="the document as JSON or YAML, or the events' TypeScript types for "
        "socket.io-client (default: %(default)s)",
    )
    asyncapi.add_argument(
        "--output", "-o", type=Path, metavar="FILE", help="write to FILE (default: stdout)"
    )
    asyncapi.add_argument(
        "--server",
        default="localhost:8000",
        metavar="HOST:PORT",
        help="the server the document names (default: %(default)s)",
    )
    return parser


SOCKETIO_ADAPTERS = ("socketio", "sharded", "node-redis")  # rtkit.realtime.managers.ADAPTERS


def _add_serve(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = commands.add_parser(
        "serve",
        help="run the Socket.IO chat server",
        description="Run the Socket.IO chat server with its web page.",
    )
    add = serve.add_argument
    add("--host", default="127.0.0.1", help="interface to listen on (default: %(default)s)")
    add("--port", type=_port, default=8000, help="port to listen on (default: %(default)s)")
    add(
        "--redis",
        metavar="URL",
        help="share presence, rooms, history and emits through this Redis, so that "
        "several instances act as one (default: memory, one process)",
    )
    add("--prefix", default=DEFAULT_PREFIX, help="Redis key prefix (default: %(default)s)")
    add(
        "--adapter",
        choices=SOCKETIO_ADAPTERS,
        help="how emits reach the other instances (with --redis): 'socketio' (one channel "
        "every rtkit instance reads; the default on one Redis and Sentinel), 'sharded' (a "
        "shard channel per room, read only by the instances with members in it; the default "
        "on redis+cluster://) or 'node-redis' (one cluster with Node Socket.IO servers that "
        "use @socket.io/redis-adapter)",
    )
    add(
        "--adapter-key",
        metavar="KEY",
        help="the Node adapter's key option, first part of its channels (default: socket.io)",
    )
    add(
        "--adapter-room-prefix",
        metavar="PREFIX",
        help="rtkit's Socket.IO room PREFIX+R is the Node servers' room R: 'room:' beside the "
        "Node.js chat server rtkit's protocol comes from, which names rooms by the bare room "
        "id (default: none)",
    )
    add(
        "--presence-ttl",
        type=_seconds,
        default=DEFAULT_TTL,
        metavar="SECONDS",
        help="instance lease: a crashed instance's users go within 2x this (default: %(default)s)",
    )
    add(
        "--max-disconnection-duration",
        type=_seconds_or_off,
        default=0.0,
        metavar="SECONDS",
        help="connection state recovery: a client that lost its connection gets its "
        "session back (sid, rooms, missed events) within this time, on any instance "
        "with --redis; 0 turns it off (default: %(default)s)",
    )
    add(
        "--ws-compression",
        action="store_true",
        help="compress websocket messages (permessage-deflate): less traffic, more server CPU "
        "per recipient (off by default, as in Socket.IO's Node server)",
    )
    add("--demo", action="store_true", help="let anyone log in by name (never in production)")
    add(
        "--client-js-url",
        metavar="URL",
        help="where the chat page loads the Socket.IO browser client from, e.g. a CDN "
        "(default: the copy built into rtkit, served by this server: no internet needed)",
    )
    add(
        "--client-js-integrity",
        metavar="SRI",
        help="the Subresource Integrity hash ('sha384-...') of the script at --client-js-url; "
        "rtkit knows it for its pinned socket.io-client on a CDN, any other script from "
        "another site needs it, or 'none' to load that script unchecked (default: none given)",
    )
    add(
        "--cors-origin",
        action="append",
        metavar="ORIGIN",
        help="also accept Socket.IO clients from pages at ORIGIN, repeatable, '*' for any "
        "(default: the server's own pages only)",
    )
    add(
        "--upload-dir",
        metavar="DIR",
        help="folder for uploaded files, the same for every instance "
        "(default: a temporary folder, removed on exit)",
    )
    add(
        "--log-level",
        default="info",
        choices=LOG_LEVELS,
        help="uvicorn's log level (default: %(default)s)",
    )
    add(
        "--log-format",
        default="text",
        choices=LOG_FORMATS,
        help="text lines, or one JSON object per line with the request or connection id "
        "and, when tracing is on, the trace ids (default: %(default)s)",
    )
    add(
        "--metrics",
        action="store_true",
        help="count rtkit's Prometheus metrics and serve them at GET /metrics "
        "(needs the otel extra)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``rtkit`` command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.command == "asyncapi":
        return _asyncapi(args)
    try:
        from .realtime._cli import run
    except ImportError as exc:
        sys.stderr.write(
            f"rtkit {args.command}: needs the realtime extra ({exc}); install it with: "
            "pip install 'rtkit[realtime]' (or 'rtkit[server]' for everything)\n"
        )
        return 2
    return run(args, secret_env=SECRET_ENV)


def _asyncapi(args: argparse.Namespace) -> int:
    from ._core.asyncapi import dump
    from .realtime._asyncapi import asyncapi_document
    from .realtime._typescript import typescript_module

    if args.format == "typescript":
        text = typescript_module()
    else:
        text = dump(asyncapi_document(url=args.server), args.format)
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text, "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
