"""``discore-voice simulator``: the local Discord as a process, for bots in any language."""

from __future__ import annotations

import argparse
from typing import Any

from ..testing import __main__ as simulator_command

__all__ = ["add_parser"]


def add_parser(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "simulator",
        help="run the local Discord and print its URLs and bot token as one JSON line",
        description="Run the local Discord simulator until Ctrl-C. Options are those of "
        "'python -m discore_voice.testing'.",
        add_help=False,
    )
    # Its own options, --help included, reach the simulator's parser untouched (see main).
    parser.set_defaults(run=_run, passthrough=True)


def _run(args: argparse.Namespace) -> int:
    options: list[str] = args.unparsed
    return simulator_command.main(options, prog="discore-voice simulator")
