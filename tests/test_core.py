"""The shared core: URLs and the scheme registry, life cycle, errors, validation, topics."""

from __future__ import annotations

import math
from typing import Any

import pytest
import redis.asyncio as aioredis

import rtkit
from rtkit._core.component import Component, split_options
from rtkit._core.ids import new_id
from rtkit._core.lifecycle import AsyncResource
from rtkit._core.memory import shared_state
from rtkit._core.redis import Keyspace, RedisHandle, redis_unavailable
from rtkit._core.topic import TopicPattern, topic_matches
from rtkit._core.urls import BackendTarget, check_prefix, redact, resolve_target
from rtkit._core.validate import (
    MAX_ID_BYTES,
    MAX_JSON_DEPTH,
    check_cursor,
    check_id,
    check_int,
    check_json_depth,
    check_key,
    check_limit,
    check_meta,
    check_name,
    check_seconds,
)
from rtkit.errors import (
    AuthError,
    BackendUnavailable,
    Closed,
    ConfigurationError,
    Forbidden,
    NotFound,
    NotMember,
    PayloadTooLarge,
    RateLimited,
    RemoteError,
    RtkitError,
    ServiceNotFound,
    TokenExpired,
    TooManyRooms,
    ValidationError,
    error_from_payload,
)
from rtkit.http import STATUS, status_for

KINDS = ("memory", "redis")

# -- URLs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "kind", "name"),
    [
        ("memory://", "memory", ""),
        ("memory://tenant-a", "memory", "tenant-a"),
        ("redis://127.0.0.1:6379/0", "redis", ""),
        ("redis://:secret@localhost", "redis", ""),
        ("rediss://cache.example:6380/2", "redis", ""),
        ("unix:///run/redis.sock?db=1", "redis", ""),
    ],
)
def test_urls_pick_the_backend(url: str, kind: str, name: str) -> None:
    target = resolve_target("Test", url, kinds=KINDS)
    assert (target.kind, target.name, target.prefix) == (kind, name, "rtkit:")


def test_amqp_only_where_a_component_has_it() -> None:
    target = resolve_target("Svc", "amqp://guest:guest@h/", kinds=("memory", "amqp"))
    assert target.kind == "amqp"
    with pytest.raises(ConfigurationError, match=r"EventBus.*memory://.*redis://"):
        resolve_target("EventBus", "amqp://guest:guest@h/", kinds=KINDS)


@pytest.mark.parametrize(
    "url",
    ["", "nope://x", "redis://host:notaport", "redis://host/abc", "unix://", "x", "amqp:///"],
)
def test_bad_urls_raise_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError):
        resolve_target("EventBus", url, kinds=(*KINDS, "amqp"))


def test_passwords_never_reach_errors_or_reprs() -> None:
    with pytest.raises(ConfigurationError) as info:
        resolve_target("EventBus", "bogus://user:hunter2@host/", kinds=KINDS)
    assert "hunter2" not in str(info.value)
    target = resolve_target("EventBus", "redis://:hunter2@localhost/0", kinds=KINDS)
    assert "hunter2" not in repr(target)
    assert redact("amqp://u:hunter2@h/") == "amqp://u:***@h/"


def test_a_redis_client_only_goes_with_a_redis_url() -> None:
    with pytest.raises(ConfigurationError, match="memory"):
        resolve_target("EventBus", "memory://", kinds=KINDS, redis=object())


def test_prefixes() -> None:
    assert check_prefix("rtkit:") == "rtkit:"
    assert resolve_target("T", "memory://", kinds=KINDS, prefix="app1:").prefix == "app1:"
    for bad in ["", "has space", "x" * 65, "brace{", 42]:
        with pytest.raises(ConfigurationError):
            check_prefix(bad)


def test_keys_carry_the_prefix_and_one_hash_tag_per_component() -> None:
    keys = Keyspace("app1:", "presence")
    assert keys.key("user", "42") == "app1:{presence}:user:42"
    assert keys.channel("events") == "app1:presence:events"


# -- from_url and the shape ---------------------------------------------------------------


class _Backend:
    def __init__(self, target: BackendTarget | None, size: int) -> None:
        self.target = target
        self.size = size

    @classmethod
    def open(cls, target: BackendTarget, *, size: int = 1, shared: int = 0) -> _Backend:
        return cls(target, size + shared)


