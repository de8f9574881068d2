"""A registered process that is SIGKILLed (no deregister) vanishes within ttl + prune interval."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
import time

import pytest

from rtkit.registry import ServiceRegistry

CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from rtkit.registry import ServiceRegistry

    async def main():
        registry = ServiceRegistry.from_url(sys.argv[1], prefix=sys.argv[2])
        iid = await registry.register("crashy", host="127.0.0.1", port=4000, ttl=2.0)
        print(iid, flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())
    """
)

TTL, PRUNE = 2.0, 0.5


@pytest.mark.redis
@pytest.mark.slow
async def test_sigkilled_instance_vanishes(redis_url: str, redis_prefix: str) -> None:
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, redis_url, redis_prefix, stdout=asyncio.subprocess.PIPE
    )
    registry = ServiceRegistry.from_url(redis_url, prefix=redis_prefix, prune_interval=PRUNE)
    try:
        assert child.stdout is not None
        iid = (await asyncio.wait_for(child.stdout.readline(), 30)).decode().strip()
        assert [i.instance_id for i in await registry.discover("crashy")] == [iid]
        watch = registry.watch("crashy", initial=False)
        removed = asyncio.ensure_future(anext(watch))

        await asyncio.sleep(TTL + 0.5)  # outlives its ttl only thanks to heartbeats
        assert [i.instance_id for i in await registry.discover("crashy")] == [iid]

        os.kill(child.pid, signal.SIGKILL)
        killed = time.monotonic()
        change = await asyncio.wait_for(removed, timeout=30)  # pushed by the janitor
        elapsed = time.monotonic() - killed
        assert (change.kind, change.instance.instance_id) == ("removed", iid)
        assert await registry.discover("crashy") == []
        assert await registry.services() == {}
        # the bound is ttl + one prune interval; allow a busy machine some slack
        assert elapsed < TTL + PRUNE + 5, elapsed
        await watch.aclose()  # type: ignore[attr-defined]
    finally:
        if child.returncode is None:
            child.kill()
        await child.wait()
        await registry.close()
