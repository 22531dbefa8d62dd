"""The receive pipeline of one voice connection: every datagram in, 20 ms slots per member out.

Sans-IO, like the rest of the core. The UDP task hands over each datagram from the voice server
(:meth:`ReceivePipeline.datagram`), a receive task calls :meth:`ReceivePipeline.tick` every
20 ms, and the voice core tells it who is who (:meth:`name`, :meth:`user_left`,
:meth:`new_session`). Per packet, in the order ``receive-facts.md`` requires:

1. transport: authenticate and decrypt (rtpsize AEAD), skip the extension body, strip the RTP
   padding (``TransportCipher.decrypt`` does all three; padding left on breaks DAVE's trailing
   marker, the bug every other library hit);
2. replay: a packet already seen, or too old to tell, never reaches DAVE (a duplicate would
   fail its replay check) nor plays twice;
3. SSRC: the sender must be known for DAVE; packets from an SSRC not yet named are held a
   second (``ssrc_map.py``);
4. DAVE: opened end-to-end, or passed through where the protocol allows plaintext
   (``media.py``). A frame that fails is kept a second and tried again whenever the group
   changes: a member that switched to a new epoch's key a moment before our commit arrived
   sends frames only the new key opens, and dropping them cut every re-key's first words
   (measured: 2 frames of a speaker each time someone joined). Too many failures in a row
   outside a transition ask the core to recover;
5. playout: the member's jitter buffer (``playout.py``), which the tick drains.

Each stage counts what it drops, by reason, in :attr:`ReceivePipeline.dropped` (``stage.reason``).
Stages 3-5 run only while someone receives: a bot that only plays spends nothing on DAVE or
buffers, and its transport counters still prove media flows.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, NamedTuple

from ..._errors import DecryptionFailed, ProtocolError, UsageError
from ..rtp import is_rtcp
from ..snowflake import Snowflake
from ..transport import TransportCipher
from ..voice.media import MediaCrypto
from .events import ReceiveEvent, SpeakingStarted, SpeakingStopped
from .playout import PlayoutBuffer, Slot, SlotKind
from .replay import ReplayFilter, Verdict
from .ssrc_map import HeldPacket, SsrcMap
from .stats import PLAYOUT_DROPS, ReceiveStats

__all__ = [
    "DEFAULT_DEPTH",
    "IDLE_PRUNE_TICKS",
    "MAX_DEPTH",
    "ReceivePipeline",
    "ReceivedSlot",
    "TickResult",
]

#: The playout buffer's default depth in 20 ms frames: 100 ms, as Songbird's.
DEFAULT_DEPTH: Final = 5
#: The deepest buffer a user may ask for: two seconds.
MAX_DEPTH: Final = 100
#: Frames that failed DAVE, kept for a retry when the group changes: a second of them, at most
#: this many over all members.
MAX_RETRY_FRAMES: Final = 64
RETRY_SECONDS: Final = 1.0
#: A member silent this long (60 s) loses its buffer and decoder state, so memory follows the
#: members who speak, not every member who ever did.
IDLE_PRUNE_TICKS: Final = 3000


class ReceivedSlot(NamedTuple):
    """One member's 20 ms slot, for the shell to decode (or not) and hand out."""

    user_id: Snowflake
    ssrc: int
    slot: Slot


@dataclass(frozen=True, slots=True)
class TickResult:
    """What one tick released: slots to play, speaking changes, and SSRCs whose state is gone."""

    tick: int
    slots: list[ReceivedSlot]
    events: list[ReceiveEvent]
    pruned: list[int]


#: A NamedTuple built without its Python-level ``__new__`` (a third of the cost, per slot).
_new_tuple = tuple.__new__
_NOTHING: Final[tuple[Slot, ...]] = ()


class _Source:
    """One SSRC's buffer, and whether its member was audible at the last tick."""

    __slots__ = ("backlog", "buffer", "last_active", "playing", "user_id")

    def __init__(self, user_id: Snowflake, buffer: PlayoutBuffer, tick: int) -> None:
        self.user_id = user_id
        self.buffer = buffer
        self.playing = False
        self.backlog: list[Slot] = []  # held frames released at once, played at the next tick
        self.last_active = tick