class _RedisBackend(_Backend):
    @classmethod
    def open(cls, target: BackendTarget, *, timeout: float = 5.0) -> _Backend:  # type: ignore[override]
        return cls(target, int(timeout))


class _Thing(Component):
    _backends = {"memory": f"{__name__}:_Backend", "redis": f"{__name__}:_RedisBackend"}

    def __init__(
        self,
        backend: _Backend | None = None,
        *,
        clock: rtkit.Clock | None = None,
        label: str = "",
        shared: int = 0,
    ) -> None:
        self.backend = backend or _Backend(None, 1)
        self.clock = clock
        self.label = label
        self.shared = shared
        self.events: list[str] = []

    async def _start(self) -> None:
        self.events.append("start")

    async def _close(self) -> None:
        self.events.append("close")

    async def op(self) -> str:
        await self._ready()
        return "done"


def test_from_url_splits_options_between_backend_and_constructor() -> None:
    clock = rtkit.ManualClock()
    thing = _Thing.from_url("memory://x", clock=clock, size=3, label="l", shared=2)
    assert thing.backend.target is not None and thing.backend.target.name == "x"
    assert thing.backend.size == 5  # size=3 plus shared=2: an option both take goes to both
    assert (thing.label, thing.shared, thing.clock) == ("l", 2, clock)
    with pytest.raises(ConfigurationError, match="unknown option"):
        _Thing.from_url("memory://", colour="red")
    with pytest.raises(ConfigurationError, match=r"_Thing.*memory://"):
        _Thing.from_url("amqp://localhost")


def test_an_option_of_another_backend_is_ignored() -> None:
    thing = _Thing.from_url("memory://", timeout=2.0)  # one call for every URL
    assert thing.backend.size == 1
    assert _Thing.from_url("redis://localhost", timeout=2.0).backend.size == 2


def test_split_options_names_what_it_takes() -> None:
    with pytest.raises(ConfigurationError, match="a, b, c"):
        split_options("C", {"z": 1}, frozenset({"a"}), frozenset({"b"}), frozenset({"c"}))
    assert split_options("C", {"c": 1}, frozenset(), frozenset(), frozenset({"c"})) == ({}, {})


async def test_life_cycle_is_idempotent_lazy_and_closed_after_close() -> None:
    thing = _Thing()
    assert await thing.op() == "done"  # the first operation starts it
    await thing.start()
    assert thing.events == ["start"]
    await thing.close()
    await thing.close()
    assert thing.events == ["start", "close"] and thing.closed
    with pytest.raises(Closed, match="_Thing is closed"):
        await thing.op()
    with pytest.raises(Closed):
        await thing.start()
    async with _Thing() as other:
        assert other.events == ["start"]
    assert other.events == ["start", "close"]


async def test_close_runs_for_a_component_that_never_started() -> None:
    thing = _Thing()
    await thing.close()
    assert thing.events == ["close"]


def test_shared_state_is_private_unless_named() -> None:
    def target(name: str, prefix: str = "rtkit:") -> BackendTarget:
        return BackendTarget("T", "memory", f"memory://{name}", name, prefix)

    class State:
        pass

    assert shared_state(target(""), State) is not shared_state(target(""), State)
    one = shared_state(target("n"), State)
    assert shared_state(target("n"), State) is one
    assert shared_state(target("n", "other:"), State) is not one


# -- errors -------------------------------------------------------------------------------


def test_every_code_has_its_class() -> None:
    assert issubclass(ServiceNotFound, NotFound) and issubclass(NotMember, Forbidden)
    assert issubclass(TokenExpired, AuthError) and issubclass(PayloadTooLarge, ValidationError)
    assert TooManyRooms.code == "too_many_rooms" and Closed.code == "closed"
    codes = [cls.code for cls in STATUS]
    assert len(codes) == len(set(codes))


@pytest.mark.parametrize(
    "error",
    [
        NotMember("not in room"),
        TokenExpired("expired"),
        TooManyRooms("100 rooms"),
        RateLimited("slow down", retry_after=2.5),
        ValidationError("bad"),
        RtkitError("plain"),
    ],
)
def test_errors_survive_the_wire(error: RtkitError) -> None:
    again = error_from_payload(error.payload())
    assert type(again) is type(error) and again.message == error.message
    if isinstance(error, RateLimited):
        assert isinstance(again, RateLimited) and again.retry_after == 2.5


