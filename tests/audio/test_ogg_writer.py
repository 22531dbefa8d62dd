"""Streaming recording writers: Ogg Opus pages as packets arrive, WAV patched on close.

Files are checked by the repo's own Ogg reader, and by independent decoders where the machine
has them: libopusfile through pyogg, and ffmpeg (its native Opus decoder and libopus) when it is
installed. WAV files are read back with the standard library's ``wave``.
"""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
import wave
from collections.abc import Iterator
from pathlib import Path

import pyogg
import pytest

from discore_voice._audio.ogg import OggOpusReader, OggPage, OggPageReader, OpusHead
from discore_voice._audio.ogg import opus_packet_samples as toc_samples
from discore_voice._audio.ogg_writer import (
    DEFAULT_PRE_SKIP,
    MAX_PACKET_BYTES,
    MAX_PAGE_SAMPLES,
    WAV_MAX_DATA_BYTES,
    OggOpusPaginator,
    OggOpusWriter,
    WavTooLarge,
    WavWriter,
    plc_packet,
)
from discore_voice._audio.opus import PCM_BLOCK_SIZE, OpusDecoder, OpusEncoder
from discore_voice._audio.signals import sine_pcm
from discore_voice._core.speaking import OPUS_SILENCE_FRAME
from discore_voice._errors import UsageError

SERIAL = 0x1234
FFMPEG = shutil.which("ffmpeg")
needs_opusfile = pytest.mark.skipif(
    not pyogg.PYOGG_OPUS_FILE_AVAIL, reason="libopusfile is not installed"
)
needs_ffmpeg = pytest.mark.skipif(FFMPEG is None, reason="ffmpeg is not installed")


@pytest.fixture(scope="module")
def encoded() -> list[bytes]:
    """Three seconds of a 440 Hz tone as 20 ms packets (150 of them)."""
    pcm = sine_pcm(3.0, hz=440.0)
    with OpusEncoder() as encoder:
        return [
            encoder.encode(pcm[i : i + PCM_BLOCK_SIZE]) for i in range(0, len(pcm), PCM_BLOCK_SIZE)
        ]


