"""Chaos soak: N voice connections in one bot process against a simulator injecting faults.

Three processes on this machine, over loopback:

* the simulator (``_soak_sim.py``): the local Discord with DAVE required, TLS on (``--no-tls``
  for plain sockets), N guilds of two voice channels with one listening simulated member in
  each, and the fault schedule (seeded: ``--seed``);
* the bot (``_soak_bot.py``): N voice connections in one trio run, half playing pre-encoded Opus
  (an Ogg Opus file, looped), half PCM (``send_voice_data``), re-joining after every
  invalidation as a real bot would;
* this one, which starts both, relays the quiet points, and judges (``_soak_analysis.py``).

TLS is on by default because Discord's gateway and voice servers are ``wss://`` only, and a
dropped TCP connection under TLS reaches the client as an SSL-level error (EOF without
close_notify), not the plain socket's: those are the paths a soak has to cover.

Set-up choices: one shard per 25 connections (a shard sends 120 op 4 a minute, and every
re-join costs two); heartbeat intervals of 10 s (main gateway) and 5 s (voice) instead of
Discord's 41.25 s and 13.75 s, so that stalled ACKs are noticed within a CI-sized minute; the
voice dispatches 20 ms apart, as real latency spaces them. The bot re-joins 1-1.5 s after an
invalidation (backing off to 8x that after failed joins). Faults that fall due during a quiet
point are injected when it ends, so each quiet point is followed by a burst.

Faults (``_soak_common.py``; per connection at ``--fault-rate`` a minute, per shard every
``--gateway-fault-every`` seconds on average, ``gw_op9`` ``--op9`` times a run) and what the
library must make of them:

===================  =================================================  ========================
fault                what                                               expected
===================  =================================================  ========================
voice_4015           voice close 4015 (server crashed)                  valid (resume)
voice_tcp_drop       voice TCP dropped, no close frame (ABRUPT)         valid (resume)
server_move          VOICE_SERVER_UPDATE endpoint null, then a new one  valid (new session)
channel_move         moved to the guild's other channel (move_bot)      valid (new session)
voice_hb_stall       voice heartbeat ACKs stalled until the client      valid (resume)
                     drops the connection
udp_loss             20-60 % of the connection's datagrams, 2-8 s       valid
udp_blackhole        all its datagrams, both ways, 2-10 s               valid
udp_blackhole_long   the same for 32-45 s (past the 30 s dead-path      valid
                     limit); only where it ends before the chaos
kick                 voice state with a null channel                    KICKED, re-join
voice_4006/4009      fatal voice close                                  SESSION_INVALID, re-join
gw_op7               main gateway op 7                                  voice unaffected
gw_close             main gateway closed 4000/4008 (resumable)          voice unaffected
gw_hb_stall          main gateway heartbeat ACKs stalled                voice unaffected
gw_op9               main gateway op 9 d=false: the session is gone     GATEWAY_CLOSED, re-join
===================  =================================================  ========================

"valid" means: no invalidation, and the simulator hears the connection's frames again within
one second of its recovery (the end of its resume or re-handshake, or the fault's end). The
checks, every one of which must pass (exit status 1 otherwise):

* no crashes: no exception escaping a connection's task or a shard, no TrioInternalError, both
  processes alive to the end;
* no internal errors: no invalidation whose detail starts with "internal error", no ERROR
  record from a ``discore_voice`` logger;
* invalidation reasons: every invalidation explained by a fault of its connection and the one
  expected; every expected one happened;
* recovered and heard after every fault (and after every re-join);
* at the end every connection valid, connected and heard;
* open fds, threads and trio tasks back at their baselines at every quiet point (all N
  connected; against the baseline taken with N connected) and after every connection left
  (against the baseline taken after the warm-up round). The encoder pool's threads live for
  the trio run by design and are only held to one per CPU; trio's idle thread cache is held
  to its baseline only at the end (its workers retire after 10 s idle);
* RSS bounded: growth over the chaos within ``--rss-growth-mib`` (default 48 MiB + 0.5 MiB
  per connection) and, for runs of five minutes or more, the slope over its second half within
  ``--rss-slope-mib-per-min`` (default 2).

Run from the repository root, alone on the machine:

    .venv/bin/python benchmarks/soak.py --connections 100 --minutes 10 --seed 1
        [--fault-rate 2] [--json benchmarks/results/soak.json] [--log-dir DIR]

It prints a table, writes the JSON, and keeps every process's log in ``--log-dir`` (by default
``benchmarks/results/soak-<time>/``): the fault log, the bot's events and its library log, which
the findings quote.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import trio
from _sbs_process import machine
from _soak_analysis import analyse, read_log
from _soak_common import CONNECTION_FAULTS, SHARD_FAULTS

HERE = Path(__file__).resolve().parent
#: Connections per shard: a shard sends at most 120 op 4 a minute, and re-joins cost two each.
PER_SHARD = 25


class HarnessError(Exception):
    """A child process died, or did not answer in time."""


class Lines:
    """JSON lines from a child's stdout, each wait bounded."""

    def __init__(self, process: trio.Process, name: str) -> None:
        assert process.stdout is not None
        self.stream = process.stdout
        self.name = name
        self.pending = b""

    async def next(self, seconds: float, want: str | None = None) -> dict[str, Any]:
        with trio.move_on_after(seconds):
            while True:
                while b"\n" in self.pending:
                    line, self.pending = self.pending.split(b"\n", 1)
                    try:
                        event = json.loads(line)
                    except ValueError:
                        continue
                    if want is None or event.get("event") == want:
                        return dict(event)
                chunk = await self.stream.receive_some(1 << 16)
                if not chunk:
                    raise HarnessError(f"the {self.name} process ended (waiting for {want})")
                self.pending += chunk
        raise HarnessError(f"no {want or 'line'} from the {self.name} within {seconds:g} s")


