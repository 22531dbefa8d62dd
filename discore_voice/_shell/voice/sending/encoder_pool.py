"""Opus encoding off the trio thread, for when the PCM streams of one process outgrow it.

libopus releases the GIL for the length of an encode (ctypes does), so encodes on worker threads
run in parallel with each other and with the trio thread. That only pays when there is a lot of
encoding: handing a frame to a thread costs a queue hop and a thread wake-up, and a single
stream encoded on the trio thread, in the send clock's slack, costs less CPU in all. So the pool
measures the encoding done in this trio run and is used only while it exceeds
:data:`OFFLOAD_ABOVE` of a core (with in-band FEC on, about 20 streams on the project's machine;
100 of them need 1.35 cores, which no single thread has).

A job is one connection's next few frames. Each connection has at most one job in flight, so its
encoder (which has state) is used by one thread at a time and its packets come back in order.
Workers never touch a sender: they put the packets on the job's ``results`` deque (appending is
atomic) and the trio thread collects them when it next looks at that connection. A job whose
audio was cleared meanwhile comes back with a stale ``generation`` and is dropped.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Final

import trio

from ...._audio.opus import OpusEncoder
from ...._errors import DiscoreVoiceError

__all__ = ["OFFLOAD_ABOVE", "EncodeJob", "EncoderPool", "EncoderWorkerError", "encoder_pool"]

#: Share of a core spent encoding (over the last second) above which encoding moves to workers.
OFFLOAD_ABOVE: Final = 0.3
#: And below which it comes back to the trio thread: a gap between the two avoids flapping.
INLINE_BELOW: Final = 0.15
_WINDOW: Final = 1.0
_SHORT_WINDOW: Final = 0.02


class EncoderWorkerError(DiscoreVoiceError):
    """A worker's encode ended in a BaseException that is not an Exception; it is the cause."""


@dataclass(slots=True)
class EncodeJob:
    """Frames of one connection, to encode in order; the result lands on ``results``."""

    encoder: OpusEncoder
    lock: threading.Lock
    frames: list[bytes]
    generation: int
    results: deque[tuple[int, list[bytes], int, BaseException | None]] = field(
        default_factory=deque
    )


class EncoderPool:
    """Worker threads plus the load measurement that decides whether to use them."""

    def __init__(self, workers: int | None = None) -> None:
        self._workers = max(1, workers if workers is not None else (os.cpu_count() or 1))
        self._jobs: queue.SimpleQueue[list[EncodeJob] | None] = queue.SimpleQueue()
        self._pending: list[EncodeJob] = []
        self._token = trio.lowlevel.current_trio_token()
        self._threads: list[threading.Thread] = []
        self._window_start = 0.0
        self._encode_ns = 0
        self._closed = False
        self.offloading = False
        """Whether senders should hand their encodes to the workers now."""

    def __repr__(self) -> str:
        return f"<EncoderPool workers={len(self._threads)} offloading={self.offloading}>"

    def note_encoded(self, nanoseconds: int, now: float) -> None:
        """Count encoding done anywhere (trio thread or worker) towards the load estimate.

        The load is judged over one frame period to start offloading (100 streams starting
        together are over the limit within their first frame) and over a second to stop.
        """
        self._encode_ns += nanoseconds
        elapsed = now - self._window_start
        window = _WINDOW if self.offloading else _SHORT_WINDOW
        if elapsed < window:
            return
        load = self._encode_ns / 1e9 / elapsed
        if not self.offloading and load > OFFLOAD_ABOVE:
            self.offloading = True
        elif self.offloading and load < INLINE_BELOW:
            self.offloading = False
        self._window_start = now
        self._encode_ns = 0

    def submit(self, job: EncodeJob) -> None:
        """Queue ``job``; the jobs submitted until the trio thread next yields go out together.

        One hand-over per batch, split among the workers, rather than one thread wake-up per
        connection and frame: 100 streams would otherwise wake a worker 5000 times a second.
        """
        self._pending.append(job)
        if len(self._pending) == 1:
            self._token.run_sync_soon(self._flush)

    def _flush(self) -> None:
        jobs, self._pending = self._pending, []
        if not jobs or self._closed:
            return
        if not self._threads:
            for index in range(self._workers):
                thread = threading.Thread(
                    target=self._work, name=f"discore_voice encoder {index}", daemon=True
                )
                thread.start()
                self._threads.append(thread)
        share = -(-len(jobs) // len(self._threads))
        for start in range(0, len(jobs), share):
            self._jobs.put(jobs[start : start + share])

    def close(self) -> None:
        """Let the workers finish their jobs and end (the trio run is over)."""
        self._closed = True
        for _ in self._threads:
            self._jobs.put(None)
        self._threads.clear()

    def _work(self) -> None:
        while True:
            batch = self._jobs.get()
            if batch is None:
                return
            for job in batch:
                _encode(job)


def _encode(job: EncodeJob) -> None:
    packets: list[bytes] = []
    error: BaseException | None = None
    started = time.perf_counter_ns()
    try:
        with job.lock:  # the connection may close its encoder meanwhile
            if not job.encoder.closed:
                for frame in job.frames:
                    packets.append(job.encoder.encode(frame))
    except Exception as exc:  # handed to the connection, which fails with it
        error = exc
    except BaseException as exc:
        # Not an Exception (a SystemExit from a misbehaving library, say): raised as it is on
        # the trio thread it would end the whole run, every other connection with it. Only this
        # connection fails, and the original stays attached as the cause.
        error = EncoderWorkerError(f"an encoder worker thread raised {type(exc).__name__}")
        error.__cause__ = exc
    finally:
        # Always answered: the connection waits for this job before encoding anything else.
        job.results.append((job.generation, packets, time.perf_counter_ns() - started, error))


_pool: trio.lowlevel.RunVar[EncoderPool] = trio.lowlevel.RunVar("discore_voice_encoder_pool")


def encoder_pool() -> EncoderPool:
    """This trio run's encoder pool; its threads start with the first job and end with the run."""
    try:
        return _pool.get()
    except LookupError:
        pool = EncoderPool()
        _pool.set(pool)
        trio.lowlevel.spawn_system_task(_close_at_exit, pool, name="discore_voice encoder pool")
        return pool


async def _close_at_exit(pool: EncoderPool) -> None:
    try:
        await trio.sleep_forever()
    finally:
        pool.close()
