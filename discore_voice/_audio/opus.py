"""Opus encoding and decoding for Discord's one fixed format: 48 kHz, stereo, 20 ms frames.

Discord only ever carries that format, so the classes hard-code it instead of offering knobs
that would only produce packets Discord mangles. ``encode`` runs every 20 ms per stream, so it
reuses one output buffer, hands ``bytes`` to libopus without copying, and does nothing else but
validate the length. libopus releases the GIL during the call (ctypes does), so an encoder can be
driven from a worker thread; it owns no state but its libopus handle and its buffers, so one
encoder per stream, used by one thread at a time, needs no locking.
"""

from __future__ import annotations

import ctypes
import enum
from dataclasses import dataclass
from typing import Any, Final, cast

from .._checks import check_bool, check_int
from .._closing import ClosesOnExit
from .._core.speaking import OPUS_SILENCE_FRAME
from .._errors import OpusError, UsageError
from .._native import OpusLib, load_opus

__all__ = [
    "CHANNELS",
    "FRAME_DURATION_MS",
    "FRAME_SAMPLES",
    "MAX_BITRATE",
    "MAX_FRAME_SAMPLES",
    "MAX_PACKET_SIZE",
    "MIN_BITRATE",
    "OPUS_SILENCE_FRAME",
    "PCM_BLOCK_SIZE",
    "SAMPLE_RATE",
    "SAMPLE_WIDTH",
    "Application",
    "EncoderSettings",
    "OpusDecoder",
    "OpusEncoder",
    "OpusError",
]

SAMPLE_RATE: Final = 48_000
CHANNELS: Final = 2
SAMPLE_WIDTH: Final = 2
FRAME_DURATION_MS: Final = 20
FRAME_SAMPLES: Final = SAMPLE_RATE * FRAME_DURATION_MS // 1000
PCM_BLOCK_SIZE: Final = FRAME_SAMPLES * CHANNELS * SAMPLE_WIDTH
# libopus' own recommendation for an output buffer that can never be too small for one frame.
MAX_PACKET_SIZE: Final = 4000
# The longest packet Opus allows (120 ms); a peer may send one, and decode must not fail on it.
MAX_FRAME_SAMPLES: Final = SAMPLE_RATE * 120 // 1000

_BYTES_PER_SAMPLE: Final = CHANNELS * SAMPLE_WIDTH

_OPUS_OK: Final = 0
_OPUS_INVALID_PACKET: Final = -4
_SET_APPLICATION: Final = 4000
_GET_APPLICATION: Final = 4001
_SET_BITRATE: Final = 4002
_GET_BITRATE: Final = 4003
_SET_COMPLEXITY: Final = 4010
_GET_COMPLEXITY: Final = 4011
_SET_INBAND_FEC: Final = 4012
_GET_INBAND_FEC: Final = 4013
_SET_PACKET_LOSS_PERC: Final = 4014
_GET_PACKET_LOSS_PERC: Final = 4015
_GET_LOOKAHEAD: Final = 4027
_RESET_STATE: Final = 4028

MIN_BITRATE: Final = 500
MAX_BITRATE: Final = 512_000
# Without an expected loss, libopus puts no redundancy in the packet even with FEC switched on,
# so ``fec=True`` alone would silently do nothing; 15 % is what Discord's own clients assume.
_DEFAULT_FEC_LOSS_PERCENT: Final = 15


def _opus_error(lib: OpusLib, code: int, what: str) -> OpusError:
    raw = lib.strerror(code)
    text = raw.decode("ascii", "replace") if raw else "unknown error"
    return OpusError(f"{what} failed: {text} (libopus error {code})", code)


class Application(enum.IntEnum):
    """The libopus tuning target; fixed for an encoder's lifetime."""

    #: Speech: favours intelligibility, enables the SILK speech layer.
    VOIP = 2048
    #: Music and mixed content: the right choice for most bots.
    AUDIO = 2049
    #: Lowest delay, CELT only; no in-band FEC possible.
    RESTRICTED_LOWDELAY = 2051


