"""The stepper: what the send clock calls for each frame of a connection, and its link.

The sans-IO :class:`~discore_voice._core.pacing.Pacer` says when each frame goes out and with
which RTP numbers; the stepper asks it, takes the frame from the producer, seals it (DAVE, then
the transport cipher) and writes it to the connected UDP socket, all in one synchronous call from
the clock, without a task switch. It sends through a :class:`SendLink` the session task pushes
whenever the connection's media state changes, and None when sending must stop: per frame, the
link is one attribute read.

A frame the kernel has no room for is dropped and counted: it would be late by the time there
was, and the pacer never bursts to catch up.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass, field
from typing import Final

import trio

from ...._core.gap_histogram import GapHistogram
from ...._core.pacing import DEFAULT_MAX_EARLY, Pacer, Send, Skip
from ...._core.speaking import OPUS_SILENCE_FRAME
from ...._core.transport import TransportCipher
from ...._core.voice.media import MediaCrypto
from .clock import BATCH_SLACK
from .producer import PcmProducer

__all__ = ["ENCODE_WAIT", "SendLink", "SendStats", "SendStepper"]

#: How soon to look again when the frame that is due is still being encoded by a worker. Longer
#: than the clock's batch slack, or the clock would call again in the same pass: a spin that
#: holds the GIL the worker needs to hand its packets back.
ENCODE_WAIT: Final = 0.002


@dataclass(frozen=True, slots=True)
class SendLink:
    """Everything a frame goes out through, as one immutable value: the connected socket, the
    transport cipher, the DAVE layer and our SSRC. Replaced whole, never changed."""

    sock: socket.socket = field(repr=False)
    cipher: TransportCipher = field(repr=False)
    crypto: MediaCrypto = field(repr=False)
    ssrc: int


@dataclass(frozen=True, slots=True)
class SendStats:
    """A snapshot of what a connection sent; cumulative over the connection's life.

    Gaps are measured on trio's clock between consecutive sends of a run, so they show the
    pacing itself (what a receiver sees adds the network's jitter). Minimum and maximum are
    exact; the percentiles are within 0.05 ms up to 50 ms and within 0.5 ms beyond.
    """

    frames_sent: int
    silence_frames: int
    skipped_late: int
    stalls: int
    frames_encoded: int
    encode_time_us: float
    packets_dropped: int
    gap_min_ms: float
    gap_p50_ms: float
    gap_p99_ms: float
    gap_max_ms: float

    @property
    def encode_mean_us(self) -> float:
        """Mean encode time per PCM frame; 0 when only pre-encoded Opus was played."""
        return self.encode_time_us / self.frames_encoded if self.frames_encoded else 0.0


class SendStepper:
    """One connection's per-frame send step; the clock drives it (see ``clock.Steppable``)."""

    def __init__(
        self,
        producer: PcmProducer,
        pacer: Pacer,
        log: logging.Logger | logging.LoggerAdapter[logging.Logger],
    ) -> None:
        self.producer = producer
        self.pacer = pacer
        self._log = log
        self.link: SendLink | None = None
        self.paused = False
        self.failure: BaseException | None = None
        self._gaps = GapHistogram()
        self._dropped = 0
        self.released = trio.Event()
        """Set when the clock lets go of the stepper; the send task waits on it."""

    def stats(self) -> SendStats:
        gaps = self._gaps
        pacer = self.pacer.stats
        producer = self.producer
        return SendStats(
            frames_sent=pacer.frames_sent,
            silence_frames=pacer.silence_sent,
            skipped_late=pacer.skipped_late,
            stalls=pacer.stalls,
            frames_encoded=producer.frames_encoded,
            encode_time_us=producer.encode_ns / 1000.0,
            packets_dropped=self._dropped,
            gap_min_ms=(gaps.minimum if gaps.count else 0.0) * 1000.0,
            gap_p50_ms=gaps.percentile(0.50) * 1000.0,
            gap_p99_ms=gaps.percentile(0.99) * 1000.0,
            gap_max_ms=gaps.maximum * 1000.0,
        )

    # --- the clock's interface --------------------------------------------------------------

    def fill(self) -> None:
        self.producer.fill()

    def detached(self, error: BaseException | None) -> None:
        if error is not None:
            self.failure = error
        self.released.set()

    def step(self, now: float) -> float | None:
        """Send the frame due at ``now``; return when the next one is due.

        None hands the stepper back to the send task: the run is over (the silence tail went
        out), or the link is gone (the connection cannot send right now).
        """
        link = self.link
        if link is None:
            return None
        if self.failure is not None:
            raise self.failure
        producer = self.producer
        pacer = self.pacer
        if not producer.has_ready_frame:
            producer.fill()
            if not producer.has_ready_frame and producer.job_in_flight:
                # Its audio is on a worker right now (or, after a clear, the worker still has
                # the encoder): late beats silence, and the pacer skips it if it gets too late.
                return now + ENCODE_WAIT
            if not producer.has_ready_frame and producer.partial_frame_queued and pacer.running:
                due = pacer.due_at
                if due is not None and now >= due - DEFAULT_MAX_EARLY:
                    # An underrun with a partial frame left: the audio stopped, so pad it.
                    producer.flush_padded()
                    producer.fill()
        audio_ready = producer.has_ready_frame and not self.paused
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
        if action.is_silence:
            payload = OPUS_SILENCE_FRAME
        else:
            frame = producer.take()
            assert frame is not None
            payload = link.crypto.encrypt(frame)
            if payload is OPUS_SILENCE_FRAME and frame is not OPUS_SILENCE_FRAME:
                self._encrypt_failed(link.crypto)
        datagram = link.cipher.encrypt_opus(action.sequence, action.timestamp, link.ssrc, payload)
        try:
            link.sock.send(datagram)
        except BlockingIOError:
            self._dropped += 1
        except OSError as exc:
            # ICMP "port unreachable" from an earlier send and the like: UDP is lossy.
            self._dropped += 1
            self._log.debug("UDP send failed: %s", exc.strerror or exc)
        gap = action.gap
        if gap is not None:
            self._gaps.record(gap)
        if producer.waiters:
            producer.release()
        return pacer.due_at

    def _encrypt_failed(self, crypto: MediaCrypto) -> None:
        failures = crypto.stats["encrypt_failed"]
        if failures & (failures - 1) == 0:
            # The first failure, then each power of two: visible without a line per frame.
            self._log.warning(
                "DAVE could not encrypt a frame; sent silence instead (%d so far)", failures
            )
