"""Things ``play()`` can play: async iterators of 20 ms frames, PCM to encode or Opus to send as is.

A source only produces frames; pacing, encoding and sending belong to the connection. That
split is what lets a pre-encoded Opus file skip the encoder entirely (:class:`OggOpusSource`
says ``kind is SourceKind.OPUS``), and lets one connection play PCM from bytes, a file, an
async generator or any format PyAV decodes through the same send path.

Blocking work happens in worker threads (``trio.to_thread.run_sync``): file reads and PyAV's
decoding. Container parsing stays on the trio thread, in the sans-IO
:mod:`discore_voice._audio.ogg`: it costs microseconds per page, and doing it in a worker
would only expose it to the GIL's 5 ms switch interval instead.

Files are opened for each read and closed before the read returns, so an abandoned source
holds no file descriptor and cannot leak one; only :class:`AvSource` keeps a decoder open
between reads, and :meth:`AudioSource.aclose` (or ``async with``) frees it.
"""

from __future__ import annotations

import abc
import enum
import io
import math
import os
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Generator, Iterator
from types import ModuleType, TracebackType
from typing import Any, ClassVar, Final, Protocol, Self

import trio

from .._core.pcm_buffer import BYTES_PER_SAMPLE, PCM_BLOCK_SIZE, apply_volume, check_gain
from .._errors import NativeLibraryMissing, UsageError
from .ogg import (
    OPUS_FRAME_SAMPLES,
    AudioSourceError,
    OggFormatError,
    OggOpusReader,
    UnsupportedAudio,
    last_granule_position,
)
from .opus import OpusDecoder

__all__ = [
    "AV_INSTALL_COMMAND",
    "AudioExtraMissing",
    "AudioSource",
    "AudioSourceError",
    "AvSource",
    "OggFormatError",
    "OggOpusSource",
    "PcmSource",
    "SourceKind",
    "UnsupportedAudio",
    "open_audio_file",
]

#: What installs the optional PyAV dependency.
AV_INSTALL_COMMAND: Final = "python -m pip install 'discore-voice[av]'"
# Half a second of PCM per worker-thread hop: few hops, and a pause or stop reacts quickly.
_PCM_READ_SIZE: Final = 25 * PCM_BLOCK_SIZE
# Ogg pages are read 64 KiB at a time: about four seconds of 128 kbps Opus per hop.
_OGG_READ_SIZE: Final = 64 * 1024
# An Ogg page is at most 65 307 bytes, so the last 64 KiB hold the last page's header.
_TAIL_BYTES: Final = 64 * 1024
_SAMPLE_RATE: Final = 48_000

PathLike = str | os.PathLike[str]


class AudioExtraMissing(NativeLibraryMissing):
    """An optional extra (PyAV, for decoding arbitrary audio files) is not installed."""

    def __init__(self, extra: str, library: str, install_command: str) -> None:
        super().__init__(f"{library} (the discore-voice[{extra}] extra)", install_command)
        self.extra = extra


class SourceKind(enum.Enum):
    """What a source's frames are, which decides whether the sender runs the encoder."""

    #: 3840-byte frames of 48 kHz stereo s16le PCM: the connection encodes them.
    PCM = "pcm"
    #: Opus packets of 20 ms: the connection sends them byte for byte.
    OPUS = "opus"


class AudioSource(abc.ABC):
    """An async iterator of frames, played once; ``async with`` it to free what it holds early."""

    kind: ClassVar[SourceKind]

    def __init__(self, name: str) -> None:
        self._name = name
        self._playing = False  # a track plays it now
        self._played = False  # a track started it once: it must rewind to play again

    @property
    def name(self) -> str:
        """What error messages call this source: a path, or a label the caller chose."""
        return self._name

    @property
    def needs_encoding(self) -> bool:
        """True for PCM, which the connection encodes; Opus sources pass straight through."""
        return self.kind is SourceKind.PCM

    @property
    def seekable(self) -> bool:
        """Whether :meth:`seek` works: files and bytes can, streams cannot."""
        return False

    @property
    def duration(self) -> float | None:
        """Its length in seconds, once known (a stream's never is)."""
        return None

    async def seek(self, seconds: float) -> None:
        """Continue from ``seconds`` into the audio (0 rewinds, even after the end or
        :meth:`aclose`: a seekable source reopens what it needs).

        Past the end, the next frame ends the iteration. A source that cannot seek raises
        :class:`UsageError`, as does a negative or non-finite position.
        """
        raise UsageError(f"{self._name} is a stream and cannot seek")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._name!r}>"

    def __aiter__(self) -> Self:
        return self

    @abc.abstractmethod
    async def __anext__(self) -> bytes:
        """The next frame; ``StopAsyncIteration`` at the end."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release what the source holds; iterating afterwards ends at once. Idempotent."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def check_position(seconds: object) -> float:
    """A seek target: a finite, non-negative number of seconds."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise UsageError(f"a position must be a number of seconds, got {type(seconds).__name__}")
    value = float(seconds)
    if not math.isfinite(value) or value < 0:
        raise UsageError(f"a position must be a finite number of seconds >= 0, got {seconds!r}")
    return value


