"""``rtkit serve`` and ``rtkit token``.

```sh
export RTKIT_SECRET=$(python -c 'import secrets; print(secrets.token_urlsafe(32))')
rtkit serve --port 8000 --redis redis://127.0.0.1:6379/0   # one of several instances
rtkit token 42 --name ada --ttl 3600                        # a token for user 42
rtkit serve --demo                                          # anyone may log in by name
```

The JWT secret comes from the ``RTKIT_SECRET`` environment variable (never from
the command line, where other users could read it). In demo mode, without it,
the server signs tokens with a random secret of its process.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from .._core.leases import DEFAULT_TTL
from .._core.urls import DEFAULT_PREFIX
from ..errors import RtkitError
from ._auth import MIN_SECRET_BYTES, issue_token
from ._server import DEFAULT_CLIENT_JS_URL, RealtimeServer

__all__ = ["build_parser", "main"]

log = logging.getLogger("rtkit.cli")

SECRET_ENV = "RTKIT_SECRET"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``rtkit`` command."""
    parser = argparse.ArgumentParser(prog="rtkit", description="rtkit's realtime chat server")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the Socket.IO chat server")
    serve.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on")
    serve.add_argument(
        "--redis", metavar="URL", help="share presence, rooms and emits through this Redis"
    )
    serve.add_argument("--prefix", default=DEFAULT_PREFIX, help="Redis key prefix")
    serve.add_argument(
        "--presence-ttl",
        type=float,
        default=DEFAULT_TTL,
        help="instance lease in seconds: a crashed instance's users go within 2x this",
    )
    serve.add_argument(
        "--demo", action="store_true", help="let anyone log in by name (never in production)"
    )
    serve.add_argument(
        "--client-js-url",
        default=DEFAULT_CLIENT_JS_URL,
        help="where the chat page loads the Socket.IO client from",
    )
    serve.add_argument(
        "--cors-origin",
        action="append",
        metavar="ORIGIN",
        help="also accept Socket.IO clients from pages at ORIGIN (repeatable; '*' for any)",
    )
    serve.add_argument("--upload-dir", help="folder for uploaded files (default: a temporary one)")
    serve.add_argument("--log-level", default="info", help="uvicorn's log level")
    token = commands.add_parser("token", help=f"print a token signed with ${SECRET_ENV}")
    token.add_argument("user_id", metavar="USER_ID")
    token.add_argument("--name", help="display name (default: the user id)")
    token.add_argument("--ttl", type=float, default=3600.0, help="lifetime in seconds")
    return parser


def _origins(given: list[str] | None) -> str | list[str] | None:
    if not given:
        return None  # same origin only
    return "*" if "*" in given else given


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    secret = os.environ.get(SECRET_ENV) or None
    if secret is None and args.demo:
        log.warning(
            "!!! %s is not set: DEMO MODE uses a random secret; tokens die with this process !!!",
            SECRET_ENV,
        )
    elif secret is None:
        log.error(
            "set %s to a secret of at least %d bytes, e.g. "
            "export %s=$(python -c 'import secrets; print(secrets.token_urlsafe(32))')",
            SECRET_ENV,
            MIN_SECRET_BYTES,
            SECRET_ENV,
        )
        return 2
    server = RealtimeServer.from_url(
        args.redis or "memory://",
        secret=secret,
        prefix=args.prefix,
        presence_ttl=args.presence_ttl,
        upload_dir=args.upload_dir,
        demo=args.demo,
        client_js_url=args.client_js_url,
        cors_allowed_origins=_origins(args.cors_origin),
    )
    if args.redis and not args.upload_dir:
        log.warning(
            "uploads go to a temporary folder of this process: give every instance the "
            "same --upload-dir so that files sent to one can be downloaded from another"
        )
    if args.demo:
        log.warning(
            "!!! DEMO MODE: anyone can log in with any name at http://%s:%d/ !!!",
            args.host,
            args.port,
        )
    uvicorn.run(server, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def _token(args: argparse.Namespace) -> int:
    secret = os.environ.get(SECRET_ENV)
    if not secret:
        log.error("set %s to the secret the server uses", SECRET_ENV)
        return 2
    sys.stdout.write(issue_token(secret, args.user_id, name=args.name, ttl=args.ttl) + "\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``rtkit serve`` or ``rtkit token``; returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return _serve(args) if args.command == "serve" else _token(args)
    except RtkitError as exc:
        log.error("%s", exc)
        return 2
