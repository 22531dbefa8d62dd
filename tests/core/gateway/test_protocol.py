"""The main gateway's sans-IO core: codecs, inflater, limiters, heartbeat and close codes."""

from __future__ import annotations

import contextlib
import itertools
import json
import zlib
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from discore_voice._core.gateway.errors import (
    AuthenticationFailed,
    CloseAction,
    DisallowedIntents,
    GatewayError,
    InvalidApiVersion,
    InvalidIntents,
    InvalidShard,
    ShardingError,
    ShardingRequired,
    classify_close,
)
from discore_voice._core.gateway.inflate import ZLIB_SUFFIX, ZlibStreamInflater
from discore_voice._core.gateway.intents import PRIVILEGED_INTENTS, Intents
from discore_voice._core.gateway.limits import IdentifyLimiter, ReconnectBackoff, SendRateLimiter
from discore_voice._core.gateway.protocol import (
    Dispatched,
    GatewayOpcode,
    GatewayProtocol,
    HeartbeatAcked,
    ReconnectRequested,
    SendKind,
    SendPayload,
    SessionInvalidated,
    SessionReady,
    SessionResumed,
    ZombieConnection,
    build_gateway_url,
)
from discore_voice._errors import ProtocolError, UnknownOpcode, UsageError

TOKEN = "MTAx.secret-token.value"
USER_ID = 175928847299117063


def make_protocol(**kwargs: Any) -> GatewayProtocol:
    kwargs.setdefault("intents", Intents.VOICE_DEFAULT)
    return GatewayProtocol(TOKEN, **kwargs)


def hello(interval_ms: float = 41250) -> dict[str, Any]:
    return {"op": 10, "d": {"heartbeat_interval": interval_ms}}


def ready(seq: int = 1, session_id: str = "sess-1") -> dict[str, Any]:
    return {
        "op": 0,
        "t": "READY",
        "s": seq,
        "d": {
            "v": 10,
            "user": {"id": str(USER_ID), "username": "bot"},
            "guilds": [],
            "session_id": session_id,
            "resume_gateway_url": "wss://resume.example",
        },
    }


def connect_ready(proto: GatewayProtocol, now: float = 0.0, jitter: float = 0.5) -> None:
    proto.begin_connection(jitter=jitter)
    proto.receive_payload(hello(), now)
    proto.receive_payload(ready(), now)


# --- close codes ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (4004, AuthenticationFailed),
        (4010, InvalidShard),
        (4011, ShardingRequired),
        (4012, InvalidApiVersion),
        (4013, InvalidIntents),
        (4014, DisallowedIntents),
    ],
)
def test_fatal_close_codes(code: int, kind: type[GatewayError]) -> None:
    verdict = classify_close(code)
    assert verdict.action is CloseAction.FATAL
    assert isinstance(verdict.error, kind)
    assert verdict.error.code == code
    assert str(code) in str(verdict.error)
    if code in (4010, 4011):
        assert isinstance(verdict.error, ShardingError)


@pytest.mark.parametrize("code", [4007, 4009])
def test_close_codes_that_forbid_resume(code: int) -> None:
    proto = make_protocol()
    connect_ready(proto)
    assert proto.can_resume
    verdict = proto.connection_lost(code)
    assert verdict.action is CloseAction.IDENTIFY
    assert not proto.can_resume


@pytest.mark.parametrize("code", [None, 1000, 1001, 1006, 4000, 4001, 4002, 4003, 4005, 4008, 4999])
def test_resumable_close_codes(code: int | None) -> None:
    proto = make_protocol()
    connect_ready(proto)
    assert proto.connection_lost(code).action is CloseAction.RESUME
    assert proto.can_resume
    assert proto.connect_url("wss://gateway.discord.gg").startswith("wss://resume.example/?v=10")


def test_resumable_close_without_session_identifies() -> None:
    proto = make_protocol()
    proto.begin_connection(jitter=0.0)
    assert proto.connection_lost(4000).action is CloseAction.IDENTIFY


# --- URLs and payloads --------------------------------------------------------------------------


