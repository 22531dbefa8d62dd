"""What a voice connection tells its user: the public events, apart from the internal commands.

These are the objects ``vc.subscribe()`` yields. The state machines produce them alongside their
commands (``commands.py``), and the shell hands them to the subscribers untouched: the state
machines already say exactly what happened, and a second set of classes would only drift.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TypeAlias

from ..player.events import TrackEnded, TrackStarted
from ..snowflake import Snowflake

__all__ = [
    "Connected",
    "DaveChange",
    "DaveStateChanged",
    "Invalidated",
    "InvalidationReason",
    "MemberConnected",
    "MemberDisconnected",
    "MemberSpeaking",
    "VoiceEvent",
]


class InvalidationReason(enum.Enum):
    """Why a voice connection ended. Discore's four, plus the distinctions Discord makes."""

    NORMAL = "normal"
    TIMED_OUT = "timed_out"
    ERROR = "error"
    NATIVE_LIBRARY_MISSING = "native_library_missing"
    KICKED = "kicked"
    CALL_TERMINATED = "call_terminated"
    RATE_LIMITED = "rate_limited"
    SESSION_INVALID = "session_invalid"
    DAVE_REQUIRED = "dave_required"
    GATEWAY_CLOSED = "gateway_closed"
    RECONNECT_FAILED = "reconnect_failed"
    #: The shard's guild list (READY, GUILD_CREATE) says the join cannot work; no op 4 was sent.
    NOT_IN_GUILD = "not_in_guild"
    NO_SUCH_CHANNEL = "no_such_channel"
    NOT_A_VOICE_CHANNEL = "not_a_voice_channel"


@dataclass(frozen=True, slots=True)
class Connected:
    """The handshake finished: first connect, a channel switch or a server move."""

    channel_id: Snowflake
    ssrc: int
    mode: str


@dataclass(frozen=True, slots=True)
class Invalidated:
    """The connection ended for good; ``detail`` is for humans and holds no secrets."""

    reason: InvalidationReason
    detail: str


@dataclass(frozen=True, slots=True)
class MemberSpeaking:
    """Another member's speaking state: also the only way to learn which user owns an SSRC."""

    user_id: Snowflake
    ssrc: int
    flags: int


@dataclass(frozen=True, slots=True)
class MemberConnected:
    """Another member joined the call (op 11 Clients Connect)."""

    user_id: Snowflake


@dataclass(frozen=True, slots=True)
class MemberDisconnected:
    """Another member left the call (op 13 Client Disconnect)."""

    user_id: Snowflake


class DaveChange(enum.Enum):
    """Why the DAVE state changed: what a user-facing event reports."""

    STARTED = "started"  # a new voice session chose its version
    GROUP_JOINED = "group_joined"  # a commit or welcome made us a member of a new epoch
    TRANSITION_EXECUTED = "transition_executed"
    DOWNGRADED = "downgraded"  # to version 0: transport encryption only
    UPGRADED = "upgraded"  # back to end-to-end encryption
    REINITIALISED = "reinitialised"  # a new group is being made (op 24 epoch 1, or recovery)
    RESET = "reset"


@dataclass(frozen=True, slots=True)
class DaveStateChanged:
    """The DAVE state after a change: its version, epoch and the code clients show."""

    cause: DaveChange
    protocol_version: int
    epoch: int | None
    can_encrypt: bool
    voice_privacy_code: str | None
    transition_id: int | None = None


VoiceEvent: TypeAlias = (
    Connected
    | Invalidated
    | MemberSpeaking
    | MemberConnected
    | MemberDisconnected
    | DaveStateChanged
    | TrackStarted
    | TrackEnded
)
