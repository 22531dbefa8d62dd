"""The producer side of sending: Discore's PCM buffer, the player's mixer, and the encoder.

User calls write PCM here (``send_voice_data``); tracks feed the mixer
(``player/mixer.py``), which mixes them with that PCM frame by frame. The send clock takes
encoded frames out through :meth:`PcmProducer.fill` and :meth:`PcmProducer.take`. Encoding
happens ahead of the clock, a frame or a few at a time:

* A libopus encode costs ~130 µs (FEC off) to ~300 µs (FEC on). Handing each frame to
  ``trio.to_thread`` cost ~240 µs of CPU per frame for the same work, so while a process encodes
  little, the clock encodes on its own thread, only in the slack: every due frame goes out first,
  and each producer keeps :data:`ENCODE_AHEAD` frames ready. Once encoding costs more than a third
  of a core (100 PCM streams with FEC need 1.5 cores), it moves to the worker threads of
  :mod:`encoder_pool`, one job per connection in flight.
* Writers wait for room only on a full buffer, and are woken once per 30-70 % of it (drawn per
  connection), not once per frame: waking a task costs more than sending a frame, and hundreds of
  connections share one thread (measured at N=1000: refilling in step stalled every stream's
  frames for a tenth of a second, twice a second).

Every operation after :meth:`close` is a no-op, as Discore wants of an invalid connection.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import deque
from typing import Final

import trio

from ...._audio.opus import EncoderSettings, OpusEncoder
from ...._core.pcm_buffer import DEFAULT_CAPACITY, PCM_BLOCK_SIZE, PcmBuffer
from ...._core.voice.events import Invalidated
from ...._errors import UsageError
from ..player.mixer import Mixer
from .encoder_pool import EncodeJob, EncoderPool

__all__ = ["DEFAULT_BUFFER_SIZE", "ENCODE_AHEAD", "OFFLOAD_AHEAD", "PcmProducer", "Wakeup"]

#: Frames mixed and encoded before their slot. One: the clock encodes the next frame right after
#: it sent one, a full frame before that frame is due, so a change to the mix (a volume, a
#: pause, an effect) is heard 20-40 ms later. Tracks read ahead on their own, so a late
#: producer does not starve the encoder.
ENCODE_AHEAD: Final = 1
#: Frames encoded ahead while encoding runs on the worker threads: one more, for the hop there
#: and back (and a worker that waits for the GIL after its encode).
OFFLOAD_AHEAD: Final = 3
#: The PCM buffer's default size: one second (see :mod:`discore_voice._core.pcm_buffer` for why).
DEFAULT_BUFFER_SIZE: Final = DEFAULT_CAPACITY


class Wakeup:
    """How the send task sleeps until there is something to do: audio written, the link or the
    pause changed. Poking costs an attribute read when the task is not asleep (per frame)."""

    __slots__ = ("_event", "_waiting")

    def __init__(self) -> None:
        self._event = trio.Event()
        self._waiting = False

    def poke(self) -> None:
        if self._waiting:
            self._waiting = False
            self._event.set()
            self._event = trio.Event()

    async def wait(self) -> None:
        self._waiting = True
        await self._event.wait()


class PcmProducer:
    """One connection's queued audio, PCM and Opus, and its encoder. ``wakeup`` is poked
    whenever audio is written, for the send task."""

    def __init__(self, buffer_size: int, settings: EncoderSettings, wakeup: Wakeup) -> None:
        self.mixer = Mixer(wakeup)
        self._stash: tuple[bool, bytes] | None = None  # a passthrough frame a batch stopped at
        self._buffer = PcmBuffer(buffer_size)
        capacity = self._buffer.capacity
        # At least the part of a frame a full buffer can leave over, or a writer would wait for
        # room that only the underrun padding could make.
        self._refill_at = max(
            capacity * (30 + secrets.randbelow(41)) // 100, capacity % PCM_BLOCK_SIZE
        )
        self._ready: deque[bytes] = deque()
        self._settings = settings
        self._encoder: OpusEncoder | None = None
        # Encoding on the pool's workers: the job in flight (at most one, so the encoder is
        # used by one thread at a time), how many of its frames still count as queued audio,
        # and a generation that clear() bumps so a job's stale packets are dropped.
        self.pool: EncoderPool | None = None
        self._job: EncodeJob | None = None
        self._in_flight = 0
        self._generation = 0
        self._encoder_lock = threading.Lock()
        self._room = trio.Event()
        self._drained = trio.Event()
        self._wakeup = wakeup
        # Waiters are counted by hand: ``Event.statistics()`` costs more than the rest of a check
        # that runs for every frame of every connection.
        self._room_waiters = 0
        self._drained_waiters = 0
        self._closed = False
        self.encode_ns = 0
        self.frames_encoded = 0

    # --- what is queued -------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def bytes_to_send(self) -> int:
        """PCM not yet sent, counting frames already encoded ahead (they are still to be heard)."""
        queued = len(self._ready) + self._in_flight
        return self._buffer.bytes_queued + queued * PCM_BLOCK_SIZE

    @property
    def frames_pending(self) -> int:
        """Frames made and not yet sent, plus whether the PCM buffer or a track has more."""
        made = len(self._ready) + self._in_flight + (self._stash is not None)
        return made + self._buffer.frames_ready + self.mixer.has_audio

    @property
    def has_ready_frame(self) -> bool:
        return bool(self._ready)

    @property
    def job_in_flight(self) -> bool:
        """A worker has this connection's next frames: nothing else may be encoded meanwhile."""
        return self._job is not None

    @property
    def partial_frame_queued(self) -> bool:
        return self._buffer.bytes_queued > 0

    # --- the user's side ------------------------------------------------------------------

    def can_accept(self, size: int) -> bool:
        if self._closed:
            return False
        return self._buffer.can_accept(size)

    def write_nowait(self, pcm: bytes | bytearray | memoryview) -> None:
        """All of ``pcm`` or nothing: ``VoiceBufferFull`` when it does not fit."""
        if self._closed:
            return
        self._buffer.write(pcm)
        self._audio_arrived()

    async def write(self, pcm: bytes | bytearray | memoryview) -> None:
        """Queue all of ``pcm``, waiting for room as the sender drains the buffer."""
        if not isinstance(pcm, bytes | bytearray | memoryview):
            raise UsageError(f"PCM data must be bytes-like, got {type(pcm).__name__}")
        if self._closed:
            return
        view = memoryview(pcm).cast("B") if not isinstance(pcm, bytes) else memoryview(pcm)
        offset = 0
        while True:
            offset += self._buffer.write_partial(view[offset:])
            self._audio_arrived()
            if offset >= len(view) or self._closed:
                return
            await self._wait_room()
            if self._closed:
                return

    def flush_padded(self) -> None:
        """The audio stopped: pad a partial frame with silence so that it is heard."""
        self._buffer.flush_padded()
        self._audio_arrived()

    def clear(self) -> int:
        """Drop queued PCM and the frames made ahead of sending; return the bytes.

        Tracks keep playing: they are stopped through their handles.
        """
        dropped = self.bytes_to_send
        self._buffer.clear()
        self._ready.clear()
        self._stash = None
        self._generation += 1  # a job in flight now encodes for nobody
        self._in_flight = 0
        self.mixer.dropped_queued()
        self.release(force=True)
        return dropped

    def close(self, invalidation: Invalidated | None = None) -> None:
        """The connection is invalid: drop everything, end every track, release every waiter."""
        if self._closed:
            return
        self._closed = True
        self.mixer.close(invalidation)
        self.clear()
        self._audio_arrived()
        if self._encoder is not None:
            with self._encoder_lock:  # a worker may be encoding with it right now
                self._encoder.close()
            self._encoder = None

    # --- waiting --------------------------------------------------------------------------

    async def _wait_room(self) -> None:
        room = self._room
        self._room_waiters += 1
        try:
            await room.wait()
        finally:
            self._room_waiters -= 1

    async def wait_drained(self) -> None:
        """Until everything queued went out (or was cleared, or the connection ended)."""
        while self.frames_pending and not self._closed:
            drained = self._drained
            self._drained_waiters += 1
            try:
                await drained.wait()
            finally:
                self._drained_waiters -= 1

    def _audio_arrived(self) -> None:
        self._wakeup.poke()

    def release(self, *, force: bool = False) -> None:
        """Wake writers once enough of the queue is free, and players once all went out.

        Called for every frame, so it costs nothing when nobody waits.
        """
        if self._room_waiters and (force or self._buffer.bytes_queued <= self._refill_at):
            self._room.set()
            self._room = trio.Event()
        if self._drained_waiters and (force or not self.frames_pending):
            self._drained.set()
            self._drained = trio.Event()

    @property
    def waiters(self) -> bool:
        return bool(self._room_waiters or self._drained_waiters)

    # --- the clock's side -----------------------------------------------------------------

    def take(self) -> bytes | None:
        """The next encoded frame, if one is ready."""
        ready = self._ready
        if not ready:
            return None
        self.mixer.frame_taken()
        return ready.popleft()

    def fill(self, ahead: int = ENCODE_AHEAD, *, inline: bool = False) -> None:
        """Keep up to ``ahead`` frames encoded: on this thread, or on the pool's workers while the
        process encodes more than the trio thread should. ``inline`` encodes here in any case: a
        run's first frame goes out as soon as it can."""
        ready = self._ready
        took = self._job is not None and self._collect()
        pool = self.pool
        offload = pool is not None and pool.offloading and not inline
        if offload:
            ahead = OFFLOAD_AHEAD
        while len(ready) + self._in_flight < ahead and self._job is None:
            if offload:
                took = self._submit(ahead - len(ready)) or took
                break
            item = self._next_frame()
            if item is None:
                break
            took = True
            passthrough, data = item
            if passthrough:
                ready.append(data)
                continue
            encoder = self._encoder
            if encoder is None:
                encoder = self._encoder = self._settings.create()
            started = time.perf_counter_ns()
            packet = encoder.encode(data)
            elapsed = time.perf_counter_ns() - started
            self.encode_ns += elapsed
            self.frames_encoded += 1
            ready.append(packet)
            if pool is not None:
                pool.note_encoded(elapsed, trio.current_time())
        if took:
            self.release()

    def _next_frame(self) -> tuple[bool, bytes] | None:
        """The next frame to send: the mixer's take on the tracks and the PCM buffer."""
        stash = self._stash
        if stash is not None:
            self._stash = None
            return stash
        if self._closed:
            return None
        return self.mixer.next_frame(self._buffer.read_frame())

    def _submit(self, count: int) -> bool:
        """Hand up to ``count`` PCM frames to a worker; False if there was none. A passthrough
        frame goes straight out when it comes first, or waits for the batch ahead of it."""
        frames: list[bytes] = []
        while len(frames) < count:
            item = self._next_frame()
            if item is None:
                break
            passthrough, data = item
            if passthrough:
                if frames:
                    self._stash = item
                    break
                self._ready.append(data)
                return True
            frames.append(data)
        if not frames:
            return False
        encoder = self._encoder
        if encoder is None:
            encoder = self._encoder = self._settings.create()
        assert self.pool is not None
        self._job = EncodeJob(encoder, self._encoder_lock, frames, self._generation)
        self._in_flight = len(frames)
        self.pool.submit(self._job)
        return True

    def _collect(self) -> bool:
        """Take the in-flight job's packets if they are back; True if they were."""
        job = self._job
        if job is None or not job.results:
            return False
        generation, packets, elapsed, error = job.results.popleft()
        self._job = None
        self.encode_ns += elapsed
        self.frames_encoded += len(packets)
        if self.pool is not None:
            self.pool.note_encoded(elapsed, trio.current_time())
        if generation == self._generation:
            self._in_flight = 0
            if error is not None:
                raise error
            self._ready.extend(packets)
        return True