def test_unreadable_payloads_give_remote_errors() -> None:
    assert isinstance(error_from_payload("boom"), RemoteError)
    assert type(error_from_payload({"code": "never-heard-of", "message": "m"})) is RtkitError
    bad = error_from_payload({"code": "rate_limited", "message": "m", "retryAfter": math.nan})
    assert isinstance(bad, RateLimited) and bad.retry_after == 0.0


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (ValidationError("x"), 422),
        (PayloadTooLarge("x"), 413),
        (AuthError("x"), 401),
        (TokenExpired("x"), 401),
        (NotMember("x"), 403),
        (NotFound("x"), 404),
        (ServiceNotFound("x"), 503),
        (RateLimited(retry_after=1), 429),
        (Closed("x"), 503),
        (RemoteError("x"), 502),
        (RtkitError("x"), 500),
    ],
)
def test_one_status_table(error: RtkitError, status: int) -> None:
    assert status_for(error) == status


# -- validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("", ValidationError),
        (42, ValidationError),
        (None, ValidationError),
        ("a\nb", ValidationError),
        ("\ud800", ValidationError),
        ("x" * (MAX_ID_BYTES + 1), PayloadTooLarge),
        ("é" * 129, PayloadTooLarge),
    ],
)
def test_check_id_rejects_bad_ids(value: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        check_id(value, "user_id")


def test_ids_and_keys() -> None:
    assert check_id("user-42", "user_id") == "user-42"
    longest = "x" * MAX_ID_BYTES
    assert check_id(longest, "user_id") == longest
    assert check_key(f"notification:{longest}", "key")  # any id fits in a key


@pytest.mark.parametrize("good", ["user-service", "billing/v2", "orders.created", "a:b", "9"])
def test_names(good: str) -> None:
    assert check_name(good, "name") == good


@pytest.mark.parametrize("bad", ["", "-x", "has space", "x" * 256, "é", 7, None])
def test_bad_names(bad: Any) -> None:
    with pytest.raises(ValidationError):
        check_name(bad, "name")


def test_durations_and_ints() -> None:
    assert check_seconds(30, "ttl") == 30.0
    for bad in [0, -1, math.nan, math.inf, True, "5"]:
        with pytest.raises(ConfigurationError):
            check_seconds(bad, "ttl")
    with pytest.raises(ValidationError):
        check_seconds(90_000, "ttl", maximum=86_400, error=ValidationError)
    assert check_int(5, "n") == 5
    with pytest.raises(ConfigurationError):
        check_int(True, "n")


def test_meta_is_bounded_in_size_and_depth() -> None:
    assert check_meta({"a": [1, 2]}) == '{"a":[1,2]}'
    deep: Any = 1
    for _ in range(5000):
        deep = {"k": deep}
    with pytest.raises(ValidationError, match="deeper"):
        check_meta(deep)
    with pytest.raises(ValidationError):
        check_json_depth([[]] * 2 + [[[[]]]], "x", max_depth=3)
    check_json_depth([[[]]], "x", max_depth=3)
    assert MAX_JSON_DEPTH >= 16
    with pytest.raises(PayloadTooLarge):
        check_meta({"a": "x" * 5000})
    for bad in [{"a": math.nan}, {1: 2}, [], {"a": object()}]:
        with pytest.raises(ValidationError):
            check_meta(bad)


def test_pages() -> None:
    assert check_cursor(None) is None and check_cursor("u-1") == "u-1"
    assert check_limit(1000) == 1000
    for bad in [0, 1001, True, "10"]:
        with pytest.raises(ValidationError):
            check_limit(bad)


# -- topics -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "key", "expected"),
    [
        ("order.*", "order.created", True),
        ("order.*", "order", False),
        ("order.*", "order.item.added", False),
        ("order.#", "order", True),
        ("order.#", "order.item.added", True),
        ("#.error", "a.b.error", True),
        ("a.#.c", "a.c", True),
        ("*", "a", True),
        ("*", "a.b", False),
        ("#", "a.b", True),
        ("a.b", "a.b", True),
        ("a.b", "a.c", False),
    ],
)
def test_topic_patterns(pattern: str, key: str, expected: bool) -> None:
    assert topic_matches(pattern, key) is expected
    assert TopicPattern(pattern).matches(key) is expected


