"""Re-declarations that conflict with what exists: one message for every broker.

RabbitMQ refuses to declare a queue or an exchange again with other settings
(``PRECONDITION_FAILED - inequivalent arg 'x-dead-letter-exchange' ...``); both
brokers turn that into a ``ConfigurationError`` that names the argument, what
exists, what was asked, and the ``declare_queue`` options that fit. Imports no
component and no backend.
"""

from __future__ import annotations

import re
from typing import Any, Final

from ...errors import ConfigurationError

__all__ = ["ABSENT", "CHECKED_QUEUE_ARGUMENTS", "inequivalent", "parse_precondition"]


class _Absent:
    def __repr__(self) -> str:
        return "none"


ABSENT: Final = _Absent()
"""An argument the queue does not have (or the declaration does not set)."""

CHECKED_QUEUE_ARGUMENTS = (
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-priority",
    "x-overflow",
    "x-queue-mode",
    "x-queue-type",
    "x-single-active-consumer",
    "x-queue-master-locator",
)
"""The queue arguments RabbitMQ compares on re-declaration, in its order (others are ignored)."""

_ADOPT = "or adopt it as it is with declare=False"

_PRECONDITION = re.compile(
    r"inequivalent arg '(?P<arg>[^']+)' for (?P<kind>queue|exchange) '(?P<name>.*)' in vhost "
    r"'.*': received (?P<asked>.+) but current is (?P<current>.+?)\s*$",
    re.DOTALL,
)
_VALUE = re.compile(r"the value '(?P<value>.*)' of type '[^']*'", re.DOTALL)


def _value(text: str) -> Any:
    """A value as RabbitMQ prints it: ``none``, ``'true'``, ``the value 'x' of type 't'``."""
    if text == "none":
        return ABSENT
    match = _VALUE.fullmatch(text)
    if match is not None:
        return match["value"]
    plain = text.strip("'")
    return {"true": True, "false": False}.get(plain, plain)


def _queue_hint(arg: str, current: Any) -> str:
    if arg == "durable":
        return f"Declare it with durable={current}, {_ADOPT}."
    if arg == "x-dead-letter-exchange":
        if current is ABSENT:
            return (
                "It has no dead-letter exchange: declare it with dead_letter=False (final "
                f"failures are then dropped), {_ADOPT} and dead_letter='<an existing queue>'."
            )
        if current == "":
            return (
                "It dead-letters through the default exchange: declare it with "
                f"dead_letter='<its x-dead-letter-routing-key>', {_ADOPT}."
            )
        return (
            f"It dead-letters through the exchange {current!r}: declare it with "
            f"dead_letter_exchange={current!r} and dead_letter='<its x-dead-letter-routing-key>', "
            f"{_ADOPT}, dead_letter_exchange={current!r} and that dead_letter."
        )
    if arg == "x-dead-letter-routing-key":
        if current is ABSENT:
            return f"It has no dead-letter routing key: {_ADOPT[3:]}."
        return f"Declare it with dead_letter={current!r}, {_ADOPT} and dead_letter={current!r}."
    return (
        f"rtkit does not set {arg}: {_ADOPT[3:]} (name its dead-letter queue with "
        "dead_letter=, or pass dead_letter=False)."
    )


def _normal(value: Any) -> Any:
    """One spelling for both brokers: text, booleans, or ``ABSENT``."""
    return value if value is ABSENT or isinstance(value, bool) else str(value)


def _show(value: Any) -> str:
    return "(not set)" if value is ABSENT else repr(value)


def inequivalent(kind: str, name: str, arg: str, current: Any, asked: Any) -> ConfigurationError:
    """The error for declaring ``kind`` ``name`` with ``arg`` ``asked`` while it is ``current``."""
    current, asked = _normal(current), _normal(asked)
    message = (
        f"{kind} {name!r} exists with {arg} = {_show(current)}; this declaration asks for "
        f"{_show(asked)}. "
    )
    if kind == "queue":
        hint = _queue_hint(arg, current)
    else:
        option = "kind" if arg == "type" else arg
        hint = f"Declare it with {option}={current!r}, {_ADOPT}."
    return ConfigurationError(message + hint)


def parse_precondition(text: str) -> ConfigurationError | None:
    """RabbitMQ's ``PRECONDITION_FAILED - inequivalent arg ...`` as :func:`inequivalent`."""
    match = _PRECONDITION.search(text)
    if match is None:
        return None
    return inequivalent(
        match["kind"], match["name"], match["arg"], _value(match["current"]), _value(match["asked"])
    )