#: What writing to a child that already ended raises.
BROKEN = (trio.BrokenResourceError, trio.ClosedResourceError)


async def send(process: trio.Process, line: str) -> None:
    assert process.stdin is not None
    try:
        await process.stdin.send_all(line.encode() + b"\n")
    except BROKEN as exc:
        raise HarnessError(f"cannot write to a child process that ended ({line!r})") from exc


async def stop(process: trio.Process, seconds: float) -> int | None:
    if process.stdin is not None:
        with trio.move_on_after(1.0), contextlib.suppress(*BROKEN):
            await process.stdin.aclose()
    with trio.move_on_after(seconds):
        return await process.wait()
    process.kill()
    with trio.move_on_after(5.0):
        await process.wait()
    return None


def quiet_every(args: argparse.Namespace) -> float:
    """Seconds between quiet points: every 30 s, but no more than ten a run."""
    if args.quiet_every >= 0:
        return float(args.quiet_every)
    return max(30.0, float(args.minutes) * 60.0 / 10)


async def orchestrate(args: argparse.Namespace, logs: Path, state: dict[str, Any]) -> None:
    """Run both children through the soak; fills ``state`` as it goes (also on failure)."""
    env = dict(os.environ)
    seconds = args.minutes * 60.0
    shards = max(1, math.ceil(args.connections / PER_SHARD))
    state["shards"] = shards
    sim_cmd = [
        sys.executable,
        str(HERE / "_soak_sim.py"),
        *("--connections", str(args.connections)),
        *("--shards", str(shards)),
        *("--seed", str(args.seed)),
        *("--fault-rate", str(args.fault_rate)),
        *("--gateway-fault-every", str(args.gateway_fault_every)),
        *("--op9", str(args.op9 if args.op9 >= 0 else max(1, round(args.minutes / 5)))),
        *("--quiet-every", str(quiet_every(args))),
        "--tls" if args.tls else "--no-tls",
        *("--scratch", str(logs)),
    ]
    budget = seconds + 600.0 + 3.0 * args.connections
    with (logs / "sim.stderr").open("wb") as sim_err, (logs / "bot.stderr").open("wb") as bot_err:
        sim = await trio.lowlevel.open_process(
            sim_cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=sim_err, env=env
        )
        bot: trio.Process | None = None
        sim_lines = Lines(sim, "simulator")
        try:
            info = await sim_lines.next(60.0, "info")
            state["phases"]["simulator_ready"] = time.monotonic()
            state["guilds"] = info["guilds"]
            info_path = logs / "info.json"
            info_path.write_text(json.dumps(info))
            bot = await trio.lowlevel.open_process(
                [
                    sys.executable,
                    str(HERE / "_soak_bot.py"),
                    *("--info", str(info_path)),
                    *("--events", str(logs / "bot-events.jsonl")),
                    *("--log", str(logs / "bot.log")),
                    *("--scratch", str(logs)),
                    *("--seed", str(args.seed)),
                    *("--deadline", str(budget)),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=bot_err,
                env=env,
            )
            bot_lines = Lines(bot, "bot")
            ready = await bot_lines.next(120.0 + 3.0 * args.connections, "ready")
            state["phases"]["bot_ready"] = time.monotonic()
            state["ready"] = ready
            if not ready["all_connected"]:
                state["harness_errors"].append("not every connection connected before the chaos")
            print(
                f"bot ready: {args.connections} connections on {shards} shard(s); chaos for "
                f"{seconds:g} s",
                flush=True,
            )
            await send(sim, f"start {seconds}")
            started = await sim_lines.next(30.0, "chaos_started")
            state["chaos"] = [started["t"], started["until"]]
            deadline = trio.current_time() + seconds + 300.0
            while True:
                event = await sim_lines.next(max(1.0, deadline - trio.current_time()))
                if event["event"] == "chaos_done":
                    state["chaos"][1] = event["t"]
                    break
                if event["event"] == "quiet":
                    deadline += 150.0
                    await send(bot, f"sample quiet-{event['index']}")
                    sampled = await bot_lines.next(90.0, "sampled")
                    sample = sampled["sample"]
                    print(
                        f"quiet point {event['index']}: fds {sample['fds']}, threads "
                        f"{sample['threads']}, tasks {sample['tasks']} "
                        f"({'ok' if sample['ok'] else 'ABOVE BASELINE'})",
                        flush=True,
                    )
                    await send(sim, "resume")
            await send(bot, "settle 120")
            state["phases"]["chaos_done"] = time.monotonic()
            settled = await bot_lines.next(150.0, "settled")
            state["phases"]["settled"] = time.monotonic()
            state["settled_at"] = settled["t"]
            await trio.sleep(RECOVERY_SETTLE_S)
            await send(sim, f"report {logs / 'sim-report.json'}")
            await sim_lines.next(60.0, "report")
            state["sim_report"] = json.loads((logs / "sim-report.json").read_text())
            await send(bot, "leave")
            left = await bot_lines.next(150.0, "left")
            state["phases"]["left"] = time.monotonic()
            state["left"] = left
            await send(bot, "quit")
        finally:
            if bot is not None:
                state["bot_exit"] = await stop(bot, 90.0)
            if "sim_report" not in state and sim.returncode is None:
                # The bot failed: what the members heard still helps to read its events.
                with trio.move_on_after(20.0), contextlib.suppress(HarnessError):
                    await send(sim, f"report {logs / 'sim-report.json'}")
                    await sim_lines.next(20.0, "report")
                    state["sim_report"] = json.loads((logs / "sim-report.json").read_text())
            with trio.move_on_after(5.0), contextlib.suppress(HarnessError):
                await send(sim, "quit")
            state["sim_exit"] = await stop(sim, 20.0)


#: Every file a run writes into its log directory.
LOG_FILES = (
    "info.json",
    "faults.jsonl",
    "sim-report.json",
    "sim.stderr",
    "bot.stderr",
    "bot-events.jsonl",
    "bot.log",
    "sim.log",
    "clip.opus",
    "run.json",
)
#: Seconds between the bot settling and asking the simulator what it heard.
RECOVERY_SETTLE_S = 1.5


def read_events(path: Path) -> list[dict[str, Any]]:
    events = []
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
    return events


def fmt(value: float | None, unit: str = "s") -> str:
    if value is None:
        return "-"
    if unit == "ms":
        return f"{value * 1000:.0f}"
    return f"{value:.2f}"


def print_table(result: dict[str, Any], args: argparse.Namespace) -> None:
    print()
    print(
        f"soak: {args.connections} connections, {args.minutes:g} min, seed {args.seed}, "
        f"{args.fault_rate:g} faults/connection/min, TLS {'on' if args.tls else 'off'}, "
        "DAVE required"
    )
    header = (
        f"{'fault':<19}{'expect':>16}{'inj':>5}{'skip':>5}{'ok':>5}{'mism':>5}{'norec':>6}"
        f"{'unheard':>8}{'super':>6}{'dur max':>8}{'rec p50':>8}{'rec max':>8}"
        f"{'heard ms p50/max':>17}  observed"
    )
    print(header)
    print("-" * len(header))
    for row in result["faults"]:
        if not row["injected"] and not row["skipped"]:
            continue
        observed = ", ".join(f"{k} {v}" for k, v in sorted(row["observed"].items()))
        heard = f"{fmt(row['heard_latency_p50_s'], 'ms')}/{fmt(row['heard_latency_max_s'], 'ms')}"
        print(
            f"{row['kind']:<19}{row['expect']:>16}{row['injected']:>5}{row['skipped']:>5}"
            f"{row['ok']:>5}{row['mismatch']:>5}{row['not_recovered']:>6}{row['not_heard']:>8}"
            f"{row['superseded']:>6}{fmt(row['duration_max_s']):>8}"
            f"{fmt(row['recovery_p50_s']):>8}"
            f"{fmt(row['recovery_max_s']):>8}{heard:>17}  {observed}"
        )
    print(
        "inj injected, skip never quiet enough to inject, mism wrong or missing invalidation, "
        "norec never connected again,\nunheard not heard within 1 s of recovering, super "
        "superseded by an overlapping fault (not judged), dur fault's\nlength (main gateway: "
        "the shard's outage), rec recovery after the fault's end, heard first frame after it"
    )
    print()
    memory = result["memory"]
    if "start_mib" in memory:
        print(
            f"RSS: start {memory['start_mib']:.1f} MiB, end {memory['end_mib']:.1f}, max "
            f"{memory['max_mib']:.1f}, growth {memory['growth_mib']:+.1f}, slope over the second "
            f"half {memory['slope_second_half_mib_per_min']:+.2f} MiB/min"
        )
    for sample in result["samples"]:
        print(
            f"resources {sample['label']:<16} fds {sample['fds']:>5}"
            f"  threads {sample['threads']:>3}"
            f" (trio cache {sample['threads_trio_cache']}, encoder pool "
            f"{sample['threads_encoder_pool']})  tasks {sample['tasks']:>6}"
            f"  python blocks {sample.get('python_blocks', 0):>8}"
            f"  {'' if sample['label'].endswith('baseline') else 'ok' if sample['ok'] else 'ABOVE'}"
        )
    print(
        f"joins {result['joins']}, crashes {result['crashes']}, internal errors "
        f"{result['internal_errors']}, unexplained invalidations "
        f"{result['unexplained_invalidations']}, spontaneous reconnects "
        f"{result['spontaneous_reconnects']}, joins failed in a UDP blackhole (right) "
        f"{len(result['tolerated_join_failures'])}"
    )
    print()
    for name, passed in result["checks"].items():
        print(f"  {'PASS' if passed else 'FAIL'}  {name}")
    for error in result["harness_errors"]:
        print(f"  HARNESS: {error[:1500]}")
    if result["findings_total"]:
        print(f"\n{result['findings_total']} finding(s); the first ones:")
        for finding in [f for f in result["findings"] if not f["check"].startswith("info_")][:15]:
            where = f"connection {finding['g']}" if finding.get("g") is not None else "process"
            print(f"  [{finding['check']}] {where}: {finding['text'][:300]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--minutes", type=float, default=1.0, help="length of the chaos")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--fault-rate", type=float, default=2.0, help="voice faults per connection per minute"
    )
    parser.add_argument(
        "--gateway-fault-every",
        type=float,
        default=20.0,
        help="mean seconds between main-gateway faults, per shard (0: none)",
    )
    parser.add_argument(
        "--op9", type=int, default=-1, help="op 9 d=false injections (default: 1 per 5 minutes)"
    )
    parser.add_argument(
        "--quiet-every",
        type=float,
        default=-1.0,
        help="seconds between quiet points (0: none; default 30, at most ten a run)",
    )
    parser.add_argument("--tls", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--rss-growth-mib", type=float, default=None)
    parser.add_argument("--rss-slope-mib-per-min", type=float, default=None)
    parser.add_argument("--json", default=str(HERE / "results" / "soak.json"))
    parser.add_argument("--log-dir", default="")
    parser.add_argument(
        "--judge",
        metavar="LOG_DIR",
        default="",
        help="judge an earlier run again from its log directory, without running anything",
    )
    args = parser.parse_args()
    if args.judge:
        return judge_again(Path(args.judge), args.json)
    if args.connections < 1 or args.minutes <= 0:
        parser.error("--connections must be >= 1 and --minutes > 0")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    logs = Path(args.log_dir) if args.log_dir else HERE / "results" / f"soak-{stamp}"
    logs.mkdir(parents=True, exist_ok=True)
    for name in LOG_FILES:
        (logs / name).unlink(missing_ok=True)  # a previous run's files must not be judged
    limits = {
        "growth_mib": args.rss_growth_mib
        if args.rss_growth_mib is not None
        else 48.0 + 0.5 * args.connections,
        "slope_mib_per_min": args.rss_slope_mib_per_min
        if args.rss_slope_mib_per_min is not None
        else 2.0,
    }
    wall = time.monotonic()
    state: dict[str, Any] = {"harness_errors": [], "chaos": None, "guilds": [], "phases": {}}
    try:
        trio.run(orchestrate, args, logs, state)
    except HarnessError as exc:
        state["harness_errors"].append(str(exc))
    except Exception as exc:
        state["harness_errors"].append(f"{type(exc).__name__}: {exc}")
    for name in ("sim", "bot"):
        code = state.get(f"{name}_exit")
        if code not in (0, None) or (f"{name}_exit" in state and code is None):
            tail = (logs / f"{name}.stderr").read_text(errors="replace")[-3000:]
            state["harness_errors"].append(f"the {name} process exited with {code}: {tail}")
    sim_report = state.get("sim_report") or {"faults": [], "heard": {}}
    chaos = state["chaos"] or [0.0, 0.0]
    # What the judge needs beyond the processes' own files, so the run can be judged again.
    run = {
        "args": vars(args),
        "argv": sys.argv,
        "chaos": chaos,
        "settled_at": state.get("settled_at"),
        "guilds": state["guilds"],
        "limits": limits,
        "harness_errors": state["harness_errors"],
        "shards": state.get("shards"),
        "wall_s": time.monotonic() - wall,
        "phases_s": {name: round(at - wall, 2) for name, at in state["phases"].items()},
    }
    (logs / "run.json").write_text(json.dumps(run, indent=1))
    return judge(run, sim_report, logs, args.json)


def judge_again(logs: Path, json_path: str) -> int:
    run = json.loads((logs / "run.json").read_text())
    sim_report = json.loads((logs / "sim-report.json").read_text())
    return judge(run, sim_report, logs, json_path)


def judge(run: dict[str, Any], sim_report: dict[str, Any], logs: Path, json_path: str) -> int:
    """Line the run's files up, print the table, write the JSON; 1 if a check failed."""
    args = argparse.Namespace(**run["args"])
    chaos = run["chaos"]
    result = analyse(
        faults=sim_report["faults"],
        heard=sim_report["heard"],
        bot_events=read_events(logs / "bot-events.jsonl"),
        guilds=run["guilds"],
        chaos=(chaos[0], chaos[1]),
        settled_at=run["settled_at"],
        log_lines=read_log(logs / "bot.log"),
        limits=run["limits"],
        harness_errors=run["harness_errors"],
    )
    output = {
        "command": " ".join([Path(sys.executable).name, *run["argv"]]),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "args": {
            "connections": args.connections,
            "minutes": args.minutes,
            "seed": args.seed,
            "fault_rate": args.fault_rate,
            "gateway_fault_every": args.gateway_fault_every,
            "op9": args.op9,
            "quiet_every": quiet_every(args),
            "tls": args.tls,
            "shards": run["shards"],
        },
        "fault_kinds": [
            {"kind": k.name, "scope": k.scope, "weight": k.weight, "expect": k.expect or "valid"}
            for k in CONNECTION_FAULTS + SHARD_FAULTS
        ],
        "wall_s": run["wall_s"],
        "phases_s": run["phases_s"],
        "log_dir": str(logs),
        "simulator": {
            key: sim_report.get(key)
            for key in (
                "media_drops",
                "udp_dropped_in",
                "udp_dropped_out",
                "cpu_s",
                "wall_s",
                "rss_peak_kib",
                "voice_sessions",
                "gateway_sessions",
                "simulator_errors",
            )
        },
        **result,
    }
    heard = sim_report.get("heard") or {}
    output["simulator"]["frames_heard"] = {
        key: sum(entry.get(key, 0) for entry in heard.values())
        for key in ("e2ee", "plain", "undecryptable", "undecryptable_plain")
    }
    print_table(result, args)
    frames = output["simulator"]["frames_heard"]
    print(
        f"frames the members opened: {frames['e2ee']} end-to-end encrypted, {frames['plain']} "
        f"plaintext (DAVE not ready or in transition); {frames['undecryptable']} they could not "
        f"open ({frames['undecryptable_plain']} of them plaintext)"
    )
    for error in sim_report.get("simulator_errors") or []:
        print(f"  SIMULATOR ERROR (not judged; see sim.log): {error[:300]}")
    path = Path(json_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(output, indent=1))
    print(f"\nwrote {path}; logs in {logs}")
    return 0 if result["all_checks_pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
