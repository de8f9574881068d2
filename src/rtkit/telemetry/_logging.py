"""Logs as one JSON object per line, with the request or connection and the trace they belong to.

The HTTP middleware sets :data:`REQUEST_ID` for the duration of a request, the
Socket.IO server sets :data:`CONNECTION_ID` while it handles a connection's
event; :class:`JsonFormatter` writes both, and the current trace and span ids
when a span is recording.
"""

from __future__ import annotations

import contextvars
import datetime
import json
import logging
import sys
from typing import Any

__all__ = ["CONNECTION_ID", "REQUEST_ID", "JsonFormatter", "trace_ids"]

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "rtkit_request_id", default=None
)
"""The id of the HTTP request being handled (``X-Request-ID``, or a new one)."""

CONNECTION_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "rtkit_connection_id", default=None
)
"""The Socket.IO session id of the connection whose event is being handled."""

# What every LogRecord has: anything else on a record came through ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}


def trace_ids() -> tuple[str, str] | None:
    """The current trace and span ids (hex), when OpenTelemetry is loaded and a span is on."""
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:  # never imported: no span can be current
        return None
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``time``, ``level``, ``logger``, ``message``, the ids.

    ``request_id`` and ``connection_id`` when set, ``trace_id`` and ``span_id``
    inside a span, the fields given with ``extra=`` (the access log's ``method``,
    ``path``, ``status``, ``duration_ms`` ...), and ``exception`` with the traceback.
    """

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        line: dict[str, Any] = {
            "time": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, var in (("request_id", REQUEST_ID), ("connection_id", CONNECTION_ID)):
            value = var.get()
            if value is not None:
                line[name] = value
        ids = trace_ids()
        if ids is not None:
            line["trace_id"], line["span_id"] = ids
        for name, value in vars(record).items():
            if name not in _STANDARD and name not in line:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)
