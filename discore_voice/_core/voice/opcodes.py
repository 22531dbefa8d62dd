"""Voice gateway (v8) opcodes and close codes, and what a client should do after each close.

The opcode sets by direction and framing live here, next to the enum, so the framing layer and the
payload registry cannot disagree about which ops are binary or who may send them.

Close handling is a policy, not a fact of the protocol, so it is one table and one function: the
shell asks :func:`classify_close` and never interprets a number itself. The policy is conservative:
we resume only when Discord says resuming helps, and never reconnect silently after a close that
means the voice session is gone.
"""

from __future__ import annotations

import enum
from typing import Final

__all__ = [
    "CLIENT_BINARY_OPCODES",
    "CLIENT_TEXT_OPCODES",
    "SERVER_BINARY_OPCODES",
    "SERVER_TEXT_OPCODES",
    "VOICE_GATEWAY_VERSION",
    "CloseAction",
    "VoiceCloseCode",
    "VoiceOpcode",
    "classify_close",
    "describe_close",
]

#: The only voice gateway version this library speaks: v8 buffers server messages and re-delivers
#: the ones a client missed when it resumes, which is what makes resuming safe.
VOICE_GATEWAY_VERSION: Final = 8


class VoiceOpcode(enum.IntEnum):
    """Every opcode Discord documents for the voice websocket (v8, with DAVE), and op 12."""

    IDENTIFY = 0
    SELECT_PROTOCOL = 1
    READY = 2
    HEARTBEAT = 3
    SESSION_DESCRIPTION = 4
    SPEAKING = 5
    HEARTBEAT_ACK = 6
    RESUME = 7
    HELLO = 8
    RESUMED = 9
    CLIENTS_CONNECT = 11
    #: Undocumented, seen in the wild: a member's SSRCs, sent when it connects, before it
    #: speaks. Receive maps the audio SSRC from it, so a member's first words are not held.
    VIDEO = 12
    CLIENT_DISCONNECT = 13
    DAVE_PREPARE_TRANSITION = 21
    DAVE_EXECUTE_TRANSITION = 22
    DAVE_TRANSITION_READY = 23
    DAVE_PREPARE_EPOCH = 24
    DAVE_MLS_EXTERNAL_SENDER = 25
    DAVE_MLS_KEY_PACKAGE = 26
    DAVE_MLS_PROPOSALS = 27
    DAVE_MLS_COMMIT_WELCOME = 28
    DAVE_MLS_ANNOUNCE_COMMIT_TRANSITION = 29
    DAVE_MLS_WELCOME = 30
    DAVE_MLS_INVALID_COMMIT_WELCOME = 31


_Op = VoiceOpcode

#: JSON ops a client sends (Speaking goes both ways, with different payloads).
CLIENT_TEXT_OPCODES: Final = frozenset(
    {
        _Op.IDENTIFY,
        _Op.SELECT_PROTOCOL,
        _Op.HEARTBEAT,
        _Op.SPEAKING,
        _Op.RESUME,
        _Op.DAVE_TRANSITION_READY,
        _Op.DAVE_MLS_INVALID_COMMIT_WELCOME,
    }
)
#: JSON ops the server sends.
SERVER_TEXT_OPCODES: Final = frozenset(
    {
        _Op.READY,
        _Op.SESSION_DESCRIPTION,
        _Op.SPEAKING,
        _Op.HEARTBEAT_ACK,
        _Op.HELLO,
        _Op.RESUMED,
        _Op.CLIENTS_CONNECT,
        _Op.VIDEO,
        _Op.CLIENT_DISCONNECT,
        _Op.DAVE_PREPARE_TRANSITION,
        _Op.DAVE_EXECUTE_TRANSITION,
        _Op.DAVE_PREPARE_EPOCH,
    }
)
#: Binary ops a client sends, framed as ``[u8 op][payload]``.
CLIENT_BINARY_OPCODES: Final = frozenset({_Op.DAVE_MLS_KEY_PACKAGE, _Op.DAVE_MLS_COMMIT_WELCOME})
#: Binary ops the server sends, framed as ``[u16 BE seq][u8 op][payload]``.
SERVER_BINARY_OPCODES: Final = frozenset(
    {
        _Op.DAVE_MLS_EXTERNAL_SENDER,
        _Op.DAVE_MLS_PROPOSALS,
        _Op.DAVE_MLS_ANNOUNCE_COMMIT_TRANSITION,
        _Op.DAVE_MLS_WELCOME,
    }
)


