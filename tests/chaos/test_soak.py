"""The chaos soak (``benchmarks/soak.py``), CI-sized: 20 connections, one minute, seed 1.

It runs as a subprocess, as a user would run it: a simulator process injecting faults on a
seeded schedule, a bot process with the 20 connections, and the soak judging both. About 80 s
on the project's 2-core machine; it must run alone (no parallel tests), since every check that
audio is heard again within a second of a recovery assumes a machine that keeps up.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOAK = ROOT / "benchmarks" / "soak.py"


def test_soak_20_connections_one_minute(tmp_path: Path) -> None:
    output = tmp_path / "soak.json"
    done = subprocess.run(
        [
            sys.executable,
            str(SOAK),
            *("--connections", "20"),
            *("--minutes", "1"),
            *("--seed", "1"),
            *("--json", str(output)),
            *("--log-dir", str(tmp_path / "logs")),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert output.exists(), f"no JSON (exit {done.returncode}):\n{done.stdout}\n{done.stderr}"
    result = json.loads(output.read_text())
    report = done.stdout[-6000:]
    assert result["crashes"] == 0, report
    assert result["internal_errors"] == 0, report
    failed = [name for name, passed in result["checks"].items() if not passed]
    assert not failed, f"checks failed: {failed}\n{report}"
    assert result["all_checks_pass"], report
    assert done.returncode == 0, report
