"""What ``rtkit serve`` and ``rtkit token`` do (the parser is ``rtkit.cli``'s).

```sh
export RTKIT_SECRET=$(python -c 'import secrets; print(secrets.token_urlsafe(32))')
rtkit serve --port 8000 --redis redis://127.0.0.1:6379/0   # one of several instances
rtkit serve --redis redis+cluster://10.0.0.1:7000,10.0.0.2:7000  # sharded pub/sub
rtkit serve --redis redis://127.0.0.1:6379/0 --adapter node-redis  # beside Node servers
rtkit token 42 --name ada --ttl 3600                        # a token for user 42
rtkit serve --demo                                          # anyone may log in by name
rtkit serve --metrics --log-format json                     # GET /metrics, JSON log lines
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
from typing import Any

from ..errors import RtkitError
from ..telemetry import HttpTelemetry, configure_logging, enable_metrics, with_metrics
from ._auth import MIN_SECRET_BYTES, issue_token
from ._server import RealtimeServer

__all__ = ["run"]

log = logging.getLogger("rtkit.cli")


def _origins(given: list[str] | None) -> str | list[str] | None:
    if not given:
        return None  # same origin only
    return "*" if "*" in given else given


def _serve(args: argparse.Namespace, secret_env: str) -> int:
    import uvicorn

    secret = os.environ.get(secret_env) or None
    if secret is None and args.demo:
        log.warning(
            "!!! %s is not set: DEMO MODE uses a random secret; tokens die with this process !!!",
            secret_env,
        )
    elif secret is None:
        log.error(
            "set %s to a secret of at least %d bytes, e.g. "
            "export %s=$(python -c 'import secrets; print(secrets.token_urlsafe(32))')",
            secret_env,
            MIN_SECRET_BYTES,
            secret_env,
        )
        return 2
    if args.metrics:
        enable_metrics()  # before the server starts: its parts count from the start
    options: dict[str, Any] = {}
    for option in ("client_js_url", "client_js_integrity", "adapter"):
        if getattr(args, option, None) is not None:
            options[option] = getattr(args, option)
    adapter = {"key": args.adapter_key, "room_prefix": args.adapter_room_prefix}
    if any(value is not None for value in adapter.values()):
        options["adapter_options"] = {k: v for k, v in adapter.items() if v is not None}
    server = RealtimeServer.from_url(
        args.redis or "memory://",
        secret=secret,
        prefix=args.prefix,
        presence_ttl=args.presence_ttl,
        max_disconnection_duration=args.max_disconnection_duration,
        upload_dir=args.upload_dir,
        demo=args.demo,
        cors_allowed_origins=_origins(args.cors_origin),
        **options,
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
    # One access line per HTTP request (rtkit.access), a span when tracing is on; the
    # Socket.IO transport's own requests are left out.
    app: Any = HttpTelemetry(server, app_name="realtime", skip=("/socket.io/",))
    if args.metrics:
        app = with_metrics(app)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
        # compressing is per recipient: off, broadcasts are framed once for all of them
        ws_per_message_deflate=args.ws_compression,
        log_config=None if args.log_format == "json" else uvicorn.config.LOGGING_CONFIG,
    )
    return 0


def _token(args: argparse.Namespace, secret_env: str) -> int:
    secret = os.environ.get(secret_env)
    if not secret:
        log.error("set %s to the secret the server uses", secret_env)
        return 2
    sys.stdout.write(issue_token(secret, args.user_id, name=args.name, ttl=args.ttl) + "\n")
    return 0


def run(args: argparse.Namespace, *, secret_env: str) -> int:
    """Run the parsed ``rtkit serve`` or ``rtkit token``; returns the exit status.

    ``secret_env`` names the environment variable that holds the JWT secret.
    """
    if getattr(args, "log_format", "text") == "json":
        configure_logging("json")
    else:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        command = _serve if args.command == "serve" else _token
        return command(args, secret_env)
    except RtkitError as exc:
        log.error("%s", exc)
        return 2
