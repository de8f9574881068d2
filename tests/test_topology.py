"""The private topologies the cluster and sentinel tests run on start, serve and fail over."""

from __future__ import annotations

import time

import pytest
import redis
from redis.sentinel import Sentinel

from rtkit_topology import PrivateCluster, PrivateSentinel


@pytest.mark.redis
def test_the_private_cluster_serves_every_slot(redis_cluster: PrivateCluster) -> None:
    assert len(redis_cluster.masters()) == 3
    client = redis.RedisCluster(host="127.0.0.1", port=redis_cluster.nodes[0].port)
    try:
        for i in range(30):  # keys on every master
            client.set(f"rtkit-topology-{i}", i)
            assert client.get(f"rtkit-topology-{i}") == str(i).encode()
            client.delete(f"rtkit-topology-{i}")
    finally:
        client.close()
    assert redis_cluster.url.startswith("redis+cluster://127.0.0.1:")


@pytest.mark.redis
@pytest.mark.slow
def test_a_private_sentinel_setup_fails_over() -> None:
    setup = PrivateSentinel(service="rtkit-failover")
    setup.start()
    try:
        sentinel = Sentinel([("127.0.0.1", s.port) for s in setup.sentinels])
        master = sentinel.master_for(setup.service)
        master.set("k", "v")
        old = setup.master.port
        setup.master.stop()
        deadline = time.monotonic() + 20
        while setup.current_master_port() == old:
            assert time.monotonic() < deadline, "no failover within 20 s"
            time.sleep(0.2)
        assert setup.url.endswith("/rtkit-failover")
    finally:
        setup.stop()


@pytest.mark.redis
async def test_components_open_on_cluster_and_sentinel_urls(
    redis_cluster: PrivateCluster, redis_sentinel: PrivateSentinel
) -> None:
    from rtkit import PresenceStore, ServiceRegistry

    for url in (redis_cluster.url, redis_sentinel.url):
        async with ServiceRegistry.from_url(url, prefix="topology-test:") as registry:
            await registry.register("svc", host="127.0.0.1", port=8000)
            assert len(await registry.discover("svc")) == 1
        async with PresenceStore.from_url(url, prefix="topology-test:") as presence:
            assert await presence.connect("ada", "sid-1")
            assert await presence.is_online("ada")
