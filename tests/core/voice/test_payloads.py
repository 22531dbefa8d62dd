from __future__ import annotations

import contextlib
import copy
import json
import math
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from discore_voice import ProtocolError, UnknownOpcode
from discore_voice._core.voice.opcodes import CLIENT_TEXT_OPCODES, SERVER_TEXT_OPCODES, VoiceOpcode
from discore_voice._core.voice.payloads import (
    CLIENT_MESSAGE_TYPES,
    MAX_HEARTBEAT_NONCE,
    NO_SEQ_ACK,
    SERVER_MESSAGE_TYPES,
    ClientDisconnect,
    ClientMessage,
    ClientsConnect,
    ClientSpeaking,
    ClientSsrcs,
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
    build_client_payload,
    build_server_payload,
    parse_client_payload,
    parse_server_payload,
)

# --- strategies ---------------------------------------------------------------------------------

ids = st.integers(min_value=1, max_value=2**64 - 1)
u16 = st.integers(min_value=0, max_value=2**16 - 1)
u32 = st.integers(min_value=0, max_value=2**32 - 1)
ports = st.integers(min_value=1, max_value=2**16 - 1)
words = st.text(min_size=1, max_size=40)
#: Ready's ip is an address, never a name (a name would be a peer-chosen DNS lookup).
ips = st.ip_addresses().map(str)
nonces = st.integers(min_value=0, max_value=MAX_HEARTBEAT_NONCE)
seq_acks = st.integers(min_value=-1, max_value=2**64 - 1)
intervals = st.floats(min_value=0, exclude_min=True, allow_nan=False, allow_infinity=False)

client_messages: st.SearchStrategy[ClientMessage] = st.one_of(
    st.builds(Identify, ids, ids, words, words, u16),
    st.builds(SelectProtocol, address=words, port=ports, mode=words, protocol=words),
    st.builds(Heartbeat, nonce=nonces, seq_ack=seq_acks),
    st.builds(ClientSpeaking, speaking=u32, ssrc=u32, delay=u32),
    st.builds(Resume, ids, words, words, seq_acks),
    st.builds(DaveTransitionReady, u16),
    st.builds(DaveMlsInvalidCommitWelcome, u16),
)
server_messages: st.SearchStrategy[ServerMessage] = st.one_of(
    st.builds(Hello, intervals),
    st.builds(Ready, ssrc=u32, ip=ips, port=ports, modes=st.lists(st.text()).map(tuple)),
    st.builds(SessionDescription, words, st.binary(min_size=32, max_size=32), u16),
    st.builds(HeartbeatAck, nonces),
    st.builds(ServerSpeaking, ids, u32, u32),
    st.just(Resumed()),
    st.builds(ClientsConnect, st.lists(ids).map(tuple)),
    st.builds(ClientSsrcs, ids, u32),
    st.builds(ClientDisconnect, ids),
    st.builds(DavePrepareTransition, u16, u16),
    st.builds(DaveExecuteTransition, u16),
    st.builds(DavePrepareEpoch, st.integers(0, 2**64 - 1), u16, st.none() | u16),
)


def over_the_wire(payload: dict[str, Any]) -> dict[str, Any]:
    wire: dict[str, Any] = json.loads(json.dumps(payload))
    return wire


# --- round trips --------------------------------------------------------------------------------


@given(client_messages)
def test_client_messages_round_trip(message: ClientMessage) -> None:
    wire = over_the_wire(build_client_payload(message))
    assert set(wire) == {"op", "d"}
    assert wire["op"] == message.OPCODE
    assert parse_client_payload(wire["op"], wire["d"]) == message


@given(server_messages, st.none() | u16)
def test_server_messages_round_trip(message: ServerMessage, seq: int | None) -> None:
    wire = over_the_wire(build_server_payload(message, seq=seq))
    assert wire["op"] == message.OPCODE
    assert wire.get("seq") == seq
    assert ("seq" in wire) == (seq is not None)
    assert parse_server_payload(wire["op"], wire["d"]) == message


