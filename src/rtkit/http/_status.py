"""The one table from rtkit errors to HTTP statuses."""

from __future__ import annotations

from types import MappingProxyType

from ..errors import (
    AuthError,
    BackendUnavailable,
    Closed,
    ConfigurationError,
    Conflict,
    Forbidden,
    InternalError,
    MalformedJson,
    MalformedRequest,
    NotFound,
    PayloadTooLarge,
    QuotaExceeded,
    RateLimited,
    RemoteError,
    RtkitError,
    ServiceNotFound,
    UpstreamTimeout,
    ValidationError,
)

__all__ = ["STATUS", "status_for"]

STATUS = MappingProxyType(
    {
        ValidationError: 422,
        MalformedJson: 400,
        MalformedRequest: 400,
        PayloadTooLarge: 413,
        AuthError: 401,
        Forbidden: 403,
        QuotaExceeded: 403,
        NotFound: 404,
        Conflict: 409,
        RateLimited: 429,
        RtkitError: 500,
        ConfigurationError: 500,
        InternalError: 500,
        RemoteError: 502,
        BackendUnavailable: 503,
        Closed: 503,
        ServiceNotFound: 503,
        UpstreamTimeout: 504,
    }
)
"""The HTTP status of each error class; a subclass not listed takes its nearest base's.

``ServiceNotFound`` is 503, not 404: the URL exists, a service it needs is down.
"""


def status_for(error: RtkitError) -> int:
    """The HTTP status for ``error`` (its class's, else its nearest base class's in `STATUS`)."""
    for cls in type(error).__mro__:
        status = STATUS.get(cls)
        if status is not None:
            return status
    return 500
