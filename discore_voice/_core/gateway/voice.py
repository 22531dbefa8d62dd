"""The main gateway's side of voice: the op 4 request and the two dispatches that answer it.

A voice connection needs nothing else from the main gateway (see the bridges), so these three
payloads are kept apart from the shard's own protocol: a bridge in another process can use them
without a shard.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..fields import Fields
from ..snowflake import Snowflake, snowflake_to_wire

__all__ = [
    "GATEWAY_DISCONNECTED",
    "GATEWAY_RESUMED",
    "GATEWAY_SESSION_LOST",
    "VOICE_SERVER_UPDATE",
    "VOICE_STATE_SENT",
    "VOICE_STATE_UPDATE",
    "VOICE_STATE_UPDATE_OPCODE",
    "VoiceServerUpdate",
    "VoiceStateUpdate",
    "build_voice_state_update",
    "parse_voice_server_update",
    "parse_voice_state_update",
]

VOICE_STATE_UPDATE_OPCODE = 4
VOICE_STATE_UPDATE = "VOICE_STATE_UPDATE"
VOICE_SERVER_UPDATE = "VOICE_SERVER_UPDATE"
#: Not a Discord dispatch: what a shard publishes to its voice subscribers when its gateway session
#: ended without a resume (op 9 ``d=false``, or a close such as 4009). Discord drops the session's
#: voice states with it, so its voice connections are over. ``d`` is ``{"reason": str}``. A bridge
#: forwarding dispatches from a shard elsewhere forwards this one as well.
GATEWAY_SESSION_LOST = "GATEWAY_SESSION_LOST"
#: Not Discord dispatches either: a shard's connection dropped (its session may still resume),
#: and it resumed. Dispatches missed meanwhile (a move's, for one) are replayed right after the
#: resume, so a voice connection waiting for them waits for the gateway too. ``d`` is ``{}``.
GATEWAY_DISCONNECTED = "GATEWAY_DISCONNECTED"
GATEWAY_RESUMED = "GATEWAY_RESUMED"
#: Not a Discord dispatch: the shard just sent an op 4 for ``d.guild_id`` (``d.channel_id``, None
#: for a leave), in order with the guild's dispatches. Answers to a join can only follow it, so a
#: voice connection ignores voice dispatches that came before: the replay of an earlier
#: connection's, after a resume, would otherwise be taken for its own.
VOICE_STATE_SENT = "VOICE_STATE_SENT"


def build_voice_state_update(
    guild_id: Snowflake, channel_id: Snowflake | None, *, self_mute: bool, self_deaf: bool
) -> dict[str, Any]:
    """Join (a channel id), move (another one) or leave (None)."""
    return {
        "op": VOICE_STATE_UPDATE_OPCODE,
        "d": {
            "guild_id": snowflake_to_wire(guild_id),
            "channel_id": None if channel_id is None else snowflake_to_wire(channel_id),
            "self_mute": self_mute,
            "self_deaf": self_deaf,
        },
    }


@dataclass(frozen=True, slots=True)
class VoiceStateUpdate:
    """A member's voice state; for our own user it carries the voice session id.

    ``channel_id`` is None when the member left or was disconnected (a kick, a deleted channel).
    """

    guild_id: Snowflake | None
    channel_id: Snowflake | None
    user_id: Snowflake
    session_id: str = field(repr=False)
    self_mute: bool
    self_deaf: bool


@dataclass(frozen=True, slots=True)
class VoiceServerUpdate:
    """Where to open the voice websocket, and the token to identify with there.

    ``endpoint`` is None when Discord's voice server went away; a new update follows.
    """

    guild_id: Snowflake
    endpoint: str | None
    token: str = field(repr=False)


def parse_voice_state_update(data: object) -> VoiceStateUpdate:
    fields = Fields(data, VOICE_STATE_UPDATE)
    return VoiceStateUpdate(
        guild_id=fields.optional_snowflake("guild_id"),
        channel_id=fields.optional_snowflake("channel_id"),
        user_id=fields.snowflake("user_id"),
        session_id=fields.string("session_id"),
        self_mute=fields.boolean("self_mute", default=False),
        self_deaf=fields.boolean("self_deaf", default=False),
    )


def parse_voice_server_update(data: object) -> VoiceServerUpdate:
    fields = Fields(data, VOICE_SERVER_UPDATE)
    endpoint = fields.optional_str("endpoint")
    return VoiceServerUpdate(
        guild_id=fields.snowflake("guild_id"),
        # An empty endpoint is as unusable as a null one; treat both as "no server yet".
        endpoint=endpoint or None,
        token=fields.string("token"),
    )
