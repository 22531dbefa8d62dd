"""The Ogg page parser and the Ogg Opus packet layer that feeds passthrough playback.

Files are made in the tests: with our encoder plus the simulator's Ogg writer (one packet per
page), with libopusenc (a third-party writer that packs many packets per page), and page by page
with ``build_ogg_page`` for layouts neither writer produces.
"""

from __future__ import annotations

import array
import ctypes
import struct
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from discore_voice._audio.ogg import (
    AudioSourceError,
    OggFormatError,
    OggOpusReader,
    OggPageReader,
    OpusHead,
    UnsupportedAudio,
    build_ogg_page,
    ogg_crc32,
    opus_packet_frames,
    opus_packet_samples,
    split_opus_packet,
)
from discore_voice._audio.opus import PCM_BLOCK_SIZE, OpusDecoder, OpusEncoder
from discore_voice._audio.signals import channel, find_alignment, sine_pcm
from discore_voice._errors import DiscoreVoiceError, NativeLibraryMissing, ProtocolError, UsageError
from discore_voice._native import require_opusenc
from discore_voice.testing._recording import ogg_crc32 as simulator_crc32
from discore_voice.testing._recording import ogg_opus_bytes

NAME = "music/track.opus"
HEAD = b"OpusHead" + struct.pack("<BBHIhB", 1, 2, 312, 48000, 0, 0)
TAGS = b"OpusTags" + struct.pack("<I", 4) + b"test" + struct.pack("<I", 0)
# TOC bytes (RFC 6716 3.1): config << 3 | stereo << 2 | code.
CELT_20MS = (31 << 3) | 0  # CELT fullband 20 ms, one frame
CELT_10MS = (30 << 3) | 0
SILK_60MS = (3 << 3) | 0
SILK_20MS = (1 << 3) | 0


@pytest.fixture(scope="module")
def encoded() -> list[bytes]:
    pcm = sine_pcm(1.0, hz=440.0)
    with OpusEncoder() as encoder:
        return [
            encoder.encode(pcm[i : i + PCM_BLOCK_SIZE]) for i in range(0, len(pcm), PCM_BLOCK_SIZE)
        ]


def _parse(data: bytes, *, chunk: int = 4096, name: str = NAME) -> list[bytes]:
    reader = OggOpusReader(name)
    out: list[bytes] = []
    for start in range(0, len(data), chunk):
        out += reader.feed(data[start : start + chunk])
    reader.close()
    return out


def _pages(*pages: tuple[int, int, list[bytes], bool]) -> bytes:
    """Pages of whole packets: (serial, flags, packets, last packet continues)."""
    out = b""
    sequences: dict[int, int] = {}
    for serial, flags, packets, open_end in pages:
        lacing: list[int] = []
        for index, packet in enumerate(packets):
            lacing += [255] * (len(packet) // 255)
            if open_end and index == len(packets) - 1:
                assert len(packet) % 255 == 0, "an open packet ends a page on a 255 segment"
            else:
                lacing.append(len(packet) % 255)
        sequence = sequences.get(serial, 0)
        sequences[serial] = sequence + 1
        out += build_ogg_page(
            flags=flags,
            granule=0,
            serial=serial,
            sequence=sequence,
            lacing=lacing,
            body=b"".join(packets),
        )
    return out


def _opus_file(packets: list[bytes], serial: int = 1) -> bytes:
    return _pages(
        (serial, 2, [HEAD], False), (serial, 0, [TAGS], False), (serial, 4, packets, False)
    )


# -- CRC -------------------------------------------------------------------------------------------


def _crc_bitwise(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
            crc &= 0xFFFFFFFF
    return crc


@given(st.binary(max_size=300))
def test_crc_matches_the_definition(data: bytes) -> None:
    assert ogg_crc32(data) == _crc_bitwise(data) == simulator_crc32(data)


def test_crc_is_not_zlibs() -> None:
    import zlib

    assert ogg_crc32(b"OggS") != zlib.crc32(b"OggS")
    assert ogg_crc32(b"") == 0


# -- round trips -----------------------------------------------------------------------------------


def test_encoded_file_round_trips_byte_identical(encoded: list[bytes]) -> None:
    data = ogg_opus_bytes(encoded)
    reader = OggOpusReader(NAME)
    assert reader.feed(data) == encoded
    reader.close()
    assert reader.head == OpusHead(1, 2, 312, 48000, 0, 0)
    assert reader.ended
    assert reader.packets_read == len(encoded) == 50


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 5000), min_size=1, max_size=20))
def test_any_chunking_gives_the_same_packets(encoded: list[bytes], sizes: list[int]) -> None:
    data = ogg_opus_bytes(encoded[:12])
    reader = OggOpusReader(NAME)
    out: list[bytes] = []
    position = 0
    index = 0
    while position < len(data):
        size = sizes[index % len(sizes)]
        out += reader.feed(data[position : position + size])
        position += size
        index += 1
    reader.close()
    assert out == encoded[:12]


