"""``from_url`` for a component made of other components, all opened on one URL.

[`MicroService`][rtkit.microservice.MicroService] opens its registry and
[`ApiGateway`][rtkit.gateway.ApiGateway] its registry, limiter and cache on the
URL it was given; each ``from_url`` option goes to every part that takes it (and
to the component's own constructor when that names it), like the options of
``Component.from_url`` go to the backend and the constructor.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from .._core.component import split_options
from .._core.urls import BackendTarget, backend_opener, keywords

__all__ = ["constructor_options", "open_part", "part_options", "split_parts"]


def constructor_options(function: Callable[..., Any]) -> frozenset[str]:
    """The arguments ``function`` takes by keyword (``self`` and ``clock`` aside)."""
    kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    params = inspect.signature(function).parameters.values()
    return frozenset(p.name for p in params if p.kind in kinds) - {"self", "clock"}


def part_options(part: type[Any], kind: str) -> frozenset[str]:
    """The options ``part.from_url`` takes for a backend of ``kind``."""
    backends: Mapping[str, str] = getattr(part, "_backends", {})
    opener = keywords(backend_opener(backends, kind)) if kind in backends else frozenset()
    return opener | (keywords(part.__init__) - {"clock"})


def split_parts(
    component: str,
    target: BackendTarget,
    options: Mapping[str, Any],
    own: frozenset[str],
    parts: Mapping[str, type[Any]],
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Split ``options`` between the component's constructor and each of its ``parts``.

    Raises:
        rtkit.errors.ConfigurationError: An option that nobody takes.
    """
    taken = {name: part_options(part, target.kind) for name, part in parts.items()}
    everything = frozenset().union(*taken.values())
    rest, mine = split_options(component, options, everything, own)
    return mine, {
        name: {k: v for k, v in rest.items() if k in keys} for name, keys in taken.items()
    }


def open_part(part: type[Any], target: BackendTarget, options: Mapping[str, Any]) -> Any:
    """``part.from_url`` on the component's URL, prefix, Redis client and clock."""
    return part.from_url(
        target.url, prefix=target.prefix, redis=target.redis, clock=target.clock, **options
    )
