"""rtkit's pytest plugin: the fixtures a user's project gets by installing rtkit."""

from __future__ import annotations

import importlib.metadata
import re
import textwrap
from pathlib import Path

import pytest

from rtkit import EventBus, ManualClock, PresenceStore, RateLimiter, RoomManager, ServiceRegistry
from rtkit.testing import EventRecorder, TestBroker

pytest_plugins = ["pytester"]


async def test_fixtures_share_one_manual_clock(
    rtkit_clock: ManualClock,
    rtkit_presence: PresenceStore,
    rtkit_rooms: RoomManager,
    rtkit_limiter: RateLimiter,
    rtkit_registry: ServiceRegistry,
) -> None:
    assert rtkit_rooms.instance_id == rtkit_presence.instance_id
    assert (await rtkit_limiter.hit("user:1", "1/minute")).allowed
    assert not (await rtkit_limiter.hit("user:1", "1/minute")).allowed
    rtkit_clock.advance(60)
    assert (await rtkit_limiter.hit("user:1", "1/minute")).allowed
    await rtkit_registry.register("svc", host="h", port=1, ttl=10, heartbeat=False)
    rtkit_clock.advance(10)
    assert await rtkit_registry.discover("svc") == []


async def test_bus_and_broker_fixtures(rtkit_bus: EventBus, rtkit_broker: TestBroker) -> None:
    with EventRecorder(rtkit_bus, "order.*") as events:
        await rtkit_bus.publish("order.created", {"id": 1})
        assert events.names == ["order.created"]  # memory: handlers ran inside publish
    await (await rtkit_broker.service()).declare_queue("jobs")
    await rtkit_broker.send("jobs", {"n": 1})
    assert (await rtkit_broker.wait_for_message("jobs")).payload == {"n": 1}


def _installed() -> bool:
    found = importlib.metadata.entry_points(group="pytest11", name="rtkit")
    return any(ep.value == "rtkit.testing.plugin" for ep in found)


@pytest.mark.slow
def test_a_project_in_strict_asyncio_mode_gets_the_fixtures(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_mode = strict\n")
    pytester.makepyfile(
        test_user=textwrap.dedent(
            """
            import pytest

            @pytest.mark.asyncio
            async def test_chat(rtkit_chat, rtkit_clock):
                ada = await rtkit_chat.connect("42", "Ada")
                await ada.join_room("lobby")
                await ada.send_message("lobby", "hi")
                assert (await ada.wait_for("chat:message"))["message"] == "hi"

            @pytest.mark.asyncio
            async def test_broker(rtkit_broker):
                mq = await rtkit_broker.service()
                await mq.declare_queue("q")
                await rtkit_broker.send("q", 1)
                assert (await rtkit_broker.wait_for_message("q")).payload == 1

            def test_clock(rtkit_clock):
                rtkit_clock.advance(1)
            """
        )
    )
    # An installed rtkit brings the plugin by its entry point; a source tree needs -p.
    args = [] if _installed() else ["-p", "rtkit.testing.plugin"]
    result = pytester.runpytest_subprocess(*args, "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)


@pytest.mark.slow
def test_the_testing_guide_tests_pass(pytester: pytest.Pytester) -> None:
    """The test functions of docs/guides/testing.md pass when pytest runs them."""
    guide = Path(__file__).resolve().parents[2] / "docs" / "guides" / "testing.md"
    blocks = re.findall(r"^```python\n(.*?)^```", guide.read_text("utf-8"), re.S | re.M)
    pytester.makeini("[pytest]\nasyncio_mode = auto\n")
    pytester.makepyfile(test_guide="\n\n".join(blocks))
    args = [] if _installed() else ["-p", "rtkit.testing.plugin"]
    result = pytester.runpytest_subprocess(*args, "-p", "no:cacheprovider")
    result.assert_outcomes(passed=6)
