"""Receiving, as the user holds it: ``async with vc.receive() as rx``, then streams from ``rx``.

The receiver owns one task, in a nursery of its own inside the ``async with``, that ticks on a
20 ms grid while members are played out: it reads the socket (through the connection's
``ReceiveTap``, so the UDP task need not wake as well), asks the core's receive pipeline for the
slot each speaking member has now, decodes them when PCM is wanted (one Opus decoder per SSRC,
kept while the member speaks and dropped with its state), and puts the frames on every stream
that wants them. While nobody speaks it sleeps until media arrives: an idle receiver costs no
wake-ups. Leaving the block stops the task, ends every stream and turns the pipeline's buffering
off again, so a bot that stops listening stops paying for it.

The tick never raises into the user's block: a packet libopus refuses is counted and concealed,
and the streams never make it wait (each loses its oldest frames instead, counted).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

import trio

from ...._audio.opus import OpusDecoder
from ...._core.pcm_buffer import PCM_BLOCK_SIZE
from ...._core.receive.events import (
    ReceivedAudio,
    ReceiveEvent,
    SpeakingStopped,
)
from ...._core.receive.mix import mix_frames
from ...._core.receive.pipeline import (
    DEFAULT_DEPTH,
    MAX_DEPTH,
    ReceivedSlot,
    ReceivePipeline,
    TickResult,
)
from ...._core.receive.playout import SlotKind
from ...._core.snowflake import Snowflake, validate_snowflake
from ...._core.speaking import OPUS_SILENCE_FRAME
from ...._errors import DiscoreVoiceError, OpusError, UsageError
from ..timerfd import open_timer
from .stream import AudioStream, check_stream_size
from .tap import ReceiveTap

if TYPE_CHECKING:
    from ...._core.receive.stats import ReceiveStats

__all__ = ["DEFAULT_DEPTH", "DEFAULT_STREAM_SIZE", "MixedAudio", "VoiceReceiver", "check_depth"]

TICK_SECONDS: Final = 0.02
#: Frames a stream buffers for a reader that falls behind: five seconds.
DEFAULT_STREAM_SIZE: Final = 250
DEFAULT_ALL_STREAM_SIZE: Final = 1000
_SILENT_PCM: Final = bytes(PCM_BLOCK_SIZE)
_PACKET: Final = SlotKind.PACKET
_new_tuple = tuple.__new__

_logger = logging.getLogger("discore_voice.receive")


class _Connection(Protocol):
    """What the receiver reads of its connection."""

    @property
    def is_valid(self) -> bool: ...

    @property
    def receive_stats(self) -> ReceiveStats: ...


@dataclass(frozen=True, slots=True)
class MixedAudio:
    """Every member's audio of one 20 ms tick summed into one frame (48 kHz stereo s16le).

    ``user_ids`` are the members heard in it; a tick where nobody spoke is silence, with none.
    """

    tick: int
    user_ids: tuple[Snowflake, ...]
    pcm: bytes


class _UserStream:
    """A stream of one member's frames (or everyone's) and its end condition, in ticks."""

    __slots__ = ("inactivity", "last_frame", "last_voice", "silence", "stream", "user_id")

    def __init__(
        self,
        stream: AudioStream[ReceivedAudio],
        user_id: Snowflake | None,
        silence: int | None,
        inactivity: int | None,
        tick: int,
    ) -> None:
        self.stream = stream
        self.user_id = user_id
        self.silence = silence
        self.inactivity = inactivity
        self.last_voice: int | None = None  # the tick of the last frame that was not silence
        self.last_frame = tick

    def over(self, tick: int) -> bool:
        if self.inactivity is not None and tick - self.last_frame >= self.inactivity:
            return True
        return (
            self.silence is not None
            and self.last_voice is not None
            and tick - self.last_voice >= self.silence
        )


def _ticks(seconds: object, what: str) -> int | None:
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise UsageError(f"{what} must be a number of seconds or None")
    if not math.isfinite(seconds) or seconds <= 0:
        raise UsageError(f"{what} must be a positive number of seconds")
    return max(1, round(seconds / TICK_SECONDS))


class VoiceReceiver:
    """What ``vc.receive()`` yields: open streams on it while its block runs.

    ``decode`` (default True) fills :attr:`ReceivedAudio.pcm`; without it, frames carry only
    the Opus packets, and the decoding (about 50 µs a frame) is skipped. ``delay`` is the
    playout buffer's depth in seconds (default 0.1): more rides out more network jitter, at
    that much more latency.
    """

    def __init__(
        self,
        connection: _Connection,
        pipeline: ReceivePipeline,
        *,
        decode: bool,
        depth: int,
        tap: ReceiveTap | None = None,
        next_send_at: Callable[[], float | None] | None = None,
    ) -> None:
        self._connection = connection
        self._next_send_at = next_send_at
        self._pipeline = pipeline
        self._tap = tap if tap is not None else ReceiveTap()
        self._decode = decode
        self._depth = depth
        self._users: list[_UserStream] = []
        self._speaking: list[AudioStream[ReceiveEvent]] = []
        self._mixed: list[AudioStream[MixedAudio]] = []
        self._decoders: dict[int, OpusDecoder] = {}
        self._counts: Counter[str] = Counter()
        self._running = False
        self._tick = 0
        self._asleep_since: float | None = None  # the last tick's time, while the task sleeps

    def __repr__(self) -> str:
        state = "receiving" if self._running else "stopped"
        return (
            f"<VoiceReceiver {state} decode={self._decode} delay={self._depth * 20} ms "
            f"streams={len(self._users) + len(self._speaking) + len(self._mixed)}>"
        )

    @property
    def decode(self) -> bool:
        """Whether frames carry decoded PCM (``vc.receive(decode=...)``)."""
        return self._decode

    @property
    def tick(self) -> int:
        """20 ms ticks since receiving started: the clock of :attr:`ReceivedAudio.tick`.

        It advances while nobody speaks too (when the task sleeps instead of ticking).
        """
        if self._asleep_since is None:
            return self._tick
        return self._tick + int((trio.current_time() - self._asleep_since) / TICK_SECONDS)

    @property
    def stats(self) -> ReceiveStats:
        """Every counter of the receive path: the same as ``vc.receive_stats``."""
        return self._connection.receive_stats

    @property
    def counts(self) -> Counter[str]:
        """This receiver's own counters (``decode.*``, ``stream.dropped``, ``tick.*``)."""
        counts = Counter(self._counts)
        dropped = sum(s.stream.dropped for s in self._users)
        dropped += sum(s.dropped for s in self._speaking) + sum(s.dropped for s in self._mixed)
        counts["stream.dropped"] += dropped
        return counts

    # --- streams ------------------------------------------------------------------------------

    def user(
        self,
        user_id: int | str,
        *,
        end_after_silence: float | None = None,
        end_after_inactivity: float | None = None,
        buffer: int = DEFAULT_STREAM_SIZE,
    ) -> AudioStream[ReceivedAudio]:
        """One member's frames, from now on, in order, every 20 ms while they speak.

        Ends when the receiver closes, or, if asked: ``end_after_silence`` seconds after the
        member last said anything (silence frames and gaps count as silence, pauses shorter than
        that do not end it; it starts counting at their first frame), or
        ``end_after_inactivity`` seconds after their last frame of any kind (from now, if they
        never send one). A member who never speaks gives a stream that stays empty.
        """
        user = validate_snowflake(user_id, name="user_id")
        return self._user_stream(user, end_after_silence, end_after_inactivity, buffer)

    def all(self, *, buffer: int = DEFAULT_ALL_STREAM_SIZE) -> AudioStream[ReceivedAudio]:
        """Every member's frames, interleaved tick by tick (ordered by user within a tick).

        Its buffer holds frames of everyone: 1000 by default, a second of 20 speakers.
        """
        return self._user_stream(None, None, None, buffer)

    def speaking(self, *, buffer: int = DEFAULT_STREAM_SIZE) -> AudioStream[ReceiveEvent]:
        """:class:`SpeakingStarted` and :class:`SpeakingStopped`, as the audio plays out."""
        stream: AudioStream[ReceiveEvent] = AudioStream(
            check_stream_size(buffer), "speaking", self._speaking_closed
        )
        self._open(stream)
        self._speaking.append(stream)
        return stream

    def mixed(self, *, buffer: int = DEFAULT_STREAM_SIZE) -> AudioStream[MixedAudio]:
        """One frame per tick, every member summed: a single track, silence included."""
        if not self._decode:
            raise UsageError("a mixed stream needs decoded audio: use vc.receive(decode=True)")
        stream: AudioStream[MixedAudio] = AudioStream(
            check_stream_size(buffer), "mixed", self._mixed_closed
        )
        self._open(stream)
        self._mixed.append(stream)
        self._tap.wake()  # a sleeping receiver starts ticking: the mix includes silence
        return stream

    def _user_stream(
        self,
        user: Snowflake | None,
        silence: float | None,
        inactivity: float | None,
        buffer: int,
    ) -> AudioStream[ReceivedAudio]:
        silence_ticks = _ticks(silence, "end_after_silence")
        inactivity_ticks = _ticks(inactivity, "end_after_inactivity")
        what = "all users" if user is None else f"user {user}"
        stream: AudioStream[ReceivedAudio] = AudioStream(
            check_stream_size(buffer), what, self._user_closed
        )
        self._open(stream)
        self._users.append(_UserStream(stream, user, silence_ticks, inactivity_ticks, self._tick))
        if silence_ticks is not None or inactivity_ticks is not None:
            self._tap.wake()  # its end is timed: a sleeping receiver starts ticking
        return stream

    def _open(self, stream: AudioStream[Any]) -> None:
        if not self._running:
            stream._end()

    def _user_closed(self, stream: AudioStream[ReceivedAudio]) -> None:
        self._counts["stream.dropped"] += stream.dropped
        self._users = [s for s in self._users if s.stream is not stream]

    def _speaking_closed(self, stream: AudioStream[ReceiveEvent]) -> None:
        self._counts["stream.dropped"] += stream.dropped
        self._speaking = [s for s in self._speaking if s is not stream]

    def _mixed_closed(self, stream: AudioStream[MixedAudio]) -> None:
        self._counts["stream.dropped"] += stream.dropped
        self._mixed = [s for s in self._mixed if s is not stream]

    # --- the task -----------------------------------------------------------------------------

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Tick while members are played out, until cancelled or the connection ends.

        Ticks keep a 20 ms grid from the start; while nobody is being played out (and no
        stream needs a clock) the task sleeps instead, and the ticks it slept through are
        skipped, so tick numbers stay a clock. Always ends the streams.
        """
        pipeline = self._pipeline
        tap = self._tap
        pipeline.start(self._depth)
        self._running = True
        # A timerfd wake costs a fraction of trio's timeout (which raises and catches a
        # Cancelled each time): measured, an idle receiver cost 0.024 CPU-s/s on sleep_until.
        timer = open_timer()
        try:
            task_status.started()
            last_tick = trio.current_time()
            while self._connection.is_valid:
                next_tick = last_tick + TICK_SECONDS
                if pipeline.quiet and not self._needs_clock():
                    self._asleep_since = last_tick
                    try:
                        await tap.wait_for_media()
                    finally:
                        self._tick = self.tick
                        self._asleep_since = None
                    if not self._connection.is_valid:
                        break
                    # Back on the grid, at its next point; the ticks slept through are skipped.
                    slept = math.ceil((trio.current_time() - last_tick) / TICK_SECONDS)
                    pipeline.skip(slept - 1)
                    next_tick = last_tick + slept * TICK_SECONDS
                if self._next_send_at is not None:
                    next_tick = _between_sends(next_tick, self._next_send_at())
                now = trio.current_time()
                if next_tick < now - 10 * TICK_SECONDS:
                    # The process stalled (a debugger, a suspended laptop): resume the grid from
                    # now instead of ticking a second's worth at once.
                    self._counts["tick.skipped"] += round((now - next_tick) / TICK_SECONDS)
                    next_tick = now
                if timer is None:
                    await trio.sleep_until(next_tick)
                else:
                    timer.arm(next_tick)
                    await timer.wait()
                last_tick = next_tick
                tap.pace(True)
                now = trio.current_time()
                try:
                    tap.pump(now)
                    self._deliver(pipeline.tick(now))
                except Exception:
                    # A bug here must not take the user's block down with it; the audio of
                    # this tick is lost, counted, and the next tick tries again.
                    failures = self._counts["tick.failed"] = self._counts["tick.failed"] + 1
                    if failures & (failures - 1) == 0:
                        _logger.exception("receiving failed (%d times so far)", failures)
        finally:
            tap.pace(False)
            if timer is not None:
                timer.close()
            self._running = False
            pipeline.stop()
            for decoder in self._decoders.values():
                decoder.close()
            self._decoders.clear()
            for user_stream in self._users:
                user_stream.stream._end()
            for stream in self._speaking:
                stream._end()
            for mixed in self._mixed:
                mixed._end()

    def _needs_clock(self) -> bool:
        """Whether a stream wants ticks while nobody speaks: silence to mix, or an end to time."""
        if self._mixed:
            return True
        return any(s.silence is not None or s.inactivity is not None for s in self._users)

    def _deliver(self, result: TickResult) -> None:
        tick = self._tick = result.tick
        for ssrc in result.pruned:
            decoder = self._decoders.pop(ssrc, None)
            if decoder is not None:
                decoder.close()
        for event in result.events:
            for stream in self._speaking:
                stream._put(event)
            if isinstance(event, SpeakingStopped) and event.ssrc in self._decoders:
                # A new talkspurt starts from a clean state; the old one's tail means nothing.
                self._decoders[event.ssrc].reset()
        frames = self._frames(tick, result.slots)
        if self._mixed:
            self._mix(tick, frames)
        users = self._users
        if not users:
            return
        ended: list[_UserStream] = []
        for user_stream in users:
            wanted = user_stream.user_id
            put = user_stream.stream._put
            voiced = False
            delivered = False
            for frame in frames:
                if wanted is None or frame.user_id == wanted:
                    put(frame)
                    delivered = True
                    if not frame.concealed and frame.opus != OPUS_SILENCE_FRAME:
                        voiced = True
            if delivered:
                user_stream.last_frame = tick
                if voiced:
                    user_stream.last_voice = tick
            if user_stream.over(tick):
                ended.append(user_stream)
        for user_stream in ended:
            user_stream.stream._end()
            self._counts["stream.dropped"] += user_stream.stream.dropped
            self._users.remove(user_stream)

    def _frames(self, tick: int, slots: list[ReceivedSlot]) -> list[ReceivedAudio]:
        """One :class:`ReceivedAudio` per slot, decoded if asked: 5000 a second at 100 speakers.

        Built as plain tuples (``tuple.__new__``), which skips the named tuple's keyword
        handling: a third of the cost of a frame that is not decoded.
        """
        frames: list[ReceivedAudio] = []
        new_frame = _new_tuple
        decode = self._decode_slot if self._decode else None
        for user_id, ssrc, slot in slots:
            kind = slot.kind
            pcm = None if decode is None else decode(ssrc, kind, slot.opus)
            # A FEC or PLC slot has no sequence number, a PLC slot no packet (see Slot).
            fields = (
                user_id,
                ssrc,
                tick,
                slot.timestamp,
                slot.sequence,
                kind is not _PACKET,
                slot.opus,
                pcm,
            )
            frames.append(new_frame(ReceivedAudio, fields))
        return frames

    def _decode_slot(self, ssrc: int, kind: SlotKind, opus: bytes) -> bytes:
        decoder = self._decoders.get(ssrc)
        if decoder is None:
            decoder = self._decoders[ssrc] = OpusDecoder()
        try:
            if kind is SlotKind.PACKET:
                pcm = decoder.decode(opus)
            elif kind is SlotKind.FEC:
                pcm = decoder.decode(opus, fec=True)
                self._counts["decode.fec"] += 1
            else:
                pcm = decoder.decode(None)
                self._counts["decode.plc"] += 1
        except (OpusError, DiscoreVoiceError):
            # A frame DAVE let through but libopus refuses: conceal it rather than stop.
            self._counts["decode.failed"] += 1
            try:
                pcm = decoder.decode(None)
            except DiscoreVoiceError:
                return _SILENT_PCM
        if len(pcm) != PCM_BLOCK_SIZE:
            # Discord's clients send 20 ms frames; anything else is cut or padded to the grid.
            self._counts["decode.odd_size"] += 1
            pcm = pcm[:PCM_BLOCK_SIZE].ljust(PCM_BLOCK_SIZE, b"\0")
        return pcm

    def _mix(self, tick: int, frames: list[ReceivedAudio]) -> None:
        pcm = [frame.pcm for frame in frames if frame.pcm is not None]
        mixed = MixedAudio(
            tick,
            tuple(frame.user_id for frame in frames),
            mix_frames(pcm) if pcm else _SILENT_PCM,
        )
        for stream in self._mixed:
            stream._put(mixed)


def _between_sends(tick_at: float, send_at: float | None) -> float:
    """``tick_at`` moved (by at most half a tick) to halfway between two of our sends.

    A tick that came due with a send ran in the same wake-up, and decoding ten members (~0.6
    ms) delayed the send: measured, the p99 gap of the bot's own stream grew by up to 2.5 ms
    with ten members speaking. Half a frame apart, the two never meet.
    """
    if send_at is None:
        return tick_at
    target = send_at + TICK_SECONDS / 2
    offset = (target - tick_at + TICK_SECONDS / 2) % TICK_SECONDS - TICK_SECONDS / 2
    return tick_at + offset


def check_depth(delay: object) -> int:
    """The playout delay in seconds, as whole 20 ms frames of the buffer's depth."""
    if isinstance(delay, bool) or not isinstance(delay, int | float) or not math.isfinite(delay):
        raise UsageError("delay must be a number of seconds")
    depth = round(delay / TICK_SECONDS)
    if not 1 <= depth <= MAX_DEPTH:
        raise UsageError(
            f"delay must be {TICK_SECONDS} to {MAX_DEPTH * TICK_SECONDS:g} seconds "
            f"(the playout buffer holds whole 20 ms frames)"
        )
    return depth
