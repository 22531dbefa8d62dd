"""A track: one source being played, its controls, and the task that reads it ahead.

The handle is what a user holds; the feeder task (one per track, in the connection's nursery)
reads the source a few frames ahead of the mixer and waits for room, which is the
back-pressure a streaming source sees. The mixer (``mixer.py``) takes the frames out, one per
sent frame, and decides when the track has ended; the handle only records what it is told.
Controls act at once on the mixer's side (a paused track is skipped from the next mixed frame);
a seek throws away what was read ahead and lets the feeder read from the new position.
"""

from __future__ import annotations

import enum
import logging
import math
from collections import deque
from collections.abc import Generator
from typing import TYPE_CHECKING, Any, Final

import trio

from ...._audio.opus import OpusDecoder
from ...._audio.sources import AudioSource, PcmSource, check_position
from ...._core.pcm_buffer import check_gain
from ...._core.player.events import TrackEnd, TrackOutcome
from ...._core.voice.events import Invalidated
from ...._errors import UsageError

if TYPE_CHECKING:
    from .mixer import Mixer

__all__ = ["TRACK_AHEAD", "TrackHandle", "TrackState", "run_feeder"]

#: Frames a track reads ahead of the mixer: 200 ms. Enough to cover a file read or a decode
#: hop (the sources themselves read half a second per hop), and to preload the next track of a
#: queue, while a streaming producer is held to within a fifth of a second of real time.
TRACK_AHEAD: Final = 10

_log = logging.getLogger("discore_voice.player")


class TrackState(enum.Enum):
    """Where a track is in its life."""

    #: Waiting: in a queue, or preloaded behind the track it follows.
    QUEUED = "queued"
    PLAYING = "playing"
    PAUSED = "paused"
    ENDED = "ended"


def check_loops(times: object) -> int | None:
    if times is None:
        return None
    if isinstance(times, bool) or not isinstance(times, int) or times < 0:
        raise UsageError(f"loops must be an int >= 0, or None for forever; got {times!r}")
    return times


