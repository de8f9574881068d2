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
from .._core.validate import MAX_JSON_DEPTH, check_id, check_int, check_seconds
from ..errors import RtkitError, ValidationError
from ._client import ServiceClient
from ._headers import INVALID_HEADERS, count_header
from ._models import DeadLetterReason, Envelope, Handler
from ._retry import RetryPolicy
from ._service import RabbitMQService
from ._wire import check_queue, clean_headers, is_json, nests_too_deep, text
from .brokers.base import BrokerConsumer, Delivery, OutgoingMessage
from .dedup._store import DedupStore

__all__ = ["ConsumerHandle", "MessageConsumer"]

log = logging.getLogger("rtkit.messaging")

MAX_PREFETCH = 65_535

_REJECTED: Any = object()  # what _decode returns for a body it dead-lettered
_COUNTERS = {"duplicate": "duplicates", "internal_error": "internal_errors"}


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


class _Settled(Delivery):
    """A delivery that remembers whether it was settled, so it is settled exactly once."""

    __slots__ = ("done", "inner")

    def __init__(self, inner: Delivery) -> None:
        super().__init__(
            inner.message,
            exchange=inner.exchange,
            routing_key=inner.routing_key,
            redelivered=inner.redelivered,
        )
        self.inner = inner
        self.done = False

    async def ack(self) -> None:
        if not self.done:
            self.done = True
            await self.inner.ack()

    async def nack(self, *, requeue: bool) -> None:
        if not self.done:
            self.done = True
            await self.inner.nack(requeue=requeue)


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
        dead_lettered: Messages put in the dead-letter queue.
        dropped: Final failures with no dead-letter queue to go to (none was
            declared, or it is gone): rejected, so the broker drops them, unless
            the queue has a dead-letter exchange rtkit was not told about.
        duplicates: Messages skipped because the dedup store had seen their id.
        internal_errors: Messages rtkit itself failed on (dead-lettered with
            reason ``internal_error``; a bug, please report it).
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
        self.dropped = 0
        self.duplicates = 0
        self.internal_errors = 0
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
            self._service._consumed[self.queue] = self._adapter  # for asyncapi()
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
        hooks = self._service._telemetry
        if hooks is None:
            await self._deliver(delivery)
        else:  # telemetry on: a CONSUMER span and metrics (rtkit.telemetry)
            await hooks.process(self.queue, delivery, self._deliver)

    def _count(self, outcome: str, reason: str | None = None) -> None:
        """A delivery was settled with ``outcome`` (a counter's name): count it."""
        counter = _COUNTERS.get(outcome, outcome)
        setattr(self, counter, getattr(self, counter) + 1)
        hooks = self._service._telemetry
        if hooks is not None:
            hooks.outcome(self.queue, outcome, reason)

    async def _deliver(self, delivery: Delivery) -> None:
        if self._stopping:
            await delivery.nack(requeue=True)
            return
        task = asyncio.current_task()
        if task is not None:
            self._in_flight.add(task)
        settled = _Settled(delivery)
        try:
            await self._process(settled)
        except Exception as exc:
            # A bug, or a message nobody foresaw: it must not stay unacknowledged
            # (a prefetch window full of those stops the consumer for good).
            await self._internal_error(settled, exc)
        finally:
            if task is not None:
                self._in_flight.discard(task)

    async def _internal_error(self, delivery: _Settled, exc: Exception) -> None:
        self._count("internal_error", type(exc).__qualname__)
        log.error(
            "rtkit failed on message %r from %s",
            delivery.message.message_id,
            self.queue,
            exc_info=exc,
        )
        if delivery.done:
            return
        try:
            await self._dead_letter(delivery, "internal_error", type(exc).__qualname__, str(exc), 0)
        except Exception:
            log.exception("could not dead-letter %r: rejecting it", delivery.message.message_id)
            self._count("dropped", "internal_error")
            await delivery.nack(requeue=False)

    async def _process(self, delivery: Delivery) -> None:
        msg = delivery.message
        attempt = count_header(msg.headers.get("x-retry-count"), 0) + 1
        payload = await self._decode(delivery, attempt)
        if payload is _REJECTED:
            return
        dedup = self._dedup
        key = None if dedup is None else _dedup_key(msg.message_id)
        if dedup is not None and key is not None and not await self._claim(delivery, dedup, key):
            return
        try:
            result = await self._call(payload, delivery, attempt)
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if task is not None and not task.cancelling():
                # The handler raised it without being cancelled: a failure like any other.
                failure = RuntimeError(f"the handler raised CancelledError({exc})")
                await self._handler_failed(delivery, failure, attempt, dedup, key)
                return
            if dedup is not None and key is not None:
                with contextlib.suppress(Exception):
                    await dedup.release(key)
            raise
        except Exception as exc:
            await self._handler_failed(delivery, exc, attempt, dedup, key)
            return
        await self._succeeded(delivery, result, dedup, key)

    async def _handler_failed(
        self,
        delivery: Delivery,
        exc: Exception,
        attempt: int,
        dedup: DedupStore | None,
        key: str | None,
    ) -> None:
        if dedup is not None and key is not None:
            try:
                await dedup.release(key)
            except RtkitError as release_error:
                log.warning("could not release %r: %s", key, release_error)
        await self._failed(delivery, exc, attempt)

    async def _claim(self, delivery: Delivery, dedup: DedupStore, key: str) -> bool:
        """Whether to run the handler; otherwise the delivery is settled here."""
        try:
            state = await dedup.claim(key)
        except RtkitError as exc:
            log.warning("the dedup store failed (%s): requeueing %r", exc, key)
            state = "busy"
        if state == "done":
            self._count("duplicate")
            await delivery.ack()
            return False
        if state == "busy":
            # Another delivery of this id is being handled right now (e.g. the
            # old channel's handler after a reconnect): look again shortly.
            await asyncio.sleep(0.2)
            await delivery.nack(requeue=True)
            return False
        return True

    async def _succeeded(
        self, delivery: Delivery, result: Any, dedup: DedupStore | None, key: str | None
    ) -> None:
        """The handler returned: mark the id done, answer a request, ack (in any case)."""
        msg = delivery.message
        if dedup is not None and key is not None:
            try:
                await dedup.complete(key)
            except RtkitError as exc:  # a later duplicate may run again: at least once
                log.warning("could not mark %r done: %s", key, exc)
        if msg.reply_to:
            await self._reply(msg, result, error=None)
        self._count("handled")
        await delivery.ack()

    async def _decode(self, delivery: Delivery, attempt: int) -> Any:
        """The payload, or ``_REJECTED`` after dead-lettering a body that cannot be one."""
        msg = delivery.message
        problem = self._problem(msg)
        if problem is not None:
            await self._dead_letter(delivery, *problem, attempt - 1)
            return _REJECTED
        try:
            if self._adapter is None:
                return json.loads(msg.body)
            return self._adapter.validate_json(msg.body)
        except pydantic.ValidationError as exc:
            invalid_json = any(e["type"] == "json_invalid" for e in exc.errors())
            reason: DeadLetterReason = "invalid_json" if invalid_json else "validation_failed"
            await self._dead_letter(delivery, reason, "ValidationError", str(exc), attempt - 1)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            await self._dead_letter(delivery, "invalid_json", "ValidationError", str(exc), 0)
        return _REJECTED

    def _problem(self, msg: OutgoingMessage) -> tuple[DeadLetterReason, str, str] | None:
        """Why a message cannot be handled before its body is even parsed, if it cannot."""
        if len(msg.body) > self._max_bytes:
            error = f"body is {len(msg.body)} bytes, more than {self._max_bytes}"
            return "too_large", "PayloadTooLarge", error
        if INVALID_HEADERS in msg.headers:
            why = text(msg.headers[INVALID_HEADERS])
            return "invalid_headers", "ValidationError", f"undecodable headers: {why}"
        if not is_json(msg.content_type):
            error = f"content type {text(msg.content_type)!r} is not application/json"
            return "content_type", "ValidationError", error
        if nests_too_deep(msg.body):
            error = f"the JSON nests deeper than {MAX_JSON_DEPTH} levels"
            return "too_deep", "ValidationError", error
        return None

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
            await service.backend.reply(msg.reply_to or "", reply)
        except Exception as exc:  # a reply is best effort: the requester times out
            log.warning("could not send the reply to %r: %r", msg.message_id, exc)

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
            await service._publish("", tier, again, mandatory=True)
        except ValidationError:
            raise  # the same publish would fail again: dead-lettered as internal_error
        except RtkitError as publish_error:
            log.warning(
                "could not schedule retry %d of %s (%s); requeueing",
                attempt,
                msg.message_id,
                publish_error,
            )
            await delivery.nack(requeue=True)
            return
        self._count("retried", type(exc).__qualname__)
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
        route = self._service.dead_letter_route(self.queue)
        why = {
            "x-death-reason": reason,
            "x-exception-type": text(error_type),
            "x-exception-message": text(error),
            "x-attempts": attempts,
        }
        if route is not None and await self._publish_dead(delivery, route, why):
            self._count("dead_lettered", reason)
            await delivery.ack()
            return
        if route is None:
            log.warning("%s has no dead-letter queue: dropping %r", self.queue, msg.message_id)
        self._count("dropped", reason)
        await delivery.nack(requeue=False)

    async def _publish_dead(
        self, delivery: Delivery, route: tuple[str, str], why: dict[str, Any]
    ) -> bool:
        """Publish the dead letter to ``route``; False if it has nowhere to go."""
        msg = delivery.message
        headers = clean_headers(msg.headers)
        headers.update(why)
        headers["x-original-queue"] = self.queue
        headers["x-original-exchange"] = text(delivery.exchange)
        headers["x-original-routing-key"] = text(delivery.routing_key)
        dead = dataclasses.replace(msg, headers=headers, correlation_id=None, reply_to=None)
        exchange, routing_key = route
        try:
            await self._service._publish(exchange, routing_key, dead, mandatory=True)
        except RtkitError as exc:
            log.warning(
                "cannot dead-letter %r to %r (%s): rejecting it", msg.message_id, routing_key, exc
            )
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
