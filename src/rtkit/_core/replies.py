"""Replies handed over as they arrive: a protocol of our own on a redis-py connection.

Reading a reply through an ``asyncio.StreamReader`` costs each round trip two
coroutine frames, a buffer copy and a future; on a hot path that waits for one
small reply that is about a tenth of the client's work. :func:`take_over` swaps a
connected transport's protocol for :class:`Replies`, which feeds what arrives
straight to a hiredis reader and hands the first complete reply to the one
waiter's future. redis-py made the connection (TLS, AUTH, SELECT) and still
closes it: connection loss and flow control are passed on to its protocol, so
its ``disconnect()`` works as before. After the swap only :class:`Replies` reads
the connection (never redis-py's ``read_response``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio.connection import AbstractConnection

try:
    import hiredis
except ImportError:  # the rtkit[hiredis] extra is optional
    hiredis = None  # type: ignore[assignment]

__all__ = ["Replies", "take_over"]

_SWAPPABLE = ("write", "get_protocol", "set_protocol")


class Replies(asyncio.Protocol):
    """A RESP2 connection's replies, parsed as they arrive, for one reader at a time.

    Write with :attr:`write`; then take a reply with ``parser.gets()`` if one is
    already parsed, else await :meth:`wait` (or just ``await reply()``). Error
    replies are returned (``hiredis.ReplyError``), not raised; a lost connection
    fails the waiter with ``ConnectionError``.
    """

    def __init__(
        self,
        transport: asyncio.WriteTransport,
        inner: asyncio.BaseProtocol,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.transport = transport
        self.write = transport.write  # bound once: the hot path's write
        self.parser: Any = hiredis.Reader()
        self.lost: str | None = None
        """Why the connection is gone (``None`` while it is open)."""
        self._inner = inner
        self._loop = loop
        self._waiter: asyncio.Future[Any] | None = None

    def wait(self) -> asyncio.Future[Any]:
        """A future for the next reply (nothing parsed is pending: check ``parser.gets()``).

        Raises:
            ConnectionError: The connection is lost.
        """
        if self.lost is not None:
            raise ConnectionError(self.lost)
        self._waiter = waiter = self._loop.create_future()
        return waiter

    async def reply(self) -> Any:
        """The next reply."""
        reply = self.parser.gets()
        if reply is False:
            reply = await self.wait()
        return reply

    def data_received(self, data: bytes) -> None:
        parser = self.parser
        parser.feed(data)
        waiter = self._waiter
        if waiter is None:
            return  # nobody waits: the next reader finds it parsed
        try:
            reply = parser.gets()
        except Exception as exc:  # hiredis.ProtocolError: the stream cannot be read on
            self._fail(f"unreadable reply from Redis: {exc}")
            self.transport.close()
            return
        if reply is not False:
            self._waiter = None
            if not waiter.done():  # else its reader was cancelled (and drops the connection)
                waiter.set_result(reply)

    def eof_received(self) -> bool:
        self._fail("Redis closed the connection")
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(f"the connection to Redis was lost: {exc}" if exc else "connection closed")
        self._inner.connection_lost(exc)  # redis-py's protocol: its wait_closed() returns

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def _fail(self, why: str) -> None:
        if self.lost is None:
            self.lost = why
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionError(why))


def take_over(conn: AbstractConnection) -> Replies | None:
    """Read the connected ``conn`` through a :class:`Replies` from now on.

    ``None`` (nothing changed: use redis-py's layers) without hiredis, on a RESP3
    connection, or on a redis-py that keeps its streams elsewhere.
    """
    writer = getattr(conn, "_writer", None)
    if (
        hiredis is None
        or str(getattr(conn, "protocol", 2) or 2) != "2"
        or not isinstance(writer, asyncio.StreamWriter)
    ):
        return None
    # asyncio's transports or uvloop's (uvicorn's loop when installed), which are not
    # asyncio.Transport subclasses: what matters is that the protocol can be swapped
    transport: Any = writer.transport
    if not all(callable(getattr(transport, m, None)) for m in _SWAPPABLE):
        return None
    replies = Replies(transport, transport.get_protocol(), asyncio.get_running_loop())
    transport.set_protocol(replies)
    return replies