def test_registries_cover_every_text_opcode() -> None:
    assert set(CLIENT_MESSAGE_TYPES) == CLIENT_TEXT_OPCODES
    assert set(SERVER_MESSAGE_TYPES) == SERVER_TEXT_OPCODES
    for op, cls in {**CLIENT_MESSAGE_TYPES, **SERVER_MESSAGE_TYPES}.items():
        assert cls.OPCODE is op
    assert CLIENT_MESSAGE_TYPES[VoiceOpcode.SPEAKING] is ClientSpeaking
    assert SERVER_MESSAGE_TYPES[VoiceOpcode.SPEAKING] is ServerSpeaking


# --- the wire shapes Discord documents ---------------------------------------------------------


def test_identify_wire_shape() -> None:
    message = Identify(41771983423143937, 104694319306248192, "my_session_id", "my_token", 1)
    assert over_the_wire(build_client_payload(message)) == {
        "op": 0,
        "d": {
            "server_id": "41771983423143937",
            "user_id": "104694319306248192",
            "session_id": "my_session_id",
            "token": "my_token",
            "max_dave_protocol_version": 1,
        },
    }


def test_select_protocol_wire_shape() -> None:
    message = SelectProtocol(address="127.0.0.1", port=1337, mode="aead_aes256_gcm_rtpsize")
    assert build_client_payload(message) == {
        "op": 1,
        "d": {
            "protocol": "udp",
            "data": {"address": "127.0.0.1", "port": 1337, "mode": "aead_aes256_gcm_rtpsize"},
        },
    }


def test_heartbeat_speaking_resume_and_dave_wire_shapes() -> None:
    assert build_client_payload(Heartbeat(1501184119561, 10)) == {
        "op": 3,
        "d": {"t": 1501184119561, "seq_ack": 10},
    }
    assert build_client_payload(Heartbeat(7)) == {"op": 3, "d": {"t": 7, "seq_ack": -1}}
    assert build_client_payload(ClientSpeaking(speaking=5, ssrc=1)) == {
        "op": 5,
        "d": {"speaking": 5, "delay": 0, "ssrc": 1},
    }
    assert build_client_payload(Resume(41771983423143937, "my_session_id", "my_token", 10)) == {
        "op": 7,
        "d": {
            "server_id": "41771983423143937",
            "session_id": "my_session_id",
            "token": "my_token",
            "seq_ack": 10,
        },
    }
    assert build_client_payload(DaveTransitionReady(10)) == {"op": 23, "d": {"transition_id": 10}}
    assert build_client_payload(DaveMlsInvalidCommitWelcome(32)) == {
        "op": 31,
        "d": {"transition_id": 32},
    }


def test_server_wire_shapes() -> None:
    assert build_server_payload(Hello(41250.0), seq=None) == {
        "op": 8,
        "d": {"heartbeat_interval": 41250},
    }
    assert build_server_payload(Hello(13750.25), seq=1) == {
        "op": 8,
        "d": {"heartbeat_interval": 13750.25},
        "seq": 1,
    }
    assert build_server_payload(Resumed(), seq=4) == {"op": 9, "d": None, "seq": 4}
    assert build_server_payload(ServerSpeaking(5, 110, 1), seq=10)["d"] == {
        "user_id": "5",
        "ssrc": 110,
        "speaking": 1,
    }
    assert build_server_payload(ClientsConnect((1, 2)), seq=2)["d"] == {"user_ids": ["1", "2"]}
    assert build_server_payload(DavePrepareEpoch(1, 1), seq=3)["d"] == {
        "epoch": 1,
        "protocol_version": 1,
    }
    assert build_server_payload(DavePrepareEpoch(2, 1, 7), seq=3)["d"] == {
        "epoch": 2,
        "protocol_version": 1,
        "transition_id": 7,
    }


