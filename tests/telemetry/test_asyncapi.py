"""AsyncAPI: the realtime protocol and a RabbitMQ topology, valid against the official
AsyncAPI 3.0 JSON Schema (``@asyncapi/specs``, pinned in ``tests/node/package.json``)."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml

from rtkit._core.asyncapi import to_yaml
from rtkit.messaging import MessageConsumer, MessageProducer, RabbitMQService
from rtkit.realtime import RealtimeServer
from rtkit.realtime._asyncapi import CLIENT_EVENTS, SERVER_EVENTS, asyncapi_document
from rtkit.realtime._client import _EVENT_MODELS
from rtkit_testing import require

NODE_DIR = Path(__file__).parents[1] / "node"
SECRET = "asyncapi-test-secret-" + "x" * 32


class Order(pydantic.BaseModel):
    order_id: int
    items: list[str]
    note: str | None = None


def _validate(tmp_path: Path, documents: dict[str, Any]) -> dict[str, list[str]]:
    """The errors of each document per the official schema (``[]``: valid)."""
    node = shutil.which("node")
    if node is None:
        require("node is not installed")
    if not (NODE_DIR / "node_modules" / "@asyncapi" / "specs").is_dir():
        require("@asyncapi/specs is not installed (run make testdeps)")
    files = []
    for name, document in documents.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(document))
        files.append(str(path))
    done = subprocess.run(
        [str(node), str(NODE_DIR / "validate_asyncapi.mjs"), *files],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    found = json.loads(done.stdout)
    return {Path(file).stem: errors for file, errors in found.items()}


async def _topology() -> dict[str, Any]:
    async with RabbitMQService() as mq:
        await mq.declare_queue("orders")
        await mq.declare_queue("audit", dead_letter=False)
        await mq.declare_exchange("shop", "topic")
        await mq.bind("orders", "shop", "order.*")
        consumer = MessageConsumer(mq)

        async def handle(order: Order) -> None:
            pass

        await consumer.consume("orders", handle, model=Order)
        await MessageProducer(mq).send("orders", {"orderId": 1, "items": []}, delay=0.2)
        return dict(mq.asyncapi(host="rabbitmq.internal:5672"))


@pytest.mark.node
async def test_the_documents_are_valid_asyncapi_3(tmp_path: Path) -> None:
    realtime = asyncapi_document()
    topology = await _topology()
    broken = copy.deepcopy(realtime)
    broken["operations"]["chatMessageReceive"]["action"] = "listen"
    found = _validate(
        tmp_path,
        {
            "realtime": realtime,
            "realtime_yaml": yaml.safe_load(to_yaml(realtime)),
            "topology": topology,
            "broken": broken,
        },
    )
    assert found["realtime"] == []
    assert found["realtime_yaml"] == []
    assert found["topology"] == []
    assert found["broken"], "the validator accepts anything"


async def test_every_event_both_ways_is_described() -> None:
    server = RealtimeServer(secret=SECRET)
    try:
        handled = set(server.sio.handlers["/"]) - {"connect", "disconnect", "*"}
    finally:
        await server.close()
    assert set(CLIENT_EVENTS) == handled
    assert set(SERVER_EVENTS) == set(_EVENT_MODELS)
    document = asyncapi_document()
    messages = document["channels"]["socketio"]["messages"]
    chat = messages["chatMessageIn"]["payload"]
    assert set(chat["properties"]) == {"roomId", "message", "type"}
    assert messages["chatMessageOut"]["payload"]["required"] == [
        "id",
        "userId",
        "username",
        "message",
        "type",
        "timestamp",
        "roomId",
    ]
    reply = document["operations"]["chatMessageReceive"]["reply"]["messages"]
    assert [r["$ref"].rsplit("/", 1)[1] for r in reply] == ["chatMessageAck", "errorAck"]
    schemas = document["components"]["schemas"]
    assert schemas["ErrorAck"]["properties"]["ok"]["const"] is False
    assert document["operations"]["errorSend"]["action"] == "send"


async def test_the_topology_names_queues_bindings_and_the_consumers_model() -> None:
    document = await _topology()
    orders = document["channels"]["orders"]
    assert orders["bindings"]["amqp"]["is"] == "queue"
    assert orders["x-bindings"] == [{"exchange": "shop", "routingKey": "order.*"}]
    assert orders["x-dead-letter-queue"] == "orders.dlq"
    assert set(orders["messages"]["message"]["payload"]["properties"]) == {
        "order_id",
        "items",
        "note",
    }
    assert document["channels"]["shop"]["bindings"]["amqp"]["exchange"]["type"] == "topic"
    assert "orders.delay.220ms" in document["channels"]
    assert "orders.dlq" in document["channels"] and "audit.dlq" not in document["channels"]
    assert list(document["operations"]) == ["orders.receive"]
    assert document["servers"]["rabbitmq"]["host"] == "rabbitmq.internal:5672"


def test_yaml_reads_back_as_the_same_document() -> None:
    document = asyncapi_document()
    odd = {"on": "yes", "n": [1.5, 1e-05, None, True, [], {}], "quote": 'a "b": c\n#d', "": [{}]}
    assert yaml.safe_load(to_yaml(document)) == document
    assert yaml.safe_load(to_yaml(odd)) == odd


def test_the_command_writes_json_or_yaml(tmp_path: Path) -> None:
    out = tmp_path / "chat.yaml"
    subprocess.run(
        [sys.executable, "-m", "rtkit.cli", "asyncapi", "--format", "yaml", "-o", str(out)],
        check=True,
        timeout=60,
    )
    printed = subprocess.run(
        [sys.executable, "-m", "rtkit.cli", "asyncapi", "--server", "chat.example:443"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert yaml.safe_load(out.read_text()) == asyncapi_document()
    assert json.loads(printed)["servers"]["chat"]["host"] == "chat.example:443"
