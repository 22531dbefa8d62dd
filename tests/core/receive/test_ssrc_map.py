"""Naming SSRCs, holding packets from the unnamed, and pruning the departed."""

from __future__ import annotations

from discore_voice._core.receive.ssrc_map import (
    HOLD_SECONDS,
    MAX_HELD_PER_SSRC,
    MAX_HELD_SSRCS,
    MAX_NAMED_SSRCS,
    PRUNE_AFTER_LEAVE,
    HeldPacket,
    SsrcMap,
)

ALICE, BOB = 1001, 1002


def packet(sequence: int, arrived: float = 0.0) -> HeldPacket:
    return HeldPacket(sequence, sequence * 960, bytes([sequence & 0xFF]), arrived)


def test_held_packets_are_released_in_sequence_order_across_the_wrap() -> None:
    ssrcs = SsrcMap()
    for sequence in (65535, 1, 0, 65534, 2):
        assert ssrcs.hold(7, packet(sequence)) is None
    replaced, held = ssrcs.name(7, ALICE)
    assert replaced == []
    assert [p.sequence for p in held] == [65534, 65535, 0, 1, 2]
    assert ssrcs.user(7) == ALICE and ssrcs.ssrc(ALICE) == 7 and ssrcs.held_ssrcs == 0


def test_held_packets_expire_after_a_second_and_holding_is_bounded() -> None:
    ssrcs = SsrcMap()
    assert ssrcs.hold(7, packet(1, arrived=0.0)) is None
    assert ssrcs.hold(7, packet(2, arrived=0.5)) is None
    assert ssrcs.expire(HOLD_SECONDS + 0.1) == 1
    assert [p.sequence for p in ssrcs.name(7, ALICE)[1]] == [2]
    for sequence in range(MAX_HELD_PER_SSRC):
        assert ssrcs.hold(8, packet(sequence)) is None
    assert ssrcs.hold(8, packet(999)) == "unnamed_ssrc_full"
    for ssrc in range(100, 100 + MAX_HELD_SSRCS - 1):
        assert ssrcs.hold(ssrc, packet(1)) is None
    assert ssrcs.hold(99, packet(1)) == "unnamed_ssrcs_full"
    assert ssrcs.expire(10.0) == MAX_HELD_PER_SSRC + MAX_HELD_SSRCS - 1
    assert ssrcs.held_ssrcs == 0


def test_a_departed_member_keeps_its_ssrc_for_a_second() -> None:
    ssrcs = SsrcMap()
    ssrcs.name(7, ALICE)
    ssrcs.user_left(ALICE, 10.0)
    assert ssrcs.due(10.0 + PRUNE_AFTER_LEAVE - 0.01) == []
    assert ssrcs.user(7) == ALICE
    assert ssrcs.due(10.0 + PRUNE_AFTER_LEAVE) == [7]
    assert ssrcs.user(7) is None and ssrcs.ssrc(ALICE) is None


def test_a_member_back_before_the_prune_keeps_its_ssrc() -> None:
    ssrcs = SsrcMap()
    ssrcs.name(7, ALICE)
    ssrcs.user_left(ALICE, 10.0)
    ssrcs.name(7, ALICE)  # spoke again: op 5 with the same SSRC
    assert ssrcs.due(20.0) == []
    assert ssrcs.user(7) == ALICE


def test_a_new_ssrc_replaces_the_old_and_an_ssrc_changes_hands() -> None:
    ssrcs = SsrcMap()
    ssrcs.name(7, ALICE)
    assert ssrcs.name(8, ALICE)[0] == [7]  # a reconnect: Alice's old SSRC goes
    assert ssrcs.user(7) is None and ssrcs.ssrc(ALICE) == 8
    assert ssrcs.name(8, BOB)[0] == [8]  # the server gave Alice's SSRC to Bob
    assert ssrcs.user(8) == BOB and ssrcs.ssrc(ALICE) is None
    ssrcs.clear()
    assert len(ssrcs) == 0


def test_a_server_naming_ssrcs_without_end_cannot_grow_the_map() -> None:
    ssrcs = SsrcMap()
    for n in range(MAX_NAMED_SSRCS):
        assert ssrcs.name(n, 10_000 + n)[0] == []
    assert ssrcs.name(7, 10_007)[0] == []  # named again: now the most recent
    replaced, _ = ssrcs.name(MAX_NAMED_SSRCS, 99)
    assert replaced == [0]  # the least recently named goes, to be pruned by the caller
    assert len(ssrcs) == MAX_NAMED_SSRCS
    assert ssrcs.user(0) is None and ssrcs.ssrc(10_000) is None
    assert ssrcs.user(7) == 10_007 and ssrcs.user(MAX_NAMED_SSRCS) == 99