def test_documented_examples_parse() -> None:
    ready = parse_server_payload(
        2,
        {
            "ssrc": 1,
            "ip": "127.0.0.1",
            "port": 1234,
            "modes": ["aead_aes256_gcm_rtpsize", "aead_xchacha20_poly1305_rtpsize"],
            "heartbeat_interval": 1,
        },
    )
    assert ready == Ready(
        1, "127.0.0.1", 1234, ("aead_aes256_gcm_rtpsize", "aead_xchacha20_poly1305_rtpsize")
    )
    assert parse_server_payload(8, {"heartbeat_interval": 41250}) == Hello(41250.0)
    assert parse_server_payload(8, {"heartbeat_interval": 13750.5}) == Hello(13750.5)
    assert parse_server_payload(6, {"t": 1501184119561}) == HeartbeatAck(1501184119561)
    assert parse_server_payload(9, None) == Resumed()
    assert parse_server_payload(11, {"user_ids": ["1090123456789012345"]}) == ClientsConnect(
        (1090123456789012345,)
    )
    # Op 12 is undocumented: read leniently, keeping only the user and its audio SSRC.
    seen_in_the_wild = {
        "user_id": "1090123456789012345",
        "audio_ssrc": 4242,
        "video_ssrc": 0,
        "rtx_ssrc": 0,
        "streams": [{"type": "video", "ssrc": 4243, "active": False}],
    }
    assert parse_server_payload(12, seen_in_the_wild) == ClientSsrcs(1090123456789012345, 4242)
    assert parse_server_payload(12, {"user_id": "5"}) == ClientSsrcs(5, 0)
    with pytest.raises(ProtocolError, match="audio_ssrc"):
        parse_server_payload(12, {"user_id": "5", "audio_ssrc": 2**32})
    assert parse_server_payload(21, {"protocol_version": 0, "transition_id": 10}) == (
        DavePrepareTransition(transition_id=10, protocol_version=0)
    )
    assert parse_server_payload(22, {"transition_id": 10}) == DaveExecuteTransition(10)
    assert parse_server_payload(24, {"protocol_version": 1, "epoch": 1}) == DavePrepareEpoch(1, 1)
    key = list(range(251, 256)) + list(range(27))
    description = parse_server_payload(
        4, {"mode": "aead_aes256_gcm_rtpsize", "secret_key": key, "dave_protocol_version": 1}
    )
    assert description == SessionDescription("aead_aes256_gcm_rtpsize", bytes(key), 1)


def test_optional_fields_take_their_documented_defaults() -> None:
    identify = {"server_id": "1", "user_id": "2", "session_id": "s", "token": "t"}
    assert parse_client_payload(0, identify) == Identify(1, 2, "s", "t", 0)
    assert parse_client_payload(0, {**identify, "max_dave_protocol_version": None}) == Identify(
        1, 2, "s", "t", 0
    )
    assert parse_client_payload(3, {"t": 5}) == Heartbeat(5, NO_SEQ_ACK)
    assert parse_client_payload(3, {"t": 5, "seq_ack": -1}) == Heartbeat(5, -1)
    resume = {"server_id": "1", "session_id": "s", "token": "t"}
    assert parse_client_payload(7, resume) == Resume(1, "s", "t", NO_SEQ_ACK)
    description = parse_server_payload(4, {"mode": "m", "secret_key": [0] * 32})
    assert description == SessionDescription("m", bytes(32), 0)
    assert parse_server_payload(24, {"epoch": 3, "protocol_version": 1, "transition_id": None}) == (
        DavePrepareEpoch(3, 1, None)
    )
    assert parse_server_payload(9, {}) == Resumed()


def test_unknown_fields_are_ignored() -> None:
    d = {"transition_id": 3, "extra": {"nested": [1, 2]}, "heartbeat_interval": "junk"}
    assert parse_server_payload(22, d) == DaveExecuteTransition(3)


# --- rejection: missing fields and wrong types -------------------------------------------------

