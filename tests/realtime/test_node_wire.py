"""The Node ``@socket.io/redis-adapter`` wire as rtkit reads and writes it (no I/O).

The bytes below are what ``notepack.io`` 3 (the adapter's msgpack) writes, byte for
byte; ``test_node_adapter.py`` checks the same against a real Node server.
"""

from __future__ import annotations

from typing import Any

import pytest

from rtkit.errors import ConfigurationError, MalformedRequest, ValidationError
from rtkit.realtime import RealtimeServer
from rtkit.realtime.managers import make_manager
from rtkit.realtime.managers._node_wire import (
    BroadcastOptions,
    Channels,
    RequestType,
    RoomNames,
    as_list,
    decode,
    decode_broadcast,
    decode_request,
    decode_response,
    encode,
    handshake,
    new_uid,
)
from rtkit.realtime.managers.node_redis import NodeRedisManager

LIMIT = 1 << 20


def test_the_request_types_are_the_adapters() -> None:
    assert [(t.name, t.value) for t in RequestType] == [
        ("SOCKETS", 0),
        ("ALL_ROOMS", 1),
        ("REMOTE_JOIN", 2),
        ("REMOTE_LEAVE", 3),
        ("REMOTE_DISCONNECT", 4),
        ("REMOTE_FETCH", 5),
        ("SERVER_SIDE_EMIT", 6),
        ("BROADCAST", 7),
        ("BROADCAST_CLIENT_COUNT", 8),
        ("BROADCAST_ACK", 9),
    ]


def test_channels_are_named_as_the_adapter_names_them() -> None:
    channels = Channels("socket.io", "/")
    assert channels.broadcast == "socket.io#/#"
    assert channels.room_channel(["lobby"]) == "socket.io#/#lobby#"
    assert channels.room_channel(["a", "b"]) == channels.room_channel([]) == "socket.io#/#"
    assert channels.request == "socket.io-request#/#"
    assert channels.response_to("abc123", specific=False) == "socket.io-response#/#"
    assert channels.response_to("abc123", specific=True) == "socket.io-response#/#abc123#"
    assert channels.room_of("socket.io#/#lobby#") == "lobby"
    assert channels.room_of("socket.io#/#") == ""
    assert channels.room_of("socket.io#/chat#x#") is None
    assert Channels("a*[b]?", "/").pattern() == "a\\*\\[b\\]\\?#/#*"


def test_a_node_broadcast_decodes() -> None:
    # [ "abc", {type: 2, data: ["hi", Buffer[1,2], undefined, 1.5, new Date(0)], nsp: "/"},
    #   {rooms: ["r"], except: ["x"], flags: {}} ]
    raw = (
        b"\x93\xa3abc\x83\xa4type\x02\xa4data\x95\xa2hi\xc4\x02\x01\x02\xc0"
        b"\xcb\x3f\xf8\x00\x00\x00\x00\x00\x00\xd6\xff\x00\x00\x00\x00\xa3nsp\xa1/"
        b"\x83\xa5rooms\x91\xa1r\xa6except\x91\xa1x\xa5flags\x80"
    )
    uid, packet, options = decode_broadcast(raw, max_bytes=LIMIT)
    assert uid == "abc"
    assert packet is not None
    assert (packet.type, packet.nsp) == (2, "/")
    assert packet.data == ["hi", b"\x01\x02", None, 1.5, "1970-01-01T00:00:00.000Z"]
    assert (options.rooms, options.except_, options.flags) == (["r"], ["x"], {})


def test_what_rtkit_sends_is_what_notepack_reads() -> None:
    message = ["abc", {"type": 2, "data": ["ev", b"\xff", 1, 2.5, None], "nsp": "/"}]
    assert encode(message) == (
        b"\x92\xa3abc\x83\xa4type\x02\xa4data\x95\xa2ev\xc4\x01\xff\x01"
        b"\xcb\x40\x04\x00\x00\x00\x00\x00\x00\xc0\xa3nsp\xa1/"
    )


def test_requests_and_responses_decode_as_json_or_msgpack() -> None:
    request = decode_request(
        b'{"uid":"u1","requestId":"r1","type":5,"opts":{"rooms":["a"],"except":[]}}',
        max_bytes=LIMIT,
    )
    assert (request.type, request.request_id, request.uid) == (5, "r1", "u1")
    assert request.opts is not None and request.opts.rooms == ["a"]
    same = decode_request(
        encode({"uid": "u1", "requestId": "r1", "type": 5, "opts": {"rooms": ["a"]}}),
        max_bytes=LIMIT,
    )
    assert same == request
    response = decode_response(b'{"requestId":"r1","rooms":["a",1]}', max_bytes=LIMIT)
    assert response.rooms == ["a", 1]


@pytest.mark.parametrize(
    "raw",
    [
        b"\xc1",  # never valid msgpack
        b"\x93\xa3abc",  # cut short
        b'{"open": ',
        b"\x01\x02",  # extra data
    ],
)
def test_bad_bytes_are_a_typed_error(raw: bytes) -> None:
    with pytest.raises(MalformedRequest):
        decode(raw, max_bytes=LIMIT)


