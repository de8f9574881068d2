"""The shape every public component shares: a backend object, a life cycle, ``from_url``.

``Component(backend=None, *, clock=None, **options)``: no backend means a private
memory backend. ``Component.from_url(url, *, prefix=None, redis=None, clock=None,
**options)`` resolves ``url`` through the one scheme registry, opens the backend
and builds the component; ``options`` go to whichever of the two names them (to
both when both do), so ``from_url`` never repeats the constructor's arguments. An
option only another backend of the component takes is ignored, so one call works
for every URL; an option no backend and no constructor takes is an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Self

from ..errors import ConfigurationError
from .clock import Clock
from .lifecycle import AsyncResource
from .urls import BackendTarget, backend_opener, keywords, resolve_target

__all__ = ["Component", "split_options"]


def split_options(
    component: str,
    options: Mapping[str, Any],
    backend: frozenset[str],
    own: frozenset[str],
    others: frozenset[str] = frozenset(),
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split ``from_url`` options between the backend's ``open`` and the constructor.

    ``backend`` and ``own`` name what each takes (an option both name goes to
    both); ``others`` are the options of the component's other backends, which
    this backend ignores.

    Raises:
        rtkit.errors.ConfigurationError: An option nobody takes.
    """
    known = backend | own | others
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigurationError(
            f"{component}.from_url got unknown option(s) {', '.join(unknown)} "
            f"(it takes {', '.join(sorted(known)) or 'none'})"
        )
    return (
        {k: v for k, v in options.items() if k in backend},
        {k: v for k, v in options.items() if k in own},
    )


class Component(AsyncResource):
    """Base of the public components (see the module docs).

    Subclasses set ``_backends`` to ``{kind: "module:BackendClass"}``; the
    backend class's ``open(target, **options)`` makes a backend for a
    [`BackendTarget`][rtkit.backends.BackendTarget].
    """

    _backends: ClassVar[Mapping[str, str]] = {}

    def __init__(self, backend: Any = None, *, clock: Clock | None = None) -> None:
        raise NotImplementedError  # every component defines its own constructor

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str | None = None,
        redis: Any = None,
        clock: Clock | None = None,
        **options: Any,
    ) -> Self:
        """Make the component on the backend that ``url`` names.

        Args:
            url: ``memory://`` (private to this object), ``memory://NAME``
                (shared by every object of this component opened with that name),
                or a Redis / RabbitMQ URL, as the component supports.
            prefix: The start of every Redis key and channel (default ``rtkit:``).
            redis: A ``redis.asyncio`` client to borrow (never closed by rtkit;
                made with ``decode_responses=True``, e.g. by
                [`rtkit.redis_client`][rtkit.redis_client]); ``url`` then only
                picks the kind of backend.
            clock: Where time comes from (a [`ManualClock`][rtkit.ManualClock]
                in tests); on Redis, without one, the server's time is used.
            **options: The constructor's keyword arguments and the backend's
                (such as ``timeout``).

        Raises:
            rtkit.errors.ConfigurationError: An unknown scheme (the message names
                the schemes this component takes), a malformed URL, a bad prefix
                or an unknown option.
        """
        target = resolve_target(
            cls.__name__, url, kinds=cls._backends, prefix=prefix, redis=redis, clock=clock
        )
        return cls._from_target(target, options)

    @classmethod
    def _from_target(cls, target: BackendTarget, options: Mapping[str, Any]) -> Self:
        """Open the backend and build the component (override to open several parts)."""
        opener = backend_opener(cls._backends, target.kind)
        others = frozenset().union(
            *(keywords(backend_opener(cls._backends, kind)) for kind in cls._backends)
        )
        own_names = keywords(cls.__init__) - {"clock"}
        mine, own = split_options(cls.__name__, options, keywords(opener), own_names, others)
        return cls(opener(target, **mine), clock=target.clock, **own)