VALID_SERVER_D: dict[int, dict[str, Any]] = {
    8: {"heartbeat_interval": 41250},
    2: {"ssrc": 1, "ip": "127.0.0.1", "port": 1234, "modes": ["aead_aes256_gcm_rtpsize"]},
    4: {"mode": "aead_aes256_gcm_rtpsize", "secret_key": [7] * 32, "dave_protocol_version": 1},
    6: {"t": 1501184119561},
    5: {"user_id": "104694319306248192", "ssrc": 110, "speaking": 1},
    11: {"user_ids": ["1090123456789012345"]},
    13: {"user_id": "1090123456789012345"},
    21: {"transition_id": 10, "protocol_version": 0},
    22: {"transition_id": 10},
    24: {"transition_id": 10, "epoch": 1, "protocol_version": 1},
}
VALID_CLIENT_D: dict[int, dict[str, Any]] = {
    0: {
        "server_id": "41771983423143937",
        "user_id": "104694319306248192",
        "session_id": "my_session_id",
        "token": "my_token",
        "max_dave_protocol_version": 1,
    },
    1: {"protocol": "udp", "data": {"address": "127.0.0.1", "port": 1337, "mode": "aead"}},
    3: {"t": 1501184119561, "seq_ack": 10},
    5: {"speaking": 5, "delay": 0, "ssrc": 1},
    7: {"server_id": "41771983423143937", "session_id": "s", "token": "t", "seq_ack": 10},
    23: {"transition_id": 10},
    31: {"transition_id": 32},
}

# (direction, op, path to the field, kind, required)
FIELDS: list[tuple[str, int, tuple[str, ...], str, bool]] = [
    ("server", 8, ("heartbeat_interval",), "number", True),
    ("server", 2, ("ssrc",), "int", True),
    ("server", 2, ("ip",), "str", True),
    ("server", 2, ("port",), "int", True),
    ("server", 2, ("modes",), "str_list", True),
    ("server", 4, ("mode",), "str", True),
    ("server", 4, ("secret_key",), "key", True),
    ("server", 4, ("dave_protocol_version",), "int", False),
    ("server", 6, ("t",), "int", True),
    ("server", 5, ("user_id",), "snowflake", True),
    ("server", 5, ("ssrc",), "int", True),
    ("server", 5, ("speaking",), "int", True),
    ("server", 11, ("user_ids",), "snowflake_list", True),
    ("server", 13, ("user_id",), "snowflake", True),
    ("server", 21, ("transition_id",), "int", True),
    ("server", 21, ("protocol_version",), "int", True),
    ("server", 22, ("transition_id",), "int", True),
    ("server", 24, ("transition_id",), "int", False),
    ("server", 24, ("epoch",), "int", True),
    ("server", 24, ("protocol_version",), "int", True),
    ("client", 0, ("server_id",), "snowflake", True),
    ("client", 0, ("user_id",), "snowflake", True),
    ("client", 0, ("session_id",), "str", True),
    ("client", 0, ("token",), "str", True),
    ("client", 0, ("max_dave_protocol_version",), "int", False),
    ("client", 1, ("protocol",), "str", True),
    ("client", 1, ("data",), "object", True),
    ("client", 1, ("data", "address"), "str", True),
    ("client", 1, ("data", "port"), "int", True),
    ("client", 1, ("data", "mode"), "str", True),
    ("client", 3, ("t",), "int", True),
    ("client", 3, ("seq_ack",), "int", False),
    ("client", 5, ("speaking",), "int", True),
    ("client", 5, ("delay",), "int", True),
    ("client", 5, ("ssrc",), "int", True),
    ("client", 7, ("server_id",), "snowflake", True),
    ("client", 7, ("session_id",), "str", True),
    ("client", 7, ("token",), "str", True),
    ("client", 7, ("seq_ack",), "int", False),
    ("client", 23, ("transition_id",), "int", True),
    ("client", 31, ("transition_id",), "int", True),
]

