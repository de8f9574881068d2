"""Connections that end while being set up, and floods of connections."""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets
from realtime_support import SECRET, serving, token_for

from rtkit.errors import RateLimited
from rtkit.realtime import ChatClient, ChatLimits, Identity, JWTVerifier, RealtimeServer


class SlowVerifier:
    """A verifier that takes its time: a client may leave meanwhile."""

    def __init__(self, delay: float) -> None:
        self.inner = JWTVerifier(SECRET)
        self.delay = delay

    async def verify(self, token: str) -> Identity:
        await asyncio.sleep(self.delay)
        return await self.inner.verify(token)


async def test_a_client_gone_while_its_connect_is_recorded_leaves_no_ghost() -> None:
    # python-socketio runs the disconnect handler after the connect handler returned
    # (packets of one socket are handled in order); this keeps that promise checked.
    server = RealtimeServer(verifier=SlowVerifier(0.5), secret=SECRET)
    async with serving(server) as url:
        ws_url = url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket"
        async with websockets.connect(ws_url) as ws:
            await ws.recv()  # the Engine.IO open packet
            await ws.send("40" + json.dumps({"token": token_for("ghost")}))
        # the socket is closed while the slow verifier still runs
        await asyncio.sleep(1.0)
        assert not await server.presence.is_online("ghost")
        assert (await server.presence.count()).connections == 0


async def test_a_flood_of_connections_by_one_user_is_refused() -> None:
    limits = ChatLimits(connect_rate="3/minute")
    server = RealtimeServer(secret=SECRET, limits=limits)
    async with serving(server) as url:
        clients = []
        try:
            for _ in range(3):
                client = ChatClient()
                await client.connect(url, token_for("busy"))
                clients.append(client)
            with pytest.raises(RateLimited):
                await ChatClient().connect(url, token_for("busy"))
            other = ChatClient()  # other users are not affected
            await other.connect(url, token_for("calm"))
            clients.append(other)
        finally:
            for client in clients:
                await client.close()
