"""soak.py's simulator process: the local Discord, its listening members, and the chaos.

It creates ``--connections`` guilds, each with two voice channels ("home" and "away") and one
listening simulated member in each, prints one JSON line with what the bot needs, then obeys
commands on stdin (one per line):

``start SECONDS``
    inject faults for that long, on a schedule drawn from ``--seed``: every connection draws
    its faults (a Poisson process at ``--fault-rate`` per minute, kinds by weight) from its own
    ``random.Random``, every shard its main-gateway faults likewise, and ``gw_op9`` comes
    ``--op9`` times at fixed points of the run. A connection's fault is injected only once the
    connection is quiet (its voice session connected and its audio heard in the last 0.3 s),
    so faults of one connection never overlap; main-gateway faults may overlap them, as they
    would on Discord. Every ``--quiet-every`` seconds no new fault starts until the ones in
    flight have ended; then ``{"event": "quiet"}`` is printed and the chaos waits for
    ``resume`` (the bot samples its resources meanwhile). ``{"event": "chaos_done"}`` ends it.
``resume``
    after a quiet point.
``report PATH``
    write the fault log and what the members heard to PATH, print ``{"event": "report"}``.
``quit`` (or EOF)
    stop.

What the members heard is kept as runs of arrival times (``time.monotonic()``), per guild:
a frame counts when the member could open it (DAVE-decrypted, or plaintext where DAVE allows
it). Recordings are switched off: a ten-minute run of a hundred streams would keep every packet.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import random
import resource
import struct
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import trio
from _soak_common import CONNECTION_FAULTS, HEARD_MERGE_S, SHARD_FAULTS, FaultKind, emit, now

from discore_voice import OPUS_SILENCE_FRAME
from discore_voice.testing import (
    ABRUPT,
    GatewaySession,
    LocalDiscord,
    MediaServer,
    Recording,
    SimMember,
    UdpFaults,
    VoiceGatewaySession,
    open_local_discord,
)

#: A connection's frames must have been heard this recently for it to count as quiet.
QUIET_HEARD_S = 0.3
#: How long a connection's next fault waits for it to become quiet before it is skipped.
QUIET_WAIT_S = 30.0
#: How long to wait for a shard to resume (or re-identify) after a main-gateway fault.
SHARD_RECOVERY_S = 40.0
#: Main gateway and voice heartbeat intervals (ms): shorter than Discord's 41.25 s and 13.75 s,
#: so a stalled ACK is noticed within a CI-sized minute.
GATEWAY_HEARTBEAT_MS = 10_000
VOICE_HEARTBEAT_MS = 5_000
#: Most of the bad (undecryptable) runs to keep per guild, for the report.
MAX_BAD_RUNS = 50


def _no_recording(self: Recording, packet: object) -> None:
    """Recording.add, switched off: nothing here reads the packets back."""


Recording.add = _no_recording  # type: ignore[method-assign,assignment]


@dataclass(eq=False)
class Heard:
    """What the listening members of one guild heard from the bot."""

    runs: list[list[float]] = field(default_factory=list)
    e2ee: int = 0
    plain: int = 0
    undecryptable: int = 0
    #: Of those, how many were plaintext (no DAVE footer: refused outside a passthrough window).
    undecryptable_plain: int = 0
    bad_runs: list[list[float]] = field(default_factory=list)
    last: float = 0.0

    def mark(self, at: float) -> None:
        self.last = at
        runs = self.runs
        if runs and at - runs[-1][1] <= HEARD_MERGE_S:
            runs[-1][1] = at
        else:
            runs.append([at, at])

    def mark_bad(self, at: float, *, plain: bool) -> None:
        self.undecryptable += 1
        self.undecryptable_plain += plain
        bad = self.bad_runs
        if bad and at - bad[-1][1] <= HEARD_MERGE_S:
            bad[-1][1] = at
        elif len(bad) < MAX_BAD_RUNS:
            bad.append([at, at])

    def summary(self) -> dict[str, Any]:
        return {
            "runs": [[round(a, 4), round(b, 4)] for a, b in self.runs],
            "e2ee": self.e2ee,
            "plain": self.plain,
            "undecryptable": self.undecryptable,
            "undecryptable_plain": self.undecryptable_plain,
            "bad_runs": [[round(a, 4), round(b, 4)] for a, b in self.bad_runs],
        }


@dataclass(eq=False)
class SimGuildSlot:
    index: int
    guild_id: int
    home: int
    away: int
    shard: int
    heard: Heard = field(default_factory=Heard)
    members: list[SimMember] = field(default_factory=list)


def listening_sink(member: SimMember, heard: Heard) -> Any:
    """A member's audio sink that only counts: opened frames mark the guild as heard."""

    def sink(source: Any, packet: Any) -> None:
        payload = packet.payload
        if payload == OPUS_SILENCE_FRAME:
            return
        at = now()
        decryptor = member.frame_decryptor
        if decryptor is None:
            heard.plain += 1
            heard.mark(at)
            return
        try:
            opened = decryptor(source.user_id, payload)
        except Exception:
            heard.mark_bad(at, plain=payload[-2:] != DAVE_MAGIC)
            return
        if opened != payload:
            heard.e2ee += 1
        else:
            heard.plain += 1
        heard.mark(at)

    return sink


