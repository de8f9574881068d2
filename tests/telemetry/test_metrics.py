"""The rtkit_* metrics of the bus, messaging, the rate limiter, the gateway and its services."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path
from typing import Any

import httpx
import pydantic
import pytest
from prometheus_client import CollectorRegistry
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from telemetry_support import bound_socket, serving

from rtkit import EventBus, RateLimiter, ServiceRegistry, telemetry
from rtkit.gateway import ApiGateway, ResponseCache, Route
from rtkit.messaging import MessageConsumer, MessageProducer, RabbitMQService, RetryPolicy
from rtkit.microservice import MicroService
from rtkit.testing import unique_name, wait_until


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def test_the_bus_counts_publishes_deliveries_failures_and_handler_time(
    registry: CollectorRegistry,
) -> None:
    async with EventBus() as bus:

        async def ok(event: Any) -> None:
            pass

        async def broken(event: Any) -> None:
            raise RuntimeError("no")

        bus.subscribe("order.*", ok)
        bus.subscribe("order.#", broken)
        for _ in range(3):
            await bus.publish("order.created", {})
    labels = {"backend": "memory", "pattern": "order.*"}
    assert sample(registry, "rtkit_eventbus_published_total", backend="memory") == 3
    assert sample(registry, "rtkit_eventbus_delivered_total", **labels) == 3
    assert sample(registry, "rtkit_eventbus_failed_total", backend="memory", pattern="order.#") == 3
    assert sample(registry, "rtkit_eventbus_handler_duration_seconds_count", **labels) == 3


class Job(pydantic.BaseModel):
    n: int


async def test_messaging_counts_publishes_outcomes_and_dead_letters(
    registry: CollectorRegistry,
) -> None:
    async with RabbitMQService() as mq:
        await mq.declare_queue("jobs")
        tries: list[int] = []

        async def once_flaky(job: Job) -> None:
            tries.append(job.n)
            if tries.count(job.n) == 1 and job.n == 1:
                raise RuntimeError("once")

        consumer = MessageConsumer(mq)
        await consumer.consume("jobs", once_flaky, model=Job, retry=RetryPolicy(initial_delay=0.01))
        producer = MessageProducer(mq)
        await producer.send("jobs", {"n": 1})
        await producer.send("jobs", {"n": "not a number"})
        await wait_until(
            lambda: (
                sample(registry, "rtkit_messaging_consumed_total", queue="jobs", outcome="handled")
                == 1
            ),
            timeout=5,
        )
        await consumer.close()

    def consumed(outcome: str) -> float:
        return sample(registry, "rtkit_messaging_consumed_total", queue="jobs", outcome=outcome)

    assert (consumed("handled"), consumed("retried"), consumed("dead_lettered")) == (1, 1, 1)
    dead = sample(
        registry, "rtkit_messaging_dead_lettered_total", queue="jobs", reason="validation_failed"
    )
    assert dead == 1
    published = "rtkit_messaging_published_total"
    assert sample(registry, published, destination="jobs", outcome="confirmed") == 2
    assert sample(registry, published, destination="jobs.dlq", outcome="confirmed") == 1
    tier = mq.delay_queue_name("jobs", 0.01)
    assert sample(registry, published, destination=tier, outcome="confirmed") == 1
    assert (
        sample(registry, "rtkit_messaging_publish_duration_seconds_count", destination="jobs") == 2
    )
    assert sample(registry, "rtkit_messaging_process_duration_seconds_count", queue="jobs") == 3


async def test_the_rate_limiter_counts_decisions(registry: CollectorRegistry) -> None:
    async with RateLimiter() as limiter:
        for _ in range(3):
            await limiter.hit("ip:1", "2/minute")
    assert sample(registry, "rtkit_ratelimit_decisions_total", outcome="allowed") == 2
    assert sample(registry, "rtkit_ratelimit_decisions_total", outcome="denied") == 1


@pytest.mark.slow
async def test_the_gateway_counts_requests_by_route_cache_and_upstream_errors(
    registry: CollectorRegistry,
) -> None:
    registry_url = f"memory://{unique_name('registry')}"
    sock = bound_socket()
    service = MicroService(
        "items",
        registry=ServiceRegistry.from_url(registry_url),
        port=sock.getsockname()[1],
        metrics=True,
    )

    async def item(request: Request) -> Response:
        return JSONResponse(
            {"id": request.path_params["id"]}, headers={"cache-control": "max-age=60"}
        )

    service.add_route("/items/{id:int}", item)
    routes = {"/api/items": Route("items", path="/items"), "/api/gone": "gone"}
    gateway_registry = ServiceRegistry.from_url(registry_url)
    gateway = ApiGateway(
        gateway_registry, routes=routes, cache=ResponseCache(), rate_limit=None, metrics=True
    )
    await gateway_registry.register("gone", host="127.0.0.1", port=bound_socket().getsockname()[1])
    async with (
        serving(service, sock) as service_url,
        serving(gateway) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        assert (await http.get(f"{service_url}/metrics")).status_code == 200
        for n in (1, 1, 2):
            assert (await http.get(f"/api/items/{n}")).status_code == 200
        assert (await http.get("/api/gone/x")).status_code == 502
        scraped = (await http.get("/metrics")).text
    ok = {"app": "gateway", "route": "/api/items", "method": "GET", "status": "200"}
    assert sample(registry, "rtkit_http_requests_total", **ok) == 3
    assert sample(registry, "rtkit_gateway_cache_total", route="/api/items", result="hit") == 1
    assert sample(registry, "rtkit_gateway_cache_total", route="/api/items", result="miss") == 2
    service_ok = {"app": "items", "route": "/items/{id:int}", "method": "GET", "status": "200"}
    assert sample(registry, "rtkit_http_requests_total", **service_ok) == 2
    errors = sample(
        registry, "rtkit_gateway_upstream_errors_total", service="gone", error="connect"
    )
    assert errors >= 1
    assert sample(registry, "rtkit_gateway_upstream_duration_seconds_count", service="items") == 2
    assert 'rtkit_http_requests_total{app="gateway"' in scraped  # /metrics serves the registry
    await asyncio.sleep(0)


GUIDE = Path(__file__).parents[2] / "docs" / "guides" / "observability.md"
BLOCK = re.compile(r"(<!-- metrics:list -->\n)(.*?)(<!-- /metrics:list -->)", re.S)


def metrics_table() -> str:
    """The guide's list of metrics, from ``rtkit.telemetry.METRICS``."""
    rows = ["| metric | type | labels | what it counts |", "|---|---|---|---|"]
    for info in telemetry.METRICS:
        labels = ", ".join(f"`{label}`" for label in info.labels)
        rows.append(f"| `{info.name}` | {info.kind} | {labels} | {info.help} |")
    return "\n".join(rows) + "\n"


def test_every_metric_is_documented_in_the_guide() -> None:
    names = [info.name for info in telemetry.METRICS]
    assert len(names) == len(set(names))
    assert all(name.startswith("rtkit_") for name in names)
    text = GUIDE.read_text("utf-8")
    if os.environ.get("RTKIT_WRITE_DOCS"):
        GUIDE.write_text(BLOCK.sub(lambda m: m.group(1) + metrics_table() + m.group(3), text))
        return
    found = BLOCK.search(text)
    assert found is not None and found.group(2) == metrics_table()
