"""The in-process presence backend: the executable specification of PresenceStore."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Self

from ..._core.leases import ITEM_SEPARATOR, Digest, expired_instances, system_now
from ..._core.memory import shared_state
from ..._core.pages import Page, page_of_sorted
from ..._core.urls import BackendTarget
from ...errors import ValidationError
from .base import Holding, OnlineUser, PresenceBackend, PresenceCount, Removed

__all__ = ["MemoryPresenceBackend"]


@dataclass
class _User:
    username: str | None
    joined_at: float
    sids: set[str] = field(default_factory=set)


class _State:
    """Everything every instance sharing this state sees."""

    def __init__(self) -> None:
        self.leases: dict[str, float] = {}  # instance id -> lease expiry
        self.instances: dict[str, dict[str, str]] = {}  # instance id -> sid -> user id
        self.meta: dict[str, dict[str, str]] = {}  # instance id -> sid -> meta JSON
        self.users: dict[str, _User] = {}
        self.order: list[str] = []  # online user ids, sorted
        self.connections = 0
        self.digests: dict[str, Digest] = {}  # instance id -> digest of its connections


def _item(sid: str, user_id: str) -> str:
    return sid + ITEM_SEPARATOR + user_id


class MemoryPresenceBackend(PresenceBackend):
    """Presence in this process: private, or shared by name (``memory://NAME``).

    ``MemoryPresenceBackend()`` keeps a state of its own; ``open(target)``
    shares the state of every presence backend opened on ``memory://NAME``
    with the same prefix, as several server instances share one Redis.
    """

    def __init__(self) -> None:
        self._s = _State()

    @classmethod
    def open(cls, target: BackendTarget) -> Self:
        """A backend on ``target``'s state: new for ``memory://``, shared for ``memory://NAME``."""
        backend = cls()
        backend._s = shared_state(target, _State)
        return backend

    async def connect(
        self,
        instance_id: str,
        user_id: str,
        sid: str,
        username: str | None,
        meta: str | None,
        now: float | None,
        ttl: float,
    ) -> tuple[bool, float]:
        s = self._s
        at = system_now(now)
        owner = s.instances.get(instance_id, {}).get(sid)
        user = s.users.get(user_id)
        if owner is not None and owner != user_id:
            raise ValidationError(f"sid {sid!r} is already connected as another user")
        if owner is None and user is not None and sid in user.sids:
            raise ValidationError(f"sid {sid!r} of this user is connected on another instance")
        s.leases[instance_id] = at + ttl
        online = False
        if owner is None:
            online = self._add(instance_id, user_id, sid, username, at)
        else:
            self._name(user_id, username)
        self._set_meta(instance_id, sid, meta)
        return online, at

    def _add(
        self, instance_id: str, user_id: str, sid: str, username: str | None, at: float
    ) -> bool:
        """Add a new connection; whether its user came online. Sets the username when given."""
        s = self._s
        user = s.users.get(user_id)
        online = user is None
        if user is None:
            user = s.users[user_id] = _User(username, at)
            bisect.insort(s.order, user_id)
        user.sids.add(sid)
        s.instances.setdefault(instance_id, {})[sid] = user_id
        s.digests.setdefault(instance_id, Digest()).add(_item(sid, user_id))
        s.connections += 1
        self._name(user_id, username)
        return online

    def _name(self, user_id: str, username: str | None) -> None:
        if username is not None:
            self._s.users[user_id].username = username

    def _set_meta(self, instance_id: str, sid: str, meta: str | None) -> None:
        if meta is not None:
            if meta == "{}":
                self._drop_meta(instance_id, sid)
            else:
                self._s.meta.setdefault(instance_id, {})[sid] = meta

    def _drop_meta(self, instance_id: str, sid: str) -> None:
        metas = self._s.meta.get(instance_id)
        if metas is not None:
            metas.pop(sid, None)
            if not metas:
                del self._s.meta[instance_id]

    def _remove(self, instance_id: str, sid: str, at: float) -> Removed | None:
        s = self._s
        conns = s.instances.get(instance_id)
        if conns is None or sid not in conns:
            return None
        user_id = conns.pop(sid)
        if not conns:
            del s.instances[instance_id]
        digest = s.digests.get(instance_id)
        if digest is not None:
            digest.discard(_item(sid, user_id))
        self._drop_meta(instance_id, sid)
        user = s.users[user_id]
        user.sids.discard(sid)
        s.connections -= 1
        offline = not user.sids
        if offline:
            del s.users[user_id]
            s.order.pop(bisect.bisect_left(s.order, user_id))
        return Removed(user_id, sid, offline, user.username, instance_id, at)

    async def disconnect(self, instance_id: str, sid: str, now: float | None) -> Removed | None:
        return self._remove(instance_id, sid, system_now(now))

    async def purge(
        self, instance_id: str | None, now: float | None, ttl: float, force: str | None
    ) -> tuple[list[Removed], bool]:
        s = self._s
        at = system_now(now)
        dead, missing = expired_instances(s.leases, instance_id, at, ttl, force)
        removed: list[Removed] = []
        for iid in dead:
            for sid in list(s.instances.get(iid, {})):
                gone = self._remove(iid, sid, at)
                assert gone is not None
                removed.append(gone)
            s.leases.pop(iid, None)
            s.digests.pop(iid, None)
        return removed, missing

    async def check(self, instance_id: str, digest: str, exclude: list[str]) -> bool:
        mine = self._s.digests.get(instance_id, Digest()).copy()
        conns = self._s.instances.get(instance_id, {})
        for sid in exclude:
            if sid in conns:
                mine.discard(_item(sid, conns[sid]))
        return mine.text == digest

    async def held(self, instance_id: str, cursor: int) -> tuple[dict[str, str], int | None]:
        return dict(self._s.instances.get(instance_id, {})), None

    async def repair(
        self,
        instance_id: str,
        now: float | None,
        ttl: float,
        entries: list[tuple[str, Holding | None]],
    ) -> tuple[list[Removed], list[str], float]:
        s = self._s
        at = system_now(now)
        s.leases[instance_id] = at + ttl
        removed: list[Removed] = []
        online: list[str] = []
        for sid, holding in entries:
            owner = s.instances.get(instance_id, {}).get(sid)
            if owner is not None and (holding is None or owner != holding.user_id):
                gone = self._remove(instance_id, sid, at)
                assert gone is not None
                removed.append(gone)
                owner = None
            if holding is None:
                continue
            user = s.users.get(holding.user_id)
            if owner is None and (user is None or sid not in user.sids):
                if self._add(instance_id, holding.user_id, sid, None, at):
                    online.append(holding.user_id)
                owner = holding.user_id
            if owner is not None:
                if s.users[owner].username is None:
                    self._name(owner, holding.username)
                self._drop_meta(instance_id, sid)
                self._set_meta(instance_id, sid, holding.meta)
        return removed, online, at

    async def is_online(self, user_id: str) -> bool:
        return user_id in self._s.users

    async def online_users(self, cursor: str | None, limit: int) -> Page[OnlineUser]:
        page = page_of_sorted(self._s.order, cursor, limit)
        users = self._s.users
        items = [
            OnlineUser(uid, users[uid].username, users[uid].joined_at, len(users[uid].sids))
            for uid in page.items
        ]
        return Page(items, page.next_cursor)

    async def count(self) -> PresenceCount:
        return PresenceCount(len(self._s.users), self._s.connections)

    async def connections(self, user_id: str) -> list[str]:
        user = self._s.users.get(user_id)
        return [] if user is None else sorted(user.sids)

    async def meta(self, instance_id: str, sid: str) -> str | None:
        return self._s.meta.get(instance_id, {}).get(sid)

    async def close(self) -> None:
        """Nothing to release in memory."""
