"""A connection's player: starting tracks, and what the connection's play methods do.

Tracks start in the connection's own nursery (their feeders are its tasks, cancelled with it),
and go into the mixer at once. The player is also where an invalid connection shows: a track
started on one ends ``INVALIDATED`` straight away, with the connection's reason, instead of
playing into nothing.
"""

from __future__ import annotations

import itertools

import trio

from ...._audio.sources import AudioSource, PcmSource
from ...._core.player.events import TrackEnd, TrackOutcome
from ...._core.player.mixing import Ducking
from ...._core.voice.events import Invalidated, InvalidationReason
from ...._errors import UsageError
from .mixer import Mixer
from .track import TrackHandle, run_feeder

__all__ = ["Player"]


class Player:
    """The tracks of one connection (see ``VoiceConnection.start_track``)."""

    def __init__(self, mixer: Mixer) -> None:
        self.mixer = mixer
        self._nursery: trio.Nursery | None = None
        self._ids = itertools.count(1)
        self._invalidation: Invalidated | None = None
        self._closed = False
        self._ducking: Ducking | None = None

    def attach(self, nursery: trio.Nursery) -> None:
        """The connection's task nursery, where feeders run; set as the connection starts."""
        self._nursery = nursery

    @property
    def tracks(self) -> tuple[TrackHandle, ...]:
        return tuple(self.mixer.tracks)

    @property
    def ducking(self) -> Ducking | None:
        return self._ducking

    @ducking.setter
    def ducking(self, value: Ducking | None) -> None:
        if value is not None and not isinstance(value, Ducking):
            raise UsageError(f"ducking must be a Ducking or None, got {type(value).__name__}")
        self._ducking = value
        self.mixer.set_ducking(value)

    def new_track(
        self,
        source: AudioSource,
        *,
        volume: float = 1.0,
        loops: int | None = 0,
        ducks_others: bool = False,
    ) -> TrackHandle:
        """A handle for ``source``, not started yet (the queue holds such handles)."""
        if not isinstance(source, AudioSource):
            raise UsageError(
                "a track needs an AudioSource (PcmSource, OggOpusSource, AvSource), got "
                f"{type(source).__name__}"
            )
        if not isinstance(ducks_others, bool):
            raise UsageError(f"ducks_others must be a bool, got {type(ducks_others).__name__}")
        return TrackHandle(
            next(self._ids), source, volume=volume, loops=loops, ducks_others=ducks_others
        )

    def start(self, track: TrackHandle, after: TrackHandle | None = None) -> TrackHandle:
        """Start reading ``track`` now; it is mixed in at once, or right after ``after``."""
        source = track.source
        if track.outcome is not None:
            return track
        if self._closed:
            self._end_invalid(track)
            return track
        if self._nursery is None:
            raise UsageError("tracks play inside the connection's block (async with ...)")
        if source._playing:
            raise UsageError(
                f"{source.name} is already playing on a track; a source plays on one track at "
                "a time"
            )
        rewind = source._played
        if rewind and not source.seekable:
            raise UsageError(
                f"{source.name} was already played, and a stream cannot start again; make a "
                "new source"
            )
        source._playing = source._played = True
        if isinstance(source, PcmSource):
            source._defer_gain()  # the mixer applies its volume, frame by frame
        self.mixer.add(track, after)
        self._nursery.start_soon(run_feeder, track, rewind)
        return track

    async def play(self, track: TrackHandle) -> TrackEnd:
        """Start ``track`` and wait for its end; cancelling stops it."""
        self.start(track)
        try:
            end = await track.wait()
        except trio.Cancelled:
            track.stop()
            raise
        if end.outcome is TrackOutcome.FAILED and end.error is not None:
            raise end.error
        return end

    def stop_all(self) -> None:
        for track in list(self.mixer.tracks):
            track.stop()

    def close(self, invalidation: Invalidated | None) -> None:
        self._closed = True
        self._invalidation = invalidation

    def _end_invalid(self, track: TrackHandle) -> None:
        invalidation = self._invalidation or Invalidated(
            InvalidationReason.NORMAL, "the connection's block was left"
        )
        track._finish(TrackOutcome.INVALIDATED, invalidation=invalidation)