class _Failed(NamedTuple):
    """A frame DAVE could not open yet."""

    ssrc: int
    user_id: Snowflake
    sequence: int
    timestamp: int
    payload: bytes
    arrived: float


class ReceivePipeline:
    """One connection's receive path; see the module docstring for the stages."""

    def __init__(self, crypto: MediaCrypto) -> None:
        self._crypto = crypto
        self._replays = ReplayFilter()
        self._ssrcs = SsrcMap()
        self._sources: dict[int, _Source] = {}
        self._depth: int | None = None
        self._tick = 0
        self.received = 0
        """Datagrams that authenticated and were new: the transport's proof that media flows."""
        self.dropped: Counter[str] = Counter()
        """Drops by ``stage.reason``: ``transport``, ``replay``, ``ssrc``, ``dave``, ``playout``."""
        self.counts: Counter[str] = Counter()
        """What passed: ``ssrc.held`` and ``ssrc.released`` (unnamed SSRCs), and the counters of
        pruned playout buffers (``playout.*``)."""
        self.dave_recovery_wanted = False
        """Set when DAVE failed too often in a row; the UDP task reports it and clears it."""
        self._retry: deque[_Failed] = deque()

    def __repr__(self) -> str:
        state = f"depth={self._depth}" if self._depth is not None else "idle"
        return f"<ReceivePipeline {state} received={self.received} sources={len(self._sources)}>"

    # --- who is who (from the voice core) -----------------------------------------------------

    def user_for_ssrc(self, ssrc: int) -> Snowflake | None:
        return self._ssrcs.user(ssrc)

    def ssrc_for_user(self, user_id: Snowflake) -> int | None:
        return self._ssrcs.ssrc(user_id)

    def name(self, ssrc: int, user_id: Snowflake) -> None:
        """Op 5 or op 12 named ``ssrc``'s sender: map it, and play what was held for it."""
        replaced, held = self._ssrcs.name(ssrc, user_id)
        for old in replaced:
            self._drop_source(old)
        if not held or self._depth is None:
            return
        self.counts["ssrc.released"] += len(held)
        opened: list[tuple[HeldPacket, bytes]] = []
        for packet in held:
            frame = self._decrypt(user_id, packet.payload)
            if frame is None:
                self._defer(
                    ssrc, user_id, packet.sequence, packet.timestamp, packet.payload, packet.arrived
                )
            else:
                opened.append((packet, frame))
        # Up to a second of held audio is played out at the next tick, in order, instead of
        # adding that second of latency to everything the member says after it; only the
        # newest frames go through the playout buffer, whose depth they fill.
        keep = self._depth
        source = self._source(ssrc, user_id)
        for packet, frame in opened[:-keep]:
            source.backlog.append(Slot(SlotKind.PACKET, packet.timestamp, frame, packet.sequence))
        for packet, frame in opened[-keep:]:
            source.buffer.push(packet.sequence, packet.timestamp, frame)

    def user_left(self, user_id: Snowflake, now: float) -> None:
        self._ssrcs.user_left(user_id, now)

    def new_session(self) -> None:
        """A new voice session: the server hands out SSRCs afresh."""
        self._ssrcs.clear()
        self._expire_retries(float("inf"))
        for source in self._sources.values():
            self._fold(source.buffer)
        self._sources.clear()
        self._replays = ReplayFilter()

    # --- receiving on and off -----------------------------------------------------------------

    @property
    def receiving(self) -> bool:
        return self._depth is not None

    @property
    def tick_count(self) -> int:
        return self._tick

    def start(self, depth: int = DEFAULT_DEPTH) -> None:
        """Start decrypting end-to-end and buffering, with ``depth`` frames of playout delay."""
        if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= MAX_DEPTH:
            raise UsageError(f"the playout depth must be 1 to {MAX_DEPTH} frames of 20 ms")
        self._depth = depth
        self._tick = 0

    def stop(self) -> None:
        """Nobody receives any more: buffers and held packets go, the SSRC map stays."""
        self._depth = None
        self._expire_retries(float("inf"))
        for source in self._sources.values():
            self._fold(source.buffer)
        self._sources.clear()
        self._ssrcs.expire(float("inf"))

    # --- the hot path -------------------------------------------------------------------------

    def datagram(self, cipher: TransportCipher, data: bytes, now: float) -> bool:
        """One datagram from the voice server; True if it was new media that authenticated."""
        # RTCP's packet types 200-204 (RFC 5761): ``is_rtcp`` inlined, for every datagram.
        if len(data) >= 2 and 200 <= data[1] <= 204 and data[0] >> 6 == 2 and is_rtcp(data):
            self.dropped["transport.rtcp"] += 1
            return False
        try:
            sequence, timestamp, ssrc, payload = cipher.open_media(data)
        except DecryptionFailed:
            self.dropped["transport.undecryptable"] += 1
            return False
        except ProtocolError:
            self.dropped["transport.malformed"] += 1
            return False
        verdict = self._replays.check(ssrc, sequence)
        if verdict is not Verdict.NEW:
            self.dropped["replay." + verdict.value] += 1  # duplicate or stale
            return False
        self.received += 1
        if self._depth is None:
            return True
        if not payload:
            self.dropped["transport.empty"] += 1  # all padding: nothing to play
            return True
        user_id = self._ssrcs.user(ssrc)
        if user_id is None:
            reason = self._ssrcs.hold(ssrc, HeldPacket(sequence, timestamp, payload, now))
            if reason is None:
                self.counts["ssrc.held"] += 1
            else:
                self.dropped["ssrc." + reason] += 1
            return True
        # _open, _decrypt and _source inlined: this runs for every packet of every member.
        crypto = self._crypto
        frame = crypto.decrypt_from(user_id, payload)
        if frame is None:
            if crypto.failing:
                self.dave_recovery_wanted = True
            self._defer(ssrc, user_id, sequence, timestamp, payload, now)
            return True
        source = self._sources.get(ssrc)
        if source is None:
            source = self._source(ssrc, user_id)
        else:
            source.last_active = self._tick
        source.buffer.accept(sequence, timestamp, frame)
        return True

    def _defer(
        self,
        ssrc: int,
        user_id: Snowflake,
        sequence: int,
        timestamp: int,
        payload: bytes,
        arrived: float,
    ) -> None:
        """Keep a frame DAVE refused, for :meth:`dave_changed`; the oldest goes when full."""
        retry = self._retry
        if len(retry) >= MAX_RETRY_FRAMES:
            retry.popleft()
            self.dropped["dave.decrypt_failed"] += 1
        retry.append(_Failed(ssrc, user_id, sequence, timestamp, payload, arrived))

    def _decrypt(self, user_id: Snowflake, payload: bytes) -> bytes | None:
        crypto = self._crypto
        frame = crypto.decrypt_from(user_id, payload)
        if frame is None and crypto.failing:
            self.dave_recovery_wanted = True
        return frame

    def dave_changed(self) -> None:
        """The DAVE group changed (a commit, a welcome, a transition): try the failed frames."""
        if not self._retry or self._depth is None:
            return
        failed, self._retry = self._retry, deque()
        for item in failed:
            frame = self._crypto.decrypt_from(item.user_id, item.payload, retry=True)
            if frame is None:
                self._retry.append(item)
                continue
            self.counts["dave.retried"] += 1
            if self._ssrcs.user(item.ssrc) == item.user_id:
                self._source(item.ssrc, item.user_id).buffer.push(
                    item.sequence, item.timestamp, frame
                )

    def _expire_retries(self, now: float) -> None:
        retry = self._retry
        limit = now - RETRY_SECONDS
        while retry and retry[0].arrived <= limit:
            retry.popleft()
            self.dropped["dave.decrypt_failed"] += 1

    def _source(self, ssrc: int, user_id: Snowflake) -> _Source:
        source = self._sources.get(ssrc)
        if source is None:
            assert self._depth is not None
            source = self._sources[ssrc] = _Source(user_id, PlayoutBuffer(self._depth), self._tick)
        source.last_active = self._tick
        return source

    # --- the 20 ms tick -----------------------------------------------------------------------

    @property
    def quiet(self) -> bool:
        """Whether a tick would hand out nothing and change nothing: nobody is being played.

        No buffer is filling or playing, nothing waits for a name or for a DAVE retry. A
        receiver stops ticking while this holds (a wake-up costs more than the tick's work),
        and :meth:`skip` the ticks it slept through.
        """
        if self._retry or self._ssrcs.held_ssrcs:
            return False
        for source in self._sources.values():
            if source.playing or source.backlog or not source.buffer.is_idle:
                return False
        return True

    def skip(self, ticks: int) -> None:
        """``ticks`` ticks passed while :attr:`quiet`: count them without playing anything.

        Tick numbers stay a clock (a recorder places frames by them), and idle members come
        as close to being pruned as if each tick had run.
        """
        if ticks <= 0:
            return
        self._tick += ticks
        for source in self._sources.values():
            source.buffer.rest(ticks)

    def tick(self, now: float) -> TickResult:
        """Release this 20 ms slot of every member who is playing out."""
        self._tick += 1
        tick = self._tick
        expired = self._ssrcs.expire(now)
        if expired:
            self.dropped["ssrc.unnamed_expired"] += expired
        if self._retry:
            self._expire_retries(now)
        pruned = self._ssrcs.due(now)
        events: list[ReceiveEvent] = []
        for ssrc in pruned:
            events += self._drop_source(ssrc)
        slots: list[ReceivedSlot] = []
        idle: list[int] = []
        new_slot = _new_tuple
        for ssrc, source in self._sources.items():
            buffer = source.buffer
            ready: Sequence[Slot]
            if source.backlog:
                backlog = source.backlog
                source.backlog = []
                self.counts["playout.backlog"] += len(backlog)
                slot = buffer.pop()
                if slot is not None:
                    backlog.append(slot)
                ready = backlog
            else:
                slot = buffer.pop()
                ready = _NOTHING if slot is None else (slot,)
            for slot in ready:
                if not source.playing:
                    source.playing = True
                    events.append(SpeakingStarted(source.user_id, ssrc, tick))
                slots.append(new_slot(ReceivedSlot, (source.user_id, ssrc, slot)))
            if source.playing:
                if not buffer.is_playing:
                    source.playing = False
                    events.append(SpeakingStopped(source.user_id, ssrc, tick))
            elif tick - source.last_active > IDLE_PRUNE_TICKS:
                idle.append(ssrc)
        for ssrc in idle:
            self._fold(self._sources.pop(ssrc).buffer)
            pruned.append(ssrc)
        return TickResult(tick, slots, events, pruned)

    def _drop_source(self, ssrc: int) -> list[ReceiveEvent]:
        self._replays.forget(ssrc)
        source = self._sources.pop(ssrc, None)
        if source is None:
            return []
        self._fold(source.buffer)
        if source.playing:
            return [SpeakingStopped(source.user_id, ssrc, self._tick)]
        return []

    def _fold(self, buffer: PlayoutBuffer) -> None:
        """Keep a pruned buffer's counters in the connection's totals."""
        for key, value in buffer.stats.items():
            self.counts["playout." + key] += value

    def snapshot(self, extra: Counter[str] | None = None) -> ReceiveStats:
        """Every counter so far; ``extra`` adds the shell's (``decode.*``, ``stream.*``)."""
        passed = Counter(self.counts)
        for source in self._sources.values():
            for key, value in source.buffer.stats.items():
                passed["playout." + key] += value
        dropped = Counter(self.dropped)
        for key in [k for k in passed if k.startswith("playout.")]:
            if key[8:] in PLAYOUT_DROPS:
                dropped[key] += passed.pop(key)
        for key, value in self._crypto.stats.items():
            if key == "decrypt_failed":
                continue  # counted by the pipeline as dave.decrypt_failed, which is the same
            if key not in ("encrypted", "encrypt_failed"):
                passed["dave." + key] += value
        if extra:
            for key, value in extra.items():
                (dropped if key.endswith(("dropped", "failed")) else passed)[key] += value
        return ReceiveStats(
            received=self.received,
            dropped={k: v for k, v in dropped.items() if v},
            passed={k: v for k, v in passed.items() if v},
        )