#: The last two bytes of every DAVE-encrypted frame.
DAVE_MAGIC = b"\xfa\xfa"
Datagram = tuple[bytes, tuple[str, int]]
_SSRC = struct.Struct(">I")


class GuildUdpFilter(UdpFaults[Datagram]):
    """Drops one guild's datagrams at a rate (1.0: a blackhole); everyone else's pass.

    Which guild a datagram belongs to: its SSRC (RTP, and IP discovery requests, which the bot
    also sends as keep-alives) through the media server's endpoints, else the address it was
    last seen from. The simulator answers IP discovery without faults, so dropping the requests
    blackholes both ways.
    """

    def __init__(self, media: MediaServer, seed: int, *, inbound: bool) -> None:
        super().__init__(seed=seed)
        self.media = media
        self.inbound = inbound
        self.rules: dict[int, float] = {}
        self.dropped_by_guild: dict[int, int] = {}
        self.addresses: dict[tuple[str, int], int] = {}

    def _guild_of(self, data: bytes, address: tuple[str, int]) -> int | None:
        if self.inbound:
            ssrc = None
            if len(data) == 74 and data[:2] == b"\x00\x01":
                ssrc = _SSRC.unpack_from(data, 4)[0]
            elif len(data) >= 12 and data[0] & 0xC0 == 0x80:
                ssrc = _SSRC.unpack_from(data, 8)[0]
            if ssrc is not None:
                endpoint = self.media.endpoint(int(ssrc))
                if endpoint is not None:
                    guild: int = endpoint.guild_id
                    self.addresses[address] = guild
                    return guild
        return self.addresses.get(address)

    def apply(self, datagram: Datagram) -> list[tuple[float, Datagram]]:
        if not self.rules and not self.inbound:
            return [(0.0, datagram)]
        guild = self._guild_of(*datagram)
        if guild is None or guild not in self.rules:
            return [(0.0, datagram)]
        rate = self.rules[guild]
        if rate >= 1.0 or self._rng.random() < rate:
            self.dropped += 1
            self.dropped_by_guild[guild] = self.dropped_by_guild.get(guild, 0) + 1
            return []
        return [(0.0, datagram)]


