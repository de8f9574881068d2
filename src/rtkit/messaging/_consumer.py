"""``MessageConsumer`` and ``ConsumerHandle``: the delivery pipeline.

A delivery is checked (size, content type, JSON, the model), deduplicated when
a [`DedupStore`][rtkit.messaging.DedupStore] is given, and handed to the
handler. Returning acks it (and answers a request); raising retries it through
a delay tier queue, then dead-letters it with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import json
import logging
from typing import Any

import pydantic

from .._core.lifecycle import DEFAULT_CLOSE_TIMEOUT
from .._core.validate import check_id, check_int, check_seconds
from ..errors import RtkitError, ValidationError
from ._client import ServiceClient
from ._models import DeadLetterReason, Envelope, Handler, int_header
from ._retry import RetryPolicy
from ._service import RabbitMQService
from ._wire import check_queue, clean_headers, is_json, text
from .brokers.base import BrokerConsumer, Delivery, OutgoingMessage
from .dedup._store import DedupStore

__all__ = ["ConsumerHandle", "MessageConsumer"]

log = logging.getLogger("rtkit.messaging")

MAX_PREFETCH = 65_535

_REJECTED: Any = object()  # what _decode returns for a body it dead-lettered


def _accepts_envelope(handler: Handler) -> bool:
    try:
        params = list(inspect.signature(handler).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = [
        p
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    return len(positional) >= 2 or any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params)


def _dedup_key(message_id: str) -> str | None:
    """The id to deduplicate on; ``None`` for one no store can key on (a foreign producer's)."""
    try:
        return check_id(message_id, "message_id")
    except ValidationError:
        return None


class ConsumerHandle:
    """A running consumer; :meth:`stop` it, or read its counters.

    Attributes:
        queue: The queue consumed.
        handled: Messages whose handler returned normally.
        retried: Failed messages sent to a delay tier for another attempt.
        dead_lettered: Messages sent to the dead-letter queue.
        duplicates: Messages skipped because the dedup store had seen their id.
    """

    def __init__(
        self,
        service: RabbitMQService,
        queue: str,
        handler: Handler,
        *,
        retry: RetryPolicy,
        model: Any,
        max_message_bytes: int,
        dedup: DedupStore | None,
        close_timeout: float,
    ) -> None:
        self.queue = queue
        self.handled = 0
        self.retried = 0
        self.dead_lettered = 0
        self.duplicates = 0
        self._service = service
        self._handler = handler
        self._with_envelope = _accepts_envelope(handler)
        self._retry = retry
        self._adapter: pydantic.TypeAdapter[Any] | None = (
            None if model is None else pydantic.TypeAdapter(model)
        )
        self._max_bytes = max_message_bytes
        self._dedup = dedup
        self._close_timeout = close_timeout
        self._broker_consumer: BrokerConsumer | None = None
        self._in_flight: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self._stopped = asyncio.Event()
        self._unregister = service.on_close(self._stop)

    @property
    def in_flight(self) -> int:
        """How many handlers are running right now."""
        return len(self._in_flight)

    @property
    def active(self) -> bool:
        """True until :meth:`stop` is called."""
        return not self._stopping

    async def _start(self, prefetch: int) -> None:
        try:
            self._broker_consumer = await self._service.backend.consume(
                self.queue, self._on_delivery, prefetch=prefetch
            )
        except BaseException:
            self._unregister()
            raise

    async def stop(self) -> None:
        """Stop taking deliveries, let running handlers finish, then close the channel.

        Handlers still running after the consumer's ``close_timeout`` seconds are
        cancelled; their messages are not acked, so the broker delivers them again.
        """
        await self._stop(self._close_timeout)

    async def _stop(self, timeout: float) -> None:
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        try:
            bc = self._broker_consumer
            if bc is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(bc.cancel(), timeout)
            await self._drain(timeout)
            if bc is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(bc.close(), timeout)
        finally:
            self._unregister()
            self._stopped.set()

    async def _drain(self, timeout: float) -> None:
        tasks = self._in_flight - {asyncio.current_task()}  # stop() from a handler
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)

    # -- the delivery pipeline ---------------------------------------------------

    async def _on_delivery(self, delivery: Delivery) -> None:
        if self._stopping:
            await delivery.nack(requeue=True)
            return
        task = asyncio.current_task()
        if task is not None:
            self._in_flight.add(task)
        try:
            await self._process(delivery)
        finally:
            if task is not None:
                self._in_flight.discard(task)

    async def _process(self, delivery: Delivery) -> None:
        msg = delivery.message
        attempt = int_header(msg.headers.get("x-retry-count"), 0) + 1
        payload = await self._decode(delivery, attempt)
        if payload is _REJECTED:
            return
        dedup = self._dedup
        key = None if dedup is None else _dedup_key(msg.message_id)
        if dedup is not None and key is not None:
            state = await dedup.claim(key)
            if state == "done":
                self.duplicates += 1
                await delivery.ack()
                return
            if state == "busy":
                # Another delivery of this id is being handled right now (e.g. the
                # old channel's handler after a reconnect): look again shortly.
                await asyncio.sleep(0.2)
                await delivery.nack(requeue=True)
                return
        try:
            result = await self._call(payload, delivery, attempt)
        except asyncio.CancelledError:
            if dedup is not None and key is not None:
                with contextlib.suppress(Exception):
                    await dedup.release(key)
            raise
        except Exception as exc:
            if dedup is not None and key is not None:
                await dedup.release(key)
            await self._failed(delivery, exc, attempt)
            return
        if dedup is not None and key is not None:
            await dedup.complete(key)
        if msg.reply_to:
            await self._reply(msg, result, error=None)
        self.handled += 1
        await delivery.ack()

    async def _decode(self, delivery: Delivery, attempt: int) -> Any:
        """The payload, or ``_REJECTED`` after dead-lettering a body that cannot be one."""
        msg = delivery.message
        if len(msg.body) > self._max_bytes:
            error = f"body is {len(msg.body)} bytes, more than {self._max_bytes}"
            await self._dead_letter(delivery, "too_large", "PayloadTooLarge", error, attempt - 1)
            return _REJECTED
        if not is_json(msg.content_type):
            error = f"content type {msg.content_type!r} is not application/json"
            await self._dead_letter(delivery, "content_type", "ValidationError", error, attempt - 1)
            return _REJECTED
        try:
            if self._adapter is None:
                return json.loads(msg.body)
            return self._adapter.validate_json(msg.body)
        except pydantic.ValidationError as exc:
            invalid_json = any(e["type"] == "json_invalid" for e in exc.errors())
            reason: DeadLetterReason = "invalid_json" if invalid_json else "validation_failed"
            await self._dead_letter(delivery, reason, "ValidationError", str(exc), attempt - 1)
        except (ValueError, UnicodeDecodeError) as exc:
            await self._dead_letter(delivery, "invalid_json", "ValidationError", str(exc), 0)
        return _REJECTED

    async def _call(self, payload: Any, delivery: Delivery, attempt: int) -> Any:
        if not self._with_envelope:
            return await self._handler(payload)
        msg = delivery.message
        envelope = Envelope(
            message_id=msg.message_id,
            timestamp=msg.timestamp,
            headers=msg.headers,
            attempt=attempt,
            redelivered=delivery.redelivered,
            queue=self.queue,
            exchange=delivery.exchange,
            routing_key=delivery.routing_key,
            correlation_id=msg.correlation_id,
            reply_to=msg.reply_to,
        )
        return await self._handler(payload, envelope)

    async def _reply(self, msg: OutgoingMessage, result: Any, *, error: str | None) -> None:
        service = self._service
        try:
            body = b"null" if error is not None else service.encode(result)
        except ValidationError as exc:
            body, error = b"null", f"the reply is not JSON-serializable: {exc}"
        headers = {} if error is None else {"x-rtkit-error": text(error)}
        reply = service.outgoing(
            body, headers=headers, persistent=False, correlation_id=msg.correlation_id
        )
        try:
            await service.backend.publish("", msg.reply_to or "", reply, mandatory=False)
        except RtkitError as exc:
            log.warning("could not send the reply to %s: %s", msg.message_id, exc)

    async def _failed(self, delivery: Delivery, exc: Exception, attempt: int) -> None:
        msg = delivery.message
        if attempt >= self._retry.max_attempts:
            await self._dead_letter(
                delivery, "handler_failed", type(exc).__qualname__, str(exc), attempt
            )
            return
        service = self._service
        try:
            tier = await service.delay_queue(self.queue, self._retry.delay(attempt))
            headers = clean_headers(msg.headers)
            headers["x-retry-count"] = attempt
            headers["x-last-error"] = text(f"{type(exc).__name__}: {exc}")
            again = dataclasses.replace(msg, headers=headers)
            await service.backend.publish("", tier, again, mandatory=True)
        except RtkitError as publish_error:
            log.warning(
                "could not schedule retry %d of %s (%s); requeueing",
                attempt,
                msg.message_id,
                publish_error,
            )
            await delivery.nack(requeue=True)
            return
        self.retried += 1
        await delivery.ack()

    async def _dead_letter(
        self,
        delivery: Delivery,
        reason: DeadLetterReason,
        error_type: str,
        error: str,
        attempts: int,
    ) -> None:
        msg = delivery.message
        log.warning(
            "dead-lettering %s from %s: %s (%s)", msg.message_id, self.queue, reason, error_type
        )
        if msg.reply_to:
            await self._reply(msg, None, error=f"{reason}: {error_type}: {error}")
        dlq = self._service.dead_letter_queue(self.queue)
        why = {
            "x-death-reason": reason,
            "x-exception-type": text(error_type),
            "x-exception-message": text(error),
            "x-attempts": attempts,
        }
        kept = dlq is not None and await self._publish_dead(delivery, dlq, why)
        self.dead_lettered += 1
        if kept:
            await delivery.ack()
        else:
            await delivery.nack(requeue=False)

    async def _publish_dead(self, delivery: Delivery, dlq: str, why: dict[str, Any]) -> bool:
        """Publish the dead letter to ``dlq``; False if there is no such queue."""
        msg = delivery.message
        headers = clean_headers(msg.headers)
        headers.update(why)
        headers["x-original-queue"] = self.queue
        headers["x-original-exchange"] = delivery.exchange
        headers["x-original-routing-key"] = delivery.routing_key
        dead = dataclasses.replace(msg, headers=headers, correlation_id=None, reply_to=None)
        try:
            await self._service.backend.publish("", dlq, dead, mandatory=True)
        except RtkitError as exc:
            log.warning("no dead-letter queue %r (%s); rejecting %s", dlq, exc, msg.message_id)
            return False
        return True


