"""Two ChatClient bots chat through a RealtimeServer running in this process.

The server runs on private memory stores and signs tokens with a random secret
of its process (``server.issue_token``); each bot gets a token for its user id,
joins ``lobby``, and they talk. Run it::

    python examples/chat_bots.py
"""

from __future__ import annotations

import asyncio
import socket

import uvicorn

from rtkit.realtime import ChatClient, RealtimeServer


async def main() -> None:
    server = RealtimeServer()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    web = uvicorn.Server(uvicorn.Config(server, log_level="warning"))
    serving = asyncio.create_task(web.serve(sockets=[sock]))
    while not web.started:  # noqa: ASYNC110  (uvicorn offers only a flag)
        await asyncio.sleep(0.01)

    async with ChatClient() as ada, ChatClient() as bob:
        await chat(server, url, ada, bob)
    web.should_exit = True
    await serving


async def chat(server: RealtimeServer, url: str, ada: ChatClient, bob: ChatClient) -> None:
    """Ada and Bob join ``lobby``, type, talk and notify each other."""
    heard, noted = asyncio.Event(), asyncio.Event()
    bob.on_typing_start(lambda t: print(f"[bob] {t.username} is typing in {t.room_id}..."))
    bob.on_chat_message(lambda m: (print(f"[bob] {m.username}: {m.message}"), heard.set()))
    ada.on_room_user_joined(lambda e: print(f"[ada] {e.username} joined {e.room_id}"))
    ada.on_notification(
        lambda n: (print(f"[ada] notification from {n.from_user_id}: {n.content}"), noted.set())
    )

    await ada.connect(url, server.issue_token("ada", name="Ada"))
    await bob.connect(url, server.issue_token("bob", name="Bob"))
    await ada.join_room("lobby")
    await bob.join_room("lobby")

    await ada.start_typing("lobby")
    message_id = await ada.send_message("lobby", "Hello World!")
    await ada.stop_typing("lobby")
    await asyncio.wait_for(heard.wait(), 10)
    await bob.send_notification("ada", "wave", "o/")

    history = await bob.history("lobby")
    print(f"history of lobby: {[m.message for m in history]} (last id {message_id})")
    await asyncio.wait_for(noted.wait(), 10)


if __name__ == "__main__":
    asyncio.run(main())
