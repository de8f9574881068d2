"""The exceptions rtkit raises.

Every error rtkit raises on purpose derives from :class:`RtkitError`, so an
application can catch the whole family at once, or one precise kind.
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "BackendUnavailable",
    "ConfigurationError",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "RtkitError",
    "ServiceNotFound",
    "ValidationError",
]


class RtkitError(Exception):
    """Base class of every error raised by rtkit.

    ``code`` is a short, stable, machine-readable name (it is what a Socket.IO
    client receives in an error ack); the message is for people.
    """

    code: str = "error"

    def __init__(self, message: str = "", *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        """The human-readable message."""
        return str(self)


class ConfigurationError(RtkitError):
    """A component was configured wrongly: an unknown URL scheme, a bad limit string, ..."""

    code = "configuration_error"


class BackendUnavailable(RtkitError):
    """Redis, RabbitMQ or another backend did not answer within the configured time."""

    code = "backend_unavailable"


class ValidationError(RtkitError, ValueError):
    """Input was rejected: a wrong type, an empty or oversize id, a malformed payload.

    Nothing was changed when this is raised.
    """

    code = "invalid_payload"


class PayloadTooLarge(ValidationError):
    """A payload is larger than the configured maximum."""

    code = "payload_too_large"


class AuthError(RtkitError):
    """A token is missing, malformed, badly signed or expired; or an action is not allowed."""

    code = "unauthorized"


class RateLimited(RtkitError):
    """A rate limit was hit; try again after ``retry_after`` seconds."""

    code = "rate_limited"

    def __init__(self, message: str = "rate limit exceeded", *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NotFound(RtkitError, LookupError):
    """A thing that was asked for does not exist."""

    code = "not_found"


class ServiceNotFound(NotFound):
    """No live instance of the named service is registered."""

    code = "service_not_found"
