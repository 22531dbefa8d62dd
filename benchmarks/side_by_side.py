"""discore_voice and discord.py 2.7.1 sending side by side to one local receiver.

Every run uses three processes on this machine, over loopback:

* the receiver: the local Discord simulator (``_sbs_receiver.py``), TLS on, DAVE off, alone in
  its process. Its media server decrypts every packet and stamps its arrival (kernel receive
  timestamps where available) per SSRC; it reports its own CPU time and drop counters so the
  table shows it kept up;
* the sender: N streams from one process, either discore_voice (``_sbs_ours.py``, this venv) or
  discord.py 2.7.1 (``_sbs_discordpy.py``, run with ``.venv-peer``'s python, see
  ``scripts/setup-peer-venv``), with the same encoder settings (128 kbps, FEC on, 15 % expected
  loss) and the same audio: a sine as PCM, or the same pre-encoded Opus packets.

Per run it reports: CPU-seconds of the sender per stream-second (over the playing window only),
the receiver-side gap p50/p99/max over the audio frames (discord.py's first gap, always ~40 ms, is
dropped and shown separately; ours is kept), the worst offset of any audio packet's arrival from
the 20 ms grid of its RTP timestamps (phase = the stream's median offset), the time to connect N
voice connections at once (after the shard is READY), and resident memory per connection (RSS
growth over connecting / N).

Run from the repository root (the defaults take a few minutes on 2 cores):

    .venv/bin/python benchmarks/side_by_side.py [--seconds 10] [--pcm-n 1,10] [--opus-n 1,100]
        [--sides ours,discord.py] [--json benchmarks/results/side_by_side.json]
        [--plot benchmarks/results/side_by_side_gaps.png]

Nothing here asserts a timing: it prints a table, writes the numbers as JSON and, when matplotlib
is installed (the ``bench`` extra), a PNG of the gap distributions (``plot_gaps.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import plot_gaps  # benchmarks/, first on sys.path when this runs as a script
from _sbs_process import machine  # benchmarks/, first on sys.path as a script

from discore_voice._audio.opus import PCM_BLOCK_SIZE, OpusEncoder
from discore_voice._audio.signals import sine_pcm

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PEER_PYTHON = Path(os.environ.get("DISCORE_VOICE_PEER_PYTHON", ROOT / ".venv-peer/bin/python"))
FRAME_MS = 20.0


class LineReader:
    """JSON lines from a child's stdout, each wait bounded."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        self.process = process
        self.stream = process.stdout
        os.set_blocking(self.stream.fileno(), False)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.stream, selectors.EVENT_READ)
        self.pending = b""

    def next(self, timeout: float, want: str | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self.pending:
                line, self.pending = self.pending.split(b"\n", 1)
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if want is None or event.get("event") == want:
                    return event
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {want or 'line'} from {self.process.args!r}")
            if self.selector.select(left):
                chunk = self.stream.read(1 << 20)
                if chunk == b"":
                    raise RuntimeError(f"{self.process.args!r} exited before {want or 'a line'}")
                if chunk:
                    self.pending += chunk


def percentile(ordered: list[float], fraction: float) -> float:
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def write_inputs(scratch: Path, seconds: float) -> tuple[Path, Path]:
    pcm = sine_pcm(seconds, hz=440.0)
    pcm_path = scratch / "sine.pcm"
    pcm_path.write_bytes(pcm)
    opus_path = scratch / "sine.opus-packets"
    with OpusEncoder(bitrate=128_000, fec=True) as encoder, opus_path.open("wb") as out:
        for offset in range(0, len(pcm) - PCM_BLOCK_SIZE + 1, PCM_BLOCK_SIZE):
            packet = encoder.encode(pcm[offset : offset + PCM_BLOCK_SIZE])
            out.write(struct.pack("<H", len(packet)) + packet)
    return pcm_path, opus_path


def grid_offset(arrivals: list[list[int]], skip: int, frames: int) -> float:
    """Worst distance (ms) of an audio packet's arrival from the sender's RTP-time grid.

    Expected arrival = the packet's RTP timestamp / 48 kHz; the grid's phase is the stream's
    median offset, so one late first packet does not shift everything. A skipped late frame,
    whose timestamp advanced with real time, is no offset; a drift or a burst is.
    """
    audio = arrivals[skip:frames]
    if len(audio) < 2:
        return 0.0
    ts0, t0 = audio[0]
    offsets = sorted(
        (arrival - t0) / 1e6 - ((timestamp - ts0) & 0xFFFFFFFF) / 48.0
        for timestamp, arrival in audio
    )
    phase = offsets[len(offsets) // 2]
    return max(phase - offsets[0], offsets[-1] - phase)


#: A gap this long counts as late in the time histogram of late gaps.
LATE_GAP_NS = 25_000_000


def analyse(side: str, report: dict[str, Any], frames: int) -> dict[str, Any]:
    """Receiver-side numbers over the audio frames of every stream."""
    skip = 1 if side == "discord.py" else 0
    pooled: list[float] = []
    first_gaps: list[float] = []
    worst_offset = 0.0
    short_streams = 0
    # When the long gaps happened: a stall of the whole sender shows as one busy bin.
    starts = [stream["arrivals"][0][1] for stream in report["streams"] if stream.get("arrivals")]
    origin = min(starts, default=0)
    late_by_bin: dict[int, int] = {}
    settled: list[float] = []  # the gaps of frames that arrived after the first second
    for stream in report["streams"]:
        arrivals = stream.get("arrivals") or []
        for index in range(skip + 1, min(frames, len(arrivals))):
            gap = arrivals[index][1] - arrivals[index - 1][1]
            if arrivals[index][1] - origin >= 1_000_000_000:
                settled.append(gap / 1e6)
            if gap > LATE_GAP_NS:
                bin_ = (arrivals[index][1] - origin) // 100_000_000
                late_by_bin[bin_] = late_by_bin.get(bin_, 0) + 1
        gaps = [gap / 1e6 for gap in stream["gaps_ns"]]
        if stream["packets"] < frames:
            short_streams += 1
        if gaps:
            first_gaps.append(gaps[0])
        pooled.extend(gaps[skip : frames - 1])
        worst_offset = max(worst_offset, grid_offset(stream.get("arrivals") or [], skip, frames))
    pooled.sort()
    first_gaps.sort()
    settled.sort()
    return {
        "streams_seen": len(report["streams"]),
        "short_streams": short_streams,
        "lost": sum(stream["lost"] for stream in report["streams"]),
        "gap_p50_ms": percentile(pooled, 0.50),
        "gap_p99_ms": percentile(pooled, 0.99),
        "gap_max_ms": pooled[-1] if pooled else float("nan"),
        "gaps_counted": len(pooled),
        # Without the start: every stream of a run starts in the same instant, a burst a bot
        # that starts its streams one by one never has.
        "gap_p99_after_1s_ms": percentile(settled, 0.99),
        "gap_max_after_1s_ms": settled[-1] if settled else float("nan"),
        "gaps_over_25ms_by_100ms": {
            f"{bin_ / 10:.1f}s": count for bin_, count in sorted(late_by_bin.items())
        },
        # The pooled gaps themselves (ms, sorted, 1 µs resolution), same frames as the
        # percentiles, so plot_gaps.py can draw the distribution rather than three numbers.
        "audio_gaps_ms": [round(gap, 3) for gap in pooled],
        "first_gap_median_ms": percentile(first_gaps, 0.5),
        "first_gap_max_ms": first_gaps[-1] if first_gaps else float("nan"),
        "worst_grid_offset_ms": worst_offset,
        "receiver_cpu_s": report["cpu_s"],
        "receiver_wall_s": report["wall_s"],
        "receiver_cpu_share": report["cpu_s"] / report["wall_s"] if report["wall_s"] else 0.0,
        "receiver_drops": report["drops"],
        "receiver_udp_rcvbuf_errors": report.get("udp_rcvbuf_errors"),
        "receiver_clock": report["clock"],
        "receiver_packets": report["rtp_packets"],
    }


def py_spy(output: Path, command: list[str]) -> list[str]:
    """``command`` under a sampling profiler outside the process, which does not slow it down."""
    output.parent.mkdir(parents=True, exist_ok=True)
    return [
        shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy"),
        *("record", "--nonblocking", "--format", "raw", "--rate", "250"),
        *("--output", str(output), "--"),
        *command,
    ]


def run_one(
    side: str, kind: str, n: int, args: argparse.Namespace, scratch: Path, inputs: dict[str, Path]
) -> dict[str, Any]:
    receiver_cmd = [
        sys.executable,
        str(HERE / "_sbs_receiver.py"),
        *("--guilds", str(n)),
        *("--voice-events-gap", str(args.voice_events_gap)),
    ]
    if side == "discord.py" or args.xchacha_only:
        receiver_cmd.append("--xchacha-only")
    if n >= args.lean_from:
        receiver_cmd.append("--lean")
    if args.profile:
        receiver_cmd = py_spy(Path(args.profile) / f"receiver-{side}-{kind}-{n}.txt", receiver_cmd)
    receiver = subprocess.Popen(
        receiver_cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    try:
        lines = LineReader(receiver)
        info = lines.next(30.0)
        info_path = scratch / f"info-{side}-{kind}-{n}.json"
        info_path.write_text(json.dumps(info))
        assert receiver.stdin is not None
        receiver.stdin.write(b"mark\n")
        receiver.stdin.flush()
        lines.next(10.0, "marked")
        python = str(PEER_PYTHON) if side == "discord.py" else sys.executable
        script = "_sbs_discordpy.py" if side == "discord.py" else "_sbs_ours.py"
        limit = args.seconds + 60.0 + n * 0.5
        sender_cmd = [
            python,
            str(HERE / script),
            *("--info", str(info_path)),
            *("--n", str(n)),
            *(f"--{kind}", str(inputs[kind])),
            *("--timeout", str(limit)),
        ]
        if side == "discord.py":
            sender_cmd += ["--concurrency", str(args.dpy_connect_concurrency)]
        elif args.gc_freeze:
            sender_cmd.append("--gc-freeze")
        if args.profile:
            sender_cmd = py_spy(Path(args.profile) / f"{side}-{kind}-{n}.txt", sender_cmd)
        env = dict(os.environ)
        for name in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP"):
            env.pop(name, None)
        log = scratch / f"sender-{side}-{kind}-{n}.log"
        with log.open("wb") as errors:
            done = subprocess.run(
                sender_cmd,
                stdout=subprocess.PIPE,
                stderr=errors,
                env=env,
                timeout=limit + 15.0,
                check=False,
            )
        result = None
        for line in done.stdout.splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == "done":
                result = event
        if result is None:
            tail = log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{side} {kind} N={n} failed (exit {done.returncode}):\n{tail}")
        time.sleep(0.5)  # datagrams still queued on the receiver's socket
        receiver.stdin.write(b"report\n")
        receiver.stdin.flush()
        report = lines.next(60.0, "report")
        receiver.stdin.write(b"quit\n")
        receiver.stdin.flush()
    finally:
        if receiver.stdin is not None:
            receiver.stdin.close()  # EOF ends the receiver (and lets a profiler write its file)
        try:
            receiver.wait(timeout=10.0)
        except subprocess.TimeoutExpired:
            receiver.kill()
            receiver.wait()
    frames = round(args.seconds * 1000 / FRAME_MS)
    row = {
        "side": side,
        "kind": kind,
        "n": n,
        "seconds": args.seconds,
        "gc_freeze": bool(args.gc_freeze and side == "ours"),
        "cpu_s": result["cpu_s"],
        "cpu_per_stream_second": result["cpu_s"] / (n * args.seconds),
        "play_wall_s": result["play_wall_s"],
        "connect_s": result["connect_s"],
        "first_connect_s": result["first_connect_s"],
        "rss_per_connection_kib": result["rss_per_connection"] / 1024,
        "rss_peak_mib": result["rss_peak"] / 2**20,
        "sender_extra": {
            key: result[key]
            for key in (
                "send_stats",
                "gc_pauses",
                "errors",
                "discord_py",
                "connect_concurrency",
                "connect_retries",
            )
            if key in result
        },
        **analyse(side, report, frames),
    }
    return row


HEADER = (
    f"{'side':<13}{'kind':<6}{'N':>5} {'CPU/str-s':>10} {'p50':>6} {'p99':>6} {'p99>1s':>6}"
    f" {'max':>7}"
    f" {'1st gap':>7} {'grid':>6} {'conn N':>8} {'RSS/conn':>9} {'rcv CPU':>8} {'drops':>5}"
    f" {'lost':>5}"
)


def format_row(row: dict[str, Any]) -> str:
    return (
        f"{row['side']:<13}{row['kind']:<6}{row['n']:>5} {row['cpu_per_stream_second']:>10.5f}"
        f" {row['gap_p50_ms']:>6.2f} {row['gap_p99_ms']:>6.2f} {row['gap_p99_after_1s_ms']:>6.2f}"
        f" {row['gap_max_ms']:>7.2f}"
        f" {row['first_gap_median_ms']:>7.2f} {row['worst_grid_offset_ms']:>6.2f}"
        f" {row['connect_s'] * 1000:>6.0f}ms {row['rss_per_connection_kib']:>6.0f}KiB"
        f" {row['receiver_cpu_share'] * 100:>7.1f}% {sum(row['receiver_drops'].values()):>5}"
        f" {row['receiver_udp_rcvbuf_errors']:>5}"
        f" {row['lost']:>5}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each stream")
    parser.add_argument("--pcm-n", default="1,10", help="PCM stream counts, comma-separated")
    parser.add_argument("--opus-n", default="1,100", help="pre-encoded Opus stream counts")
    parser.add_argument(
        "--dpy-pcm-n", default=None, help="discord.py's PCM counts (default: --pcm-n)"
    )
    parser.add_argument(
        "--dpy-opus-n", default=None, help="discord.py's pre-encoded counts (default: --opus-n)"
    )
    parser.add_argument("--sides", default="ours,discord.py")
    parser.add_argument(
        "--dpy-connect-concurrency",
        type=int,
        default=10,
        help="discord.py's voice connects in flight at once",
    )
    parser.add_argument(
        "--voice-events-gap",
        type=float,
        default=0.02,
        help="the simulator's spacing of voice dispatches (s); it serialises them per shard, so"
        " connecting N costs about 2*N*gap; discord.py needs it > 0 (its lost wake-up)",
    )
    parser.add_argument("--xchacha-only", action="store_true", help="same cipher for our side too")
    parser.add_argument(
        "--gc-freeze",
        action="store_true",
        help="our sender calls gc.freeze() once connected (README's advice for large bots)",
    )
    parser.add_argument(
        "--lean-from",
        type=int,
        default=500,
        help="from this N on the receiver only counts and stamps (no decryption), to keep up",
    )
    parser.add_argument(
        "--profile",
        default="",
        help="directory for py-spy profiles of each sender (collapsed stacks; needs py-spy)",
    )
    parser.add_argument("--json", default=str(HERE / "results" / "side_by_side.json"))
    parser.add_argument(
        "--plot",
        default=str(plot_gaps.DEFAULT_OUT),
        help="PNG of the gap distributions (needs matplotlib: the bench extra); '' for none",
    )
    args = parser.parse_args()
    sides = [side.strip() for side in args.sides.split(",") if side.strip()]
    if "discord.py" in sides and not PEER_PYTHON.is_file():
        print(
            f"no {PEER_PYTHON}: run scripts/setup-peer-venv; skipping discord.py", file=sys.stderr
        )
        sides.remove("discord.py")

    def counts(text: str | None) -> list[int]:
        return [int(part) for part in (text or "").split(",") if part.strip()]

    plan: list[tuple[str, str, int]] = []
    for kind, ours_n, theirs_n in (
        ("pcm", counts(args.pcm_n), counts(args.dpy_pcm_n or args.pcm_n)),
        ("opus", counts(args.opus_n), counts(args.dpy_opus_n or args.opus_n)),
    ):
        for side in sides:
            for n in ours_n if side == "ours" else theirs_n:
                plan.append((side, kind, n))

    scratch = Path(tempfile.mkdtemp(prefix="side-by-side-"))
    rows: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    try:
        pcm_path, opus_path = write_inputs(scratch, args.seconds)
        inputs = {"pcm": pcm_path, "opus": opus_path}
        print(
            f"{args.seconds:g} s streams; gaps in ms at the receiver; CPU per stream-second of the"
            " sender process; grid = worst offset from the 20 ms grid (ms)"
        )
        print(HEADER, flush=True)
        for side, kind, n in plan:
            try:
                row = run_one(side, kind, n, args, scratch, inputs)
            except Exception as exc:
                failures.append({"side": side, "kind": kind, "n": n, "error": str(exc)[-2000:]})
                print(f"{side:<13}{kind:<6}{n:>5} FAILED: {str(exc)[:300]}", flush=True)
                continue
            rows.append(row)
            print(format_row(row), flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    output = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "voice_events_gap_s": args.voice_events_gap,
        "dpy_connect_concurrency": args.dpy_connect_concurrency,
        "encoder": {"bitrate": 128_000, "fec": True, "expected_loss_percent": 15},
        "rows": rows,
        "failures": failures,
    }
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(output, indent=1))
    print(f"wrote {path}")
    if args.plot:
        plot(str(path), output, Path(args.plot))
    return 1 if failures else 0


def plot(name: str, output: dict[str, Any], out: Path) -> None:
    """Draws the gap PNG if it can; a missing matplotlib or an empty run only skips the plot.

    The measurements are already on disk by now, so nothing about the plot may fail the run.
    """
    try:
        written, notes = plot_gaps.render([(name, output)], out)
    except plot_gaps.PlotError as exc:  # MatplotlibMissing included: its message says what to do
        print(f"plot skipped: {exc}")
        return
    for note in notes:
        print(f"plot: {note}")
    print(f"wrote {written}")


if __name__ == "__main__":
    sys.exit(main())
