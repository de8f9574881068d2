"""The service registry contract, its data model and the logic every backend shares.

A backend stores *records* (one per live instance) and answers four questions:
upsert a record with a time-to-live, remove one, list the live ones of a service,
and count the live ones of every service. Everything else (validation,
heartbeats, load balancing, watching) lives here, once.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import json
import logging
import random
import re
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, JsonValue, TypeAdapter

from .._clock import Clock, SystemClock
from .._ids import new_id
from .._lifecycle import AsyncResource
from .._validation import check_id
from ..errors import (
    BackendUnavailable,
    ConfigurationError,
    PayloadTooLarge,
    ServiceNotFound,
    ValidationError,
)

if TYPE_CHECKING:
    import redis.asyncio as aioredis

__all__ = [
    "MAX_META_BYTES",
    "ServiceChange",
    "ServiceInstance",
    "ServiceRegistry",
    "Strategy",
]

log = logging.getLogger("rtkit.registry")

Strategy = Literal["random", "round_robin", "p2c"]
"""How `ServiceRegistry.get_service()` picks one instance."""

MAX_META_BYTES = 4096
"""The largest ``meta`` an instance may carry, as UTF-8 JSON."""

MIN_TTL = 0.2
MAX_TTL = 86_400.0

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-/]{0,127}$")
_STRATEGIES = ("random", "round_robin", "p2c")


class ServiceInstance(BaseModel):
    """One live instance of a service, as `ServiceRegistry.discover()` returns it.

    Attributes:
        instance_id: The id `ServiceRegistry.register()` returned,
            ``"<name>:<uuid7>"``.
        name: The service name.
        host: Where the instance listens.
        port: Its TCP port.
        meta: Free JSON metadata given at registration (version, zone, load...).
        registered_at: When it registered (epoch seconds, registry time).
        expires_at: When it vanishes unless it heartbeats again (epoch seconds).
    """

    model_config = ConfigDict(frozen=True)

    instance_id: str
    name: str
    host: str
    port: int
    meta: dict[str, JsonValue] = {}
    registered_at: float
    expires_at: float

    @property
    def url(self) -> str:
        """``http://host:port``, with IPv6 hosts bracketed."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


class ServiceChange(BaseModel):
    """One change `ServiceRegistry.watch()` reports.

    ``kind`` is ``"added"`` when an instance appeared and ``"removed"`` when it
    deregistered or expired; ``instance`` is the instance as last seen.
    """

    model_config = ConfigDict(frozen=True)

    kind: Literal["added", "removed"]
    instance: ServiceInstance


@dataclass(frozen=True)
class _Record:
    """What a backend stores for an instance (everything but the times)."""

    instance_id: str
    name: str
    host: str
    port: int
    meta_json: str

    def to_json(self) -> str:
        fields = {"instance_id": self.instance_id, "name": self.name, "host": self.host}
        head = json.dumps(fields, separators=(",", ":"))[:-1]
        return f'{head},"port":{self.port},"meta":{self.meta_json}}}'

    def instance(self, registered_at: float, expires_at: float) -> ServiceInstance:
        return ServiceInstance(
            instance_id=self.instance_id,
            name=self.name,
            host=self.host,
            port=self.port,
            meta=json.loads(self.meta_json),
            registered_at=registered_at,
            expires_at=expires_at,
        )


_INSTANCES: TypeAdapter[list[ServiceInstance]] = TypeAdapter(list[ServiceInstance])


def instances_from_json(rows: Iterable[tuple[str, str, str]]) -> list[ServiceInstance]:
    """Rebuild instances from ``(registered_at, expires_at, record JSON)`` rows.

    The record JSON is what ``_Record.to_json`` stored; the times are JSON numbers
    as text. One JSON document is parsed and validated in pydantic-core (much
    faster than one model per row when discover returns thousands).
    """
    parts = [f'{{"registered_at":{r},"expires_at":{e},{data[1:]}' for r, e, data in rows]
    return _INSTANCES.validate_json("[" + ",".join(parts) + "]")


def check_service_name(name: Any) -> str:
    """Return ``name`` if it is a valid service name, else raise `ValidationError`.

    A service name is 1-128 characters of letters, digits and ``_.-/``, starting
    with a letter or digit (``user-service``, ``billing/v2``).
    """
    check_id(name, "service name")
    if not _NAME_RE.match(name):
        raise ValidationError(
            f"invalid service name {name!r}: 1-128 letters, digits and _.-/ "
            "(starting with a letter or digit)"
        )
    return str(name)


