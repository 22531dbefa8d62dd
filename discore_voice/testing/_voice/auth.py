"""Who may open a voice session: the voice gateway asks an authority, the main gateway answers.

Discord's main gateway issues the voice session id and token (VOICE_STATE_UPDATE and
VOICE_SERVER_UPDATE); the voice server only checks them. Keeping that check behind a small
protocol lets the voice server run alone in tests (:class:`StaticVoiceAuthority`) or follow the
simulated world (:class:`WorldVoiceAuthority`) without depending on how the world is built.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field
from typing import Protocol

from ..._core.snowflake import Snowflake, validate_snowflake
from ..._core.voice.opcodes import VoiceCloseCode
from ..._errors import UsageError

__all__ = [
    "StaticVoiceAuthority",
    "VoiceAuthority",
    "VoiceCredentials",
    "VoiceGrant",
    "WorldVoiceAuthority",
]

_C = VoiceCloseCode


# --- who may connect ------------------------------------------------------------------------------


@dataclass(frozen=True)
class VoiceGrant:
    """Who an accepted Identify belongs to, and the channel it joins."""

    guild_id: Snowflake
    channel_id: Snowflake
    user_id: Snowflake


class VoiceAuthority(Protocol):
    """Decides whether a voice Identify is valid: a grant, or the close code to answer with.

    The main gateway issues voice session ids and tokens, so it is the authority; the voice
    server only asks. Return 4006 for an unknown session and 4004 for a wrong token.
    """

    def authorize(
        self, server_id: Snowflake, user_id: Snowflake, session_id: str, token: str
    ) -> VoiceGrant | int: ...


class _VoiceSessionLike(Protocol):
    @property
    def channel_id(self) -> Snowflake: ...
    @property
    def session_id(self) -> str: ...
    @property
    def token(self) -> str: ...


class _WorldLike(Protocol):
    def voice_session(self, guild_id: Snowflake, user_id: Snowflake) -> _VoiceSessionLike | None:
        """The world's current voice session of a user in a guild (``World.voice_session``)."""


def _same(secret: str, candidate: str) -> bool:
    return hmac.compare_digest(secret.encode(), candidate.encode())


class WorldVoiceAuthority:
    """Checks Identify against what the simulated main gateway issued (``World.voice_session``).

    Only the world's public lookup is used, so a token superseded by a move or a new
    VOICE_SERVER_UPDATE is rejected at once, as on Discord.
    """

    def __init__(self, world: _WorldLike) -> None:
        self._world = world

    def authorize(
        self, server_id: Snowflake, user_id: Snowflake, session_id: str, token: str
    ) -> VoiceGrant | int:
        try:
            session = self._world.voice_session(server_id, user_id)
        except UsageError:
            session = None
        if session is None or not _same(session.session_id, session_id):
            return _C.SESSION_NO_LONGER_VALID
        if not _same(session.token, token):
            return _C.AUTHENTICATION_FAILED
        return VoiceGrant(server_id, session.channel_id, user_id)


@dataclass(frozen=True)
class VoiceCredentials:
    """What a VOICE_STATE_UPDATE and VOICE_SERVER_UPDATE would carry, for standalone use."""

    guild_id: Snowflake
    channel_id: Snowflake
    user_id: Snowflake
    session_id: str = field(repr=False)
    token: str = field(repr=False)


class StaticVoiceAuthority:
    """An authority without a main gateway: tests and tools issue credentials directly."""

    def __init__(self) -> None:
        self._issued: dict[tuple[Snowflake, Snowflake], VoiceCredentials] = {}

    def issue(self, guild_id: int, channel_id: int, user_id: int) -> VoiceCredentials:
        """A fresh session id and token, replacing what this user had in this guild."""
        credentials = VoiceCredentials(
            validate_snowflake(guild_id, name="guild_id"),
            validate_snowflake(channel_id, name="channel_id"),
            validate_snowflake(user_id, name="user_id"),
            secrets.token_hex(16),
            secrets.token_hex(8),
        )
        self._issued[(credentials.guild_id, credentials.user_id)] = credentials
        return credentials

    def revoke(self, guild_id: int, user_id: int) -> None:
        self._issued.pop((guild_id, user_id), None)

    def authorize(
        self, server_id: Snowflake, user_id: Snowflake, session_id: str, token: str
    ) -> VoiceGrant | int:
        issued = self._issued.get((server_id, user_id))
        if issued is None or not _same(issued.session_id, session_id):
            return _C.SESSION_NO_LONGER_VALID
        if not _same(issued.token, token):
            return _C.AUTHENTICATION_FAILED
        return VoiceGrant(issued.guild_id, issued.channel_id, issued.user_id)
