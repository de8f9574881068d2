"""JSON logs: one object per line, with the request or connection id and the trace ids."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from telemetry_support import serving

from rtkit import telemetry
from rtkit.gateway import ApiGateway
from rtkit.realtime import ChatClient, RealtimeServer, issue_token

SECRET = "logging-test-secret-" + "x" * 32


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """The root logger writes JSON lines here during the test (its handlers come back after)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    telemetry.configure_logging("json", stream=stream)
    try:
        yield stream
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        telemetry.reset()


def lines_of(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


async def test_a_line_logged_in_an_event_names_the_connection_and_the_trace(
    spans: InMemorySpanExporter, json_lines: io.StringIO
) -> None:
    app_log = logging.getLogger("app")

    async def authorize(who: Any, room_id: str) -> bool:
        app_log.info("%s joins %s", who.user_id, room_id, extra={"room": room_id})
        return True

    server = RealtimeServer(secret=SECRET, authorize_join=authorize)
    async with serving(server) as url, ChatClient() as client:
        await client.connect(url, issue_token(SECRET, "ada"))
        await client.join_room("lobby")
        sid = client.sid
    line = next(line for line in lines_of(json_lines) if line["logger"] == "app")
    span = next(s for s in spans.get_finished_spans() if s.kind.name == "SERVER")
    assert line["message"] == "ada joins lobby" and line["room"] == "lobby"
    assert line["connection_id"] == sid and line["level"] == "INFO"
    assert line["trace_id"] == f"{span.context.trace_id:032x}"
    assert line["span_id"] == f"{span.context.span_id:016x}"


async def test_the_gateway_writes_an_access_line_per_request(json_lines: io.StringIO) -> None:
    async with (
        serving(ApiGateway(rate_limit=None)) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        await http.get("/health?token=secret", headers={"x-request-id": "r-1"})
        await http.get("/nowhere")
    access = [line for line in lines_of(json_lines) if line["logger"] == "rtkit.access"]
    assert [(a["method"], a["path"], a["status"], a["route"]) for a in access] == [
        ("GET", "/health", 200, "/health"),
        ("GET", "/nowhere", 404, "none"),
    ]
    assert access[0]["request_id"] == "r-1" and access[1]["request_id"]
    assert "secret" not in json.dumps(access)  # never the query
    assert "trace_id" not in access[0]  # tracing is off


def test_an_exception_is_one_line_too(json_lines: io.StringIO) -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("app").exception("failed")
    (line,) = lines_of(json_lines)
    assert line["message"] == "failed" and "ValueError: boom" in line["exception"]
