"""Playable sources: PCM from bytes, files and async iterators; Ogg Opus as is; PyAV decoding."""

from __future__ import annotations

import array
import functools
import http.server
import importlib.util
import math
import sys
import threading
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from discore_voice._audio.ogg import OggFormatError, UnsupportedAudio
from discore_voice._audio.opus import PCM_BLOCK_SIZE, OpusEncoder
from discore_voice._audio.signals import (
    channel,
    correlation,
    find_alignment,
    sine_pcm,
    zero_crossing_frequency,
)
from discore_voice._audio.sources import (
    AudioExtraMissing,
    AudioSource,
    AudioSourceError,
    AvSource,
    OggOpusSource,
    PcmSource,
    SourceKind,
    open_audio_file,
)
from discore_voice._errors import NativeLibraryMissing, UsageError
from discore_voice.testing._recording import ogg_opus_bytes

FRAME = PCM_BLOCK_SIZE
HAVE_AV = importlib.util.find_spec("av") is not None
needs_av = pytest.mark.skipif(not HAVE_AV, reason="PyAV (the 'av' extra) is not installed")


def _pattern(size: int) -> bytes:
    return bytes((i * 13 + i // 256) % 256 for i in range(size))


async def _collect(source: AudioSource) -> list[bytes]:
    return [frame async for frame in source]


def _samples(pcm: bytes) -> list[int]:
    values = array.array("h", pcm)
    if sys.byteorder == "big":
        values.byteswap()
    return values.tolist()


# -- PCM -------------------------------------------------------------------------------------------


async def test_pcm_bytes_are_cut_into_frames_and_the_tail_padded() -> None:
    data = _pattern(2 * FRAME + 1000)
    source = PcmSource.from_bytes(data)
    assert source.kind is SourceKind.PCM
    assert source.needs_encoding
    frames = await _collect(source)
    assert [len(f) for f in frames] == [FRAME] * 3
    assert b"".join(frames) == data + bytes(FRAME - 1000)
    assert await _collect(source) == []


async def test_pcm_bytes_of_whole_frames_need_no_padding() -> None:
    data = _pattern(3 * FRAME)
    assert b"".join(await _collect(PcmSource.from_bytes(data))) == data


@pytest.mark.parametrize("size", [1, 2, 3, FRAME + 2])
async def test_odd_length_pcm_bytes_are_refused_up_front(size: int) -> None:
    with pytest.raises(AudioSourceError, match=rf"^my clip: is {size} bytes, not a whole") as info:
        PcmSource.from_bytes(bytes(size), name="my clip")
    assert isinstance(info.value, UsageError)


async def test_pcm_file(tmp_path: Path) -> None:
    data = _pattern(40 * FRAME + 12)  # more than one read of 25 frames
    path = tmp_path / "clip.pcm"
    path.write_bytes(data)
    frames = await _collect(PcmSource.from_file(path))
    assert len(frames) == 41
    assert b"".join(frames) == data + bytes(FRAME - 12)


async def test_odd_length_pcm_file_is_refused_before_playing(tmp_path: Path) -> None:
    path = tmp_path / "odd.pcm"
    path.write_bytes(bytes(5 * FRAME + 3))
    source = PcmSource.from_file(path)
    with pytest.raises(AudioSourceError, match=r"odd\.pcm: is 19203 bytes, not a whole"):
        await source.__anext__()
    assert await _collect(source) == []


async def test_missing_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "song.pcm"
    for source in (PcmSource.from_file(path), OggOpusSource.from_file(path)):
        with pytest.raises(AudioSourceError, match=r"nowhere/song\.pcm: no such file") as info:
            await _collect(source)
        assert info.value.source == str(path)
        assert isinstance(info.value.__cause__, FileNotFoundError)


async def test_directory_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(AudioSourceError, match="is a directory"):
        await _collect(PcmSource.from_file(tmp_path))


async def test_async_iterator_chunks_of_any_size_are_reassembled() -> None:
    data = _pattern(3 * FRAME + 8)
    sizes = [1, 3, 4000, 7, 5, 3000, 100_000]

    async def produce() -> AsyncIterator[bytes]:
        position = 0
        for size in sizes:
            yield data[position : position + size]
            position += size
            yield b""

    frames = await _collect(PcmSource.from_iterable(produce()))
    assert b"".join(frames) == data + bytes(FRAME - 8)


async def test_async_iterator_accepts_bytes_like_items() -> None:
    async def produce() -> AsyncIterator[bytes]:
        yield bytearray(FRAME)  # type: ignore[misc]
        yield memoryview(bytes(FRAME))  # type: ignore[misc]

    assert len(await _collect(PcmSource.from_iterable(produce()))) == 2


async def test_async_iterator_ending_in_a_partial_sample() -> None:
    async def produce() -> AsyncIterator[bytes]:
        yield bytes(FRAME + 6)

    source = PcmSource.from_iterable(produce(), name="mic")
    assert await source.__anext__() == bytes(FRAME)
    with pytest.raises(AudioSourceError, match=r"^mic: ends with 2 stray bytes"):
        await source.__anext__()


async def test_async_iterator_yielding_a_non_bytes_item() -> None:
    async def produce() -> AsyncIterator[object]:
        yield "text"

    with pytest.raises(AudioSourceError, match="yielded a str"):
        await _collect(PcmSource.from_iterable(produce()))  # type: ignore[arg-type]


async def test_from_iterable_needs_an_async_iterable() -> None:
    with pytest.raises(UsageError, match="async iterable"):
        PcmSource.from_iterable([b"x"])  # type: ignore[arg-type]


async def test_aclose_closes_the_producer() -> None:
    finished = []

    async def produce() -> AsyncIterator[bytes]:
        try:
            while True:
                yield bytes(FRAME)
        finally:
            finished.append(True)

    async with PcmSource.from_iterable(produce()) as source:
        assert await source.__anext__() == bytes(FRAME)
    assert finished == [True]
    assert await _collect(source) == []


async def test_volume_applies_frame_by_frame() -> None:
    tone = sine_pcm(0.06, amplitude=0.8)
    source = PcmSource.from_bytes(tone, volume=0.5)
    first = await source.__anext__()
    assert _samples(first) == [round(v * 0.5) for v in _samples(tone[:FRAME])]
    source.volume = 2.0
    second = _samples(await source.__anext__())
    expected = [max(-32768, min(32767, v * 2)) for v in _samples(tone[FRAME : 2 * FRAME])]
    assert second == expected
    assert max(second) == 32767  # clipped, not wrapped
    source.volume = 1
    assert await source.__anext__() == tone[2 * FRAME :]
    assert source.volume == 1.0


@pytest.mark.parametrize("volume", [-1.0, float("nan"), "loud"])
async def test_bad_volume(volume: object) -> None:
    with pytest.raises(UsageError, match="volume"):
        PcmSource.from_bytes(bytes(4), volume=volume)  # type: ignore[arg-type]
    source = PcmSource.from_bytes(bytes(4))
    with pytest.raises(UsageError, match="volume"):
        source.volume = volume  # type: ignore[assignment]


# -- Ogg Opus --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def packets() -> list[bytes]:
    pcm = sine_pcm(0.6)
    with OpusEncoder() as encoder:
        return [encoder.encode(pcm[i : i + FRAME]) for i in range(0, len(pcm), FRAME)]


async def test_ogg_opus_file_passes_packets_through(tmp_path: Path, packets: list[bytes]) -> None:
    path = tmp_path / "song.opus"
    path.write_bytes(ogg_opus_bytes(packets))
    source = OggOpusSource.from_file(path)
    assert source.kind is SourceKind.OPUS
    assert not source.needs_encoding
    assert await _collect(source) == packets


async def test_large_ogg_opus_bytes_pass_through(packets: list[bytes]) -> None:
    many = packets * 40  # 1200 packets, several reads
    assert await _collect(OggOpusSource.from_bytes(ogg_opus_bytes(many))) == many


async def test_corrupt_ogg_plays_what_came_before_then_names_the_file(
    tmp_path: Path, packets: list[bytes]
) -> None:
    data = bytearray(ogg_opus_bytes(packets * 40))
    data[-100] ^= 0xFF
    path = tmp_path / "broken.opus"
    path.write_bytes(bytes(data))
    got = []
    with pytest.raises(OggFormatError, match=r"broken\.opus: Ogg page at byte \d+ .*CRC"):
        async for packet in OggOpusSource.from_file(path):
            got.append(packet)
    assert got == (packets * 40)[: len(got)]
    assert len(got) >= len(packets) * 40 - 2  # every packet before the damaged page


async def test_truncated_ogg(packets: list[bytes]) -> None:
    data = ogg_opus_bytes(packets)[:-10]
    with pytest.raises(OggFormatError, match=r"^clip: truncated"):
        await _collect(OggOpusSource.from_bytes(data, name="clip"))


async def test_ogg_with_60ms_silk_frames_is_refused() -> None:
    long_packet = bytes([3 << 3, 1, 1])  # one 60 ms SILK frame: cannot be re-timed
    with pytest.raises(UnsupportedAudio, match="lasts 60 ms"):
        await _collect(OggOpusSource.from_bytes(ogg_opus_bytes([long_packet])))


async def test_ogg_with_40ms_packets_of_20ms_frames_is_split() -> None:
    long_packet = bytes([(31 << 3) | 1, 1, 2])  # two 20 ms CELT frames
    got = await _collect(OggOpusSource.from_bytes(ogg_opus_bytes([long_packet])))
    assert got == [bytes([31 << 3, 1]), bytes([31 << 3, 2])]


async def test_wav_given_as_ogg_says_what_it_is(tmp_path: Path) -> None:
    path = tmp_path / "tone.wav"
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(2)
        writer.setsampwidth(2)
        writer.setframerate(48000)
        writer.writeframes(bytes(FRAME))
    with pytest.raises(OggFormatError, match=r"tone\.wav: this is a WAV .* PyAV source"):
        await _collect(OggOpusSource.from_file(path))


async def test_aclose_ends_an_ogg_source(packets: list[bytes]) -> None:
    async with OggOpusSource.from_bytes(ogg_opus_bytes(packets)) as source:
        assert await source.__anext__() == packets[0]
    assert await _collect(source) == []


async def test_ogg_opus_decoded_for_a_volume_trims_pre_skip_and_scales(tmp_path: Path) -> None:
    pcm = sine_pcm(0.4, hz=440.0)
    with OpusEncoder() as encoder:
        packets = [encoder.encode(pcm[i : i + FRAME]) for i in range(0, len(pcm), FRAME)]
    path = tmp_path / "tone.opus"
    path.write_bytes(ogg_opus_bytes(packets, pre_skip=312))
    full = b"".join(await _collect(OggOpusSource.from_file(path).decoded()))
    half = open_audio_file(path, volume=0.5)
    assert isinstance(half, PcmSource) and half.volume == 0.5
    halved = b"".join(await _collect(half))
    # 20 frames of 960 samples, less the 312 samples of pre-skip, padded to whole frames.
    assert len(full) == len(halved) == 20 * FRAME
    assert full[(20 * 960 - 312) * 4 :] == bytes(312 * 4)
    loud, quiet = _samples(full), _samples(halved)
    assert all(abs(q - v * 0.5) <= 1 for v, q in zip(loud, quiet, strict=True))
    assert isinstance(open_audio_file(path), OggOpusSource)  # volume 1.0: passthrough


# -- PyAV ------------------------------------------------------------------------------------------


async def test_missing_av_extra_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "av", None)  # makes ``import av`` fail, installed or not
    with pytest.raises(AudioExtraMissing, match=r"discore-voice\[av\]") as info:
        AvSource(tmp_path / "song.mp3")
    assert isinstance(info.value, NativeLibraryMissing)
    assert info.value.extra == "av"
    assert "pip install 'discore-voice[av]'" in str(info.value)


def _write_wav(path: Path, pcm: bytes, *, rate: int, channels: int) -> None:
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(pcm)


@needs_av
async def test_av_decodes_a_wav_unchanged(tmp_path: Path) -> None:
    pcm = sine_pcm(0.5, hz=440.0)
    path = tmp_path / "tone.wav"
    _write_wav(path, pcm, rate=48000, channels=2)
    source = AvSource(path, volume=1.0)
    assert source.kind is SourceKind.PCM
    frames = await _collect(source)
    assert all(len(f) == FRAME for f in frames)
    decoded = b"".join(frames)
    assert decoded[: len(pcm)] == pcm
    assert decoded[len(pcm) :] == bytes(len(decoded) - len(pcm))


@needs_av
async def test_av_resamples_mono_44k_to_48k_stereo(tmp_path: Path) -> None:
    step = 2 * math.pi * 440 / 44100
    mono = array.array("h", [round(9000 * math.sin(step * i)) for i in range(44100)])
    if sys.byteorder == "big":
        mono.byteswap()
    path = tmp_path / "mono.wav"
    _write_wav(path, mono.tobytes(), rate=44100, channels=1)
    async with AvSource(path, volume=0.5) as source:
        decoded = b"".join(await _collect(source))
    seconds = len(decoded) / (48000 * 4)
    assert 1.0 <= seconds <= 1.03
    left, right = channel(decoded, 0), channel(decoded, 1)
    assert correlation(left, right) > 0.999
    assert abs(zero_crossing_frequency(left[1000:40000]) - 440) < 5
    # Volume 0.5 of 9000, after FFmpeg's mono-to-stereo upmix at -3 dB per channel.
    assert 9000 * 0.5 * 0.70 < max(left) < 9000 * 0.5 * 0.72


@needs_av
async def test_av_cannot_decode_garbage(tmp_path: Path) -> None:
    path = tmp_path / "noise.mp3"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(AudioSourceError, match=r"noise\.mp3: (PyAV cannot|has no audio)"):
        await _collect(AvSource(path))


@needs_av
async def test_av_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "gone.flac"
    with pytest.raises(AudioSourceError, match=r"gone\.flac: no such file"):
        await _collect(AvSource(path))


@needs_av
async def test_av_from_file_and_from_bytes_decode_like_the_constructor(tmp_path: Path) -> None:
    pcm = sine_pcm(0.3, hz=440.0)
    path = tmp_path / "tone.wav"
    _write_wav(path, pcm, rate=48000, channels=2)
    from_file = b"".join(await _collect(AvSource.from_file(path, volume=1.0)))
    from_bytes = b"".join(await _collect(AvSource.from_bytes(path.read_bytes(), name="tone")))
    assert from_file[: len(pcm)] == from_bytes[: len(pcm)] == pcm
    with pytest.raises(AudioSourceError, match=r"^memo: PyAV cannot open it"):
        AvSource.from_bytes(b"this is not audio" * 20, name="memo")  # checked at once
    with pytest.raises(UsageError, match="needs bytes"):
        AvSource.from_bytes("tone.wav")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match=r"PcmSource\.from_iterable"):
        AvSource.from_iterable(_collect_nothing())