def _libopusenc_file(path: Path, pcm: bytes, *, frame_duration: int | None = None) -> bytes:
    try:
        require_opusenc()
    except NativeLibraryMissing as exc:
        pytest.skip(str(exc))
    opus = sys.modules["pyogg.opus"]
    error = ctypes.c_int()
    comments = opus.ope_comments_create()
    encoder = opus.ope_encoder_create_file(
        str(path).encode(), comments, 48000, 2, 0, ctypes.byref(error)
    )
    assert error.value == 0
    try:
        if frame_duration is not None:
            # OPUS_SET_EXPERT_FRAME_DURATION
            assert opus.ope_encoder_ctl(encoder, 4040, ctypes.c_int(frame_duration)) == 0
        samples = array.array("h", pcm)
        pointer = ctypes.cast(samples.buffer_info()[0], ctypes.POINTER(ctypes.c_int16))
        assert opus.ope_encoder_write(encoder, pointer, len(samples) // 2) == 0
        assert opus.ope_encoder_drain(encoder) == 0
    finally:
        opus.ope_encoder_destroy(encoder)
        opus.ope_comments_destroy(comments)
    return path.read_bytes()


def test_libopusenc_file_parses_and_decodes_to_the_tone(tmp_path: Path) -> None:
    pcm = sine_pcm(2.0, hz=440.0)
    data = _libopusenc_file(tmp_path / "tone.opus", pcm)
    reader = OggOpusReader("tone.opus")
    packets = reader.feed(data)
    reader.close()
    # libopusenc packs many packets per page, unlike the simulator's writer.
    pages = OggPageReader("tone.opus")
    pages.feed(data)
    counts = []
    while (page := pages.next_page()) is not None:
        counts.append(len(page.lacing))
    assert max(counts) > 50
    assert all(opus_packet_samples(p) == 960 for p in packets)
    assert 100 <= len(packets) <= 102
    with OpusDecoder() as decoder:
        decoded = b"".join(decoder.decode(p) for p in packets)
    match = find_alignment(channel(pcm), channel(decoded))
    assert match.correlation > 0.95


@pytest.mark.parametrize(("request_value", "factor"), [(5005, 2), (5006, 3)])
def test_libopusenc_40_and_60ms_files_are_split_exactly(
    tmp_path: Path, request_value: int, factor: int
) -> None:
    """Music at 40/60 ms frame sizes is CELT, i.e. 20 ms frames packed together: split them."""
    pcm = sine_pcm(2.0, hz=440.0)
    data = _libopusenc_file(tmp_path / "long.opus", pcm, frame_duration=request_value)
    pages = OggPageReader("long.opus")
    pages.feed(data)
    raw = []
    while (page := pages.next_page()) is not None:
        raw.append(page)
    reader = OggOpusReader("long.opus")
    packets = reader.feed(data)
    reader.close()
    assert all(p[0] & 3 == 0 and opus_packet_samples(p) == 960 for p in packets)
    # Every original packet (lacing values under 255 end one; two are headers) became several;
    # libopusenc may shorten the last one.
    original = sum(1 for page in raw for value in page.lacing if value < 255) - 2
    assert factor * (original - 1) < len(packets) <= factor * original
    assert 100 <= len(packets) <= 100 + 2 * factor
    assert reader.packets_read == len(packets)
    with OpusDecoder() as decoder:
        decoded = b"".join(decoder.decode(p) for p in packets)
    assert find_alignment(channel(pcm), channel(decoded)).correlation > 0.95


def test_libopusenc_10ms_file_is_rejected(tmp_path: Path) -> None:
    data = _libopusenc_file(tmp_path / "short.opus", sine_pcm(0.5), frame_duration=5003)
    with pytest.raises(
        UnsupportedAudio, match=r"short\.opus: audio packet 1 lasts 10 ms in frames"
    ):
        _parse(data, name="short.opus")


def test_packets_continue_across_pages_and_share_pages() -> None:
    big = bytes([CELT_20MS]) + bytes(range(256)) * 3  # 769 bytes: lacing 255,255,255,4
    exact = bytes([CELT_20MS]) + bytes(509)  # 510 bytes = 2 * 255: needs a 0 terminator
    small = [bytes([CELT_20MS, i]) for i in range(3)]
    data = _pages(
        (9, 2, [HEAD], False),
        (9, 0, [TAGS, small[0], big[:510]], True),
        (9, 1, [big[510:]], False),
        (9, 0, [exact, small[1]], False),
        (9, 4, [small[2]], False),
    )
    assert _parse(data, chunk=7) == [small[0], big, exact, small[1], small[2]]


def test_packet_spanning_three_pages() -> None:
    packet = bytes([CELT_20MS]) + bytes(range(200)) * 4
    data = _pages(
        (1, 2, [HEAD], False),
        (1, 0, [TAGS], False),
        (1, 0, [packet[:255]], True),
        (1, 1, [packet[255:510]], True),
        (1, 5, [packet[510:]], False),
    )
    assert _parse(data) == [packet]


def test_empty_opus_stream_is_fine() -> None:
    assert _parse(ogg_opus_bytes([])) == []


# -- streams ---------------------------------------------------------------------------------------


def test_first_opus_stream_is_chosen_among_several() -> None:
    vorbis = b"\x01vorbis" + bytes(22)
    ours = [bytes([CELT_20MS, 1]), bytes([CELT_20MS, 2])]
    theirs = [bytes([CELT_20MS, 9])]
    data = _pages(
        (5, 2, [vorbis], False),
        (6, 2, [HEAD], False),
        (7, 2, [HEAD], False),
        (5, 0, [b"vorbis comments"], False),
        (6, 0, [TAGS], False),
        (7, 0, [TAGS, *theirs], False),
        (6, 0, [ours[0]], False),
        (5, 4, [b"vorbis audio"], False),
        (6, 4, [ours[1]], False),
        (7, 4, theirs, False),
    )
    assert _parse(data) == ours


def test_chained_stream_after_the_first_is_ignored(encoded: list[bytes]) -> None:
    data = ogg_opus_bytes(encoded[:3], serial=1) + ogg_opus_bytes(encoded[3:6], serial=2)
    assert _parse(data) == encoded[:3]


def test_vorbis_file_is_rejected_naming_the_codec() -> None:
    data = _pages((3, 2, [b"\x01vorbis" + bytes(22)], False), (3, 4, [b"x"], False))
    with pytest.raises(UnsupportedAudio, match=rf"^{NAME}: no Opus stream.*Vorbis"):
        _parse(data)


def test_non_opus_only_bos_pages_are_rejected_at_the_end() -> None:
    data = _pages((3, 2, [b"\x7fFLAC" + bytes(10)], False))
    with pytest.raises(UnsupportedAudio, match="FLAC"):
        _parse(data)


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"RIFF\x00\x00\x00\x00WAVE", "WAV"),
        (b"ID3\x04\x00", "MP3"),
        (b"fLaC\x00\x00", "FLAC"),
        (b"hello world", "not an Ogg file"),
    ],
)
def test_not_ogg_at_all(head: bytes, kind: str) -> None:
    with pytest.raises(OggFormatError, match=kind) as info:
        _parse(head)
    assert info.value.source == NAME


