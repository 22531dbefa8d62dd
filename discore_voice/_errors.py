"""The library's exception hierarchy.

Every failure a user can see comes from :class:`DiscoreVoiceError`, so one ``except`` clause is
enough to keep a bot's other tasks alive. The subclasses say whose fault it was: the server's
(:class:`ProtocolError`), the caller's (:class:`UsageError`) or the machine's
(:class:`NativeLibraryMissing`).

Messages never contain tokens, session ids or keys: callers pass descriptions, not secrets.
"""

from __future__ import annotations

__all__ = [
    "MAX_PEER_TEXT",
    "DaveError",
    "DecryptionFailed",
    "DiscoreVoiceError",
    "EncryptionError",
    "NativeLibraryMissing",
    "NoCompatibleEncryptionMode",
    "NonceExhausted",
    "OpusError",
    "ProtocolError",
    "UnknownOpcode",
    "UsageError",
    "shorten",
]

#: Characters of a peer-supplied value (a mode name, a close reason, a davey message) that may
#: appear in an exception, a log line or an invalidation detail. A hostile server could otherwise
#: put half a megabyte into every log line it provokes.
MAX_PEER_TEXT = 200
#: A whole message about peer input may be longer (our own words around the values), not unbounded.
_MAX_PROTOCOL_MESSAGE = 1000


def shorten(value: object, limit: int = MAX_PEER_TEXT) -> str:
    """``repr`` of a peer-supplied value (a str's ``str``), cut to ``limit`` characters.

    The cut says how long the original was, so a log reader can tell a truncated value from a
    short one.
    """
    text = value if isinstance(value, str) else repr(value)
    if len(text) <= limit:
        return text
    return f"{text[: max(0, limit - 30)]}... ({len(text)} characters)"


class DiscoreVoiceError(Exception):
    """Base class of every exception raised by discore_voice."""


class ProtocolError(DiscoreVoiceError):
    """A peer (Discord, the simulator, a client) sent something that breaks the protocol.

    Raised by every parser in the sans-IO core for malformed input; the trio shell turns it into a
    logged and counted drop or a connection invalidation, never a crash. Its message is capped:
    it describes what a peer sent, and a peer chooses how long that is.
    """

    def __init__(self, *args: object) -> None:
        if args and isinstance(args[0], str):
            args = (shorten(args[0], _MAX_PROTOCOL_MESSAGE), *args[1:])
        super().__init__(*args)


class UnknownOpcode(ProtocolError):
    """A well-formed message carried an opcode we do not know.

    Kept apart from other protocol errors because Discord adds undocumented opcodes from time to
    time, and a client should skip those rather than disconnect.
    """

    def __init__(self, opcode: int, *, channel: str) -> None:
        super().__init__(f"unknown {channel} opcode {opcode}")
        self.opcode = opcode


class UsageError(DiscoreVoiceError):
    """The caller passed an argument the library cannot accept."""


class NativeLibraryMissing(DiscoreVoiceError):
    """A native library an audio feature needs (libopus and friends) is not installed.

    Importing discore_voice never raises this; only the first use of a feature that needs the
    library does, so a bot that only uses pre-encoded Opus can still run.
    """

    def __init__(self, library: str, install_command: str) -> None:
        super().__init__(
            f"the native library {library} is not installed; install it with: {install_command}"
        )
        self.library = library
        self.install_command = install_command


class EncryptionError(DiscoreVoiceError):
    """Transport encryption cannot go on safely."""


class NonceExhausted(EncryptionError):
    """The 32-bit transport nonce counter wrapped.

    Reusing a nonce with the same key would break AES-GCM and XChaCha20-Poly1305 alike, so the
    connection must get a new key (a new voice session) before it sends again.
    """


class NoCompatibleEncryptionMode(ProtocolError):
    """The voice server offered no transport encryption mode this library supports."""


class DecryptionFailed(ProtocolError):
    """An RTP packet failed authentication or could not be decrypted."""


class OpusError(DiscoreVoiceError):
    """libopus refused an operation; ``code`` is its (negative) error code.

    On decode this usually means a peer sent a malformed packet: drop it and carry on (or decode
    ``None`` to conceal the gap).
    """

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class DaveError(DiscoreVoiceError):
    """davey refused an operation; the message is davey's own, which names the MLS failure.

    Refusals of what the server sent (a commit, a welcome, proposals) become op 31 recovery
    rather than this error; it surfaces for local failures (encrypting a frame, asking for a code
    before the group exists) and for an external sender davey cannot use.
    """
