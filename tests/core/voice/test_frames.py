from __future__ import annotations

import contextlib
import json
import random
import struct
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from discore_voice import ProtocolError, UnknownOpcode, UsageError
from discore_voice._core.voice.frames import (
    MAX_BINARY_FRAME,
    MAX_JSON_SEQ,
    MAX_TEXT_FRAME,
    SEQ_MODULUS,
    ClientBinaryMessage,
    SeqTracker,
    ServerBinaryMessage,
    decode_client_binary,
    decode_client_text,
    decode_server_binary,
    decode_server_text,
    encode_client_binary,
    encode_client_text,
    encode_server_binary,
    encode_server_text,
)
from discore_voice._core.voice.opcodes import (
    CLIENT_BINARY_OPCODES,
    SERVER_BINARY_OPCODES,
    VoiceOpcode,
)
from discore_voice._core.voice.payloads import (
    ClientDisconnect,
    ClientMessage,
    ClientsConnect,
    ClientSpeaking,
    DaveExecuteTransition,
    DaveMlsInvalidCommitWelcome,
    DavePrepareEpoch,
    DavePrepareTransition,
    DaveTransitionReady,
    Heartbeat,
    HeartbeatAck,
    Hello,
    Identify,
    Ready,
    Resume,
    Resumed,
    SelectProtocol,
    ServerMessage,
    ServerSpeaking,
    SessionDescription,
)

Op = VoiceOpcode
ids = st.integers(min_value=1, max_value=2**64 - 1)
u16 = st.integers(min_value=0, max_value=SEQ_MODULUS - 1)
u32 = st.integers(min_value=0, max_value=2**32 - 1)
words = st.text(min_size=1, max_size=20)
#: Ready's ip is an address, never a name (a name would be a peer-chosen DNS lookup).
ips = st.ip_addresses().map(str)
payloads = st.binary(max_size=300)

client_messages: st.SearchStrategy[ClientMessage] = st.one_of(
    st.builds(Identify, ids, ids, words, words, u16),
    st.builds(SelectProtocol, words, st.integers(1, 65535), words),
    st.builds(Heartbeat, st.integers(0, 2**53 - 1), st.integers(-1, 2**20)),
    st.builds(ClientSpeaking, u32, u32),
    st.builds(Resume, ids, words, words, st.integers(-1, 2**20)),
    st.builds(DaveTransitionReady, u16),
    st.builds(DaveMlsInvalidCommitWelcome, u16),
)
server_messages: st.SearchStrategy[ServerMessage] = st.one_of(
    st.builds(Hello, st.floats(1e-3, 1e9)),
    st.builds(Ready, u32, ips, st.integers(1, 65535), st.lists(words).map(tuple)),
    st.builds(SessionDescription, words, st.binary(min_size=32, max_size=32), u16),
    st.builds(HeartbeatAck, st.integers(0, 2**53 - 1)),
    st.builds(ServerSpeaking, ids, u32, u32),
    st.just(Resumed()),
    st.builds(ClientsConnect, st.lists(ids).map(tuple)),
    st.builds(ClientDisconnect, ids),
    st.builds(DavePrepareTransition, u16, u16),
    st.builds(DaveExecuteTransition, u16),
    st.builds(DavePrepareEpoch, st.integers(0, 2**64 - 1), u16, st.none() | u16),
)
server_binary_messages = st.one_of(
    st.builds(
        ServerBinaryMessage,
        st.sampled_from([Op.DAVE_MLS_EXTERNAL_SENDER, Op.DAVE_MLS_PROPOSALS]),
        payloads,
    ),
    st.builds(
        ServerBinaryMessage,
        st.sampled_from([Op.DAVE_MLS_ANNOUNCE_COMMIT_TRANSITION, Op.DAVE_MLS_WELCOME]),
        payloads,
        u16,
    ),
)
client_binary_messages = st.builds(
    ClientBinaryMessage, st.sampled_from(sorted(CLIENT_BINARY_OPCODES)), payloads
)
Decoder = Callable[[Any], object]
UNKNOWN_OPS = [op for op in range(256) if op not in {int(member) for member in VoiceOpcode}]