def test_empty_input() -> None:
    with pytest.raises(OggFormatError, match="empty"):
        _parse(b"")


# -- corruption ------------------------------------------------------------------------------------


def test_bad_crc_names_the_source_and_page(encoded: list[bytes]) -> None:
    data = bytearray(ogg_opus_bytes(encoded[:5]))
    data[-3] ^= 0x40
    reader = OggOpusReader(NAME)
    # The packets before the damaged page come out; the damage is raised by the next call.
    assert reader.feed(bytes(data)) == encoded[:4]
    with pytest.raises(OggFormatError, match=rf"^{NAME}: Ogg page at byte \d+ .* CRC"):
        reader.feed(b"")
    with pytest.raises(OggFormatError, match="CRC"):
        reader.close()
    first_page = OggOpusReader(NAME)
    with pytest.raises(OggFormatError, match="CRC"):  # nothing good before it: at once
        first_page.feed(bytes(data[:40]) + b"\xff" + bytes(data[41:60]))


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_truncation_is_an_error_after_a_prefix_of_packets(
    encoded: list[bytes], data: st.DataObject
) -> None:
    whole = ogg_opus_bytes(encoded[:6])
    cut = data.draw(st.integers(0, len(whole) - 1))
    reader = OggOpusReader(NAME)
    got: list[bytes] = []
    with pytest.raises(OggFormatError, match=f"^{NAME}: (truncated|empty)"):
        got += reader.feed(whole[:cut])
        reader.close()
    assert got == encoded[: len(got)]