def _frame_offset(seconds: float) -> int:
    """The byte offset of the 20 ms PCM frame ``seconds`` falls in."""
    return int(seconds * 50) * PCM_BLOCK_SIZE


def _source_name(path: PathLike) -> str:
    return os.fspath(path)


def _file_error(name: str, exc: OSError) -> AudioSourceError:
    if isinstance(exc, FileNotFoundError):
        return AudioSourceError(name, "no such file")
    if isinstance(exc, IsADirectoryError):
        return AudioSourceError(name, "is a directory, not an audio file")
    if isinstance(exc, PermissionError):
        return AudioSourceError(name, "permission denied")
    return AudioSourceError(name, f"cannot be read: {exc.strerror or exc}")


def _read_at(path: PathLike, offset: int, size: int) -> tuple[bytes, int]:
    """Read ``size`` bytes at ``offset``; also return the file's size (runs in a worker)."""
    with open(path, "rb") as file:
        total = os.fstat(file.fileno()).st_size
        file.seek(offset)
        return file.read(size), total


def _read_tail(path: PathLike) -> bytes:
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        file.seek(max(0, size - _TAIL_BYTES))
        return file.read(_TAIL_BYTES)


def _as_chunk(item: object, name: str) -> bytes:
    if isinstance(item, bytes):
        return item
    try:
        return memoryview(item).cast("B").tobytes()  # type: ignore[arg-type]
    except TypeError:
        raise AudioSourceError(
            name, f"yielded a {type(item).__name__}; PCM chunks must be bytes-like"
        ) from None


class _Chunks(Protocol):
    """Where a source's raw bytes come from; ``b""`` means the end."""

    async def read(self) -> bytes: ...

    async def close(self) -> None: ...


class _BytesChunks:
    def __init__(self, data: bytes, size: int) -> None:
        self._data = memoryview(data)
        self._offset = 0
        self._size = size

    @property
    def length(self) -> int:
        return len(self._data)

    def rewind(self, offset: int) -> None:
        self._offset = offset

    def tail(self) -> bytes:
        return self._data[-_TAIL_BYTES:].tobytes()

    async def read(self) -> bytes:
        start = self._offset
        self._offset = start + self._size
        return self._data[start : start + self._size].tobytes()

    async def close(self) -> None:
        self._offset = len(self._data)


class _FileChunks:
    def __init__(self, path: PathLike, name: str, size: int, *, whole_samples: bool) -> None:
        self._path = path
        self._name = name
        self._offset = 0
        self._size = size
        self._whole_samples = whole_samples
        self._done = False
        self.length: int | None = None  # the file's size, once read

    async def read(self) -> bytes:
        if self._done:
            return b""
        try:
            data, total = await trio.to_thread.run_sync(
                _read_at, self._path, self._offset, self._size
            )
        except OSError as exc:
            self._done = True
            raise _file_error(self._name, exc) from exc
        if self._offset == 0 and self._whole_samples and total % BYTES_PER_SAMPLE:
            # Known before anything plays, so refuse the file rather than play most of it.
            self._done = True
            raise AudioSourceError(
                self._name,
                f"is {total} bytes, not a whole number of {BYTES_PER_SAMPLE}-byte stereo s16le "
                "samples; raw PCM files must be 48 kHz, 16-bit, stereo, without a header",
            )
        self._offset += len(data)
        self.length = total
        if not data:
            self._done = True
        return data

    async def close(self) -> None:
        self._done = True

    def rewind(self, offset: int) -> None:
        self._offset = offset
        self._done = False

    async def read_tail(self) -> bytes:
        try:
            return await trio.to_thread.run_sync(_read_tail, self._path)
        except OSError as exc:
            raise _file_error(self._name, exc) from exc


