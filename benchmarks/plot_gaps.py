"""Plot side_by_side.py's receiver-side gap distributions, discore_voice vs discord.py, as a PNG.

Three percentiles hide the shape: a sender that is late once per second and one that jitters on
every packet can share a p99. This draws, per (kind, N) run, the share of audio-frame gaps per
0.5 ms bin on a log scale, so rare late packets stay visible next to the 20 ms bulk.

It reads the JSON that side_by_side.py writes (each row's ``audio_gaps_ms``: the pooled gaps in
ms, discord.py's first gap already dropped, exactly the values behind ``gap_p50_ms`` and co.).
Several files may be given, e.g. a separate N=1000 run; a (side, kind, N) row that appears twice
is taken from the last file.

    .venv/bin/python benchmarks/plot_gaps.py benchmarks/results/side_by_side.json [more.json ...]
        [--out benchmarks/results/side_by_side_gaps.png]

matplotlib comes with the optional ``bench`` extra (``uv pip install -e '.[bench]'``); it is
imported only when drawing, so side_by_side.py can import this module without it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "side_by_side_gaps.png"
GAPS_KEY = "audio_gaps_ms"
MISSING_MATPLOTLIB = "matplotlib is needed for the plot: uv pip install -e '.[bench]'"
X_MAX_MS = 60.0
BIN_MS = 0.5
FRAME_MS = 20.0
KIND_ORDER = ("pcm", "opus")
KIND_TITLES = {"pcm": "PCM, encoded while sending", "opus": "pre-encoded Opus"}
SIDE_ORDER = ("ours", "discord.py")
SIDE_COLOURS = {"ours": "tab:blue", "discord.py": "tab:orange"}


class PlotError(Exception):
    """The inputs cannot make a plot; the message says why, for one line on stderr."""


class MatplotlibMissing(PlotError):
    """matplotlib is not installed: distinct so callers can skip the plot but keep going."""


@dataclass(frozen=True)
class Run:
    """One side's gaps for one (kind, N) run, with the numbers side_by_side.py printed."""

    side: str
    kind: str
    n: int
    gaps_ms: list[float]
    p50_ms: float
    p99_ms: float
    max_ms: float
    label: str
    source: str


@dataclass(frozen=True)
class Panel:
    """The runs drawn together: one kind, our N and discord.py's equal or nearest N."""

    kind: str
    runs: tuple[Run, ...]

    @property
    def title(self) -> str:
        """Names the N of each side, since discord.py's pre-encoded run may stop at 99."""
        ns = sorted({run.n for run in self.runs})
        kind = KIND_TITLES.get(self.kind, self.kind)
        if len(ns) == 1:
            return f"{kind}, N = {ns[0]}"
        return f"{kind}, N = " + " / ".join(f"{run.n} ({run.side})" for run in self.runs)


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """Same nearest-rank rule as side_by_side.py, for rows that lack the stored percentiles."""
    if not ordered:
        return math.nan
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def side_label(side: str, row: dict[str, Any]) -> str:
    """The legend's name of a side; discord.py's version comes from its sender when recorded."""
    if side == "ours":
        return "discore_voice"
    if side == "discord.py":
        version = (row.get("sender_extra") or {}).get("discord_py") or "2.7.1"
        return f"discord.py {version}"
    return side


def stored_or(row: dict[str, Any], key: str, fallback: float) -> float:
    """The row's own number when it has one, so the legend matches the printed table."""
    value = row.get(key)
    return float(value) if isinstance(value, int | float) else fallback