class Sink:
    """A write-only stream, like a pipe: no seek, no tell."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.flushed = 0

    def write(self, data: bytes) -> int:
        self.data += data
        return len(data)

    def flush(self) -> None:
        self.flushed += 1


def pages_of(data: bytes) -> list[OggPage]:
    reader = OggPageReader("test")
    reader.feed(data)
    pages = []
    while (page := reader.next_page()) is not None:
        pages.append(page)
    reader.close()
    return pages


def packets_of(page: OggPage) -> int:
    """Packets that complete on ``page``."""
    return sum(1 for value in page.lacing if value < 255)


def read_packets(data: bytes) -> tuple[OpusHead | None, list[bytes]]:
    reader = OggOpusReader("test")
    packets = reader.feed(data)
    reader.close()
    return reader.head, packets


def opusfile_samples(path: Path) -> int:
    decoded = pyogg.OpusFile(str(path))
    assert (decoded.channels, decoded.frequency) == (2, 48_000)
    return int(decoded.buffer_length) // 4


def ffmpeg_samples(path: Path, decoder: str) -> int:
    assert FFMPEG is not None
    result = subprocess.run(
        [FFMPEG, "-v", "error", "-c:a", decoder, "-i", str(path), "-f", "s16le", "-ac", "2", "-"],
        capture_output=True,
        check=True,
        timeout=60,
    )
    assert result.stderr == b""
    return len(result.stdout) // 4


def write_file(
    path: Path, packets: list[bytes], *, pre_skip: int = DEFAULT_PRE_SKIP
) -> OggOpusWriter:
    with OggOpusWriter(path, serial=SERIAL, pre_skip=pre_skip) as writer:
        for packet in packets:
            writer.write(packet)
    return writer


# -- Ogg Opus: layout ------------------------------------------------------------------------------


def test_round_trip_through_the_reader(encoded: list[bytes]) -> None:
    buffer = io.BytesIO()
    with OggOpusWriter(buffer, serial=SERIAL) as writer:
        for packet in encoded:
            writer.write(packet)
    head, packets = read_packets(buffer.getvalue())
    assert head == OpusHead(1, 2, DEFAULT_PRE_SKIP, 48_000, 0, 0)
    assert packets == encoded
    assert writer.samples_written == 150 * 960
    assert writer.bytes_written == len(buffer.getvalue())
    assert not buffer.closed  # the caller's file object stays open


def test_headers_come_alone_on_their_own_pages() -> None:
    paginator = OggOpusPaginator(serial=SERIAL, pre_skip=1000)
    head_page, tags_page = pages_of(paginator.headers())
    assert paginator.headers() == b""  # only once
    assert head_page.bos and not head_page.eos and head_page.granule == 0
    assert head_page.sequence == 0 and len(head_page.lacing) == 1
    assert head_page.body == b"OpusHead" + struct.pack("<BBHIhB", 1, 2, 1000, 48_000, 0, 0)
    assert not tags_page.bos and tags_page.granule == 0 and tags_page.sequence == 1
    vendor = b"discore_voice"
    assert tags_page.body == b"OpusTags" + struct.pack("<I", len(vendor)) + vendor + bytes(4)


def test_granules_flags_and_sequence(encoded: list[bytes]) -> None:
    buffer = io.BytesIO()
    with OggOpusWriter(buffer, serial=SERIAL) as writer:
        for packet in encoded:
            writer.write(packet)
    pages = pages_of(buffer.getvalue())
    assert [p.sequence for p in pages] == list(range(len(pages)))
    assert {p.serial for p in pages} == {SERIAL}
    assert [p.bos for p in pages] == [True] + [False] * (len(pages) - 1)
    assert [p.eos for p in pages] == [False] * (len(pages) - 1) + [True]
    done = 0
    for page in pages[2:]:
        assert not page.continued
        done += packets_of(page)
        # Every sample decoded so far, pre-skip included (RFC 7845 section 4).
        assert page.granule == done * 960
        # At most a second of audio a page, for seeking (and for what a crash can lose).
        assert 0 < packets_of(page) * 960 <= MAX_PAGE_SAMPLES
    assert done == len(encoded)
    assert pages[-1].granule == len(encoded) * 960


def test_pages_are_written_as_they_complete(encoded: list[bytes]) -> None:
    buffer = io.BytesIO()
    writer = OggOpusWriter(buffer, serial=SERIAL)
    headers = len(buffer.getvalue())
    assert headers == writer.bytes_written > 0  # a valid (empty) file before any audio
    for packet in encoded[:51]:
        writer.write(packet)
    # A second of audio is on the open page, and the newest packet is held: nothing is out yet.
    assert len(buffer.getvalue()) == headers
    writer.write(encoded[51])  # the held packet would take the page past a second
    first = pages_of(buffer.getvalue())[2:]
    assert [packets_of(p) for p in first] == [50]
    for packet in encoded[52:]:
        writer.write(packet)
    # Two more pages are out; the newest packets wait for the end-of-stream page.
    assert [packets_of(p) for p in pages_of(buffer.getvalue())[2:]] == [50, 50]
    writer.close()
    assert [packets_of(p) for p in pages_of(buffer.getvalue())[2:]] == [50, 50, 50]


def test_the_last_packet_waits_for_the_end_of_stream_page(encoded: list[bytes]) -> None:
    paginator = OggOpusPaginator(serial=SERIAL)
    out = paginator.headers()
    out += paginator.packet(encoded[0])
    out += paginator.packet(encoded[1])
    assert paginator.samples == 1920
    out += paginator.flush()  # closes the open page, but the newest packet stays held
    audio = pages_of(out)[2:]
    assert [packets_of(p) for p in audio] == [1] and audio[0].granule == 960
    assert paginator.flush() == b""  # nothing more to close
    out += paginator.finish()
    last = pages_of(out)[-1]
    assert last.eos and packets_of(last) == 1 and last.granule == 1920
    assert read_packets(out)[1] == encoded[:2]


def test_a_page_closes_at_255_lacing_values() -> None:
    # 600-byte packets take 3 lacing values each and last 2.5 ms: 85 fill a page's 255 values
    # long before its second of audio.
    packets = [bytes([(16 << 3) | 4, index]) + bytes(598) for index in range(200)]
    paginator = OggOpusPaginator(serial=SERIAL)
    out = b"".join(paginator.packet(packet) for packet in packets) + paginator.finish()
    audio = pages_of(out)[2:]
    assert [len(p.lacing) for p in audio] == [255, 255, 90]
    assert [p.granule for p in audio] == [85 * 120, 170 * 120, 200 * 120]
    # The reader's passthrough only takes 20 ms packets; compare the bytes instead.
    assert b"".join(p.body for p in audio) == b"".join(packets)


def test_every_packet_on_its_own_page(encoded: list[bytes]) -> None:
    paginator = OggOpusPaginator(serial=SERIAL, max_page_samples=0)
    out = b"".join(paginator.packet(packet) for packet in encoded[:5]) + paginator.finish()
    audio = pages_of(out)[2:]
    assert [packets_of(p) for p in audio] == [1] * 5
    assert [p.granule for p in audio] == [960 * n for n in range(1, 6)]


def test_an_empty_stream_is_valid() -> None:
    buffer = io.BytesIO()
    with OggOpusWriter(buffer, serial=SERIAL) as writer:
        pass
    pages = pages_of(buffer.getvalue())
    assert len(pages) == 3 and pages[-1].eos and pages[-1].lacing == b""
    assert pages[-1].granule == 0
    assert read_packets(buffer.getvalue())[1] == []
    assert writer.samples_written == 0


def test_oversize_packets_are_refused_and_continue_only_on_request() -> None:
    paginator = OggOpusPaginator(serial=SERIAL)
    paginator.packet(bytes([0xFC]) + bytes(MAX_PACKET_BYTES - 1))  # the largest allowed
    with pytest.raises(UsageError, match=r"61441 bytes .*\(RFC 7845 section 6\)"):
        paginator.packet(bytes([0xFC]) + bytes(MAX_PACKET_BYTES))
    # A fixture that must hold anything (the simulator's) lifts the limit; such a packet
    # continues across pages, as RFC 3533 lacing allows.
    big = bytes([0xFC]) + bytes(range(256)) * 300
    unlimited = OggOpusPaginator(serial=SERIAL, max_packet_bytes=None)
    out = unlimited.packet(b"\xfc\x01") + unlimited.packet(big) + unlimited.packet(b"\xfc\x02")
    out += unlimited.finish()
    audio = pages_of(out)[2:]
    assert [p.continued for p in audio] == [False, False, True]
    # A page on which no packet completes has granule -1 (RFC 3533).
    assert [p.granule for p in audio] == [960, -1, 2880]
    assert read_packets(out)[1] == [b"\xfc\x01", big, b"\xfc\x02"]


def test_a_packet_exactly_filling_a_page_ends_on_the_next() -> None:
    exact = bytes([0xFC]) + bytes(255 * 255 - 1)  # 255 full segments, then a 0 on a new page
    paginator = OggOpusPaginator(serial=SERIAL, max_packet_bytes=None)
    out = paginator.packet(exact) + paginator.finish()
    first, second = pages_of(out)[2:]
    assert (len(first.lacing), first.granule) == (255, -1)
    assert (second.lacing, second.continued, second.granule) == (b"\x00", True, 960)
    assert read_packets(out)[1] == [exact]


def test_end_trimming(tmp_path: Path, encoded: list[bytes]) -> None:
    path = tmp_path / "trimmed.opus"
    writer = OggOpusWriter(path, serial=SERIAL)
    for packet in encoded[:10]:
        writer.write(packet)
    with pytest.raises(UsageError, match="end_trim"):
        writer.close(end_trim=961)  # more than the last packet holds
    assert not writer.closed  # nothing was written: try again
    writer.close(end_trim=500)
    assert pages_of(path.read_bytes())[-1].granule == 10 * 960 - 500
    if pyogg.PYOGG_OPUS_FILE_AVAIL:
        assert opusfile_samples(path) == 10 * 960 - 500 - DEFAULT_PRE_SKIP


def test_end_trimming_cannot_eat_the_pre_skip() -> None:
    paginator = OggOpusPaginator(serial=SERIAL)
    paginator.packet(b"\xfc")
    with pytest.raises(UsageError, match="pre-skip"):
        paginator.finish(end_trim=700)
    paginator.finish(end_trim=648)


# -- Ogg Opus: independent decoders ----------------------------------------------------------------


@needs_opusfile
def test_libopusfile_decodes_the_file(tmp_path: Path, encoded: list[bytes]) -> None:
    path = tmp_path / "tone.opus"
    write_file(path, encoded)
    assert opusfile_samples(path) == len(encoded) * 960 - DEFAULT_PRE_SKIP


@needs_ffmpeg
@pytest.mark.parametrize("decoder", ["opus", "libopus"])
def test_ffmpeg_decodes_the_file(tmp_path: Path, encoded: list[bytes], decoder: str) -> None:
    path = tmp_path / "tone.opus"
    write_file(path, encoded, pre_skip=0)
    assert ffmpeg_samples(path, decoder) == len(encoded) * 960
    ffprobe = shutil.which("ffprobe") or "ffprobe"
    probe = subprocess.run(
        [ffprobe, "-v", "error", "-show_entries", "stream=codec_name", "-of", "csv=p=0", str(path)],
        capture_output=True,
        check=True,
        text=True,
        timeout=60,
    )
    assert probe.stdout.strip() == "opus"


def _gappy_file(path: Path, encoded: list[bytes]) -> int:
    """Audio, a pause filled with silence, audio, five lost packets, audio; its 20 ms count."""
    with OggOpusWriter(path, serial=SERIAL) as writer:
        for packet in encoded[:20]:
            writer.write(packet)
        writer.write_silence(30)
        for packet in encoded[20:40]:
            writer.write(packet)
        writer.write_lost(5)
        for packet in encoded[40:50]:
            writer.write(packet)
    assert writer.samples_written == 85 * 960
    return 85


def test_silence_and_lost_frames_are_in_the_stream(tmp_path: Path, encoded: list[bytes]) -> None:
    path = tmp_path / "gaps.opus"
    _gappy_file(path, encoded)
    _, packets = read_packets(path.read_bytes())
    assert packets[20:50] == [OPUS_SILENCE_FRAME] * 30
    # Lost packets: the previous packet's TOC with zero-length frames (RFC 7845 section 4.1).
    assert packets[70:75] == [bytes([encoded[39][0] & 0xFC])] * 5
    assert packets[:20] + packets[50:70] + packets[75:] == encoded[:50]


@needs_opusfile
def test_libopusfile_conceals_lost_frames_for_their_duration(
    tmp_path: Path, encoded: list[bytes]
) -> None:
    path = tmp_path / "gaps.opus"
    frames = _gappy_file(path, encoded)
    assert opusfile_samples(path) == frames * 960 - DEFAULT_PRE_SKIP


@needs_ffmpeg
@pytest.mark.parametrize("decoder", ["opus", "libopus"])
def test_ffmpeg_conceals_lost_frames_for_their_duration(
    tmp_path: Path, encoded: list[bytes], decoder: str
) -> None:
    path = tmp_path / "gaps.opus"
    frames = _gappy_file(path, encoded)
    assert ffmpeg_samples(path, decoder) == frames * 960 - DEFAULT_PRE_SKIP


def test_the_silence_frame_decodes_to_silence_and_a_lost_frame_is_concealed(
    encoded: list[bytes],
) -> None:
    with OpusDecoder() as decoder:
        for packet in encoded[:10]:
            decoder.decode(packet)
        concealed = decoder.decode(plc_packet(encoded[9]))
        assert len(concealed) == PCM_BLOCK_SIZE
        assert any(concealed)  # PLC continues the tone instead of dropping to silence
        decoder.reset()
        assert decoder.decode(OPUS_SILENCE_FRAME) == bytes(PCM_BLOCK_SIZE)


@pytest.mark.parametrize("toc", range(256))
def test_a_lost_frame_lasts_20_ms_whatever_came_before(toc: int) -> None:
    packet = plc_packet(bytes([toc, 0, 0]))
    assert toc_samples(packet) == 960
    assert packet[0] & 0x04 == toc & 0x04  # same channel count
    config, lost = toc >> 3, packet[0] >> 3
    if config < 12:  # SILK keeps its bandwidth; 40 and 60 ms become 20 ms
        assert lost >> 2 == config >> 2 and lost < 12
    else:  # hybrid and CELT keep their configuration, repeated to fill 20 ms
        assert lost == config
    with OpusDecoder() as decoder:
        assert len(decoder.decode(packet)) == PCM_BLOCK_SIZE


def test_a_lost_frame_with_nothing_before_it() -> None:
    assert plc_packet() == plc_packet(None) == bytes([0xFC])  # CELT fullband 20 ms stereo
    buffer = io.BytesIO()
    with OggOpusWriter(buffer, serial=SERIAL) as writer:
        writer.write_lost()
        writer.write_silence()
        writer.write_lost()
    assert read_packets(buffer.getvalue())[1] == [b"\xfc", OPUS_SILENCE_FRAME, b"\xf8"]


# -- Ogg Opus: the file shell ----------------------------------------------------------------------


def test_a_path_is_created_and_closed(tmp_path: Path, encoded: list[bytes]) -> None:
    path = tmp_path / "user.opus"
    path.write_bytes(b"old contents, longer than nothing" * 1000)
    writer = write_file(path, encoded[:3])
    assert writer.closed
    assert writer.bytes_written == path.stat().st_size
    assert read_packets(path.read_bytes())[1] == encoded[:3]
    writer.close()  # idempotent
    with pytest.raises(UsageError, match="closed"):
        writer.write(encoded[0])
    with pytest.raises(UsageError, match="closed"):
        writer.flush()


def test_a_file_object_is_written_from_where_it_stands(encoded: list[bytes]) -> None:
    buffer = io.BytesIO()
    buffer.write(b"prefix")
    with OggOpusWriter(buffer, serial=SERIAL) as writer:
        writer.write(encoded[0])
    assert buffer.getvalue().startswith(b"prefix")
    assert read_packets(buffer.getvalue()[6:])[1] == encoded[:1]
    assert not buffer.closed
    owned = io.BytesIO()
    OggOpusWriter(owned, serial=SERIAL, close_target=True).close()
    assert owned.closed


def test_a_pipe_needs_no_seeking(encoded: list[bytes]) -> None:
    sink = Sink()
    with OggOpusWriter(sink, serial=SERIAL) as writer:  # type: ignore[arg-type]
        for packet in encoded[:60]:
            writer.write(packet)
        writer.flush()
        assert sink.flushed == 1
        # The flush put the open page out: everything but the newest packet is readable.
        reader = OggOpusReader("pipe")
        assert reader.feed(bytes(sink.data)) == encoded[:59]
    assert read_packets(bytes(sink.data))[1] == encoded[:60]


def test_an_exception_in_the_block_still_ends_the_stream(
    tmp_path: Path, encoded: list[bytes]
) -> None:
    path = tmp_path / "crash.opus"
    with pytest.raises(RuntimeError, match="bot crashed"), OggOpusWriter(path) as writer:
        writer.write(encoded[0])
        raise RuntimeError("bot crashed")
    assert read_packets(path.read_bytes())[1] == encoded[:1]


def test_random_serials() -> None:
    serials = {OggOpusWriter(io.BytesIO()).serial for _ in range(8)}
    assert len(serials) > 1 and all(0 <= s <= 0xFFFF_FFFF for s in serials)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"serial": -1}, "serial"),
        ({"serial": 1 << 32}, "serial"),
        ({"serial": True}, "serial"),
        ({"pre_skip": 65_536}, "pre_skip"),
        ({"pre_skip": -1}, "pre_skip"),
        ({"pre_skip": 312.0}, "pre_skip"),
    ],
)
def test_writer_arguments_are_checked_before_the_file_is_touched(
    tmp_path: Path, kwargs: dict[str, object], match: str
) -> None:
    path = tmp_path / "keep.opus"
    path.write_bytes(b"keep me")
    with pytest.raises(UsageError, match=match):
        OggOpusWriter(path, **kwargs)  # type: ignore[arg-type]
    assert path.read_bytes() == b"keep me"


def test_bad_targets_and_packets() -> None:
    with pytest.raises(UsageError, match="path or a binary file object"):
        OggOpusWriter(42)  # type: ignore[arg-type]
    writer = OggOpusWriter(io.BytesIO(), serial=SERIAL)
    with pytest.raises(UsageError, match="cannot be empty"):
        writer.write(b"")
    with pytest.raises(UsageError, match="not a valid Opus packet"):
        writer.write(bytes([0xFF, 0x00]))  # code 3 with zero frames
    with pytest.raises(UsageError, match="must be bytes"):
        writer.write("\xfc")  # type: ignore[arg-type]
    for samples in (0, 5761, -960, 960.0, True):
        with pytest.raises(UsageError, match="samples"):
            writer.write(b"\xfc", samples)  # type: ignore[arg-type]
    for frames in (-1, 1.5, None):
        with pytest.raises(UsageError, match="frames"):
            writer.write_silence(frames)  # type: ignore[arg-type]
        with pytest.raises(UsageError, match="frames"):
            writer.write_lost(frames)  # type: ignore[arg-type]
    writer.write(bytearray(b"\xfc\x01"), 960)
    writer.write(memoryview(b"\xfc\x02"))
    assert writer.samples_written == 1920


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"channels": 3}, "channels"),
        ({"channels": 0}, "channels"),
        ({"vendor": b"me"}, "vendor"),
        ({"vendor": "x" * 70_000}, "vendor"),
        ({"max_page_samples": -1}, "max_page_samples"),
        ({"max_packet_bytes": 0}, "max_packet_bytes"),
    ],
)
def test_paginator_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(UsageError, match=match):
        OggOpusPaginator(serial=SERIAL, **kwargs)  # type: ignore[arg-type]


def test_a_finished_paginator_takes_nothing_more() -> None:
    paginator = OggOpusPaginator(serial=SERIAL)
    paginator.finish()
    assert paginator.finished
    with pytest.raises(UsageError, match="finished"):
        paginator.packet(b"\xfc")
    with pytest.raises(UsageError, match="finished"):
        paginator.flush()
    with pytest.raises(UsageError, match="finished"):
        paginator.finish()


# -- WAV -------------------------------------------------------------------------------------------


def wav_params(data: bytes) -> tuple[int, int, int, int, bytes]:
    with wave.open(io.BytesIO(data), "rb") as reader:
        frames = reader.readframes(reader.getnframes())
        return (
            reader.getnchannels(),
            reader.getsampwidth(),
            reader.getframerate(),
            reader.getnframes(),
            frames,
        )


def tone_blocks(seconds: float) -> Iterator[bytes]:
    pcm = sine_pcm(seconds)
    for offset in range(0, len(pcm), PCM_BLOCK_SIZE):
        yield pcm[offset : offset + PCM_BLOCK_SIZE]


def test_wav_round_trip_on_a_seekable_file(tmp_path: Path) -> None:
    path = tmp_path / "user.wav"
    pcm = sine_pcm(0.5)
    with WavWriter(path) as writer:
        for block in tone_blocks(0.5):
            writer.write(block)
        writer.write_silence(3)
    assert writer.frames_written == 0.5 * 48_000 + 3 * 960
    assert writer.bytes_written == len(pcm) + 3 * 3840
    data = path.read_bytes()
    assert len(data) == 44 + writer.bytes_written
    assert struct.unpack_from("<I", data, 4)[0] == len(data) - 8
    assert struct.unpack_from("<I", data, 40)[0] == writer.bytes_written
    channels, width, rate, frames, audio = wav_params(data)
    assert (channels, width, rate, frames) == (2, 2, 48_000, writer.frames_written)
    assert audio == pcm + bytes(3 * 3840)


def test_wav_from_the_middle_of_a_file_object() -> None:
    buffer = io.BytesIO()
    buffer.write(b"junk")
    with WavWriter(buffer, channels=1, sample_rate=16_000) as writer:
        writer.write(b"\x01\x00\x02\x00")
        writer.write_silence()  # 20 ms at 16 kHz mono: 320 frames
    assert not buffer.closed
    assert wav_params(buffer.getvalue()[4:]) == (
        1,
        2,
        16_000,
        322,
        b"\x01\x00\x02\x00" + bytes(640),
    )


def test_wav_on_a_pipe_says_its_sizes_are_unknown() -> None:
    sink = Sink()
    with WavWriter(sink) as writer:  # type: ignore[arg-type]
        for block in tone_blocks(0.1):
            writer.write(block)
    data = bytes(sink.data)
    assert len(data) == 44 + 5 * PCM_BLOCK_SIZE
    assert struct.unpack_from("<I", data, 4)[0] == struct.unpack_from("<I", data, 40)[0]
    assert struct.unpack_from("<I", data, 40)[0] == 0xFFFF_FFFF
    # ``wave`` reads "unknown" as "to the end of the file".
    assert wav_params(data)[4] == sine_pcm(0.1)


@needs_ffmpeg
def test_ffmpeg_reads_a_streamed_wav(tmp_path: Path) -> None:
    sink = Sink()
    with WavWriter(sink) as writer:  # type: ignore[arg-type]
        writer.write_silence(7)
    path = tmp_path / "streamed.wav"
    path.write_bytes(bytes(sink.data))
    assert FFMPEG is not None
    result = subprocess.run(
        [FFMPEG, "-v", "error", "-i", str(path), "-f", "s16le", "-"],
        capture_output=True,
        check=True,
        timeout=60,
    )
    assert result.stdout == bytes(7 * PCM_BLOCK_SIZE)


def test_an_unclosed_wav_still_plays() -> None:
    buffer = io.BytesIO()
    writer = WavWriter(buffer)
    writer.write(sine_pcm(0.02))
    # A crash before close(): the placeholder sizes let a reader take everything written.
    assert wav_params(buffer.getvalue())[4] == sine_pcm(0.02)
    writer.close()
    assert wav_params(buffer.getvalue())[3] == 960


def test_wav_in_append_mode_is_not_patched(tmp_path: Path) -> None:
    path = tmp_path / "appended.wav"
    path.write_bytes(b"")
    with path.open("ab") as file, WavWriter(file) as writer:
        writer.write(bytes(8))
    data = path.read_bytes()
    assert len(data) == 52 and struct.unpack_from("<I", data, 40)[0] == 0xFFFF_FFFF


def test_wav_odd_sizes_are_padded_and_8_bit_silence_is_0x80() -> None:
    buffer = io.BytesIO()
    with WavWriter(buffer, channels=1, sample_width=1, sample_rate=8_000) as writer:
        writer.write(b"\x01\x02\x03")
        writer.write_silence()
    data = buffer.getvalue()
    assert len(data) == 44 + 163 + 1  # 3 + 160 data bytes, one pad byte
    assert struct.unpack_from("<I", data, 4)[0] == len(data) - 8
    assert wav_params(data) == (1, 1, 8_000, 163, b"\x01\x02\x03" + b"\x80" * 160)


def test_wav_stops_before_4_gib() -> None:
    # About 6.2 hours of 48 kHz stereo 16-bit, and the RIFF size (36 + data + pad) still below
    # the 0xFFFFFFFF that means "unknown".
    assert 6.2 <= WAV_MAX_DATA_BYTES / 192_000 / 3600 < 6.3
    assert 36 + WAV_MAX_DATA_BYTES + 1 < 0xFFFF_FFFF
    sink = Sink()
    writer = WavWriter(sink)  # type: ignore[arg-type]
    with pytest.raises(WavTooLarge, match=r"6\.2 hours"):
        writer.write_silence(WAV_MAX_DATA_BYTES // 3840 + 1)
    assert len(sink.data) == 44  # refused before writing any of it
    # Near the limit (set directly: writing 4 GiB would prove nothing more).
    writer._data_bytes = WAV_MAX_DATA_BYTES - 8
    writer.write(bytes(8))
    with pytest.raises(WavTooLarge):
        writer.write(bytes(4))
    assert isinstance(WavTooLarge("x"), UsageError)
    assert writer.bytes_written == WAV_MAX_DATA_BYTES


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"channels": 0}, "channels"),
        ({"channels": 3}, "channels"),
        ({"channels": 2.0}, "channels"),
        ({"sample_width": 0}, "sample_width"),
        ({"sample_width": 5}, "sample_width"),
        ({"sample_rate": 0}, "sample_rate"),
        ({"sample_rate": True}, "sample_rate"),
    ],
)
def test_wav_arguments_are_checked_before_the_file_is_touched(
    tmp_path: Path, kwargs: dict[str, object], match: str
) -> None:
    path = tmp_path / "keep.wav"
    path.write_bytes(b"keep me")
    with pytest.raises(UsageError, match=match):
        WavWriter(path, **kwargs)  # type: ignore[arg-type]
    assert path.read_bytes() == b"keep me"


def test_wav_bad_writes() -> None:
    with pytest.raises(UsageError, match="path or a binary file object"):
        WavWriter(None)  # type: ignore[arg-type]
    writer = WavWriter(io.BytesIO())
    with pytest.raises(UsageError, match="not whole sample frames of 4 bytes"):
        writer.write(bytes(6))
    with pytest.raises(UsageError, match="must be bytes"):
        writer.write([0, 0, 0, 0])  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="frames"):
        writer.write_silence(-1)
    writer.write(memoryview(bytes(4)))
    assert writer.frames_written == 1
    writer.close()
    writer.close()
    with pytest.raises(UsageError, match="closed"):
        writer.write(bytes(4))
    odd_rate = WavWriter(io.BytesIO(), sample_rate=11_025)
    with pytest.raises(UsageError, match="20 ms"):
        odd_rate.write_silence()