def test_gateway_url() -> None:
    assert (
        build_gateway_url("wss://gateway.discord.gg")
        == "wss://gateway.discord.gg/?v=10&encoding=json&compress=zlib-stream"
    )
    assert build_gateway_url("ws://127.0.0.1:8000/?v=9", compress=False) == (
        "ws://127.0.0.1:8000/?v=10&encoding=json"
    )
    for bad in ("https://x", "wss://", "gateway.discord.gg", "ws://[::1"):
        with pytest.raises(UsageError):
            build_gateway_url(bad)


def test_identify_then_ready() -> None:
    proto = make_protocol(shard_id=2, shard_count=5)
    proto.begin_connection(jitter=0.25)
    events = proto.receive_payload(hello(40000), 100.0)
    assert len(events) == 1
    send = events[0]
    assert isinstance(send, SendPayload)
    assert send.kind is SendKind.IDENTIFY
    assert send.payload["op"] == GatewayOpcode.IDENTIFY
    d = send.payload["d"]
    assert d["token"] == TOKEN
    assert d["intents"] == int(Intents.VOICE_DEFAULT) == 129
    assert d["shard"] == [2, 5]
    assert d["compress"] is False
    assert set(d["properties"]) == {"os", "browser", "device"}
    assert proto.next_wakeup() == pytest.approx(110.0)
    assert TOKEN not in repr(send)
    events = proto.receive_payload(ready(seq=1), 101.0)
    assert events[0] == SessionReady(USER_ID)
    assert isinstance(events[1], Dispatched)
    assert events[1].name == "READY"
    assert proto.user_id == USER_ID
    assert proto.is_ready
    assert proto.sequence == 1
    assert TOKEN not in repr(proto)
    assert "sess-1" not in repr(proto)


def test_resume_after_reconnect() -> None:
    proto = make_protocol()
    connect_ready(proto)
    proto.receive_payload({"op": 0, "t": "GUILD_CREATE", "s": 7, "d": {"id": "1"}}, 1.0)
    assert proto.receive_payload({"op": 7, "d": None}, 2.0) == [ReconnectRequested()]
    assert proto.connection_lost(4000).action is CloseAction.RESUME
    proto.begin_connection(jitter=0.0)
    (send,) = proto.receive_payload(hello(), 3.0)
    assert isinstance(send, SendPayload)
    assert send.kind is SendKind.RESUME
    assert send.payload == {
        "op": 6,
        "d": {"token": TOKEN, "session_id": "sess-1", "seq": 7},
    }
    events = proto.receive_payload({"op": 0, "t": "RESUMED", "s": 8, "d": None}, 4.0)
    assert events[0] == SessionResumed()
    assert proto.is_ready
    assert proto.sequence == 8


def test_invalid_session() -> None:
    proto = make_protocol()
    connect_ready(proto)
    assert proto.receive_payload({"op": 9, "d": True}, 1.0) == [SessionInvalidated(True)]
    assert proto.can_resume
    assert proto.receive_payload({"op": 9, "d": False}, 1.0) == [SessionInvalidated(False)]
    assert not proto.can_resume
    assert proto.connect_url("wss://base.example").startswith("wss://base.example/")
    proto.connection_lost(4000)
    proto.begin_connection(jitter=0.0)
    (send,) = proto.receive_payload(hello(), 2.0)
    assert isinstance(send, SendPayload)
    assert send.kind is SendKind.IDENTIFY


def test_unknown_opcode_and_second_hello() -> None:
    proto = make_protocol()
    proto.begin_connection(jitter=0.0)
    with pytest.raises(UnknownOpcode):
        proto.receive_payload({"op": 42}, 0.0)
    proto.receive_payload(hello(), 0.0)
    with pytest.raises(ProtocolError):
        proto.receive_payload(hello(), 0.0)


