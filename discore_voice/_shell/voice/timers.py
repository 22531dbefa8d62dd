"""The voice core's timers, as one task: heartbeats, attempt deadlines, backoffs, the move grace.

The core keeps its deadlines itself and hands each one to the shell as it changes
(``SetTimer``); this task only supplies the clock. It sleeps until the earliest deadline (or
until a new one is set), then tells the session task which timer fired. A fired timer may be
stale by the time the session task reads it (re-armed for later meanwhile): the core compares
the time with its own deadline and ignores it then, so nothing here has to be exact.
"""

from __future__ import annotations

import math

import trio

from ..._core.voice.commands import TimerKind
from .messages import Message, TimerFired

__all__ = ["Timers"]


class Timers:
    """The armed deadlines; :meth:`set` from the session task, :meth:`run` as a task."""

    def __init__(self, inbox: trio.MemorySendChannel[Message]) -> None:
        self._inbox = inbox
        self._due: dict[TimerKind, float] = {}
        self._changed = trio.Event()

    def __repr__(self) -> str:
        return f"<Timers {sorted(kind.value for kind in self._due)}>"

    def due(self, kind: TimerKind) -> float | None:
        return self._due.get(kind)

    def set(self, kind: TimerKind, at: float | None) -> None:
        """Arm ``kind`` for ``at`` (trio's clock), or disarm it with None."""
        if at is None:
            self._due.pop(kind, None)
        else:
            self._due[kind] = at
        self._changed.set()

    async def run(self) -> None:
        """Fire timers until cancelled; each deadline fires once."""
        while True:
            self._changed = trio.Event()
            earliest = min(self._due.values(), default=math.inf)
            if earliest > trio.current_time():
                with trio.move_on_at(earliest):
                    await self._changed.wait()
                continue
            now = trio.current_time()
            for kind, at in list(self._due.items()):
                if at <= now:
                    del self._due[kind]
                    await self._inbox.send(TimerFired(kind))
