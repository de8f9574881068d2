"""scripts/migrate_keys.py moves the single-slot layout's keys to the spread one."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import redis

from rtkit.messaging import DedupStore
from rtkit.realtime import NotificationStore
from rtkit_topology import PrivateCluster

SCRIPT = Path(__file__).parents[1] / "scripts" / "migrate_keys.py"


@pytest.mark.redis
@pytest.mark.cluster
async def test_old_keys_move_to_the_cluster(redis_url: str, redis_cluster: PrivateCluster) -> None:
    prefix = f"mig-{uuid.uuid4().hex[:8]}:"
    old = redis.Redis.from_url(redis_url)
    try:
        note = (
            '{"id":"n1","fromUserId":"u1","toUserId":"bob","type":"info","content":"hi",'
            '"timestamp":"2026-01-01T00:00:00.000Z","read":false}'
        )
        old.rpush(f"{prefix}{{notifications}}:user:bob", note)
        old.set(f"{prefix}{{dedup}}:msg-1", "done", px=60_000)
        old.hset(f"{prefix}{{presence}}:u:ada", "sid-1", "")  # ephemeral: rebuilt, never moved
        old.zadd(f"{prefix}{{rooms}}:rooms", {"lobby": 0})
        args = ["--from", redis_url, "--to", redis_cluster.url, "--prefix", prefix, "--delete"]
        done = subprocess.run(  # noqa: ASYNC221  (a short script, then the stores)
            [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, check=True
        )
        assert "{notifications}:user:bob -> {" + prefix + "notifications:bob}:list" in done.stdout
        assert old.exists(f"{prefix}{{dedup}}:msg-1") == 0  # --delete
        assert "presence: 1 old keys not moved (rebuilt by the instances), deleted" in done.stdout
        assert old.exists(f"{prefix}{{presence}}:u:ada", f"{prefix}{{rooms}}:rooms") == 0
    finally:
        old.close()
    async with NotificationStore.from_url(redis_cluster.url, prefix=prefix) as notes:
        assert [n.content for n in await notes.take("bob")] == ["hi"]
    async with DedupStore.from_url(redis_cluster.url, prefix=prefix) as dedup:
        assert await dedup.claim("msg-1") == "done"
