"""``rtkit serve --metrics --log-format json``: scrape ``/metrics`` over HTTP before and after a
chat exchange and see the counters move; every log line is one JSON object."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from rtkit.errors import NotMember
from rtkit.realtime import ChatClient, issue_token
from rtkit_testing import free_port

SECRET = "metrics-test-secret-" + "m" * 32


@asynccontextmanager
async def rtkit_serve(log: Path, *args: str) -> AsyncIterator[str]:
    """``rtkit serve ARGS`` in a child process, its output in ``log``; yields its URL."""
    port = free_port()
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "rtkit.cli", "serve", "--port", str(port), *args),
            env={**os.environ, "RTKIT_SECRET": SECRET},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=2) as http:
            async with asyncio.timeout(60):
                while True:
                    assert proc.returncode is None, "rtkit serve exited early"
                    try:
                        if (await http.get("/health")).status_code == 200:
                            break
                    except httpx.TransportError:
                        await asyncio.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)


async def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``GET /metrics``: (name, sorted labels) -> value."""
    async with httpx.AsyncClient() as http:
        answer = await http.get(f"{url}/metrics")
    assert answer.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.mark.slow
async def test_the_counters_move_with_a_chat_exchange(tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    async with rtkit_serve(log, "--metrics", "--log-format", "json") as url:
        before = await scrape(url)
        async with ChatClient() as ada, ChatClient() as bob:
            await ada.connect(url, issue_token(SECRET, "ada"))
            await bob.connect(url, issue_token(SECRET, "bob"))
            await ada.join_room("lobby")
            await bob.join_room("lobby")
            await ada.send_message("lobby", "hello")
            with pytest.raises(NotMember):
                await bob.send_message("elsewhere", "psst")
            during = await scrape(url)
        await asyncio.sleep(0.3)  # the disconnects reach the server
        after = await scrape(url)

    events = "rtkit_socketio_events_total"
    assert value(during, events, event="chat:message", outcome="ok") == 1
    assert value(before, events, event="chat:message", outcome="ok") == 0
    assert value(during, events, event="chat:message", outcome="not_member") == 1
    assert value(during, events, event="room:join", outcome="ok") == 2
    assert value(during, "rtkit_socketio_event_duration_seconds_count", event="room:join") == 2
    for gauge in ("rtkit_socketio_connections", "rtkit_presence_connections"):
        assert (value(before, gauge), value(during, gauge), value(after, gauge)) == (0, 2, 0)
    assert value(during, "rtkit_presence_users") == 2
    decisions = "rtkit_ratelimit_decisions_total"
    assert (
        value(during, decisions, outcome="allowed")
        >= value(before, decisions, outcome="allowed") + 6
    )
    requests = "rtkit_http_requests_total"
    health = {"app": "realtime", "route": "/health", "method": "GET", "status": "200"}
    assert value(before, requests, **health) >= 1  # the readiness probe

    # Labels are bounded: no user, room or message in any of them.
    labels = {v for (_, pairs) in during for _, v in pairs}
    assert not labels & {"ada", "bob", "lobby", "elsewhere", "hello"}

    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    access = [line for line in lines if line["logger"] == "rtkit.access"]
    assert access and all(line["request_id"] and line["status"] == 200 for line in access)
    assert {line["path"] for line in access} == {"/health"}  # scrapes are not logged
    assert any(line["logger"].startswith("uvicorn") for line in lines)
