"""The mixer stage: what the producer encodes next, from every track and the PCM send buffer.

It runs where encoding runs, frame by frame, just ahead of the send clock (one frame ahead
while the trio thread encodes; see ``producer.py``), so a change to a track (volume, pause, a
new effect, a skip) is in the next frame encoded: heard 20-40 ms later.

Per frame: every playing track gives up one frame it read ahead. One Opus track alone at gain
1.0, with nothing else to send, passes through byte for byte (no decode, no encode: as cheap
as before there was a mixer). Anything else decodes the Opus tracks that are mixed (only
those), scales each input with a ramp from its previous gain, sums and soft-clips
(``_core.player.mixing``), and the producer encodes the result.

A track has ended when its last frame was mixed *and sent*: the mixer notes how many frames the
producer had made by then, and :meth:`Mixer.settle` finishes the track once that many were
taken by the send clock, so ``await track`` returns when the audio went out, not when it was
read.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Final, Protocol

from ...._audio.opus import OpusDecoder
from ...._audio.sources import SourceKind
from ...._core.player.events import TrackEnd, TrackEnded, TrackOutcome, TrackStarted
from ...._core.player.mixing import Ducking, DuckingEnvelope, MixInput, mix
from ...._core.voice.events import Invalidated
from .track import TRACK_AHEAD, TrackHandle

if TYPE_CHECKING:
    from ..sending.producer import Wakeup

__all__ = ["Mixer"]

# A track's feeder is woken for more once its read-ahead falls to half.
_REFILL_AT: Final = TRACK_AHEAD // 2


class _Publisher(Protocol):
    """Where track events go: the connection's event hub."""

    def publish(self, item: TrackStarted | TrackEnded, /) -> None: ...


