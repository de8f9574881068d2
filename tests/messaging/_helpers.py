"""Helpers for the messaging tests: broker handles with cleanup, polling waits."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import struct
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from rtkit.messaging import RabbitMQService, ReceivedMessage
from rtkit.messaging.brokers.base import OutgoingMessage
from rtkit.messaging.brokers.memory import MemoryBrokerBackend
from rtkit_testing import unique_name


class MQ:
    """Makes connected services on one broker and names that are deleted afterwards."""

    def __init__(self, kind: str, url: str) -> None:
        self.kind = kind
        self.test_id = unique_name("rtkit-test")
        # memory: one broker of the test's own, shared by its services (and the cleanup)
        self.url = f"memory://{self.test_id}" if url == "memory://" else url
        self.services: list[RabbitMQService] = []
        self.queues: list[str] = []
        self.exchanges: list[str] = []

    def queue(self, stem: str = "q") -> str:
        """A unique queue name, deleted (with its .dlq and delay tiers) after the test."""
        name = unique_name(f"rtkit-test-{stem}")
        self.queues.append(name)
        return name

    def exchange(self, stem: str = "x") -> str:
        """A unique exchange name, deleted after the test."""
        name = unique_name(f"rtkit-test-{stem}")
        self.exchanges.append(name)
        return name

    def also_delete(self, *, queues: tuple[str, ...] = (), exchanges: tuple[str, ...] = ()) -> None:
        """Delete these too after the test (names derived from a unique one)."""
        self.queues.extend(queues)
        self.exchanges.extend(exchanges)

    async def service(self, **options: Any) -> RabbitMQService:
        """A started service on this broker (``from_url`` options); closed after the test.

        Every service of one test shares one broker: on ``memory://NAME`` by the
        test's own name, on RabbitMQ by being RabbitMQ.
        """
        options.setdefault("close_timeout", 2.0)
        if self.kind == "amqp":
            options.setdefault("connection_name", self.test_id)
            options.setdefault("reconnect_interval", 0.2)
        service = RabbitMQService.from_url(self.url, **options)
        await service.start()
        self.services.append(service)
        return service

    async def cleanup(self) -> None:
        """Delete every queue, tier and exchange the test made; close the services."""
        tiers = {t for s in self.services for t in s.delay_queues}
        for service in self.services:
            with contextlib.suppress(Exception):
                await service.close()
        async with RabbitMQService.from_url(self.url) as admin:
            for name in [*self.queues, *(f"{q}.dlq" for q in self.queues), *sorted(tiers)]:
                with contextlib.suppress(Exception):
                    await admin.backend.delete_queue(name)
            for name in self.exchanges:
                with contextlib.suppress(Exception):
                    await admin.backend.delete_exchange(name)


async def eventually(
    check: Callable[[], bool] | Callable[[], Awaitable[bool]],
    *,
    timeout: float = 10.0,
    interval: float = 0.02,
    what: str = "condition",
) -> None:
    """Poll ``check`` until it is true, failing after a generous ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(interval)


async def drain(
    service: RabbitMQService, queue: str, *, expect: int, timeout: float = 10.0
) -> list[ReceivedMessage]:
    """Take ``expect`` messages from ``queue`` with basic.get, waiting for them."""
    got: list[ReceivedMessage] = []

    async def more() -> bool:
        while len(got) < expect:
            message = await service.get(queue)
            if message is None:
                return False
            got.append(message)
        return True

    await eventually(more, timeout=timeout, what=f"{expect} messages in {queue}")
    return got