def _check_application(value: object) -> Application:
    # Plain ints are accepted for callers that store settings as numbers (libopus' own values).
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return Application(value)
        except ValueError:
            pass
    raise UsageError(
        "application must be one of "
        f"{', '.join(f'Application.{a.name}' for a in Application)}, got {value!r}"
    )


def _as_bytes(data: object, what: str) -> bytes:
    """Turn any contiguous buffer into bytes; only the uncommon non-bytes callers pay the copy."""
    try:
        return memoryview(cast(Any, data)).cast("B").tobytes()
    except TypeError as exc:
        raise UsageError(f"{what} must be bytes-like, got {type(data).__name__}") from exc


def _pcm_size_error(size: int) -> UsageError:
    if size % SAMPLE_WIDTH:
        return UsageError(
            f"PCM length {size} is odd; s16le samples are {SAMPLE_WIDTH} bytes each, "
            f"so one frame is exactly {PCM_BLOCK_SIZE} bytes"
        )
    return UsageError(
        f"encode() takes exactly one {FRAME_DURATION_MS} ms frame: {PCM_BLOCK_SIZE} bytes of "
        f"{SAMPLE_RATE} Hz stereo s16le PCM ({FRAME_SAMPLES} samples per channel), got {size} bytes"
    )


class OpusEncoder(ClosesOnExit):
    """Encodes 20 ms frames of 48 kHz stereo s16le PCM into Opus packets.

    Settings can change between frames (Discord lowers a channel's bitrate, or the receiver
    reports more loss); getters ask libopus, so they show what the encoder really uses.
    Close it (or use it as a context manager) to free its ~48 KB of native state at a known
    time; garbage collection frees it otherwise.
    """

    __slots__ = ("_encode", "_lib", "_out", "_out_view", "_state")

    def __init__(
        self,
        *,
        bitrate: int = 128_000,
        fec: bool = False,
        packet_loss_percent: int | None = None,
        complexity: int = 10,
        application: Application | int = Application.AUDIO,
    ) -> None:
        # Set first so __del__ and close() work even when a check below raises.
        self._state: int | None = None
        bitrate = check_int("bitrate", bitrate, MIN_BITRATE, MAX_BITRATE)
        fec = check_bool("fec", fec)
        if packet_loss_percent is None:
            packet_loss_percent = _DEFAULT_FEC_LOSS_PERCENT if fec else 0
        packet_loss_percent = check_int("packet_loss_percent", packet_loss_percent, 0, 100)
        complexity = check_int("complexity", complexity, 0, 10)
        application = _check_application(application)

        lib = load_opus()
        self._lib = lib
        self._encode = lib.encode
        self._out = ctypes.create_string_buffer(MAX_PACKET_SIZE)
        # Slicing a standing view and copying out is the cheapest way to get the packet as bytes
        # (``.raw`` would copy all 4000 bytes first; ``string_at`` is another foreign call).
        self._out_view = memoryview(self._out)
        error = ctypes.c_int(_OPUS_OK)
        state = lib.encoder_create(SAMPLE_RATE, CHANNELS, int(application), ctypes.byref(error))
        if error.value != _OPUS_OK or not state:
            raise _opus_error(lib, error.value, "opus_encoder_create")
        self._state = state
        try:
            self._set(_SET_BITRATE, bitrate)
            self._set(_SET_INBAND_FEC, int(fec))
            self._set(_SET_PACKET_LOSS_PERC, packet_loss_percent)
            self._set(_SET_COMPLEXITY, complexity)
        except BaseException:
            self.close()
            raise

    # -- the hot path ------------------------------------------------------------------------

    def encode(self, pcm: bytes | bytearray | memoryview) -> bytes:
        """Encode exactly one 20 ms frame (3840 bytes); returns one Opus packet."""
        state = self._state
        if state is None:
            raise UsageError("this OpusEncoder is closed")
        if type(pcm) is not bytes:
            pcm = _as_bytes(pcm, "pcm")
        if len(pcm) != PCM_BLOCK_SIZE:
            raise _pcm_size_error(len(pcm))
        size = self._encode(state, pcm, FRAME_SAMPLES, self._out, MAX_PACKET_SIZE)
        if size < 0:
            raise _opus_error(self._lib, size, "opus_encode")
        return self._out_view[:size].tobytes()

    # -- settings ----------------------------------------------------------------------------

    def _live_state(self) -> int:
        state = self._state
        if state is None:
            raise UsageError("this OpusEncoder is closed")
        return state

    def _set(self, request: int, value: int) -> None:
        code = self._lib.encoder_ctl(self._live_state(), request, ctypes.c_int32(value))
        if code < 0:
            raise _opus_error(self._lib, code, f"opus_encoder_ctl({request})")

    def _get(self, request: int) -> int:
        out = ctypes.c_int32()
        code = self._lib.encoder_ctl(self._live_state(), request, ctypes.byref(out))
        if code < 0:
            raise _opus_error(self._lib, code, f"opus_encoder_ctl({request})")
        return out.value

    @property
    def bitrate(self) -> int:
        """Target bitrate in bits per second."""
        return self._get(_GET_BITRATE)

    @bitrate.setter
    def bitrate(self, value: int) -> None:
        self._set(_SET_BITRATE, check_int("bitrate", value, MIN_BITRATE, MAX_BITRATE))

    @property
    def fec(self) -> bool:
        """Whether in-band forward error correction is on (needs ``packet_loss_percent`` > 0)."""
        return bool(self._get(_GET_INBAND_FEC))

    @fec.setter
    def fec(self, value: bool) -> None:
        self._set(_SET_INBAND_FEC, int(check_bool("fec", value)))

    @property
    def packet_loss_percent(self) -> int:
        """Expected loss; higher values make packets more self-contained (and FEC stronger)."""
        return self._get(_GET_PACKET_LOSS_PERC)

    @packet_loss_percent.setter
    def packet_loss_percent(self, value: int) -> None:
        self._set(_SET_PACKET_LOSS_PERC, check_int("packet_loss_percent", value, 0, 100))

    @property
    def complexity(self) -> int:
        """CPU/quality trade-off, 0 (cheapest) to 10 (best)."""
        return self._get(_GET_COMPLEXITY)

    @complexity.setter
    def complexity(self, value: int) -> None:
        self._set(_SET_COMPLEXITY, check_int("complexity", value, 0, 10))

    @property
    def application(self) -> Application:
        """Fixed at creation: libopus only lets it change before the first frame."""
        return Application(self._get(_GET_APPLICATION))

    @property
    def lookahead(self) -> int:
        """Samples per channel by which decoded audio trails the input (the codec delay)."""
        return self._get(_GET_LOOKAHEAD)

    def reset(self) -> None:
        """Forget the previous audio, so a new track does not start with the old one's tail."""
        code = self._lib.encoder_ctl(self._live_state(), _RESET_STATE)
        if code < 0:
            raise _opus_error(self._lib, code, "opus_encoder_ctl(OPUS_RESET_STATE)")

    # -- lifetime ----------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._state is None

    def close(self) -> None:
        """Free the native state now; idempotent. Not safe while another thread is encoding."""
        state = self._state
        if state is not None:
            self._state = None
            self._lib.encoder_destroy(state)

    def __del__(self) -> None:
        # A safety net, not the API: no ResourceWarning, because forgetting to close an encoder
        # wastes memory only until the next GC, and warnings-as-errors would make it fatal.
        self.close()

    def __repr__(self) -> str:
        if self._state is None:
            return "<OpusEncoder closed>"
        return (
            f"<OpusEncoder bitrate={self.bitrate} fec={self.fec} "
            f"loss={self.packet_loss_percent}% complexity={self.complexity} "
            f"application={self.application.name}>"
        )