@pytest.mark.parametrize(
    "value",
    [
        ["abc"],
        ["abc", {"type": "two"}, {}],
        ["abc", {"type": 2}, {"rooms": 3}],
        ["abc", {"type": 2}, {"rooms": ["r"] * 10_001}],
        [1, None, {}],
    ],
)
def test_bad_broadcasts_are_a_typed_error(value: Any) -> None:
    with pytest.raises(MalformedRequest):
        decode_broadcast(encode(value), max_bytes=LIMIT)


def test_a_message_past_the_limit_is_refused_before_decoding() -> None:
    with pytest.raises(MalformedRequest, match="limit"):
        decode(encode("x" * 100), max_bytes=50)


def test_what_msgpack_cannot_carry_is_a_typed_error() -> None:
    with pytest.raises(ValidationError):
        encode({"big": 1 << 70})
    with pytest.raises(ValidationError):
        encode({"set": {1, 2}})


def test_room_names_map_rtkit_prefixed_rooms_to_bare_node_rooms() -> None:
    names = RoomNames("room:")
    assert names.to_node(["room:lobby", "user:1", "sid", 7]) == ["lobby", "user:1", "sid", 7]
    assert names.candidates(["lobby", 7]) == ["lobby", 7, "room:lobby"]
    assert names.joined("lobby") == "room:lobby"
    local = names.local(BroadcastOptions(rooms=["lobby"], except_=["sid"], flags={}))
    assert (local.rooms, local.except_) == (["lobby", "room:lobby"], ["sid", "room:sid"])
    same = RoomNames()
    assert same.to_node(["room:lobby"]) == same.candidates(["room:lobby"]) == ["room:lobby"]
    assert same.joined("lobby") == "lobby"


def test_uids_look_like_the_adapters() -> None:
    uids = {new_uid() for _ in range(100)}
    assert len(uids) == 100
    assert all(len(uid) == 6 and uid.isalnum() for uid in uids)


def test_the_handshake_leaves_credentials_out() -> None:
    environ = {
        "HTTP_AUTHORIZATION": "Bearer secret",
        "HTTP_COOKIE": "session=secret",
        "HTTP_USER_AGENT": "node",
        "HTTP_ORIGIN": "http://example.test",
        "QUERY_STRING": "EIO=4&transport=websocket",
        "REMOTE_ADDR": "127.0.0.1",
        "PATH_INFO": "/socket.io/",
    }
    shown = handshake(environ, 1_000)
    assert shown["headers"] == {"user-agent": "node", "origin": "http://example.test"}
    assert shown["auth"] == {}
    assert shown["query"] == {"EIO": "4", "transport": "websocket"}
    assert shown["url"] == "/socket.io/?EIO=4&transport=websocket"
    assert (shown["issued"], shown["address"], shown["xdomain"]) == (1_000, "127.0.0.1", True)


def test_make_manager_picks_by_name() -> None:
    manager = make_manager("node-redis", "redis://127.0.0.1:1/0", channel="x", key="k")
    assert isinstance(manager, NodeRedisManager)
    assert manager.channels["/"].request == "k-request#/#"
    with pytest.raises(ConfigurationError, match="unknown adapter"):
        make_manager("kafka", "redis://127.0.0.1:1/0", channel="x")
    with pytest.raises(ConfigurationError):
        make_manager("socketio", "redis://127.0.0.1:1/0", channel="x", key="k")
    with pytest.raises(ConfigurationError, match="node-redis"):
        make_manager("node-redis", "redis://127.0.0.1:1/0", channel="x", colour="blue")


@pytest.mark.parametrize(
    "options",
    [
        {"key": ""},
        {"namespaces": ["chat"]},
        {"namespaces": []},
        {"request_timeout": 0},
        {"max_message_bytes": 0},
        {"room_prefix": None},
    ],
)
def test_bad_manager_options_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        NodeRedisManager("redis://127.0.0.1:1/0", **options)


def test_a_cluster_url_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="cluster"):
        NodeRedisManager("redis+cluster://127.0.0.1:7000/0")


async def test_bad_rooms_are_a_typed_error_and_change_nothing() -> None:
    manager = NodeRedisManager("redis://127.0.0.1:1/0")
    with pytest.raises(ValidationError):
        await manager.add_sockets(["ok"], [object()])
    with pytest.raises(ConfigurationError, match="namespace"):
        await manager.add_sockets("green", namespace="/other")
    await manager.redis.aclose()


def test_a_room_or_several() -> None:
    assert as_list("room:lobby") == ["room:lobby"]
    assert as_list(None) == []
    assert as_list(r for r in ("a", "b")) == ["a", "b"]
    assert as_list({"a"}) == ["a"]
    assert as_list(7) == [7]


def test_an_adapter_needs_redis() -> None:
    with pytest.raises(ConfigurationError, match="redis"):
        RealtimeServer.from_url("memory://", adapter="node-redis")
