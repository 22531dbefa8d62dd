"""soak.py's bot: N voice connections in one process that keep playing, and re-join as bots do.

Reads the simulator's JSON line from ``--info``, opens the shards, then:

1. warm-up: joins every guild, plays for a couple of seconds, leaves them all, and samples its
   resources (open fds, OS threads, trio tasks): the *idle* baseline;
2. joins every guild again and plays: even guilds pre-encoded Opus (``OggOpusSource`` of a
   generated file, looped), odd guilds PCM (``send_voice_data``, a looped tone); once all are
   connected it samples the *loaded* baseline and prints ``{"event": "ready"}``;
3. obeys stdin: ``sample LABEL`` (wait until every connection is connected, then sample until
   the counts are back at the loaded baseline, bounded), ``settle SECONDS`` (wait until every
   connection is connected), ``leave`` (leave every guild, then sample against the idle
   baseline), ``quit``.

A connection that is invalidated for any reason but our own leaving is left (its block ends)
and, after a short delay, joined again with a fresh ``voice_connection``, as a real bot would.

Everything it sees goes to ``--events`` as JSON lines stamped with ``time.monotonic()``: every
connection state change (as it happens), Connected and Invalidated, join failures, crashes
(an exception escaping a connection's task, with its traceback), ERROR records of the
``discore_voice`` loggers, RSS every two seconds and the resource samples. Its own log (the
library's INFO and up) goes to ``--log``.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import random
import ssl
import sys
import threading
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import trio
from _soak_common import emit, now

from discore_voice import (
    PCM_BLOCK_SIZE,
    Connected,
    IdentifyLimiter,
    Intents,
    OggOpusSource,
    Shard,
    VoiceConnection,
    VoiceConnectionFailed,
    open_shard,
)
from discore_voice._audio.opus import OpusEncoder
from discore_voice._audio.signals import sine_pcm
from discore_voice.testing._recording import ogg_opus_bytes

#: Seconds a bot waits before joining again after an invalidation (plus up to half as much).
REJOIN_DELAY_S = 1.0
#: Connect timeout of every join (the handshake; op 4 may queue up to a minute more).
CONNECT_TIMEOUT_S = 30.0
#: Length of the generated clips.
OPUS_CLIP_S = 20.0
PCM_CLIP_S = 5.0
#: How often connection states are polled (where they cannot be waited for), and RSS sampled.
RSS_EVERY_S = 2.0

PAGE = os.sysconf("SC_PAGE_SIZE")


# --- what the process looks like ---------------------------------------------------------------


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


def count_tasks() -> int:
    """Every live trio task of this run, system tasks included."""
    root = trio.lowlevel.current_root_task()
    stack = [] if root is None else [root]
    count = 0
    while stack:
        task = stack.pop()
        count += 1
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return count


def resources() -> dict[str, Any]:
    """Open fds, OS threads by family, trio tasks and RSS, now.

    Threads come in three families: trio's thread cache (``Trio thread N``: idle workers end
    after 10 s), the library's encoder pool (``discore_voice encoder N``: one per CPU, started
    with the first offloaded encode and kept for the trio run, by design) and the rest.
    """
    names = [thread.name for thread in threading.enumerate()]
    os_threads = len(os.listdir("/proc/self/task"))
    trio_cache = sum(1 for name in names if name.startswith("Trio thread"))
    encoders = sum(1 for name in names if name.startswith("discore_voice encoder"))
    fd_kinds: Counter[str] = Counter()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # the listing's own fd, closed by now
        if target.startswith(("socket:[", "pipe:[")):
            target = target.split(":[")[0]  # the inode number tells nothing across samples
        fd_kinds[target] += 1
    return {
        "fds": sum(fd_kinds.values()),
        "fd_kinds": dict(fd_kinds),
        "threads": os_threads,
        "threads_trio_cache": trio_cache,
        "threads_encoder_pool": encoders,
        "threads_other": os_threads - trio_cache - encoders,
        "tasks": count_tasks(),
        "rss": rss_bytes(),
        # Python's live memory blocks after a full collection: growth here across quiet points
        # is a leak of objects; RSS growth without it is the allocator keeping its high water.
        "python_blocks": python_blocks(),
    }


def python_blocks() -> int:
    gc.collect()
    return sys.getallocatedblocks()


def within(sample: dict[str, Any], baseline: dict[str, Any], *, trio_cache: bool) -> bool:
    """Whether nothing grew past the baseline (the trio cache only when asked)."""
    keys = ["fds", "threads_other", "tasks"] + (["threads_trio_cache"] if trio_cache else [])
    return all(sample[key] <= baseline[key] for key in keys) and sample[
        "threads_encoder_pool"
    ] <= max(baseline["threads_encoder_pool"], os.cpu_count() or 1)


# --- logging -------------------------------------------------------------------------------------


class Capture(logging.Handler):
    """The library's log lines to a file; its ERROR records also to the events."""

    def __init__(self, log: IO[str], record_event: Any) -> None:
        super().__init__(logging.INFO)
        self.log = log
        self.record_event = record_event

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            at = now()
            self.log.write(f"{at:.4f} {record.levelname} {record.name}: {message}\n")
            if record.exc_info:
                self.log.write("".join(traceback.format_exception(*record.exc_info)))
            if record.levelno >= logging.ERROR:
                self.record_event(
                    "error_log",
                    logger=record.name,
                    level=record.levelname,
                    message=message[:2000],
                    exc="".join(traceback.format_exception(*record.exc_info))[-4000:]
                    if record.exc_info
                    else None,
                )
        except Exception:
            self.handleError(record)