@pytest.mark.parametrize(
    "payload",
    [
        {"d": {}},
        {"op": "0"},
        {"op": 10, "d": {}},
        {"op": 10, "d": {"heartbeat_interval": -1}},
        {"op": 10, "d": {"heartbeat_interval": True}},
        {"op": 0, "d": {}},
        {"op": 0, "t": "X", "s": "1"},
        {"op": 0, "t": "READY", "s": 1, "d": {"session_id": "x"}},
        {"op": 0, "t": "READY", "s": 1, "d": {"session_id": "", "user": {"id": "1"}}},
        {"op": 0, "t": "READY", "s": 1, "d": {"session_id": "x", "user": {"id": "abc"}}},
        {"op": 9, "d": "yes"},
    ],
)
def test_malformed_payloads(payload: dict[str, Any]) -> None:
    proto = make_protocol()
    proto.begin_connection(jitter=0.0)
    with pytest.raises(ProtocolError):
        proto.receive_payload(payload, 0.0)


@settings(max_examples=300)
@given(
    st.one_of(
        st.binary(max_size=200),
        st.text(max_size=200).map(str.encode),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
            lambda children: (
                st.lists(children, max_size=4)
                | st.dictionaries(
                    st.sampled_from(["op", "d", "s", "t", "heartbeat_interval", "user", "id"]),
                    children,
                    max_size=5,
                )
            ),
            max_leaves=20,
        ).map(lambda value: json.dumps(value).encode()),
    )
)
def test_fuzzed_input_raises_only_protocol_error(data: bytes) -> None:
    proto = make_protocol()
    proto.begin_connection(jitter=0.0)
    for receive in (proto.receive_text, proto.receive_bytes):
        with contextlib.suppress(ProtocolError):
            receive(data, 0.0)


# --- heartbeats --------------------------------------------------------------------------------


def test_first_heartbeat_uses_jitter_then_interval() -> None:
    proto = make_protocol()
    proto.begin_connection(jitter=0.5)
    proto.receive_payload(hello(10_000), 0.0)
    assert proto.poll(4.9) == []
    (beat,) = proto.poll(5.0)
    assert isinstance(beat, SendPayload)
    assert beat.kind is SendKind.HEARTBEAT
    assert beat.payload == {"op": 1, "d": None}
    assert proto.next_wakeup() == pytest.approx(15.0)
    assert proto.receive_payload({"op": 11}, 5.25) == [HeartbeatAcked(0.25)]
    proto.receive_payload(ready(seq=3), 6.0)
    (beat,) = proto.poll(15.0)
    assert isinstance(beat, SendPayload)
    assert beat.payload == {"op": 1, "d": 3}


def test_server_requested_heartbeat() -> None:
    proto = make_protocol()
    proto.begin_connection(jitter=0.5)
    proto.receive_payload(hello(10_000), 0.0)
    (beat,) = proto.receive_payload({"op": 1, "d": None}, 1.0)
    assert isinstance(beat, SendPayload)
    assert beat.kind is SendKind.HEARTBEAT


@given(
    interval=st.integers(min_value=100, max_value=60_000),
    jitter=st.floats(min_value=0.0, max_value=1.0),
    acks=st.lists(st.booleans(), min_size=1, max_size=30),
)
def test_zombie_detection(interval: int, jitter: float, acks: list[bool]) -> None:
    """Each beat is ACKed or not; the first beat due while one is un-ACKed reports a zombie."""
    proto = make_protocol()
    proto.begin_connection(jitter=jitter)
    proto.receive_payload(hello(interval), 0.0)
    beats = 0
    for acked in acks:
        due = proto.next_wakeup()
        assert due is not None
        assert proto.poll(due - 1e-6 * interval) == []
        (event,) = proto.poll(due)
        assert isinstance(event, SendPayload)
        beats += 1
        if not acked:
            (zombie,) = proto.poll(proto.next_wakeup() or 0.0)
            assert zombie == ZombieConnection()
            assert proto.next_wakeup() is None
            return
        proto.receive_payload({"op": 11}, due + 0.001)
    assert beats == len(acks)


# --- zlib-stream -------------------------------------------------------------------------------


json_messages = st.lists(
    st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=30), max_size=6).map(
        lambda d: json.dumps({"op": 0, "t": "X", "s": 1, "d": d}).encode()
    ),
    min_size=1,
    max_size=10,
)


