"""rtkit's short publish path on aiormq (``brokers/_amqp_publish.py``).

The frames are pamqp's, byte for byte, and ``None`` exactly where pamqp refuses;
on RabbitMQ, publishes batched in one write are confirmed one by one (a returned
one among them too), a body larger than a frame arrives whole, and a publish that
meets aiormq's own holding the channel's lock waits its turn through
``basic_publish``. The aiormq parts it relies on are checked by name.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiormq.abc import ChannelFrame
from hypothesis import given
from hypothesis import strategies as st
from pamqp import commands as spec
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from rtkit.errors import NotFound, PayloadTooLarge
from rtkit.messaging import MessageProducer
from rtkit.messaging.brokers._amqp_codec import header_table, properties
from rtkit.messaging.brokers._amqp_publish import encode_publish
from rtkit.messaging.brokers.base import OutgoingMessage

from ._helpers import MQ, drain

texts = st.one_of(st.none(), st.just(""), st.text(max_size=90), st.text(min_size=250, max_size=270))


def _pamqps(
    channel: int, exchange: str, key: str, mandatory: bool, message: OutgoingMessage, frame_max: int
) -> bytes | None:
    """The frames as aiormq's ``basic_publish`` makes them (None: pamqp refuses)."""
    body, most = message.body, frame_max - 8
    bodies = [body[i : i + most] for i in range(0, len(body), most)]
    try:
        frames = [
            spec.Basic.Publish(exchange=exchange, routing_key=key, mandatory=mandatory),
            ContentHeader(properties=properties(message, frame_max), body_size=len(body)),
            *(ContentBody(b) for b in bodies),
        ]
        return ChannelFrame.marshall(channel_number=channel, frames=frames).payload
    except Exception:  # whatever pamqp raises: ValueError, struct.error, ...
        return None


@given(
    channel=st.integers(1, 2047),
    exchange=st.one_of(st.just(""), st.from_regex(r"[a-z.:/]{1,140}", fullmatch=True), st.text()),
    key=st.text(max_size=300),
    mandatory=st.booleans(),
    body=st.one_of(st.binary(max_size=64), st.integers(0, 3000).map(lambda n: b"x" * n)),
    message_id=texts,
    content_type=texts,
    correlation_id=texts,
    reply_to=texts,
    timestamp=st.one_of(st.integers(0, 2**34), st.integers(-(2**40), 2**64)),
    headers=st.dictionaries(st.text(max_size=8), st.one_of(st.integers(-5, 5), st.text())),
    persistent=st.booleans(),
    frame_max=st.sampled_from([4096 + 8, 131_072]),
)
def test_the_frames_are_pamqps_byte_for_byte(
    channel: int,
    exchange: str,
    key: str,
    mandatory: bool,
    body: bytes,
    message_id: str | None,
    content_type: str | None,
    correlation_id: str | None,
    reply_to: str | None,
    timestamp: int,
    headers: dict[str, Any],
    persistent: bool,
    frame_max: int,
) -> None:
    message = OutgoingMessage(
        body,
        message_id or "",
        timestamp,
        headers,
        content_type,
        persistent,
        correlation_id,
        reply_to,
    )
    pamqps = _pamqps(channel, exchange, key, mandatory, message, frame_max)
    try:
        headers = header_table(message, frame_max)
    except PayloadTooLarge:  # refused before either path encodes anything
        assert pamqps is None
        return
    ours = encode_publish(channel, exchange, key, mandatory, message, headers, frame_max - 8)
    assert ours == pamqps


def test_a_body_of_exactly_one_frame_and_an_empty_body_are_framed_as_pamqp_does() -> None:
    for size in (0, 4088, 4089, 8176, 8177):
        message = OutgoingMessage(b"y" * size, "id", 1_700_000_000)
        ours = encode_publish(1, "", "q", True, message, b"", 4088)
        assert ours == _pamqps(1, "", "q", True, message, 4096)


async def _underlay(service: Any) -> Any:
    return await service.backend._publisher.get_underlay_channel()


@pytest.mark.rabbitmq
async def test_the_aiormq_parts_it_relies_on_are_there(rabbit: MQ) -> None:
    channel = await _underlay(await rabbit.service())
    assert isinstance(channel._Channel__lock, asyncio.Lock)
    assert isinstance(channel.write_queue, asyncio.Queue)
    assert hasattr(channel.write_queue, "_queue")
    for name in ("delivery_tag", "confirmations", "message_id_delivery_tag", "max_content_size"):
        assert hasattr(channel, name), name
    assert channel.publisher_confirms and callable(channel.create_future)