def read_results(path: Path) -> dict[str, Any]:
    """One results file, with errors turned into one readable line instead of a traceback."""
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise PlotError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise PlotError(f"{path} is not JSON: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise PlotError(f"{path} has no 'rows' list: not a side_by_side.py results file")
    return data


def runs_from(results: Sequence[tuple[str, dict[str, Any]]]) -> tuple[list[Run], list[str]]:
    """Every row that carries its gaps, later files winning; plus notes on what was left out.

    A file written before side_by_side.py kept the gaps has only percentiles; such rows are
    skipped with a note, and if nothing is left the caller gets a PlotError that says so.
    """
    chosen: dict[tuple[str, str, int], Run] = {}
    notes: list[str] = []
    without_gaps: list[str] = []
    for source, data in results:
        for row in data["rows"]:
            try:
                side, kind, n = str(row["side"]), str(row["kind"]), int(row["n"])
            except (KeyError, TypeError, ValueError):
                notes.append(f"{source}: a row without side/kind/n, skipped")
                continue
            gaps = row.get(GAPS_KEY)
            if not isinstance(gaps, list):
                without_gaps.append(f"{side} {kind} N={n}")
                continue
            try:
                ordered = sorted(float(gap) for gap in gaps)
            except (TypeError, ValueError):
                notes.append(f"{source}: {side} {kind} N={n} has a non-number gap, skipped")
                continue
            key = (side, kind, n)
            if key in chosen:
                notes.append(f"{side} {kind} N={n}: {chosen[key].source} replaced by {source}")
            chosen[key] = Run(
                side=side,
                kind=kind,
                n=n,
                gaps_ms=ordered,
                p50_ms=stored_or(row, "gap_p50_ms", percentile(ordered, 0.50)),
                p99_ms=stored_or(row, "gap_p99_ms", percentile(ordered, 0.99)),
                max_ms=stored_or(row, "gap_max_ms", ordered[-1] if ordered else math.nan),
                label=side_label(side, row),
                source=source,
            )
        if without_gaps:
            notes.append(
                f"{source}: no '{GAPS_KEY}' in {', '.join(without_gaps)} (written before"
                " side_by_side.py kept the gaps; rerun it), skipped"
            )
            without_gaps = []
    runs = list(chosen.values())
    sources = ", ".join(source for source, _ in results) or "no input"
    if not any(data["rows"] for _, data in results):
        raise PlotError(f"no successful run in {sources}: nothing to plot")
    if not runs:
        raise PlotError(
            f"no run with per-gap data ('{GAPS_KEY}') in {sources}: those results predate it;"
            " rerun benchmarks/side_by_side.py to get them"
        )
    return runs, notes


def panels_of(runs: Sequence[Run]) -> list[Panel]:
    """Pairs our runs with discord.py's of the same kind: same N first, then the nearest N.

    discord.py's pre-encoded run is usually N=99 next to our N=100 (its 100th connection to
    the simulator times out), so an exact match alone would split that comparison in two.
    "Nearest" is bounded to 5 % of N so N=1 never lands next to N=10.
    """
    kinds = sorted(
        {run.kind for run in runs},
        key=lambda kind: (KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER), kind),
    )
    panels: list[Panel] = []
    for kind in kinds:
        ours = {run.n: run for run in runs if run.kind == kind and run.side == "ours"}
        others = sorted(
            (run for run in runs if run.kind == kind and run.side != "ours"),
            key=lambda run: (run.n, run.side),
        )
        groups: dict[int, list[Run]] = {n: [run] for n, run in ours.items()}
        taken: set[tuple[str, int]] = set()  # (side, our N) already holding that side's run
        rest: list[Run] = []
        for run in others:
            if run.n in groups:
                groups[run.n].append(run)
                taken.add((run.side, run.n))
            else:
                rest.append(run)
        unpaired: list[list[Run]] = []
        for run in rest:
            free = [n for n in groups if (run.side, n) not in taken]
            near = min(free, key=lambda n: (abs(n - run.n), n), default=None)
            if near is not None and abs(near - run.n) <= max(1.0, 0.05 * near):
                groups[near].append(run)
                taken.add((run.side, near))
            else:
                unpaired.append([run])
        members = [groups[n] for n in sorted(groups)] + unpaired
        members.sort(key=lambda group: group[0].n)
        for group in members:
            group.sort(key=side_rank)
            panels.append(Panel(kind=kind, runs=tuple(group)))
    return panels


def side_rank(run: Run) -> int:
    """Ours first, then discord.py, so colours and legend order stay the same in every panel."""
    return SIDE_ORDER.index(run.side) if run.side in SIDE_ORDER else len(SIDE_ORDER)


def load_matplotlib() -> None:
    """Selects the Agg backend: the plot is a file, and the benchmark box has no display."""
    try:
        import matplotlib
    except ImportError as exc:
        raise MatplotlibMissing(MISSING_MATPLOTLIB) from exc
    matplotlib.use("Agg")


def machine_line(results: Sequence[tuple[str, dict[str, Any]]]) -> str:
    """Where and when the numbers came from, once per distinct machine."""
    seen: list[str] = []
    for _, data in results:
        machine = data.get("machine") or {}
        text = (
            f"{machine.get('cpus', '?')} CPUs ({machine.get('cpu_model') or 'unknown model'}),"
            f" Python {machine.get('python', '?')}"
        )
        date = data.get("date_utc")
        if date:
            text += f", {date}"
        if text not in seen:
            seen.append(text)
    return "; ".join(seen)


def footer(results: Sequence[tuple[str, dict[str, Any]]]) -> str:
    """The machine and each command, so the PNG alone says how its numbers were made."""
    lines = [machine_line(results)]
    for source, data in results:
        command = data.get("command")
        lines.append(f"{Path(source).name}: {command}" if command else Path(source).name)
    return "\n".join(lines)


def seconds_of(data: dict[str, Any]) -> set[float]:
    """The stream lengths in one file, for the title: gaps of 3 s and 10 s runs differ."""
    return {
        float(row["seconds"])
        for row in data["rows"]
        if isinstance(row, dict) and isinstance(row.get("seconds"), int | float)
    }