class _IterChunks:
    def __init__(self, chunks: AsyncIterable[Any], name: str) -> None:
        self._iterator: AsyncIterator[Any] | None = aiter(chunks)
        self._name = name

    async def read(self) -> bytes:
        iterator = self._iterator
        while iterator is not None:
            try:
                item = await anext(iterator)
            except StopAsyncIteration:
                self._iterator = None
                return b""
            chunk = _as_chunk(item, self._name)
            if chunk:
                return chunk
        return b""

    async def close(self) -> None:
        iterator, self._iterator = self._iterator, None
        closer = getattr(iterator, "aclose", None)
        if closer is not None:
            await closer()


class PcmSource(AudioSource):
    """48 kHz stereo s16le PCM, re-cut into 20 ms frames; the last one is padded with silence.

    Input arrives in blocks of any size (an async iterator may yield a few bytes at a time);
    whatever does not fill a frame waits for the next block. ``volume`` can change while it
    plays: a connection applies it as it encodes each frame, two frames ahead of sending, so a
    change goes out two frames after the next one sent (40-60 ms, measured by
    ``benchmarks/volume_latency.py``), not after the half second its send buffer holds. (Iterated
    directly, the frames come out scaled.)
    """

    kind = SourceKind.PCM

    def __init__(self, chunks: _Chunks, *, name: str, volume: float = 1.0) -> None:
        super().__init__(name)
        self._chunks = chunks
        self._volume = check_gain(volume)
        self._gain_deferred = False
        self._pending = bytearray()
        self._eof = False
        self._closed = False

    @classmethod
    def from_bytes(cls, data: bytes, *, volume: float = 1.0, name: str = "<PCM bytes>") -> Self:
        """Play PCM held in memory."""
        chunk = _as_chunk(data, name)
        if len(chunk) % BYTES_PER_SAMPLE:
            raise AudioSourceError(
                name,
                f"is {len(chunk)} bytes, not a whole number of {BYTES_PER_SAMPLE}-byte stereo "
                "s16le samples (48 kHz, 16-bit, 2 channels)",
            )
        return cls(_BytesChunks(chunk, _PCM_READ_SIZE), name=name, volume=volume)

    @classmethod
    def from_file(cls, path: PathLike, *, volume: float = 1.0) -> Self:
        """Play a headerless PCM file (``ffmpeg -f s16le -ar 48000 -ac 2`` output)."""
        name = _source_name(path)
        return cls(
            _FileChunks(path, name, _PCM_READ_SIZE, whole_samples=True), name=name, volume=volume
        )

    @classmethod
    def from_iterable(
        cls, chunks: AsyncIterable[bytes], *, volume: float = 1.0, name: str = "<PCM stream>"
    ) -> Self:
        """Play PCM as a producer delivers it, in blocks of any size."""
        if not isinstance(chunks, AsyncIterable):
            raise UsageError(
                f"from_iterable() needs an async iterable of bytes, got {type(chunks).__name__}"
            )
        return cls(_IterChunks(chunks, name), name=name, volume=volume)

    @classmethod
    def from_channel(
        cls,
        channel: trio.MemoryReceiveChannel[bytes],
        *,
        volume: float = 1.0,
        name: str = "<PCM channel>",
    ) -> Self:
        """Play the PCM blocks sent into a trio memory channel, until its sending side closes.

        The connection reads a few frames ahead and no further, so a producer sending into a
        bounded channel (``trio.open_memory_channel(0)``) is held back to real time: it can
        stream a TTS engine's output without buffering all of it.
        """
        if not isinstance(channel, trio.MemoryReceiveChannel):
            raise UsageError(
                f"from_channel() needs a trio.MemoryReceiveChannel, got {type(channel).__name__}"
            )
        return cls(_IterChunks(channel, name), name=name, volume=volume)

    @property
    def seekable(self) -> bool:
        """Whether :meth:`seek` works: files and bytes can, streams cannot."""
        return isinstance(self._chunks, _BytesChunks | _FileChunks | _SeekableChunks)

    @property
    def duration(self) -> float | None:
        """Its length in seconds, once known (for a file, after its first read)."""
        chunks = self._chunks
        if isinstance(chunks, _SeekableChunks):
            return chunks.duration
        if isinstance(chunks, _BytesChunks | _FileChunks) and chunks.length is not None:
            return chunks.length / (PCM_BLOCK_SIZE * 50)
        return None

    async def seek(self, seconds: float) -> None:
        """Continue from the 20 ms frame that ``seconds`` falls in (0 rewinds, even after the
        end); see :meth:`AudioSource.seek`."""
        position = check_position(seconds)
        chunks = self._chunks
        if isinstance(chunks, _BytesChunks | _FileChunks):
            chunks.rewind(_frame_offset(position))
        elif isinstance(chunks, _SeekableChunks):
            await chunks.seek_to(position)
        else:
            await super().seek(position)
        self._pending.clear()
        self._eof = False
        self._closed = False

    @property
    def volume(self) -> float:
        """Linear gain: 1.0 unchanged, 0.5 about -6 dB, 0.0 mute; loud samples clip."""
        return self._volume

    @volume.setter
    def volume(self, value: float) -> None:
        self._volume = check_gain(value)

    async def __anext__(self) -> bytes:
        if self._closed:
            raise StopAsyncIteration
        pending = self._pending
        while len(pending) < PCM_BLOCK_SIZE and not self._eof:
            try:
                chunk = await self._chunks.read()
            except Exception:
                # A failed source plays no further; release its producer (a user's async
                # generator left suspended would otherwise be finalised at some random later
                # point, outside any nursery).
                self._closed = True
                await self._chunks.close()
                raise
            if chunk:
                pending += chunk
            else:
                self._eof = True
        if len(pending) >= PCM_BLOCK_SIZE:
            frame = bytes(pending[:PCM_BLOCK_SIZE])
            del pending[:PCM_BLOCK_SIZE]
        elif pending:
            self._closed = True
            stray = len(pending) % BYTES_PER_SAMPLE
            if stray:
                raise AudioSourceError(
                    self._name,
                    f"ends with {stray} stray bytes, not a whole {BYTES_PER_SAMPLE}-byte stereo "
                    "s16le sample; the PCM before them was played",
                )
            frame = bytes(pending) + bytes(PCM_BLOCK_SIZE - len(pending))
            pending.clear()
        else:
            self._closed = True
            raise StopAsyncIteration
        volume = self._volume
        if self._gain_deferred or volume == 1.0:
            return frame
        return apply_volume(frame, volume)

    def _defer_gain(self) -> None:
        """Frames come out unscaled: the connection playing this source applies :attr:`volume`
        as it encodes each frame, so a change is heard after the two frames encoded ahead
        (40-60 ms), not after everything buffered ahead of the encoder has played."""
        self._gain_deferred = True

    async def aclose(self) -> None:
        """Stop reading: the next frame ends the iteration. Idempotent."""
        self._closed = True
        self._pending.clear()
        await self._chunks.close()


