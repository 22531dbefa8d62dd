"""discore_voice: trio-native Discord voice connections.

Everything a bot author needs is importable from here; modules with a leading underscore are
private and may change without notice.
"""

from __future__ import annotations

from ._core.gateway_errors import (
    AuthenticationFailed,
    BridgeClosed,
    DisallowedIntents,
    GatewayError,
    InvalidApiVersion,
    InvalidIntents,
    InvalidShard,
    ShardClosed,
    ShardingError,
    ShardingRequired,
)
from ._core.gateway_intents import PRIVILEGED_INTENTS, Intents
from ._core.gateway_limits import IdentifyLimiter
from ._core.snowflake import Snowflake
from ._core.speaking import OPUS_SILENCE_FRAME, SpeakingFlags
from ._errors import (
    DaveError,
    DecryptionFailed,
    DiscoreVoiceError,
    EncryptionError,
    NativeLibraryMissing,
    NoCompatibleEncryptionMode,
    NonceExhausted,
    OpusError,
    ProtocolError,
    UnknownOpcode,
    UsageError,
)
from ._shell.bridge import ForwardedBridge, GatewayVoiceBridge
from ._shell.shard import Shard, open_shard, shard_for_guild
from ._shell.shard_events import Subscription

__version__ = "0.1.0.dev0"

__all__ = [
    "OPUS_SILENCE_FRAME",
    "PRIVILEGED_INTENTS",
    "AuthenticationFailed",
    "BridgeClosed",
    "DaveError",
    "DecryptionFailed",
    "DisallowedIntents",
    "DiscoreVoiceError",
    "EncryptionError",
    "ForwardedBridge",
    "GatewayError",
    "GatewayVoiceBridge",
    "IdentifyLimiter",
    "Intents",
    "InvalidApiVersion",
    "InvalidIntents",
    "InvalidShard",
    "NativeLibraryMissing",
    "NoCompatibleEncryptionMode",
    "NonceExhausted",
    "OpusError",
    "ProtocolError",
    "Shard",
    "ShardClosed",
    "ShardingError",
    "ShardingRequired",
    "Snowflake",
    "SpeakingFlags",
    "Subscription",
    "UnknownOpcode",
    "UsageError",
    "__version__",
    "open_shard",
    "shard_for_guild",
]
