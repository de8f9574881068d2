"""What the registry stores and returns: instances, changes, strategies, the stored record.

Imports no component and no backend: the protocol, the backends and the public
class all use these.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, JsonValue, TypeAdapter

__all__ = [
    "STRATEGIES",
    "Record",
    "ServiceChange",
    "ServiceInstance",
    "Strategy",
    "instances_from_json",
]

Strategy = Literal["random", "round_robin", "p2c"]
"""How [`ServiceRegistry.get_service`][rtkit.registry.ServiceRegistry.get_service] picks
one instance."""

STRATEGIES: tuple[str, ...] = get_args(Strategy)


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
class Record:
    """What a backend stores for an instance (everything but the times).

    ``meta_json`` is the metadata as compact JSON, already checked.
    """

    instance_id: str
    name: str
    host: str
    port: int
    meta_json: str

    def to_json(self) -> str:
        """The record as one JSON object (what the Redis backend stores)."""
        fields = {"instance_id": self.instance_id, "name": self.name, "host": self.host}
        head = json.dumps(fields, separators=(",", ":"))[:-1]
        return f'{head},"port":{self.port},"meta":{self.meta_json}}}'

    def instance(self, registered_at: float, expires_at: float) -> ServiceInstance:
        """The instance this record describes, with its times."""
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

    The record JSON is what ``Record.to_json`` stored; the times are JSON
    numbers as text. One JSON document is parsed and validated in pydantic-core
    (much faster than one model per row when discover returns thousands).
    """
    parts = [f'{{"registered_at":{r},"expires_at":{e},{data[1:]}' for r, e, data in rows]
    return _INSTANCES.validate_json("[" + ",".join(parts) + "]")
