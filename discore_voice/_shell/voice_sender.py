"""Sending voice: Discore's PCM buffer, the speaking state and the paced send task of a connection.

The sans-IO pieces decide everything that can be decided without a clock or a socket: the
:class:`~discore_voice._core.pcm_buffer.PcmBuffer` cuts PCM into frames, and the
:class:`~discore_voice._core.pacing.Pacer` says when each frame goes out and with which RTP
numbers. This module is the thin trio layer around them, one :class:`VoiceSender` per
connection, living as long as the connection so that the pacer (and with it the RTP sequence
number and timestamp) survives pauses, resumes and server moves.

Each connection keeps a task in its own nursery (:meth:`VoiceSender.run`) that handles the
events: waiting for the connection, announcing speaking, waiting for audio. The frames
themselves are paced by one shared clock per trio run, which calls :meth:`VoiceSender.step`
without a task switch per frame; :mod:`~discore_voice._shell.voice_sender_clock` has the
measurements behind that choice. Encoding happens ahead of the clock:

* A libopus encode costs ~130 µs (FEC off) to ~300 µs (FEC on). Handing each frame to
  ``trio.to_thread`` cost ~240 µs of CPU per frame for the same work, so while a process
  encodes little, the clock encodes on its own thread, only in the slack: every due frame goes
  out first, and each sender keeps :data:`ENCODE_AHEAD` frames ready. Once encoding costs more
  than a third of a core (100 PCM streams with FEC need 1.5 cores), it moves to the worker
  threads of :mod:`~discore_voice._shell.voice_encoder_pool`, one job per connection in flight.
* The frame goes out with a plain non-blocking ``send`` on the connected socket; if the kernel's
  buffer is full the frame is dropped and counted (a late voice frame is worse than a lost one;
  the pacer never bursts to catch up).

Every operation on an invalid connection is a no-op, as in Discore: the sender is closed when
the connection is invalidated, which also releases anyone waiting for room.
"""

from __future__ import annotations

import contextlib
import math
import secrets
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import trio

from .._audio.opus import (
    MAX_BITRATE,
    MIN_BITRATE,
    Application,
    OpusEncoder,
    _check_application,
    _check_bool,
    _check_int,
)
from .._audio.sources import AudioSource, SourceKind
from .._core.pacing import DEFAULT_MAX_EARLY, Pacer, Send, Skip
from .._core.pcm_buffer import DEFAULT_CAPACITY, PCM_BLOCK_SIZE, PcmBuffer
from .._core.speaking import OPUS_SILENCE_FRAME, SpeakingFlags
from .._errors import NativeLibraryMissing, UsageError
from .._native import load_opus, opus_load_attempted
from .voice_encoder_pool import EncodeJob, EncoderPool, encoder_pool
from .voice_sender_clock import BATCH_SLACK, send_clock

if TYPE_CHECKING:
    from .voice_udp import VoiceUdp

__all__ = [
    "DEFAULT_BUFFER_SIZE",
    "ENCODE_AHEAD",
    "PCM_BLOCK_SIZE",
    "EncoderSettings",
    "SendStats",
    "VoiceSender",
    "VoiceSendingMixin",
]

#: Frames encoded before their slot. Two: one covers the encode of the frame after next, the
#: other a producer that delivers just after a slot. More would only delay what ``paused``
#: keeps queued.
ENCODE_AHEAD: Final = 2
#: Frames encoded ahead while encoding runs on the worker threads: one more, for the hop there
#: and back (and a worker that waits for the GIL after its encode).
OFFLOAD_AHEAD: Final = 3
#: How soon to look again when the frame that is due is still being encoded by a worker. Longer
#: than the clock's batch slack, or the clock would call again in the same pass: a spin that
#: holds the GIL the worker needs to hand its packets back.
_ENCODE_WAIT: Final = 0.002
#: The PCM buffer's default size: one second (see :mod:`discore_voice._core.pcm_buffer` for why).
DEFAULT_BUFFER_SIZE: Final = DEFAULT_CAPACITY
#: Send gaps kept for the percentiles: the last minute of sending at 50 frames a second.
_GAP_WINDOW: Final = 3000


