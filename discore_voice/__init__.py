"""discore_voice: trio-native Discord voice connections.

Everything a bot author needs is importable from here; modules with a leading underscore are
private and may change without notice.
"""

from __future__ import annotations

import logging as _logging

from ._audio.ogg import AudioSourceError, OggFormatError, UnsupportedAudio
from ._audio.ogg_writer import OggOpusWriter, WavTooLarge, WavWriter
from ._audio.opus import Application, EncoderSettings
from ._audio.sources import (
    AudioExtraMissing,
    AudioSource,
    AvSource,
    OggOpusSource,
    PcmSource,
    open_audio_file,
)
from ._core.gateway.errors import (
    AuthenticationFailed,
    BridgeClosed,
    DisallowedIntents,
    GatewayError,
    GatewayUnreachable,
    InvalidApiVersion,
    InvalidIntents,
    InvalidShard,
    ShardClosed,
    ShardingError,
    ShardingRequired,
)
from ._core.gateway.guilds import ChannelCheck, ChannelVerdict
from ._core.gateway.intents import PRIVILEGED_INTENTS, Intents
from ._core.gateway.limits import IdentifyLimiter
from ._core.pcm_buffer import PCM_BLOCK_SIZE, VoiceBufferFull
from ._core.player.events import TrackEnd, TrackEnded, TrackOutcome, TrackStarted
from ._core.player.mixing import Ducking
from ._core.receive.events import (
    ReceivedAudio,
    ReceiveEvent,
    SpeakingStarted,
    SpeakingStopped,
)
from ._core.receive.stats import ReceiveStats
from ._core.snowflake import Snowflake
from ._core.speaking import OPUS_SILENCE_FRAME, SpeakingFlags
from ._core.voice.dave import dave_available, max_supported_dave_version
from ._core.voice.events import (
    Connected,
    DaveChange,
    DaveStateChanged,
    Invalidated,
    InvalidationReason,
    MemberConnected,
    MemberDisconnected,
    MemberSpeaking,
    VoiceEvent,
)
from ._core.voice.protocol import WebSocketStats
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
from ._public import present_as as _present_as
from ._shell.bridge import BRIDGE_EVENTS, ForwardedBridge, GatewayVoiceBridge
from ._shell.hub import Subscription
from ._shell.shard.connection import Shard, open_shard, shard_for_guild
from ._shell.voice.connection import (
    GuildNotOnShard,
    MissingVoiceIntent,
    VoiceConnection,
    VoiceConnectionBusy,
    VoiceConnectionFailed,
    VoiceEvents,
    voice_connection,
)
from ._shell.voice.player.queue import QueueLoop, TrackQueue
from ._shell.voice.player.track import TrackHandle, TrackState
from ._shell.voice.receive.receiver import MixedAudio, VoiceReceiver
from ._shell.voice.receive.recorder import Recording, RecordingStats, record
from ._shell.voice.receive.stream import AudioStream
from ._shell.voice.sending.producer import DEFAULT_BUFFER_SIZE
from ._shell.voice.sending.stepper import SendStats
from ._shell.voice.udp import UdpStats

__version__ = "0.1.0.dev0"

__all__ = [
    "BRIDGE_EVENTS",
    "DEFAULT_BUFFER_SIZE",
    "OPUS_SILENCE_FRAME",
    "PCM_BLOCK_SIZE",
    "PRIVILEGED_INTENTS",
    "Application",
    "AudioExtraMissing",
    "AudioSource",
    "AudioSourceError",
    "AudioStream",
    "AuthenticationFailed",
    "AvSource",
    "BridgeClosed",
    "ChannelCheck",
    "ChannelVerdict",
    "Connected",
    "DaveChange",
    "DaveError",
    "DaveStateChanged",
    "DecryptionFailed",
    "DisallowedIntents",
    "DiscoreVoiceError",
    "Ducking",
    "EncoderSettings",
    "EncryptionError",
    "ForwardedBridge",
    "GatewayError",
    "GatewayUnreachable",
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
    "MixedAudio",
    "NativeLibraryMissing",
    "NoCompatibleEncryptionMode",
    "NonceExhausted",
    "OggFormatError",
    "OggOpusSource",
    "OggOpusWriter",
    "OpusError",
    "PcmSource",
    "ProtocolError",
    "QueueLoop",
    "ReceiveEvent",
    "ReceiveStats",
    "ReceivedAudio",
    "Recording",
    "RecordingStats",
    "SendStats",
    "Shard",
    "ShardClosed",
    "ShardingError",
    "ShardingRequired",
    "Snowflake",
    "SpeakingFlags",
    "SpeakingStarted",
    "SpeakingStopped",
    "Subscription",
    "TrackEnd",
    "TrackEnded",
    "TrackHandle",
    "TrackOutcome",
    "TrackQueue",
    "TrackStarted",
    "TrackState",
    "UdpStats",
    "UnknownOpcode",
    "UnsupportedAudio",
    "UsageError",
    "VoiceBufferFull",
    "VoiceConnection",
    "VoiceConnectionBusy",
    "VoiceConnectionFailed",
    "VoiceEvent",
    "VoiceEvents",
    "VoiceReceiver",
    "WavTooLarge",
    "WavWriter",
    "WebSocketStats",
    "__version__",
    "dave_available",
    "max_supported_dave_version",
    "open_audio_file",
    "open_shard",
    "record",
    "shard_for_guild",
    "voice_connection",
]

# Nothing is printed unless the application configures logging (the library convention).
_logging.getLogger(__name__).addHandler(_logging.NullHandler())

_present_as(__name__, globals(), __all__)