class _SeekableChunks(abc.ABC):
    """Chunks that can start again at a time (decoders): the PCM source delegates its seeks."""

    @property
    @abc.abstractmethod
    def duration(self) -> float | None: ...

    @abc.abstractmethod
    async def seek_to(self, seconds: float) -> None: ...


class OggOpusSource(AudioSource):
    """The Opus packets of an Ogg Opus file, byte for byte: no decoding, no re-encoding.

    The file must hold 20 ms frames (what libopus, opusenc and ffmpeg produce by default);
    longer packets made of 20 ms frames are split exactly, and anything else fails with
    :class:`UnsupportedAudio` naming the file, and is never sent at the wrong rate.
    """

    kind = SourceKind.OPUS

    def __init__(self, chunks: _BytesChunks | _FileChunks, *, name: str) -> None:
        super().__init__(name)
        self._chunks = chunks
        self._reader = OggOpusReader(name)
        self._packets: deque[bytes] = deque()
        self._eof = False
        self._closed = False
        self._to_drop = 0  # packets before a seek target, still to pass over
        self._last_granule: int | None = None
        self._length_known = False

    @classmethod
    def from_file(cls, path: PathLike) -> Self:
        """Stream an Ogg Opus file, read in chunks in a worker thread as it plays."""
        name = _source_name(path)
        return cls(_FileChunks(path, name, _OGG_READ_SIZE, whole_samples=False), name=name)

    @classmethod
    def from_bytes(cls, data: bytes, *, name: str = "<Ogg Opus bytes>") -> Self:
        """An Ogg Opus file already in memory; ``name`` labels it in error messages."""
        return cls(_BytesChunks(_as_chunk(data, name), _OGG_READ_SIZE), name=name)

    @property
    def seekable(self) -> bool:
        """Always: seeking reads the file again from its start, counting granule positions."""
        return True

    @property
    def duration(self) -> float | None:
        """The last page's granule position less the pre-skip, once the head was read."""
        head = self._reader.head
        if self._last_granule is None or head is None:
            return None
        return max(0, self._last_granule - head.pre_skip) / _SAMPLE_RATE

    async def seek(self, seconds: float) -> None:
        """Continue from the packet holding ``seconds`` (see :meth:`AudioSource.seek`).

        The target's granule position is the pre-skip plus ``seconds`` at 48 kHz; every packet
        is 20 ms (960 granules), so the packets before it are counted off as the file is read
        again from its start: cheap next to decoding, and exact.
        """
        position = check_position(seconds)
        head = self._reader.head
        pre_skip = head.pre_skip if head is not None else 0
        self._reader = OggOpusReader(self._name)
        self._chunks.rewind(0)
        self._packets.clear()
        self._eof = False
        self._closed = False
        target = pre_skip + round(position * _SAMPLE_RATE)
        self._to_drop = target // OPUS_FRAME_SAMPLES if position else 0

    async def _learn_length(self) -> None:
        self._length_known = True
        chunks = self._chunks
        tail = await chunks.read_tail() if isinstance(chunks, _FileChunks) else chunks.tail()
        self._last_granule = last_granule_position(tail)

    async def __anext__(self) -> bytes:
        packets = self._packets
        while True:
            while not packets:
                if self._closed or self._eof:
                    raise StopAsyncIteration
                try:
                    if not self._length_known:
                        await self._learn_length()
                    chunk = await self._chunks.read()
                    if chunk:
                        packets.extend(self._reader.feed(chunk))
                    else:
                        self._eof = True
                        self._reader.close()
                except BaseException:
                    self._closed = True
                    raise
            if not self._to_drop:
                return packets.popleft()
            dropped = min(self._to_drop, len(packets))
            for _ in range(dropped):
                packets.popleft()
            self._to_drop -= dropped

    async def aclose(self) -> None:
        """Stop reading: the next frame ends the iteration. Idempotent."""
        self._closed = True
        self._packets.clear()
        await self._chunks.close()

    def decoded(self, *, volume: float = 1.0) -> PcmSource:
        """This file as PCM, decoded with libopus, for a gain other than 1.0.

        Passthrough sends the packets as they are, so it cannot change the level: asking for a
        volume is asking for decoding (about 50 µs a frame) and re-encoding by the connection,
        never for a setting quietly ignored. The stream's pre-skip (the encoder's delay) is
        trimmed, as players do. Use this source or the one returned, not both.
        """
        return PcmSource(_DecodedOpusChunks(self), name=self.name, volume=check_gain(volume))