@dataclass(frozen=True, slots=True)
class EncoderSettings:
    """How a connection encodes PCM. 128 kbps with FEC off by default: in-band FEC costs ~4.5x
    the CPU (``BENCHMARKS.md``) and only pays on lossy paths, which a bot can opt into."""

    bitrate: int = 128_000
    fec: bool = False
    packet_loss_percent: int | None = None
    complexity: int = 10
    application: Application | int = Application.AUDIO

    def __post_init__(self) -> None:
        # Checked now, not at the first frame: by then the mistake would end the connection.
        check_int("bitrate", self.bitrate, MIN_BITRATE, MAX_BITRATE)
        check_bool("fec", self.fec)
        if self.packet_loss_percent is not None:
            check_int("packet_loss_percent", self.packet_loss_percent, 0, 100)
        check_int("complexity", self.complexity, 0, 10)
        _check_application(self.application)

    def create(self) -> OpusEncoder:
        """A new encoder with these settings; each connection needs its own (it has state)."""
        return OpusEncoder(
            bitrate=self.bitrate,
            fec=self.fec,
            packet_loss_percent=self.packet_loss_percent,
            complexity=self.complexity,
            application=self.application,
        )


class OpusDecoder(ClosesOnExit):
    """Decodes Opus packets from one sender into 48 kHz stereo s16le PCM.

    One decoder per sender (SSRC): Opus decoding is stateful, and mixing streams through one
    decoder corrupts both.
    """

    __slots__ = ("_decode", "_last_samples", "_lib", "_out", "_out_view", "_state")

    def __init__(self) -> None:
        self._state: int | None = None
        lib = load_opus()
        self._lib = lib
        self._decode = lib.decode
        self._out = ctypes.create_string_buffer(MAX_FRAME_SAMPLES * _BYTES_PER_SAMPLE)
        self._out_view = memoryview(self._out)
        # Concealment must cover exactly the missing duration; assume the sender keeps its last
        # packet length, Discord's 20 ms until we have seen one.
        self._last_samples = FRAME_SAMPLES
        error = ctypes.c_int(_OPUS_OK)
        state = lib.decoder_create(SAMPLE_RATE, CHANNELS, ctypes.byref(error))
        if error.value != _OPUS_OK or not state:
            raise _opus_error(lib, error.value, "opus_decoder_create")
        self._state = state

    def decode(self, packet: bytes | bytearray | memoryview | None, *, fec: bool = False) -> bytes:
        """Decode one packet; ``None`` conceals a lost packet (PLC).

        With ``fec=True``, ``packet`` is the one that arrived *after* a loss, and the result is
        the lost frame rebuilt from its redundancy (or concealed, if it carries none). Decode the
        same packet again with ``fec=False`` to get its own audio.
        """
        state = self._state
        if state is None:
            raise UsageError("this OpusDecoder is closed")
        if packet is None:
            if fec:
                raise UsageError("fec=True needs the packet that followed the lost one, not None")
            samples = self._decode(state, None, 0, self._out, self._last_samples, 0)
            what = "opus_decode (concealment)"
        else:
            if type(packet) is not bytes:
                packet = _as_bytes(packet, "packet")
            if not packet:
                # libopus would treat an empty packet as a loss; a peer sending one is broken.
                raise OpusError("opus_decode failed: empty packet", _OPUS_INVALID_PACKET)
            if fec:
                samples = self._decode(state, packet, len(packet), self._out, self._last_samples, 1)
                what = "opus_decode (FEC)"
            else:
                samples = self._decode(state, packet, len(packet), self._out, MAX_FRAME_SAMPLES, 0)
                what = "opus_decode"
                if samples > 0:
                    self._last_samples = samples
        if samples < 0:
            raise _opus_error(self._lib, samples, what)
        return self._out_view[: samples * _BYTES_PER_SAMPLE].tobytes()

    def reset(self) -> None:
        """Forget the previous stream, e.g. when an SSRC is reused by a new speaker."""
        state = self._state
        if state is None:
            raise UsageError("this OpusDecoder is closed")
        code = self._lib.decoder_ctl(state, _RESET_STATE)
        if code < 0:
            raise _opus_error(self._lib, code, "opus_decoder_ctl(OPUS_RESET_STATE)")
        self._last_samples = FRAME_SAMPLES

    @property
    def closed(self) -> bool:
        return self._state is None

    def close(self) -> None:
        """Free the native state now; idempotent. Not safe while another thread is decoding."""
        state = self._state
        if state is not None:
            self._state = None
            self._lib.decoder_destroy(state)

    def __del__(self) -> None:
        self.close()

    def __repr__(self) -> str:
        return "<OpusDecoder closed>" if self._state is None else "<OpusDecoder>"
