"""The order-flow example runs, on the in-memory broker and on RabbitMQ."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from rtkit_testing import unique_name

EXAMPLE = Path(__file__).parents[2] / "examples" / "order_flow.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("order_flow_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_script_runs_on_the_memory_broker() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=60, check=True
    )
    assert "order 1: paid" in result.stdout
    assert "order 2: paid" in result.stdout
    assert "email to user1@example.com: Order confirmation" in result.stdout


@pytest.mark.parametrize("broker", ["memory", pytest.param("amqp", marks=pytest.mark.rabbitmq)])
async def test_the_flow_completes(broker: str, request: pytest.FixtureRequest) -> None:
    example = _load()
    url = "memory://" if broker == "memory" else request.getfixturevalue("amqp_url")
    shop = await example.run(url, prefix=unique_name("rtkit-test-shop") + ".", cleanup=True)
    assert shop.statuses == {1: "paid", 2: "paid"}
    assert shop.stock == {1: 98, 2: 99}
    assert sorted(e.to for e in shop.outbox) == ["user1@example.com", "user2@example.com"]
