"""The voice connection's tasks one at a time, without a voice server: the send clock, the
timers, the UDP task against a bare UDP peer, and the op 4 writer against a fake bridge."""

from __future__ import annotations

import itertools
import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import trio
import trio.testing
from trio.testing import MockClock

from discore_voice._core.gateway.errors import BridgeClosed
from discore_voice._core.ip_discovery import build_response, parse_request
from discore_voice._core.receive.pipeline import ReceivePipeline
from discore_voice._core.rtp import RtpHeader
from discore_voice._core.transport import AES256_GCM_RTPSIZE, create_cipher
from discore_voice._core.voice.commands import Media, TimerKind
from discore_voice._core.voice.media import MediaCrypto
from discore_voice._shell.voice import udp as udp_module
from discore_voice._shell.voice.gateway_writer import LEAVE_TIMEOUT, GatewayWriter
from discore_voice._shell.voice.messages import (
    GatewayGone,
    MediaFlowing,
    Message,
    TimerFired,
    UdpDiscovered,
    UdpFailed,
    UdpSilent,
)
from discore_voice._shell.voice.receive.tap import ReceiveTap
from discore_voice._shell.voice.sending.clock import BATCH_SLACK, SendClock, SenderCrashed
from discore_voice._shell.voice.timers import Timers
from discore_voice._shell.voice.udp import VoiceUdp

from .conftest import WAIT, settled_until

LOG = logging.getLogger("test.voice_tasks")

GUILD = 111_000_000_000_000_001
KEY = bytes(range(32))


def channel() -> tuple[trio.MemorySendChannel[Message], trio.MemoryReceiveChannel[Message]]:
    return trio.open_memory_channel[Message](64)


# --- the send clock ------------------------------------------------------------------------------


@dataclass(eq=False)
class Stepper:
    """A fake sender: records when it was stepped, steps every ``period`` ``count`` times."""

    name: str
    log: list[tuple[str, float]]
    period: float = 0.02
    count: int = 3
    fail_with: BaseException | None = None
    released: trio.Event = field(default_factory=trio.Event)
    error: BaseException | None = None
    fills: int = 0

    def step(self, now: float) -> float | None:
        if self.fail_with is not None:
            raise self.fail_with
        self.log.append((self.name, now))
        if sum(name == self.name for name, _ in self.log) >= self.count:
            return None
        return now + self.period

    def fill(self) -> None:
        self.fills += 1

    def detached(self, error: BaseException | None) -> None:
        self.error = error
        self.released.set()


async def run_clock(steppers: list[tuple[Stepper, float]]) -> SendClock:
    clock = SendClock()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(clock.run)
        for stepper, due in steppers:
            clock.attach(stepper, due)
        for stepper, _ in steppers:
            await stepper.released.wait()
        nursery.cancel_scope.cancel()
    return clock


async def test_the_clock_steps_each_sender_on_its_grid_in_due_order(
    autojump_clock: MockClock,
) -> None:
    log: list[tuple[str, float]] = []
    start = trio.current_time()
    a, b = Stepper("a", log), Stepper("b", log)
    await run_clock([(b, start + 0.005), (a, start)])
    assert [name for name, _ in log] == ["a", "b", "a", "b", "a", "b"]
    for name in "ab":
        times = [t for n, t in log if n == name]
        assert [round(later - earlier, 6) for earlier, later in itertools.pairwise(times)] == [
            0.02,
            0.02,
        ]
    assert a.error is None and b.error is None
    assert a.fills >= 2  # encoding ahead happens in the slack between sends


async def test_senders_due_within_the_batch_slack_go_out_together(
    autojump_clock: MockClock,
) -> None:
    log: list[tuple[str, float]] = []
    start = trio.current_time()
    a, b = Stepper("a", log, count=1), Stepper("b", log, count=1)
    await run_clock([(a, start + 0.01), (b, start + 0.01 + BATCH_SLACK / 2)])
    assert log[0][1] == log[1][1]  # one wake-up for both


class _NotAnException(BaseException):
    pass


@pytest.mark.parametrize("error", [RuntimeError("boom"), SystemExit(3), _NotAnException()])
async def test_a_failing_sender_is_detached_with_its_error_and_the_others_go_on(
    autojump_clock: MockClock, error: BaseException
) -> None:
    log: list[tuple[str, float]] = []
    start = trio.current_time()
    healthy, broken = Stepper("healthy", log), Stepper("broken", log, fail_with=error)
    await run_clock([(broken, start), (healthy, start)])
    assert isinstance(broken.error, Exception)
    if not isinstance(error, Exception):
        assert isinstance(broken.error, SenderCrashed) and broken.error.__cause__ is error
    assert [name for name, _ in log] == ["healthy"] * 3


async def test_a_detached_sender_is_never_stepped_again(autojump_clock: MockClock) -> None:
    log: list[tuple[str, float]] = []
    clock = SendClock()
    a = Stepper("a", log, count=100)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(clock.run)
        clock.attach(a, trio.current_time())
        await trio.sleep(0.05)
        clock.detach(a)
        steps = len(log)
        await trio.sleep(1.0)
        assert len(log) == steps and clock.attached == 0
        nursery.cancel_scope.cancel()