class MessageConsumer(ServiceClient):
    """Consumes queues: each :meth:`consume` gets its own channel and prefetch window.

    ``MessageConsumer(service)`` consumes through ``service`` (and never closes
    it); ``MessageConsumer.from_url(url, ...)`` through a service of its own on
    ``url``, closed with the consumer; ``MessageConsumer()`` through a private
    in-memory one. ``consumer.service`` is the service in use; ``close()`` stops
    every handle gracefully.

    Args:
        service: The service to consume through.
        dedup: An optional store that makes a handler run at most once per
            ``message_id`` within its window (never closed by the consumer).
        close_timeout: Seconds ``close()`` and ``ConsumerHandle.stop()`` let running
            handlers finish before cancelling them (their messages are redelivered).
    """

    def __init__(
        self,
        service: RabbitMQService | None = None,
        *,
        dedup: DedupStore | None = None,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
    ) -> None:
        self.dedup = dedup
        self.close_timeout = check_seconds(close_timeout, "close_timeout")
        self._handles: list[ConsumerHandle] = []
        self._attach(service)

    async def consume(
        self,
        queue: str,
        handler: Handler,
        *,
        prefetch: int = 10,
        retry: RetryPolicy | None = None,
        model: Any = None,
        max_message_bytes: int | None = None,
    ) -> ConsumerHandle:
        """Start handling the messages of ``queue``.

        The handler gets the decoded payload (validated into ``model`` if given),
        and the [`Envelope`][rtkit.messaging.Envelope] too if it takes two
        arguments. Returning acks the message (and, for a request, sends the
        return value as the reply); raising retries it per ``retry`` through a
        delay tier queue, then dead-letters it. A body that is not JSON, has
        another content type, is too large or does not validate goes straight to
        the dead-letter queue with the reason.

        Args:
            queue: The queue to consume.
            handler: ``async def handler(payload)`` or ``async def handler(payload, envelope)``.
            prefetch: Most unacknowledged deliveries at once (so most concurrent handlers).
            retry: The retry policy (default ``RetryPolicy()``: 3 attempts).
            model: A pydantic model (or any type pydantic validates) for the payload.
            max_message_bytes: Largest accepted body (default: the service's).

        Raises:
            rtkit.errors.ValidationError: A bad argument.
            rtkit.errors.NotFound: No such queue.
            rtkit.errors.Closed: The consumer (or its service) was closed.
        """
        check_queue(queue)
        check_int(prefetch, "prefetch", maximum=MAX_PREFETCH, error=ValidationError)
        if max_message_bytes is not None:
            check_int(max_message_bytes, "max_message_bytes", error=ValidationError)
        if not callable(handler):
            raise ValidationError("handler must be an async callable")
        if not self._live:
            await self._ready()
        handle = ConsumerHandle(
            self._service,
            queue,
            handler,
            retry=retry or RetryPolicy(),
            model=model,
            max_message_bytes=max_message_bytes or self._service.max_message_bytes,
            dedup=self.dedup,
            close_timeout=self.close_timeout,
        )
        await handle._start(prefetch)
        self._handles.append(handle)
        return handle

    async def _close(self) -> None:
        """Stop every handle gracefully, then close the service if it is this consumer's."""
        handles, self._handles = self._handles, []
        await asyncio.gather(*(h.stop() for h in handles), return_exceptions=True)
        await super()._close()
