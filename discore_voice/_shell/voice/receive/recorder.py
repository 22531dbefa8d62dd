"""Recording a call: one file per member, aligned, streamed to disk as it is heard.

``async with record(rx, "calls/today") as recording:`` writes ``<user id>.ogg`` (Opus exactly as
the member sent it, no re-encoding) or ``<user id>.wav`` (decoded PCM) for every member heard,
and ``mixed.wav`` if asked. Every file starts when the recording starts and ends when it ends,
with silence wherever its member was quiet, so the files line up when played together: the
20 ms tick of the receiver is the clock, and each frame is written at its tick. A backlog (audio
held until the server named its sender) is placed just before the tick it arrived in, where it
was spoken.

Nothing is kept in memory beyond half a second per track: frames are gathered for
:data:`FLUSH_TICKS` ticks and written by a worker thread, so a slow disk stalls neither the
receive task nor trio's. A lost packet becomes Ogg Opus's lost-frame packet (the player conceals
it) or, in WAV, the decoder's concealment.
"""

from __future__ import annotations

import functools
import logging
import os
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import trio

from ...._audio.ogg_writer import OggOpusWriter, WavWriter
from ...._core.receive.events import ReceivedAudio
from ...._core.snowflake import Snowflake
from ...._errors import UsageError
from .receiver import MixedAudio, VoiceReceiver
from .stream import AudioStream

__all__ = ["FLUSH_TICKS", "Recording", "RecordingStats", "record"]

#: Ticks gathered before a write: half a second per track at most in memory.
FLUSH_TICKS: Final = 25
#: Frames the recorder's streams may fall behind before losing audio (ten seconds).
_STREAM_FRAMES: Final = 500
_logger = logging.getLogger("discore_voice.record")

Format = Literal["ogg", "wav"]
_Op = Callable[[], None]


@dataclass(frozen=True, slots=True)
class RecordingStats:
    """Per file: 20 ms frames of audio, of silence filled in, and of lost audio concealed."""

    frames: dict[str, int]
    silence: dict[str, int]
    lost: dict[str, int]


class _Track:
    """One file and the position (in ticks from the recording's start) it has reached."""

    __slots__ = ("path", "position", "writer")

    def __init__(self, path: Path, writer: OggOpusWriter | WavWriter) -> None:
        self.path = path
        self.writer = writer
        self.position = 0


class Recording:
    """What :func:`record` yields: the files so far, and what went into them."""

    def __init__(self, directory: Path, audio_format: Format, start_tick: int) -> None:
        self.directory = directory
        self.format: Format = audio_format
        self._start = start_tick
        self._tracks: dict[Snowflake, _Track] = {}
        self._mixed: _Track | None = None
        self._pending: list[_Op] = []
        self._pending_mixed: list[_Op] = []  # its own task writes it: never in the same batch
        self._counts: dict[str, Counter[str]] = {
            "frames": Counter(),
            "silence": Counter(),
            "lost": Counter(),
        }
        self._ticks = 0

    def __repr__(self) -> str:
        return f"<Recording {str(self.directory)!r} {self.format} tracks={len(self._tracks)}>"

    @property
    def files(self) -> dict[Snowflake | Literal["mixed"], Path]:
        """Each member's file (and ``"mixed"``), as far as written."""
        files: dict[Snowflake | Literal["mixed"], Path] = {
            user_id: track.path for user_id, track in self._tracks.items()
        }
        if self._mixed is not None:
            files["mixed"] = self._mixed.path
        return files

    @property
    def seconds(self) -> float:
        """How long the recording is so far (every file is this long when it ends)."""
        return self._ticks * 0.02

    @property
    def stats(self) -> RecordingStats:
        """Frames of audio, silence and concealed loss written to each file so far."""
        return RecordingStats(
            frames=dict(self._counts["frames"]),
            silence=dict(self._counts["silence"]),
            lost=dict(self._counts["lost"]),
        )

    # --- placing frames -----------------------------------------------------------------------

    def _track(self, user_id: Snowflake) -> _Track:
        track = self._tracks.get(user_id)
        if track is None:
            path = self.directory / f"{user_id}.{self.format}"
            writer: OggOpusWriter | WavWriter = (
                OggOpusWriter(path) if self.format == "ogg" else WavWriter(path)
            )
            track = self._tracks[user_id] = _Track(path, writer)
        return track

    def _place(self, frames: list[ReceivedAudio]) -> None:
        """Frames of one member that arrived in one tick, oldest first: they end at that tick."""
        track = self._track(frames[0].user_id)
        name = str(frames[0].user_id)
        end = frames[-1].tick - self._start - 1
        first = max(track.position, end - len(frames) + 1)
        self._fill(track, name, first)
        writer = track.writer
        for frame in frames:
            if isinstance(writer, OggOpusWriter):
                if frame.concealed:
                    self._pending.append(writer.write_lost)
                    self._counts["lost"][name] += 1
                else:
                    self._pending.append(_bind(writer.write, frame.opus))
                    self._counts["frames"][name] += 1
            else:
                assert frame.pcm is not None
                self._pending.append(_bind(writer.write, frame.pcm))
                self._counts["lost" if frame.concealed else "frames"][name] += 1
        track.position = first + len(frames)

    def _place_mixed(self, mixed: MixedAudio) -> None:
        track = self._mixed
        assert track is not None
        self._fill(track, "mixed", mixed.tick - self._start - 1, self._pending_mixed)
        self._pending_mixed.append(_bind(track.writer.write, mixed.pcm))
        self._counts["frames"]["mixed"] += 1
        track.position += 1

    def _fill(self, track: _Track, name: str, until: int, pending: list[_Op] | None = None) -> None:
        gap = until - track.position
        if gap > 0:
            (self._pending if pending is None else pending).append(_bind_silence(track.writer, gap))
            self._counts["silence"][name] += gap
            track.position = until

    def _end(self, tick: int) -> None:
        """Pad every file with silence to the recording's end."""
        until = tick - self._start
        self._ticks = max(self._ticks, until)
        for user_id, track in self._tracks.items():
            self._fill(track, str(user_id), until)
        if self._mixed is not None:
            self._fill(self._mixed, "mixed", until, self._pending_mixed)

    def _take(self) -> list[_Op]:
        pending, self._pending = self._pending, []
        return pending

    def _take_mixed(self) -> list[_Op]:
        pending, self._pending_mixed = self._pending_mixed, []
        return pending

    def _close_all(self) -> None:
        for track in [*self._tracks.values(), *([self._mixed] if self._mixed else [])]:
            try:
                track.writer.close()
            except OSError as exc:  # pragma: no cover - a disk that failed at the very end
                _logger.error("could not finish %s: %s", track.path, exc)


