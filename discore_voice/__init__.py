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
from ._core.voice_session import (
    Connected,
    Invalidated,
    InvalidationReason,
    MemberConnected,
    MemberDisconnected,
    MemberSpeaking,
)
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
from ._shell.voice_connection import (
    GuildNotOnShard,
    MissingVoiceIntent,
    VoiceConnection,
    VoiceConnectionBusy,
    VoiceConnectionFailed,
    voice_connection,
)
from ._shell.voice_events import VoiceEvent, VoiceEvents

__version__ = "0.1.0.dev0"

__all__ = [
    "OPUS_SILENCE_FRAME",
    "PRIVILEGED_INTENTS",
    "AuthenticationFailed",
    "BridgeClosed",
    "Connected",
    "DaveError",
    "DecryptionFailed",
    "DisallowedIntents",
    "DiscoreVoiceError",
    "EncryptionError",
    "ForwardedBridge",
    "GatewayError",
    "GatewayVoiceBridge",
    "GuildNotOnShard",
    "IdentifyLimiter",
    "Intents",
    "InvalidApiVersion",
    "InvalidIntents",
    "InvalidShard",
    "Invalidated",
    "InvalidationReason",
    "MemberConnected",
    "MemberDisconnected",
    "MemberSpeaking",
    "MissingVoiceIntent",
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
    "VoiceConnection",
    "VoiceConnectionBusy",
    "VoiceConnectionFailed",
    "VoiceEvent",
    "VoiceEvents",
    "__version__",
    "open_shard",
    "shard_for_guild",
    "voice_connection",
]