@dataclass(frozen=True, slots=True)
class EncoderSettings:
    """How PCM is encoded. 128 kbps with FEC off by default: in-band FEC costs ~4.5x the CPU
    (``BENCHMARKS.md``) and only pays on lossy paths, which a bot can opt into."""

    bitrate: int = 128_000
    fec: bool = False
    packet_loss_percent: int | None = None
    complexity: int = 10
    application: Application | int = Application.AUDIO

    def __post_init__(self) -> None:
        # Checked now, not at the first frame: by then the mistake would end the connection.
        _check_int("bitrate", self.bitrate, MIN_BITRATE, MAX_BITRATE)
        _check_bool("fec", self.fec)
        if self.packet_loss_percent is not None:
            _check_int("packet_loss_percent", self.packet_loss_percent, 0, 100)
        _check_int("complexity", self.complexity, 0, 10)
        _check_application(self.application)

    def create(self) -> OpusEncoder:
        """A new encoder with these settings; each connection needs its own (it has state)."""
        return OpusEncoder(
            bitrate=self.bitrate,
            fec=self.fec,
            packet_loss_percent=self.packet_loss_percent,
            complexity=self.complexity,
            application=self.application,
        )


@dataclass(frozen=True, slots=True)
class SendStats:
    """A snapshot of what a connection sent; cumulative over the connection's life.

    Gaps are measured on trio's clock between consecutive sends of a run, so they show the
    pacing itself (what a receiver sees adds the network's jitter).
    """

    frames_sent: int
    silence_frames: int
    skipped_late: int
    stalls: int
    frames_encoded: int
    encode_time_us: float
    packets_dropped: int
    gap_p50_ms: float
    gap_p99_ms: float
    gap_max_ms: float

    @property
    def encode_mean_us(self) -> float:
        """Mean encode time per PCM frame; 0 when only pre-encoded Opus was played."""
        return self.encode_time_us / self.frames_encoded if self.frames_encoded else 0.0


def _percentile(ordered: list[float], fraction: float) -> float:
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


