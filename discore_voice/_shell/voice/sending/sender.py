"""A connection's send task, and the send side as the connection sees it.

It also holds the connection's player (its tracks, their mixer and the queue), whose frames
the producer encodes. The task prepares each run of audio and hands the frames to the shared
send clock (``clock``), which drives the connection's :class:`~.stepper.SendStepper` without a
task switch per frame; ``clock``'s docstring has the measurements behind that design. The task
itself wakes only for events (audio written, the link or the pause changed, the clock letting
go), never per frame.

When it has audio but no link, it tells the session task (:class:`AudioReady`): the core turns
speaking on, announces it (Discord drops audio from an SSRC that is not speaking), and pushes a
link once the connection can send.

A connection keeps one sender for its whole life, so the pacer (and with it the RTP sequence
number and timestamp) survives pauses, resumes and server moves.
"""

from __future__ import annotations

import contextlib
import logging
import secrets

import trio

from ...._audio.opus import EncoderSettings
from ...._core.pacing import Pacer
from ...._core.voice.events import Invalidated
from ...._errors import NativeLibraryMissing, UsageError
from ...._native import load_opus, opus_load_attempted
from ..messages import AudioReady, Message
from ..player.player import Player
from ..player.queue import TrackQueue
from .clock import send_clock
from .encoder_pool import encoder_pool
from .producer import PcmProducer, Wakeup
from .stepper import ENCODE_WAIT, SendLink, SendStats, SendStepper

__all__ = ["VoiceSender"]


class VoiceSender:
    """The send side of one connection: its producer, its stepper, and the task between them.

    Every operation after :meth:`close` is a no-op, as Discore wants of an invalid connection.
    """

    def __init__(
        self,
        buffer_size: int,
        encoder: EncoderSettings,
        inbox: trio.MemorySendChannel[Message],
        log: logging.Logger | logging.LoggerAdapter[logging.Logger],
    ) -> None:
        self._wakeup = Wakeup()
        self.producer = PcmProducer(buffer_size, encoder, self._wakeup)
        # Random starting points, as RFC 3550 asks: receivers must not assume zero.
        pacer = Pacer(sequence=secrets.randbelow(1 << 16), timestamp=secrets.randbelow(1 << 32))
        self.stepper = SendStepper(self.producer, pacer, log)
        self.player = Player(self.producer.mixer)
        self.queue = TrackQueue(self.player)
        self._inbox = inbox
        self._closed = False

    # --- pushed by the session task ---------------------------------------------------------

    def set_link(self, link: SendLink | None) -> None:
        """What frames go out through from now on; None stops sending (and the clock lets go)."""
        if self._closed:
            link = None
        self.stepper.link = link
        self._wakeup.poke()

    def close(self, invalidation: Invalidated | None = None) -> None:
        """The connection is invalid: drop everything, end every track with ``invalidation``,
        release every waiter."""
        if self._closed:
            return
        self._closed = True
        self.stepper.link = None
        self.player.close(invalidation)
        self.producer.close(invalidation)
        self.queue.close(invalidation)
        self._wakeup.poke()

    # --- what the connection exposes --------------------------------------------------------

    @property
    def paused(self) -> bool:
        return self.stepper.paused

    @paused.setter
    def paused(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise UsageError(f"paused must be a bool, got {type(value).__name__}")
        stepper = self.stepper
        if self._closed or value == stepper.paused:
            return
        stepper.paused = value
        if value:
            stepper.pacer.pause()
        else:
            stepper.pacer.resume()
        self._wakeup.poke()

    def stats(self) -> SendStats:
        return self.stepper.stats()

    def next_send_at(self) -> float | None:
        """When the next frame goes out, while frames are going out; else None.

        The receiver ticks half a frame away from it, so its decoding never delays a send.
        """
        pacer = self.stepper.pacer
        if self.stepper.link is None or not pacer.running:
            return None
        return pacer.due_at

    # --- the task ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Prepare each run of audio; the clock paces it. Only events wake this task."""
        clock = send_clock()
        self.producer.pool = encoder_pool()
        await _warm_up_opus()
        stepper = self.stepper
        producer = self.producer
        reported = False  # AudioReady sent since the link went away
        try:
            while not self._closed:
                if stepper.link is None:
                    if producer.frames_pending and not stepper.paused and not reported:
                        reported = True
                        await self._inbox.send(AudioReady())
                        continue
                    await self._wakeup.wait()
                    continue
                reported = False
                # Only the run's first frame here: the clock encodes the rest in its slack.
                producer.fill(1, inline=True)
                if not producer.has_ready_frame and producer.job_in_flight:
                    # A worker still has this connection's next frames (from before a pause or
                    # a move): wait for them here; workers cannot wake this task.
                    await trio.sleep(ENCODE_WAIT)
                    continue
                audio_ready = producer.has_ready_frame and not stepper.paused
                if not audio_ready and not stepper.pacer.running:
                    await self._wakeup.wait()
                    continue
                stepper.released = released = trio.Event()
                clock.attach(stepper, trio.current_time())
                await released.wait()
                if stepper.failure is not None:
                    raise stepper.failure
        finally:
            clock.detach(stepper)


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