@given(messages=json_messages, data=st.data())
def test_inflater_reassembles_split_messages(messages: list[bytes], data: st.DataObject) -> None:
    compressor = zlib.compressobj()
    inflater = ZlibStreamInflater()
    for message in messages:
        compressed = compressor.compress(message) + compressor.flush(zlib.Z_SYNC_FLUSH)
        assert compressed.endswith(ZLIB_SUFFIX)
        cuts = sorted(
            data.draw(st.sets(st.integers(1, len(compressed) - 1), max_size=4), label="cuts")
        )
        # A chunk that ends in the suffix mid-message would look complete (as on Discord).
        assume(not any(compressed[:cut].endswith(ZLIB_SUFFIX) for cut in cuts))
        bounds = [0, *cuts, len(compressed)]
        chunks = [compressed[a:b] for a, b in itertools.pairwise(bounds)]
        for chunk in chunks[:-1]:
            assert inflater.feed(chunk) is None
        assert inflater.feed(chunks[-1]) == message
    assert inflater.buffered == 0


def test_inflater_feeds_the_protocol() -> None:
    compressor = zlib.compressobj()
    proto = make_protocol()
    proto.begin_connection(jitter=0.0)
    blob = compressor.compress(json.dumps(hello()).encode()) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert proto.receive_bytes(blob[:3], 0.0) == []
    (send,) = proto.receive_bytes(blob[3:], 0.0)
    assert isinstance(send, SendPayload)


@given(st.binary(max_size=300))
def test_inflater_corrupt_data(garbage: bytes) -> None:
    inflater = ZlibStreamInflater()
    try:
        inflater.feed(garbage + ZLIB_SUFFIX)
    except ProtocolError:
        with pytest.raises(ProtocolError):
            inflater.feed(b"x" + ZLIB_SUFFIX)


def test_inflater_size_limit() -> None:
    compressor = zlib.compressobj()
    blob = compressor.compress(b"a" * 10_000) + compressor.flush(zlib.Z_SYNC_FLUSH)
    with pytest.raises(ProtocolError):
        ZlibStreamInflater(max_message_size=1000).feed(blob)


# --- rate limits -------------------------------------------------------------------------------


@settings(max_examples=200)
@given(
    gaps=st.lists(
        st.tuples(st.floats(min_value=0, max_value=3, allow_nan=False), st.booleans()),
        min_size=1,
        max_size=400,
    )
)
def test_rate_limiter_never_exceeds_limit(gaps: list[tuple[float, bool]]) -> None:
    limiter = SendRateLimiter(limit=20, window=10.0, reserved=3)
    now = 0.0
    sent: list[tuple[float, bool]] = []
    for gap, priority in gaps:
        now += gap
        while (delay := limiter.delay(now, priority=priority)) > 0:
            now += delay
        limiter.record(now)
        sent.append((now, priority))
    times = [t for t, _ in sent]
    for i, start in enumerate(times):
        in_window = [p for t, p in sent[i:] if t < start + 10.0]
        assert len(in_window) <= 20
    # Ordinary sends alone never take the reserved slots.
    ordinary = [t for t, p in sent if not p]
    for i, start in enumerate(ordinary):
        assert sum(1 for t in ordinary[i:] if t < start + 10.0) <= 17


def test_rate_limiter_reserves_priority_slots() -> None:
    limiter = SendRateLimiter()
    for _ in range(105):
        assert limiter.delay(0.0) == 0
        limiter.record(0.0)
    assert limiter.delay(1.0) == pytest.approx(59.0)
    assert limiter.delay(1.0, priority=True) == 0
    limiter.reset()
    assert limiter.delay(1.0) == 0
    with pytest.raises(UsageError):
        SendRateLimiter(limit=5, reserved=5)


def test_identify_limiter_buckets() -> None:
    limiter = IdentifyLimiter(max_concurrency=2)
    assert limiter.reserve(0.0, 0) == 0.0
    assert limiter.reserve(0.0, 1) == 0.0
    assert limiter.reserve(0.0, 2) == 5.0
    assert limiter.reserve(1.0, 0) == 10.0
    assert limiter.reserve(20.0, 3) == 20.0
    with pytest.raises(UsageError):
        IdentifyLimiter(max_concurrency=0)