# --- round trips --------------------------------------------------------------------------------


@given(server_messages, st.none() | u16, st.booleans())
def test_server_text_round_trip(message: ServerMessage, seq: int | None, as_bytes: bool) -> None:
    text = encode_server_text(message, seq=seq)
    tracker = SeqTracker()
    frame: str | bytes = text.encode() if as_bytes else text
    assert decode_server_text(frame, tracker) == (seq, message)
    assert tracker.latest == seq


@given(client_messages, st.booleans())
def test_client_text_round_trip(message: ClientMessage, as_bytes: bool) -> None:
    text = encode_client_text(message)
    assert "seq" not in json.loads(text)
    assert decode_client_text(text.encode() if as_bytes else text) == message


@given(server_binary_messages, u16)
def test_server_binary_round_trip(message: ServerBinaryMessage, seq: int) -> None:
    tracker = SeqTracker()
    assert decode_server_binary(encode_server_binary(message, seq=seq), tracker) == (seq, message)
    assert tracker.seq_ack == seq


@given(client_binary_messages)
def test_client_binary_round_trip(message: ClientBinaryMessage) -> None:
    assert decode_client_binary(encode_client_binary(message)) == message


# --- byte layouts -------------------------------------------------------------------------------


def test_server_binary_layout() -> None:
    commit = ServerBinaryMessage(Op.DAVE_MLS_ANNOUNCE_COMMIT_TRANSITION, b"mls", 0x0102)
    assert encode_server_binary(commit, seq=0x1234) == b"\x12\x34\x1d\x01\x02mls"
    sender = ServerBinaryMessage(Op.DAVE_MLS_EXTERNAL_SENDER, b"\xaa\xbb")
    assert encode_server_binary(sender, seq=65535) == b"\xff\xff\x19\xaa\xbb"
    assert decode_server_binary(b"\x00\x07\x1e\x00\x05W") == (
        7,
        ServerBinaryMessage(Op.DAVE_MLS_WELCOME, b"W", 5),
    )
    assert decode_server_binary(b"\x00\x07\x1b") == (
        7,
        ServerBinaryMessage(Op.DAVE_MLS_PROPOSALS, b""),
    )


def test_client_binary_layout() -> None:
    key_package = ClientBinaryMessage(Op.DAVE_MLS_KEY_PACKAGE, b"kp")
    assert encode_client_binary(key_package) == b"\x1akp"
    assert decode_client_binary(b"\x1ccommit+welcome") == ClientBinaryMessage(
        Op.DAVE_MLS_COMMIT_WELCOME, b"commit+welcome"
    )


def test_server_text_layout() -> None:
    text = encode_server_text(DaveExecuteTransition(10), seq=3)
    assert json.loads(text) == {"op": 22, "d": {"transition_id": 10}, "seq": 3}
    assert "seq" not in json.loads(encode_server_text(HeartbeatAck(1), seq=None))


def test_the_v8_example_parses_with_its_seq() -> None:
    frame = '{"op": 5, "d": {"user_id": "9", "speaking": 0, "ssrc": 110}, "seq": 10}'
    assert decode_server_text(frame) == (10, ServerSpeaking(9, 110, 0))


def test_reprs_show_sizes_not_bytes() -> None:
    server = ServerBinaryMessage(Op.DAVE_MLS_WELCOME, b"\x01" * 500, 3)
    assert "500 bytes" in repr(server)
    assert "\\x01" not in repr(server)
    assert "transition_id=3" in repr(server)
    client = ClientBinaryMessage(Op.DAVE_MLS_KEY_PACKAGE, b"\x01" * 9)
    assert "9 bytes" in repr(client)
    assert "\\x01" not in repr(client)


# --- seq tracking -------------------------------------------------------------------------------


def test_tracker_starts_empty_and_resets() -> None:
    tracker = SeqTracker()
    assert tracker.latest is None
    assert tracker.seq_ack == -1
    tracker.observe(5)
    assert tracker.seq_ack == 5
    tracker.reset()
    assert tracker.latest is None
    assert tracker.seq_ack == -1


