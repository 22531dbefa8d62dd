"""The voice heartbeat task: wakes at the state machine's deadline and lets it decide.

The state machine keeps the schedule (``next_heartbeat_at``), the nonce and the pending ACK; this
task only supplies the clock. It re-reads the deadline whenever the connection's state changes,
because a Hello, a resume or a new server moves it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from .._core.voice.session import Action, VoiceSession

__all__ = ["run_heartbeat"]


async def run_heartbeat(
    session: VoiceSession,
    changed: Callable[[], trio.Event],
    drive: Callable[[list[Action]], Awaitable[None]],
) -> None:
    """Run until cancelled. ``changed()`` gives the event set on the next state change."""
    while True:
        event = changed()
        deadline = session.next_heartbeat_at
        if deadline is None:
            await event.wait()
            continue
        if trio.current_time() < deadline:
            with trio.move_on_at(deadline):
                await event.wait()
            continue
        await drive(session.heartbeat_due(trio.current_time()))
        if session.next_heartbeat_at == deadline:
            # Nothing was due after all (no open websocket): wait for news, not a busy loop.
            await event.wait()