class VoiceSender:
    """One connection's send path: buffer, encoder, pacer, speaking state and the send task.

    The connection owns it for its whole life and starts :meth:`run` and :meth:`keep_speaking`
    in its nursery; everything else is called from the user's tasks.
    """

    def __init__(
        self,
        *,
        is_ready: Callable[[], bool],
        is_valid: Callable[[], bool],
        udp: Callable[[], VoiceUdp | None],
        media_encryptor: Callable[[], Callable[[bytes], bytes]],
        changed: Callable[[], trio.Event],
        send_speaking: Callable[[int], Awaitable[None]],
        connection_id: Callable[[], int],
        buffer_size: int = DEFAULT_BUFFER_SIZE,
        encoder: EncoderSettings | None = None,
    ) -> None:
        if encoder is not None and not isinstance(encoder, EncoderSettings):
            raise UsageError(f"encoder must be an EncoderSettings, got {type(encoder).__name__}")
        self._buffer = PcmBuffer(buffer_size)
        capacity = self._buffer.capacity
        # At least the part of a frame a full buffer can leave over, or a writer would wait for
        # room that only the underrun padding could make.
        self._refill_at = max(
            capacity * (30 + secrets.randbelow(41)) // 100, capacity % PCM_BLOCK_SIZE
        )
        self._opus_capacity = max(1, buffer_size // PCM_BLOCK_SIZE)
        self._opus: deque[bytes] = deque()
        self._ready: deque[bytes] = deque()
        self._settings = encoder or EncoderSettings()
        self._encoder: OpusEncoder | None = None
        # Encoding on the pool's workers: the job in flight (at most one, so the encoder is
        # used by one thread at a time), how many of its frames still count as queued audio,
        # and a generation that clear() bumps so a job's stale packets are dropped.
        self._pool: EncoderPool | None = None
        self._job: EncodeJob | None = None
        self._in_flight = 0
        self._generation = 0
        self._encoder_lock = threading.Lock()
        # Random starting points, as RFC 3550 asks: receivers must not assume zero.
        self._pacer = Pacer(
            sequence=secrets.randbelow(1 << 16), timestamp=secrets.randbelow(1 << 32)
        )
        self._is_ready = is_ready
        self._is_valid = is_valid
        self._udp = udp
        self._media_encryptor = media_encryptor
        self._changed = changed
        self._send_speaking = send_speaking
        self._connection_id = connection_id
        self._wake = trio.Event()
        self._wake_waiting = False  # the send task waits on ``_wake`` (checked once per frame)
        self._room = trio.Event()
        self._drained = trio.Event()
        self._room_waiters = 0
        self._drained_waiters = 0
        self._play_lock = trio.Lock()
        self._paused = False
        self._closed = False
        self._speaking = 0
        self._speaking_sent_on: int | None = None
        self._gaps: deque[float] = deque(maxlen=_GAP_WINDOW)
        self._gap_max = 0.0
        self._encode_ns = 0
        self._encoded = 0
        self._dropped = 0
        self._released = trio.Event()
        self._failure: BaseException | None = None
        # What a frame goes out through: (socket, DAVE layer) while the connection can send,
        # False while it cannot, None when the connection changed and it must be looked up.
        self._link: tuple[VoiceUdp, Callable[[bytes], bytes]] | bool | None = None

    # -- state ----------------------------------------------------------------------------------

    @property
    def pacer(self) -> Pacer:
        return self._pacer

    @property
    def bytes_to_send(self) -> int:
        """PCM not yet sent, counting frames already encoded ahead (they are still to be heard)."""
        queued = len(self._ready) + len(self._opus) + self._in_flight
        return self._buffer.bytes_queued + queued * PCM_BLOCK_SIZE

    @property
    def frames_pending(self) -> int:
        return self._buffer.frames_ready + len(self._ready) + len(self._opus) + self._in_flight

    @property
    def paused(self) -> bool:
        return self._paused

    @paused.setter
    def paused(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise UsageError(f"paused must be a bool, got {type(value).__name__}")
        if self._closed or value == self._paused:
            return
        self._paused = value
        if value:
            self._pacer.pause()
        else:
            self._pacer.resume()
        self._poke()

    @property
    def speaking(self) -> int:
        return self._speaking

    def stats(self) -> SendStats:
        gaps = sorted(self._gaps)
        pacer = self._pacer.stats
        return SendStats(
            frames_sent=pacer.frames_sent,
            silence_frames=pacer.silence_sent,
            skipped_late=pacer.skipped_late,
            stalls=pacer.stalls,
            frames_encoded=self._encoded,
            encode_time_us=self._encode_ns / 1000.0,
            packets_dropped=self._dropped,
            gap_p50_ms=_percentile(gaps, 0.50) * 1000.0,
            gap_p99_ms=_percentile(gaps, 0.99) * 1000.0,
            gap_max_ms=self._gap_max * 1000.0,
        )

    # -- the buffer -----------------------------------------------------------------------------

    def can_send(self, size: int) -> bool:
        if self._closed:
            return False
        return self._buffer.can_accept(size)

    def send_nowait(self, pcm: bytes | bytearray | memoryview) -> None:
        if self._closed:
            return
        self._buffer.write(pcm)
        self._poke()

    async def send(self, pcm: bytes | bytearray | memoryview) -> None:
        """Queue all of ``pcm``, waiting for room as the sender drains the buffer."""
        if self._closed:
            return
        view = memoryview(pcm).cast("B") if not isinstance(pcm, bytes) else memoryview(pcm)
        offset = 0
        while True:
            offset += self._buffer.write_partial(view[offset:])
            self._poke()
            if offset >= len(view) or self._closed:
                return
            room = self._room
            await self._wait_room(room)
            if self._closed:
                return

    def clear(self) -> int:
        """Drop queued audio (PCM, encoded-ahead frames and queued Opus); the tail is silence."""
        dropped = self.bytes_to_send
        self._buffer.clear()
        self._ready.clear()
        self._opus.clear()
        self._generation += 1  # a job in flight now encodes for nobody
        self._in_flight = 0
        self._release_room(force=True)
        return dropped

    def relink(self) -> None:
        """The connection's state changed: look its socket and readiness up again at the next
        frame. Per frame they are then two attribute reads, not five calls through properties."""
        self._link = None

    def _relink_now(self) -> tuple[VoiceUdp, Callable[[bytes], bytes]] | bool:
        udp = self._udp()
        if self._closed or not self._is_ready() or udp is None or udp.cipher is None:
            self._link = False
        else:
            self._link = (udp, self._media_encryptor())
        return self._link

    def close(self) -> None:
        """The connection is invalid: drop everything and release every waiter."""
        if self._closed:
            return
        self._closed = True
        self._link = False
        self.clear()
        self._poke()
        if self._encoder is not None:
            with self._encoder_lock:  # a worker may be encoding with it right now
                self._encoder.close()
            self._encoder = None

    # Waiters are counted by hand: ``Event.statistics()`` costs more than the rest of a check
    # that runs for every frame of every connection.

    async def _wait_room(self, room: trio.Event) -> None:
        self._room_waiters += 1
        try:
            await room.wait()
        finally:
            self._room_waiters -= 1

    async def _wait_drained(self, drained: trio.Event) -> None:
        self._drained_waiters += 1
        try:
            await drained.wait()
        finally:
            self._drained_waiters -= 1

    def _poke(self) -> None:
        if self._wake_waiting:
            self._wake_waiting = False
            self._wake.set()
            self._wake = trio.Event()

    def _release_room(self, *, force: bool = False) -> None:
        """Wake writers once enough of the queue is free, and ``play`` once everything went out.

        Called for every frame, so it costs nothing when nobody waits; and writers (who wait
        only on a full queue) are woken once per 30-70 % of the queue, not once per frame:
        waking a task costs more than sending a frame, and hundreds of connections share one
        thread. The share is drawn per connection, so connections that started together do not
        all refill in the same instant (measured at N=1000: that stalled every stream's frames
        for a tenth of a second, twice a second).
        """
        room = self._room
        if self._room_waiters and (
            force or self._buffer.bytes_queued + len(self._opus) * PCM_BLOCK_SIZE <= self._refill_at
        ):
            room.set()
            self._room = trio.Event()
        drained = self._drained
        if self._drained_waiters and (force or not self.frames_pending):
            drained.set()
            self._drained = trio.Event()

    # -- speaking -------------------------------------------------------------------------------

    async def set_speaking(self, flags: SpeakingFlags | int | bool) -> None:
        if isinstance(flags, bool):
            value = int(SpeakingFlags.MICROPHONE) if flags else 0
        elif isinstance(flags, int):
            value = int(flags)
            if value & ~0b111 or value < 0:
                raise UsageError(
                    f"speaking flags must combine MICROPHONE=1, SOUNDSHARE=2 and PRIORITY=4, "
                    f"got {flags!r}"
                )
        else:
            raise UsageError(f"speaking must be SpeakingFlags or a bool, got {type(flags)}")
        if self._closed:
            return
        self._speaking = value
        self._speaking_sent_on = None
        await self._sync_speaking()

    async def _sync_speaking(self) -> None:
        """Send op 5 once per websocket: a resume or a move opens a new one that has not seen it."""
        if not self._is_ready():
            return
        connection_id = self._connection_id()
        if self._speaking_sent_on == connection_id:
            return
        self._speaking_sent_on = connection_id
        await self._send_speaking(self._speaking)

    async def keep_speaking(self) -> None:
        """Re-announce speaking after a resume or a server move (a task in the nursery)."""
        while True:
            changed = self._changed()
            if self._speaking and self._speaking_sent_on != self._connection_id():
                await self._sync_speaking()
            await changed.wait()

    # -- playing --------------------------------------------------------------------------------

    async def play(self, source: AudioSource) -> int:
        if not isinstance(source, AudioSource):
            raise UsageError(
                f"play() needs an AudioSource (PcmSource, OggOpusSource, AvSource), "
                f"got {type(source).__name__}"
            )
        async with self._play_lock:
            start = self._pacer.stats.frames_sent
            try:
                if self._closed:
                    return 0
                async for frame in source:
                    if source.kind is SourceKind.OPUS:
                        await self._queue_opus(frame)
                    else:
                        await self.send(frame)
                    if self._closed:
                        break
                self._buffer.flush_padded()
                self._poke()
                while self.frames_pending and not self._closed:
                    drained = self._drained
                    await self._wait_drained(drained)
            except trio.Cancelled:
                if not self._closed:
                    # What this play queued must not play on after it was cancelled; the pacer
                    # ends the audio with its silence tail.
                    self.clear()
                    self._pacer.stop()
                    self._poke()
                raise
            finally:
                with trio.CancelScope(shield=True):
                    await source.aclose()
            return self._pacer.stats.frames_sent - start

    async def _queue_opus(self, packet: bytes) -> None:
        while len(self._opus) >= self._opus_capacity and not self._closed:
            room = self._room
            await self._wait_room(room)
        if self._closed:
            return
        self._opus.append(packet)
        self._poke()

    # -- the send task --------------------------------------------------------------------------

    def _fill(self, ahead: int = ENCODE_AHEAD, *, inline: bool = False) -> None:
        """Keep up to ``ahead`` frames encoded: on this thread, or on the pool's workers while the
        process encodes more than the trio thread should (see ``voice_encoder_pool``).
        ``inline`` encodes here in any case: a run's first frame goes out as soon as it can."""
        ready = self._ready
        took = self._job is not None and self._collect()
        pool = self._pool
        offload = pool is not None and pool.offloading and not inline
        if offload:
            ahead = OFFLOAD_AHEAD
        while len(ready) + self._in_flight < ahead and self._job is None:
            if self._opus:
                ready.append(self._opus.popleft())
                took = True
                continue
            if offload:
                took = self._submit(ahead - len(ready)) or took
                break
            pcm = self._buffer.read_frame()
            if pcm is None:
                break
            took = True
            encoder = self._encoder
            if encoder is None:
                encoder = self._encoder = self._settings.create()
            started = time.perf_counter_ns()
            packet = encoder.encode(pcm)
            elapsed = time.perf_counter_ns() - started
            self._encode_ns += elapsed
            self._encoded += 1
            ready.append(packet)
            if pool is not None:
                pool.note_encoded(elapsed, trio.current_time())
        if took:
            self._release_room()

    def _submit(self, count: int) -> bool:
        """Hand up to ``count`` PCM frames to a worker; False if there was none."""
        frames: list[bytes] = []
        while len(frames) < count:
            pcm = self._buffer.read_frame()
            if pcm is None:
                break
            frames.append(pcm)
        if not frames:
            return False
        encoder = self._encoder
        if encoder is None:
            encoder = self._encoder = self._settings.create()
        assert self._pool is not None
        self._job = EncodeJob(encoder, self._encoder_lock, frames, self._generation)
        self._in_flight = len(frames)
        self._pool.submit(self._job)
        return True

    def _collect(self) -> bool:
        """Take the in-flight job's packets if they are back; True if they were."""
        job = self._job
        if job is None or not job.results:
            return False
        generation, packets, elapsed, error = job.results.popleft()
        self._job = None
        self._encode_ns += elapsed
        self._encoded += len(packets)
        if self._pool is not None:
            self._pool.note_encoded(elapsed, trio.current_time())
        if generation == self._generation:
            self._in_flight = 0
            if error is not None:
                raise error
            self._ready.extend(packets)
        return True

    async def run(self) -> None:
        """The connection's send task: it prepares each run of audio, and the clock paces it.

        Only events wake it (the connection changed, audio arrived, the clock let go), never a
        frame: the shared clock calls :meth:`step` for every frame (see
        :mod:`~discore_voice._shell.voice_sender_clock` for why).
        """
        clock = send_clock()
        self._pool = encoder_pool()
        await _warm_up_opus()
        try:
            while not self._closed:
                changed = self._changed()
                wake = self._wake
                if not self._can_send():
                    await changed.wait()
                    continue
                # Only the run's first frame here: the clock encodes the rest in its slack.
                self._fill(1, inline=True)
                if not self._ready and self._job is not None:
                    # A worker still has this connection's next frames (from before a pause
                    # or a move): wait for them here; workers cannot wake this task.
                    await trio.sleep(_ENCODE_WAIT)
                    continue
                audio_ready = bool(self._ready) and not self._paused
                if audio_ready and not self._speaking:
                    # Discord ignores audio from an SSRC that is not speaking.
                    await self.set_speaking(SpeakingFlags.MICROPHONE)
                    continue
                if not audio_ready and not self._pacer.running:
                    self._wake_waiting = True
                    await wake.wait()
                    continue
                self._released = released = trio.Event()
                clock.attach(self, trio.current_time())
                await released.wait()
                if self._failure is not None:
                    raise self._failure
        finally:
            clock.detach(self)

    def _can_send(self) -> bool:
        udp = self._udp()
        return self._is_ready() and udp is not None and udp.cipher is not None

    def detached(self, error: BaseException | None) -> None:
        if error is not None:
            self._failure = error
        self._released.set()

    def fill(self) -> None:
        self._fill()

    def step(self, now: float) -> float | None:
        """Send the frame due at ``now`` (the clock calls it); return when the next one is due.

        None hands the sender back to its task: the run is over (the silence tail went out),
        audio is ready but speaking is off, or the connection cannot send right now.
        """
        link = self._link
        if link is None:
            link = self._relink_now()
        if link is False or link is True:
            return None
        udp, media_encrypt = link
        cipher = udp.cipher
        if cipher is None:
            return None
        pacer = self._pacer
        if self._failure is not None:
            raise self._failure
        ready = self._ready
        if not ready:
            self._fill()
            if not ready and self._job is not None:
                # Its audio is on a worker right now (or, after a clear, the worker still has
                # the encoder): late beats silence, and the pacer skips it if it gets too late.
                return now + _ENCODE_WAIT
            if not ready and self._buffer.bytes_queued and pacer.running:
                due = pacer.due_at
                if due is not None and now >= due - DEFAULT_MAX_EARLY:
                    # An underrun with a partial frame left: the audio stopped, so pad it.
                    self._buffer.flush_padded()
                    self._fill()
        audio_ready = bool(ready) and not self._paused
        if audio_ready and not self._speaking:
            return None
        while True:
            action = pacer.next_action(now, audio_ready=audio_ready)
            if type(action) is Send:
                break
            if type(action) is Skip:
                # A stall: the slots that passed are gone, but audio is kept (a track loses
                # nothing, it only starts late) and the timestamp has moved on with real time.
                continue
            until = action.until  # type: ignore[union-attr]
            # The clock calls up to BATCH_SLACK before the time it is given; a Wait means not
            # before ``until``, and an earlier call would only get the same Wait (a spin).
            return None if until is None else until + BATCH_SLACK
        payload = OPUS_SILENCE_FRAME if action.is_silence else media_encrypt(ready.popleft())
        datagram = cipher.encrypt_opus(action.sequence, action.timestamp, udp.ssrc, payload)
        if not udp.send_nowait(datagram):
            self._dropped += 1
        gap = action.gap
        if gap is not None:
            self._gaps.append(gap)
            if gap > self._gap_max:
                self._gap_max = gap
        if self._room_waiters or self._drained_waiters:
            self._release_room()
        return pacer.due_at


async def _warm_up_opus() -> None:
    """Load libopus in a worker thread while the connection is still handshaking.

    The first load imports pyogg, which probes its libraries with ``ldconfig`` and ``gcc``
    subprocesses: about 50 ms of CPU, measured as the longest gap of a whole PCM stream when it
    happened on the trio thread at the first frame (and every connection's frames wait for it).
    A missing library is not reported here: only encoding needs it, and the first PCM frame
    reports it as before. Later connections find it loaded and skip the thread.
    """
    if opus_load_attempted():
        return
    with contextlib.suppress(NativeLibraryMissing):
        await trio.to_thread.run_sync(load_opus, abandon_on_cancel=True)


class VoiceSendingMixin:
    """The send API of :class:`VoiceConnection`; every call is a no-op on an invalid connection."""

    #: One 20 ms frame of 48 kHz s16le stereo: Discore's ``PCM_BLOCK_SIZE``.
    PCM_BLOCK_SIZE: Final = PCM_BLOCK_SIZE

    _sender: VoiceSender

    def can_send_voice_data(self, size: int) -> bool:
        """Whether ``send_voice_data_nowait`` of ``size`` bytes would queue them now."""
        return self._sender.can_send(size)

    def send_voice_data_nowait(self, pcm: bytes | bytearray | memoryview) -> None:
        """Queue 48 kHz s16le stereo PCM, all or nothing; raise ``VoiceBufferFull`` without room.

        Blocks need not be whole frames: the remainder waits for the next block, and is padded
        with silence if the audio stops.
        """
        self._sender.send_nowait(pcm)

    async def send_voice_data(self, pcm: bytes | bytearray | memoryview) -> None:
        """Queue PCM, waiting for room: back-pressure in place of Discore's poll-and-sleep."""
        await self._sender.send(pcm)

    @property
    def bytes_to_send(self) -> int:
        """Queued PCM not yet sent (Discore's ``BytesToSend``)."""
        return self._sender.bytes_to_send

    def clear_voice_buffer(self) -> int:
        """Drop queued audio; five silence frames end what was playing. Returns bytes dropped."""
        return self._sender.clear()

    @property
    def paused(self) -> bool:
        """Discore's ``IsPaused``: pausing sends five silence frames and keeps the queue, and
        resuming carries on from it, stamped with the time that passed."""
        return self._sender.paused

    @paused.setter
    def paused(self, value: bool) -> None:
        self._sender.paused = value

    @property
    def is_speaking(self) -> bool:
        """Whether we announced speaking (Discord drops audio from an SSRC that is not)."""
        return bool(self._sender.speaking)

    @property
    def speaking_flags(self) -> SpeakingFlags:
        """The flags last announced, or to announce when the connection is next ready."""
        return SpeakingFlags(self._sender.speaking)

    async def set_speaking(self, flags: SpeakingFlags | int | bool = True) -> None:
        """Announce speaking (op 5). Sending turns it on by itself; set it to use other flags."""
        await self._sender.set_speaking(flags)

    async def play(self, source: AudioSource) -> int:
        """Play ``source`` to its end; returns the audio frames sent meanwhile.

        Cancelling it drops what it queued and ends with five silence frames. A source that
        fails raises its error, naming it; what was already queued keeps playing.
        """
        return await self._sender.play(source)

    @property
    def send_stats(self) -> SendStats:
        """What this connection sent so far, for monitoring: counts, encode time, send gaps."""
        return self._sender.stats()