class Chaos:
    """The fault schedule and its log."""

    def __init__(
        self,
        discord: LocalDiscord,
        slots: list[SimGuildSlot],
        args: argparse.Namespace,
        udp_in: GuildUdpFilter,
        udp_out: GuildUdpFilter,
        log: IO[str],
    ) -> None:
        self.discord = discord
        self.slots = slots
        self.args = args
        self.udp_in = udp_in
        self.udp_out = udp_out
        self.log = log
        self.faults: list[dict[str, Any]] = []
        self.paused = False
        self.unpaused = trio.Event()
        self.resumed = trio.Event()
        self.in_flight = 0
        self.bot_id = discord.bot.user_id
        self.started_at = 0.0
        self.until = 0.0

    # -- bookkeeping ---------------------------------------------------------------------------

    def record(self, entry: dict[str, Any]) -> None:
        self.faults.append(entry)
        self.log.write(json.dumps(entry) + "\n")
        self.log.flush()

    async def gate(self) -> bool:
        """Wait while a quiet point is on; False once the chaos is over."""
        while self.paused and now() < self.until:
            with trio.move_on_after(max(0.0, self.until - now())):
                await self.unpaused.wait()
        return now() < self.until

    # -- lookups -------------------------------------------------------------------------------

    def voice_session(self, slot: SimGuildSlot) -> VoiceGatewaySession | None:
        return self.discord.voice.session_for(self.bot_id, slot.guild_id)

    def gateway_session(self, shard: int) -> GatewaySession | None:
        for session in reversed(self.discord.sessions):
            if (
                session.bot is self.discord.bot
                and session.shard is not None
                and session.shard[0] == shard
                and session.alive
            ):
                return session
        return None

    def quiet(self, slot: SimGuildSlot) -> bool:
        session = self.voice_session(slot)
        return (
            session is not None
            and session.connected
            and session.state == "connected"
            and session.mode is not None
            and now() - slot.heard.last <= QUIET_HEARD_S
        )

    async def wait_until(self, predicate: Any, seconds: float, step: float = 0.05) -> bool:
        """Poll ``predicate`` until true (True) or ``seconds`` passed (False).

        Polled, not woken by the simulator's change events: those fire on every datagram.
        """
        deadline = now() + seconds
        while not predicate():
            if now() >= deadline:
                return False
            await trio.sleep(step)
        return True

    # -- the schedule --------------------------------------------------------------------------

    async def run(self, seconds: float) -> None:
        self.started_at = now()
        self.until = self.started_at + seconds
        emit("chaos_started", t=self.started_at, until=self.until)
        async with trio.open_nursery() as nursery:
            for slot in self.slots:
                nursery.start_soon(self.connection_loop, slot)
            for shard in range(self.args.shards):
                nursery.start_soon(self.shard_loop, shard)
            nursery.start_soon(self.op9_schedule)
            nursery.start_soon(self.quiet_points)
        # Nothing is stalled, blackholed or waiting for its second half any more.
        self.udp_in.rules.clear()
        self.udp_out.rules.clear()
        emit("chaos_done", t=now(), faults=len(self.faults))

    @staticmethod
    def _draw(rng: random.Random, kinds: tuple[FaultKind, ...]) -> FaultKind:
        weighted = [kind for kind in kinds if kind.weight > 0]
        return rng.choices(weighted, weights=[kind.weight for kind in weighted])[0]

    @staticmethod
    def _params(kind: str, rng: random.Random) -> dict[str, Any]:
        # Every parameter is drawn for every fault, so one kind's draws never shift another's.
        draws = {
            "gap_s": rng.uniform(0.2, 2.0),
            "loss": rng.uniform(0.2, 0.6),
            "loss_s": rng.uniform(2.0, 8.0),
            "blackhole_s": rng.uniform(2.0, 10.0),
            "long_blackhole_s": rng.uniform(32.0, 45.0),
            "close_code": rng.choice((4000, 4008)),
        }
        wanted = {
            "server_move": ("gap_s",),
            "udp_loss": ("loss", "loss_s"),
            "udp_blackhole": ("blackhole_s",),
            "udp_blackhole_long": ("long_blackhole_s",),
            "gw_close": ("close_code",),
        }.get(kind, ())
        return {name: round(draws[name], 3) for name in wanted}

    async def connection_loop(self, slot: SimGuildSlot) -> None:
        rng = random.Random(f"{self.args.seed}:connection:{slot.index}")
        mean = 60.0 / self.args.fault_rate if self.args.fault_rate > 0 else math.inf
        due = self.started_at + rng.expovariate(1.0 / mean) if math.isfinite(mean) else math.inf
        while due < self.until:
            kind = self._draw(rng, CONNECTION_FAULTS)
            params = self._params(kind.name, rng)
            await trio.sleep(max(0.0, due - now()))
            quiet = False
            while await self.gate():
                quiet = await self.wait_until(lambda: self.quiet(slot), QUIET_WAIT_S, 0.1)
                if not self.paused:
                    break  # a quiet point began meanwhile: wait for its end, then look again
            if now() >= self.until:
                return
            long_for = params.get("long_blackhole_s", 0.0)
            if now() + long_for > self.until:
                self.skip(slot, kind, params, "it would outlast the chaos")
            elif not quiet:
                self.skip(slot, kind, params, f"not quiet for {QUIET_WAIT_S:g} s")
            else:
                await self.inject_connection(slot, kind, params)
            due = max(due, now()) + rng.expovariate(1.0 / mean)

    def skip(
        self, slot: SimGuildSlot, kind: FaultKind, params: dict[str, Any], reason: str
    ) -> None:
        at = now()
        self.record(
            {
                "kind": kind.name,
                "scope": "connection",
                "guild": slot.index,
                "shard": slot.shard,
                "targets": [slot.index],
                "t0": at,
                "t1": at,
                "params": params,
                "skipped": reason,
            }
        )

    async def shard_loop(self, shard: int) -> None:
        rng = random.Random(f"{self.args.seed}:shard:{shard}")
        mean = self.args.gateway_fault_every
        if mean <= 0:
            return
        due = self.started_at + rng.expovariate(1.0 / mean)
        while due < self.until:
            kind = self._draw(rng, SHARD_FAULTS)
            params = self._params(kind.name, rng)
            await trio.sleep(max(0.0, due - now()))
            if not await self.gate():
                return
            await self.inject_shard(shard, kind, params)
            due = max(due, now()) + rng.expovariate(1.0 / mean)

    async def op9_schedule(self) -> None:
        rng = random.Random(f"{self.args.seed}:op9")
        span = self.until - self.started_at
        plan = sorted(
            (rng.uniform(0.3, 0.7) * span, rng.randrange(self.args.shards))
            for _ in range(self.args.op9)
        )
        kind = next(k for k in SHARD_FAULTS if k.name == "gw_op9")
        for offset, shard in plan:
            await trio.sleep(max(0.0, self.started_at + offset - now()))
            if not await self.gate():
                return
            await self.inject_shard(shard, kind, {})

    async def quiet_points(self) -> None:
        every = self.args.quiet_every
        if every <= 0:
            return
        index = 0
        while True:
            index += 1
            at = self.started_at + index * every
            if at > self.until - 10.0:
                return
            await trio.sleep(max(0.0, at - now()))
            self.paused = True
            self.unpaused = trio.Event()
            await self.wait_until(lambda: self.in_flight == 0, 60.0, 0.05)
            self.resumed = trio.Event()
            emit("quiet", t=now(), index=index, in_flight=self.in_flight)
            with trio.move_on_after(120.0):
                await self.resumed.wait()
            self.paused = False
            self.unpaused.set()

    # -- injecting -----------------------------------------------------------------------------

    async def inject_connection(
        self, slot: SimGuildSlot, kind: FaultKind, params: dict[str, Any]
    ) -> None:
        discord, voice = self.discord, self.discord.voice
        entry: dict[str, Any] = {
            "kind": kind.name,
            "scope": "connection",
            "guild": slot.index,
            "shard": slot.shard,
            "targets": [slot.index],
            "params": params,
        }
        session = self.voice_session(slot)
        self.in_flight += 1
        entry["t0"] = now()
        try:
            if session is None:
                entry["skipped"] = "no voice session"
            elif kind.name == "voice_4015":
                voice.close(session, 4015)
            elif kind.name == "voice_tcp_drop":
                voice.close(session, ABRUPT)
            elif kind.name in ("voice_4006", "voice_4009"):
                voice.close(session, int(kind.name[-4:]))
            elif kind.name == "kick":
                discord.kick(slot.guild_id, self.bot_id)
            elif kind.name == "server_move":
                discord.send_voice_server_update(slot.guild_id, None, user_id=self.bot_id)
                await trio.sleep(params["gap_s"])
                if discord.voice_state(slot.guild_id, self.bot_id) is None:
                    entry["note"] = "the bot had left before the new endpoint came"
                else:
                    discord.send_voice_server_update(
                        slot.guild_id, discord.voice_endpoint, user_id=self.bot_id
                    )
            elif kind.name == "channel_move":
                state = discord.voice_state(slot.guild_id, self.bot_id)
                target = (
                    slot.away if state is not None and state.channel_id == slot.home else slot.home
                )
                entry["params"] = {"to": "away" if target == slot.away else "home"}
                discord.move_bot(slot.guild_id, self.bot_id, target)
            elif kind.name == "voice_hb_stall":
                voice.stall_heartbeat_acks(session, True)
                closes = len(session.close_codes)
                noticed = await self.wait_until(
                    lambda: len(session.close_codes) > closes or session.state == "ended",
                    3 * VOICE_HEARTBEAT_MS / 1000 + 5.0,
                )
                voice.stall_heartbeat_acks(session, False)
                if not noticed:
                    entry["note"] = "the client never dropped the connection"
                else:
                    entry["note"] = f"client closed with {session.close_codes[-1:]}"
            elif kind.name in ("udp_loss", "udp_blackhole", "udp_blackhole_long"):
                rate = params["loss"] if kind.name == "udp_loss" else 1.0
                seconds = params.get("loss_s") or params.get("blackhole_s")
                seconds = seconds or params["long_blackhole_s"]
                self.udp_in.rules[slot.guild_id] = rate
                self.udp_out.rules[slot.guild_id] = rate
                try:
                    await trio.sleep(seconds)
                finally:
                    self.udp_in.rules.pop(slot.guild_id, None)
                    self.udp_out.rules.pop(slot.guild_id, None)
            else:
                entry["skipped"] = f"unknown fault {kind.name}"
        except Exception as exc:  # a UsageError: the session went away meanwhile
            entry["skipped"] = f"{type(exc).__name__}: {exc}"
        finally:
            entry["t1"] = now()
            self.in_flight -= 1
            self.record(entry)

    async def inject_shard(self, shard: int, kind: FaultKind, params: dict[str, Any]) -> None:
        discord = self.discord
        targets = [slot.index for slot in self.slots if slot.shard == shard]
        entry: dict[str, Any] = {
            "kind": kind.name,
            "scope": "shard",
            "guild": None,
            "shard": shard,
            "targets": targets,
            "params": params,
        }
        self.in_flight += 1
        entry["t0"] = now()
        try:
            # Another fault of the shard may still be under way: wait for it to be back.
            await self.wait_until(
                lambda: (
                    (live := self.gateway_session(shard)) is not None and live.state == "connected"
                ),
                SHARD_RECOVERY_S,
            )
            entry["t0"] = now()
            session = self.gateway_session(shard)
            if session is None or session.state != "connected":
                entry["skipped"] = "no live gateway connection"
                return
            resumes, connections = session.resume_count, session.connection_count
            if kind.name == "gw_op7":
                discord.reconnect(session)
            elif kind.name == "gw_close":
                discord.close_gateway(session, params["close_code"], "fault injected")
            elif kind.name == "gw_hb_stall":
                discord.stall_heartbeat_acks(session, True)
                noticed = await self.wait_until(
                    lambda: session.state != "connected" or session.connection_count > connections,
                    3 * GATEWAY_HEARTBEAT_MS / 1000 + 5.0,
                )
                discord.stall_heartbeat_acks(session, False)
                if not noticed:
                    entry["note"] = "the shard never dropped the connection"
            elif kind.name == "gw_op9":
                discord.invalid_session(session, False)
                fresh = await self.wait_until(
                    lambda: (
                        (other := self.gateway_session(shard)) is not None
                        and other is not session
                        and other.state == "connected"
                    ),
                    SHARD_RECOVERY_S,
                )
                entry["note"] = "re-identified" if fresh else "no new session in time"
                return
            recovered = await self.wait_until(
                # (Another fault may end the resumed session at once: resumed is enough.)
                lambda: session.resume_count > resumes or not session.alive,
                SHARD_RECOVERY_S,
            )
            if session.resume_count > resumes:
                pass
            elif not session.alive:
                entry["note"] = "the session was invalidated meanwhile (by another fault)"
            elif not recovered:
                other = self.gateway_session(shard)
                entry["note"] = (
                    "re-identified instead of resuming"
                    if other is not None and other is not session
                    else "not resumed in time"
                )
        except Exception as exc:
            entry["skipped"] = f"{type(exc).__name__}: {exc}"
        finally:
            entry["t1"] = now()
            self.in_flight -= 1
            self.record(entry)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def housekeeping(discord: LocalDiscord) -> None:
    """Keep the simulator's own bookkeeping from growing with the run's length."""
    while True:
        await trio.sleep(5.0)
        for stream in discord.voice.media.stats.streams.values():
            stream.gaps_ns.clear()


