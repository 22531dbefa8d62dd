"""Who sends on which SSRC, and what to do with packets from an SSRC nobody has named yet.

DAVE needs the sender's user id to open a frame, and a per-user stream needs it to exist at all,
but the voice server names an SSRC's user only in Speaking (op 5), which Discord sends when a
member starts talking and sometimes *after* its first packets, or in the undocumented op 12
when the member connects. Dropping what arrives before the name loses the start of the first
word (discord-ext-voice-recv's users reported exactly that), so those packets are held for a
second and released, in order, when the name arrives; only then do they expire, counted.

A member who leaves (op 13) keeps its SSRC for a second more, so the packets already in flight
and in the playout buffer still belong to someone; then the SSRC is pruned with its state. A
member who reconnects gets a new SSRC, and its old one is pruned at once.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

from ..rtp import sequence_distance
from ..snowflake import Snowflake

__all__ = [
    "HOLD_SECONDS",
    "MAX_HELD_PER_SSRC",
    "MAX_HELD_SSRCS",
    "MAX_NAMED_SSRCS",
    "PRUNE_AFTER_LEAVE",
    "HeldPacket",
    "SsrcMap",
]

#: How long packets from an unnamed SSRC wait for their sender's name.
HOLD_SECONDS: Final = 1.0
#: At most a second of 20 ms packets per unnamed SSRC (a little more, for jitter)...
MAX_HELD_PER_SSRC: Final = 64
#: ...and at most this many unnamed SSRCs at once: a bot joining a busy channel hears everyone
#: talking before any op 5 names them (16 was measured too few: 100 speakers lost 1650
#: packets), and a flood of invented SSRCs still costs a bounded 64 * 64 packets (~1 MiB).
MAX_HELD_SSRCS: Final = 64
#: The most SSRCs named at once: a stage holds at most 10 000 people, and a voice server that
#: names SSRCs without end must not grow this map without end; the least recently named go.
MAX_NAMED_SSRCS: Final = 10_000
#: How long a departed member's SSRC still maps to it (Songbird uses about the same).
PRUNE_AFTER_LEAVE: Final = 1.0


@dataclass(frozen=True, slots=True)
class HeldPacket:
    """A packet that decrypted (transport layer) but whose sender is not known yet."""

    sequence: int
    timestamp: int
    payload: bytes
    arrived: float


class SsrcMap:
    """The SSRC ↔ user map of one voice session, with the packets waiting for a name."""

    __slots__ = ("_held", "_leaving", "_ssrc_of_user", "_user_of_ssrc")

    def __init__(self) -> None:
        self._user_of_ssrc: OrderedDict[int, Snowflake] = OrderedDict()
        self._ssrc_of_user: dict[Snowflake, int] = {}
        self._leaving: dict[int, float] = {}  # ssrc -> when to prune it
        self._held: OrderedDict[int, list[HeldPacket]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._user_of_ssrc)

    def user(self, ssrc: int) -> Snowflake | None:
        return self._user_of_ssrc.get(ssrc)

    def ssrc(self, user_id: Snowflake) -> int | None:
        return self._ssrc_of_user.get(user_id)

    @property
    def held_ssrcs(self) -> int:
        return len(self._held)

    def clear(self) -> None:
        """A new voice session: every SSRC is the server's to hand out again."""
        self._user_of_ssrc.clear()
        self._ssrc_of_user.clear()
        self._leaving.clear()
        self._held.clear()

    # --- naming -------------------------------------------------------------------------------

    def name(self, ssrc: int, user_id: Snowflake) -> tuple[list[int], list[HeldPacket]]:
        """``ssrc`` is ``user_id``'s: the SSRCs this replaces, and the packets it releases.

        The replaced SSRCs (the user's previous one after a reconnect, this SSRC's previous
        owner, or the least recently named one beyond :data:`MAX_NAMED_SSRCS`) are the caller's
        to prune; the released packets come in sequence order, oldest
        first, as DAVE wants them (it refuses a frame older than the first it opened).
        """
        replaced: list[int] = []
        previous_ssrc = self._ssrc_of_user.get(user_id)
        if previous_ssrc is not None and previous_ssrc != ssrc:
            replaced.append(previous_ssrc)
            self._forget(previous_ssrc)
        previous_user = self._user_of_ssrc.get(ssrc)
        if previous_user is not None and previous_user != user_id:
            replaced.append(ssrc)
            self._ssrc_of_user.pop(previous_user, None)
        self._user_of_ssrc[ssrc] = user_id
        self._user_of_ssrc.move_to_end(ssrc)
        self._ssrc_of_user[user_id] = ssrc
        if len(self._user_of_ssrc) > MAX_NAMED_SSRCS:
            oldest = next(iter(self._user_of_ssrc))
            replaced.append(oldest)
            self._forget(oldest)
        self._leaving.pop(ssrc, None)
        held = self._held.pop(ssrc, None)
        if not held:
            return replaced, []
        first = held[0].sequence
        held.sort(key=lambda packet: sequence_distance(first, packet.sequence))
        return replaced, held

    def user_left(self, user_id: Snowflake, now: float) -> None:
        """Op 13: the member's SSRC is pruned :data:`PRUNE_AFTER_LEAVE` from now."""
        ssrc = self._ssrc_of_user.get(user_id)
        if ssrc is not None:
            self._leaving[ssrc] = now + PRUNE_AFTER_LEAVE

    def due(self, now: float) -> list[int]:
        """The departed members' SSRCs whose time is up: forgotten here, the caller prunes."""
        if not self._leaving:
            return []
        due = [ssrc for ssrc, at in self._leaving.items() if at <= now]
        for ssrc in due:
            self._forget(ssrc)
        return due

    def _forget(self, ssrc: int) -> None:
        self._leaving.pop(ssrc, None)
        user_id = self._user_of_ssrc.pop(ssrc, None)
        if user_id is not None and self._ssrc_of_user.get(user_id) == ssrc:
            del self._ssrc_of_user[user_id]

    # --- holding ------------------------------------------------------------------------------

    def hold(self, ssrc: int, packet: HeldPacket) -> str | None:
        """Keep a packet from an unnamed SSRC; the reason it was dropped instead, if it was."""
        held = self._held.get(ssrc)
        if held is None:
            if len(self._held) >= MAX_HELD_SSRCS:
                return "unnamed_ssrcs_full"
            held = self._held[ssrc] = []
        elif len(held) >= MAX_HELD_PER_SSRC:
            return "unnamed_ssrc_full"
        held.append(packet)
        return None

    def expire(self, now: float) -> int:
        """Drop what has waited :data:`HOLD_SECONDS` for a name; how many packets went."""
        expired = 0
        limit = now - HOLD_SECONDS
        for ssrc in list(self._held):
            held = self._held[ssrc]
            keep = [packet for packet in held if packet.arrived > limit]
            expired += len(held) - len(keep)
            if keep:
                self._held[ssrc] = keep
            else:
                del self._held[ssrc]
        return expired