def test_missing_page_is_detected(encoded: list[bytes]) -> None:
    whole = ogg_opus_bytes(encoded[:4])
    pages = OggPageReader(NAME)
    pages.feed(whole)
    offsets = []
    while (page := pages.next_page()) is not None:
        offsets.append(page.offset)
    without_third_audio = whole[: offsets[4]] + whole[offsets[5] :]
    with pytest.raises(OggFormatError, match="page 5 of the Opus stream, expected 4"):
        _parse(without_third_audio)


def test_continuation_without_an_open_packet() -> None:
    data = _pages((1, 2, [HEAD], False), (1, 1, [TAGS], False))
    with pytest.raises(OggFormatError, match="continues a packet, but no packet"):
        _parse(data)


def test_open_packet_not_continued() -> None:
    data = _pages(
        (1, 2, [HEAD], False),
        (1, 0, [TAGS], False),
        (1, 0, [bytes(255)], True),
        (1, 4, [b"x"], False),
    )
    with pytest.raises(OggFormatError, match="does not continue the packet"):
        _parse(data)


def test_stream_ending_inside_a_packet() -> None:
    data = _pages((1, 2, [HEAD], False), (1, 0, [TAGS], False), (1, 4, [bytes(510)], True))
    with pytest.raises(OggFormatError, match="ends the stream inside a packet"):
        _parse(data)


def test_page_after_end_of_stream(encoded: list[bytes]) -> None:
    data = ogg_opus_bytes(encoded[:2]) + _pages((0x5EC0DE, 0, [encoded[2]], False))
    with pytest.raises(OggFormatError, match="follows the Opus stream's end-of-stream page"):
        _parse(data)


def test_first_page_without_bos() -> None:
    with pytest.raises(OggFormatError, match="does not begin a stream"):
        _parse(_pages((1, 0, [HEAD], False)))


def test_unknown_stream_page() -> None:
    data = _pages((1, 2, [HEAD], False), (2, 0, [TAGS], False))
    with pytest.raises(OggFormatError, match="never began"):
        _parse(data)


def test_bos_twice_for_one_stream() -> None:
    data = _pages((3, 2, [b"\x01vorbis"], False), (3, 2, [b"\x01vorbis"], False))
    with pytest.raises(OggFormatError, match="a second time"):
        _parse(data)