class TrackHandle:
    """One track on a connection: control it, watch it, ``await`` it for its :class:`TrackEnd`.

    Controls work from any task and take effect from the next mixed frame (within 20-40 ms of
    what listeners hear). Every control on an ended track is a no-op, as on an invalid
    connection.
    """

    def __init__(
        self,
        track_id: int,
        source: AudioSource,
        *,
        volume: float = 1.0,
        loops: int | None = 0,
        ducks_others: bool = False,
    ) -> None:
        self._id = track_id
        self._source = source
        self._volume = check_gain(volume)
        self._loops = check_loops(loops)
        if self._loops != 0 and not source.seekable:
            raise UsageError(f"{source.name} is a stream and cannot loop")
        self._ducks_others = bool(ducks_others)
        self._mixer: Mixer | None = None
        self._started = False  # its first frame was mixed
        self._paused = False
        self._after: TrackHandle | None = None  # plays once this one has been mixed out
        self._frames: deque[bytes] = deque()
        self.frames_played = 0
        self._position = 0  # in frames, of the next frame to mix
        self._read = 0  # frames read since the last seek (or loop)
        self._mixed_since = 0  # frames mixed since the last seek (or loop)
        self._loop_points: deque[int] = deque()  # read counts at which the source rewound
        self._source_done = False  # the feeder read everything (or failed)
        self._read_all = trio.Event()  # set with ``_source_done``: the queue preloads then
        self._drained = False  # every frame was mixed: only sending remains
        self._last_mark = 0  # the mixer's frame count when its last frame was mixed
        self._failure: BaseException | None = None
        self._seek_to: float | None = None
        self._generation = 0  # bumped by seeks: frames read before one are dropped
        self._room = trio.Event()
        self._room_waiting = False
        self._feeder_scope: trio.CancelScope | None = None
        self._last_gain = 1.0
        self._decoder: OpusDecoder | None = None
        self._decoder_fresh = False  # it decoded the previous packet (no passthrough between)
        self._end: TrackEnd | None = None
        self._ended = trio.Event()

    def __repr__(self) -> str:
        return f"<TrackHandle #{self._id} {self._source.name!r} {self.state.value}>"

    # --- what it is --------------------------------------------------------------------------

    @property
    def id(self) -> int:
        """Unique within its connection; the same as in its events."""
        return self._id

    @property
    def name(self) -> str:
        """Its source's name (a path, or the label the source was given)."""
        return self._source.name

    @property
    def source(self) -> AudioSource:
        """What it plays."""
        return self._source

    @property
    def state(self) -> TrackState:
        """Queued, playing, paused or ended."""
        if self._end is not None:
            return TrackState.ENDED
        if self._paused:
            return TrackState.PAUSED
        return TrackState.PLAYING if self._started else TrackState.QUEUED

    @property
    def outcome(self) -> TrackEnd | None:
        """How it ended; None while it has not."""
        return self._end

    @property
    def position(self) -> float:
        """Seconds into the source of the frame mixed last (a seek moves it at once)."""
        if self._seek_to is not None:
            return self._seek_to
        return self._position * 0.02

    @property
    def duration(self) -> float | None:
        """The source's length in seconds, when it is known (files, once opened)."""
        return self._source.duration

    @property
    def ducks_others(self) -> bool:
        """Whether the connection's :class:`Ducking` lowers the other tracks while it plays."""
        return self._ducks_others

    # --- controls ----------------------------------------------------------------------------

    @property
    def volume(self) -> float:
        """Its linear gain (1.0 unchanged, 0.5 about -6 dB, up to 32768); set it at any time.

        An Ogg Opus track at 1.0 alone is sent as it is; any other gain decodes it, scales it
        and re-encodes it, from the next frame.
        """
        return self._volume

    @volume.setter
    def volume(self, value: float) -> None:
        self._volume = check_gain(value)
        self._poke()

    @property
    def loops(self) -> int | None:
        """How many more times it plays again after this time through; None: forever."""
        return self._loops

    @loops.setter
    def loops(self, times: int | None) -> None:
        value = check_loops(times)
        if value != 0 and not self._source.seekable:
            raise UsageError(f"{self._source.name} is a stream and cannot loop")
        self._loops = value

    @property
    def paused(self) -> bool:
        """A paused track keeps its place and is left out of the mix."""
        return self._paused

    def pause(self) -> None:
        """Leave it out of the mix from the next frame, keeping its place."""
        if self._end is None:
            self._paused = True

    def resume(self) -> None:
        """Mix it in again from where it paused."""
        if self._end is None and self._paused:
            self._paused = False
            self._poke()

    def stop(self) -> None:
        """End it now, with outcome ``STOPPED``; its source is closed."""
        if self._end is not None:
            return
        if self._mixer is not None:
            self._mixer.stop(self)
        else:
            self._finish(TrackOutcome.STOPPED)

    def seek(self, seconds: float) -> None:
        """Play on from ``seconds`` into the source (for files and bytes; streams raise).

        What was read ahead is dropped at once; the track is silent for the moment the source
        needs to seek (a file re-read, a demuxer seek), then plays from the new place. Past the
        end, it finishes.
        """
        position = check_position(seconds)
        if not self._source.seekable:
            raise UsageError(f"{self._source.name} is a stream and cannot seek")
        if self._end is not None:
            return
        if self._drained and self._mixer is not None:
            self._mixer.reopen(self)  # mixed out, not yet sent: it plays on from the target
        self._seek_to = position
        self._generation += 1
        self._frames.clear()
        self._mixed_since = 0
        self._loop_points.clear()
        self._source_done = False
        if self._read_all.is_set():
            self._read_all = trio.Event()
        self._failure = None
        self._drained = False
        self._wake_feeder()

    async def wait(self) -> TrackEnd:
        """Until it ends; how it ended. Cancelling the wait does not stop the track."""
        await self._ended.wait()
        assert self._end is not None
        return self._end

    def __await__(self) -> Generator[Any, None, TrackEnd]:
        return self.wait().__await__()

    # --- for the mixer and the feeder --------------------------------------------------------

    def _poke(self) -> None:
        if self._mixer is not None:
            self._mixer.wakeup.poke()

    def _wake_feeder(self) -> None:
        if self._room_waiting:
            self._room_waiting = False
            self._room.set()
            self._room = trio.Event()

    def _read_everything(self, failure: BaseException | None = None) -> None:
        """The feeder reached the source's end (or its error): the rest is in ``_frames``."""
        if failure is not None:
            self._failure = failure
        self._source_done = True
        self._read_all.set()
        self._poke()
        if self._mixer is not None:
            self._mixer.settle_idle(self)

    def _effective_gain(self) -> float:
        source = self._source
        if isinstance(source, PcmSource):
            return self._volume * source.volume
        return self._volume

    def _finish(
        self,
        outcome: TrackOutcome,
        *,
        error: BaseException | None = None,
        invalidation: Invalidated | None = None,
    ) -> TrackEnd | None:
        """Record the end once; the feeder is cancelled (and closes the source)."""
        if self._end is not None:
            return None
        self._end = TrackEnd(
            self._id,
            self._source.name,
            outcome,
            self.frames_played,
            error=error,
            invalidation=invalidation,
        )
        self._frames.clear()
        self._source._playing = False
        if self._feeder_scope is not None:
            self._feeder_scope.cancel()
        if self._decoder is not None:
            self._decoder.close()
            self._decoder = None
        self._wake_feeder()
        self._ended.set()
        return self._end


async def run_feeder(track: TrackHandle, rewind: bool) -> None:
    """Read ``track``'s source ahead of the mixer until the track ends; one task per track.

    Never raises: a failing source becomes the track's failure, played out up to the frames
    that came before it (a seek afterwards tries again from the new place).
    """
    source = track._source
    with trio.CancelScope() as scope:
        track._feeder_scope = scope
        if track._end is not None:
            scope.cancel()
        if rewind and track._seek_to is None:
            track._seek_to = 0.0
        try:
            while True:
                try:
                    await _feed_once(track)
                except Exception as exc:
                    _log.info("track %d (%s) failed: %s", track._id, source.name, exc)
                    track._read_everything(exc)
        finally:
            with trio.CancelScope(shield=True):
                try:
                    await source.aclose()
                except Exception as exc:
                    _log.info("closing %s failed: %s", source.name, exc)


async def _feed_once(track: TrackHandle) -> None:
    """One step: a seek, a wait for room, or one frame read."""
    source = track._source
    if track._seek_to is not None:
        target = track._seek_to
        generation = track._generation
        await source.seek(target)
        if generation == track._generation:
            track._seek_to = None
            track._position = math.floor(target * 50)
            track._read = 0
        return
    if track._source_done or len(track._frames) >= TRACK_AHEAD:
        track._room_waiting = True
        await track._room.wait()
        return
    generation = track._generation
    try:
        frame = await anext(source)
    except StopAsyncIteration:
        if generation != track._generation:
            return
        if track._loops != 0:
            if track._loops is not None:
                track._loops -= 1
            await source.seek(0)
            track._loop_points.append(track._read)
            track._read = 0
            return
        track._read_everything()
        return
    if generation != track._generation or track._seek_to is not None:
        return  # read before a seek: from the old place
    track._frames.append(frame)
    track._read += 1
    track._poke()
