"""Download links: short-lived URLs signed for one file and one user, never a session token.

A link is ``/api/uploads/<upload id>?user=<user id>&expires=<unix time>&signature=<mac>``;
the signature is an HMAC-SHA256, under a key of the server's, over the upload
id, the user id and the expiry. Whoever holds the link may download that one
file until it expires, as long as that user is still a member of the file's
room (checked on every download). Links land in browser histories and access
logs like any URL: that is why they are short-lived and tied to one file, and
why a session token never goes into one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import secrets
from dataclasses import dataclass
from urllib.parse import quote, urlencode

from .._core.clock import Clock, SystemClock
from .._core.validate import check_id, check_seconds
from ..errors import AuthError, ConfigurationError, TokenExpired, ValidationError

__all__ = ["DEFAULT_LINK_TTL", "DownloadLink", "DownloadLinks", "derive_key"]

DEFAULT_LINK_TTL = 900.0
"""Seconds a download link works (15 minutes)."""

_LABEL = b"rtkit download links v1"
_MIN_KEY_BYTES = 32
_MAX_SIGNATURE = 64  # characters of a base64url SHA-256 MAC, with room to spare


def derive_key(secret: str | bytes) -> bytes:
    """The link key derived from another secret (the JWT secret), never the secret itself."""
    raw = secret.encode("utf-8") if isinstance(secret, str) else secret
    return hmac.new(raw, _LABEL, hashlib.sha256).digest()


@dataclass(frozen=True)
class DownloadLink:
    """A signed download URL (relative to the server) and when it stops working."""

    url: str
    expires_at: float


class DownloadLinks:
    """Signs and checks download links (see the module docs).

    Args:
        key: the HMAC key, at least 32 bytes (``None``: a random key of this
            process, so links work only on the instance that made them).
        ttl: seconds a link works.
        clock: where time comes from.
    """

    def __init__(
        self, key: bytes | None = None, *, ttl: float = DEFAULT_LINK_TTL, clock: Clock | None = None
    ) -> None:
        if key is None:
            key = secrets.token_bytes(_MIN_KEY_BYTES)
        if len(key) < _MIN_KEY_BYTES:
            raise ConfigurationError(f"a download link key needs at least {_MIN_KEY_BYTES} bytes")
        self._key = key
        self.ttl = check_seconds(ttl, "download link ttl")
        self._clock = clock or SystemClock()

    def _mac(self, upload_id: str, user_id: str, expires: int) -> str:
        message = "\0".join((upload_id, user_id, str(expires))).encode("utf-8")
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def sign(self, upload_id: str, user_id: str) -> DownloadLink:
        """A link for ``user_id`` to download ``upload_id``, working for ``ttl`` seconds."""
        expires = math.ceil(self._clock.time() + self.ttl)
        signature = self._mac(upload_id, user_id, expires)
        query = urlencode({"user": user_id, "expires": expires, "signature": signature})
        return DownloadLink(f"/api/uploads/{quote(upload_id, safe='')}?{query}", float(expires))

    def verify(self, upload_id: str, user_id: str, expires: str, signature: str) -> str:
        """The user a link was signed for, if its signature is right and it has not expired.

        Raises:
            rtkit.errors.AuthError: A malformed link or a wrong signature.
            rtkit.errors.TokenExpired: The link has expired (ask for a new one).
        """
        try:
            check_id(user_id, "user")
        except ValidationError:
            raise AuthError("this download link is malformed") from None
        if not expires.isdigit() or len(expires) > 12 or len(signature) > _MAX_SIGNATURE:
            raise AuthError("this download link is malformed")
        wanted = self._mac(upload_id, user_id, int(expires))
        if not hmac.compare_digest(wanted.encode("ascii"), signature.encode("utf-8", "replace")):
            raise AuthError("this download link is not valid")
        if int(expires) <= self._clock.time():
            raise TokenExpired("this download link has expired: ask for a new one")
        return user_id
