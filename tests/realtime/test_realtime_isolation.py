"""Deployments on different databases of one Redis, with one prefix, never hear each other.

Redis pub/sub ignores the database number: the Socket.IO channel (and the event
bus's) must name it, or ``/12`` and ``/13`` exchange chat messages, typing and
presence. Issue 10, item 9.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from realtime_support import Chat, eventually, make_server, serving

from rtkit import EventBus

pytestmark = pytest.mark.redis

DATABASES = (12, 13)


def on_database(url: str, database: int) -> str:
    """``url`` pointing at ``database`` instead of its own."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


@pytest.fixture
def prefix_on_both(redis_url: str, redis_prefix: str) -> Iterator[str]:
    """``redis_prefix``, its keys deleted from both databases afterwards."""
    yield redis_prefix
    for database in DATABASES:
        client = redis.Redis.from_url(on_database(redis_url, database))
        try:
            keys = list(client.scan_iter(match=redis_prefix + "*", count=1000))
            if keys:
                client.delete(*keys)
        finally:
            client.close()


@dataclass
class TwoDeployments:
    twelve: Chat
    thirteen: Chat


@pytest.fixture
async def deployments(redis_url: str, prefix_on_both: str) -> AsyncIterator[TwoDeployments]:
    """One server on ``/12`` and one on ``/13`` of the same Redis, with the same prefix."""
    async with AsyncExitStack() as stack:
        chats = []
        for database in DATABASES:
            server = make_server(on_database(redis_url, database), prefix_on_both)
            url = await stack.enter_async_context(serving(server))
            chats.append(Chat(url, server))
            stack.push_async_callback(chats[-1].close)
        yield TwoDeployments(*chats)


def test_the_channel_names_the_database(deployments: TwoDeployments) -> None:
    channels = [
        chat.server.sio.manager.channel for chat in (deployments.twelve, deployments.thirteen)
    ]
    assert channels[0] != channels[1]
    assert channels[0].endswith("db12") and channels[1].endswith("db13")


async def test_chat_typing_and_presence_stay_in_their_database(
    deployments: TwoDeployments,
) -> None:
    ada = await deployments.twelve.connect("ada", "Ada")
    bob = await deployments.thirteen.connect("bob", "Bob")
    await ada.client.join_room("lobby")
    await bob.client.join_room("lobby")

    carol = await deployments.twelve.connect("carol", "Carol")  # user:joined on /12
    await ada.seen.wait_for("user:joined", lambda u: u.user_id == "carol")
    await ada.client.start_typing("lobby")
    await ada.client.send_message("lobby", "only for /12")
    await carol.client.join_room("lobby")
    await ada.seen.wait_for("chat:message", lambda m: m.message == "only for /12")

    # A sentinel on /13, after everything above was published: had /12's emits reached
    # /13's channel, they would have arrived before it.
    dave = await deployments.thirteen.connect("dave", "Dave")
    await dave.client.join_room("lobby")
    await dave.client.start_typing("lobby")
    await dave.client.send_message("lobby", "only for /13")
    await bob.seen.wait_for("chat:message", lambda m: m.message == "only for /13")
    await bob.seen.wait_for("typing:start", lambda t: t.user_id == "dave")

    assert [m.message for m in bob.seen.of("chat:message")] == ["only for /13"]
    assert [t.user_id for t in bob.seen.of("typing:start")] == ["dave"]
    assert [u.user_id for u in bob.seen.of("user:joined")] == ["dave"]
    assert [r.user_id for r in bob.seen.of("room:user:joined")] == ["dave"]

    # And the other way round: a sentinel on /12 after /13's emits.
    await carol.client.send_message("lobby", "back on /12")
    await ada.seen.wait_for("chat:message", lambda m: m.message == "back on /12")
    assert [m.message for m in ada.seen.of("chat:message")] == ["only for /12", "back on /12"]
    assert [t.user_id for t in ada.seen.of("typing:start")] == []  # (its own are not echoed)
    assert [u.user_id for u in ada.seen.of("user:joined")] == ["carol"]


async def test_the_event_bus_stays_in_its_database(redis_url: str, prefix_on_both: str) -> None:
    twelve = EventBus.from_url(on_database(redis_url, 12), prefix=prefix_on_both)
    also_twelve = EventBus.from_url(on_database(redis_url, 12), prefix=prefix_on_both)
    thirteen = EventBus.from_url(on_database(redis_url, 13), prefix=prefix_on_both)
    heard: dict[str, list[str]] = {"12": [], "also12": [], "13": []}
    async with twelve, also_twelve, thirteen:
        twelve.subscribe("#", lambda e: heard["12"].append(e.name))
        also_twelve.subscribe("#", lambda e: heard["also12"].append(e.name))
        thirteen.subscribe("#", lambda e: heard["13"].append(e.name))
        await twelve.publish("chat.message")
        await thirteen.publish("sentinel")  # published after: arrives after, were it shared

        async def all_heard() -> bool:
            return heard["also12"] == ["chat.message"] and heard["13"] == ["sentinel"]

        await eventually(all_heard)
    assert heard["13"] == ["sentinel"]
    assert heard["12"] == ["chat.message"]