# Values of the wrong JSON type for each kind; ``None`` is only wrong where the field is required.
WRONG: dict[str, list[Any]] = {
    "int": [True, False, 1.0, 1.5, "1", [1], {"v": 1}],
    "number": [True, "41250", [41250], {"v": 1}],
    "str": [1, True, ["a"], {"v": "a"}],
    "snowflake": [True, 1.0, "abc", "-1", "0", 0, [], {"v": 1}],
    "str_list": ["aead", [1], ["a", None], {"v": "a"}],
    "snowflake_list": ["1", [True], ["x"], [1.5], {"v": "1"}],
    "key": ["abc", [1.0] * 32, [True] * 32, ["1"] * 32, {"v": 1}],
    "object": [[], "udp", 1, True],
}


def names(key: str) -> str:
    """Fields names a field as ``field 'key'``, and a nested object as ``payload.key``."""
    return f"{re.escape(repr(key))}|{re.escape(f'.{key} must be')}"


def _parse(direction: str, op: int, d: object) -> object:
    if direction == "server":
        return parse_server_payload(op, d)
    return parse_client_payload(op, d)


def _valid(direction: str, op: int) -> dict[str, Any]:
    return copy.deepcopy((VALID_SERVER_D if direction == "server" else VALID_CLIENT_D)[op])


def _set(d: dict[str, Any], path: tuple[str, ...], value: object) -> None:
    for key in path[:-1]:
        d = d[key]
    d[path[-1]] = value


def _delete(d: dict[str, Any], path: tuple[str, ...]) -> None:
    for key in path[:-1]:
        d = d[key]
    del d[path[-1]]


def test_valid_samples_parse() -> None:
    for direction, samples in (("server", VALID_SERVER_D), ("client", VALID_CLIENT_D)):
        for op, d in samples.items():
            _parse(direction, op, copy.deepcopy(d))


def test_the_field_table_covers_every_message() -> None:
    assert {op for direction, op, *_ in FIELDS if direction == "server"} == set(VALID_SERVER_D)
    assert {op for direction, op, *_ in FIELDS if direction == "client"} == set(VALID_CLIENT_D)


@pytest.mark.parametrize(
    ("direction", "op", "path"),
    [(direction, op, path) for direction, op, path, _, required in FIELDS if required],
)
def test_missing_required_field_is_named(direction: str, op: int, path: tuple[str, ...]) -> None:
    d = _valid(direction, op)
    _delete(d, path)
    with pytest.raises(ProtocolError, match=re.escape(f"field {path[-1]!r} is missing")):
        _parse(direction, op, d)


@pytest.mark.parametrize(
    ("direction", "op", "path", "bad"),
    [
        (direction, op, path, bad)
        for direction, op, path, kind, required in FIELDS
        for bad in WRONG[kind] + ([None] if required else [])
    ],
)
def test_wrong_type_is_rejected_naming_the_field(
    direction: str, op: int, path: tuple[str, ...], bad: object
) -> None:
    d = _valid(direction, op)
    _set(d, path, bad)
    with pytest.raises(ProtocolError, match=names(path[-1])):
        _parse(direction, op, d)


