"""soak.py's judge: lines up the simulator's fault log with the bot's events, on one clock.

Pure functions over the two processes' records (no I/O but reading the bot's log for evidence),
so a run's files can be judged again later: ``analyse(...)`` takes what ``soak.py`` collected.

How a fault is judged (per target connection, an *episode*):

- Every invalidation (and every failed join, which is one too) is attributed to a fault of that
  connection whose window covers it (``t0 <= t <= t1 + ATTRIBUTION_S``): the latest one that
  expected that very reason, else the latest disruptive one, else the latest. A fault the bot
  learns of through the main gateway (a kick, a move) that falls in an outage of its shard
  acts when the shard resumes, so its window runs from the outage's end. An invalidation no
  fault explains is a finding.
- A join that fails with ERROR because IP discovery got no answer while the connection's UDP
  path was blackholed or lossy (within the 5 s discovery window) is right, and only counted.
- A fault expecting a reason must get it; the bot then joins again, and the simulator must hear
  the new connection within ``RECOVERY_HEARD_S`` of its Connected.
- A fault expecting the connection to stay valid must get no invalidation. Its *recovery* is
  the end of the first not-connected period that starts between the fault's start and two
  seconds after its end (a resume, a re-handshake), or the fault's end if there was none; the
  simulator must hear the connection within ``RECOVERY_HEARD_S`` after it.
- A check that another disruptive fault of the same connection overlaps is *superseded*:
  counted, not judged. Overlapping means starting before the recovery plus one second and not
  yet settled (two seconds after its end, eight for one that makes the bot re-join) when this
  fault started; for a main-gateway fault, which must not touch the voice at all, only the
  audio around its end is judged, so only faults overlapping that count.
- RSS: growth over the chaos is bounded; the slope over its second half only when that half
  lasts ``SLOPE_MIN_SPAN_MIN`` minutes (over less it measures the last re-joins, not a leak).
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _soak_common import FAULTS, RECOVERY_HEARD_S

__all__ = ["ATTRIBUTION_S", "analyse", "linear_slope"]

#: How long after a fault's end an invalidation may still be blamed on it: the move grace (5 s)
#: and a stalled heartbeat's detection (two intervals) fit well inside.
ATTRIBUTION_S = 20.0
#: A not-connected period starting this long after a fault's end still belongs to it.
LATE_REACTION_S = 2.0
#: How long after a fault's end a re-join (delay, op 4, handshake) may still be under way.
REJOIN_S = 8.0
#: The RSS slope is judged only over a second half at least this long (minutes).
SLOPE_MIN_SPAN_MIN = 2.5
#: Faults that impair a connection's UDP path, and how long IP discovery tries (5 x 1 s).
UDP_FAULTS = frozenset({"udp_loss", "udp_blackhole", "udp_blackhole_long"})
#: Faults the bot learns of through the main gateway (a voice state or server update): during
#: an outage of its shard they wait in the gateway's replay, and act when the shard resumes.
GATEWAY_DELIVERED = frozenset({"kick", "server_move", "channel_move"})
DISCOVERY_S = 5.0
#: Findings kept in full in the JSON (the counts cover them all).
MAX_FINDINGS = 200
NOT_CONNECTED = ("connecting", "new", "invalid", "absent")


@dataclass
class Timeline:
    """One connection slot's life as the bot saw it."""

    states: list[tuple[float, str]] = field(default_factory=list)
    invalidations: list[dict[str, Any]] = field(default_factory=list)
    connected: list[float] = field(default_factory=list)

    def state_at(self, at: float) -> str:
        times = [t for t, _ in self.states]
        index = bisect.bisect_right(times, at) - 1
        return self.states[index][1] if index >= 0 else "absent"

    def first(self, predicate: Any, after: float, before: float = float("inf")) -> float | None:
        for t, state in self.states:
            if after <= t <= before and predicate(state):
                return t
        return None