def test_version_and_flags() -> None:
    page = bytearray(_pages((1, 2, [HEAD], False)))
    bad_version = page[:4] + b"\x01" + page[5:]
    with pytest.raises(OggFormatError, match="version 1"):
        _parse(bytes(bad_version))
    bad_flags = build_ogg_page(flags=0x08, granule=0, serial=1, sequence=0, lacing=[19], body=HEAD)
    with pytest.raises(OggFormatError, match="unknown header flags 0x08"):
        _parse(bad_flags)


# -- OpusHead and OpusTags -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "error", "message"),
    [
        (HEAD[:18], OggFormatError, "shorter"),
        (b"OpusHead" + struct.pack("<BBHIhB", 16, 2, 0, 0, 0, 0), UnsupportedAudio, "version 16"),
        (b"OpusHead" + struct.pack("<BBHIhB", 1, 0, 0, 0, 0, 0), OggFormatError, "zero channels"),
        (b"OpusHead" + struct.pack("<BBHIhB", 1, 3, 0, 0, 0, 0), OggFormatError, "3 channels"),
        (
            b"OpusHead" + struct.pack("<BBHIhB", 1, 6, 0, 0, 0, 1) + bytes(8),
            UnsupportedAudio,
            "mapping family 1",
        ),
    ],
)
def test_bad_opus_head(head: bytes, error: type[Exception], message: str) -> None:
    data = _pages((1, 2, [head], False), (1, 0, [TAGS], False), (1, 4, [b"\xf8"], False))
    with pytest.raises(error, match=message):
        _parse(data)


def test_mono_stream_is_accepted() -> None:
    head = b"OpusHead" + struct.pack("<BBHIhB", 1, 1, 0, 0, 0, 0)
    packet = bytes([SILK_20MS, 1, 2])
    data = _pages((1, 2, [head], False), (1, 0, [TAGS], False), (1, 4, [packet], False))
    assert _parse(data) == [packet]


def test_missing_opus_tags() -> None:
    data = _pages((1, 2, [HEAD], False), (1, 4, [b"\xf8\xff\xfe"], False))
    with pytest.raises(OggFormatError, match=r"second packet \(page at byte \d+\) is not OpusTags"):
        _parse(data)


def test_stream_ending_before_tags() -> None:
    with pytest.raises(OggFormatError, match="ends before its OpusHead and OpusTags"):
        _parse(_pages((1, 6, [HEAD], False)))


# -- packet durations ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("packet", "samples"),
    [
        (bytes([CELT_20MS, 1, 2]), 960),
        (bytes([SILK_20MS]), 960),
        (bytes([(13 << 3), 5]), 960),  # hybrid 20 ms
        (bytes([(12 << 3), 5]), 480),  # hybrid 10 ms
        (bytes([CELT_10MS]), 480),
        (bytes([(28 << 3)]), 120),  # CELT 2.5 ms
        (bytes([SILK_60MS]), 2880),
        (bytes([(2 << 3)]), 1920),  # SILK 40 ms
        (bytes([CELT_10MS | 1, 7, 7]), 960),  # two equal 10 ms frames = 20 ms
        (bytes([CELT_10MS | 2, 1, 9, 9]), 960),  # two 10 ms frames, sizes 1 and 1
        (bytes([CELT_20MS | 1]), 1920),
        (bytes([CELT_20MS | 3, 3]), 2880),
        # Code 2 with a two-byte first length: 253 + 4 * 1 = 257 bytes, then the second frame.
        (bytes([CELT_10MS | 2, 253, 1]) + bytes(257 + 3), 960),
        (b"\xf8\xff\xfe", 960),  # Discord's silence frame
    ],
)
def test_packet_durations(packet: bytes, samples: int) -> None:
    assert opus_packet_samples(packet) == samples


