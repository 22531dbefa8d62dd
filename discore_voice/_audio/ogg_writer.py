"""Recordings written as the audio arrives: Ogg Opus pages and WAV, for calls that last hours.

A recording bot writes one file per speaker for as long as the call lasts, so nothing here
holds a recording in memory: :class:`OggOpusWriter` writes each Ogg page as soon as it is
complete (at most about a second of audio, a few KiB), and :class:`WavWriter` appends PCM and
fixes its header's sizes when it closes. Both are synchronous: their writes are small and
buffered, and a trio caller on a slow disk can move them to ``trio.to_thread.run_sync``.

Ogg Opus (RFC 7845) copies each packet through unchanged, with no libopusenc: the file holds
exactly the packets that arrived. The pagination is sans-IO (:class:`OggOpusPaginator`: packets
in, page bytes out), the file writer a thin shell around it, and the CRC and page layout are
:mod:`discore_voice._audio.ogg`'s, shared with the reader that checks them.

Lost packets are written as Opus packets whose frames are zero bytes long (:func:`plc_packet`),
not as zero-byte Ogg packets. RFC 7845 section 3 says a zero-octet audio packet MUST be treated
as malformed (RFC 6716 [R1]: a packet has at least its TOC byte), and decoders do: libopusfile's
``op_collect_audio_packets`` drops a packet whose duration it cannot read, so the lost 20 ms
vanish from the timeline instead of being concealed, and ffmpeg's Ogg demuxer (5.1) stops
reading the file at the first one ("Invalid data found"). RFC 7845 section 4.1 asks muxers to
write exactly this instead: a synthesised TOC whose frames have length zero, which RFC 6716
section 3.2.1 defines as "no frame (DTX or lost packet)", and which libopus decodes with its
packet loss concealment for the TOC's duration.
"""

from __future__ import annotations

import os
import secrets
import struct
from typing import IO, BinaryIO, Final

from .._closing import ClosesOnExit
from .._core.speaking import OPUS_SILENCE_FRAME
from .._errors import ProtocolError, UsageError
from .ogg import FLAG_BOS, FLAG_CONTINUED, FLAG_EOS, build_ogg_page, opus_packet_samples

__all__ = [
    "DEFAULT_PRE_SKIP",
    "MAX_PACKET_BYTES",
    "MAX_PAGE_SAMPLES",
    "VENDOR",
    "WAV_MAX_DATA_BYTES",
    "OggOpusPaginator",
    "OggOpusWriter",
    "WavTooLarge",
    "WavWriter",
    "plc_packet",
]

#: libopus' lookahead at 48 kHz (``OPUS_GET_LOOKAHEAD``): what Discord's clients and our own
#: encoder delay the audio by, and so what a player must skip to line the file up with the call.
DEFAULT_PRE_SKIP: Final = 312
#: Written into OpusTags; players show it as the encoder.
VENDOR: Final = "discore_voice"
#: At most one second of audio per page. RFC 7845 sets no limit; this is opusenc's default
#: (``--max-delay 1000``): a seek lands within a second of its target, and a crash loses at
#: most about a second of what was written.
MAX_PAGE_SAMPLES: Final = 48_000
#: RFC 7845 section 6: demuxers SHOULD reject a larger audio packet in a mono/stereo stream
#: (it can only be padding), so writing one would make a file that players refuse. It also fits
#: on one page (241 of a page's 255 lacing values), so real recordings never continue a packet.
MAX_PACKET_BYTES: Final = 61_440

_MAX_SEGMENTS: Final = 255
_FRAME_SAMPLES: Final = 960  # 20 ms at 48 kHz: one Discord packet, one silence frame
_MAX_PACKET_SAMPLES: Final = 5760  # RFC 6716: a packet lasts at most 120 ms
_OPUS_HEAD: Final = struct.Struct("<8sBBHIhB")
_SAMPLE_RATE: Final = 48_000
# CELT fullband 20 ms stereo, one frame: what our encoder (and so a bot) sends, for a loss that
# has no previous packet to copy the configuration from.
_DEFAULT_PLC_TOC: Final = (31 << 3) | 0x04


def _as_bytes(data: object, what: str) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    raise UsageError(f"{what} must be bytes, not {type(data).__name__}")


