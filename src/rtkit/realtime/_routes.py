"""The chat server's HTTP side: the page, the protocol's listings, health, uploads, demo logins.

Errors are answered by [`rtkit.http`][rtkit.http]'s exception handlers:
``{"error": {"code", "message"}}`` with the status of its one table.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .._core.validate import DEFAULT_PAGE, MAX_PAGE, check_cursor, check_id, check_limit
from ..errors import AuthError, NotFound, ValidationError
from ..http import exception_handlers
from ._auth import MAX_USERNAME_BYTES, Identity, TokenVerifier
from ._chat import ChatService, Emit
from ._page import STATIC_DIR, ChatPage
from ._protocol import wire

__all__ = ["STATIC_DIR", "ChatRoutes"]

_MAX_DEMO_NAME = 64  # characters, as the chat page's login field allows
_DEMO_TOKEN_TTL = 12 * 3600.0

Lifespan = Callable[[Starlette], AbstractAsyncContextManager[None]]
IssueToken = Callable[[str, str], str]


def _slug(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40]
    return slug or secrets.token_hex(4)


def _paging(request: Request) -> tuple[str | None, int]:
    cursor = check_cursor(request.query_params.get("cursor") or None)
    raw = request.query_params.get("limit", str(DEFAULT_PAGE))
    if not raw.isdigit():
        raise ValidationError(f"limit must be an integer from 1 to {MAX_PAGE}, got {raw!r:.40}")
    return cursor, check_limit(int(raw))


class ChatRoutes:
    """The HTTP routes of one chat server.

    Args:
        chat: the chat logic.
        verifier: checks ``Authorization: Bearer`` tokens (never tokens in URLs).
        send: carries out emits (``file:upload:complete``).
        issue: makes a demo token for ``(user_id, name)``; ``None``: no demo logins.
        page: the chat page served at ``GET /``.
    """

    def __init__(
        self,
        *,
        chat: ChatService,
        verifier: TokenVerifier,
        send: Callable[[list[Emit]], Awaitable[None]],
        issue: IssueToken | None,
        page: ChatPage,
    ) -> None:
        self.chat = chat
        self.verifier = verifier
        self.send = send
        self.issue = issue
        self.chat_page = page

    def app(self, lifespan: Lifespan) -> Starlette:
        """The Starlette application serving these routes."""
        routes = [
            Route("/", self.page, methods=["GET"]),
            Route("/health", self.health, methods=["GET"]),
            Route("/api/online-users", self.online_users, methods=["GET"]),
            Route("/api/rooms", self.rooms, methods=["GET"]),
            Route("/api/demo/login", self.demo_login, methods=["POST"]),
            Route("/api/uploads/{upload_id}", self.put_upload, methods=["PUT"]),
            Route("/api/uploads/{upload_id}", self.get_upload, methods=["GET"]),
            Mount("/static", StaticFiles(directory=STATIC_DIR, check_dir=False), name="static"),
        ]
        return Starlette(routes=routes, lifespan=lifespan, exception_handlers=exception_handlers())

    async def page(self, request: Request) -> Response:
        """``GET /``: the chat page."""
        if self.chat_page.html is None:
            return Response("the chat page is not installed", status_code=404)
        return HTMLResponse(self.chat_page.html, headers=self.chat_page.headers)

    async def health(self, request: Request) -> Response:
        """``GET /health``: ``{status, users, connections}``."""
        count = await self.chat.presence.count()
        return JSONResponse(
            {"status": "ok", "users": count.users, "connections": count.connections}
        )

    async def online_users(self, request: Request) -> Response:
        """``GET /api/online-users?cursor=&limit=``."""
        cursor, limit = _paging(request)
        page = await self.chat.online_users(cursor, limit)
        count = await self.chat.presence.count()
        users = [wire(user) for user in page.items]
        return JSONResponse({"count": count.users, "users": users, "nextCursor": page.next_cursor})

    async def rooms(self, request: Request) -> Response:
        """``GET /api/rooms?cursor=&limit=``."""
        cursor, limit = _paging(request)
        page = await self.chat.room_list(cursor, limit)
        count = await self.chat.rooms.count()
        rooms = [wire(room) for room in page.items]
        return JSONResponse({"count": count, "rooms": rooms, "nextCursor": page.next_cursor})

    async def demo_login(self, request: Request) -> Response:
        """``POST /api/demo/login {name}`` (demo mode only): a token for anyone, by name."""
        if self.issue is None:
            raise NotFound("Not Found")
        try:
            body: Any = await request.json()
        except ValueError:
            body = None
        given = body.get("name") if isinstance(body, dict) else None
        name = check_id(
            given.strip() if isinstance(given, str) else given, "name", max_bytes=MAX_USERNAME_BYTES
        )
        if len(name) > _MAX_DEMO_NAME:
            raise ValidationError(f"name must be at most {_MAX_DEMO_NAME} characters")
        user_id = "demo-" + _slug(name)
        token = self.issue(user_id, name)
        return JSONResponse({"token": token, "userId": user_id, "username": name})

    async def _identify(self, request: Request) -> Identity:
        if "token" in request.query_params:
            raise AuthError(
                "tokens are not accepted in URLs (they end up in logs): send "
                "Authorization: Bearer <token>, or download with a signed link"
            )
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else ""
        if not token:
            raise AuthError("authentication token missing: send Authorization: Bearer <token>")
        return await self.verifier.verify(token)

    def _link_holder(self, request: Request) -> Identity | None:
        """The user a signed download link in the query was made for (``None``: no link)."""
        query = request.query_params
        if "signature" not in query:
            return None
        user_id = self.chat.links.verify(
            request.path_params["upload_id"],
            query.get("user", ""),
            query.get("expires", ""),
            query.get("signature", ""),
        )
        return Identity(user_id=user_id, username=user_id)

    async def put_upload(self, request: Request) -> Response:
        """``PUT /api/uploads/{upload_id}``: the uploader sends exactly the announced bytes."""
        who = await self._identify(request)
        length = request.headers.get("content-length")
        if length is not None and not length.isdigit():
            raise ValidationError("bad Content-Length")
        outcome = await self.chat.receive_upload(
            who,
            request.path_params["upload_id"],
            request.stream(),
            size=None if length is None else int(length),
        )
        await self.send(outcome.emits)
        return JSONResponse({"ok": True, **outcome.ack}, 201)

    async def get_upload(self, request: Request) -> Response:
        """``GET /api/uploads/{upload_id}``: the file, for members of its room.

        Authorised by a signed link (``?user=&expires=&signature=``, from
        ``file:upload:complete`` or ``file:download``) or by ``Authorization:
        Bearer``; never by a token in the URL.
        """
        who = self._link_holder(request) or await self._identify(request)
        record, chunks = await self.chat.download(who, request.path_params["upload_id"])
        return StreamingResponse(
            chunks,
            media_type="application/octet-stream",
            headers=_download_headers(record.file_name, record.file_size),
        )


def _download_headers(file_name: str, size: int) -> dict[str, str]:
    return {
        "Content-Disposition": f"attachment; filename*=UTF-8''{quote(file_name, safe='')}",
        "Content-Length": str(size),
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "private, no-store",
    }
