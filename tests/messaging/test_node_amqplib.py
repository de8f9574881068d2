"""rtkit next to the seed chapter's own Node services, on amqplib and the real broker.

``tests/node/seed_rabbitmq.mjs`` runs the chapter's ``RabbitMQService``,
``MessageProducer`` and ``MessageConsumer`` classes, read from the chapter at
test time, on amqplib (pinned in ``tests/node/package.json``). Node publishes
and rtkit consumes (the retry count goes on, dead letters land where the Node
code expects them), rtkit publishes and Node consumes, and each side declares
the queues the other made.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from rtkit.errors import ConfigurationError
from rtkit.messaging import Envelope, MessageConsumer, MessageProducer, RetryPolicy
from rtkit_testing import require

from ._helpers import MQ, eventually

pytestmark = [pytest.mark.node, pytest.mark.rabbitmq, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
NODE_DIR = ROOT / "tests" / "node"
# The seed chapter sits in shared/ beside the repository (CI lays it there too), as for
# tests/realtime/test_node_interop.py; RTKIT_SEED_CHAPTER overrides the path.
SEED_CHAPTER = Path(
    os.environ.get("RTKIT_SEED_CHAPTER", ROOT.parent / "shared" / "seed" / "realtime-chapter.md")
)
FAST = RetryPolicy(max_attempts=3, initial_delay=0.05, multiplier=1.0, max_delay=0.05)


def _node() -> str:
    if not SEED_CHAPTER.is_file():  # a document beside the repository: skip, even in CI
        pytest.skip(f"!!! the seed chapter is not at {SEED_CHAPTER} (set RTKIT_SEED_CHAPTER) !!!")
    node = shutil.which("node")
    if node is None:
        require("node is not installed")
    elif not (NODE_DIR / "node_modules" / "amqplib").is_dir():
        require("amqplib is not installed (run make testdeps)")
    assert node is not None
    return node


def _node_url(amqp_url: str) -> str:
    """The URL for amqplib, which reads a path of ``/`` as the vhost ``""``."""
    parts = urlsplit(amqp_url)
    path = "" if parts.path in ("", "/") else parts.path
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


async def _seed(amqp_url: str, *steps: dict[str, Any]) -> list[Any]:
    """Run ``steps`` with the chapter's Node classes; the outcome of each step."""
    proc = await asyncio.create_subprocess_exec(
        _node(),
        str(NODE_DIR / "seed_rabbitmq.mjs"),
        str(SEED_CHAPTER),
        json.dumps({"url": _node_url(amqp_url), "steps": list(steps)}),
        cwd=NODE_DIR,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode(errors="replace")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    assert "error" not in result, (result.get("error"), result["logged"])
    outcomes: list[Any] = result["steps"]
    failed = [o for o in outcomes if isinstance(o, dict) and "error" in o]
    assert not failed, (failed, result["logged"])
    assert not [line for line in result["logged"] if "channel error" in line], result["logged"]
    return outcomes


def _node_topology(mq: MQ, queue: str) -> None:
    mq.also_delete(queues=(f"{queue}_dlq",), exchanges=(f"{queue}_dlx",))


async def test_node_publishes_and_rtkit_consumes_into_the_nodes_dead_letter_queue(
    amqp_url: str, rabbit: MQ
) -> None:
    queue = rabbit.queue("orders")
    _node_topology(rabbit, queue)
    await _seed(
        amqp_url,
        {"do": "consumeWithDLX", "queue": queue},
        {"do": "send", "queue": queue, "message": {"orderId": 2, "fail": True}},
        {"do": "failOnce", "queue": queue},  # the chapter's handleRetry: x-retry-count 1
        {"do": "send", "queue": queue, "message": {"orderId": 1, "fail": False}},
    )

    service = await rabbit.service()
    with pytest.raises(ConfigurationError, match=f"dead_letter_exchange='{queue}_dlx'"):
        await service.declare_queue(queue)
    await service.declare_queue(
        queue, dead_letter=f"{queue}_dlq", dead_letter_exchange=f"{queue}_dlx"
    )
    attempts: dict[int, list[int]] = {1: [], 2: []}

    async def handle(order: dict[str, Any], envelope: Envelope) -> None:
        attempts[order["orderId"]].append(envelope.attempt)
        if order["fail"]:
            raise RuntimeError("planned failure")

    handle_ = await MessageConsumer(service).consume(queue, handle, retry=FAST)
    await eventually(lambda: handle_.handled == 1 and handle_.dead_lettered == 1)
    assert attempts == {1: [1], 2: [2, 3]}  # Node's first attempt counts

    [dead] = (await _seed(amqp_url, {"do": "receive", "queue": f"{queue}_dlq", "count": 1}))[0]
    assert dead["content"] == {"orderId": 2, "fail": True}
    assert dead["persistent"] is True and len(dead["messageId"]) == 36
    headers = dead["headers"]
    assert headers["x-death-reason"] == "handler_failed"
    assert (headers["x-retry-count"], headers["x-attempts"]) == (2, 3)
    assert headers["x-exception-message"] == "planned failure"
    assert headers["x-original-queue"] == queue


async def test_rtkit_publishes_and_the_nodes_consumer_takes_it(amqp_url: str, rabbit: MQ) -> None:
    queue = rabbit.queue("email")
    await _seed(amqp_url, {"do": "createQueue", "queue": queue, "options": {"durable": True}})

    service = await rabbit.service()
    with pytest.raises(ConfigurationError, match="x-dead-letter-exchange"):
        await service.declare_queue(queue)
    await service.declare_queue(queue, declare=False, dead_letter=False)  # adopt it
    producer = MessageProducer(service)
    done = asyncio.Event()

    async def fail_once(payload: Any, envelope: Envelope) -> None:
        done.set()
        raise RuntimeError("rtkit failed first")

    first = await MessageConsumer(service).consume(queue, fail_once, retry=FAST)
    retried_id = await producer.send(queue, {"to": "a@example.com", "n": 1})
    await asyncio.wait_for(done.wait(), 10)
    await first.stop()  # the retry waits in its tier, then goes back to the queue
    plain_id = await producer.send(
        queue, {"to": "b@example.com", "n": 2}, headers={"ratio": 0.1, "tenant": "eu", "big": 2**40}
    )

    [got] = await _seed(amqp_url, {"do": "receive", "queue": queue, "count": 2})
    by_id = {m["messageId"]: m for m in got}
    assert set(by_id) == {retried_id, plain_id}
    assert by_id[retried_id]["content"] == {"to": "a@example.com", "n": 1}
    assert by_id[retried_id]["headers"]["x-retry-count"] == 1  # continued by Node's handleRetry
    plain = by_id[plain_id]
    assert plain["headers"] == {"ratio": 0.1, "tenant": "eu", "big": 2**40}  # 64-bit floats
    assert plain["persistent"] is True


async def test_each_side_declares_the_queues_the_other_made(amqp_url: str, rabbit: MQ) -> None:
    by_rtkit_dlx, by_rtkit_plain = rabbit.queue("r-dlx"), rabbit.queue("r-plain")
    by_node_dlx, by_node_plain = rabbit.queue("n-dlx"), rabbit.queue("n-plain")
    for queue in (by_rtkit_dlx, by_node_dlx):
        _node_topology(rabbit, queue)
    service = await rabbit.service()
    await service.declare_queue(
        by_rtkit_dlx, dead_letter=f"{by_rtkit_dlx}_dlq", dead_letter_exchange=f"{by_rtkit_dlx}_dlx"
    )
    await service.declare_queue(by_rtkit_plain, dead_letter=False)

    await _seed(
        amqp_url,
        {"do": "consumeWithDLX", "queue": by_rtkit_dlx},
        {"do": "createQueue", "queue": by_rtkit_plain, "options": {"durable": True}},
        {"do": "consumeWithDLX", "queue": by_node_dlx},
        {"do": "createQueue", "queue": by_node_plain},
    )

    await service.declare_queue(
        by_node_dlx, dead_letter=f"{by_node_dlx}_dlq", dead_letter_exchange=f"{by_node_dlx}_dlx"
    )
    await service.declare_queue(by_node_plain, dead_letter=False)
    await service.declare_queue(
        by_node_dlx,
        declare=False,
        dead_letter=f"{by_node_dlx}_dlq",
        dead_letter_exchange=f"{by_node_dlx}_dlx",
    )