@given(st.lists(st.floats(min_value=0, max_value=20, allow_nan=False), min_size=1, max_size=50))
def test_identify_limiter_spacing(gaps: list[float]) -> None:
    limiter = IdentifyLimiter()
    now = 0.0
    slots = []
    for gap in gaps:
        now += gap
        slot = limiter.reserve(now, 0)
        assert slot >= now
        slots.append(slot)
    assert all(b - a >= 5.0 - 1e-9 for a, b in itertools.pairwise(slots))


def test_backoff() -> None:
    backoff = ReconnectBackoff(base=1.0, maximum=8.0)
    delays = [backoff.next_delay(0.999) for _ in range(6)]
    assert delays[0] < 1.0
    assert max(delays) <= 8.0
    assert delays == sorted(delays)
    backoff.reset()
    assert backoff.next_delay(0.0) == 0.5


def test_intents() -> None:
    assert int(Intents.GUILDS) == 1
    assert int(Intents.GUILD_VOICE_STATES) == 128
    assert Intents.VOICE_DEFAULT == Intents.GUILDS | Intents.GUILD_VOICE_STATES
    assert Intents.GUILD_MEMBERS in PRIVILEGED_INTENTS


server_messages = st.one_of(
    st.builds(hello, st.integers(min_value=1, max_value=100_000)),
    st.builds(ready, st.integers(min_value=0, max_value=1000), st.sampled_from(["a", "b"])),
    st.builds(
        lambda name, seq: {"op": 0, "t": name, "s": seq, "d": {}},
        st.sampled_from(["GUILD_CREATE", "RESUMED", "VOICE_STATE_UPDATE"]),
        st.integers(min_value=0, max_value=1000) | st.none(),
    ),
    st.just({"op": 11}),
    st.just({"op": 1, "d": None}),
    st.just({"op": 7, "d": None}),
    st.builds(lambda d: {"op": 9, "d": d}, st.booleans()),
    st.dictionaries(st.sampled_from(["op", "d", "s", "t"]), st.integers() | st.text(max_size=3)),
)

actions = st.one_of(
    st.tuples(st.just("receive"), server_messages),
    st.tuples(st.just("poll"), st.floats(min_value=0, max_value=100)),
    st.tuples(st.just("lost"), st.sampled_from([None, 1000, 4000, 4007, 4009, 4004])),
    st.tuples(st.just("open"), st.floats(min_value=0, max_value=1)),
)


@settings(max_examples=300)
@given(st.lists(actions, max_size=40))
def test_protocol_survives_any_sequence(steps: list[tuple[str, Any]]) -> None:
    """Whatever the server does and whenever: only ProtocolError escapes, and state stays sane."""
    proto = make_protocol()
    proto.begin_connection(jitter=0.5)
    now = 0.0
    for kind, value in steps:
        if kind == "receive":
            try:
                events = proto.receive_payload(value, now)
            except ProtocolError:
                continue
            for event in events:
                if isinstance(event, SendPayload) and event.kind is SendKind.RESUME:
                    assert event.payload["d"]["seq"] == proto.sequence
        elif kind == "poll":
            now += value
            assert len(proto.poll(now)) <= 1
        elif kind == "lost":
            verdict = proto.connection_lost(value)
            if verdict.action is CloseAction.RESUME:
                assert proto.can_resume
            assert not proto.is_ready
        else:
            proto.begin_connection(jitter=value)
        if proto.can_resume:
            assert proto.has_session and proto.sequence is not None
        wake = proto.next_wakeup()
        assert wake is None or wake >= 0
        assert TOKEN not in repr(proto)


@pytest.mark.parametrize("sequence", [-1, 2**63, 2**64 + 1])
def test_a_dispatch_sequence_out_of_range_is_malformed(sequence: int) -> None:
    """Echoed back in heartbeats and in the resume, an absurd number must never be kept."""
    proto = make_protocol()
    connect_ready(proto)
    dispatch = {"op": 0, "t": "GUILD_CREATE", "s": sequence, "d": {}}
    with pytest.raises(ProtocolError, match="sequence"):
        proto.receive_payload(dispatch, 1.0)
    assert proto.sequence == 1


def test_protocol_errors_cap_what_a_peer_sent() -> None:
    error = ProtocolError("the server sent " + "x" * 500_000)
    assert len(str(error)) < 1100
    assert str(error).endswith("characters)")