def split_instance_id(instance_id: Any) -> str:
    """The service name inside an instance id, or raise `ValidationError`."""
    check_id(instance_id, "instance_id")
    name, sep, _ = str(instance_id).rpartition(":")
    if not sep:
        raise ValidationError(f"malformed instance id {instance_id!r}")
    return check_service_name(name)


def _check_ttl(ttl: Any) -> float:
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        raise ValidationError(f"ttl must be a number of seconds, got {type(ttl).__name__}")
    if not MIN_TTL <= ttl <= MAX_TTL:
        raise ValidationError(f"ttl must be between {MIN_TTL} and {MAX_TTL} seconds, got {ttl}")
    return float(ttl)


def _make_record(name: Any, host: Any, port: Any, meta: Any) -> _Record:
    name = check_service_name(name)
    check_id(host, "host")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ValidationError(f"port must be an integer in 1..65535, got {port!r}")
    if meta is None:
        meta = {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) for k in meta):
        raise ValidationError("meta must be a dict with string keys")
    try:
        meta_json = json.dumps(meta, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"meta must be JSON-serialisable: {exc}") from exc
    if len(meta_json.encode()) > MAX_META_BYTES:
        raise PayloadTooLarge(f"meta is larger than {MAX_META_BYTES} bytes as JSON")
    return _Record(f"{name}:{new_id()}", name, host, port, meta_json)


@dataclass
class _Registration:
    record: _Record
    ttl: float
    task: asyncio.Task[None] | None = None


