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

import inspect
from collections.abc import Mapping
from typing import Any, ClassVar, Self, TypeVar

from ..errors import ConfigurationError
from .clock import Clock
from .lifecycle import AsyncResource
from .urls import BackendTarget, backend_opener, keywords, resolve_target

__all__ = [
    "Component",
    "constructor_options",
    "open_part",
    "split_among_parts",
    "split_options",
]

C = TypeVar("C", bound="Component")


def constructor_options(cls: type[Any]) -> frozenset[str]:
    """What a component's constructor takes by keyword (``backend`` and ``clock`` aside)."""
    kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    params = inspect.signature(cls.__init__).parameters.values()
    return frozenset(p.name for p in params if p.kind in kinds) - {"self", "backend", "clock"}


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
        mine, own = split_options(
            cls.__name__, options, keywords(opener), constructor_options(cls), cls.option_names()
        )
        return cls(opener(target, **mine), clock=target.clock, **own)

    @classmethod
    def option_names(cls) -> frozenset[str]:
        """Every option ``from_url`` takes: the constructor's and those of every backend.

        An option only another backend takes is ignored, so one ``from_url`` call
        works for every URL.
        """
        names = constructor_options(cls)
        for kind in cls._backends:
            names |= keywords(backend_opener(cls._backends, kind))
        return names


def split_among_parts(
    component: str,
    options: Mapping[str, Any],
    own: frozenset[str],
    parts: Mapping[str, type[Component]],
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Split ``from_url`` options of a component made of parts (a gateway: registry, limiter).

    Each option goes to the component's constructor when ``own`` names it, and
    to every part whose ``from_url`` takes it.

    Raises:
        rtkit.errors.ConfigurationError: An option nobody takes.
    """
    taken = {name: part.option_names() for name, part in parts.items()}
    everything = frozenset().union(*taken.values())
    for_parts, mine = split_options(component, options, everything, own)
    return mine, {
        name: {k: v for k, v in for_parts.items() if k in names} for name, names in taken.items()
    }


def open_part(part: type[C], target: BackendTarget, options: Mapping[str, Any]) -> C:
    """``part.from_url`` on a component's URL, prefix, Redis client and clock."""
    return part.from_url(
        target.url, prefix=target.prefix, redis=target.redis, clock=target.clock, **options
    )
