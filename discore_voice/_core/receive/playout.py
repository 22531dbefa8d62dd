"""One sender's playout (jitter) buffer: which 20 ms slot to decode on each tick, and how.

The network delivers a sender's packets late, early, out of order, twice or not at all, while a
listener (a mixer, a recorder, speech recognition) wants exactly one 20 ms frame per tick in
timestamp order. So packets wait here a short while, and each :meth:`PlayoutBuffer.pop` hands out
the slot due next as a :class:`Slot` saying what the decoder must do: decode the packet, recover
it from the next packet's in-band FEC, or conceal it (PLC). Decoding stays with the caller; this
module only decides, and keeps no clock: the caller's tick is the clock.

A sender's stream goes IDLE → FILLING → PLAYING → IDLE once per talkspurt:

- FILLING starts with the first packet, and ends (playback starts) when the buffer holds the
  target depth of consecutive frames, or when the first packet has waited that many pops, so
  that a short burst at the end of a talkspurt is played instead of withheld. Five frames
  (100 ms) is Songbird's default: it covers the jitter of a normal path and stays under the
  ~150 ms at which a conversation starts to feel laggy.
- PLAYING hands out one slot per pop in timestamp order. A missing slot is recovered with FEC from
  the next packet when that one is here (Opus carries a low-bitrate copy of the previous frame),
  otherwise concealed with PLC. With nothing buffered at all it is an underrun: a few slots
  (``max_concealed``, 100 ms) are concealed, which bridges a stall, and then the talkspurt is
  over; concealing longer would only play a fading drone.
- Discord's clients end a talkspurt with five Opus silence frames and then send nothing; once the
  last one is played with nothing behind it the buffer goes IDLE at once, since nothing was lost.

Timelines jump. Songbird's buffer (issue #261) compared each packet with the timestamp it
expected, saw it 8.4 s behind after the sender's timestamps jumped back, and withheld every
packet from then on. Here every packet is also judged against the newest accepted packet, by
sequence number *and* timestamp: a coherent sender's timestamps advance at least one frame per
sequence number (more across a pause), so a newer packet whose timestamp does not is proof of a
jump back, and a packet beyond the window of ``max_slots`` slots from the one due is a jump
forward. Either way the buffer resynchronises: it fills again from that packet, and plays what
it held of the old timeline meanwhile (below). The same rule keeps a straggler from
before the jump (older sequence number, newer timestamp) from dragging the buffer back to the
abandoned timeline: it is dropped as ``stale``, never resynchronised to; and a packet older in
both counters is merely late, however far behind, since resynchronising to it would throw away
the talkspurt under way. A sequence number too far from the newest one (a long loss, or a
counter that restarted) cannot say how far the timestamp should have moved, only which way: a
newer packet that is not past the newest one went back all the same, however far its number
leapt, also when it lands among the slots buffered rather than behind them (taken for the
newest, it lost its slot to the abandoned timeline's packet); an older one is late behind the
slot due, and short of the newest packet fills its slot if free without becoming the newest.
Past the newest packet, the timestamp decides alone. A sender whose counter restarts just
*behind* the newest number looks like late packets until its talkspurt ends (``max_concealed``
pops), then starts afresh. All arithmetic on sequence numbers and timestamps is serial (modulo
2**16 and 2**32), so the wraps are just steps.

A resync discards nothing. What the buffer held of the old timeline is a member's real speech,
up to the whole delay of it at every clock jump, so those packets leave the slot grid for a
drain, in slot order, each keeping its own timeline's timestamp, and each pop during the fill
hands out the next of them as a PACKET slot. The empty slots between them are skipped, not
concealed: the drain then lasts one pop per packet, so the new timeline waits behind it as
little as can be, and the packet of such a slot could no longer join it anyway (a straggler of
an abandoned timeline is stale or late). The fill's pops run alongside the drain's, so the new
timeline starts when it would have without it, and without a pause when the buffer held at
least ``target_depth - 1`` packets, as a steady stream leaves it; unless the drain is the longer
(a burst was held), and the new timeline starts as it ends, the latency that adds bounded by the
overflow limit below. A jump during a drain queues the timeline that was filling behind it.

Between talkspurts a packet behind the last one played, in both counters, is a late straggler;
any other starts the next talkspurt, also one whose timestamps resume right after the last
packet (a bot that does not count its pauses), which is why concealed slots are not held
against it.

Latency and memory stay bounded. The buffer only accepts packets within ``max_slots`` slots
(64, 1.28 s) of the slot due next, so it never holds more than that. When, after an underrun,
the packets of the concealed slots arrive late in a burst, the path has a delay spike larger
than the buffer: the target depth grows by one frame per such late packet, up to ``max_depth``
(three times the depth), and takes effect at the next fill (the next talkspurt, seconds away for
a speaking human) and in the overflow limit at once. While playing, a buffer holding more than
twice the target depth (at least ``target_depth + 2``) drops its oldest packets, so latency is
bounded at twice the chosen delay. The limit scales with the delay because a burst is not loss:
a sender whose clock stalled sends what it owes at once (an unmodified discord.py does), and a
margin of two frames dropped one packet in 150 of it; a buffer deep enough to ride out that much
jitter can ride out a burst as long. A sender whose clock runs fast hits the limit all the same,
so the added latency never grows past it. The packets of a drain count toward ``max_slots``
(the oldest of them are dropped to keep it) but not toward the overflow limit, which applies
once the new timeline plays. After 250 pops (5 s) without an underrun the target depth
shrinks one frame back toward ``depth``.

Counters in :attr:`PlayoutBuffer.stats`, each a count of packets (pushes) or slots (pops):

- ``accepted``: packets kept (``push`` returned True).
- ``late``: rejected, its slot was already handed out (or skipped); also a straggler of a
  finished talkspurt.
- ``duplicate``: rejected, its slot (or its sequence number, the newest's) already holds one.
- ``stale``: rejected, older by sequence number but not by timestamp: a straggler from before a
  timeline jump.
- ``played``: PACKET slots, a drain's included. ``fec``: FEC slots. ``plc``: PLC slots, the sum
  of ``lost`` (later packets were buffered), ``underrun`` (nothing was) and ``gap`` (the last
  frame played was a silence frame, so the sender paused rather than lost anything).
- ``ended``: talkspurts ended after ``max_concealed`` underrun slots; ``finished``: talkspurts
  ended cleanly on a silence frame.
- ``resync``: timeline jumps; ``flushed``: packets dropped unplayed by
  :meth:`PlayoutBuffer.reset` (a resync plays what it held instead).
- ``overflow``: packets dropped to cut latency, or a drain's oldest to keep within
  ``max_slots``; ``skipped``: slots skipped doing so, with or without a packet, and the empty
  slots a drain skips (either way the played timestamps advance by that many extra frames).
- ``spike``: bursts of late packets after an underrun (each grew the target depth).

Conservation: ``accepted == played + overflow + flushed + buffered`` (``buffered`` counts a
drain's packets too), and every push is counted once in ``accepted``, ``late``, ``duplicate``
or ``stale``.
"""