@pytest.mark.parametrize(
    ("packet", "message"),
    [
        (b"", "empty"),
        (bytes([CELT_20MS | 1, 1]), "odd"),
        (bytes([CELT_20MS | 2]), "before its first frame's length"),
        (bytes([CELT_20MS | 2, 252]), "inside its frame length"),
        (bytes([CELT_20MS | 2, 5, 1]), "runs past its end"),
        (bytes([CELT_20MS | 2, 253, 1]) + bytes(256), "first frame \\(257 bytes\\) runs past"),
        (bytes([CELT_20MS | 3]), "frame count"),
        (bytes([CELT_20MS | 3, 0]), "zero frames"),
        (bytes([CELT_20MS | 3, 7]), "longer than the 120 ms"),
    ],
)
def test_malformed_packets(packet: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        opus_packet_samples(packet)
    with pytest.raises(OggFormatError, match=rf"audio packet 1 .* malformed: .*{message}"):
        _parse(_opus_file([packet]))


@pytest.mark.parametrize(
    ("packet", "ms"),
    [
        (bytes([CELT_10MS, 1]), "10"),
        (bytes([SILK_60MS, 1]), "60"),
        (bytes([SILK_60MS | 1, 1, 1]), "120"),
        (bytes([(2 << 3) | 0, 1]), "40"),  # one SILK 40 ms frame
        (bytes([CELT_10MS | 3, 3, 1, 2, 3]), "30"),
        (bytes([(28 << 3), 1]), "2.5"),
    ],
)
def test_non_20ms_packets_are_rejected_not_mistimed(packet: bytes, ms: str) -> None:
    good = bytes([CELT_20MS, 0])
    reader = OggOpusReader(NAME)
    data = _opus_file([good, good, packet])
    with pytest.raises(UnsupportedAudio, match=rf"audio packet 3 lasts {ms} ms in frames") as info:
        reader.feed(data)
    assert isinstance(info.value, UsageError)
    assert info.value.source == NAME


@pytest.mark.parametrize(
    ("packet", "frames"),
    [
        (bytes([CELT_20MS, 1, 2, 3]), [b"\x01\x02\x03"]),
        (bytes([CELT_20MS | 1, 1, 2, 3, 4]), [b"\x01\x02", b"\x03\x04"]),
        (bytes([CELT_20MS | 2, 1, 9, 8, 7]), [b"\x09", b"\x08\x07"]),
        (bytes([CELT_20MS | 2, 0, 5]), [b"", b"\x05"]),
        (bytes([CELT_20MS | 2, 253, 1]) + bytes(257) + b"\x05", [bytes(257), b"\x05"]),
        # CBR code 3: three frames of 2 bytes.
        (bytes([CELT_20MS | 3, 3, 1, 1, 2, 2, 3, 3]), [b"\x01\x01", b"\x02\x02", b"\x03\x03"]),
        # CBR with padding: 255 means 254 bytes and another length byte, then 2 more.
        (bytes([CELT_20MS | 3, 0x42, 255, 2, 7, 8]) + bytes(256), [b"\x07", b"\x08"]),
        # VBR: lengths 1 and 3 given, the last frame takes the rest.
        (
            bytes([CELT_20MS | 3, 0x83, 1, 3, 9, 8, 8, 8, 6, 6]),
            [b"\x09", b"\x08\x08\x08", b"\x06\x06"],
        ),
        # VBR with padding.
        (bytes([CELT_20MS | 3, 0xC2, 1, 1, 4, 5, 0]), [b"\x04", b"\x05"]),
    ],
)
def test_packet_frames(packet: bytes, frames: list[bytes]) -> None:
    samples, got = opus_packet_frames(packet)
    assert (samples, got) == (960, frames)
    split = split_opus_packet(packet)
    assert split == [bytes([CELT_20MS]) + frame for frame in frames]


@pytest.mark.parametrize(
    ("packet", "message"),
    [
        (bytes([CELT_20MS | 3, 0x41]), "inside its padding length"),
        (bytes([CELT_20MS | 3, 0x41, 255]), "inside its padding length"),
        (bytes([CELT_20MS | 3, 0x41, 5, 1]), "padding overrun"),
        (bytes([CELT_20MS | 3, 3, 1, 2]), "do not split into 3 equal frames"),
        (bytes([CELT_20MS | 3, 0x83, 5, 1, 1]), "frame lengths overrun"),
        (bytes([CELT_20MS | 3, 0x83, 1]), "inside a frame length"),
        (bytes([CELT_20MS | 3, 0x83, 253]), "inside a two-byte frame length"),
        (bytes([CELT_20MS]) + bytes(1276), "longer than 1275 bytes"),
    ],
)
def test_malformed_frames(packet: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        opus_packet_frames(packet)


def test_split_keeps_the_stereo_bit_and_refuses_other_durations() -> None:
    stereo = (31 << 3) | 4
    assert split_opus_packet(bytes([stereo | 1, 1, 2])) == [bytes([stereo, 1]), bytes([stereo, 2])]
    assert split_opus_packet(bytes([CELT_10MS | 1, 1, 2])) is None
    assert split_opus_packet(bytes([SILK_60MS, 1])) is None


def test_ogg_file_with_multi_frame_packets_is_reframed() -> None:
    packets = [
        bytes([CELT_20MS | 3, 3, 1, 2, 3]),
        bytes([CELT_20MS, 4]),
        bytes([CELT_20MS | 1, 5, 6]),
    ]
    got = _parse(_opus_file(packets))
    assert got == [bytes([CELT_20MS, b]) for b in range(1, 7)]


# -- fuzzing ---------------------------------------------------------------------------------------


def _feed_all(data: bytes, chunks: Iterator[int]) -> None:
    reader = OggOpusReader("fuzz")
    position = 0
    while position < len(data):
        size = next(chunks)
        reader.feed(data[position : position + size])
        position += size
    reader.close()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000), st.integers(1, 700))