def _rabbitmqctl(*args: str) -> str:
    result = subprocess.run(
        ["rabbitmqctl", *args, "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout


async def close_my_connections(test_id: str) -> int:
    """Close (server side) only the RabbitMQ connections whose name contains ``test_id``."""
    listing = await asyncio.to_thread(
        _rabbitmqctl, "list_connections", "--no-table-headers", "pid", "client_properties"
    )
    pids = [
        line.split("\t", 1)[0]
        for line in listing.splitlines()
        if f'{{"connection_name","{test_id}' in line
    ]
    for pid in pids:
        await asyncio.to_thread(_rabbitmqctl, "close_connection", pid, "rtkit fault test")
    return len(pids)


class TcpProxy:
    """A TCP proxy to RabbitMQ that a test can freeze (the broker stops answering)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.thawed = asyncio.Event()
        self.thawed.set()
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        """Listen on a free local port and return it."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        self._writers += [writer, up_writer]

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    await self.thawed.wait()
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    def freeze(self) -> None:
        """Stop forwarding bytes: the broker seems to hang."""
        self.thawed.clear()

    async def close(self) -> None:
        """Drop every connection and stop listening."""
        self.thawed.set()
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            self._server.close()


class Hostile:
    """A producer that sends what rtkit's own never would, as a foreign client could.

    On RabbitMQ it publishes through a connection of its own with raw aio-pika
    (pamqp encodes the headers) and can replace encoded properties by raw bytes
    (``raw={"headers": b"..."}``), as a client in another language may send
    them; on the memory broker it hands the message to the broker itself,
    past the client-side checks of ``MemoryBrokerBackend.publish``.
    """

    def __init__(self, mq: MQ) -> None:
        self.mq = mq
        self._connection: Any = None
        self._channel: Any = None

    async def __aenter__(self) -> Hostile:
        if self.mq.kind == "amqp":
            import aio_pika

            self._connection = await aio_pika.connect(
                self.mq.url, client_properties={"connection_name": f"{self.mq.test_id}-hostile"}
            )
            channel = await self._connection.channel(publisher_confirms=True)
            self._channel = await channel.get_underlay_channel()
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()

    async def publish(
        self,
        service: RabbitMQService,
        routing_key: str,
        body: bytes,
        *,
        exchange: str = "",
        headers: dict[str, Any] | None = None,
        content_type: str | None = "application/json",
        message_id: str = "hostile",
        reply_to: str | None = None,
        raw: dict[str, bytes] | None = None,
    ) -> None:
        """Publish ``body`` with these properties (``raw``: RabbitMQ only)."""
        if self.mq.kind == "memory":
            assert isinstance(service.backend, MemoryBrokerBackend) and not raw
            message = OutgoingMessage(
                body=body,
                message_id=message_id,
                timestamp=0,
                headers=dict(headers or {}),
                content_type=content_type,
                reply_to=reply_to,
            )
            service.backend.broker.publish(exchange, routing_key, message, mandatory=False)
            return
        props = _raw_properties_class()(
            content_type=content_type,
            headers=headers or None,
            message_id=message_id,
            reply_to=reply_to,
            delivery_mode=2,
        )
        raw = dict(raw or {})
        props.__dict__["raw"] = raw
        for name in raw:  # a stand-in value, so that the property is sent at all
            if getattr(props, name) is None:
                setattr(props, name, _STAND_INS[name])
        await self._channel.basic_publish(
            body, exchange=exchange, routing_key=routing_key, properties=props
        )


_STAND_INS: dict[str, Any] = {
    "headers": {"x": 1},
    "content_type": "x",
    "message_id": "x",
    "timestamp": datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC),
}


@functools.cache
def _raw_properties_class() -> Any:
    from pamqp.commands import Basic

    class RawProperties(Basic.Properties):
        def encode_property(self, name: str, value: Any) -> bytes:
            raw: dict[str, bytes] = self.__dict__.get("raw", {})
            if name in raw:
                return raw[name]
            encoded: bytes = super().encode_property(name, value)
            return encoded

    return RawProperties


def nested_table(depth: int) -> bytes:
    """An AMQP header table nested ``depth`` deep (``{"a": {"a": ...}}``), as raw bytes."""
    inner = struct.pack(">I", 0)
    for _ in range(depth):
        entry = b"\x01aF" + inner
        inner = struct.pack(">I", len(entry)) + entry
    return inner


async def aiter_queue(service: RabbitMQService, queue: str) -> AsyncIterator[ReceivedMessage]:
    """Every message ready in ``queue`` now (basic.get until empty)."""
    while (message := await service.get(queue)) is not None:
        yield message