# --- the bot -------------------------------------------------------------------------------------


@dataclass(eq=False)
class Slot:
    index: int
    guild_id: int
    home: int
    shard: int
    kind: str
    vc: VoiceConnection | None = None
    state: str = "absent"
    joins: int = 0


@dataclass(eq=False)
class Phase:
    """One round of connections (the warm-up, then the soak), ended by ``stop``."""

    stop: trio.Event = field(default_factory=trio.Event)
    done: trio.Event = field(default_factory=trio.Event)


class SoakBot:
    def __init__(self, args: argparse.Namespace, info: dict[str, Any]) -> None:
        self.args = args
        self.info = info
        self.events: IO[str] = Path(args.events).open("w", buffering=1)  # noqa: SIM115
        self.log: IO[str] = Path(args.log).open("w", buffering=1)  # noqa: SIM115
        self.context = (
            ssl.create_default_context(cafile=info["ca_pem_path"]) if info["tls"] else None
        )
        self.slots = [
            Slot(
                g["index"],
                int(g["guild_id"]),
                int(g["home"]),
                g["shard"],
                "opus" if g["index"] % 2 == 0 else "pcm",
            )
            for g in info["guilds"]
        ]
        self.shards: dict[int, Shard] = {}
        self.shards_ready = trio.Event()
        #: Set (and replaced) whenever a connection's state changed.
        self.states_changed = trio.Event()
        self.close_shards = trio.Event()
        self.rng = random.Random(args.seed)
        self.pcm = sine_pcm(PCM_CLIP_S, hz=330.0)
        self.ogg_path = Path(args.scratch) / "clip.opus"
        self.baselines: dict[str, dict[str, Any]] = {}
        handler = Capture(self.log, self.record)
        library = logging.getLogger("discore_voice")
        library.setLevel(logging.INFO)
        library.addHandler(handler)
        library.propagate = False

    def record(self, event: str, **fields: Any) -> None:
        fields.setdefault("t", now())
        self.events.write(json.dumps({"event": event, **fields}) + "\n")

    def write_clip(self) -> None:
        pcm = sine_pcm(OPUS_CLIP_S, hz=440.0)
        with OpusEncoder(bitrate=128_000) as encoder:
            packets = [
                encoder.encode(pcm[offset : offset + PCM_BLOCK_SIZE])
                for offset in range(0, len(pcm) - PCM_BLOCK_SIZE + 1, PCM_BLOCK_SIZE)
            ]
        self.ogg_path.write_bytes(ogg_opus_bytes(packets))

    # -- shards ----------------------------------------------------------------------------------

    async def keep_shard(self, shard_id: int, limiter: IdentifyLimiter) -> None:
        try:
            async with open_shard(
                self.info["bot_token"],
                intents=Intents.VOICE_DEFAULT,
                shard_id=shard_id,
                shard_count=self.info["shards"],
                gateway_url=self.info["gateway_url"],
                ssl_context=self.context,
                identify_limiter=limiter,
            ) as shard:
                self.shards[shard_id] = shard
                if len(self.shards) == self.info["shards"]:
                    self.shards_ready.set()
                await self.close_shards.wait()
        except Exception as exc:
            self.record(
                "crash",
                where=f"shard {shard_id}",
                error=repr(exc)[:2000],
                traceback="".join(traceback.format_exception(exc))[-8000:],
            )

    # -- connections -----------------------------------------------------------------------------

    async def runner(self, slot: Slot, phase: Phase) -> None:
        """Join, play until invalidated, leave, wait a little, join again; until ``stop``."""
        failures = 0
        while not phase.stop.is_set():
            try:
                await self.one_connection(slot, phase)
                failures = 0
            except VoiceConnectionFailed as exc:
                failures += 1
                self.record(
                    "join_failed", g=slot.index, reason=exc.reason.name, detail=exc.cause[:2000]
                )
            except Exception as exc:
                failures += 1
                self.record(
                    "crash",
                    where=f"connection {slot.index}",
                    g=slot.index,
                    error=repr(exc)[:2000],
                    traceback="".join(traceback.format_exception(exc))[-8000:],
                )
            if phase.stop.is_set():
                break
            delay = REJOIN_DELAY_S * (1 + 0.5 * self.rng.random()) * min(2**failures, 8)
            with trio.move_on_after(delay):
                await phase.stop.wait()

    async def one_connection(self, slot: Slot, phase: Phase) -> None:
        """One voice connection's life, until invalidated or ``phase`` stops."""
        shard = self.shards[slot.shard]
        vc = VoiceConnection(shard, slot.guild_id, ssl_context=self.context)
        events = vc.subscribe()
        slot.joins += 1
        self.record("join", g=slot.index, n=slot.joins)
        slot.vc = vc
        failure: VoiceConnectionFailed | None = None
        try:
            async with trio.open_nursery() as tracking:
                tracking.start_soon(self.track_state, slot, vc)
                try:
                    await self.connected_life(slot, vc, events, phase)
                except VoiceConnectionFailed as exc:
                    failure = exc  # not wrapped in this nursery's ExceptionGroup
                finally:
                    tracking.cancel_scope.cancel()
        finally:
            slot.vc = None
            self.set_state(slot, "absent")
        if failure is not None:
            raise failure

    async def connected_life(
        self, slot: Slot, vc: VoiceConnection, events: Any, phase: Phase
    ) -> None:
        async with vc.connect(slot.home, timeout=CONNECT_TIMEOUT_S):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.watch_events, slot, events)
                nursery.start_soon(self.play, slot, vc)
                async with trio.open_nursery() as race:

                    async def invalidated() -> None:
                        invalidation = await vc.wait_invalidated()
                        self.record(
                            "invalidated",
                            g=slot.index,
                            reason=invalidation.reason.name,
                            detail=invalidation.detail[:2000],
                        )
                        race.cancel_scope.cancel()

                    async def stopped() -> None:
                        await phase.stop.wait()
                        race.cancel_scope.cancel()

                    race.start_soon(invalidated)
                    race.start_soon(stopped)
                nursery.cancel_scope.cancel()
            leaving = now()
        self.record("left", g=slot.index, took=now() - leaving)

    @staticmethod
    def state_of(vc: VoiceConnection) -> str:
        if vc.is_connected:
            return "connected"
        if vc.is_connecting:
            return "connecting"
        if not vc.is_valid:
            return "invalid"
        return "new"

    def set_state(self, slot: Slot, state: str) -> None:
        if state != slot.state:
            slot.state = state
            self.record("state", g=slot.index, state=state)
            self.states_changed.set()
            self.states_changed = trio.Event()

    async def track_state(self, slot: Slot, vc: VoiceConnection) -> None:
        """Record every change of the connection's state, when it happens.

        A resume on loopback takes 10-30 ms, which polling would often miss; ``vc.wait_for``
        wakes on every change of the connection's state instead.
        """
        while True:
            state = self.state_of(vc)
            self.set_state(slot, state)
            if state == "invalid":
                return
            await vc.wait_for(lambda state=state: self.state_of(vc) != state)

    async def watch_events(self, slot: Slot, events: Any) -> None:
        async for event in events:
            if isinstance(event, Connected):
                self.record("connected", g=slot.index, channel=str(event.channel_id))

    async def play(self, slot: Slot, vc: VoiceConnection) -> None:
        if slot.kind == "opus":
            while vc.is_valid:
                started = now()
                frames = (await vc.play(OggOpusSource.from_file(self.ogg_path))).frames
                if vc.is_valid and frames == 0 and now() - started < 0.5:
                    self.record("play_returned_early", g=slot.index)
                    await trio.sleep(0.5)
        else:
            pcm = self.pcm
            while vc.is_valid:
                for offset in range(0, len(pcm), PCM_BLOCK_SIZE):
                    await vc.send_voice_data(pcm[offset : offset + PCM_BLOCK_SIZE])
                    if not vc.is_valid:
                        return

    async def rss_sampler(self) -> None:
        while True:
            self.record("rss", rss=rss_bytes())
            await trio.sleep(RSS_EVERY_S)

    def all_connected(self) -> bool:
        return all(slot.vc is not None and slot.vc.is_connected for slot in self.slots)

    async def wait_all_connected(self, seconds: float) -> bool:
        with trio.move_on_after(seconds):
            while not self.all_connected():
                await self.states_changed.wait()
        return self.all_connected()

    async def sample(
        self, label: str, baseline: dict[str, Any] | None, *, settle: float, trio_cache: bool
    ) -> dict[str, Any]:
        """Resources now, or once back within ``baseline`` (polled for up to ``settle`` s)."""
        deadline = now() + settle
        while True:
            values = resources()
            ok = baseline is None or within(values, baseline, trio_cache=trio_cache)
            if ok or now() >= deadline:
                break
            await trio.sleep(0.25)
        sample = {"label": label, "ok": ok, **values}
        self.record("sample", **sample)
        return sample

    async def run_phase(self, phase: Phase, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            task_status.started()
            for slot in self.slots:
                nursery.start_soon(self.runner, slot, phase)
        phase.done.set()

    async def end_phase(self, phase: Phase, seconds: float) -> bool:
        phase.stop.set()
        with trio.move_on_after(seconds):
            await phase.done.wait()
        return phase.done.is_set()

    # -- the whole run ---------------------------------------------------------------------------

    async def main(self) -> None:
        # Opened first, so that both baselines count its fd.
        stdin = trio.lowlevel.FdStream(os.dup(0))
        await trio.to_thread.run_sync(self.write_clip)
        async with trio.open_nursery() as root:
            root.start_soon(self.rss_sampler)
            limiter = IdentifyLimiter(max_concurrency=16)
            for shard_id in range(self.info["shards"]):
                root.start_soon(self.keep_shard, shard_id, limiter)
            with trio.fail_after(60):
                await self.shards_ready.wait()
            self.record("shards_ready")

            # Warm-up: every code path loaded and every lazy pool started once.
            warm = Phase()
            await root.start(self.run_phase, warm)
            warmed = await self.wait_all_connected(60 + 2 * len(self.slots))
            await trio.sleep(1.0)
            self.record("warmed", all_connected=warmed)
            await self.end_phase(warm, 60.0)
            await trio.sleep(1.0)
            idle = await self.sample("idle-baseline", None, settle=0, trio_cache=True)
            self.baselines["idle"] = idle

            soak = Phase()
            await root.start(self.run_phase, soak)
            connected = await self.wait_all_connected(60 + 2 * len(self.slots))
            await trio.sleep(1.0)
            loaded = await self.sample("loaded-baseline", None, settle=0, trio_cache=True)
            self.baselines["loaded"] = loaded
            emit("ready", t=now(), all_connected=connected, idle=idle, loaded=loaded)

            await self.commands(soak, stdin)
            self.close_shards.set()
            root.cancel_scope.cancel()

    async def commands(self, soak: Phase, stdin: trio.lowlevel.FdStream) -> None:
        pending = b""
        try:
            while True:
                chunk = await stdin.receive_some(4096)
                if not chunk:
                    return
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    words = line.decode().split()
                    if not words:
                        continue
                    if words[0] == "sample":
                        connected = await self.wait_all_connected(30.0)
                        sample = await self.sample(
                            words[1], self.baselines["loaded"], settle=8.0, trio_cache=False
                        )
                        emit("sampled", all_connected=connected, sample=sample)
                    elif words[0] == "settle":
                        connected = await self.wait_all_connected(float(words[1]))
                        missing = [
                            {"g": slot.index, "state": slot.state}
                            for slot in self.slots
                            if slot.vc is None or not slot.vc.is_connected
                        ]
                        self.record("settled", all_connected=connected, missing=missing)
                        emit("settled", t=now(), all_connected=connected, missing=missing)
                    elif words[0] == "leave":
                        left = await self.end_phase(soak, 60.0)
                        await trio.sleep(0.5)
                        sample = await self.sample(
                            "end", self.baselines["idle"], settle=12.0, trio_cache=True
                        )
                        emit("left", all_left=left, sample=sample)
                    elif words[0] == "quit":
                        return
        finally:
            await stdin.aclose()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--info", required=True)
    parser.add_argument("--events", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--scratch", required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--deadline", type=float, default=3600.0, help="seconds, all told")
    args = parser.parse_args()
    info = json.loads(Path(args.info).read_text())
    bot = SoakBot(args, info)

    async def bounded() -> None:
        with trio.fail_after(args.deadline):
            await bot.main()

    status = 0
    try:
        trio.run(bounded)
    except trio.TrioInternalError as exc:
        bot.record("crash", where="trio", error=repr(exc)[:2000], traceback=_tb(exc))
        status = 3
    except BaseException as exc:
        bot.record("crash", where="trio.run", error=repr(exc)[:2000], traceback=_tb(exc))
        status = 2
    bot.record("exit", status=status)
    bot.events.close()
    bot.log.close()
    return status


def _tb(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))[-8000:]


if __name__ == "__main__":
    raise SystemExit(main())
