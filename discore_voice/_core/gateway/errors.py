"""Main gateway close codes, and the errors that end a shard for good.

Discord's table says which close codes are worth a reconnect. The ones that are not all mean the
bot's configuration is wrong (token, shard numbers, intents, API version), so retrying would only
burn identify quota: they become exceptions that name the fix. Among the codes that allow a
reconnect, two (4007, 4009) say the session itself is gone, so the next connection must identify
afresh rather than resume.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..._errors import DiscoreVoiceError

__all__ = [
    "AuthenticationFailed",
    "BridgeClosed",
    "CloseAction",
    "CloseVerdict",
    "DisallowedIntents",
    "GatewayCloseCode",
    "GatewayError",
    "InvalidApiVersion",
    "InvalidIntents",
    "InvalidShard",
    "ShardClosed",
    "ShardingError",
    "ShardingRequired",
    "classify_close",
]


class GatewayError(DiscoreVoiceError):
    """The main gateway ended the session in a way no reconnect can fix.

    ``code`` is the websocket close code Discord sent, or None when the failure happened before
    any close code could arrive (a TLS certificate that does not verify, for instance).
    """

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class AuthenticationFailed(GatewayError):
    """Discord rejected the bot token (close code 4004)."""


class ShardingError(GatewayError):
    """The shard numbers do not suit this bot (close codes 4010 and 4011)."""


class InvalidShard(ShardingError):
    """Discord rejected ``[shard_id, shard_count]`` (close code 4010)."""


class ShardingRequired(ShardingError):
    """The bot is in too many guilds for this few shards (close code 4011)."""


class InvalidApiVersion(GatewayError):
    """Discord no longer serves the gateway version this library speaks (close code 4012)."""


class InvalidIntents(GatewayError):
    """The intents value is not a valid bit set (close code 4013)."""


class DisallowedIntents(GatewayError):
    """A privileged intent was requested that the bot may not use (close code 4014)."""


class GatewayUnreachable(GatewayError):
    """No READY within ``open_shard``'s ``connect_timeout``: the gateway could not be reached,
    or dropped every connection before READY. Only the first connection is bounded like this;
    once a shard was ready, it reconnects with backoff for as long as its block lasts."""


class BridgeClosed(DiscoreVoiceError):
    """The gateway side of voice (a shard or a forwarded bridge) has gone away."""


class ShardClosed(BridgeClosed):
    """The shard has stopped: its block was left, or a fatal error ended it."""


class GatewayCloseCode(enum.IntEnum):
    UNKNOWN_ERROR = 4000
    UNKNOWN_OPCODE = 4001
    DECODE_ERROR = 4002
    NOT_AUTHENTICATED = 4003
    AUTHENTICATION_FAILED = 4004
    ALREADY_AUTHENTICATED = 4005
    INVALID_SEQ = 4007
    RATE_LIMITED = 4008
    SESSION_TIMED_OUT = 4009
    INVALID_SHARD = 4010
    SHARDING_REQUIRED = 4011
    INVALID_API_VERSION = 4012
    INVALID_INTENTS = 4013
    DISALLOWED_INTENTS = 4014


class CloseAction(enum.Enum):
    """What the shard does after its websocket closed."""

    RESUME = "resume"
    """Reconnect to ``resume_gateway_url`` and resume, if a session exists."""
    IDENTIFY = "identify"
    """The session is gone: reconnect to the base URL and identify afresh."""
    FATAL = "fatal"
    """Stop, and raise :attr:`CloseVerdict.error`."""


@dataclass(frozen=True, slots=True)
class CloseVerdict:
    action: CloseAction
    description: str
    error: GatewayError | None = None


_FATAL: dict[int, tuple[type[GatewayError], str]] = {
    4004: (
        AuthenticationFailed,
        "Discord rejected the bot token (close code 4004); check the token in the Developer "
        "Portal (Bot page); it is never retried",
    ),
    4010: (
        InvalidShard,
        "Discord rejected the shard numbers (close code 4010); shard_id must be below shard_count",
    ),
    4011: (
        ShardingRequired,
        "Discord requires more shards for this bot (close code 4011); raise shard_count "
        "(GET /gateway/bot recommends a value)",
    ),
    4012: (
        InvalidApiVersion,
        "Discord no longer accepts this gateway API version (close code 4012); upgrade "
        "discore_voice",
    ),
    4013: (
        InvalidIntents,
        "Discord rejected the intents as invalid (close code 4013); build them from the Intents "
        "flags",
    ),
    4014: (
        DisallowedIntents,
        "Discord refused a privileged intent (close code 4014); enable it on the Bot page of the "
        "Developer Portal, or stop requesting it",
    ),
}

_NEW_SESSION = {
    4007: "the resume sequence was invalid (close code 4007)",
    4009: "the session timed out (close code 4009)",
}


def classify_close(code: int | None) -> CloseVerdict:
    """Say what a shard must do after the gateway closed with ``code`` (None: no close frame)."""
    if code is None:
        return CloseVerdict(CloseAction.RESUME, "the connection dropped without a close code")
    fatal = _FATAL.get(code)
    if fatal is not None:
        kind, message = fatal
        return CloseVerdict(CloseAction.FATAL, message, kind(message, code=code))
    reason = _NEW_SESSION.get(code)
    if reason is not None:
        return CloseVerdict(CloseAction.IDENTIFY, reason)
    if code < 4000:
        # 1000-1015: websocket-level closes (1006: the TCP connection dropped).
        return CloseVerdict(CloseAction.RESUME, f"the websocket closed with code {code}")
    try:
        name = GatewayCloseCode(code).name.lower().replace("_", " ")
    except ValueError:
        name = "no documented meaning"
    return CloseVerdict(CloseAction.RESUME, f"the gateway closed with code {code} ({name})")