# --- the timers ---------------------------------------------------------------------------------


async def test_timers_fire_once_each_in_order_and_follow_changes(
    autojump_clock: MockClock,
) -> None:
    send, receive = channel()
    timers = Timers(send)
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(timers.run)
        timers.set(TimerKind.HEARTBEAT, start + 2)
        timers.set(TimerKind.ATTEMPT, start + 1)
        timers.set(TimerKind.MOVE_GRACE, start + 3)
        timers.set(TimerKind.MOVE_GRACE, None)  # disarmed before it fired
        assert await receive.receive() == TimerFired(TimerKind.ATTEMPT)
        assert trio.current_time() == pytest.approx(start + 1)
        timers.set(TimerKind.HEARTBEAT, start + 5)  # moved later while armed
        assert await receive.receive() == TimerFired(TimerKind.HEARTBEAT)
        assert trio.current_time() == pytest.approx(start + 5)
        await trio.sleep(100)
        with pytest.raises(trio.WouldBlock):
            receive.receive_nowait()
        assert timers.due(TimerKind.HEARTBEAT) is None
        nursery.cancel_scope.cancel()


# --- the UDP task -------------------------------------------------------------------------------


@pytest.fixture
def peer() -> Iterator[socket.socket]:
    """A bare UDP socket on loopback playing the voice server."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    yield sock
    sock.close()


async def recv(sock: socket.socket) -> tuple[bytes, tuple[str, int]]:
    await trio.lowlevel.wait_readable(sock)
    data, address = sock.recvfrom(4096)
    return data, address


async def discovered(
    peer: socket.socket, udp: VoiceUdp, receive: trio.MemoryReceiveChannel[Message]
) -> tuple[str, int]:
    request, address = await recv(peer)
    assert parse_request(request) == udp.ssrc
    peer.sendto(build_response(udp.ssrc, address[0], address[1]), address)
    message = await receive.receive()
    assert isinstance(message, UdpDiscovered) and message.generation == udp.generation
    assert (message.address.address, message.address.port) == address
    return address


async def test_udp_discovers_then_counts_what_it_receives_and_reports_media(
    peer: socket.socket,
) -> None:
    send, receive = channel()
    host, port = peer.getsockname()
    udp = VoiceUdp(3, host, port, 42, send, LOG)
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(udp.run)
            address = await discovered(peer, udp, receive)
            assert udp.sock is not None
            cipher = create_cipher(AES256_GCM_RTPSIZE, KEY)
            crypto = MediaCrypto()
            pipeline = ReceivePipeline(crypto)
            pipeline.name(99, 7)
            pipeline.start()  # someone receives: frames go on through DAVE to the buffers
            peer.sendto(b"\x80\x78" + bytes(30), address)  # before any key
            await settled_until(lambda: udp.dropped["no_key"] == 1)
            key = create_cipher(AES256_GCM_RTPSIZE, KEY)
            udp.set_media(Media(3, 42, key, crypto, pipeline))
            header = RtpHeader(sequence=1, timestamp=960, ssrc=99)
            peer.sendto(cipher.encrypt(header, b"\xfc\x01"), address)
            assert await receive.receive() == MediaFlowing(3)
            peer.sendto(b"\x80\x78" + bytes(40), address)  # forged
            peer.sendto(b"\x81\xc8" + bytes(30), address)  # RTCP
            later = RtpHeader(sequence=2, timestamp=1920, ssrc=99)
            peer.sendto(cipher.encrypt(later, b"\xfc\x02"), address)
            peer.sendto(cipher.encrypt(later, b"\xfc\x02"), address)  # a duplicate
            await settled_until(
                lambda: pipeline.received == 2 and pipeline.dropped["replay.duplicate"] == 1
            )
            nursery.cancel_scope.cancel()
    assert dict(udp.dropped) == {"no_key": 1}  # the only drop before the pipeline
    assert dict(pipeline.dropped) == {
        "transport.undecryptable": 1,
        "transport.rtcp": 1,
        "replay.duplicate": 1,
    }
    assert crypto.stats["passed_through"] == 2  # no DAVE: transport-decrypted frames pass
    assert udp.sock is None  # closed when the task ended


async def test_while_a_receiver_paces_the_udp_task_parks_and_the_tick_reads_the_socket(
    peer: socket.socket,
) -> None:
    """One wake-up per tick: the receiver's pump reads what the parked UDP task would have."""
    send, receive = channel()
    host, port = peer.getsockname()
    tap = ReceiveTap()
    udp = VoiceUdp(3, host, port, 42, send, LOG, tap)
    cipher = create_cipher(AES256_GCM_RTPSIZE, KEY)
    crypto = MediaCrypto()
    pipeline = ReceivePipeline(crypto)
    pipeline.name(99, 7)
    pipeline.start()

    def packet(sequence: int) -> bytes:
        header = RtpHeader(sequence=sequence, timestamp=960 * sequence, ssrc=99)
        return cipher.encrypt(header, b"\xfc" + bytes([sequence]))

    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(udp.run)
            tap.pace(True)  # a receiver is playing members out
            address = await discovered(peer, udp, receive)
            udp.set_media(Media(3, 42, create_cipher(AES256_GCM_RTPSIZE, KEY), crypto, pipeline))
            await trio.testing.wait_all_tasks_blocked()
            peer.sendto(packet(1), address)
            peer.sendto(build_response(42, "203.0.113.9", 5000), address)  # a keep-alive answer
            await trio.testing.wait_all_tasks_blocked()
            assert pipeline.received == 0  # parked: nobody read the socket
            tap.pump(trio.current_time())
            assert pipeline.received == 1 and udp.keepalives_answered == 1
            # What the pump found worth reporting wakes the task to report it.
            assert await receive.receive() == MediaFlowing(3)
            # Unpaced, the task reads on readiness again, and new media wakes a sleeping
            # receiver.
            woke = trio.Event()

            async def sleeping_receiver() -> None:
                await tap.wait_for_media()
                woke.set()

            nursery.start_soon(sleeping_receiver)
            await trio.testing.wait_all_tasks_blocked()
            assert not tap.paced
            peer.sendto(packet(2), address)
            await woke.wait()
            assert pipeline.received == 2
            nursery.cancel_scope.cancel()
    assert repr(tap) == "<ReceiveTap on readiness reader=none>"  # detached when it ended