from __future__ import annotations

import enum
from collections import Counter, deque
from dataclasses import dataclass
from typing import Final

from ..._errors import UsageError
from ..rtp import SAMPLES_PER_FRAME
from ..speaking import OPUS_SILENCE_FRAME

__all__ = [
    "DECAY_POPS",
    "DEFAULT_DEPTH",
    "DEFAULT_MAX_CONCEALED",
    "DEFAULT_MAX_SLOTS",
    "MAX_SLOTS_LIMIT",
    "OVERFLOW_MARGIN",
    "PlayoutBuffer",
    "Slot",
    "SlotKind",
]

#: Frames buffered before playback starts: 100 ms.
DEFAULT_DEPTH: Final = 5
#: The window of slots ahead of the one due next that the buffer accepts: 1.28 s.
DEFAULT_MAX_SLOTS: Final = 64
#: Underrun slots concealed before a talkspurt is taken as over: 100 ms.
DEFAULT_MAX_CONCEALED: Final = 5
#: The largest ``max_slots``: sequence numbers are then compared well inside half their 16-bit
#: space, and a window of 20 s (the replay filter's) is more than any listener waits.
MAX_SLOTS_LIMIT: Final = 1024
#: The least number of frames beyond the target depth a playing buffer holds before it drops
#: the oldest; beyond a depth of two frames the margin is the depth itself (see
#: :attr:`PlayoutBuffer.overflow_limit`).
OVERFLOW_MARGIN: Final = 2
#: Pops without an underrun after which the target depth shrinks by one frame: 5 s.
DECAY_POPS: Final = 250