class ServiceRegistry(AsyncResource, abc.ABC):
    """Register service instances with a time-to-live, discover and pick them.

    Build one with `from_url()`: ``memory://`` keeps everything in this
    process (tests, one-process apps); ``redis://...`` shares the registry
    between every process that uses the same Redis and prefix.

    Each registered instance lives for ``ttl`` seconds after its last heartbeat;
    the registry heartbeats every ``ttl / 3`` seconds until `deregister()`
    or `close()`. An instance whose process dies stops heartbeating and
    disappears from `discover()` within ``ttl`` (expired instances are
    filtered and pruned on every read) and from `watch()` streams within
    ``ttl + prune_interval`` (the janitor prunes and notifies).

    Use it as an async context manager, or call `close()`.
    """

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        prune_interval: float = 5.0,
        poll_interval: float = 5.0,
    ) -> None:
        if prune_interval <= 0 or poll_interval <= 0:
            raise ConfigurationError("prune_interval and poll_interval must be positive")
        self._clock: Clock = clock or SystemClock()
        self._prune_interval = float(prune_interval)
        self._poll_interval = float(poll_interval)
        self._own: dict[str, _Registration] = {}
        self._rr: dict[str, int] = {}
        self._in_flight: dict[str, int] = {}
        self._janitor: asyncio.Task[None] | None = None
        self._closed = False
        self._random = random.Random()

    # -- construction ---------------------------------------------------------------------

    @staticmethod
    def from_url(
        url: str = "memory://",
        *,
        prefix: str = "rtkit:",
        redis: aioredis.Redis | None = None,
        clock: Clock | None = None,
        prune_interval: float = 5.0,
        poll_interval: float = 5.0,
    ) -> ServiceRegistry:
        """Build a registry on the backend ``url`` names.

        Args:
            url: ``memory://`` or a Redis URL (``redis://host:6379/0``).
            prefix: Start of every Redis key and channel, so applications can share
                one Redis.
            redis: A ``redis.asyncio.Redis`` client (``decode_responses=True``) to
                borrow instead of opening one from ``url``; rtkit never closes it.
            clock: Where time comes from. On Redis the default is the Redis server's
                own clock (``TIME``, so hosts never disagree); injecting a clock
                (e.g. `ManualClock` in tests) makes the registry use
                that clock instead.
            prune_interval: Seconds between janitor passes that delete expired
                instances and notify watchers.
            poll_interval: Seconds between the backstop polls of `watch()`.

        Raises:
            ConfigurationError: For an unknown or malformed URL or bad settings.
        """
        from .._backends import backend_kind, check_prefix

        kind = backend_kind(url, component="ServiceRegistry")
        check_prefix(prefix)
        if kind == "memory":
            from .memory import MemoryServiceRegistry

            return MemoryServiceRegistry(
                clock=clock, prune_interval=prune_interval, poll_interval=poll_interval
            )
        from .redis import RedisServiceRegistry

        return RedisServiceRegistry(
            url,
            prefix=prefix,
            redis=redis,
            clock=clock,
            prune_interval=prune_interval,
            poll_interval=poll_interval,
        )

    # -- backend hooks --------------------------------------------------------------------

    @abc.abstractmethod
    async def _upsert(self, record: _Record, ttl: float) -> None:
        """Add ``record`` or extend its life to now + ``ttl`` (keeping registered_at)."""

    @abc.abstractmethod
    async def _remove(self, name: str, instance_id: str) -> bool:
        """Delete one instance; return whether it was there."""

    @abc.abstractmethod
    async def _live(self, name: str) -> list[ServiceInstance]:
        """Prune expired instances of ``name`` and return the live ones."""

    @abc.abstractmethod
    async def _counts(self) -> dict[str, int]:
        """Prune every service and return the live count of each non-empty one."""

    @abc.abstractmethod
    def _changes(self, name: str) -> contextlib.AbstractAsyncContextManager[_Waiter]:
        """Subscribe to change notifications for ``name``."""

    @abc.abstractmethod
    async def _close_backend(self) -> None:
        """Release backend resources (connections)."""

    # -- public API -----------------------------------------------------------------------

    async def register(
        self,
        name: str,
        *,
        host: str,
        port: int,
        meta: dict[str, Any] | None = None,
        ttl: float = 30.0,
        heartbeat: bool = True,
    ) -> str:
        """Register an instance of service ``name`` and return its instance id.

        Args:
            name: The service name (1-128 of letters, digits, ``_.-/``).
            host: Host or address where the instance listens.
            port: Its TCP port.
            meta: JSON metadata (at most 4 KiB), returned by `discover()`.
            ttl: Seconds the instance lives after each heartbeat (0.2 to 86400).
            heartbeat: Keep it alive from this registry every ``ttl / 3`` seconds
                until `deregister()` or `close()` (default). With
                ``False`` call `refresh()` yourself.

        Raises:
            ValidationError: For a bad name, host, port, meta or ttl (nothing is
                registered).
            BackendUnavailable: When Redis does not answer.
        """
        self._check_open()
        record = _make_record(name, host, port, meta)
        ttl = _check_ttl(ttl)
        await self._upsert(record, ttl)
        reg = _Registration(record, ttl)
        self._own[record.instance_id] = reg
        if heartbeat:
            reg.task = asyncio.create_task(
                self._heartbeat(reg), name=f"rtkit-registry-heartbeat-{record.instance_id}"
            )
        self._ensure_janitor()
        return record.instance_id

    async def refresh(self, instance_id: str) -> None:
        """Heartbeat once: extend the life of an instance registered here by its ttl.

        An instance that already expired is registered again under the same id.

        Raises:
            NotFound: If ``instance_id`` was not registered through this registry.
        """
        from ..errors import NotFound

        self._check_open()
        reg = self._own.get(instance_id)
        if reg is None:
            raise NotFound(f"instance {instance_id!r} was not registered here")
        await self._upsert(reg.record, reg.ttl)

    async def deregister(self, instance_id: str) -> bool:
        """Remove an instance (registered by any process) and stop its heartbeat.

        Returns:
            Whether the instance was live in the registry.

        Raises:
            ValidationError: If ``instance_id`` is not an instance id.
        """
        name = split_instance_id(instance_id)
        reg = self._own.pop(instance_id, None)
        if reg is not None and reg.task is not None:
            reg.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reg.task
        return await self._remove(name, instance_id)

    async def discover(self, name: str) -> list[ServiceInstance]:
        """The live instances of ``name`` (an empty list if none), oldest first.

        Raises:
            ValidationError: For an invalid service name.
            BackendUnavailable: When Redis does not answer.
        """
        self._check_open()
        self._ensure_janitor()
        live = await self._live(check_service_name(name))
        return sorted(live, key=lambda i: (i.registered_at, i.instance_id))

    async def services(self) -> dict[str, int]:
        """Every service with at least one live instance, with its live count."""
        self._check_open()
        self._ensure_janitor()
        return dict(sorted((await self._counts()).items()))

    async def get_service(self, name: str, strategy: Strategy = "random") -> ServiceInstance:
        """Pick one live instance of ``name``.

        Args:
            name: The service name.
            strategy: ``"random"`` (uniform), ``"round_robin"`` (in instance-id
                order, one counter per service in this process) or ``"p2c"``
                (power of two choices: two random instances, the less loaded
                wins). The load of an instance is the number of requests this
                process has in flight to it (see `track()`, the gateway uses
                it) plus the number in its ``meta["load"]``, if any.

        Raises:
            ServiceNotFound: When no instance of ``name`` is live.
            ValidationError: For a bad name or strategy.
        """
        if strategy not in _STRATEGIES:
            raise ValidationError(f"unknown strategy {strategy!r}, expected one of {_STRATEGIES}")
        return self.pick(name, await self.discover(name), strategy)

    def pick(
        self, name: str, instances: Sequence[ServiceInstance], strategy: Strategy = "random"
    ) -> ServiceInstance:
        """Pick one of ``instances`` of service ``name`` like `get_service()` does.

        For callers that keep their own (for example briefly cached) instance list.

        Raises:
            ServiceNotFound: When ``instances`` is empty.
            ValidationError: For an unknown strategy.
        """
        if strategy not in _STRATEGIES:
            raise ValidationError(f"unknown strategy {strategy!r}, expected one of {_STRATEGIES}")
        if not instances:
            raise ServiceNotFound(f"no live instance of service {name!r}")
        if strategy == "random" or len(instances) == 1:
            return self._random.choice(instances)
        if strategy == "round_robin":
            ordered = sorted(instances, key=lambda i: i.instance_id)
            turn = self._rr.get(name, 0)
            self._rr[name] = turn + 1
            return ordered[turn % len(ordered)]
        first, second = self._random.sample(list(instances), 2)
        return first if self.load(first) <= self.load(second) else second

    def load(self, instance: ServiceInstance) -> float:
        """The load `get_service()` uses for ``"p2c"``: local in-flight + ``meta["load"]``."""
        reported = instance.meta.get("load", 0)
        extra = float(reported) if isinstance(reported, int | float) else 0.0
        return self._in_flight.get(instance.instance_id, 0) + extra

    @contextlib.contextmanager
    def track(self, instance: ServiceInstance) -> Iterator[None]:
        """Count a request to ``instance`` as in flight while the block runs (for p2c)."""
        key = instance.instance_id
        self._in_flight[key] = self._in_flight.get(key, 0) + 1
        try:
            yield
        finally:
            left = self._in_flight[key] - 1
            if left:
                self._in_flight[key] = left
            else:
                del self._in_flight[key]

    async def watch(self, name: str, *, initial: bool = True) -> AsyncIterator[ServiceChange]:
        """Yield each change of the live instances of ``name``, as it happens.

        Changes are pushed (memory: in process; Redis: pub/sub) and a poll every
        ``poll_interval`` seconds is the backstop for lost messages and for
        expiries nobody pruned yet. Changes between two looks are reported as a
        difference, so a very short-lived instance may never be seen.

        Args:
            name: The service to watch.
            initial: First yield an ``"added"`` change for every instance already
                live.

        Example:
            ```python
            async for change in registry.watch("user-service"):
                print(change.kind, change.instance.url)
            ```
        """
        name = check_service_name(name)
        self._check_open()
        self._ensure_janitor()
        async with self._changes(name) as waiter:
            known: dict[str, ServiceInstance] = {}
            first = True
            while True:
                try:
                    current = {i.instance_id: i for i in await self._live(name)}
                except BackendUnavailable as exc:
                    log.warning("registry watch of %r: %s", name, exc)
                    await waiter.wait(self._poll_interval)
                    continue
                if not first or initial:
                    for iid, inst in known.items():
                        if iid not in current:
                            yield ServiceChange(kind="removed", instance=inst)
                    for iid, inst in current.items():
                        if iid not in known:
                            yield ServiceChange(kind="added", instance=inst)
                known, first = current, False
                await waiter.wait(self._poll_interval)

    async def close(self) -> None:
        """Stop heartbeats and the janitor, deregister this registry's instances, disconnect."""
        if self._closed:
            return
        self._closed = True
        tasks = [r.task for r in self._own.values() if r.task is not None]
        if self._janitor is not None:
            tasks.append(self._janitor)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for iid, reg in list(self._own.items()):
            try:
                await self._remove(reg.record.name, iid)
            except BackendUnavailable as exc:
                log.warning("could not deregister %s on close: %s", iid, exc)
        self._own.clear()
        await self._close_backend()

    # -- internals ------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ConfigurationError("this ServiceRegistry is closed")

    async def _heartbeat(self, reg: _Registration) -> None:
        interval = reg.ttl / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await self._upsert(reg.record, reg.ttl)
            except BackendUnavailable as exc:
                log.warning("heartbeat of %s failed: %s", reg.record.instance_id, exc)

    def _ensure_janitor(self) -> None:
        if self._janitor is None or self._janitor.done():
            self._janitor = asyncio.create_task(self._janitor_loop(), name="rtkit-registry-janitor")

    async def _janitor_loop(self) -> None:
        while True:
            await asyncio.sleep(self._prune_interval)
            try:
                await self._counts()
            except BackendUnavailable as exc:
                log.warning("registry janitor: %s", exc)


class _Waiter(abc.ABC):
    """Waits for a change notification (or a timeout)."""

    @abc.abstractmethod
    async def wait(self, timeout: float) -> None:
        """Return when a change was announced or after ``timeout`` seconds."""
