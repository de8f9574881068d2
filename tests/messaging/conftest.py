"""Fixtures for the messaging tests: one ``mq`` fixture per broker, with cleanup."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from ._helpers import MQ


@pytest.fixture(params=["memory", pytest.param("amqp", marks=pytest.mark.rabbitmq)])
async def mq(request: pytest.FixtureRequest) -> AsyncIterator[MQ]:
    """Parametrizes a contract test over the in-memory broker and RabbitMQ."""
    url = "memory://" if request.param == "memory" else request.getfixturevalue("amqp_url")
    helper = MQ(request.param, url)
    yield helper
    await helper.cleanup()


@pytest.fixture
async def rabbit(amqp_url: str) -> AsyncIterator[MQ]:
    """RabbitMQ only (fault tests)."""
    helper = MQ("amqp", amqp_url)
    yield helper
    await helper.cleanup()
