"""``MessageProducer``: sends messages to queues and exchanges, with publisher confirms."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

from .._core.ids import new_id
from .._core.lifecycle import DEFAULT_TIMEOUT
from .._core.validate import check_int, check_seconds
from ..errors import RemoteError, ValidationError
from ._client import ServiceClient
from ._service import RabbitMQService
from ._wire import check_queue, check_routing_key, decode_any
from .brokers.base import REPLY_TO

__all__ = ["MessageProducer"]

MAX_DELAY = 86_400.0


class MessageProducer(ServiceClient):
    """Sends messages to queues and exchanges, with publisher confirms.

    Every message is persistent (unless ``persistent=False``) and carries a unique
    ``message_id`` and a timestamp. A call returns once the broker has confirmed
    the message; a broker that is down or a confirm that does not come raises
    [`BackendUnavailable`][rtkit.errors.BackendUnavailable] within the backend's
    ``timeout``.

    ``MessageProducer(service)`` sends through ``service`` (and never closes it);
    ``MessageProducer.from_url(url, ...)`` through a service of its own on
    ``url``, closed with the producer; ``MessageProducer()`` through a private
    in-memory one. ``producer.service`` is the service in use.

    Args:
        service: The service to send through.
        max_in_flight: How many publishes may await their confirms at once (shared
            by every call on this producer).
    """

    def __init__(
        self, service: RabbitMQService | None = None, *, max_in_flight: int = 1000
    ) -> None:
        self._window = asyncio.Semaphore(check_int(max_in_flight, "max_in_flight"))
        self._attach(service)

    async def send(
        self,
        queue: str,
        message: Any,
        *,
        delay: float | None = None,
        headers: Mapping[str, Any] | None = None,
        message_id: str | None = None,
        persistent: bool = True,
    ) -> str:
        """Send ``message`` to ``queue`` (through the default exchange); return its id.

        Args:
            queue: The target queue; it must exist (else
                [`NotFound`][rtkit.errors.NotFound]).
            message: A pydantic model or any JSON-able value.
            delay: Deliver after this many seconds (at most a day), through a delay
                tier queue; the delay snaps to the nearest E12 value.
            headers: Application headers (str, int, float, bool or None values).
            message_id: Your own unique id (e.g. for idempotency); a UUIDv7 otherwise.
            persistent: Written to disk by the broker (delivery mode 2).

        Raises:
            rtkit.errors.ValidationError: A bad argument (nothing was sent).
            rtkit.errors.PayloadTooLarge: The message is larger than the service allows.
            rtkit.errors.NotFound: No such queue.
            rtkit.errors.BackendUnavailable: No confirm within the backend's ``timeout``.
            rtkit.errors.Closed: The producer (or its service) was closed.
        """
        check_queue(queue)
        if delay is not None and delay != 0:
            check_seconds(delay, "delay", maximum=MAX_DELAY, error=ValidationError)
        if not self._live:
            await self._ready()
        service = self._service
        msg = service.outgoing(
            service.encode(message), headers=headers, message_id=message_id, persistent=persistent
        )
        target = queue
        if delay:
            target = await service.delay_queue(queue, delay)
        async with self._window:
            await service._publish("", target, msg, mandatory=True)
        return msg.message_id

    async def publish(
        self,
        exchange: str,
        routing_key: str,
        message: Any,
        *,
        headers: Mapping[str, Any] | None = None,
        message_id: str | None = None,
        persistent: bool = True,
    ) -> str:
        """Publish ``message`` to ``exchange`` with ``routing_key``; return its id.

        A message that no binding matches is dropped by the broker, as in AMQP.
        """
        check_queue(exchange, "exchange name")
        check_routing_key(routing_key)
        if not self._live:
            await self._ready()
        service = self._service
        msg = service.outgoing(
            service.encode(message), headers=headers, message_id=message_id, persistent=persistent
        )
        async with self._window:
            await service._publish(exchange, routing_key, msg, mandatory=False)
        return msg.message_id

    async def send_many(self, queue: str, messages: Iterable[Any]) -> list[str]:
        """Send many messages to ``queue`` with up to ``max_in_flight`` confirms pending.

        Returns the ids in order. Order of arrival is not guaranteed under concurrency.
        """
        return list(await asyncio.gather(*(self.send(queue, m) for m in messages)))

    async def request(
        self,
        queue: str,
        message: Any,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        headers: Mapping[str, Any] | None = None,
    ) -> Any:
        """Send ``message`` to ``queue`` and wait for the handler's return value.

        Uses RabbitMQ's direct reply-to (no reply queue is declared).

        Raises:
            rtkit.errors.BackendUnavailable: No reply within ``timeout`` seconds.
            rtkit.errors.RemoteError: The handler failed for good.
        """
        check_queue(queue)
        check_seconds(timeout, "timeout", error=ValidationError)
        if not self._live:
            await self._ready()
        service = self._service
        msg = service.outgoing(
            service.encode(message),
            headers=headers,
            persistent=False,
            correlation_id=new_id(),
            reply_to=REPLY_TO,
        )
        reply = await service.backend.request("", queue, msg, timeout=timeout)
        error = reply.message.headers.get("x-rtkit-error")
        if error is not None:
            raise RemoteError(f"the handler of {queue!r} failed: {error}")
        return decode_any(reply.message.body)
