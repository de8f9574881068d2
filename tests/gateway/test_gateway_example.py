"""examples/gateway/run.py: the gateway, user and order services, over real HTTP; cleanup."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from pathlib import Path

import httpx
import pytest
import redis

from rtkit_testing import Backend

RUN = Path(__file__).parents[2] / "examples" / "gateway" / "run.py"


@pytest.mark.slow
async def test_example(backend: Backend) -> None:
    args = [sys.executable, str(RUN)]
    if backend.kind == "redis":
        args += ["--redis", backend.url, "--prefix", backend.prefix]
    proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        match = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert match, line
        async with httpx.AsyncClient(base_url=match.group(0), timeout=10) as http:
            assert (await http.get("/health")).json()["status"] == "ok"
            services = (await http.get("/services")).json()["services"]
            assert services == {"order-service": 1, "user-service": 1}

            r = await http.get("/api/users")
            assert [u["name"] for u in r.json()] == ["Alice", "Bob"]
            assert (r.headers["x-cache"], r.headers["ratelimit-limit"]) == ("MISS", "100")
            assert (await http.get("/api/users")).headers["x-cache"] == "HIT"
            assert (await http.get("/api/users/2")).json()["email"] == "bob@example.com"
            r = await http.get("/api/users/99")
            assert (r.status_code, r.json()["error"]["code"]) == (404, "not_found")

            r = await http.post("/api/users", json={"name": "Carol", "email": "c@example.com"})
            assert (r.status_code, r.json()["id"]) == (201, 3)
            r = await http.get("/api/users")  # the write invalidated the cached list
            assert r.headers["x-cache"] == "MISS"
            assert [u["name"] for u in r.json()] == ["Alice", "Bob", "Carol"]
            r = await http.post("/api/users", json={"name": "Dan", "email": "nope"})
            assert r.status_code == 422

            r = await http.post("/api/orders", json={"userId": 3, "total": 42.5})
            assert (r.status_code, r.json()["status"]) == (201, "pending")
            r = await http.get("/api/orders")
            assert (r.headers["x-cache"], len(r.json())) == ("MISS", 3)  # no-store
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
        out = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0
    assert b"stopped" in out[0]
    if backend.kind == "redis":  # the rate-limit and cache keys it made are gone too
        assert b"keys under " + backend.prefix.encode() in out[0]
        client = redis.Redis.from_url(backend.url)
        try:
            for match in (backend.prefix + "*", "{" + backend.prefix + "*"):
                assert list(client.scan_iter(match=match, count=10_000)) == []
        finally:
            client.close()