class _CountingPattern(TopicPattern):
    """Records every state set the matcher carries, to bound its work without a clock."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.carried: list[int] = []

    def _closure(self, states: set[int]) -> set[int]:
        closed = super()._closure(states)
        self.carried.append(len(closed))
        return closed


@pytest.mark.parametrize(
    ("pattern", "key"),
    [
        (".".join(["#"] * 20), ".".join(["w"] * 50)),
        (".".join(["#", "x"] * 10), ".".join(["w"] * 50)),
        ("#.a." * 10 + "#", ".".join(["w"] * 50)),
        # "#" words kept apart by literals: hours for a backtracking matcher
        (".".join(["#", "a"] * 20), ".".join(["a"] * 50)),
        (".".join(["#", "a"] * 20), ".".join(["a"] * 49 + ["b"])),
    ],
)
def test_topic_matching_is_linear(pattern: str, key: str) -> None:
    # Work is counted, not timed: one state set per key word (plus the start), each no
    # larger than the pattern, so a match costs O(len(pattern) * len(key)) at most.
    counting = _CountingPattern(pattern)
    assert counting.matches(key) is TopicPattern(pattern).matches(key)
    assert len(counting.carried) <= len(key.split(".")) + 1
    assert max(counting.carried) <= len(pattern.split(".")) + 1


# -- Redis --------------------------------------------------------------------------------


def test_ids_are_unique_and_time_sortable() -> None:
    ids = [new_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)


def test_manual_clock_moves_only_forward() -> None:
    clock = rtkit.ManualClock(start=100.0)
    clock.advance(1.5)
    assert clock.time() == clock.monotonic() == 101.5
    with pytest.raises(ValueError):
        clock.advance(-1)
    assert isinstance(rtkit.SystemClock(), rtkit.Clock)


def test_the_public_surface_is_small() -> None:
    assert len(rtkit.__all__) <= 30
    assert issubclass(rtkit.EventBus, AsyncResource)


async def test_borrowed_redis_client_must_decode_responses(redis_url: str) -> None:
    raw = aioredis.Redis.from_url(redis_url)
    try:
        with pytest.raises(ConfigurationError, match="decode_responses"):
            RedisHandle(client=raw)
    finally:
        await raw.aclose()
    shared = rtkit.redis_client(redis_url)
    handle = RedisHandle(client=shared)
    await handle.close()  # borrowed: still usable afterwards
    assert await shared.ping()
    await shared.aclose()


async def test_unreachable_redis_raises_backend_unavailable() -> None:
    client = rtkit.redis_client("redis://127.0.0.1:1/0", timeout=0.5)
    try:
        with pytest.raises(BackendUnavailable, match="pinging"), redis_unavailable("pinging"):
            await client.ping()
    finally:
        await client.aclose()


# -- Redis Cluster and Sentinel URLs ----------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "redis+cluster://10.0.0.1:7000,10.0.0.2:7001",
        "rediss+cluster://:pw@node-a:7000",
        "redis+sentinel://s1:26379,s2:26380/mymaster",
        "redis+sentinel://s1/mymaster/2",
    ],
)
def test_cluster_and_sentinel_urls_are_redis(url: str) -> None:
    assert resolve_target("T", url, kinds=KINDS).kind == "redis"


def test_cluster_and_sentinel_url_mistakes_say_why() -> None:
    with pytest.raises(ConfigurationError, match=r"only\s+database 0"):
        resolve_target("T", "redis+cluster://h:7000,h:7001/9", kinds=KINDS)
    with pytest.raises(ConfigurationError, match="names no service"):
        resolve_target("T", "redis+sentinel://h:26379", kinds=KINDS)
    with pytest.raises(ConfigurationError, match="bad host"):
        resolve_target("T", "redis+cluster://h:7000,:x", kinds=KINDS)
    with pytest.raises(ConfigurationError) as info:
        resolve_target("T", "redis+sentinel://:hunter2@h:1,h:notaport/svc", kinds=KINDS)
    assert "hunter2" not in str(info.value)