def _check_int(value: object, what: str, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise UsageError(f"{what} must be an int from {low} to {high}, not {value!r}")
    return value


def plc_packet(previous: bytes | None = None) -> bytes:
    """A 20 ms packet of zero-length frames: "this audio was lost, conceal it".

    RFC 7845 section 4.1: the synthesised TOC keeps the previous packet's mode, bandwidth and
    channel count, because that is the case packet loss concealment handles best, and changes
    the frame size only when 20 ms cannot be made of the previous one (SILK's 40 and 60 ms
    frames become a 20 ms SILK frame; 2.5, 5 and 10 ms frames are repeated in a code 3 packet).
    """
    if not previous:
        return bytes((_DEFAULT_PLC_TOC,))
    toc = previous[0] & 0xFC  # code 0: one frame, here of zero bytes
    frame = opus_packet_samples(bytes((toc,)))
    if frame == _FRAME_SAMPLES:
        return bytes((toc,))
    if frame > _FRAME_SAMPLES:  # SILK 40/60 ms: the same bandwidth at 20 ms
        return bytes(((toc & ~0x18) | 0x08,))
    # Code 3, constant bitrate, no padding: N frames of 0 bytes each.
    return bytes((toc | 3, _FRAME_SAMPLES // frame))


class OggOpusPaginator:
    """Opus packets in, Ogg Opus page bytes out (RFC 3533 pages, RFC 7845 mapping); no I/O.

    A page closes when the next packet would take it past ``max_page_samples`` of audio or past
    255 lacing values, so the newest packet always waits for its successor or for
    :meth:`finish`: the end-of-stream page then always carries the last packet, never nothing.
    ``max_page_samples=0`` puts every packet on a page of its own.

    Granule positions count every sample decoded, pre-skip included (RFC 7845 section 4): a
    player subtracts ``pre_skip``, so the playable length is ``granule - pre_skip``.
    """

    __slots__ = (
        "_body",
        "_channels",
        "_continued",
        "_finished",
        "_granule",
        "_headers_done",
        "_held",
        "_held_samples",
        "_max_packet_bytes",
        "_max_page_samples",
        "_page_granule",
        "_page_samples",
        "_pages",
        "_pre_skip",
        "_segments",
        "_serial",
        "_tags",
    )

    def __init__(
        self,
        *,
        serial: int,
        pre_skip: int = DEFAULT_PRE_SKIP,
        channels: int = 2,
        vendor: str = VENDOR,
        max_page_samples: int = MAX_PAGE_SAMPLES,
        max_packet_bytes: int | None = MAX_PACKET_BYTES,
    ) -> None:
        self._serial = _check_int(serial, "serial", 0, 0xFFFF_FFFF)
        self._pre_skip = _check_int(pre_skip, "pre_skip", 0, 0xFFFF)
        # Mapping family 0 only: the one Discord's mono/stereo audio needs.
        self._channels = _check_int(channels, "channels", 1, 2)
        self._max_page_samples = _check_int(max_page_samples, "max_page_samples", 0, 1 << 40)
        if max_packet_bytes is not None:
            _check_int(max_packet_bytes, "max_packet_bytes", 1, 1 << 40)
        self._max_packet_bytes = max_packet_bytes
        if not isinstance(vendor, str):
            raise UsageError(f"vendor must be a str, not {type(vendor).__name__}")
        vendor_bytes = vendor.encode()
        tags = b"OpusTags" + struct.pack("<I", len(vendor_bytes)) + vendor_bytes + bytes(4)
        if len(tags) // 255 + 1 > _MAX_SEGMENTS:
            raise UsageError(f"vendor is {len(vendor_bytes)} bytes; OpusTags must fit one page")
        self._tags = tags
        self._headers_done = False
        self._finished = False
        self._pages = 0  # also the next page's sequence number
        self._granule = 0  # samples of the packets placed on pages
        self._held: bytes | None = None
        self._held_samples = 0
        # The open page: lacing values, body, audio completed on it, and whether it continues.
        self._segments = bytearray()
        self._body: list[bytes] = []
        self._page_granule = -1  # -1 (RFC 3533) until a packet completes on the page
        self._page_samples = 0
        self._continued = False

    @property
    def serial(self) -> int:
        return self._serial

    @property
    def pre_skip(self) -> int:
        return self._pre_skip

    @property
    def samples(self) -> int:
        """48 kHz samples of every packet taken so far, the held one included."""
        return self._granule + self._held_samples

    @property
    def pages(self) -> int:
        """Pages returned so far, headers included."""
        return self._pages

    @property
    def finished(self) -> bool:
        return self._finished

    def headers(self) -> bytes:
        """The OpusHead and OpusTags pages; later calls return nothing.

        :meth:`packet` and :meth:`finish` put them first when this was never called; calling it
        early puts a valid, playable (empty) file on disk before the first packet arrives.
        """
        if self._headers_done:
            return b""
        self._check_open()
        self._headers_done = True
        head = _OPUS_HEAD.pack(b"OpusHead", 1, self._channels, self._pre_skip, _SAMPLE_RATE, 0, 0)
        # RFC 7845 section 3: OpusHead alone on the first page, OpusTags finishing its own page,
        # both with granule 0.
        return self._single_page(head, FLAG_BOS) + self._single_page(self._tags, 0)

    def packet(self, packet: bytes | bytearray | memoryview, samples: int | None = None) -> bytes:
        """Take one Opus packet; return the pages it completed (often none).

        ``samples`` (48 kHz, per channel) defaults to what the packet's TOC says. The packet is
        checked here, not when its page is built, so a bad one is refused with nothing changed.
        """
        self._check_open()
        data = _as_bytes(packet, "packet")
        if not data:
            raise UsageError(
                "an Opus packet cannot be empty (RFC 7845 treats a zero-byte packet as "
                "malformed); write a lost frame as plc_packet() instead"
            )
        if self._max_packet_bytes is not None and len(data) > self._max_packet_bytes:
            raise UsageError(
                f"an Opus packet of {len(data)} bytes is larger than the {self._max_packet_bytes} "
                "bytes players accept (RFC 7845 section 6)"
            )
        if samples is None:
            try:
                samples = opus_packet_samples(data)
            except ProtocolError as exc:
                raise UsageError(f"not a valid Opus packet: {exc}") from None
        else:
            _check_int(samples, "samples", 1, _MAX_PACKET_SAMPLES)
        out = bytearray(self.headers())
        if self._held is not None:
            self._place(self._held, self._held_samples, out)
        self._held = data
        self._held_samples = samples
        return bytes(out)

    def flush(self) -> bytes:
        """Close the open page now (the newest packet still waits), e.g. before a pause."""
        self._check_open()
        out = bytearray(self.headers())
        if self._segments:
            out += self._emit(0)
        return bytes(out)

    def finish(self, *, end_trim: int = 0) -> bytes:
        """The remaining pages, the last one marked end of stream; the paginator is then done.

        ``end_trim`` drops that many samples from the end of the last packet (RFC 7845 section
        4.4), for a recording that must end between two packets.
        """
        self._check_open()
        # RFC 7845 section 4.4: trim no more than the last packet holds.
        _check_int(end_trim, "end_trim", 0, self._held_samples)
        if end_trim and self.samples - end_trim < self._pre_skip:
            # Section 4.5: a player must reject a stream shorter than its pre-skip.
            raise UsageError(
                f"end_trim={end_trim} would leave fewer samples than the pre-skip "
                f"({self._pre_skip})"
            )
        out = bytearray(self.headers())
        if self._held is not None:
            self._place(self._held, self._held_samples, out)
            self._held = None
            self._held_samples = 0
            self._page_granule = self._granule - end_trim
        else:
            # No packet at all: an empty end-of-stream page, which is a valid, empty stream.
            self._page_granule = 0
        out += self._emit(FLAG_EOS)
        self._finished = True
        return bytes(out)

    def _check_open(self) -> None:
        if self._finished:
            raise UsageError("this Ogg Opus stream is finished")

    def _single_page(self, packet: bytes, flags: int) -> bytes:
        self._segments += b"\xff" * (len(packet) // 255) + bytes((len(packet) % 255,))
        self._body.append(packet)
        self._page_granule = 0
        return self._emit(flags)

    def _place(self, packet: bytes, samples: int, out: bytearray) -> None:
        needed = len(packet) // 255 + 1
        if self._segments and (
            len(self._segments) + needed > _MAX_SEGMENTS
            or self._page_samples + samples > self._max_page_samples
        ):
            out += self._emit(0)
        offset = 0
        while True:
            remaining = len(packet) - offset
            room = _MAX_SEGMENTS - len(self._segments)
            if remaining // 255 < room:
                self._segments += b"\xff" * (remaining // 255) + bytes((remaining % 255,))
                self._body.append(packet[offset:])
                self._granule += samples
                self._page_granule = self._granule
                self._page_samples += samples
                return
            # Only a packet over 255 * 254 bytes gets here (never one under MAX_PACKET_BYTES):
            # fill the page and continue the packet on the next one.
            taken = room * 255
            self._segments += b"\xff" * room
            self._body.append(packet[offset : offset + taken])
            offset += taken
            out += self._emit(0)
            self._continued = True

    def _emit(self, flags: int) -> bytes:
        page = build_ogg_page(
            flags=flags | (FLAG_CONTINUED if self._continued else 0),
            granule=self._page_granule,
            serial=self._serial,
            sequence=self._pages & 0xFFFF_FFFF,
            lacing=self._segments,
            body=b"".join(self._body),
        )
        self._pages += 1
        self._segments = bytearray()
        self._body = []
        self._page_granule = -1
        self._page_samples = 0
        self._continued = False
        return page


def _open_target(
    target: str | os.PathLike[str] | BinaryIO, close_target: bool, what: str
) -> tuple[IO[bytes], bool]:
    """The file to write and whether to close it: a path is ours, a file object the caller's."""
    if isinstance(target, str | os.PathLike):
        return open(target, "wb"), True
    if not callable(getattr(target, "write", None)):
        raise UsageError(
            f"{what} target must be a path or a binary file object, not {type(target).__name__}"
        )
    return target, close_target


class OggOpusWriter(ClosesOnExit):
    """An Ogg Opus file written page by page as packets arrive; one per speaker.

    The headers are written at once, so even a recording that never receives audio is a valid
    file; each later page is written when it completes, so a crash loses at most the last page
    (about a second) and the file up to it stays playable. Closing (or leaving the ``with``
    block, even on an exception) writes the end-of-stream page.

    A path is opened (and truncated) here and closed on :meth:`close`; a binary file object is
    written from its current position and left open unless ``close_target`` is true.
    ``serial`` defaults to a random one, so recordings concatenated into one chained file keep
    distinct streams.
    """

    __slots__ = ("_close_file", "_closed", "_file", "_last_packet", "_paginator", "_written")

    def __init__(
        self,
        target: str | os.PathLike[str] | BinaryIO,
        *,
        serial: int | None = None,
        pre_skip: int = DEFAULT_PRE_SKIP,
        close_target: bool = False,
    ) -> None:
        self._closed = True  # until the file is open, so close() has nothing to do
        # Arguments are checked before a path is opened: a bad one must not truncate a file.
        self._paginator = OggOpusPaginator(
            serial=secrets.randbits(32) if serial is None else serial, pre_skip=pre_skip
        )
        self._file, self._close_file = _open_target(target, close_target, "OggOpusWriter")
        self._closed = False
        self._written = 0
        self._last_packet: bytes | None = None
        try:
            self._write(self._paginator.headers())
        except BaseException:
            self._release()
            raise

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (
            f"<OggOpusWriter {state} serial={self._paginator.serial:#x} "
            f"samples={self.samples_written} bytes={self._written}>"
        )

    @property
    def serial(self) -> int:
        """The Ogg stream's serial number (random unless given): tells tracks apart when muxed."""
        return self._paginator.serial

    @property
    def samples_written(self) -> int:
        """48 kHz samples taken so far, pre-skip included; the newest packet may not be on disk
        yet (it waits for its page)."""
        return self._paginator.samples

    @property
    def bytes_written(self) -> int:
        """Bytes handed to the file so far."""
        return self._written

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` ran: the file is complete and nothing more can be written."""
        return self._closed

    def write(self, packet: bytes | bytearray | memoryview, samples: int | None = None) -> None:
        """Add one Opus packet; ``samples`` defaults to the duration its TOC byte gives."""
        self._check_open()
        data = _as_bytes(packet, "packet")
        self._write(self._paginator.packet(data, samples))
        self._last_packet = data

    def write_silence(self, frames: int = 1) -> None:
        """Add ``frames`` 20 ms silence frames: a speaker's pause, so the file keeps the call's
        timeline (Discord sends nothing while someone is quiet)."""
        self._check_open()
        for _ in range(_check_int(frames, "frames", 0, 1 << 40)):
            self._write(self._paginator.packet(OPUS_SILENCE_FRAME, _FRAME_SAMPLES))
            self._last_packet = OPUS_SILENCE_FRAME

    def write_lost(self, frames: int = 1) -> None:
        """Add ``frames`` lost 20 ms packets, which players conceal (see :func:`plc_packet`).

        Not a zero-byte packet: RFC 7845 makes those malformed; libopusfile drops them, which
        shifts everything after the loss 20 ms earlier, and ffmpeg stops reading at one.
        """
        self._check_open()
        for _ in range(_check_int(frames, "frames", 0, 1 << 40)):
            self._write(self._paginator.packet(plc_packet(self._last_packet), _FRAME_SAMPLES))

    def flush(self) -> None:
        """Write the open page and flush the file, e.g. on a timer: what is on disk then plays
        up to the newest packet, which waits for the next page."""
        self._check_open()
        self._write(self._paginator.flush())
        self._file.flush()

    def close(self, *, end_trim: int = 0) -> None:
        """Write the end-of-stream page and close the file (if it is ours); idempotent.

        ``end_trim`` is RFC 7845's end trimming (see :meth:`OggOpusPaginator.finish`).
        """
        if self._closed:
            return
        try:
            if not self._paginator.finished:
                self._write(self._paginator.finish(end_trim=end_trim))
            self._file.flush()
        except UsageError:
            raise  # a bad end_trim: nothing written, the writer stays open for another try
        except BaseException:
            self._release()
            raise
        self._release()

    def _release(self) -> None:
        self._closed = True
        if self._close_file:
            self._file.close()

    def _check_open(self) -> None:
        if self._closed:
            raise UsageError("this OggOpusWriter is closed")

    def _write(self, data: bytes) -> None:
        if data:
            self._file.write(data)
            self._written += len(data)


# --- WAV ----------------------------------------------------------------------------------------

_WAV_HEADER: Final = struct.Struct("<4sI4s4sIHHIIHH4sI")  # RIFF, fmt (PCM), data: 44 bytes
_WAV_FORMAT_PCM: Final = 1
#: The "size unknown" value written while recording and left in place on a pipe; ffmpeg, sox
#: and Python's ``wave`` then read the data to the end of the file.
_UNKNOWN_SIZE: Final = 0xFFFF_FFFF
_RIFF_SIZE_OFFSET: Final = 4
_DATA_SIZE_OFFSET: Final = 40
#: The most PCM one WAV file can describe: the RIFF size (36 header bytes after it, the data and
#: a pad byte) must stay below the 0xFFFFFFFF that means "unknown". At 48 kHz stereo 16-bit
#: (192 000 bytes a second) that is about 6.2 hours.
WAV_MAX_DATA_BYTES: Final = _UNKNOWN_SIZE - 1 - (_WAV_HEADER.size - 8) - 1


def _can_patch(file: IO[bytes]) -> bool:
    """Whether seeking back rewrites the header: not on a pipe, nor in append mode."""
    seekable = getattr(file, "seekable", None)
    if not callable(seekable) or not seekable():
        return False
    mode = getattr(file, "mode", "")
    return not (isinstance(mode, str) and "a" in mode)


class WavTooLarge(UsageError):
    """Another write would take a WAV file past the 4 GiB its 32-bit sizes can describe."""


class WavWriter(ClosesOnExit):
    """A PCM WAV file written as the audio arrives; the sizes are fixed on :meth:`close`.

    While recording, the header says "size unknown" (0xFFFFFFFF), which readers take as "read
    to the end": a recording cut short by a crash still plays. Closing seeks back and writes
    the real sizes when the target can seek; a pipe (or a file opened for appending, where a
    seek would not move the writes) keeps the unknown sizes, which is how streamed WAV is read.

    WAV cannot hold more than 4 GiB (about 6.2 hours of 48 kHz stereo): the write that would
    go past it raises :class:`WavTooLarge` and writes nothing, so the file stays valid; start a
    new file, or record Ogg Opus, for longer. A path is opened (and truncated) here and closed on
    :meth:`close`; a file object is written from its current position and left open unless
    ``close_target`` is true.
    """

    __slots__ = (
        "_block_align",
        "_close_file",
        "_closed",
        "_data_bytes",
        "_file",
        "_sample_rate",
        "_seekable",
        "_silence",
        "_start",
    )

    def __init__(
        self,
        target: str | os.PathLike[str] | BinaryIO,
        *,
        channels: int = 2,
        sample_rate: int = 48_000,
        sample_width: int = 2,
        close_target: bool = False,
    ) -> None:
        self._closed = True
        _check_int(channels, "channels", 1, 2)
        _check_int(sample_width, "sample_width", 1, 4)
        _check_int(sample_rate, "sample_rate", 1, 768_000)
        block_align = channels * sample_width
        self._block_align = block_align
        self._sample_rate = sample_rate
        # 8-bit WAV is unsigned (silence is 0x80); wider samples are signed (silence is 0).
        self._silence = (b"\x80" if sample_width == 1 else b"\x00") * block_align
        self._file, self._close_file = _open_target(target, close_target, "WavWriter")
        self._closed = False
        self._data_bytes = 0
        try:
            self._seekable = _can_patch(self._file)
            self._start = self._file.tell() if self._seekable else 0
            header = _WAV_HEADER.pack(
                b"RIFF",
                _UNKNOWN_SIZE,
                b"WAVE",
                b"fmt ",
                16,
                _WAV_FORMAT_PCM,
                channels,
                sample_rate,
                sample_rate * block_align,
                block_align,
                sample_width * 8,
                b"data",
                _UNKNOWN_SIZE,
            )
            self._file.write(header)
        except BaseException:
            self._release()
            raise

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<WavWriter {state} frames={self.frames_written}>"

    @property
    def frames_written(self) -> int:
        """Sample frames written (one sample per channel each), as ``wave`` counts them."""
        return self._data_bytes // self._block_align

    @property
    def bytes_written(self) -> int:
        """PCM bytes written, the header not included."""
        return self._data_bytes

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` ran: the file is complete and nothing more can be written."""
        return self._closed

    def write(self, pcm: bytes | bytearray | memoryview) -> None:
        """Append PCM: whole sample frames, little-endian, channels interleaved."""
        self._check_open()
        data = pcm if isinstance(pcm, bytes | bytearray) else _as_bytes(pcm, "pcm")
        if len(data) % self._block_align:
            raise UsageError(
                f"{len(data)} bytes of PCM are not whole sample frames of {self._block_align} bytes"
            )
        self._reserve(len(data))
        self._file.write(data)
        self._data_bytes += len(data)

    def write_silence(self, frames: int = 1) -> None:
        """Append ``frames`` 20 ms frames of silence (3840 bytes each at 48 kHz stereo)."""
        self._check_open()
        _check_int(frames, "frames", 0, 1 << 40)
        if self._sample_rate % 50:
            raise UsageError(f"20 ms is not a whole number of samples at {self._sample_rate} Hz")
        block = self._silence * (self._sample_rate // 50)
        self._reserve(frames * len(block))
        # Up to about a second per write, so an hour of silence is neither one huge buffer
        # nor a hundred thousand tiny writes.
        chunk = block * 50
        whole, rest = divmod(frames, 50)
        for _ in range(whole):
            self._file.write(chunk)
            self._data_bytes += len(chunk)
        if rest:
            self._file.write(block * rest)
            self._data_bytes += len(block) * rest

    def flush(self) -> None:
        """Push what was written to the file (the header's sizes are patched only on close)."""
        self._check_open()
        self._file.flush()

    def close(self) -> None:
        """Pad, fix the sizes (when the target can seek) and close the file if it is ours."""
        if self._closed:
            return
        try:
            if self._data_bytes % 2:
                self._file.write(b"\x00")  # RIFF chunks are padded to an even length
            if self._seekable:
                end = self._file.tell()
                riff = _WAV_HEADER.size - 8 + self._data_bytes + self._data_bytes % 2
                self._file.seek(self._start + _RIFF_SIZE_OFFSET)
                self._file.write(struct.pack("<I", riff))
                self._file.seek(self._start + _DATA_SIZE_OFFSET)
                self._file.write(struct.pack("<I", self._data_bytes))
                self._file.seek(end)
            self._file.flush()
        finally:
            self._release()

    def _reserve(self, size: int) -> None:
        if self._data_bytes + size > WAV_MAX_DATA_BYTES:
            raise WavTooLarge(
                f"writing {size} more bytes would take this WAV file past the "
                f"{WAV_MAX_DATA_BYTES} bytes of audio its 32-bit sizes can describe (about 6.2 "
                "hours of 48 kHz stereo); start a new file, or record Ogg Opus"
            )

    def _release(self) -> None:
        self._closed = True
        if self._close_file:
            self._file.close()

    def _check_open(self) -> None:
        if self._closed:
            raise UsageError("this WavWriter is closed")
