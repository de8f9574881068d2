"""examples/domain_events.py runs to completion, in memory and across two processes."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "domain_events.py"


def run(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), *args],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def check_flow(output: str) -> None:
    for line in [
        "welcome email to user@example.com",
        "analytics: user_welcome_completed for user 1",
        "stock updated for order 1",
        "order confirmation for order 2",
        "charging 900.00 for order 2: failed",
        "order 1: paid",
        "order 2: payment_failed",
        "orders: {1: 'paid', 2: 'payment_failed'}",
    ]:
        assert line in output


def test_the_example_runs_in_memory() -> None:
    check_flow(run())


@pytest.mark.redis
@pytest.mark.slow
def test_the_example_crosses_processes_on_redis(redis_url: str) -> None:
    output = run("--redis", redis_url, "--prefix", f"rtkit-test-{uuid.uuid4().hex[:12]}:")
    check_flow(output)
    assert "the services run in process" in output