async def test_udp_reports_a_malformed_discovery_reply_as_such(peer: socket.socket) -> None:
    send, receive = channel()
    host, port = peer.getsockname()
    udp = VoiceUdp(1, host, port, 42, send, LOG)
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(udp.run)
            for _ in range(udp_module.DISCOVERY_ATTEMPTS):
                _, address = await recv(peer)
                peer.sendto(b"\x00\x02\x00\x46" + bytes(10), address)  # truncated
            failure = await receive.receive()
    assert isinstance(failure, UdpFailed)
    assert "malformed" in failure.detail and "no answer" not in failure.detail


async def test_udp_reports_silence_when_keep_alives_go_unanswered(
    peer: socket.socket, jump_clock: MockClock
) -> None:
    send, receive = channel()
    host, port = peer.getsockname()
    udp = VoiceUdp(1, host, port, 42, send, LOG)
    with trio.fail_after(200):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(udp.run)
            await discovered(peer, udp, receive)
            start = trio.current_time()
            assert await receive.receive() == UdpSilent(1)  # nothing answered since
            silent_after = trio.current_time() - start
            assert udp_module.SILENT_AFTER <= silent_after < udp_module.SILENT_AFTER + 10
            assert udp.keepalives_sent >= 6 and udp.keepalives_answered == 0
            nursery.cancel_scope.cancel()


# --- the op 4 writer ------------------------------------------------------------------------------


@dataclass
class FakeBridge:
    user_id: int = 1
    sent: list[int | None] = field(default_factory=list)
    hold: trio.Event | None = None
    closed: bool = False

    def subscribe(self, *names: str) -> object:  # pragma: no cover - the writer never calls it
        raise AssertionError

    async def update_voice_state(
        self,
        guild_id: int | str,
        channel_id: int | str | None,
        *,
        self_mute: bool = False,
        self_deaf: bool = False,
    ) -> None:
        if self.closed:
            raise BridgeClosed("gone")
        if self.hold is not None:
            await self.hold.wait()
        self.sent.append(None if channel_id is None else int(channel_id))


async def test_the_writer_sends_in_order_and_a_leave_overtakes_a_waiting_join(
    autojump_clock: MockClock,
) -> None:
    send, _ = channel()
    bridge = FakeBridge(hold=trio.Event())
    writer = GatewayWriter(bridge, GUILD, send, LOG)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        joined = trio.Event()
        writer.request(5, self_mute=False, self_deaf=False, done=joined)
        await trio.testing.wait_all_tasks_blocked()
        writer.request(None, self_mute=False, self_deaf=False)  # cancels the join in progress
        writer.request(6, self_mute=False, self_deaf=False)  # after a leave: never sent
        await joined.wait()  # the cancelled join's caller is released
        bridge.hold.set()  # type: ignore[union-attr]
        await writer.wait_idle()
        nursery.cancel_scope.cancel()
    assert bridge.sent == [None] and writer.joined and writer.left


async def test_the_writer_bounds_a_leave_and_reports_a_closed_bridge(
    autojump_clock: MockClock,
) -> None:
    send, receive = channel()
    bridge = FakeBridge(hold=trio.Event())
    writer = GatewayWriter(bridge, GUILD, send, LOG)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        start = trio.current_time()
        writer.request(None, self_mute=False, self_deaf=False)
        await writer.wait_idle()
        assert trio.current_time() - start == pytest.approx(LEAVE_TIMEOUT)
        bridge.closed, bridge.hold = True, None
        second = GatewayWriter(bridge, GUILD, send, LOG)  # type: ignore[arg-type]
        nursery.start_soon(second.run)
        second.request(5, self_mute=False, self_deaf=False)
        assert await receive.receive() == GatewayGone()
        nursery.cancel_scope.cancel()
