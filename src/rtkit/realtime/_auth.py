"""Who is connecting: token verification for the Socket.IO handshake and the HTTP API.

The default scheme is a JWT signed with HS256: ``sub`` is the user id, ``name`` the
display name, ``exp`` is required and enforced. Any object with an async
``verify(token) -> Identity`` method can replace it (sessions, OAuth introspection ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import jwt

from .._core.clock import Clock, SystemClock
from .._core.validate import MAX_ID_BYTES, check_id
from ..errors import AuthError, ConfigurationError, TokenExpired, ValidationError

__all__ = [
    "MAX_USERNAME_BYTES",
    "MIN_SECRET_BYTES",
    "Identity",
    "JWTVerifier",
    "TokenVerifier",
    "issue_token",
]

MIN_SECRET_BYTES = 32
"""The shortest HS256 secret accepted."""

MAX_USERNAME_BYTES = MAX_ID_BYTES
"""The longest display name, in UTF-8 bytes: the length of the longest id, since a
token without a name is named by its user id."""

_MAX_TOKEN_BYTES = 8192


@dataclass(frozen=True)
class Identity:
    """An authenticated user: a stable ``user_id``, a display ``username``, and when
    the credential it came from expires.

    ``expires_at`` (Unix seconds, ``None``: never) is when the server ends a
    connection made with this identity (an ``error`` event with code
    ``token_expired``, then a disconnect); it takes no part in comparisons.
    """

    user_id: str
    username: str
    expires_at: float | None = field(default=None, compare=False)


@runtime_checkable
class TokenVerifier(Protocol):
    """Turns a token into an :class:`Identity`, or raises [`AuthError`][rtkit.errors.AuthError]."""

    async def verify(self, token: str) -> Identity:
        """Return who ``token`` belongs to; raise ``AuthError`` if it is not valid."""
        ...


def _check_secret(secret: str | bytes) -> bytes:
    raw = secret.encode("utf-8") if isinstance(secret, str) else secret
    if len(raw) < MIN_SECRET_BYTES:
        raise ConfigurationError(
            f"the JWT secret must be at least {MIN_SECRET_BYTES} bytes long "
            "(generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return raw


def issue_token(
    secret: str | bytes,
    user_id: str,
    *,
    name: str | None = None,
    ttl: float = 3600.0,
    clock: Clock | None = None,
) -> str:
    """Sign an HS256 JWT for ``user_id`` (``sub``), named ``name`` (default: the id).

    The token expires ``ttl`` seconds from now (a negative ``ttl`` makes an
    already-expired token, which is handy in tests).
    """
    check_id(user_id, "user_id")
    username = user_id if name is None else name
    check_id(username, "name", max_bytes=MAX_USERNAME_BYTES)
    now = int((clock or SystemClock()).time())
    claims = {"sub": user_id, "name": username, "iat": now, "exp": now + int(ttl)}
    return jwt.encode(claims, _check_secret(secret), algorithm="HS256")


class JWTVerifier:
    """Verifies HS256 JWTs signed with ``secret`` (see :func:`issue_token`).

    ``sub`` must be a usable id, ``exp`` must be present and in the future
    (``leeway`` seconds of clock skew are tolerated), ``name`` defaults to ``sub``.
    The identity expires at ``exp + leeway``.
    """

    def __init__(self, secret: str | bytes, *, leeway: float = 0.0) -> None:
        self._secret = _check_secret(secret)
        self._leeway = leeway

    async def verify(self, token: str) -> Identity:
        """Return the token's :class:`Identity`.

        Raises:
            rtkit.errors.AuthError: The token is missing, malformed or badly
                signed (the message says which).
            rtkit.errors.TokenExpired: The token has expired.
        """
        if not isinstance(token, str) or not token:
            raise AuthError("no authentication token was provided")
        if len(token) > _MAX_TOKEN_BYTES:
            raise AuthError("the authentication token is too long")
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],
                leeway=self._leeway,
                options={"require": ["exp", "sub"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenExpired("the authentication token has expired") from exc
        except jwt.InvalidTokenError as exc:
            raise AuthError(f"the authentication token is invalid: {exc}") from exc
        try:
            user_id = check_id(claims.get("sub"), "the token's sub claim")
            name = claims.get("name", user_id)
            username = check_id(name, "the token's name claim", max_bytes=MAX_USERNAME_BYTES)
        except ValidationError as exc:
            raise AuthError(f"the authentication token is invalid: {exc}") from exc
        expires = claims["exp"]
        if isinstance(expires, bool) or not isinstance(expires, int | float):
            raise AuthError("the authentication token is invalid: exp is not a number")
        return Identity(user_id=user_id, username=username, expires_at=expires + self._leeway)