_FRAME: Final = SAMPLES_PER_FRAME
_HALF_FRAME: Final = SAMPLES_PER_FRAME // 2
_TS_MASK: Final = (1 << 32) - 1
_TS_HALF: Final = 1 << 31
_SEQ_MASK: Final = (1 << 16) - 1
_SEQ_HALF: Final = 1 << 15

_IDLE: Final = 0
_FILLING: Final = 1
_PLAYING: Final = 2

_COUNTERS: Final = (
    "accepted",
    "late",
    "duplicate",
    "stale",
    "played",
    "fec",
    "plc",
    "lost",
    "underrun",
    "gap",
    "ended",
    "finished",
    "resync",
    "flushed",
    "overflow",
    "skipped",
    "spike",
)


class SlotKind(enum.Enum):
    """What the decoder does with a slot."""

    PACKET = "packet"
    FEC = "fec"
    PLC = "plc"


@dataclass(frozen=True, slots=True)
class Slot:
    """One 20 ms slot of a sender's timeline, and what to decode for it.

    ``opus`` is the packet's frame for PACKET; for FEC it is the *next* slot's frame, whose
    in-band FEC recovers this one (``decode(opus, fec=True)``), and that frame is still handed
    out as the next slot's PACKET; for PLC it is empty (``decode(None)``). ``timestamp`` is the
    RTP timestamp the slot stands for, so a recorder can place it; ``sequence`` is set for
    PACKET slots only.
    """

    kind: SlotKind
    timestamp: int
    opus: bytes
    sequence: int | None


_PACKET: Final = SlotKind.PACKET
_FEC_KIND: Final = SlotKind.FEC
_PLC_KIND: Final = SlotKind.PLC

# A frozen dataclass's __init__ sets each field through object.__setattr__, which costs about
# 1 µs for four fields, a third of a whole push and pop; setting the slot descriptors directly
# builds the same object (equal, hashable, still frozen to its users) in a third of that.
_new_slot = object.__new__
_set_kind = Slot.__dict__["kind"].__set__
_set_timestamp = Slot.__dict__["timestamp"].__set__
_set_opus = Slot.__dict__["opus"].__set__
_set_sequence = Slot.__dict__["sequence"].__set__


def _slot(kind: SlotKind, timestamp: int, opus: bytes, sequence: int | None) -> Slot:
    slot: Slot = _new_slot(Slot)
    _set_kind(slot, kind)
    _set_timestamp(slot, timestamp)
    _set_opus(slot, opus)
    _set_sequence(slot, sequence)
    return slot