class _DecodedOpusChunks(_SeekableChunks):
    """PCM from an :class:`OggOpusSource`'s packets, about half a second per read."""

    def __init__(self, source: OggOpusSource) -> None:
        self._source = source
        self._decoder: OpusDecoder | None = None
        self._to_skip: int | None = None  # bytes of pre-skip still to drop

    @property
    def duration(self) -> float | None:
        return self._source.duration

    async def seek_to(self, seconds: float) -> None:
        await self._source.seek(seconds)
        if self._decoder is not None:
            self._decoder.close()
            self._decoder = None
        # From the start, the pre-skip is trimmed again; elsewhere the packets are exact.
        self._to_skip = None if seconds == 0 else 0

    async def read(self) -> bytes:
        packets: list[bytes] = []
        async for packet in self._source:
            packets.append(packet)
            if len(packets) >= _DECODE_BATCH:
                break
        if not packets:
            return b""
        if self._decoder is None:
            self._decoder = OpusDecoder()
        if self._to_skip is None:
            head = self._source._reader.head
            self._to_skip = (head.pre_skip if head is not None else 0) * BYTES_PER_SAMPLE
        pcm = await trio.to_thread.run_sync(_decode_all, self._decoder, packets)
        skip = self._to_skip or 0
        if skip:
            self._to_skip = max(0, skip - len(pcm))
            pcm = pcm[skip:]
        return pcm

    async def close(self) -> None:
        await self._source.aclose()
        if self._decoder is not None:
            self._decoder.close()
            self._decoder = None


