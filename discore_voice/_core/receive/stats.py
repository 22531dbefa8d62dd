"""The receive path's counters, as one snapshot: ``vc.receive_stats``.

Every stage of the pipeline counts what it drops, by reason, so a user who hears nothing can see
where the audio went: ``transport.undecryptable`` (a key mismatch or forgery), ``replay.duplicate``,
``ssrc.unnamed_expired`` (a sender the server never named), ``dave.decrypt_failed``,
``playout.late``, ``stream.dropped`` (a reader that fell behind), and so on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["PLAYOUT_DROPS", "ReceiveStats"]

#: The playout buffer's counters that are packets lost to the listener (the others count slots).
PLAYOUT_DROPS: Final = frozenset({"late", "duplicate", "stale", "overflow", "flushed"})


@dataclass(frozen=True, slots=True)
class ReceiveStats:
    """Cumulative over the connection's life, receivers come and gone included.

    ``received``: datagrams that authenticated and were new. ``dropped``: by ``stage.reason``.
    ``passed``: what went through, by ``stage.what`` (``ssrc.held``, ``ssrc.released``,
    ``dave.decrypted``, ``dave.passed_through``, ``playout.played``, ``playout.fec``,
    ``playout.plc``, ``decode.failed`` ...).
    """

    received: int
    dropped: dict[str, int]
    passed: dict[str, int]

    def total_dropped(self, stage: str | None = None) -> int:
        """Drops of every stage, or of one (``"transport"``, ``"dave"``...)."""
        if stage is None:
            return sum(self.dropped.values())
        prefix = stage + "."
        return sum(v for k, v in self.dropped.items() if k.startswith(prefix))