class Mixer:
    """One connection's playing tracks, in start order, and the frames they are mixed into."""

    def __init__(self, wakeup: Wakeup) -> None:
        self.wakeup = wakeup
        self.tracks: list[TrackHandle] = []
        self.events: _Publisher | None = None
        self.ducking: DuckingEnvelope | None = None
        self._finishing: deque[tuple[int, TrackHandle]] = deque()  # (frame mark, track)
        self.made = 0  # frames handed to the producer (encoded or passed through)
        self.taken = 0  # of those, frames the send clock took out
        self.frames_mixed = 0  # frames that needed the sum (more than a passthrough or a copy)
        self.frames_passed_through = 0
        self._closed = False

    # --- tracks ------------------------------------------------------------------------------

    def add(self, track: TrackHandle, after: TrackHandle | None = None) -> None:
        track._mixer = self
        track._after = after
        self.tracks.append(track)
        self.wakeup.poke()

    def reopen(self, track: TrackHandle) -> None:
        """A track that was mixed out seeks back: it is no longer ending."""
        self._finishing = deque(item for item in self._finishing if item[1] is not track)
        track._drained = False
        if track not in self.tracks:
            self.tracks.append(track)

    def stop(self, track: TrackHandle) -> None:
        if track in self.tracks:
            self.tracks.remove(track)
        self._finishing = deque(item for item in self._finishing if item[1] is not track)
        self._end(track, TrackOutcome.STOPPED)
        self.wakeup.poke()

    @property
    def playing(self) -> bool:
        """Some track is playing (started, not paused, not ended)."""
        return any(t._started and not t._paused for t in self.tracks)

    @property
    def has_audio(self) -> bool:
        """Some track has a frame to mix now: the sender must have a link."""
        for track in self.tracks:
            if track._frames and not track._paused and _may_play(track):
                return True
        return False

    def set_ducking(self, ducking: Ducking | None) -> None:
        self.ducking = None if ducking is None else DuckingEnvelope(ducking)

    # --- per frame ---------------------------------------------------------------------------

    def next_frame(self, raw: bytes | None) -> tuple[bool, bytes] | None:
        """The next frame to send: ``(True, packet)`` to pass through, ``(False, pcm)`` to
        encode, or None when nothing is playing. ``raw`` is the PCM send buffer's frame."""
        tracks = self.tracks
        if not tracks:
            if raw is None:
                return None
            self.made += 1
            return False, raw
        picked: list[tuple[TrackHandle, bytes]] = []
        drained: list[TrackHandle] = []
        ducked = False
        for track in tracks:
            if track._paused or not _may_play(track):
                continue
            frames = track._frames
            if not frames:
                if track._source_done:
                    drained.append(track)
                continue
            frame = frames.popleft()
            if len(frames) <= _REFILL_AT:
                track._wake_feeder()
            self._advance(track)
            picked.append((track, frame))
            if track._ducks_others:
                ducked = True
            if not frames and track._source_done:
                drained.append(track)
        if not picked and raw is None:
            self._drain(drained)
            return None
        item = self._combine(picked, raw, ducked)
        self.made += 1
        for track, _ in picked:
            track._last_mark = self.made
        self._drain(drained)
        return item

    def _advance(self, track: TrackHandle) -> None:
        track.frames_played += 1
        track._position += 1
        track._mixed_since += 1
        points = track._loop_points
        if points and track._mixed_since >= points[0]:
            points.popleft()
            track._mixed_since = 0
            track._position = 0
        if not track._started:
            track._started = True
            track._last_gain = track._effective_gain()  # no ramp into the first frame
            if self.events is not None:
                self.events.publish(TrackStarted(track._id, track._source.name))

    def _combine(
        self, picked: list[tuple[TrackHandle, bytes]], raw: bytes | None, ducked: bool
    ) -> tuple[bool, bytes]:
        envelope = self.ducking
        duck_from, duck_to = envelope.step(ducked) if envelope is not None else (1.0, 1.0)
        if raw is None and len(picked) == 1:
            track, frame = picked[0]
            gain = track._effective_gain()
            undisturbed = track._ducks_others or duck_from == duck_to == 1.0
            if undisturbed and gain == 1.0 and track._last_gain == 1.0:
                if track._source.kind is SourceKind.OPUS:
                    track._decoder_fresh = False
                    self.frames_passed_through += 1
                    return True, frame
                return False, frame
        inputs: list[MixInput] = []
        for track, frame in picked:
            pcm = self._decode(track, frame) if track._source.kind is SourceKind.OPUS else frame
            gain = track._effective_gain()
            start, track._last_gain = track._last_gain, gain
            if track._ducks_others:
                inputs.append(MixInput(pcm, start, gain))
            else:
                inputs.append(MixInput(pcm, start * duck_from, gain * duck_to))
        if raw is not None:
            inputs.append(MixInput(raw, duck_from, duck_to))
        self.frames_mixed += 1
        return False, mix(inputs)

    @staticmethod
    def _decode(track: TrackHandle, packet: bytes) -> bytes:
        decoder = track._decoder
        if decoder is None or not track._decoder_fresh:
            # After passthrough the old state is stale; a new decoder settles within a frame.
            if decoder is not None:
                decoder.close()
            decoder = track._decoder = OpusDecoder()
        track._decoder_fresh = True
        return decoder.decode(packet)

    # --- ends ----------------------------------------------------------------------------------

    def _drain(self, drained: list[TrackHandle]) -> None:
        """These tracks were mixed out: each ends once the frames made so far were sent."""
        if not drained:
            return
        for track in drained:
            if track._drained:
                continue
            track._drained = True
            self.tracks.remove(track)
            self._finishing.append((track._last_mark, track))
        self.settle()

    def settle_idle(self, track: TrackHandle) -> None:
        """A track's source ran out (or failed) with nothing left to mix: while nothing else
        asks for frames, end it here, not at the next frame that may never be mixed."""
        if track in self.tracks and not track._frames and _may_play(track):
            self._drain([track])

    def frame_taken(self) -> None:
        """The send clock took a frame out (called per frame, so it is cheap)."""
        self.taken += 1
        if self._finishing:
            self.settle()

    def settle(self) -> None:
        finishing = self._finishing
        if len(finishing) > 1:
            self._finishing = finishing = deque(sorted(finishing, key=lambda item: item[0]))
        while finishing and finishing[0][0] <= self.taken:
            _, track = finishing.popleft()
            if track._failure is not None:
                self._end(track, TrackOutcome.FAILED, error=track._failure)
            else:
                self._end(track, TrackOutcome.FINISHED)

    def dropped_queued(self) -> None:
        """The producer dropped the frames it had made but not sent (``clear_voice_buffer``)."""
        self.made = self.taken
        self.settle()

    def _end(
        self,
        track: TrackHandle,
        outcome: TrackOutcome,
        *,
        error: BaseException | None = None,
        invalidation: Invalidated | None = None,
    ) -> TrackEnd | None:
        end = track._finish(outcome, error=error, invalidation=invalidation)
        if end is not None and self.events is not None:
            self.events.publish(TrackEnded(end))
        self.wakeup.poke()
        return end

    def close(self, invalidation: Invalidated | None) -> None:
        """The connection is invalid: every track ends ``INVALIDATED``."""
        if self._closed:
            return
        self._closed = True
        ending = [*self.tracks, *(track for _, track in self._finishing)]
        self.tracks.clear()
        self._finishing.clear()
        for track in ending:
            self._end(track, TrackOutcome.INVALIDATED, invalidation=invalidation)

    @property
    def closed(self) -> bool:
        return self._closed


def _may_play(track: TrackHandle) -> bool:
    """A preloaded track waits until the one before it was mixed out (or ended)."""
    after = track._after
    if after is None:
        return True
    if after._drained or after._end is not None:
        track._after = None
        return True
    return False