@pytest.mark.parametrize(
    ("direction", "op", "path", "bad"),
    [
        ("server", 2, ("port",), 0),
        ("server", 2, ("port",), 65536),
        ("server", 2, ("ssrc",), -1),
        ("server", 2, ("ssrc",), 2**32),
        ("server", 2, ("ip",), ""),
        ("server", 4, ("mode",), ""),
        ("server", 4, ("secret_key",), [0] * 31),
        ("server", 4, ("secret_key",), [0] * 33),
        ("server", 4, ("secret_key",), []),
        ("server", 4, ("secret_key",), [256] + [0] * 31),
        ("server", 4, ("secret_key",), [-1] + [0] * 31),
        ("server", 4, ("dave_protocol_version",), -1),
        ("server", 6, ("t",), -1),
        ("server", 6, ("t",), 2**53),
        ("server", 8, ("heartbeat_interval",), 0),
        ("server", 8, ("heartbeat_interval",), -41250),
        ("server", 8, ("heartbeat_interval",), math.inf),
        ("server", 8, ("heartbeat_interval",), math.nan),
        ("server", 8, ("heartbeat_interval",), None),
        ("server", 21, ("transition_id",), 65536),
        ("server", 21, ("transition_id",), -1),
        ("server", 24, ("transition_id",), 65536),
        ("server", 24, ("epoch",), -1),
        ("server", 24, ("epoch",), 2**64),
        ("client", 0, ("token",), ""),
        ("client", 0, ("session_id",), ""),
        ("client", 0, ("server_id",), 2**64),
        ("client", 1, ("data", "port"), 0),
        ("client", 1, ("data", "address"), ""),
        ("client", 1, ("protocol",), ""),
        ("client", 3, ("seq_ack",), -2),
        ("client", 5, ("ssrc",), 2**32),
        ("client", 5, ("delay",), -1),
        ("client", 23, ("transition_id",), 65536),
        ("client", 31, ("transition_id",), -1),
    ],
)
def test_out_of_range_values_are_rejected_naming_the_field(
    direction: str, op: int, path: tuple[str, ...], bad: object
) -> None:
    d = _valid(direction, op)
    _set(d, path, bad)
    with pytest.raises(ProtocolError, match=names(path[-1])):
        _parse(direction, op, d)


@pytest.mark.parametrize("d", [None, [], "x", 1, True])
@pytest.mark.parametrize(
    ("direction", "op"),
    [("server", op) for op in VALID_SERVER_D] + [("client", op) for op in VALID_CLIENT_D],
)
def test_d_must_be_an_object(direction: str, op: int, d: object) -> None:
    with pytest.raises(ProtocolError, match="must be a JSON object"):
        _parse(direction, op, d)


@pytest.mark.parametrize("d", [[], "x", 1, True])
def test_resumed_tolerates_only_null_or_an_object(d: object) -> None:
    with pytest.raises(ProtocolError, match=re.escape("voice Resumed (op 9)")):
        parse_server_payload(9, d)


def test_errors_name_the_payload() -> None:
    with pytest.raises(ProtocolError, match=re.escape("voice Ready (op 2): field 'ssrc'")):
        parse_server_payload(2, {})
    with pytest.raises(
        ProtocolError, match=re.escape("voice SelectProtocol (op 1).data: field 'port'")
    ):
        parse_client_payload(1, {"protocol": "udp", "data": {"address": "a", "mode": "m"}})


# --- opcodes that do not belong ----------------------------------------------------------------


@given(st.integers().filter(lambda op: op not in {int(member) for member in VoiceOpcode}))
def test_unknown_opcodes_raise_unknown_opcode(op: int) -> None:
    with pytest.raises(UnknownOpcode) as server:
        parse_server_payload(op, {})
    assert server.value.opcode == op
    with pytest.raises(UnknownOpcode) as client:
        parse_client_payload(op, {})
    assert client.value.opcode == op


@pytest.mark.parametrize("op", sorted(set(VoiceOpcode) - SERVER_TEXT_OPCODES))
def test_known_ops_the_server_does_not_send_as_json_are_protocol_errors(op: VoiceOpcode) -> None:
    with pytest.raises(ProtocolError, match="is not a JSON message the server sends") as excinfo:
        parse_server_payload(op, {})
    assert not isinstance(excinfo.value, UnknownOpcode)


@pytest.mark.parametrize("op", sorted(set(VoiceOpcode) - CLIENT_TEXT_OPCODES))
def test_known_ops_a_client_does_not_send_as_json_are_protocol_errors(op: VoiceOpcode) -> None:
    with pytest.raises(ProtocolError, match="is not a JSON message the client sends") as excinfo:
        parse_client_payload(op, {})
    assert not isinstance(excinfo.value, UnknownOpcode)