def _check_int(name: str, value: object, minimum: int, maximum: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise UsageError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum or (maximum is not None and value > maximum):
        upper = "" if maximum is None else f" and at most {maximum}"
        raise UsageError(f"{name} must be at least {minimum}{upper}, got {value}")
    return value


class PlayoutBuffer:
    """The playout buffer of one SSRC: :meth:`push` each packet, :meth:`pop` once per tick.

    Packets are kept in a dict keyed by slot index, a plain int that counts 20 ms slots along
    the sender's timeline and never wraps; the RTP timestamp of the slot due next is kept beside
    it, so every wrap-around comparison is one serial subtraction against that anchor. A PACKET
    :class:`Slot` is built when its packet is accepted and handed out as is, so a pop that plays
    a packet allocates nothing. After a resync the old timeline's packets wait in a separate
    queue, the drain, since their slot indices may overlap the new timeline's.
    """

    __slots__ = (
        "_concealed",
        "_depth",
        "_drain",
        "_expected_slot",
        "_expected_ts",
        "_floor",
        "_last_packet_slot",
        "_limit",
        "_max_concealed",
        "_max_depth",
        "_max_slots",
        "_newest",
        "_packets",
        "_pops_calm",
        "_ref_seq",
        "_ref_slot",
        "_seam",
        "_silent",
        "_spiked",
        "_started",
        "_state",
        "_target",
        "_underrun_first",
        "_underrun_last",
        "_waited",
        "stats",
    )

    def __init__(
        self,
        depth: int = DEFAULT_DEPTH,
        *,
        max_depth: int | None = None,
        max_slots: int = DEFAULT_MAX_SLOTS,
        max_concealed: int = DEFAULT_MAX_CONCEALED,
    ) -> None:
        depth = _check_int("depth (frames of 20 ms)", depth, 1, MAX_SLOTS_LIMIT)
        max_slots = _check_int("max_slots", max_slots, 1, MAX_SLOTS_LIMIT)
        if max_slots < depth:
            raise UsageError(
                f"max_slots ({max_slots}) must be at least depth ({depth}): the buffer must be "
                "able to hold what it waits for"
            )
        if max_depth is None:
            # Three times the depth, unless the window is smaller.
            max_depth = min(3 * depth, max_slots)
        max_depth = _check_int("max_depth (frames of 20 ms)", max_depth, depth, max_slots)
        self._max_concealed = _check_int("max_concealed", max_concealed, 0)
        self._depth = depth
        self._max_depth = max_depth
        self._max_slots = max_slots
        self._set_target(depth)
        self.stats: Counter[str] = Counter(dict.fromkeys(_COUNTERS, 0))
        self._packets: dict[int, Slot] = {}
        # The packets of abandoned timelines still to play, oldest first, each with the number
        # of empty slots before it (skipped, not concealed).
        self._drain: deque[tuple[int, Slot]] = deque()
        self._pops_calm = 0
        self._forget()

    def _forget(self) -> None:
        """Back to IDLE with no history: the next packet starts a timeline, whatever it is."""
        self._state = _IDLE
        self._started = False
        self._expected_slot = 0
        self._expected_ts = 0
        self._newest = -1
        self._ref_seq = 0
        self._ref_slot = 0
        self._floor = 0
        self._last_packet_slot: int | None = None
        self._waited = 0
        self._seam = False
        self._concealed = 0
        self._silent = False
        self._clear_underrun()

    def _set_target(self, target: int) -> None:
        self._target = target
        self._limit = max(2 * target, target + OVERFLOW_MARGIN)

    def _clear_underrun(self) -> None:
        self._underrun_first = 1
        self._underrun_last = 0
        self._spiked = False

    def __repr__(self) -> str:
        state = ("idle", "filling", "playing")[self._state]
        return (
            f"<PlayoutBuffer {state} buffered={len(self._packets)} "
            f"target_depth={self._target} depth={self._depth}>"
        )

    @property
    def is_playing(self) -> bool:
        """Whether pops hand out slots; False while idle or filling (pops return None).

        Also True while the packets of an abandoned timeline play out during a fill, and after
        the last of them when the next pop is sure to start the new timeline: the seam is not
        a pause.
        """
        return self._state == _PLAYING or self._seam or bool(self._drain)

    @property
    def is_idle(self) -> bool:
        """Whether no talkspurt is under way: nothing buffered, the sender silent or gone."""
        return self._state == _IDLE

    @property
    def buffered(self) -> int:
        """Packets held, at most ``max_slots``, including those of an abandoned timeline."""
        return len(self._packets) + len(self._drain)

    @property
    def draining(self) -> int:
        """Packets of abandoned timelines (before a resync) still to play before this one."""
        return len(self._drain)

    @property
    def depth(self) -> int:
        return self._depth

    @property
    def target_depth(self) -> int:
        """The current fill depth in frames: ``depth``, raised by delay spikes up to max_depth."""
        return self._target

    @property
    def overflow_limit(self) -> int:
        """Packets a playing buffer holds before it drops the oldest: twice the target depth.

        At least ``target_depth + OVERFLOW_MARGIN``. The buffer rides out a burst as long as its
        delay, so the latency a burst adds stays bounded at twice the chosen delay.
        """
        return self._limit

    def reset(self) -> int:
        """Drop everything held and forget the timeline and the learnt depth; return the drops.

        For a caller that knows the stream restarted (the SSRC was reassigned, the connection
        moved); the counters keep counting, and the dropped packets count as ``flushed``.
        """
        dropped = len(self._packets) + len(self._drain)
        self.stats["flushed"] += dropped
        self._packets.clear()
        self._drain.clear()
        self._set_target(self._depth)
        self._pops_calm = 0
        self._forget()
        return dropped

    def push(self, sequence: int, timestamp: int, opus: bytes) -> bool:
        """Offer one packet; return whether it was kept (else it is counted and dropped).

        The caller has already de-duplicated by sequence number and decrypted, so a rejection
        here is about timing: too late to play, a second packet for one slot, or a straggler.
        """
        if type(sequence) is not int or not 0 <= sequence <= _SEQ_MASK:
            raise UsageError(f"sequence must be an int in 0..65535, got {sequence!r}")
        if type(timestamp) is not int or not 0 <= timestamp <= _TS_MASK:
            raise UsageError(f"timestamp must be an int in 0..2**32-1, got {timestamp!r}")
        if type(opus) is not bytes:
            raise UsageError(f"opus must be bytes, got {type(opus).__name__}")
        return self.accept(sequence, timestamp, opus)

    def accept(self, sequence: int, timestamp: int, opus: bytes) -> bool:
        """:meth:`push` without checking its arguments, for values read from an RTP header.

        The receive pipeline's hot path: a 16-bit sequence number and a 32-bit timestamp
        unpacked from a packet cannot be out of range, and the checks cost a tenth of a push.
        """
        state = self._state
        if state == _IDLE:
            return self._push_idle(sequence, timestamp, opus)
        # Slots ahead of the one due next, rounded, so a timestamp a few samples off the grid
        # still lands in its slot.
        ahead = ((timestamp - self._expected_ts + _TS_HALF) & _TS_MASK) - _TS_HALF + _HALF_FRAME
        offset = ahead // _FRAME
        slot = self._expected_slot + offset
        newer = ((sequence - self._ref_seq + _SEQ_HALF) & _SEQ_MASK) - _SEQ_HALF
        window = self._max_slots
        stats = self.stats
        if 0 < newer <= window:
            if slot - self._ref_slot < newer or offset >= window:
                # Newer, but its timestamp advanced less than its sequence number: the
                # timeline went back. Or it is beyond the window: the timeline went forward.
                self._resync(sequence, timestamp, opus, slot)
                return True
            if offset < 0:
                self._reject_late(slot)
                return False
        elif -window <= newer < 0:
            if slot - self._ref_slot > newer:
                stats["stale"] += 1
                return False
            if offset < 0:
                if (
                    state == _FILLING
                    and slot >= self._floor
                    and self._newest - slot < min(window, self._limit)
                ):
                    # A reordered first packet: the talkspurt starts earlier than we thought.
                    self._expected_slot = slot
                    self._expected_ts = (self._expected_ts + offset * _FRAME) & _TS_MASK
                    self._packets[slot] = _slot(_PACKET, self._expected_ts, opus, sequence)
                    stats["accepted"] += 1
                    if self._drain:
                        self._shed()
                    return True
                self._reject_late(slot)
                return False
        elif newer == 0:
            stats["duplicate"] += 1
            return False
        else:
            # The sequence number is far from the newest one (a long loss, or the sender
            # restarted its counter): it cannot say how far the timestamp should have moved,
            # only which way. Beyond the window, the timeline went forward; newer, yet not past
            # the newest packet (behind the slot due, or back among the slots buffered, where
            # it would take a hole or lose its slot to the old timeline's packet), it went back.
            if offset >= window or (newer > 0 and (offset < 0 or slot <= self._ref_slot)):
                self._resync(sequence, timestamp, opus, slot)
                return True
            if offset < 0:
                self._reject_late(slot)
                return False
            if slot > self._ref_slot:
                newer = 1  # it becomes the newest: the baseline for the packets that follow
            # Else older in both counters, but not too late to play: kept if its slot is free.
        packets = self._packets
        if slot in packets:
            stats["duplicate"] += 1
            return False
        packets[slot] = _slot(
            _PACKET, (self._expected_ts + offset * _FRAME) & _TS_MASK, opus, sequence
        )
        stats["accepted"] += 1
        if newer > 0:
            self._ref_seq = sequence
            self._ref_slot = slot
        if slot > self._newest:
            self._newest = slot
        if state == _PLAYING:
            if len(packets) > self._limit:
                self._trim()
        elif self._drain:
            self._shed()
        return True

    def _push_idle(self, sequence: int, timestamp: int, opus: bytes) -> bool:
        if not self._started:
            self._start(sequence, timestamp, opus, 0, floor=-self._max_slots)
            return True
        ahead = ((timestamp - self._expected_ts + _TS_HALF) & _TS_MASK) - _TS_HALF + _HALF_FRAME
        slot = self._expected_slot + ahead // _FRAME
        newer = ((sequence - self._ref_seq + _SEQ_HALF) & _SEQ_MASK) - _SEQ_HALF
        window = self._max_slots
        last = self._last_packet_slot
        if last is not None and -window <= newer <= 0 and slot <= last:
            # Behind the last packet played in both counters: a straggler of the talkspurt
            # that ended. Anything else starts a new one (a sender that does not count
            # its pauses in timestamps resumes right after its last packet).
            self.stats["duplicate" if newer == 0 else "late"] += 1
            return False
        floor = slot - window + 1
        if last is not None and slot > last:
            floor = max(floor, last + 1)
        self._start(sequence, timestamp, opus, slot, floor=floor)
        return True

    def _start(self, sequence: int, timestamp: int, opus: bytes, slot: int, *, floor: int) -> None:
        """Fill from this packet, which defines the slot grid of the talkspurt."""
        self._state = _FILLING
        self._started = True
        self._waited = 0
        self._seam = False
        self._concealed = 0
        self._silent = False
        self._expected_slot = slot
        self._expected_ts = timestamp
        self._newest = slot
        self._ref_seq = sequence
        self._ref_slot = slot
        self._floor = floor
        self._packets[slot] = _slot(_PACKET, timestamp, opus, sequence)
        self.stats["accepted"] += 1

    def _resync(self, sequence: int, timestamp: int, opus: bytes, slot: int) -> None:
        """Fill again from this packet; what the old timeline holds is played first.

        The held packets join the drain in slot order, each with the count of empty slots
        before it, which the drain skips (counted as ``skipped``) rather than conceals.
        """
        self.stats["resync"] += 1
        packets = self._packets
        if packets:
            drain = self._drain
            cursor = self._expected_slot
            for index in sorted(packets):
                drain.append((index - cursor, packets[index]))
                cursor = index + 1
            packets.clear()
        self._last_packet_slot = None
        self._clear_underrun()
        self._start(sequence, timestamp, opus, slot, floor=slot - self._max_slots + 1)
        if self._drain:
            self._shed()

    def _shed(self) -> None:
        """Drop the oldest drained packets until at most ``max_slots`` are held in all.

        Counted as ``overflow``, with the slots skipped up to each, as :meth:`_trim` does; the
        next packet's holes count from the dropped one on, so they need no change.
        """
        drain = self._drain
        stats = self.stats
        excess = len(self._packets) + len(drain) - self._max_slots
        while excess > 0 and drain:
            holes, _ = drain.popleft()
            stats["overflow"] += 1
            stats["skipped"] += holes + 1
            excess -= 1

    def _reject_late(self, slot: int) -> None:
        stats = self.stats
        stats["late"] += 1
        if self._state == _PLAYING and self._underrun_first <= slot <= self._underrun_last:
            # The packet of a slot we concealed for lack of anything buffered: the path's delay
            # spiked past the buffer, so the buffer should be deeper.
            if not self._spiked:
                self._spiked = True
                stats["spike"] += 1
            if self._target < self._max_depth:
                self._set_target(self._target + 1)

    def _trim(self) -> None:
        """Drop the oldest packets until at most ``overflow_limit`` are held.

        Packets held, not the span from the slot due to the newest packet: a packet that
        arrived early, ahead of others, is not latency, and must not cost the one due next.
        The slots up to each dropped packet are skipped with it.
        """
        limit = self._limit
        packets = self._packets
        stats = self.stats
        while len(packets) > limit:
            index = self._expected_slot
            while index not in packets:
                index += 1
            del packets[index]
            stats["overflow"] += 1
            skipped = index + 1 - self._expected_slot
            stats["skipped"] += skipped
            self._expected_slot = index + 1
            self._expected_ts = (self._expected_ts + skipped * _FRAME) & _TS_MASK

    def pop(self) -> Slot | None:
        """The slot due now, or None when there is nothing to play (idle, or filling)."""
        self._pops_calm += 1
        if self._pops_calm >= DECAY_POPS:
            self._pops_calm = 0
            if self._target > self._depth:
                self._set_target(self._target - 1)
        state = self._state
        if state != _PLAYING:
            if state == _IDLE:
                return None
            self._waited += 1
            if self._drain:
                return self._pop_drain()
            if self._waited < self._target and not self._seam and not self._filled():
                return None
            self._state = _PLAYING
            self._seam = False
            self._trim()
        index = self._expected_slot
        ts = self._expected_ts
        packets = self._packets
        out = packets.pop(index, None)
        if out is not None:
            self.stats["played"] += 1
            self._concealed = 0
            self._silent = out.opus == OPUS_SILENCE_FRAME
            self._last_packet_slot = index
        else:
            stats = self.stats
            if not packets:
                if self._silent:
                    stats["finished"] += 1
                    self._go_idle()
                    return None
                if self._concealed >= self._max_concealed:
                    stats["ended"] += 1
                    self._go_idle()
                    return None
                if self._concealed == 0:
                    self._underrun_first = index
                    self._spiked = False
                self._underrun_last = index
                self._concealed += 1
                self._pops_calm = 0
                stats["underrun"] += 1
                stats["plc"] += 1
                out = _slot(_PLC_KIND, ts, b"", None)
            elif self._silent:
                stats["gap"] += 1
                stats["plc"] += 1
                out = _slot(_PLC_KIND, ts, b"", None)
            else:
                following = packets.get(index + 1)
                if following is not None:
                    stats["fec"] += 1
                    out = _slot(_FEC_KIND, ts, following.opus, None)
                else:
                    stats["lost"] += 1
                    stats["plc"] += 1
                    out = _slot(_PLC_KIND, ts, b"", None)
        self._expected_slot = index + 1
        self._expected_ts = (ts + _FRAME) & _TS_MASK
        return out

    def rest(self, pops: int) -> None:
        """``pops`` pops that found nothing to do, at once: the target depth's decay runs.

        For a caller that stopped popping while this buffer was idle (a packet may have
        started a fill since: the pops it rested came before).
        """
        calm = self._pops_calm + pops
        shrink, self._pops_calm = divmod(calm, DECAY_POPS)
        if shrink:
            self._set_target(max(self._depth, self._target - shrink))

    def _pop_drain(self) -> Slot:
        """The next packet of an abandoned timeline, played while the current one fills."""
        drain = self._drain
        holes, out = drain.popleft()
        stats = self.stats
        stats["played"] += 1
        if holes:
            stats["skipped"] += holes
        if not drain:
            # Whether the new timeline is due to start at the next pop: then the buffer says
            # it is still playing, and that pop starts it whatever arrives before (a reordered
            # first packet may open a hole, concealed as any other).
            self._seam = self._waited + 1 >= self._target or self._filled()
        return out

    def _filled(self) -> bool:
        """Whether the next ``target_depth`` slots all hold a packet.

        Consecutive packets, not just the span from the oldest to the newest: one packet that
        overtook its predecessors would otherwise start playback before they arrive.
        """
        packets = self._packets
        index = self._expected_slot
        end = index + self._target
        while index < end:
            if index not in packets:
                return False
            index += 1
        return True

    def _go_idle(self) -> None:
        self._state = _IDLE
        self._waited = 0
        self._concealed = 0
        self._clear_underrun()