def _bind(write: Callable[[bytes], None], data: bytes) -> _Op:
    def op() -> None:
        write(data)

    return op


def _bind_silence(writer: OggOpusWriter | WavWriter, frames: int) -> _Op:
    def op() -> None:
        writer.write_silence(frames)

    return op


def _run_all(ops: list[_Op]) -> None:
    for op in ops:
        op()


@asynccontextmanager
async def record(
    receiver: VoiceReceiver,
    directory: str | os.PathLike[str],
    *,
    format: Format = "ogg",
    mixed: bool = False,
) -> AsyncIterator[Recording]:
    """Record everyone the receiver hears into ``directory`` until the block ends.

    ``format`` is ``"ogg"`` (Opus as sent, no re-encoding; works with ``decode=False``) or
    ``"wav"`` (48 kHz stereo 16-bit; needs ``decode=True``). ``mixed`` adds ``mixed.wav``, every
    member summed (needs ``decode=True``). Files are complete and playable when the block ends;
    ``directory`` is created if needed, and files of the same names in it are replaced.
    """
    if format not in ("ogg", "wav"):
        raise UsageError('format must be "ogg" or "wav"')
    if not isinstance(mixed, bool):
        raise UsageError("mixed must be True or False")
    if (format == "wav" or mixed) and not receiver.decode:
        raise UsageError("WAV and mixed recordings need decoded audio: vc.receive(decode=True)")
    path = Path(directory)
    await trio.to_thread.run_sync(functools.partial(path.mkdir, parents=True, exist_ok=True))
    recording = Recording(path, format, receiver.tick)
    frames = receiver.all(buffer=_STREAM_FRAMES)
    mixed_stream = receiver.mixed(buffer=_STREAM_FRAMES) if mixed else None
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_write_frames, recording, frames)
            if mixed_stream is not None:
                writer = await trio.to_thread.run_sync(WavWriter, path / "mixed.wav")
                recording._mixed = _Track(path / "mixed.wav", writer)
                nursery.start_soon(_write_mixed, recording, mixed_stream)
            try:
                yield recording
            finally:
                nursery.cancel_scope.cancel()
    finally:
        frames.close()
        if mixed_stream is not None:
            mixed_stream.close()
        recording._end(receiver.tick)
        with trio.CancelScope(shield=True):
            ops = [*recording._take(), *recording._take_mixed(), recording._close_all]
            await trio.to_thread.run_sync(_run_all, ops)


async def _write_frames(recording: Recording, frames: AudioStream[ReceivedAudio]) -> None:
    last_flush = recording._start
    async for frame in frames:
        batch = [frame]
        while True:
            try:
                batch.append(frames.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                break
        by_user: dict[tuple[Snowflake, int], list[ReceivedAudio]] = {}
        for item in batch:
            by_user.setdefault((item.user_id, item.tick), []).append(item)
        for group in by_user.values():
            recording._place(group)
        tick = batch[-1].tick
        recording._ticks = max(recording._ticks, tick - recording._start)
        if tick - last_flush >= FLUSH_TICKS:
            last_flush = tick
            await trio.to_thread.run_sync(_run_all, recording._take())


async def _write_mixed(recording: Recording, mixed: AudioStream[MixedAudio]) -> None:
    written = 0
    async for frame in mixed:
        recording._place_mixed(frame)
        written += 1
        if written % FLUSH_TICKS == 0:
            await trio.to_thread.run_sync(_run_all, recording._take_mixed())
