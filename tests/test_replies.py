"""``_core/replies.py``: a connection's replies handed to the one waiter as they arrive."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis

from rtkit._core.replies import Replies, take_over
from rtkit._core.wire import new_connection

hiredis = pytest.importorskip("hiredis")


class FakeTransport(asyncio.WriteTransport):
    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def close(self) -> None:
        self.closed = True


class Inner(asyncio.Protocol):
    """Stands for redis-py's protocol: records what is passed on to it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def connection_lost(self, exc: Exception | None) -> None:
        self.calls.append(("lost", exc))

    def pause_writing(self) -> None:
        self.calls.append(("pause", None))

    def resume_writing(self) -> None:
        self.calls.append(("resume", None))


def _replies() -> tuple[Replies, FakeTransport, Inner]:
    transport, inner = FakeTransport(), Inner()
    return Replies(transport, inner, asyncio.get_running_loop()), transport, inner


async def test_each_reply_goes_to_the_waiter_whatever_the_pieces() -> None:
    replies, transport, _ = _replies()
    replies.write(b"PING\r\n")
    assert transport.written == [b"PING\r\n"]
    waiter = asyncio.ensure_future(replies.reply())
    await asyncio.sleep(0)
    replies.data_received(b"*2\r\n:1\r\n$3\r\nab")
    assert not waiter.done()
    replies.data_received(b"c\r\n+OK\r\n-ERR no\r\n")  # one reply and two more, parsed later
    assert await waiter == [1, b"abc"]
    assert await replies.reply() == b"OK"
    error = await replies.reply()
    assert isinstance(error, hiredis.ReplyError)  # returned, not raised
    assert str(error) == "ERR no"


async def test_a_lost_connection_fails_the_waiter_and_every_later_wait() -> None:
    replies, _, inner = _replies()
    waiter = asyncio.ensure_future(replies.reply())
    await asyncio.sleep(0)
    assert replies.eof_received() is False  # the transport closes itself
    with pytest.raises(ConnectionError, match="closed"):
        await waiter
    replies.connection_lost(None)
    assert inner.calls == [("lost", None)]  # redis-py's protocol hears it (wait_closed)
    with pytest.raises(ConnectionError):
        replies.wait()


async def test_an_unreadable_reply_fails_the_waiter_and_closes_the_transport() -> None:
    replies, transport, _ = _replies()
    waiter = replies.wait()
    replies.data_received(b"?what\r\n")
    with pytest.raises(ConnectionError, match="unreadable"):
        await waiter
    assert transport.closed


async def test_flow_control_is_passed_on() -> None:
    replies, _, inner = _replies()
    replies.pause_writing()
    replies.resume_writing()
    assert inner.calls == [("pause", None), ("resume", None)]


@pytest.mark.redis
async def test_a_redis_py_connection_taken_over_still_disconnects(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    conn = new_connection(client)
    await conn.connect()  # type: ignore[no-untyped-call]
    replies = take_over(conn)
    assert replies is not None
    replies.write(b"*1\r\n$4\r\nPING\r\n")
    assert await asyncio.wait_for(replies.reply(), 5) == b"PONG"
    await asyncio.wait_for(conn.disconnect(), 5)  # its wait_closed() returns
    assert replies.lost is not None
    await client.aclose()


@pytest.mark.redis
def test_the_fast_paths_run_on_uvloop(redis_url: str, redis_prefix: str) -> None:
    """uvicorn runs on uvloop when it is installed (``rtkit serve`` does), and uvloop's
    transports are not ``asyncio.Transport`` subclasses: the rate limiter's, the bus's
    and the recovery store's connections must read through ``Replies`` there too."""
    import uvloop

    from rtkit import EventBus, RateLimiter
    from rtkit.realtime._recovery import RedisRecoveryStore

    async def main() -> None:
        async with RateLimiter.from_url(redis_url, prefix=redis_prefix) as limiter:
            assert (await limiter.hit("ip:203.0.113.9", "10/second")).allowed
            assert (await limiter.hit("ip:203.0.113.9", "10/second")).remaining == 8
            assert isinstance(limiter._backend._lane.wire, Replies)  # type: ignore[attr-defined]
        async with EventBus.from_url(redis_url, prefix=redis_prefix, publish_only=True) as bus:
            await bus.publish("order.created", {"n": 1})
            wire = bus._backend._lane.connection._wire  # type: ignore[attr-defined]
            assert isinstance(wire, Replies)
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        store = RedisRecoveryStore(client, prefix=redis_prefix, duration=10)
        try:
            await store.publish("/", redis_prefix + "unheard", [('{"data":["x",', "]}")])
            assert isinstance(store._lane.connection._wire, Replies)
            missed = await store.missed("/", "0-0")
            assert missed is not None and missed[0].message["data"][0] == "x"
        finally:
            await store.close()
            await client.aclose()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
