"""Replies to requests, on a RabbitMQ connection of their own.

A request names where its reply goes (``reply_to``), and a producer may name
anything: RabbitMQ 3.x closes the connection that publishes to a forged direct
reply-to address (``amq.rabbitmq.reply-to.<not a pid>.x``) with
``INTERNAL_ERROR``. On the consumers' connection that would stall every
consumer, and the request, redelivered, would do it again, forever. So replies
go out on a connection of their own, opened when first needed and again after
it was closed; a reply is sent once, never again after a reconnect (the
requester times out).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from ...errors import BackendUnavailable
from ._amqp_codec import properties
from .base import OutgoingMessage

__all__ = ["Replier"]


class Replier:
    """Sends replies on a connection of its own (see the module docs)."""

    def __init__(self, url: str, connection_name: str, timeout: float) -> None:
        self.url = url
        self.connection_name = connection_name
        self.timeout = timeout
        self.connections = 0  # how many times a connection was opened
        self._connection: Any = None
        self._channel: Any = None
        self._lock = asyncio.Lock()

    async def _open(self) -> Any:
        import aiormq

        async with self._lock:
            connection = self._connection
            if connection is None or connection.is_closed or self._channel.is_closed:
                if connection is not None:
                    with contextlib.suppress(Exception):
                        await connection.close()
                connection = await aiormq.connect(
                    self.url, client_properties={"connection_name": self.connection_name}
                )
                self._connection = connection
                self._channel = await connection.channel(publisher_confirms=False)
                self.connections += 1
            return self._channel

    async def reply(self, routing_key: str, message: OutgoingMessage) -> None:
        """Publish ``message`` to ``routing_key`` through the default exchange, once."""
        try:
            async with asyncio.timeout(self.timeout):
                channel = await self._open()
                await channel.basic_publish(
                    message.body,
                    exchange="",
                    routing_key=routing_key,
                    properties=properties(message, channel.connection.connection_tune.frame_max),
                )
        except Exception as exc:
            if isinstance(exc, ValueError):  # PayloadTooLarge: a bad reply, not the broker
                raise
            raise BackendUnavailable(f"the reply to {routing_key!r} was not sent: {exc!r}") from exc

    async def close(self) -> None:
        """Close the connection, if one is open."""
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), self.timeout)
