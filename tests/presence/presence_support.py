"""Helpers for the presence tests: a recording bus, stores that share one backend, crashes."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import redis
from redis.sentinel import Sentinel

from rtkit.presence import PresenceStore
from rtkit.rooms import RoomManager
from rtkit_testing import Backend


class RecordingBus:
    """An event bus that remembers what was published."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    async def publish(self, name: str, data: dict[str, Any]) -> None:
        self.events.append((name, data))

    def names(self) -> list[tuple[str, str]]:
        """(event name, user id) of each event, in order."""
        return [(name, data["user_id"]) for name, data in self.events]


class Stores:
    """Makes stores (server instances) that share one backend; closes them at the end."""

    def __init__(self, url: str, prefix: str, **defaults: Any) -> None:
        self.url, self.prefix, self.defaults = url, prefix, defaults
        self.made: list[PresenceStore] = []

    def make(self, **kwargs: Any) -> PresenceStore:
        store = PresenceStore.from_url(self.url, prefix=self.prefix, **{**self.defaults, **kwargs})
        self.made.append(store)
        return store

    async def close_all(self) -> None:
        for store in self.made:
            await store.close()


async def stop_heartbeat(store: PresenceStore | RoomManager) -> None:
    """What a crash (SIGKILL) or a long pause does to an instance: nobody renews its lease.

    A store heartbeats from its first operation on; this stops that, and leaves
    its connections and its lease behind, without closing it.
    """
    await store._janitor.stop()


def lose_data(backend: Backend, *stores: PresenceStore | RoomManager) -> None:
    """What a Redis restart without persistence does: every key under the prefix is gone.

    On memory, the stores' shared state starts afresh (in place, so every store
    sharing it sees the loss).
    """
    if backend.kind == "memory":
        for store in stores:
            store._backend._s.__init__()  # type: ignore[attr-defined,misc]
        return
    for client in masters_of(backend):
        try:
            for match in (backend.prefix + "*", "{" + backend.prefix + "*"):
                for key in list(client.scan_iter(match=match, count=1000)):
                    client.delete(key)
        finally:
            client.close()


def masters_of(backend: Backend) -> list[redis.Redis]:
    """A client for each master of ``backend``'s Redis (every master of a cluster)."""
    parts = urlsplit(backend.url)
    hosts = [host.rsplit(":", 1) for host in parts.netloc.split(",")]
    if backend.topology == "cluster":
        found = []
        for host, port in hosts:
            node = redis.Redis(host=host, port=int(port))
            if node.info("replication")["role"] == "master":
                found.append(node)
            else:
                node.close()
        return found
    if backend.topology == "sentinel":
        sentinel = Sentinel([(host, int(port)) for host, port in hosts])
        return [sentinel.master_for(parts.path.strip("/"))]
    return [redis.Redis.from_url(backend.url)]
