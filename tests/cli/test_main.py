"""The command line: help everywhere, one-line errors with non-zero exits, clean Ctrl-C."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys

import pytest

COMMAND = [sys.executable, "-m", "discore_voice"]


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.mark.parametrize("args", [["--help"], ["simulator", "--help"]])
def test_help(args: list[str]) -> None:
    result = _run(*args)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: discore-voice")


def test_unknown_command_is_a_usage_error() -> None:
    result = _run("bogus")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


def test_port_in_use_is_one_line() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = _run("simulator", "--port", str(busy.getsockname()[1]))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "discore-voice simulator: error: Address already in use"
    ]


def test_simulator_prints_json_and_stops_on_ctrl_c() -> None:
    with subprocess.Popen(
        [*COMMAND, "simulator"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        assert process.stdout is not None
        info = json.loads(process.stdout.readline())
        assert info["gateway_url"].startswith("ws://127.0.0.1:")
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
