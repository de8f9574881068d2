"""examples/domain_events.py runs to completion, in memory and across two processes.

Its output is whole lines, even from two processes writing at once unbuffered,
and it leaves nothing in Redis.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import redis

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "domain_events.py"


TAG = r"\[ *(?:shop|email|payments|monitor)\] "
LINE = re.compile(rf"^{TAG}(?!.*{TAG}).+$")  # one tag, at the start: no line cut into another


def run(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), *args],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},  # the case where lines used to mix
    )
    assert done.returncode == 0, done.stdout + done.stderr
    broken = [line for line in done.stdout.splitlines() if not LINE.match(line)]
    assert broken == [], broken
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
    prefix = f"rtkit-test-{uuid.uuid4().hex[:12]}:"
    output = run("--redis", redis_url, "--prefix", prefix)
    check_flow(output)
    assert "the services run in process" in output
    assert "[   email] welcome email to user@example.com" in output  # from the other process
    client = redis.Redis.from_url(redis_url)
    try:
        assert list(client.scan_iter(match=prefix + "*", count=10_000)) == []
    finally:
        client.close()
