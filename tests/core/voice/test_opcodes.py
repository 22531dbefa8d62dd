from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from discore_voice._core.voice.opcodes import (
    CLIENT_BINARY_OPCODES,
    CLIENT_TEXT_OPCODES,
    SERVER_BINARY_OPCODES,
    SERVER_TEXT_OPCODES,
    VOICE_GATEWAY_VERSION,
    CloseAction,
    VoiceCloseCode,
    VoiceOpcode,
    classify_close,
    describe_close,
)

# Discord's "Voice Opcodes" table (opcodes-and-status-codes.mdx): code -> (sent by, binary).
DOCUMENTED_OPCODES = {
    0: ("client", False),
    1: ("client", False),
    2: ("server", False),
    3: ("client", False),
    4: ("server", False),
    5: ("both", False),
    6: ("server", False),
    7: ("client", False),
    8: ("server", False),
    9: ("server", False),
    11: ("server", False),
    12: ("server", False),  # undocumented, seen in the wild (a member's SSRCs): receive uses it
    13: ("server", False),
    21: ("server", False),
    22: ("server", False),
    23: ("client", False),
    24: ("server", False),
    25: ("server", True),
    26: ("client", True),
    27: ("server", True),
    28: ("client", True),
    29: ("server", True),
    30: ("server", True),
    31: ("client", False),
}

R, N, F = CloseAction.RESUME, CloseAction.NEW_SESSION, CloseAction.FATAL
# Every code in Discord's "Voice Close Event Codes" table, with our policy for it.
DOCUMENTED_CLOSE_CODES = {
    4001: F,
    4002: F,
    4003: F,
    4004: F,
    4005: F,
    4006: N,
    4009: N,
    4011: F,
    4012: F,
    4014: F,
    4015: R,
    4016: F,
    4017: F,
    4020: F,
    4021: F,
    4022: F,
}


def test_version_is_8() -> None:
    assert VOICE_GATEWAY_VERSION == 8


def test_every_documented_opcode_and_no_other() -> None:
    assert {int(op) for op in VoiceOpcode} == set(DOCUMENTED_OPCODES)


@pytest.mark.parametrize(("code", "sender_binary"), sorted(DOCUMENTED_OPCODES.items()))
def test_direction_and_framing_sets(code: int, sender_binary: tuple[str, bool]) -> None:
    sender, binary = sender_binary
    op = VoiceOpcode(code)
    from_client = sender in ("client", "both")
    from_server = sender in ("server", "both")
    assert (op in CLIENT_TEXT_OPCODES) == (from_client and not binary)
    assert (op in SERVER_TEXT_OPCODES) == (from_server and not binary)
    assert (op in CLIENT_BINARY_OPCODES) == (from_client and binary)
    assert (op in SERVER_BINARY_OPCODES) == (from_server and binary)


def test_opcode_names() -> None:
    assert {op.name: int(op) for op in VoiceOpcode} == {
        "IDENTIFY": 0,
        "SELECT_PROTOCOL": 1,
        "READY": 2,
        "HEARTBEAT": 3,
        "SESSION_DESCRIPTION": 4,
        "SPEAKING": 5,
        "HEARTBEAT_ACK": 6,
        "RESUME": 7,
        "HELLO": 8,
        "RESUMED": 9,
        "CLIENTS_CONNECT": 11,
        "VIDEO": 12,
        "CLIENT_DISCONNECT": 13,
        "DAVE_PREPARE_TRANSITION": 21,
        "DAVE_EXECUTE_TRANSITION": 22,
        "DAVE_TRANSITION_READY": 23,
        "DAVE_PREPARE_EPOCH": 24,
        "DAVE_MLS_EXTERNAL_SENDER": 25,
        "DAVE_MLS_KEY_PACKAGE": 26,
        "DAVE_MLS_PROPOSALS": 27,
        "DAVE_MLS_COMMIT_WELCOME": 28,
        "DAVE_MLS_ANNOUNCE_COMMIT_TRANSITION": 29,
        "DAVE_MLS_WELCOME": 30,
        "DAVE_MLS_INVALID_COMMIT_WELCOME": 31,
    }


def test_every_documented_close_code_and_no_other() -> None:
    assert {int(code) for code in VoiceCloseCode} == set(DOCUMENTED_CLOSE_CODES)


@pytest.mark.parametrize(("code", "action"), sorted(DOCUMENTED_CLOSE_CODES.items()))
def test_classification_of_documented_codes(code: int, action: CloseAction) -> None:
    assert classify_close(code) is action
    assert classify_close(VoiceCloseCode(code)) is action


def test_dropped_connection_resumes() -> None:
    assert classify_close(None) is CloseAction.RESUME


@pytest.mark.parametrize("code", range(1000, 1016))
def test_websocket_level_codes_resume(code: int) -> None:
    assert classify_close(code) is CloseAction.RESUME


@given(
    st.integers(min_value=-(2**31), max_value=2**31).filter(
        lambda code: code not in DOCUMENTED_CLOSE_CODES and not 1000 <= code <= 1015
    )
)
def test_anything_else_is_fatal(code: int) -> None:
    assert classify_close(code) is CloseAction.FATAL


@pytest.mark.parametrize("code", [999, 1016, 3000, 4000, 4007, 4008, 4010, 4013, 4018, 4999])
def test_undocumented_neighbours_are_fatal(code: int) -> None:
    assert classify_close(code) is CloseAction.FATAL


@pytest.mark.parametrize("code", list(VoiceCloseCode))
def test_every_code_has_a_description(code: VoiceCloseCode) -> None:
    assert len(code.description) > 10
    assert f"code {int(code)}" in describe_close(int(code))
    assert code.description in describe_close(int(code))


def test_descriptions_are_distinct() -> None:
    descriptions = [code.description for code in VoiceCloseCode]
    assert len(set(descriptions)) == len(descriptions)


def test_4017_names_dave_and_e2ee() -> None:
    text = describe_close(4017)
    assert "DAVE" in text
    assert "E2EE" in text


def test_descriptions_of_other_closes() -> None:
    assert "without a close frame" in describe_close(None)
    assert "1006" in describe_close(1006)
    assert "transport" in describe_close(1006)
    assert "undocumented" in describe_close(4242)
    assert "4242" in describe_close(4242)
