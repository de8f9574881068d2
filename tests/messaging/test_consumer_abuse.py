"""A hostile producer against a live consumer: whatever it sends, the consumer goes on.

Random bodies (bytes, JSON, nesting far beyond the bound), content types,
message ids, reply-to addresses and headers (every AMQP field type, nested,
under the names rtkit reads), published through raw aio-pika as any client
may, and on RabbitMQ frames no client library would write (headers nested
thousands deep, a timestamp past the year 9999, text that is not UTF-8). After
each batch a sentinel message must still be handled, every hostile message
must have ended acked or dead-lettered, and the connection must never have
dropped.
"""

from __future__ import annotations

import asyncio
import datetime
import struct
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rtkit.messaging import ConsumerHandle, Envelope, MessageConsumer, RabbitMQService, RetryPolicy

from ._helpers import MQ, Hostile, nested_table

pytestmark = pytest.mark.slow

READ_BY_RTKIT = [
    "x-retry-count",
    "x-attempts",
    "x-death",
    "x-death-reason",
    "x-rtkit-invalid-headers",
    "x-last-error",
]
FORGED_REPLY_TO = "amq.rabbitmq.reply-to.g1h2AA5yZXBseUAxMjcuMC4wLjEAAAAAAAAAAQ==.xyz"

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(width=32, allow_nan=False, allow_infinity=False),
    st.text(max_size=60),
    st.binary(max_size=60).map(bytearray),
    st.decimals(places=2, min_value=-10_000, max_value=10_000),
    st.datetimes(
        min_value=datetime.datetime(1970, 1, 2), max_value=datetime.datetime(2200, 1, 1)
    ).map(lambda d: d.replace(tzinfo=datetime.UTC, microsecond=0)),
)
header_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
header_names = st.sampled_from(READ_BY_RTKIT) | st.text(max_size=30)


def _nested_json(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


bodies = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=100).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.integers(0, 20_000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(0, 20_000).map(lambda n: b"[" * n),
    st.integers(25, 40).map(_nested_json),
    st.sampled_from([b"{}", b"null", b'"\\ud800"', b"1e999999", b"-0", b'{"a":NaN}']),
)
raw_frames = st.sampled_from(
    [
        {"headers": nested_table(3000)},
        {"headers": struct.pack(">I", 4) + b"\x02\xff\xfeV"},
        {"timestamp": struct.pack(">Q", 2**63 - 1)},
        {"message_id": b"\x02\xff\xfe"},
        {"content_type": b"\x03\xff\xfe\xfd"},
    ]
)


@st.composite
def hostile_messages(draw: st.DrawFn, *, raw: bool) -> dict[str, Any]:
    message: dict[str, Any] = {
        "body": draw(bodies),
        "content_type": draw(
            st.none()
            | st.sampled_from(["application/json", "text/plain", "APPLICATION/JSON; x=1", ""])
            | st.text(max_size=40)
        ),
        "message_id": draw(st.text(max_size=40)),
        "headers": draw(st.dictionaries(header_names, header_values, max_size=5)),
        "reply_to": draw(st.none() | st.sampled_from([FORGED_REPLY_TO, "amq.rabbitmq.reply-to.x"])),
    }
    if raw and draw(st.integers(0, 4)) == 0:
        message["raw"] = draw(raw_frames)
    return message


class Target:
    """One consumer under attack, and what it handled."""

    def __init__(self, mq: MQ) -> None:
        self.mq = mq
        self.handled: list[str] = []
        self.sent = 0
        self.service: RabbitMQService | None = None
        self.handle: ConsumerHandle | None = None
        self.hostile = Hostile(mq)

    async def start(self) -> None:
        self.service = await self.mq.service()
        self.queue = self.mq.queue("abuse")
        await self.service.declare_queue(self.queue)

        async def handle(payload: Any, envelope: Envelope) -> None:
            self.handled.append(envelope.message_id)

        self.handle = await MessageConsumer(self.service).consume(
            self.queue, handle, prefetch=4, retry=RetryPolicy.never()
        )
        await self.hostile.__aenter__()

    async def attack(self, batch: list[dict[str, Any]], sentinel: str) -> None:
        assert self.service is not None and self.handle is not None
        for message in batch:
            await self.hostile.publish(self.service, self.queue, **message)
        await self.hostile.publish(self.service, self.queue, b'"ok"', message_id=sentinel)
        self.sent += len(batch) + 1
        handle = self.handle
        deadline = time.monotonic() + 20
        while sentinel not in self.handled or handle.handled + handle.dead_lettered < self.sent:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"sent {self.sent}, handled {handle.handled}, dead-lettered "
                    f"{handle.dead_lettered}, dropped {handle.dropped}; sentinel handled: "
                    f"{sentinel in self.handled}"
                )
            await asyncio.sleep(0.01)
        assert (handle.dropped, handle.internal_errors) == (0, 0)
        assert getattr(self.service.backend, "reconnects", 0) == 0

    async def stop(self) -> None:
        await self.hostile.__aexit__()
        await self.mq.cleanup()


@pytest.mark.parametrize("kind", ["memory", pytest.param("amqp", marks=pytest.mark.rabbitmq)])
def test_a_live_consumer_survives_a_hostile_producer(
    kind: str, request: pytest.FixtureRequest
) -> None:
    url = "memory://" if kind == "memory" else request.getfixturevalue("amqp_url")
    target = Target(MQ(kind, url))
    runner = asyncio.Runner()
    counter = iter(range(1_000_000))

    @settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
    @given(batch=st.lists(hostile_messages(raw=kind == "amqp"), min_size=1, max_size=6))
    def attack(batch: list[dict[str, Any]]) -> None:
        runner.run(target.attack(batch, f"sentinel-{next(counter)}"))

    try:
        runner.run(target.start())
        attack()
        assert target.handle is not None and target.service is not None
        handle = target.handle
        dead = runner.run(_count(target.service, f"{target.queue}.dlq"))
        assert dead == handle.dead_lettered
        assert handle.handled + handle.dead_lettered == target.sent
    finally:
        runner.run(target.stop())
        runner.close()


async def _count(service: RabbitMQService, queue: str) -> int:
    n = 0
    while await service.get(queue) is not None:
        n += 1
    return n