def heard_in(runs: list[list[float]], start: float, end: float) -> bool:
    """Whether any frame was heard in [start, end] (runs are contiguous within HEARD_MERGE_S)."""
    return any(a <= end and b >= start for a, b in runs)


def first_heard_after(runs: list[list[float]], at: float) -> float | None:
    for a, b in runs:
        if b >= at:
            return max(a, at)
    return None


def linear_slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x (0 for fewer than two points)."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in points) / sxx


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))]


def log_evidence(
    log_lines: list[tuple[float, str]], guild_id: str | None, start: float, end: float
) -> list[str]:
    """The bot's log lines in a window that name the guild (or the gateway), at most 40."""
    times = [t for t, _ in log_lines]
    lo = bisect.bisect_left(times, start)
    hi = bisect.bisect_right(times, end)
    out = []
    for _, line in log_lines[lo:hi]:
        if guild_id is None or f"guild {guild_id}" in line or "discore_voice.gateway" in line:
            out.append(line)
            if len(out) >= 40:
                break
    return out


def read_log(path: Path) -> list[tuple[float, str]]:
    lines: list[tuple[float, str]] = []
    if not path.exists():
        return lines
    for line in path.read_text(errors="replace").splitlines():
        match = re.match(r"^(\d+\.\d+) ", line)
        if match:
            lines.append((float(match.group(1)), line))
        elif lines:  # a traceback line: keep it with its record
            lines.append((lines[-1][0], line))
    return lines


