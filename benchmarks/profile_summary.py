"""Summarise a py-spy collapsed-stack profile (``side_by_side.py --profile DIR`` writes them).

Prints the share of samples per leaf frame (where the time is spent) and, for each frame name
given with ``--inclusive``, the share of samples with that frame anywhere on the stack (what a
part of the program costs, callees included). Start-up (imports) is left out with
``--skip-imports``, so a short run's profile shows its steady state.

    .venv/bin/python benchmarks/profile_summary.py DIR/ours-opus-1000.txt \
        --inclusive SendClock.run VoiceSender.step send_nowait --top 15 --skip-imports
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path


def read_stacks(path: Path, *, skip_imports: bool) -> Counter[str]:
    stacks: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        if skip_imports and "<frozen importlib._bootstrap>" in stack:
            continue
        stacks[stack] += int(count)
    return stacks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--inclusive", nargs="*", default=[])
    parser.add_argument("--skip-imports", action="store_true")
    args = parser.parse_args()
    stacks = read_stacks(args.profile, skip_imports=args.skip_imports)
    total = sum(stacks.values())
    if not total:
        raise SystemExit(f"{args.profile}: no samples")
    leaves: Counter[str] = Counter()
    for stack, count in stacks.items():
        leaves[stack.split(";")[-1].strip() or "(native)"] += count
    print(f"{args.profile.name}: {total} samples")
    print("leaf frames (self time):")
    for frame, count in leaves.most_common(args.top):
        print(f"  {100 * count / total:5.1f} %  {frame}")
    if args.inclusive:
        print("inclusive (anywhere on the stack):")
        for name in args.inclusive:
            count = sum(c for stack, c in stacks.items() if name in stack)
            print(f"  {100 * count / total:5.1f} %  {name}")


if __name__ == "__main__":
    main()
