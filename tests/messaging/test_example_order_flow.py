"""The order-flow example runs, on the in-memory broker and on RabbitMQ, and cleans up."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from rtkit_testing import require, unique_name

EXAMPLE = Path(__file__).parents[2] / "examples" / "order_flow.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("order_flow_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _queues_starting_with(prefix: str) -> list[str]:
    ctl = shutil.which("rabbitmqctl")
    require(None if ctl else "rabbitmqctl is not installed: cannot list the broker's queues")
    listing = subprocess.run(
        [ctl or "rabbitmqctl", "list_queues", "-q", "--no-table-headers", "name"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return sorted(q.strip() for q in listing.splitlines() if q.strip().startswith(prefix))


def test_the_script_runs_on_the_memory_broker() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=60, check=True
    )
    assert "order 1: paid" in result.stdout
    assert "order 2: paid" in result.stdout
    assert "email to user1@example.com: Order confirmation" in result.stdout
    assert "queues order-flow-" in result.stdout and "deleted" in result.stdout


@pytest.mark.parametrize("broker", ["memory", pytest.param("amqp", marks=pytest.mark.rabbitmq)])
async def test_the_flow_completes(broker: str, request: pytest.FixtureRequest) -> None:
    example = _load()
    url = "memory://" if broker == "memory" else request.getfixturevalue("amqp_url")
    shop = await example.run(url, prefix=unique_name("rtkit-test-shop") + ".")
    assert shop.statuses == {1: "paid", 2: "paid"}
    assert shop.stock == {1: 98, 2: 99}
    assert sorted(e.to for e in shop.outbox) == ["user1@example.com", "user2@example.com"]


@pytest.mark.rabbitmq
@pytest.mark.slow
def test_the_script_leaves_no_queue_behind_on_a_shared_broker(amqp_url: str) -> None:
    prefix = unique_name("rtkit-test-flow") + "."
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), amqp_url, "--prefix", prefix],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "order 2: paid" in result.stdout
    assert _queues_starting_with(prefix) == []


@pytest.mark.rabbitmq
async def test_keep_keeps_the_queues_until_a_run_without_it(amqp_url: str) -> None:
    example = _load()
    prefix = unique_name("rtkit-test-flow") + "."
    await example.run(amqp_url, prefix=prefix, cleanup=False)
    try:
        assert f"{prefix}order.created.dlq" in _queues_starting_with(prefix)
    finally:
        await example.run(amqp_url, prefix=prefix)  # the same names, deleted this time
    assert _queues_starting_with(prefix) == []
