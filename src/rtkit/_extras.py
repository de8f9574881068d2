"""Which optional extra brings which part of rtkit, and the one message when it is missing."""

from __future__ import annotations

__all__ = ["GATEWAY", "REALTIME", "missing_extra"]

GATEWAY = "gateway"
"""Starlette, uvicorn and httpx: ``ApiGateway``, ``MicroService``, ``rtkit.http``."""

REALTIME = "realtime"
"""python-socketio, Starlette, uvicorn, PyJWT, aiohttp: the chat server and client."""


def missing_extra(what: str, extra: str, exc: ImportError) -> ImportError:
    """The error for ``what`` needing ``extra``, which is missing (``exc`` says what lacks).

    ``rtkit[server]`` installs both HTTP extras, as it did before they were split.
    """
    error = ImportError(
        f"{what} needs the {extra} extra ({exc}): pip install 'rtkit[{extra}]' "
        "(or 'rtkit[server]' for every server part)"
    )
    error.name = exc.name
    return error
