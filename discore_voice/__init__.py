"""discore_voice: trio-native Discord voice connections.

Everything a bot author needs is importable from here; modules with a leading underscore are
private and may change without notice.
"""

from __future__ import annotations

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

__version__ = "0.1.0.dev0"

__all__ = [
    "OPUS_SILENCE_FRAME",
    "DaveError",
    "DecryptionFailed",
    "DiscoreVoiceError",
    "EncryptionError",
    "NativeLibraryMissing",
    "NoCompatibleEncryptionMode",
    "NonceExhausted",
    "OpusError",
    "ProtocolError",
    "Snowflake",
    "SpeakingFlags",
    "UnknownOpcode",
    "UsageError",
    "__version__",
]
