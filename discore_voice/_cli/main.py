"""Entry point: parses the subcommand and turns every expected failure into one line.

A bot author's first contact with the project is this command, so a missing file, a bad id, a
missing token or library, or Ctrl-C must read as a sentence and an exit code, never a traceback;
``--verbose`` brings the details back for bug reports.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Sequence

from .._errors import DiscoreVoiceError
from . import demo, play, record, simulator

__all__ = ["main"]

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="discore-voice",
        description="Trio-native Discord voice: a demo on a local Discord, playing into and "
        "recording a real channel, and the local Discord simulator itself.",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="show debug logs and full tracebacks"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo.add_parser(commands)
    play.add_parser(commands)
    record.add_parser(commands)
    simulator.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, unparsed = parser.parse_known_args(argv)
    if unparsed and not getattr(args, "passthrough", False):
        parser.error(f"unrecognized arguments: {' '.join(unparsed)}")
    args.unparsed = unparsed
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        code: int = args.run(args)
    except BaseException as raised:
        leaves = _leaves(raised)
        if any(isinstance(leaf, KeyboardInterrupt) for leaf in leaves):
            print("discore-voice: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        if not all(isinstance(leaf, _EXPECTED) for leaf in leaves):
            raise
        if args.verbose:
            traceback.print_exception(raised)
        print(f"discore-voice {args.command}: error: {_describe(leaves[0])}", file=sys.stderr)
        return EXIT_FAILURE
    return code


#: Failures that mean "the world is not as the command needs it", not a bug in discore_voice.
_EXPECTED = (DiscoreVoiceError, OSError)


def _leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (possibly nested) exception groups, which trio's nurseries raise."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return str(exc) or type(exc).__name__