def test_random_bytes_raise_only_library_errors(data: bytes, chunk: int) -> None:
    try:
        _feed_all(b"OggS" + data, iter(lambda: chunk, None))
    except AudioSourceError as exc:
        assert str(exc).startswith("fuzz: ")


_page_strategy = st.builds(
    lambda serial, flags, sequence, packets, head: (serial, flags, sequence, packets, head),
    st.sampled_from([1, 2]),
    st.integers(0, 7),
    st.integers(0, 4),
    st.lists(st.binary(max_size=600), max_size=4),
    st.sampled_from([b"", HEAD, TAGS, b"\x01vorbis", b"\xf8\xff\xfe"]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_page_strategy, max_size=8), st.integers(1, 300))
def test_random_valid_pages_raise_only_library_errors(
    pages: list[tuple[int, int, int, list[bytes], bytes]], chunk: int
) -> None:
    """Pages with correct CRCs and random structure reach every check past the CRC."""
    data = b""
    for serial, flags, sequence, packets, head in pages:
        packets = [head + p for p in packets[:1]] + packets[1:] if head else packets
        lacing: list[int] = []
        for packet in packets:
            lacing += [255] * (len(packet) // 255) + [len(packet) % 255]
        data += build_ogg_page(
            flags=flags,
            granule=-1,
            serial=serial,
            sequence=sequence,
            lacing=lacing[:255],
            body=b"".join(packets)[: sum(lacing[:255])],
        )
    try:
        _feed_all(data, iter(lambda: chunk, None))
    except AudioSourceError as exc:
        assert str(exc).startswith("fuzz: ")


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_mutated_real_file_raises_only_library_errors(
    encoded: list[bytes], data: st.DataObject
) -> None:
    whole = bytearray(ogg_opus_bytes(encoded[:4]))
    for _ in range(data.draw(st.integers(1, 4))):
        where = data.draw(st.integers(0, len(whole) - 1))
        whole[where] = data.draw(st.integers(0, 255))
    try:
        _parse(bytes(whole), chunk=data.draw(st.integers(1, 500)))
    except DiscoreVoiceError as exc:
        assert isinstance(exc, AudioSourceError)