class SimLog(logging.Handler):
    """The simulator's own log (INFO and up) to a file; its ERROR records also counted."""

    def __init__(self, path: Path) -> None:
        super().__init__(logging.INFO)
        self.file = path.open("w", buffering=1)
        self.errors: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            self.file.write(f"{now():.4f} {record.levelname} {record.name}: {message}\n")
            if record.exc_info:
                self.file.write("".join(traceback.format_exception(*record.exc_info)))
            if record.levelno >= logging.ERROR and len(self.errors) < 100:
                self.errors.append(f"{record.name}: {message}")
        except Exception:
            self.handleError(record)


async def serve(args: argparse.Namespace) -> None:
    scratch = Path(args.scratch)
    sim_log = SimLog(scratch / "sim.log")
    testing = logging.getLogger("discore_voice.testing")
    testing.setLevel(logging.INFO)
    testing.addHandler(sim_log)
    testing.propagate = False
    async with open_local_discord(
        tls=args.tls,
        dave="required",
        shard_count=args.shards,
        voice_events_gap=0.02,
        heartbeat_interval=GATEWAY_HEARTBEAT_MS,
        voice_heartbeat_interval_ms=VOICE_HEARTBEAT_MS,
    ) as discord:
        slots: list[SimGuildSlot] = []
        for index in range(args.connections):
            guild = discord.add_guild(
                name=f"soak-{index}", shard=(index % args.shards, args.shards)
            )
            home = guild.add_voice_channel(name="home")
            away = guild.add_voice_channel(name="away")
            slot = SimGuildSlot(index, guild.id, home.id, away.id, index % args.shards)
            for channel, name in ((home, "home"), (away, "away")):
                member = discord.add_voice_member(
                    guild.id, channel.id, name=f"listener-{index}-{name}"
                )
                assert member.endpoint is not None
                member.endpoint.sink = listening_sink(member, slot.heard)
                slot.members.append(member)
            slots.append(slot)
        media = discord.voice.media
        udp_in = GuildUdpFilter(media, args.seed, inbound=True)
        udp_out = GuildUdpFilter(media, args.seed + 1, inbound=False)
        media.faults_from_client = udp_in
        media.faults_to_client = udp_out
        emit(
            "info",
            gateway_url=discord.gateway_url,
            ca_pem_path=str(discord.ca_pem_path) if args.tls else None,
            bot_token=discord.bot.token,
            bot_user_id=discord.bot.user_id,
            shards=args.shards,
            tls=args.tls,
            guilds=[
                {
                    "index": slot.index,
                    "guild_id": str(slot.guild_id),
                    "home": str(slot.home),
                    "away": str(slot.away),
                    "shard": slot.shard,
                }
                for slot in slots
            ],
            pid=os.getpid(),
        )
        with (scratch / "faults.jsonl").open("w") as log:
            chaos = Chaos(discord, slots, args, udp_in, udp_out, log)
            cpu0, wall0 = cpu_seconds(), now()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(housekeeping, discord)
                stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
                pending = b""
                while True:
                    chunk = await stdin.receive_some(4096)
                    if not chunk:
                        break
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    stop = False
                    for line in lines:
                        words = line.decode().split()
                        if not words:
                            continue
                        if words[0] == "start":
                            nursery.start_soon(chaos.run, float(words[1]))
                        elif words[0] == "resume":
                            chaos.resumed.set()
                        elif words[0] == "report":
                            report = {
                                "faults": chaos.faults,
                                "heard": {str(s.index): s.heard.summary() for s in slots},
                                "media_drops": dict(media.stats.drops),
                                "udp_dropped_in": udp_in.dropped,
                                "udp_dropped_out": udp_out.dropped,
                                "cpu_s": cpu_seconds() - cpu0,
                                "wall_s": now() - wall0,
                                "rss_peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                                "voice_sessions": len(discord.voice.sessions),
                                "gateway_sessions": len(discord.sessions),
                                "simulator_errors": sim_log.errors,
                            }
                            Path(words[1]).write_text(json.dumps(report))  # noqa: ASYNC240
                            emit("report", path=words[1])
                        elif words[0] == "quit":
                            stop = True
                    if stop:
                        break
                await stdin.aclose()
                nursery.cancel_scope.cancel()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--connections", type=int, required=True)
    parser.add_argument("--shards", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--fault-rate", type=float, default=2.0)
    parser.add_argument("--gateway-fault-every", type=float, default=20.0)
    parser.add_argument("--op9", type=int, default=1)
    parser.add_argument("--quiet-every", type=float, default=30.0)
    parser.add_argument("--tls", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--scratch", required=True)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(serve, args)


if __name__ == "__main__":
    main()