def _decode_all(decoder: OpusDecoder, packets: list[bytes]) -> bytes:
    return b"".join(decoder.decode(packet) for packet in packets)


#: Packets decoded per worker-thread hop: half a second of 20 ms frames.
_DECODE_BATCH: Final = 25


def _import_av() -> ModuleType:
    try:
        import av  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        raise AudioExtraMissing("av", "PyAV", AV_INSTALL_COMMAND) from None
    module: ModuleType = av
    return module


def _open_container(av: Any, target: _AvTarget, name: str) -> Any:
    av_errors = (av.FFmpegError, OSError, ValueError, IndexError)
    if isinstance(target, bytes):
        target = io.BytesIO(target)
    elif not isinstance(target, io.BytesIO):
        target = os.fspath(target)
    try:
        return av.open(target, mode="r")
    except av_errors as exc:
        if isinstance(exc, FileNotFoundError):
            raise AudioSourceError(name, "no such file") from None
        raise AudioSourceError(name, f"PyAV cannot open it: {exc}") from None


def _probe(av: Any, target: _AvTarget, name: str) -> None:
    """Open ``target`` and decode its first audio frame, or raise what playing it would.

    Blocking (a few milliseconds for a local file), like :func:`open_audio_file`'s sniff: a
    file that is not audio at all must fail where the user chose it, before anything joins.
    """
    blocks = _decode_blocks(av, target, name)
    try:
        if not next(blocks, b""):
            raise UnsupportedAudio(name, "has no audio to play (empty, or nothing decodes)")
    finally:
        blocks.close()


def _decode_blocks(
    av: Any, target: _AvTarget, name: str, start: float = 0.0, facts: _AvFacts | None = None
) -> Generator[bytes, None, None]:
    """Decode and resample to 48 kHz stereo s16 in a worker; yields about half a second a time.

    A generator, so the container stays open between thread hops and is closed by the
    generator's ``finally`` (from :meth:`AvSource.aclose`, or at garbage collection). ``start``
    seeks the demuxer to the keyframe before it, then drops the samples decoded before it.
    """
    av_errors = (av.FFmpegError, OSError, ValueError, IndexError)
    container = _open_container(av, target, name)
    try:
        if not container.streams.audio:
            raise UnsupportedAudio(name, "has no audio stream")
        stream = container.streams.audio[0]
        if facts is not None and container.duration is not None:
            facts.duration = container.duration / 1_000_000  # AV_TIME_BASE
        resampler = av.AudioResampler(format="s16", layout="stereo", rate=_SAMPLE_RATE)
        block = bytearray()
        to_drop: int | None = None if start else 0  # bytes decoded before ``start``
        try:
            if start:
                container.seek(int(start * 1_000_000))  # AV_TIME_BASE, to the keyframe before
            for frame in container.decode(stream):
                if to_drop is None:
                    began = float(frame.time) if frame.time is not None else 0.0
                    to_drop = max(0, round((start - began) * _SAMPLE_RATE)) * BYTES_PER_SAMPLE
                for out in resampler.resample(frame):
                    # A plane may be padded past its samples for alignment: cut it to size.
                    block += bytes(out.planes[0])[: out.samples * BYTES_PER_SAMPLE]
                if to_drop:
                    dropped = min(to_drop, len(block))
                    del block[:dropped]
                    to_drop -= dropped
                if len(block) >= _PCM_READ_SIZE:
                    yield bytes(block)
                    block.clear()
            for out in resampler.resample(None):
                block += bytes(out.planes[0])[: out.samples * BYTES_PER_SAMPLE]
            if to_drop:
                del block[:to_drop]
        except av_errors as exc:
            raise AudioSourceError(name, f"PyAV cannot decode it: {exc}") from None
        if block:
            yield bytes(block)
    finally:
        container.close()


class _AvFacts:
    """What the decoder learned about the file, written from its worker thread."""

    duration: float | None = None


def _next_block(blocks: Iterator[bytes]) -> bytes:
    return next(blocks, b"")


#: What PyAV opens: a path or URL, or the bytes of a whole file.
_AvTarget = str | os.PathLike[str] | bytes | io.BytesIO


