"""Telemetry is optional: without the otel extra rtkit works, and says how to turn it on."""

from __future__ import annotations

import subprocess
import sys

BLOCKED = ("opentelemetry", "opentelemetry.trace", "prometheus_client")


def _python(code: str, *blocked: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter where the modules ``blocked`` cannot be imported."""
    prelude = "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in blocked)
    return subprocess.run(
        [sys.executable, "-c", prelude + code], capture_output=True, text=True, timeout=60
    )


def test_components_work_without_the_otel_extra() -> None:
    code = """
import asyncio
from rtkit import EventBus, RateLimiter, telemetry
async def main():
    async with EventBus() as bus:
        seen = []
        async def handler(event):
            seen.append(event.data)
        bus.subscribe("a.b", handler)
        await bus.publish("a.b", 1)
        assert seen == [1] and bus._hooks is None
    telemetry.enable_tracing.__doc__  # importable
    try:
        telemetry.enable_metrics()
    except ImportError as exc:
        print(exc)
asyncio.run(main())
"""
    done = _python(code, *BLOCKED)
    assert done.returncode == 0, done.stderr
    assert "pip install 'rtkit[otel]'" in done.stdout


def test_enable_tracing_without_the_api_says_how_to_install_it() -> None:
    done = _python("from rtkit import telemetry; telemetry.enable_tracing()", *BLOCKED)
    assert "pip install 'rtkit[otel]'" in done.stderr.strip().splitlines()[-1]


def test_the_asyncapi_command_needs_no_realtime_extra() -> None:
    code = "from rtkit.cli import main; raise SystemExit(main(['asyncapi']))"
    done = _python(code, "socketio", "engineio", "jwt", "aiohttp")
    assert done.returncode == 0, done.stderr
    assert '"asyncapi": "3.0.0"' in done.stdout