def analyse(
    *,
    faults: list[dict[str, Any]],
    heard: dict[str, dict[str, Any]],
    bot_events: list[dict[str, Any]],
    guilds: list[dict[str, Any]],
    chaos: tuple[float, float],
    settled_at: float | None,
    log_lines: list[tuple[float, str]],
    limits: dict[str, float],
    harness_errors: list[str],
) -> dict[str, Any]:
    timelines: dict[int, Timeline] = {g["index"]: Timeline() for g in guilds}
    guild_ids = {g["index"]: g["guild_id"] for g in guilds}
    crashes: list[dict[str, Any]] = []
    error_logs: list[dict[str, Any]] = []
    samples: list[dict[str, Any]] = []
    rss: list[tuple[float, int]] = []
    anomalies: list[dict[str, Any]] = []
    joins = 0
    settled_event: dict[str, Any] | None = None
    for event in bot_events:
        kind = event.get("event")
        g = event.get("g")
        if kind == "state" and g in timelines:
            timelines[g].states.append((event["t"], event["state"]))
        elif kind in ("invalidated", "join_failed") and g in timelines:
            timelines[g].invalidations.append({**event, "source": kind})
        elif kind == "connected" and g in timelines:
            timelines[g].connected.append(event["t"])
        elif kind == "join":
            joins += 1
        elif kind == "crash":
            crashes.append(event)
        elif kind == "error_log":
            error_logs.append(event)
        elif kind == "sample":
            samples.append(event)
        elif kind == "rss":
            rss.append((event["t"], event["rss"]))
        elif kind == "play_returned_early":
            anomalies.append(event)
        elif kind == "settled":
            settled_event = event
        elif kind == "exit" and event.get("status"):
            crashes.append({**event, "where": "bot exit status"})

    chaos_start, chaos_end = chaos
    findings: list[dict[str, Any]] = []

    def finding(
        check: str, g: int | None, text: str, window: tuple[float, float], **extra: Any
    ) -> None:
        entry: dict[str, Any] = {"check": check, "g": g, "text": text, **extra}
        if g is not None:
            timeline = timelines[g]
            entry["bot_states"] = [
                [round(t, 3), s] for t, s in timeline.states if window[0] - 1 <= t <= window[1]
            ][:40]
            entry["bot_log"] = log_evidence(log_lines, guild_ids[g], window[0] - 0.5, window[1])
        findings.append(entry)

    # -- internal errors ------------------------------------------------------------------------
    internal = [
        inv
        for timeline in timelines.values()
        for inv in timeline.invalidations
        if str(inv.get("detail", "")).startswith("internal error")
    ]
    for inv in internal:
        finding(
            "internal_errors",
            inv["g"],
            f"{inv['source']} {inv['reason']}: {inv['detail']}",
            (inv["t"] - 5, inv["t"] + 1),
        )
    for record in error_logs:
        findings.append(
            {
                "check": "internal_errors",
                "g": None,
                "text": f"ERROR log from {record['logger']}: {record['message']}",
                "exc": record.get("exc"),
                "t": record["t"],
            }
        )
    for crash in crashes:
        findings.append(
            {
                "check": "crashes",
                "g": crash.get("g"),
                "text": f"{crash.get('where')}: {crash.get('error')}",
                "traceback": crash.get("traceback"),
                "t": crash.get("t"),
            }
        )

    # -- episodes -------------------------------------------------------------------------------
    episodes: dict[int, list[dict[str, Any]]] = {g: [] for g in timelines}
    for fault in faults:
        if fault.get("skipped"):
            continue
        for g in fault["targets"]:
            if g in episodes:
                episodes[g].append({"fault": fault, "kind": FAULTS[fault["kind"]], "invs": []})
    outages: dict[int, list[tuple[float, float]]] = {}
    for fault in faults:
        if not fault.get("skipped") and FAULTS[fault["kind"]].scope == "shard":
            outages.setdefault(fault["shard"], []).append((fault["t0"], fault["t1"]))
    for g in episodes:
        episodes[g].sort(key=lambda e: e["fault"]["t0"])
        for episode in episodes[g]:
            episode["until"] = _acts_until(episode, outages) + ATTRIBUTION_S

    unexplained = 0
    tolerated: list[dict[str, Any]] = []
    for g, timeline in timelines.items():
        for inv in timeline.invalidations:
            impaired = [
                e
                for e in episodes[g]
                if e["kind"].name in UDP_FAULTS
                and e["fault"]["t0"] <= inv["t"]
                and e["fault"]["t1"] >= inv["t"] - DISCOVERY_S
            ]
            if (
                impaired
                and inv["source"] == "join_failed"
                and inv["reason"] == "ERROR"
                and "IP discovery" in str(inv.get("detail"))
            ):
                # A join while its UDP path is blackholed (or losing most datagrams) cannot
                # finish IP discovery: failing it is right. The bot joins again afterwards.
                tolerated.append({"g": g, "t": inv["t"], "during": impaired[-1]["kind"].name})
                continue
            candidates = [e for e in episodes[g] if e["fault"]["t0"] <= inv["t"] <= e["until"]]
            chosen = None
            for matching in (
                [e for e in candidates if e["kind"].expect == inv["reason"]],
                [e for e in candidates if e["kind"].disruptive],
                candidates,
            ):
                if matching:
                    chosen = matching[-1]
                    break
            if chosen is None:
                unexplained += 1
                finding(
                    "reasons",
                    g,
                    f"unexplained {inv['source']} {inv['reason']}: {inv['detail']} "
                    "(no fault of this connection in the last "
                    f"{ATTRIBUTION_S:g} s)",
                    (inv["t"] - 10, inv["t"] + 2),
                    t=inv["t"],
                )
            else:
                chosen["invs"].append(inv)

    rows: dict[str, dict[str, Any]] = {}
    for name, kind in FAULTS.items():
        rows[name] = {
            "kind": name,
            "what": kind.what,
            "expect": kind.expect or "valid",
            "injected": 0,
            "skipped": 0,
            "episodes": 0,
            "ok": 0,
            "mismatch": 0,
            "not_recovered": 0,
            "not_heard": 0,
            "superseded": 0,
            "not_applicable": 0,
            "voice_interrupted": 0,
            "recovery_s": [],
            "heard_latency_s": [],
            "observed": {},
        }
    durations: dict[str, list[float]] = {name: [] for name in rows}
    for fault in faults:
        row = rows[fault["kind"]]
        if fault.get("skipped"):
            row["skipped"] += 1
        else:
            row["injected"] += 1
            # From injection to the simulator seeing the end: for a main-gateway fault, how long
            # the shard was away (its reconnect backoff included).
            durations[fault["kind"]].append(fault["t1"] - fault["t0"])

    horizon = settled_at if settled_at is not None else chaos_end
    runs_of = {int(k): v["runs"] for k, v in heard.items()}
    for g, eps in episodes.items():
        timeline = timelines[g]
        runs = runs_of.get(g, [])
        for episode in eps:
            fault, kind = episode["fault"], episode["kind"]
            row = rows[kind.name]
            row["episodes"] += 1
            t0, t1 = fault["t0"], fault["t1"]
            expect = kind.expect
            state0 = timeline.state_at(t0)
            if kind.name == "gw_op9" and state0 in ("absent", "invalid"):
                row["not_applicable"] += 1  # no connection on the shard's session to end
                continue
            invs = episode["invs"]
            observed = "valid" if not invs else invs[0]["reason"]
            row["observed"][observed] = row["observed"].get(observed, 0) + 1
            others = [e for e in eps if e is not episode and e["kind"].disruptive]
            # A disruptive fault's own check spans from its start; a non-disruptive one (a main
            # gateway fault, voice unaffected) only needs the audio around its end.
            judge_from = t0 if kind.disruptive else t1 - LATE_REACTION_S

            def overlapped(end: float, start: float = judge_from, others: Any = others) -> bool:
                return any(e["fault"]["t0"] <= end and _settles(e) >= start for e in others)

            def judge_heard(
                back: float,
                what: str,
                row: dict[str, Any] = row,
                runs: list[list[float]] = runs,
                g: int = g,
                t0: float = t0,
                t1: float = t1,
                fault: dict[str, Any] = fault,
                overlapped: Any = overlapped,
            ) -> None:
                if overlapped(back + RECOVERY_HEARD_S):
                    row["superseded"] += 1
                    return
                first = first_heard_after(runs, back)
                if heard_in(runs, back, back + RECOVERY_HEARD_S):
                    row["ok"] += 1
                    row["recovery_s"].append(back - t1)
                    if first is not None:
                        row["heard_latency_s"].append(first - back)
                    return
                row["not_heard"] += 1
                finding(
                    "recovery",
                    g,
                    f"{fault['kind']}: {what} at {back:.3f} ({back - t1:+.3f} s after the "
                    f"fault's end) but not heard within {RECOVERY_HEARD_S:g} s (next heard: "
                    f"{_fmt(first, back)})",
                    (t0, back + 5),
                    t0=t0,
                    params=fault.get("params"),
                    note=fault.get("note"),
                )

            def not_recovered(text: str, g: int = g, t0: float = t0, fault: Any = fault) -> None:
                finding(
                    "recovery",
                    g,
                    f"{fault['kind']}: {text}",
                    (t0, max(fault["t1"], t0) + 15),
                    t0=t0,
                    params=fault.get("params"),
                    note=fault.get("note"),
                )

            if expect is not None:
                relaxed = kind.name == "gw_op9" and state0 != "connected"
                if invs and invs[0]["reason"] == expect:
                    back = timeline.first(lambda s: s == "connected", invs[0]["t"], horizon)
                    if back is not None:
                        judge_heard(back, "re-joined")
                    elif overlapped(horizon):
                        row["superseded"] += 1
                    else:
                        row["not_recovered"] += 1
                        not_recovered(f"invalidated {expect} as expected, never connected again")
                elif not invs and relaxed:
                    row["ok"] += 1  # a join in flight may survive the lost session
                elif not invs and overlapped(t1 + ATTRIBUTION_S):
                    row["superseded"] += 1
                else:
                    row["mismatch"] += 1
                    got = (
                        "no invalidation (stayed valid)"
                        if not invs
                        else f"{invs[0]['source']} {invs[0]['reason']}: {invs[0]['detail']}"
                    )
                    finding(
                        "reasons",
                        g,
                        f"{kind.name}: expected {expect}, got {got}",
                        (t0, max(t1, t0) + 15),
                        t0=t0,
                        params=fault.get("params"),
                    )
                continue

            # expected to stay valid
            if invs:
                row["mismatch"] += 1
                finding(
                    "reasons",
                    g,
                    f"{kind.name}: expected the connection to stay valid, got "
                    f"{invs[0]['source']} {invs[0]['reason']}: {invs[0]['detail']}",
                    (t0, invs[0]["t"] + 3),
                    t0=t0,
                    params=fault.get("params"),
                    note=fault.get("note"),
                )
                continue
            down = timeline.first(
                lambda s: s in NOT_CONNECTED, t0, min(t1 + LATE_REACTION_S, horizon)
            )
            if down is not None and kind.disruptive:
                back = timeline.first(lambda s: s == "connected", down, horizon)
            else:
                if down is not None and not overlapped(t1 + LATE_REACTION_S, t0):
                    row["voice_interrupted"] += 1  # a main-gateway fault reached the voice
                back = (
                    t1
                    if timeline.state_at(t1) == "connected"
                    else timeline.first(lambda s: s == "connected", t1, horizon)
                )
            if back is not None:
                judge_heard(back, "recovered")
            elif overlapped(horizon):
                row["superseded"] += 1
            else:
                row["not_recovered"] += 1
                not_recovered(
                    f"stayed valid but never connected again (state at the end: "
                    f"{timeline.state_at(horizon)})"
                )

    # -- the end state --------------------------------------------------------------------------
    final_ok = settled_event is not None and bool(settled_event.get("all_connected"))
    if settled_event is None:
        findings.append({"check": "final", "g": None, "text": "the bot never settled"})
    else:
        for missing in settled_event.get("missing", []):
            finding(
                "final",
                missing["g"],
                f"not connected at the end (state {missing['state']})",
                (settled_event["t"] - 20, settled_event["t"]),
            )
        at = settled_event["t"]
        for g in timelines:
            if not heard_in(runs_of.get(g, []), at, at + RECOVERY_HEARD_S):
                final_ok = False
                finding(
                    "final",
                    g,
                    f"connected at the end but not heard within {RECOVERY_HEARD_S:g} s of settling",
                    (at - 5, at + 2),
                )

    # -- resources ------------------------------------------------------------------------------
    quiet = [s for s in samples if str(s["label"]).startswith("quiet")]
    end = [s for s in samples if s["label"] == "end"]
    for sample in quiet + end:
        if not sample["ok"]:
            findings.append(
                {
                    "check": "resources",
                    "g": None,
                    "text": f"sample {sample['label']} above its baseline",
                    "sample": sample,
                }
            )
    resources_ok = bool(end) and all(s["ok"] for s in quiet + end)

    # -- memory ---------------------------------------------------------------------------------
    window_rss = [(t, r) for t, r in rss if chaos_start <= t <= chaos_end]
    mib = 2**20
    memory: dict[str, Any] = {"samples": len(window_rss)}
    memory_ok = False
    if len(window_rss) >= 2:
        start_rss, end_rss = window_rss[0][1], window_rss[-1][1]
        middle = chaos_start + (chaos_end - chaos_start) / 2
        half = [((t - middle) / 60.0, r / mib) for t, r in window_rss if t >= middle]
        slope = linear_slope(half)
        growth = (end_rss - start_rss) / mib
        memory.update(
            start_mib=start_rss / mib,
            end_mib=end_rss / mib,
            max_mib=max(r for _, r in window_rss) / mib,
            growth_mib=growth,
            slope_second_half_mib_per_min=slope,
            limit_growth_mib=limits["growth_mib"],
            limit_slope_mib_per_min=limits["slope_mib_per_min"],
        )
        # A slope over less than a few minutes measures the last re-joins, not a leak.
        span = (window_rss[-1][0] - middle) / 60.0
        memory["second_half_min"] = span
        memory["slope_judged"] = span >= SLOPE_MIN_SPAN_MIN
        memory_ok = growth <= limits["growth_mib"] and (
            span < SLOPE_MIN_SPAN_MIN or slope <= limits["slope_mib_per_min"]
        )
        if not memory_ok:
            findings.append(
                {
                    "check": "memory",
                    "g": None,
                    "text": f"RSS grew {growth:.1f} MiB, slope {slope:.2f} MiB/min over the "
                    f"second half (limits {limits['growth_mib']:g} MiB, "
                    f"{limits['slope_mib_per_min']:g} MiB/min)",
                }
            )

    for row in rows.values():
        row["duration_p50_s"] = percentile(durations[row["kind"]], 0.5)
        row["duration_max_s"] = max(durations[row["kind"]], default=None)
        rec, lat = row.pop("recovery_s"), row.pop("heard_latency_s")
        row["recovery_p50_s"] = percentile(rec, 0.5)
        row["recovery_max_s"] = max(rec) if rec else None
        row["heard_latency_p50_s"] = percentile(lat, 0.5)
        row["heard_latency_max_s"] = max(lat) if lat else None

    spontaneous = 0
    for g, timeline in timelines.items():
        windows = [(e["fault"]["t0"], e["until"]) for e in episodes[g]]
        previous = None
        for t, state in timeline.states:
            if (
                state == "connecting"
                and previous == "connected"
                and chaos_start <= t <= chaos_end
                and not any(a <= t <= b for a, b in windows)
            ):
                spontaneous += 1
                finding(
                    "info_spontaneous_reconnect",
                    g,
                    "went from connected to connecting with no fault of its own in the window",
                    (t - 2, t + 5),
                    t=t,
                )
            previous = state

    internal_errors = len(internal) + len(error_logs)
    checks = {
        "no_crashes": not crashes and not harness_errors,
        "no_internal_errors": internal_errors == 0,
        "invalidation_reasons": unexplained == 0
        and all(row["mismatch"] == 0 for row in rows.values()),
        "recovered_and_heard": all(
            row["not_recovered"] == 0 and row["not_heard"] == 0 for row in rows.values()
        ),
        "final_all_valid_and_heard": final_ok,
        "resources_back_to_baseline": resources_ok,
        "rss_bounded": memory_ok,
    }
    judged = [f for f in findings if not f["check"].startswith("info_")]
    return {
        "checks": checks,
        "all_checks_pass": all(checks.values()),
        "crashes": len(crashes) + len(harness_errors),
        "internal_errors": internal_errors,
        "unexplained_invalidations": unexplained,
        "tolerated_join_failures": tolerated,
        "spontaneous_reconnects": spontaneous,
        "joins": joins,
        "play_anomalies": len(anomalies),
        "faults": list(rows.values()),
        "samples": samples,
        "memory": memory,
        "harness_errors": harness_errors,
        "findings_total": len(judged),
        "findings": (judged + [f for f in findings if f["check"].startswith("info_")])[
            :MAX_FINDINGS
        ],
    }


def _acts_until(episode: dict[str, Any], outages: dict[int, list[tuple[float, float]]]) -> float:
    """When a fault's effect may last show: its end, or for one the bot learns of through the
    main gateway, the end of an outage of its shard that it fell in (the replay brings it)."""
    fault = episode["fault"]
    end: float = fault["t1"]
    if episode["kind"].name in GATEWAY_DELIVERED:
        for start, stop in outages.get(fault.get("shard", -1), ()):
            if start <= fault["t0"] <= stop:
                end = max(end, stop)
    return end


def _settles(episode: dict[str, Any]) -> float:
    """When a fault's disruption is over at the latest: a re-join takes longer than a resume."""
    fault = episode["fault"]
    return float(fault["t1"]) + (REJOIN_S if episode["kind"].expect else LATE_REACTION_S)


def _fmt(value: float | None, reference: float) -> str:
    return "never" if value is None else f"{value - reference:+.3f} s"