@pytest.mark.rabbitmq
async def test_publishes_batched_in_one_write_are_confirmed_one_by_one(rabbit: MQ) -> None:
    service = await rabbit.service()
    producer = MessageProducer(service, max_in_flight=300)
    queue, missing = rabbit.queue(), rabbit.queue("missing")
    await service.declare_queue(queue)
    good = [producer.send(queue, {"i": i}) for i in range(600)]
    lost = [producer.send(missing, {"i": i}) for i in range(3)]
    results = await asyncio.gather(*good[:300], *lost, *good[300:], return_exceptions=True)
    assert [type(r) for r in results[300:303]] == [NotFound] * 3
    ids = [r for r in results if isinstance(r, str)]
    assert len(ids) == len(set(ids)) == 600
    channel = await _underlay(service)
    assert not channel.confirmations and not channel.message_id_delivery_tag
    got = await drain(service, queue, expect=600)
    assert sorted(m.payload["i"] for m in got) == list(range(600))


@pytest.mark.rabbitmq
async def test_a_body_larger_than_a_frame_arrives_whole(rabbit: MQ) -> None:
    service = await rabbit.service()
    queue = rabbit.queue()
    await service.declare_queue(queue)
    text = "".join(chr(0x41 + i % 26) for i in range(300_000))
    await MessageProducer(service).send(queue, {"text": text})
    (got,) = await drain(service, queue, expect=1)
    assert got.payload == {"text": text}


@pytest.mark.rabbitmq
async def test_a_publish_meeting_aiormqs_own_waits_its_turn(rabbit: MQ) -> None:
    service = await rabbit.service()
    queue = rabbit.queue()
    await service.declare_queue(queue)
    producer = MessageProducer(service)
    channel = await _underlay(service)
    async with channel._Channel__lock:  # as aiormq's publish holds it, a tag taken
        tag = channel.delivery_tag
        sending = asyncio.ensure_future(producer.send(queue, {"i": 1}))
        await asyncio.sleep(0.2)
        assert not sending.done() and channel.delivery_tag == tag
    await sending
    await producer.send(queue, {"i": 2})
    assert channel.delivery_tag == tag + 2
    assert [m.payload["i"] for m in await drain(service, queue, expect=2)] == [1, 2]


@pytest.mark.rabbitmq
async def test_past_the_write_queue_publishes_wait_in_aiormqs_own_path(rabbit: MQ) -> None:
    service = await rabbit.service()
    queue = rabbit.queue()
    await service.declare_queue(queue)
    channel = await _underlay(service)
    through_aiormq = 0
    basic_publish = channel.basic_publish

    async def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal through_aiormq
        through_aiormq += 1
        return await basic_publish(*args, **kwargs)

    channel.basic_publish = counted
    text = "z" * 200_000  # 16 MB in all: more than ten 1 MiB batches, the queue's bound
    producer = MessageProducer(service, max_in_flight=100)
    await producer.send_many(queue, [{"i": i, "text": text} for i in range(80)])
    assert through_aiormq > 0
    got = await drain(service, queue, expect=80)
    assert sorted(m.payload["i"] for m in got) == list(range(80))


@pytest.mark.rabbitmq
async def test_a_missing_exchange_fails_its_publish_only_not_the_batch_around_it(
    rabbit: MQ,
) -> None:
    # RabbitMQ closes the channel for the missing exchange, and every publish in flight
    # on it with it: those are published again, only the one that named it fails.
    service = await rabbit.service()
    queue = rabbit.queue()
    await service.declare_queue(queue)
    producer = MessageProducer(service, max_in_flight=500)
    good = [producer.send(queue, {"i": i}) for i in range(300)]
    bad = producer.publish(rabbit.exchange("missing"), "key", {"lost": True})
    results = await asyncio.gather(*good[:150], bad, *good[150:], return_exceptions=True)
    assert isinstance(results[150], NotFound)
    assert all(isinstance(r, str) for r in results[:150] + results[151:])
    got = await drain(service, queue, expect=300)  # at least once: some may come twice
    while (more := await service.get(queue)) is not None:
        got.append(more)
    assert {m.payload["i"] for m in got} == set(range(300))
