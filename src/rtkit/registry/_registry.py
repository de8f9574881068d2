"""The service registry: validation, heartbeats, pick strategies, tracking, watching.

The backend (``backends/base.py``) only stores records; everything here is
shared by every backend, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from .._core.clock import Clock
from .._core.component import Component
from .._core.ids import new_id
from .._core.lifecycle import Janitor
from .._core.validate import (
    check_host,
    check_int,
    check_key,
    check_meta,
    check_name,
    check_seconds,
)
from ..errors import BackendUnavailable, NotFound, ServiceNotFound, ValidationError
from ._models import STRATEGIES, Record, ServiceChange, ServiceInstance, Strategy
from .backends.base import RegistryBackend
from .backends.memory import MemoryRegistryBackend

__all__ = ["ServiceRegistry"]

log = logging.getLogger("rtkit.registry")

MIN_TTL = 0.2
MAX_TTL = 86_400.0


def _service_name(name: Any) -> str:
    return check_name(name, "service name")


def _service_of(instance_id: Any) -> str:
    """The service name inside an instance id, or raise ``ValidationError``."""
    check_key(instance_id, "instance_id")
    name, sep, _ = str(instance_id).rpartition(":")
    if not sep:
        raise ValidationError(f"malformed instance id {instance_id!r:.80}")
    return _service_name(name)


def _check_strategy(strategy: Any) -> None:
    if strategy not in STRATEGIES:
        raise ValidationError(f"unknown strategy {strategy!r}, expected one of {STRATEGIES}")


def _make_record(name: Any, host: Any, port: Any, meta: Any) -> Record:
    name = _service_name(name)
    check_host(host)
    check_int(port, "port", maximum=65535, error=ValidationError)
    meta_json = check_meta({} if meta is None else meta)
    return Record(f"{name}:{new_id()}", name, host, port, meta_json)


@dataclass
class _Registration:
    record: Record
    ttl: float
    task: asyncio.Task[None] | None = None


class ServiceRegistry(Component):
    """Register service instances with a time-to-live, discover and pick them.

    ``ServiceRegistry()`` keeps everything in this process (tests, one-process
    apps); ``ServiceRegistry.from_url("redis://...")`` shares the registry
    between every process that uses the same Redis and prefix, and
    ``from_url("memory://NAME")`` between the registries of one process opened
    with that name.

    Each registered instance lives for ``ttl`` seconds after its last heartbeat;
    the registry heartbeats every ``ttl / 3`` seconds until `deregister()`
    or `close()`. An instance whose process dies stops heartbeating and
    disappears from `discover()` within ``ttl`` (expired instances are
    filtered and pruned on every read) and from `watch()` streams within
    ``ttl + prune_interval`` (the janitor prunes and notifies).

    Use it as an async context manager, or call `close()`; afterwards every
    operation raises [`Closed`][rtkit.errors.Closed].

    Args:
        backend: Where instances are kept; ``None`` for a private memory backend.
        clock: Where time comes from for the private memory backend
            (``from_url`` gives the backend its clock; on Redis, without one, the
            Redis server's ``TIME`` is used, so hosts never disagree).
        prune_interval: Seconds between janitor passes that delete expired
            instances and notify watchers.
        poll_interval: Seconds between the backstop polls of `watch()`.

    Raises:
        rtkit.errors.ConfigurationError: A bad interval.
    """

    _backends = {
        "memory": "rtkit.registry.backends.memory:MemoryRegistryBackend",
        "redis": "rtkit.registry.backends.redis:RedisRegistryBackend",
    }

    def __init__(
        self,
        backend: RegistryBackend | None = None,
        *,
        clock: Clock | None = None,
        prune_interval: float = 5.0,
        poll_interval: float = 5.0,
    ) -> None:
        prune_interval = check_seconds(prune_interval, "prune_interval")
        self._poll_interval = check_seconds(poll_interval, "poll_interval")
        self._backend: RegistryBackend = (
            backend if backend is not None else MemoryRegistryBackend(clock=clock)
        )
        self._own: dict[str, _Registration] = {}
        self._rr: dict[str, int] = {}
        self._in_flight: dict[str, int] = {}
        self._random = random.Random()
        self._janitor = Janitor(self._prune, prune_interval, "rtkit-registry-janitor")

    # -- life cycle -----------------------------------------------------------------------

    async def _start(self) -> None:
        """Start the janitor."""
        self._janitor.start()

    async def _close(self) -> None:
        """Stop heartbeats and the janitor, deregister this registry's instances, disconnect."""
        tasks = [r.task for r in self._own.values() if r.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._janitor.stop()
        try:
            for iid, reg in list(self._own.items()):
                try:
                    await self._backend.remove(reg.record.name, iid)
                except BackendUnavailable as exc:
                    log.warning("could not deregister %s on close: %s", iid, exc)
            self._own.clear()
        finally:
            await self._backend.close()

    async def _prune(self) -> None:
        try:
            await self._backend.counts()
        except BackendUnavailable as exc:
            log.warning("registry janitor: %s", exc)

    async def _heartbeat(self, reg: _Registration) -> None:
        interval = reg.ttl / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await self._backend.upsert(reg.record, reg.ttl)
            except BackendUnavailable as exc:
                log.warning("heartbeat of %s failed: %s", reg.record.instance_id, exc)

    # -- registering ----------------------------------------------------------------------

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
            name: The service name (a *name* in rtkit's validation rules:
                ``user-service``, ``billing/v2``).
            host: Where the instance listens: a hostname, an IPv4 or an IPv6
                literal (no brackets), nothing else (no userinfo, port or path).
            port: Its TCP port.
            meta: JSON metadata (at most 4 KiB), returned by `discover()`.
            ttl: Seconds the instance lives after each heartbeat (more than 0.2,
                at most 86400).
            heartbeat: Keep it alive from this registry every ``ttl / 3`` seconds
                until `deregister()` or `close()` (default). With
                ``False`` call `refresh()` yourself.

        Raises:
            rtkit.errors.ValidationError: A bad name, host, port, meta or ttl
                (nothing is registered).
            rtkit.errors.BackendUnavailable: Redis does not answer.
            rtkit.errors.Closed: The registry was closed.
        """
        await self._ready()
        record = _make_record(name, host, port, meta)
        ttl = check_seconds(ttl, "ttl", minimum=MIN_TTL, maximum=MAX_TTL, error=ValidationError)
        await self._backend.upsert(record, ttl)
        reg = _Registration(record, ttl)
        self._own[record.instance_id] = reg
        if heartbeat:
            reg.task = asyncio.create_task(
                self._heartbeat(reg), name=f"rtkit-registry-heartbeat-{record.instance_id}"
            )
        return record.instance_id

    async def refresh(self, instance_id: str) -> None:
        """Heartbeat once: extend the life of an instance registered here by its ttl.

        An instance that already expired is registered again under the same id.

        Raises:
            rtkit.errors.NotFound: ``instance_id`` was not registered through
                this registry.
            rtkit.errors.Closed: The registry was closed.
        """
        await self._ready()
        reg = self._own.get(instance_id)
        if reg is None:
            raise NotFound(f"instance {instance_id!r:.300} was not registered here")
        await self._backend.upsert(reg.record, reg.ttl)

    async def deregister(self, instance_id: str) -> bool:
        """Remove an instance (registered by any process) and stop its heartbeat.

        Returns:
            Whether the instance was live in the registry.

        Raises:
            rtkit.errors.ValidationError: ``instance_id`` is not an instance id.
            rtkit.errors.Closed: The registry was closed.
        """
        await self._ready()
        name = _service_of(instance_id)
        reg = self._own.pop(instance_id, None)
        if reg is not None and reg.task is not None:
            reg.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reg.task
        return await self._backend.remove(name, instance_id)

    # -- discovering ----------------------------------------------------------------------

    async def discover(self, name: str) -> list[ServiceInstance]:
        """The live instances of ``name`` (an empty list if none), oldest first.

        Raises:
            rtkit.errors.ValidationError: An invalid service name.
            rtkit.errors.BackendUnavailable: Redis does not answer.
            rtkit.errors.Closed: The registry was closed.
        """
        await self._ready()
        live = await self._backend.live(_service_name(name))
        return sorted(live, key=lambda i: (i.registered_at, i.instance_id))

    async def services(self) -> dict[str, int]:
        """Every service with at least one live instance, with its live count.

        Raises:
            rtkit.errors.Closed: The registry was closed.
        """
        await self._ready()
        return dict(sorted((await self._backend.counts()).items()))

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
            rtkit.errors.ServiceNotFound: No instance of ``name`` is live.
            rtkit.errors.ValidationError: A bad name or strategy.
            rtkit.errors.Closed: The registry was closed.
        """
        _check_strategy(strategy)
        return self.pick(name, await self.discover(name), strategy)

    def pick(
        self, name: str, instances: Sequence[ServiceInstance], strategy: Strategy = "random"
    ) -> ServiceInstance:
        """Pick one of ``instances`` of service ``name`` like `get_service()` does.

        For callers that keep their own (for example briefly cached) instance list.

        Raises:
            rtkit.errors.ServiceNotFound: ``instances`` is empty.
            rtkit.errors.ValidationError: An unknown strategy.
            rtkit.errors.Closed: The registry was closed.
        """
        self._check_open()
        _check_strategy(strategy)
        if not instances:
            raise ServiceNotFound(f"no live instance of service {name!r:.300}")
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
        """The load `get_service()` uses for ``"p2c"``: local in-flight + ``meta["load"]``.

        A read of local counters: it stays readable after `close()`.
        """
        reported = instance.meta.get("load", 0)
        extra = float(reported) if isinstance(reported, int | float) else 0.0
        return self._in_flight.get(instance.instance_id, 0) + extra

    @contextlib.contextmanager
    def track(self, instance: ServiceInstance) -> Iterator[None]:
        """Count a request to ``instance`` as in flight while the block runs (for p2c).

        Raises:
            rtkit.errors.Closed: The registry was closed (before the block).
        """
        self._check_open()
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

        Raises:
            rtkit.errors.ValidationError: An invalid service name.
            rtkit.errors.Closed: The registry was closed (also ends a running
                stream, at its next look).

        Example:
            ```python
            async for change in registry.watch("user-service"):
                print(change.kind, change.instance.url)
            ```
        """
        await self._ready()
        name = _service_name(name)
        async with self._backend.changes(name) as waiter:
            known: dict[str, ServiceInstance] = {}
            first = True
            while True:
                self._check_open()
                try:
                    current = {i.instance_id: i for i in await self._backend.live(name)}
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
