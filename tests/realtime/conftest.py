"""Fixtures for the realtime tests: a RealtimeServer on a real socket, connected clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator
from typing import Any

import pytest
from realtime_support import Chat, FuzzRoom, make_server, serving


@pytest.fixture
async def chat(backend: Any) -> AsyncIterator[Chat]:
    """A RealtimeServer on the ``backend`` (memory and Redis), served on a real socket."""
    server = make_server(backend.url, backend.prefix)
    async with serving(server) as url:
        running = Chat(url, server)
        try:
            yield running
        finally:
            await running.close()


@pytest.fixture
async def memory_chat() -> AsyncIterator[Chat]:
    """A RealtimeServer on memory backends only."""
    server = make_server("memory://", "rtkit:")
    async with serving(server) as url:
        running = Chat(url, server)
        try:
            yield running
        finally:
            await running.close()


@pytest.fixture
async def fuzz_room(memory_chat: Chat) -> FuzzRoom:
    """An attacker and an observer, both in room ``lobby``."""
    room = FuzzRoom(
        await memory_chat.connect("attacker"),
        await memory_chat.connect("observer"),
        memory_chat.server,
    )
    await room.attacker.client.join_room("lobby")
    await room.observer.client.join_room("lobby")
    return room


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the test (``item.rep_call``): the browser tests
    take screenshots in their teardown when the test failed."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
