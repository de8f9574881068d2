"""When Redis goes away the chat refuses with ``backend_unavailable`` and recovers after.

A private redis-server on a free port is started and stopped by the test (the
shared server is never touched).
"""

from __future__ import annotations

import asyncio

import pytest
from realtime_support import Chat, eventually, make_server, serving

from rtkit.errors import BackendUnavailable
from rtkit_testing import PrivateRedis

pytestmark = [pytest.mark.redis, pytest.mark.slow]


async def test_a_redis_outage_is_an_error_not_a_crash(private_redis: PrivateRedis) -> None:
    server = make_server(private_redis.url, "rtkit-fault:")
    async with serving(server) as url:
        chat = Chat(url, server)
        ada = await chat.connect("ada")
        await ada.client.join_room("lobby")
        await ada.client.send_message("lobby", "before")

        private_redis.stop()
        with pytest.raises(BackendUnavailable):
            await ada.client.send_message("lobby", "during")
        assert ada.client.connected  # the connection stays up

        private_redis.start()  # an empty Redis on the same port: join again

        async def works_again() -> bool:
            try:
                await ada.client.join_room("lobby")
                await ada.client.send_message("lobby", "after")
            except BackendUnavailable:
                await asyncio.sleep(0.2)
                return False
            return True

        await eventually(works_again, timeout=30)
        history = await ada.client.history("lobby")
        assert [m.message for m in history][-1] == "after"
        await chat.close()