def test_tracker_keeps_the_highest_across_text_and_binary() -> None:
    tracker = SeqTracker()
    decode_server_text(encode_server_text(Hello(41250.0), seq=1), tracker)
    decode_server_binary(b"\x00\x03\x19sender", tracker)
    assert tracker.seq_ack == 3
    decode_server_text(encode_server_text(DaveExecuteTransition(1), seq=2), tracker)
    assert tracker.seq_ack == 3  # older: never moves back
    decode_server_text(encode_server_text(HeartbeatAck(1), seq=None), tracker)
    assert tracker.seq_ack == 3  # unnumbered: no change
    decode_server_text(encode_server_text(DaveExecuteTransition(1), seq=4), tracker)
    assert tracker.seq_ack == 4


def test_tracker_follows_the_wrap() -> None:
    tracker = SeqTracker()
    for seq in (65534, 65535, 0, 1):
        tracker.observe(seq)
        assert tracker.seq_ack == seq
    tracker.observe(65535)  # a late re-delivery from before the wrap
    assert tracker.seq_ack == 1


def test_tracker_rejects_negative_seqs() -> None:
    with pytest.raises(UsageError):
        SeqTracker().observe(-1)


@given(st.lists(st.integers(0, SEQ_MODULUS // 2 - 1), min_size=1), st.randoms())
def test_tracker_is_the_maximum_in_any_order(seqs: list[int], rng: random.Random) -> None:
    shuffled = list(seqs)
    rng.shuffle(shuffled)
    tracker = SeqTracker()
    for seq in shuffled:
        tracker.observe(seq)
    assert tracker.seq_ack == max(seqs)


@given(u16, st.lists(st.integers(0, SEQ_MODULUS // 2 - 1), min_size=1), st.randoms())
def test_tracker_is_the_maximum_across_the_wrap(
    base: int, offsets: list[int], rng: random.Random
) -> None:
    shuffled = [0, *offsets]
    rng.shuffle(shuffled)
    tracker = SeqTracker()
    tracker.observe(base)
    for offset in shuffled:
        tracker.observe((base + offset) % SEQ_MODULUS)
    assert tracker.seq_ack == (base + max(offsets)) % SEQ_MODULUS


@given(
    st.lists(
        st.tuples(st.integers(0, 2000), st.sampled_from(["text", "binary", "unknown", "bad"])),
        min_size=1,
        max_size=30,
    )
)
def test_frames_of_every_kind_feed_the_tracker(frames: list[tuple[int, str]]) -> None:
    tracker = SeqTracker()
    for seq, kind in frames:
        if kind == "text":
            decode_server_text(encode_server_text(DaveExecuteTransition(1), seq=seq), tracker)
        elif kind == "binary":
            decode_server_binary(struct.pack(">HB", seq, 25) + b"x", tracker)
        elif kind == "unknown":
            with pytest.raises(UnknownOpcode):
                decode_server_text(json.dumps({"op": 18, "d": {}, "seq": seq}), tracker)
        else:
            with pytest.raises(ProtocolError):
                decode_server_text(json.dumps({"op": 22, "d": {}, "seq": seq}), tracker)
    assert tracker.seq_ack == max(seq for seq, _ in frames)


def test_unknown_text_op_is_recorded_then_raised() -> None:
    tracker = SeqTracker()
    with pytest.raises(UnknownOpcode) as excinfo:
        decode_server_text('{"op": 15, "d": {"any": 1}, "seq": 42}', tracker)
    assert excinfo.value.opcode == 15
    assert tracker.seq_ack == 42


@pytest.mark.parametrize("op", UNKNOWN_OPS)
def test_unknown_binary_op_is_recorded_then_raised(op: int) -> None:
    tracker = SeqTracker()
    with pytest.raises(UnknownOpcode) as excinfo:
        decode_server_binary(struct.pack(">HB", 777, op) + b"payload", tracker)
    assert excinfo.value.opcode == op
    assert tracker.seq_ack == 777


def test_malformed_d_is_still_acknowledged() -> None:
    tracker = SeqTracker()
    with pytest.raises(ProtocolError, match="transition_id"):
        decode_server_text('{"op": 22, "d": {"transition_id": "x"}, "seq": 9}', tracker)
    assert tracker.seq_ack == 9
    with pytest.raises(ProtocolError, match="transition id"):
        decode_server_binary(b"\x00\x0a\x1d\x01", tracker)
    assert tracker.seq_ack == 10


@pytest.mark.parametrize("seq", [MAX_JSON_SEQ + 1, 2**64 + 1, 10**30])
def test_an_absurd_seq_is_malformed_and_never_acknowledged(seq: int) -> None:
    """It would otherwise go back to the server as seq_ack in every heartbeat."""
    tracker = SeqTracker()
    decode_server_text('{"op": 6, "d": {"t": 1}, "seq": 5}', tracker)
    with pytest.raises(ProtocolError, match="seq"):
        decode_server_text(f'{{"op": 6, "d": {{"t": 1}}, "seq": {seq}}}', tracker)
    assert tracker.seq_ack == 5
    decode_server_text(f'{{"op": 6, "d": {{"t": 1}}, "seq": {MAX_JSON_SEQ}}}', tracker)


# --- malformed frames ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        ("", "not valid JSON"),
        ("{", "not valid JSON"),
        (b"\xff\xfe{}", "not valid JSON"),
        ("[]", "must be a JSON object"),
        ("null", "must be a JSON object"),
        ('"op"', "must be a JSON object"),
        ('{"d": {}}', "field 'op' is missing"),
        ('{"op": "8", "d": {}}', "field 'op' must be an integer"),
        ('{"op": true, "d": {}}', "field 'op' must be an integer"),
        ('{"op": 8.0, "d": {}}', "field 'op' must be an integer"),
        ('{"op": null, "d": {}}', "field 'op' must be an integer"),
        ('{"op": 8, "d": {"heartbeat_interval": 1}, "seq": -1}', "field 'seq' is out of range"),
        ('{"op": 8, "d": {"heartbeat_interval": 1}, "seq": "1"}', "field 'seq' must be"),
        ('{"op": 8, "d": {"heartbeat_interval": 1}, "seq": true}', "field 'seq' must be"),
        ('{"op": 8, "d": {"heartbeat_interval": 1}, "seq": 1.5}', "field 'seq' must be"),
        ('{"op": 8}', "must be a JSON object, got null"),
        ('{"op": 0, "d": {}}', "is not a JSON message the server sends"),
        ('{"op": 25, "d": {}}', "is not a JSON message the server sends"),
        ('{"op": 8, "d": {"heartbeat_interval": NaN}}', "positive finite"),
        ('{"op": 8, "d": {"heartbeat_interval": 1e999}}', "positive finite"),
        ("[" * 100_000, "not valid JSON"),
    ],
)
def test_malformed_server_text(frame: str | bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message) as excinfo:
        decode_server_text(frame)
    assert not isinstance(excinfo.value, UnknownOpcode)


def test_resumed_needs_no_d() -> None:
    assert decode_server_text('{"op": 9, "seq": 3}') == (3, Resumed())
    assert decode_server_text('{"op": 9, "d": null}') == (None, Resumed())


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        ("{}", "field 'op' is missing"),
        ('{"op": 2, "d": {}}', "is not a JSON message the client sends"),
        ('{"op": 26, "d": {}}', "is not a JSON message the client sends"),
        ('{"op": 3, "d": {"t": true}}', "field 't' must be an integer"),
    ],
)
def test_malformed_client_text(frame: str, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        decode_client_text(frame)


def test_unknown_client_text_op() -> None:
    with pytest.raises(UnknownOpcode):
        decode_client_text('{"op": 18, "d": {}}')


@pytest.mark.parametrize("frame", [b"", b"\x00", b"\x00\x01"])
def test_truncated_server_binary(frame: bytes) -> None:
    with pytest.raises(ProtocolError, match="truncated"):
        decode_server_binary(frame)


@pytest.mark.parametrize("op", [29, 30])
@pytest.mark.parametrize("tail", [b"", b"\x01"])
def test_transition_ops_need_a_transition_id(op: int, tail: bytes) -> None:
    with pytest.raises(ProtocolError, match="no transition id"):
        decode_server_binary(bytes((0, 1, op)) + tail)


def test_truncated_client_binary() -> None:
    with pytest.raises(ProtocolError, match="truncated"):
        decode_client_binary(b"")


@pytest.mark.parametrize("op", sorted(set(VoiceOpcode) - SERVER_BINARY_OPCODES))
def test_known_non_binary_ops_in_server_binary(op: VoiceOpcode) -> None:
    with pytest.raises(ProtocolError, match="is not a binary message") as excinfo:
        decode_server_binary(bytes((0, 1, op)) + b"xx")
    assert not isinstance(excinfo.value, UnknownOpcode)


@pytest.mark.parametrize("op", sorted(set(VoiceOpcode) - CLIENT_BINARY_OPCODES))
def test_known_non_binary_ops_in_client_binary(op: VoiceOpcode) -> None:
    with pytest.raises(ProtocolError, match="is not a binary message") as excinfo:
        decode_client_binary(bytes((op,)) + b"xx")
    assert not isinstance(excinfo.value, UnknownOpcode)


@pytest.mark.parametrize("op", UNKNOWN_OPS)
def test_unknown_client_binary_op(op: int) -> None:
    with pytest.raises(UnknownOpcode):
        decode_client_binary(bytes((op,)))


def test_size_limits() -> None:
    largest_binary = b"\x00\x01\x19" + bytes(MAX_BINARY_FRAME - 3)
    assert decode_server_binary(largest_binary)[1].op is Op.DAVE_MLS_EXTERNAL_SENDER
    with pytest.raises(ProtocolError, match="too large"):
        decode_server_binary(largest_binary + b"\x00")
    with pytest.raises(ProtocolError, match="too large"):
        decode_client_binary(b"\x1a" + bytes(MAX_BINARY_FRAME))
    padded = '{"op": 8, "d": {"heartbeat_interval": 1}}'
    padded += " " * (MAX_TEXT_FRAME - len(padded))
    assert decode_server_text(padded)[1] == Hello(1.0)
    with pytest.raises(ProtocolError, match="too large"):
        decode_server_text(padded + " ")
    with pytest.raises(ProtocolError, match="too large"):
        decode_server_text((padded + " ").encode())
    with pytest.raises(ProtocolError, match="too large"):
        decode_client_text(padded + " ")


def test_oversized_frame_is_rejected_before_its_seq_is_read() -> None:
    tracker = SeqTracker()
    with pytest.raises(ProtocolError, match="too large"):
        decode_server_binary(b"\x00\x05\x19" + bytes(MAX_BINARY_FRAME), tracker)
    assert tracker.latest is None


# --- callers' mistakes --------------------------------------------------------------------------


@pytest.mark.parametrize("decoder", [decode_server_binary, decode_client_binary])
def test_binary_decoders_refuse_text(decoder: Decoder) -> None:
    with pytest.raises(UsageError):
        decoder("\x00\x01\x19")


@pytest.mark.parametrize("decoder", [decode_server_text, decode_client_text])
def test_text_decoders_refuse_other_types(decoder: Decoder) -> None:
    with pytest.raises(UsageError):
        decoder(None)


def test_encoders_refuse_what_cannot_be_framed() -> None:
    with pytest.raises(UsageError, match="not a binary message a client sends"):
        encode_client_binary(ClientBinaryMessage(Op.DAVE_MLS_PROPOSALS, b""))
    with pytest.raises(UsageError, match="too large"):
        encode_client_binary(ClientBinaryMessage(Op.DAVE_MLS_KEY_PACKAGE, bytes(MAX_BINARY_FRAME)))
    sender = ServerBinaryMessage(Op.DAVE_MLS_EXTERNAL_SENDER, b"")
    with pytest.raises(UsageError, match="16 bits"):
        encode_server_binary(sender, seq=SEQ_MODULUS)
    with pytest.raises(UsageError, match="16 bits"):
        encode_server_binary(sender, seq=-1)
    with pytest.raises(UsageError, match="not a binary message the server sends"):
        encode_server_binary(ServerBinaryMessage(Op.DAVE_MLS_KEY_PACKAGE, b""), seq=1)
    with pytest.raises(UsageError, match="transition id"):
        encode_server_binary(ServerBinaryMessage(Op.DAVE_MLS_WELCOME, b""), seq=1)
    with pytest.raises(UsageError, match="transition id"):
        encode_server_binary(ServerBinaryMessage(Op.DAVE_MLS_PROPOSALS, b"", 1), seq=1)
    with pytest.raises(UsageError, match="16 bits"):
        encode_server_binary(ServerBinaryMessage(Op.DAVE_MLS_WELCOME, b"", SEQ_MODULUS), seq=1)
    with pytest.raises(UsageError, match="too large"):
        encode_server_binary(sender.__class__(sender.op, bytes(MAX_BINARY_FRAME)), seq=1)
    with pytest.raises(UsageError, match="16 bits"):
        encode_server_text(Resumed(), seq=SEQ_MODULUS)
    with pytest.raises(UsageError, match="JSON cannot carry"):
        encode_server_text(Hello(float("nan")), seq=1)


# --- fuzzing: only ProtocolError may escape ----------------------------------------------------


def only_protocol_errors(decoder: Decoder, frame: object) -> None:
    # Anything but a ProtocolError escapes and fails the test.
    with contextlib.suppress(ProtocolError):
        decoder(frame)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=10) | st.dictionaries(st.text(), children),
    max_leaves=20,
)
envelopes = st.fixed_dictionaries(
    {},
    optional={
        "op": st.integers(0, 40) | json_values,
        "d": json_values,
        "seq": st.integers(-2, 70000) | json_values,
    },
)


@given(st.text() | st.binary())
@pytest.mark.parametrize("decoder", [decode_server_text, decode_client_text])
def test_fuzzed_text_frames(decoder: Decoder, frame: str | bytes) -> None:
    only_protocol_errors(decoder, frame)


@given(envelopes, st.booleans())
@pytest.mark.parametrize("decoder", [decode_server_text, decode_client_text])
def test_fuzzed_json_envelopes(decoder: Decoder, envelope: object, as_bytes: bool) -> None:
    text = json.dumps(envelope)
    only_protocol_errors(decoder, text.encode() if as_bytes else text)


@given(st.binary())
@pytest.mark.parametrize("decoder", [decode_server_binary, decode_client_binary])
def test_fuzzed_binary_frames(decoder: Decoder, frame: bytes) -> None:
    only_protocol_errors(decoder, frame)


@given(st.data())
def test_mutated_valid_frames(data: st.DataObject) -> None:
    kind = data.draw(st.sampled_from(["server_text", "client_text", "server_bin", "client_bin"]))
    frame: bytes
    if kind == "server_text":
        frame = encode_server_text(data.draw(server_messages), seq=data.draw(u16)).encode()
    elif kind == "client_text":
        frame = encode_client_text(data.draw(client_messages)).encode()
    elif kind == "server_bin":
        frame = encode_server_binary(data.draw(server_binary_messages), seq=data.draw(u16))
    else:
        frame = encode_client_binary(data.draw(client_binary_messages))
    position = data.draw(st.integers(0, len(frame)))
    replacement = data.draw(st.binary(max_size=4))
    cut = data.draw(st.integers(0, 3))
    mutated = frame[:position] + replacement + frame[position + cut :]
    if kind.endswith("text"):
        decoder = decode_server_text if kind == "server_text" else decode_client_text
        only_protocol_errors(decoder, mutated)
    else:
        decoder_b = decode_server_binary if kind == "server_bin" else decode_client_binary
        only_protocol_errors(decoder_b, mutated)
