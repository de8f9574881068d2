"""What producers and consumers share: a service, given or their own."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self

from .._core.component import Component, constructor_options, split_options
from .._core.urls import BackendTarget
from ._service import RabbitMQService

__all__ = ["ServiceClient"]


class ServiceClient(Component):
    """Base of ``MessageProducer`` and ``MessageConsumer``.

    A client works through a [`RabbitMQService`][rtkit.messaging.RabbitMQService]:
    the one it was given (never closed by the client), or one of its own (made
    for ``from_url``, or a private in-memory one when none is given), closed with
    the client. ``from_url`` takes the service's options too (``timeout``,
    ``connection_name``, ``max_message_bytes``, ...).
    """

    _backends = RabbitMQService._backends

    def _attach(self, service: RabbitMQService | None) -> None:
        """Use ``service``, or a private in-memory one of this client's own."""
        self._owns_service = service is None
        self._service = service if service is not None else RabbitMQService()

    @property
    def service(self) -> RabbitMQService:
        """The service this client sends or consumes through."""
        return self._service

    @classmethod
    def _from_target(cls, target: BackendTarget, options: Mapping[str, Any]) -> Self:
        """Open a service of this client's own on ``target``, then the client on it."""
        for_service, own = split_options(
            cls.__name__, options, RabbitMQService.option_names(), constructor_options(cls)
        )
        # opened as a RabbitMQService, so memory://NAME is shared with services of that name
        service = RabbitMQService.from_url(
            target.url, prefix=target.prefix, clock=target.clock, **for_service
        )
        client = cls(service, **own)
        client._owns_service = True
        return client

    async def _start(self) -> None:
        await self._service.start()

    async def _close(self) -> None:
        if self._owns_service:
            await self._service.close()
