"""Recordings: raw packets, PCM with concealment, WAV through ``wave`` and Ogg Opus pages.

The Ogg reader and CRC below are written independently of the simulator's writer (bit by bit,
from RFC 3533), so a shared mistake cannot hide.
"""

from __future__ import annotations

import io
import struct
import wave
from pathlib import Path

import pyogg
import pytest

from discore_voice._audio.opus import OpusEncoder
from discore_voice._core.speaking import OPUS_SILENCE_FRAME
from discore_voice.testing._recording import (
    ReceivedPacket,
    Recording,
    ogg_opus_bytes,
    opus_packet_samples,
)

from .voice_client import best_correlation, left_channel, sine_pcm


def reference_crc(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = (crc << 1) ^ 0x04C11DB7 if crc & 0x80000000 else crc << 1
            crc &= 0xFFFFFFFF
    return crc


def read_ogg(data: bytes) -> tuple[list[dict[str, int]], list[bytes]]:
    """Pages (checked) and the packets they carry, reassembled across pages."""
    pages: list[dict[str, int]] = []
    packets: list[bytes] = []
    partial = b""
    offset = 0
    while offset < len(data):
        assert data[offset : offset + 4] == b"OggS"
        version, flags, granule, serial, sequence, crc, count = struct.unpack_from(
            "<BBqIIIB", data, offset + 4
        )
        assert version == 0
        lacing = data[offset + 27 : offset + 27 + count]
        size = 27 + count + sum(lacing)
        page = data[offset : offset + size]
        zeroed = page[:22] + b"\0\0\0\0" + page[26:]
        assert reference_crc(zeroed) == crc, f"bad CRC on page {sequence}"
        assert bool(flags & 1) == bool(partial), "continuation flag disagrees with the data"
        body = page[27 + count :]
        position = 0
        for segment in lacing:
            partial += body[position : position + segment]
            position += segment
            if segment < 255:
                packets.append(partial)
                partial = b""
        pages.append({"flags": flags, "granule": granule, "serial": serial, "sequence": sequence})
        offset += size
    assert partial == b"", "the last packet never ended"
    return pages, packets


def sine_recording(seconds: float = 0.6) -> tuple[bytes, Recording]:
    pcm = sine_pcm(440, seconds)
    recording = Recording(1, ssrc=5)
    with OpusEncoder(bitrate=64_000) as encoder:
        for index, offset in enumerate(range(0, len(pcm), 3840)):
            frame = encoder.encode(pcm[offset : offset + 3840])
            recording.add(ReceivedPacket(100 + index, index * 960, frame))
    return pcm, recording


def test_wav_round_trip(tmp_path: Path) -> None:
    source, recording = sine_recording()
    path = tmp_path / "user.wav"
    recording.write_wav(path)
    with wave.open(str(path), "rb") as reader:
        assert reader.getnchannels() == 2
        assert reader.getsampwidth() == 2
        assert reader.getframerate() == 48_000
        assert reader.getnframes() == 30 * 960
        frames = reader.readframes(reader.getnframes())
    assert frames == recording.pcm()
    assert best_correlation(left_channel(source), left_channel(frames)) >= 0.95


def test_ogg_opus_pages_headers_and_packets(tmp_path: Path) -> None:
    _, recording = sine_recording()
    path = tmp_path / "user.opus"
    recording.write_ogg(path, serial=77)
    pages, packets = read_ogg(path.read_bytes())
    head, tags, *audio = packets
    assert head[:8] == b"OpusHead"
    version, channels, pre_skip, rate, gain, mapping = struct.unpack("<BBHIhB", head[8:])
    assert (version, channels, pre_skip, rate, gain, mapping) == (1, 2, 312, 48_000, 0, 0)
    assert tags[:8] == b"OpusTags"
    assert audio == recording.opus_packets
    assert [p["sequence"] for p in pages] == list(range(len(pages)))
    assert {p["serial"] for p in pages} == {77}
    assert pages[0]["flags"] == 2 and pages[-1]["flags"] & 4
    assert all(not p["flags"] & 6 for p in pages[1:-1])
    assert pages[-1]["granule"] == 30 * 960
    # libopusfile (through pyogg) decodes our file: an independent reader agrees it is valid.
    decoded = pyogg.OpusFile(str(path))
    assert decoded.channels == 2 and decoded.frequency == 48_000
    assert decoded.buffer_length == (30 * 960 - 312) * 4


def test_ogg_continues_a_packet_across_pages() -> None:
    big = bytes(range(256)) * 300  # 76 800 bytes: more than one page's 255 segments
    pages, packets = read_ogg(ogg_opus_bytes([big, b"\xfc"]))
    assert packets[2:] == [big, b"\xfc"]
    continued = [p for p in pages if p["flags"] & 1]
    assert continued and all(p["granule"] == -1 for p in pages[2:-2] if not p["flags"] & 1)


def test_an_empty_recording_is_still_a_valid_file() -> None:
    pages, packets = read_ogg(ogg_opus_bytes([]))
    assert len(packets) == 2 and pages[-1]["flags"] & 4
    buffer = io.BytesIO()
    Recording(1).write_wav(buffer)
    with wave.open(io.BytesIO(buffer.getvalue())) as reader:
        assert reader.getnframes() == 0


def test_pcm_conceals_lost_frames_and_skips_duplicates() -> None:
    _, full = sine_recording(0.2)
    lossy = Recording(1)
    for packet in full.packets:
        if packet.sequence != 103:
            lossy.add(packet)
    lossy.add(full.packets[0])  # a late duplicate
    assert len(lossy.pcm()) == len(full.pcm())
    assert len(lossy.opus_packets) == len(full.opus_packets)


def test_sequence_order_survives_the_wrap() -> None:
    recording = Recording(1)
    for seq in (65534, 65535, 1, 0, 2):
        recording.add(ReceivedPacket(seq, 0, OPUS_SILENCE_FRAME))
    assert [p.sequence for p in recording.in_order()] == [65534, 65535, 0, 1, 2]


@pytest.mark.parametrize(
    ("packet", "samples"),
    [
        (bytes([0xFC]), 960),  # CELT 20 ms, one frame
        (bytes([0xF8, 0xFF, 0xFE]), 960),  # the silence frame
        (bytes([0x78 | 1]), 1920),  # hybrid 20 ms, two frames
        (bytes([(1 << 3) | 3, 3]), 3 * 960),  # SILK 20 ms, code 3 with three frames
        (bytes([(16 << 3)]), 120),  # CELT 2.5 ms
        (b"", 0),
    ],
)
def test_opus_packet_samples(packet: bytes, samples: int) -> None:
    assert opus_packet_samples(packet) == samples