class _AvChunks(_SeekableChunks):
    def __init__(self, av: ModuleType, path: _AvTarget, name: str) -> None:
        self._blocks: Iterator[bytes] | None = None
        self._av = av
        self._path = path
        self._name = name
        self._done = False
        self._start = 0.0
        self._facts = _AvFacts()

    @property
    def duration(self) -> float | None:
        return self._facts.duration

    async def read(self) -> bytes:
        if self._done:
            return b""
        if self._blocks is None:
            self._blocks = _decode_blocks(
                self._av, self._path, self._name, self._start, self._facts
            )
        try:
            block = await trio.to_thread.run_sync(_next_block, self._blocks)
        except BaseException:
            self._done = True
            raise
        if not block:
            self._done = True
        return block

    async def seek_to(self, seconds: float) -> None:
        await self.close()
        self._start = seconds
        self._done = False

    async def close(self) -> None:
        self._done = True
        blocks, self._blocks = self._blocks, None
        if blocks is not None and hasattr(blocks, "close"):
            await trio.to_thread.run_sync(blocks.close)


class AvSource(PcmSource):
    """Any audio file FFmpeg reads (mp3, flac, wav, ogg, m4a...), via the optional PyAV extra.

    Decoded and resampled to 48 kHz stereo s16 in a worker thread, then encoded by the
    connection like any PCM. Needs ``pip install 'discore-voice[av]'``; without it, creating
    the source raises :class:`AudioExtraMissing` naming the extra.
    """

    def __init__(self, path: PathLike, *, volume: float = 1.0) -> None:
        av = _import_av()
        name = _source_name(path)
        super().__init__(_AvChunks(av, path, name), name=name, volume=volume)

    @classmethod
    def from_file(cls, path: PathLike, *, volume: float = 1.0) -> Self:
        """Play a file (or a URL FFmpeg can stream, such as ``https://...``), decoded by PyAV.

        The same as ``AvSource(path)``; checked when it plays. :func:`open_audio_file` checks a
        file at once instead, and passes Ogg Opus through.
        """
        return cls(path, volume=volume)

    @classmethod
    def from_bytes(cls, data: bytes, *, volume: float = 1.0, name: str = "<audio bytes>") -> Self:
        """Play a whole audio file held in memory (mp3, flac, wav...), decoded by PyAV.

        Checked at once: bytes that are not audio raise :class:`AudioSourceError` here.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise UsageError(f"from_bytes() needs bytes, got {type(data).__name__}")
        chunk = bytes(data)
        av = _import_av()
        _probe(av, chunk, name)
        source = cls.__new__(cls)
        PcmSource.__init__(source, _AvChunks(av, chunk, name), name=name, volume=volume)
        return source

    @classmethod
    def from_iterable(
        cls, chunks: AsyncIterable[bytes], *, volume: float = 1.0, name: str = "<PCM stream>"
    ) -> Self:
        """Not for PyAV: a stream of raw PCM blocks is :meth:`PcmSource.from_iterable`'s job."""
        raise UsageError(
            "AvSource decodes files; for a stream of 48 kHz stereo s16le PCM blocks use "
            "PcmSource.from_iterable()"
        )


def open_audio_file(path: PathLike, *, volume: float = 1.0) -> AudioSource:
    """The right source for a file: Ogg Opus passes through untouched, anything else is decoded.

    Sniffs the first page rather than trusting the extension, because ``.ogg`` also holds
    Vorbis and ``.opus`` files are sometimes misnamed; a file of another format is opened and its
    first audio decoded with PyAV at once, so a text or empty file fails here, before anything
    joins. These are blocking calls, acceptable where a user chooses a file, not in the send
    loop. An Ogg Opus file with a ``volume`` other than 1.0 is decoded
    (:meth:`OggOpusSource.decoded`): passthrough cannot change the level. A missing or
    unreadable file raises :class:`AudioSourceError` naming it; a non-Opus file without the
    ``av`` extra raises
    :class:`AudioExtraMissing`.
    """
    name = _source_name(path)
    try:
        with open(path, "rb") as file:
            head = file.read(_SNIFF_BYTES)
    except OSError as exc:
        raise AudioSourceError(name, exc.strerror or "cannot be read") from exc
    if head.startswith(b"OggS") and b"OpusHead" in head:
        ogg = OggOpusSource.from_file(path)
        return ogg if check_gain(volume) == 1.0 else ogg.decoded(volume=volume)
    if not head:
        raise AudioSourceError(name, "is empty")
    _probe(_import_av(), path, name)
    return AvSource(path, volume=volume)


# The first Ogg page holds OpusHead; it is 47 bytes in practice, well under this.
_SNIFF_BYTES: Final = 4096