def draw_panel(ax: Axes, panel: Panel, bottom: float) -> None:
    """One (kind, N): a step histogram per side, the 20 ms line, and the overflow beyond 60 ms."""
    edges = [i * BIN_MS for i in range(round(X_MAX_MS / BIN_MS) + 1)]
    overflow: list[tuple[Run, int]] = []
    for run in panel.runs:
        colour = SIDE_COLOURS.get(run.side, "tab:green")
        label = (
            f"{run.label}, N={run.n}, {len(run.gaps_ms):,} gaps\n"
            f"p50 {run.p50_ms:.2f} · p99 {run.p99_ms:.2f} · max {run.max_ms:.2f} ms"
        )
        if not run.gaps_ms:
            ax.plot([], [], color=colour, label=f"{run.label}, N={run.n}: no gaps recorded")
            continue
        counts = [0] * (len(edges) - 1)
        beyond = 0
        for gap in run.gaps_ms:
            if gap > X_MAX_MS:
                beyond += 1
            else:
                counts[min(len(counts) - 1, max(0, int(gap // BIN_MS)))] += 1
        shares = [count / len(run.gaps_ms) for count in counts]
        ax.stairs(shares, edges, baseline=bottom, fill=True, color=colour, alpha=0.18)
        ax.stairs(shares, edges, baseline=bottom, color=colour, linewidth=1.3, label=label)
        if beyond:
            overflow.append((run, beyond))
    ax.axvline(FRAME_MS, color="0.35", linestyle="--", linewidth=1.0, label="20 ms frame")
    for row, (run, beyond) in enumerate(overflow):
        ax.annotate(
            f"{run.label}: {beyond:,} gap{'s' if beyond != 1 else ''} > {X_MAX_MS:g} ms,"
            f" max {run.max_ms:.1f} ms →",
            xy=(0.985, 0.66 - 0.08 * row),
            xycoords="axes fraction",
            ha="right",
            va="center",
            fontsize=7.5,
            color=SIDE_COLOURS.get(run.side, "tab:green"),
            bbox={"boxstyle": "round,pad=0.25", "facecolor": "white", "edgecolor": "0.8"},
        )
    ax.set_title(panel.title, fontsize=10)
    ax.grid(True, which="major", axis="both", color="0.9", linewidth=0.6)
    ax.legend(loc="upper right", fontsize=7, frameon=True, framealpha=0.9)


def render(
    results: Sequence[tuple[str, dict[str, Any]]], out: Path | str
) -> tuple[Path, list[str]]:
    """Draws every panel into one PNG at ``out``; returns its path and notes on skipped rows.

    ``results`` are (name, parsed JSON) pairs, so side_by_side.py can pass what it just wrote
    without reading it back.
    """
    load_matplotlib()
    runs, notes = runs_from(results)
    from matplotlib.figure import Figure

    panels = panels_of(runs)
    rows: list[list[Panel]] = []  # one row per kind, so PCM and pre-encoded never mix in a row
    for panel in panels:
        if rows and rows[-1][0].kind == panel.kind:
            rows[-1].append(panel)
        else:
            rows.append([panel])
    ncols = max(len(row) for row in rows)
    longest = max(len(run.gaps_ms) for run in runs)
    # The smallest visible share is one gap in the biggest run; half of that keeps it off the edge.
    bottom = 0.5 / max(1, longest)
    figure = Figure(figsize=(5.6 * ncols, 3.9 * len(rows) + 1.0), layout="constrained")
    grid = figure.subplots(len(rows), ncols, sharex=True, sharey=True, squeeze=False)
    for row_index, row in enumerate(rows):
        for column, ax in enumerate(grid[row_index]):
            if column >= len(row):
                ax.set_visible(False)
                continue
            ax.set_yscale("log")
            ax.set_xlim(0.0, X_MAX_MS)
            ax.set_ylim(bottom, 1.5)
            draw_panel(ax, row[column], bottom)
            ax.tick_params(labelbottom=True, labelleft=True)
            ax.set_xlabel("gap between a stream's audio packets at the receiver (ms)", fontsize=8.5)
            if column == 0:
                ax.set_ylabel(f"share of gaps per {BIN_MS:g} ms bin", fontsize=8.5)
    seconds = sorted({run_seconds for _, data in results for run_seconds in seconds_of(data)})
    streams = " / ".join(f"{value:g} s" for value in seconds) or "?"
    figure.suptitle(
        f"Receiver-side send gaps, discore_voice vs discord.py ({streams} streams, all streams"
        " pooled; discord.py's first gap dropped)",
        fontsize=11,
    )
    # supxlabel, not figure.text: the constrained layout keeps room for it under the panels.
    figure.supxlabel(footer(results), fontsize=7, color="0.3")
    path = Path(out)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=110)
    except OSError as exc:
        raise PlotError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return path, notes


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: exit 0 with the plot written, 1 on unusable inputs, 2 without matplotlib."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path, help="side_by_side.py JSON file(s)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="PNG to write")
    args = parser.parse_args(argv)
    try:
        load_matplotlib()  # first: without it nothing else matters
        results = [(str(path), read_results(path)) for path in args.results]
        path, notes = render(results, args.out)
    except MatplotlibMissing as exc:
        print(exc, file=sys.stderr)
        return 2
    except PlotError as exc:
        print(f"plot_gaps: {exc}", file=sys.stderr)
        return 1
    for note in notes:
        print(f"plot_gaps: {note}", file=sys.stderr)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