async def _collect_nothing() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover - an async generator that yields nothing


@needs_av
@pytest.mark.parametrize(
    ("content", "problem"),
    [(b"", "is empty"), (b"just some text, not audio\n" * 40, "PyAV cannot open it")],
)
def test_open_audio_file_refuses_what_is_not_audio_before_anything_plays(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    path = tmp_path / "notes.mp3"
    path.write_bytes(content)
    with pytest.raises(AudioSourceError, match=rf"notes\.mp3: {problem}"):
        open_audio_file(path)


@needs_av
def test_open_audio_file_accepts_real_audio_and_passes_ogg_opus_through(tmp_path: Path) -> None:
    wav = tmp_path / "tone.wav"
    _write_wav(wav, sine_pcm(0.2, hz=440.0), rate=48000, channels=2)
    assert isinstance(open_audio_file(wav), AvSource)
    opus = tmp_path / "tone.opus"
    opus.write_bytes(ogg_opus_bytes([b"\xfc\x01"] * 5))
    assert isinstance(open_audio_file(opus), OggOpusSource)


@needs_av
async def test_av_plays_a_url(tmp_path: Path) -> None:
    """URL input: FFmpeg streams it (here from a loopback HTTP server) as it would a file."""
    pcm = sine_pcm(0.3, hz=440.0)
    _write_wav(tmp_path / "tone.wav", pcm, rate=48000, channels=2)

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(tmp_path))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/tone.wav"
        decoded = b"".join(await _collect(AvSource.from_file(url)))
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert decoded[: len(pcm)] == pcm


def _encode_with_av(path: Path, codec: str, pcm: bytes) -> None:
    import av  # type: ignore[import-not-found,unused-ignore]

    container = av.open(str(path), "w")
    try:
        stream = container.add_stream(codec, rate=48000, layout="stereo")
        frame = av.AudioFrame(format="s16", layout="stereo", samples=len(pcm) // 4)
        frame.planes[0].update(pcm)
        frame.sample_rate = 48000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    finally:
        container.close()


@needs_av
@pytest.mark.parametrize(("codec", "suffix"), [("flac", "flac"), ("mp3", "mp3"), ("aac", "m4a")])
async def test_av_plays_compressed_formats(tmp_path: Path, codec: str, suffix: str) -> None:
    pcm = sine_pcm(1.0, hz=440.0)
    path = tmp_path / f"tone.{suffix}"
    _encode_with_av(path, codec, pcm)
    decoded = b"".join(await _collect(AvSource(path)))
    assert 1.0 <= len(decoded) / (48000 * 4) <= 1.1
    left = channel(decoded)
    assert abs(zero_crossing_frequency(left[4800:43200]) - 440) < 5
    match = find_alignment(channel(pcm), left, max_lag=3000)
    assert match.correlation > 0.95
