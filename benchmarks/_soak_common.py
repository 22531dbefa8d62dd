"""What soak.py's three processes share: the fault catalogue, its expected outcomes, JSON lines.

Imported by ``soak.py``, ``_soak_sim.py`` and ``_soak_bot.py``, which all run as scripts from
this folder (so it is on ``sys.path``). Standard library only: the analysis must not depend on
the library it judges.

Every time in every log is ``time.monotonic()``: on Linux it is CLOCK_MONOTONIC, one clock for
the whole machine, so the simulator's fault log and the bot's events line up without any
exchange of clocks. (trio's own clock is not usable for that: each run adds a random offset.)
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from typing import IO, Any, Literal

__all__ = [
    "CONNECTION_FAULTS",
    "FAULTS",
    "HEARD_MERGE_S",
    "RECOVERY_HEARD_S",
    "SHARD_FAULTS",
    "FaultKind",
    "emit",
    "now",
]

#: Arrivals closer together than this form one heard run; a gap longer than this is silence.
HEARD_MERGE_S = 0.25
#: The simulator must hear a connection's frames again within this long of each recovery.
RECOVERY_HEARD_S = 1.0


def now() -> float:
    """The machine-wide monotonic clock every soak log uses."""
    return time.monotonic()


def emit(event: str, out: IO[str] | None = None, **fields: Any) -> None:
    """One JSON line (``{"event": ..., ...}``) on stdout, flushed: the orchestrator waits on it."""
    stream = out if out is not None else sys.stdout
    stream.write(json.dumps({"event": event, **fields}) + "\n")
    stream.flush()


@dataclass(frozen=True)
class FaultKind:
    """One kind of fault the simulator injects, and what the library must make of it.

    ``expect`` is the ``InvalidationReason`` name the connection must end with, or None when it
    must stay valid (resume or re-handshake on its own) and be heard again within
    :data:`RECOVERY_HEARD_S` of recovering. ``disruptive`` faults interrupt the target's audio,
    so a check of an earlier fault's recovery that they overlap is superseded, not judged.
    """

    name: str
    scope: Literal["connection", "shard"]
    weight: float
    expect: str | None
    disruptive: bool
    what: str


#: Per-connection faults, drawn by weight at ``--fault-rate`` per connection per minute.
CONNECTION_FAULTS: tuple[FaultKind, ...] = (
    FaultKind("voice_4015", "connection", 3, None, True, "voice close 4015 (server crashed)"),
    FaultKind("voice_tcp_drop", "connection", 3, None, True, "voice TCP dropped, no close frame"),
    FaultKind(
        "server_move", "connection", 3, None, True, "VOICE_SERVER_UPDATE null, then a new one"
    ),
    FaultKind("channel_move", "connection", 1, None, True, "moved to the guild's other channel"),
    FaultKind("voice_hb_stall", "connection", 1, None, True, "voice heartbeat ACKs stalled"),
    FaultKind("udp_loss", "connection", 2, None, True, "UDP loss burst (20-60 %, 2-8 s)"),
    FaultKind("udp_blackhole", "connection", 2, None, True, "UDP blackhole both ways (2-10 s)"),
    # Longer than a UDP path's silence limit (30 s of unanswered keep-alives), so the library
    # notices a dead path and re-establishes it, maybe while the blackhole still lasts. Only
    # injected where it ends before the chaos does.
    FaultKind(
        "udp_blackhole_long", "connection", 0.5, None, True, "UDP blackhole both ways (32-45 s)"
    ),
    FaultKind("kick", "connection", 1, "KICKED", True, "kicked (voice state, null channel)"),
    FaultKind("voice_4006", "connection", 0.5, "SESSION_INVALID", True, "voice close 4006"),
    FaultKind("voice_4009", "connection", 0.5, "SESSION_INVALID", True, "voice close 4009"),
)

#: Per-shard faults of the main gateway; every connection of the shard is a target.
SHARD_FAULTS: tuple[FaultKind, ...] = (
    FaultKind("gw_op7", "shard", 2, None, False, "main gateway op 7 (reconnect and resume)"),
    FaultKind("gw_close", "shard", 2, None, False, "main gateway closed 4000/4008 (resumable)"),
    FaultKind("gw_hb_stall", "shard", 1, None, False, "main gateway heartbeat ACKs stalled"),
    # Scheduled apart (a few per run, not by weight): it ends every voice connection of the
    # shard. Discord drops the session's voice states with it; the library reports that as
    # GATEWAY_CLOSED ("the shard or bridge the connection depends on went away").
    FaultKind(
        "gw_op9", "shard", 0, "GATEWAY_CLOSED", True, "main gateway op 9 d=false (not resumable)"
    ),
)

FAULTS: dict[str, FaultKind] = {kind.name: kind for kind in CONNECTION_FAULTS + SHARD_FAULTS}
