"""Shared fixtures: real Redis and RabbitMQ, unique names per test, cleanup.

Helpers that tests import live in ``rtkit_testing.py`` (``tests/`` is on the
path); this file only defines fixtures. Backends are real servers
(``RTKIT_REDIS_URL``, ``RTKIT_AMQP_URL``). On a developer's laptop a missing
server skips the tests that need it, loudly; under ``CI=true`` a missing server
fails them.
"""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit

import pytest
import redis
import redis.asyncio as aioredis

from rtkit_testing import Backend, PrivateRedis, require
from rtkit_topology import PrivateCluster, PrivateSentinel

REDIS_URL = os.environ.get("RTKIT_REDIS_URL", "redis://127.0.0.1:6379")
AMQP_URL = os.environ.get("RTKIT_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")

_status: dict[str, str | None] = {}


def _redis_problem() -> str | None:
    if "redis" not in _status:
        try:
            client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
            client.ping()
            client.close()
            _status["redis"] = None
        except Exception as exc:
            _status["redis"] = f"Redis at {REDIS_URL}: {exc}"
    return _status["redis"]


def _amqp_problem() -> str | None:
    if "amqp" not in _status:
        parts = urlsplit(AMQP_URL)
        try:
            with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5672), 2):
                pass
            _status["amqp"] = None
        except OSError as exc:
            _status["amqp"] = f"RabbitMQ at {AMQP_URL}: {exc}"
    return _status["amqp"]


def pytest_configure(config: pytest.Config) -> None:
    """Load rtkit's pytest plugin (rtkit.testing) when no installed entry point did.

    An installed rtkit registers it as ``rtkit`` (pyproject's ``pytest11``); a source
    tree on ``PYTHONPATH`` has no entry point.
    """
    config.addinivalue_line("markers", "cluster: runs on the private Redis Cluster")
    config.addinivalue_line("markers", "sentinel: runs on the private Sentinel setup")
    config.addinivalue_line(
        "markers", "topologies: the backend fixture also runs on the cluster and Sentinel"
    )
    if not config.pluginmanager.has_plugin("rtkit"):
        config.pluginmanager.import_plugin("rtkit.testing.plugin")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The URL of a Redis server that answers (skip or fail otherwise)."""
    require(_redis_problem())
    return REDIS_URL


@pytest.fixture(scope="session")
def amqp_url() -> str:
    """The URL of a RabbitMQ server that answers (skip or fail otherwise)."""
    require(_amqp_problem())
    return AMQP_URL


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix unique to this test; every key under it is deleted afterwards
    (``<prefix>...`` and ``{<prefix>...}...`` keys, on the shared Redis: the private
    topologies are thrown away whole)."""
    prefix = f"rtkit-test-{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        for match in (prefix + "*", "{" + prefix + "*"):
            keys = list(client.scan_iter(match=match, count=1000))
            for start in range(0, len(keys), 500):
                client.delete(*keys[start : start + 500])
    finally:
        client.close()


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """An async Redis client (decoded responses), closed after the test."""
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


TOPOLOGY_PARAMS = [
    pytest.param("cluster", marks=[pytest.mark.redis, pytest.mark.cluster]),
    pytest.param("sentinel", marks=[pytest.mark.redis, pytest.mark.sentinel]),
]
"""The ``backend`` params a test marked ``topologies`` gets on top of memory and Redis."""


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize ``backend``: memory and Redis; the cluster and Sentinel too when the test
    (or its module: ``pytestmark = pytest.mark.topologies``) is marked ``topologies``.

    Opt-in, so that a suite runs on the private topologies once its component is ready
    for them; ``-m "not cluster and not sentinel"`` leaves them out.
    """
    if "backend" not in metafunc.fixturenames:
        return
    params: list[object] = ["memory", pytest.param("redis", marks=pytest.mark.redis)]
    if metafunc.definition.get_closest_marker("topologies") is not None:
        params += TOPOLOGY_PARAMS
    metafunc.parametrize("backend", params, indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> Backend:
    """A contract test's backend: ``memory``, ``redis`` (the shared server), and for tests
    marked ``topologies`` also ``cluster`` (the private three-master cluster) and
    ``sentinel`` (the private Sentinel setup). ``kind`` is ``"redis"`` on all three Redis
    topologies; ``topology`` tells them apart."""
    if request.param == "memory":
        return Backend("memory", "memory://", "rtkit:")
    prefix = request.getfixturevalue("redis_prefix")
    if request.param == "cluster":
        cluster = request.getfixturevalue("redis_cluster")
        return Backend("redis", cluster.url, prefix, topology="cluster")
    if request.param == "sentinel":
        sentinel = request.getfixturevalue("redis_sentinel")
        return Backend("redis", sentinel.url, prefix, topology="sentinel")
    return Backend("redis", request.getfixturevalue("redis_url"), prefix)


@pytest.fixture(
    params=[
        pytest.param("single", marks=pytest.mark.redis),
        pytest.param("cluster", marks=[pytest.mark.redis, pytest.mark.cluster]),
        pytest.param("sentinel", marks=[pytest.mark.redis, pytest.mark.sentinel]),
    ]
)
def any_redis(request: pytest.FixtureRequest) -> str:
    """The URL of each Redis topology in turn: the shared server, the private cluster,
    the private Sentinel setup (for Redis-only suites; pair it with ``redis_prefix``)."""
    if request.param == "cluster":
        return str(request.getfixturevalue("redis_cluster").url)
    if request.param == "sentinel":
        return str(request.getfixturevalue("redis_sentinel").url)
    return str(request.getfixturevalue("redis_url"))


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """A redis-server of this test's own, killed afterwards (see ``PrivateRedis``)."""
    binary = shutil.which("redis-server")
    require(None if binary else "redis-server is not installed: no private server")
    server = PrivateRedis(binary or "redis-server")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[PrivateCluster]:
    """A private three-master Redis Cluster with one replica each (killed afterwards)."""
    require(None if shutil.which("redis-server") else "redis-server is not installed")
    require(None if shutil.which("redis-cli") else "redis-cli is not installed")
    cluster = PrivateCluster()
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[PrivateSentinel]:
    """A private master, replica and three sentinels watching service ``rtkit``."""
    require(None if shutil.which("redis-server") else "redis-server is not installed")
    setup = PrivateSentinel()
    setup.start()
    yield setup
    setup.stop()
