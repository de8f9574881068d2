"""ASGI pieces shared by rtkit's HTTP servers: a body limit and the lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._core.lifecycle import AsyncResource
from ..errors import PayloadTooLarge

__all__ = ["BodyLimitMiddleware", "lifespan"]


def lifespan(resource: AsyncResource) -> Callable[[object], AbstractAsyncContextManager[None]]:
    """A Starlette ``lifespan`` that starts ``resource`` and closes it on shutdown."""

    @contextlib.asynccontextmanager
    async def run(app: object) -> AsyncIterator[None]:
        async with resource:
            yield

    return run


class BodyLimitMiddleware:
    """Reading a request body larger than ``max_body_size`` raises ``PayloadTooLarge``.

    The rtkit exception handlers answer it with a JSON 413. A ``Content-Length``
    over the limit fails on the first read, before any byte is buffered.
    """

    def __init__(self, app: ASGIApp, *, max_body_size: int) -> None:
        self.app = app
        self.max_body_size = max_body_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI entry point."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_size
        declared = dict(scope["headers"]).get(b"content-length", b"")
        seen = int(declared) if declared.isdigit() else 0

        async def limited() -> Message:
            nonlocal seen
            if seen > limit:
                raise PayloadTooLarge(f"the request body is larger than {limit} bytes")
            message = await receive()
            if declared.isdigit():
                return message
            seen += len(message.get("body", b""))
            if seen > limit:
                raise PayloadTooLarge(f"the request body is larger than {limit} bytes")
            return message

        await self.app(scope, limited, send)
