"""The exceptions rtkit raises: one class per case a caller may branch on.

Every error rtkit raises on purpose derives from [`RtkitError`][rtkit.errors.RtkitError]
and carries a stable, machine-readable ``code``: the same string a Socket.IO client
reads in an error ack and an HTTP client in ``{"error": {"code": ...}}``. Catch the
whole family at once, or one precise kind:

    RtkitError                     error
    ├── ConfigurationError         configuration_error   a component was set up wrongly
    ├── Closed                     closed                the component was closed
    ├── BackendUnavailable         backend_unavailable   Redis / RabbitMQ did not answer in time
    │   └── UpstreamTimeout        gateway_timeout       a proxied service did not answer in time
    ├── ValidationError            invalid_payload       bad input; nothing changed
    │   ├── MalformedJson          malformed_json        a body is not JSON at all
    │   ├── MalformedRequest       malformed_request     an HTTP request a server cannot use safely
    │   └── PayloadTooLarge        payload_too_large     bigger than the configured bound
    ├── AuthError                  unauthorized          no, a bad or a forged token
    │   └── TokenExpired           token_expired         the token's time is up
    ├── Forbidden                  forbidden             authenticated, but not allowed
    │   └── NotMember              not_member            not a member of that room
    ├── QuotaExceeded              quota_exceeded        a bounded resource is used up
    │   └── TooManyRooms           too_many_rooms        the per-user room quota
    ├── Conflict                   conflict              the state does not allow it now
    ├── RateLimited                rate_limited          retry after ``retry_after`` seconds
    ├── NotFound                   not_found             no such thing
    │   └── ServiceNotFound        service_not_found     no live instance of a service
    ├── RemoteError                remote_error          the other side failed (request/reply)
    └── InternalError              internal_error        a bug: the server failed

The HTTP status of each class is in one table, `rtkit.http.status_for`.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

__all__ = [
    "AuthError",
    "BackendUnavailable",
    "Closed",
    "ConfigurationError",
    "Conflict",
    "Forbidden",
    "InternalError",
    "MalformedJson",
    "MalformedRequest",
    "NotFound",
    "NotMember",
    "PayloadTooLarge",
    "QuotaExceeded",
    "RateLimited",
    "RemoteError",
    "RtkitError",
    "ServiceNotFound",
    "TokenExpired",
    "TooManyRooms",
    "UpstreamTimeout",
    "ValidationError",
    "error_from_payload",
]

_BY_CODE: dict[str, type[RtkitError]] = {}


class RtkitError(Exception):
    """Base class of every error raised by rtkit.

    ``code`` is a short, stable, machine-readable name of the class; the message
    is for people. [`payload`][rtkit.errors.RtkitError.payload] is the error as
    it goes over the wire, and
    [`error_from_payload`][rtkit.errors.error_from_payload] turns it back into
    the same class.
    """

    code: ClassVar[str] = "error"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "code" in cls.__dict__:
            _BY_CODE[cls.code] = cls

    @property
    def message(self) -> str:
        """The human-readable message."""
        return str(self)

    def payload(self) -> dict[str, Any]:
        """``{"code", "message"}`` and any details (``retryAfter``), ready for JSON."""
        return {"code": self.code, "message": self.message}


_BY_CODE[RtkitError.code] = RtkitError


class ConfigurationError(RtkitError):
    """A component was configured wrongly: an unknown URL scheme, a bad limit string, ..."""

    code = "configuration_error"


class Closed(RtkitError):
    """The component was closed; make a new one."""

    code = "closed"


class BackendUnavailable(RtkitError):
    """Redis, RabbitMQ or another backend did not answer within the configured time."""

    code = "backend_unavailable"


class UpstreamTimeout(BackendUnavailable):
    """A service behind the gateway did not answer within ``upstream_timeout``."""

    code = "gateway_timeout"


class ValidationError(RtkitError, ValueError):
    """Input was rejected: a wrong type, an empty or oversize id, a malformed payload.

    Nothing was changed when this is raised.
    """

    code = "invalid_payload"


class MalformedJson(ValidationError):
    """A body that should be JSON is not JSON at all."""

    code = "malformed_json"


class MalformedRequest(ValidationError):
    """An HTTP request that cannot be handled safely: a path that cannot be normalised,
    a header that is not ASCII, ..."""

    code = "malformed_request"


class PayloadTooLarge(ValidationError):
    """A payload is larger than the configured maximum."""

    code = "payload_too_large"


class AuthError(RtkitError):
    """A token is missing, malformed or badly signed."""

    code = "unauthorized"


class TokenExpired(AuthError):
    """The token has expired: get a fresh one and connect again."""

    code = "token_expired"


class Forbidden(RtkitError):
    """The caller is known but may not do this."""

    code = "forbidden"


class NotMember(Forbidden):
    """The caller is not a member of the room the action is about."""

    code = "not_member"


class QuotaExceeded(RtkitError):
    """A bounded resource (rooms, upload bytes, ...) is used up for this caller."""

    code = "quota_exceeded"


class TooManyRooms(QuotaExceeded):
    """The user is in as many rooms as allowed already."""

    code = "too_many_rooms"


class Conflict(RtkitError):
    """The thing exists, but its state does not allow this now (for example, already done)."""

    code = "conflict"


class RateLimited(RtkitError):
    """A rate limit was hit; try again after ``retry_after`` seconds."""

    code = "rate_limited"

    def __init__(self, message: str = "rate limit exceeded", *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def payload(self) -> dict[str, Any]:
        """The base payload plus ``retryAfter`` (seconds)."""
        return {**super().payload(), "retryAfter": self.retry_after}


class NotFound(RtkitError, LookupError):
    """A thing that was asked for does not exist."""

    code = "not_found"


class ServiceNotFound(NotFound):
    """No live instance of the named service is registered."""

    code = "service_not_found"


class RemoteError(RtkitError):
    """The other side failed: a request's handler raised, or an answer made no sense."""

    code = "remote_error"


class InternalError(RtkitError):
    """The server failed to handle a request (a bug; the details are in its log)."""

    code = "internal_error"


def error_from_payload(payload: Any) -> RtkitError:
    """The typed error for a wire payload ``{"code", "message", ...}``.

    An unknown code gives a plain [`RtkitError`][rtkit.errors.RtkitError] (whose
    ``code`` attribute is still the class's); a payload that is not a dict gives a
    [`RemoteError`][rtkit.errors.RemoteError].
    """
    if not isinstance(payload, dict):
        return RemoteError(f"the other side answered with an unreadable error: {payload!r:.200}")
    code = str(payload.get("code", "error"))
    message = str(payload.get("message", "the other side refused the request"))
    cls = _BY_CODE.get(code, RtkitError)
    if cls is RateLimited:
        retry = payload.get("retryAfter", 0.0)
        ok = isinstance(retry, int | float) and math.isfinite(retry) and retry >= 0
        return RateLimited(message, retry_after=float(retry) if ok else 0.0)
    return cls(message)