# --- fuzzing: only ProtocolError may escape ----------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text()
    | st.sampled_from(["1", "0", "-1", "104694319306248192", "udp"]),
    lambda children: st.lists(children, max_size=40) | st.dictionaries(st.text(), children),
    max_leaves=40,
)
field_names = st.sampled_from(
    sorted({path[-1] for _, _, path, _, _ in FIELDS} | {"data", "heartbeat_interval"})
)
json_objects = st.dictionaries(field_names | st.text(), json_values)


def only_protocol_errors(direction: str, op: int, d: object) -> None:
    # Anything but a ProtocolError escapes and fails the test.
    with contextlib.suppress(ProtocolError):
        _parse(direction, op, d)


@given(st.integers(0, 40) | st.integers(), json_objects | json_values)
def test_fuzzed_server_payloads_raise_only_protocol_errors(op: int, d: object) -> None:
    only_protocol_errors("server", op, d)


@given(st.integers(0, 40) | st.integers(), json_objects | json_values)
def test_fuzzed_client_payloads_raise_only_protocol_errors(op: int, d: object) -> None:
    only_protocol_errors("client", op, d)


@given(st.data())
def test_mutated_valid_payloads_raise_only_protocol_errors(data: st.DataObject) -> None:
    direction, op, path, _, _ = data.draw(st.sampled_from(FIELDS))
    d = _valid(direction, op)
    _set(d, path, data.draw(json_values))
    only_protocol_errors(direction, op, d)


# --- secrets ------------------------------------------------------------------------------------

secrets = st.text(min_size=6).map(lambda text: f"SECRET{text}")


@given(ids, ids, secrets, secrets)
def test_identify_and_resume_reprs_hide_token_and_session(
    server_id: int, user_id: int, session_id: str, token: str
) -> None:
    for message in (
        Identify(server_id, user_id, session_id, token, 1),
        Resume(server_id, session_id, token, 3),
    ):
        for text in (repr(message), str(message)):
            assert "SECRET" not in text
            assert repr(session_id) not in text
            assert repr(token) not in text
            assert str(server_id) in text  # the repr is still useful


@given(st.binary(min_size=32, max_size=32))
def test_session_description_repr_hides_the_key(key: bytes) -> None:
    message = SessionDescription("aead_aes256_gcm_rtpsize", key, 1)
    for text in (repr(message), str(message)):
        assert repr(key) not in text
        assert key.hex() not in text
        assert str(list(key)) not in text
        assert "secret_key" not in text
        assert "aead_aes256_gcm_rtpsize" in text


def test_parse_errors_never_contain_secrets() -> None:
    d = _valid("client", 0)
    d["token"] = "TOKEN-VALUE-123"
    d["session_id"] = "SESSION-VALUE-456"
    d["user_id"] = "not a snowflake"
    with pytest.raises(ProtocolError) as excinfo:
        parse_client_payload(0, d)
    assert "VALUE" not in str(excinfo.value)
    d = _valid("client", 7)
    d["token"] = 987654321987
    with pytest.raises(ProtocolError, match="'token'") as excinfo:
        parse_client_payload(7, d)
    assert "987654321987" not in str(excinfo.value)
    key_d = _valid("server", 4)
    key_d["secret_key"] = [201, 202, 203, 204] * 8 + [205]
    with pytest.raises(ProtocolError) as excinfo:
        parse_server_payload(4, key_d)
    assert "201" not in str(excinfo.value)


@pytest.mark.parametrize("ip", ["voice.example", "127.0.0.1 ", "\ud800", "::g", "1.2.3"])
def test_ready_ip_must_be_an_address(ip: str) -> None:
    d = {"ssrc": 1, "ip": ip, "port": 50000, "modes": ["aead_aes256_gcm_rtpsize"]}
    with pytest.raises(ProtocolError, match="'ip' is not an IP address"):
        parse_server_payload(2, d)