class VoiceCloseCode(enum.IntEnum):
    """Every close code Discord documents for the voice websocket."""

    UNKNOWN_OPCODE = 4001
    FAILED_TO_DECODE_PAYLOAD = 4002
    NOT_AUTHENTICATED = 4003
    AUTHENTICATION_FAILED = 4004
    ALREADY_AUTHENTICATED = 4005
    SESSION_NO_LONGER_VALID = 4006
    SESSION_TIMEOUT = 4009
    SERVER_NOT_FOUND = 4011
    UNKNOWN_PROTOCOL = 4012
    DISCONNECTED = 4014
    VOICE_SERVER_CRASHED = 4015
    UNKNOWN_ENCRYPTION_MODE = 4016
    DAVE_PROTOCOL_REQUIRED = 4017
    BAD_REQUEST = 4020
    DISCONNECTED_RATE_LIMITED = 4021
    DISCONNECTED_CALL_TERMINATED = 4022

    @property
    def description(self) -> str:
        """Shown to users in errors, so it says what happened in words, not numbers."""
        return _CLOSE_DESCRIPTIONS[self]


_C = VoiceCloseCode

_CLOSE_DESCRIPTIONS: Final[dict[VoiceCloseCode, str]] = {
    _C.UNKNOWN_OPCODE: "unknown opcode: the client sent an invalid opcode (a library bug)",
    _C.FAILED_TO_DECODE_PAYLOAD: "failed to decode payload: the client sent an invalid payload "
    "(a library bug)",
    _C.NOT_AUTHENTICATED: "not authenticated: the client sent a payload before identifying "
    "(a library bug)",
    _C.AUTHENTICATION_FAILED: "authentication failed: the voice token was rejected",
    _C.ALREADY_AUTHENTICATED: "already authenticated: the client identified twice (a library bug)",
    _C.SESSION_NO_LONGER_VALID: "session no longer valid: the voice session must be started anew",
    _C.SESSION_TIMEOUT: "session timeout: the voice session timed out and must be started anew",
    _C.SERVER_NOT_FOUND: "server not found: the voice server for this session does not exist",
    _C.UNKNOWN_PROTOCOL: "unknown protocol: the voice server did not recognise the selected "
    "protocol (a library bug)",
    _C.DISCONNECTED: "disconnected: the bot was kicked or moved out of the channel, or its main "
    "gateway session was dropped; Discord says not to reconnect",
    _C.VOICE_SERVER_CRASHED: "voice server crashed: Discord asks the client to resume",
    _C.UNKNOWN_ENCRYPTION_MODE: "unknown encryption mode: the voice server did not recognise the "
    "selected transport encryption mode",
    _C.DAVE_PROTOCOL_REQUIRED: "E2EE/DAVE protocol required: this channel requires end-to-end "
    "encryption with the DAVE protocol, and the connection did not negotiate it",
    _C.BAD_REQUEST: "bad request: the client sent a malformed request (a library bug)",
    _C.DISCONNECTED_RATE_LIMITED: "disconnected, rate limited: Discord says not to reconnect",
    _C.DISCONNECTED_CALL_TERMINATED: "disconnected, call terminated: the channel was deleted or "
    "the voice server changed; Discord says not to reconnect",
}


class CloseAction(enum.Enum):
    """What the shell does after the voice websocket closes."""

    #: Open a new websocket and send Resume; v8 re-delivers what was missed.
    RESUME = "resume"
    #: The voice session is dead. We never re-identify silently, so the shell invalidates the
    #: connection (SESSION_INVALID) and lets the caller decide whether to join again.
    NEW_SESSION = "new_session"
    #: Reconnecting cannot help (our bug, bad credentials, kicked, rate limited, call ended).
    FATAL = "fatal"


#: WebSocket-level codes (RFC 6455 and its registry up to 1015) are transport events, not
#: Discord's verdict on the session, so they are treated like a dropped connection.
_TRANSPORT_CLOSE_CODES: Final = range(1000, 1016)

_CLOSE_ACTIONS: Final[dict[int, CloseAction]] = {
    _C.VOICE_SERVER_CRASHED: CloseAction.RESUME,
    _C.SESSION_NO_LONGER_VALID: CloseAction.NEW_SESSION,
    _C.SESSION_TIMEOUT: CloseAction.NEW_SESSION,
}


def classify_close(code: int | None) -> CloseAction:
    """Decide between resume, a dead session and a fatal error.

    ``None`` means the connection dropped without a close frame, which is always worth a resume.
    Unknown codes are fatal: Discord adds codes that usually mean "do not reconnect", and a resume
    loop against a server that keeps refusing is worse than a clear error.
    """
    if code is None or code in _TRANSPORT_CLOSE_CODES:
        return CloseAction.RESUME
    return _CLOSE_ACTIONS.get(code, CloseAction.FATAL)


def describe_close(code: int | None) -> str:
    """Give users words for any close, including codes Discord has not documented yet."""
    if code is None:
        return "the voice websocket dropped without a close frame"
    if code in _TRANSPORT_CLOSE_CODES:
        return f"the voice websocket closed at the transport level (code {code})"
    try:
        known = VoiceCloseCode(code)
    except ValueError:
        return f"undocumented voice close code {code}"
    return f"{known.description} (code {code})"
