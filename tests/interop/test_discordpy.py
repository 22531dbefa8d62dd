"""Issue 3's acceptance: an unmodified discord.py 2.7.1 joins the simulator and plays 3 s of PCM.

discord.py was written against the real Discord, so it is the independent witness that the
simulator behaves like Discord where voice is concerned: it gets nothing but its two URL
overrides and trust in the simulator's CA (see ``discordpy_peer.py``). It runs in its own process
from its own venv (``scripts/setup-peer-venv``), so it never becomes a dependency of ours.

TLS is on because discord.py always dials the voice gateway with ``wss://``. Only
``aead_xchacha20_poly1305_rtpsize`` is offered: it is the one rtpsize mode discord.py speaks (it
fails with IndexError if offered AES-GCM alone), so the test also proves the simulator negotiates
it. The test synchronises on the peer's JSON progress lines and on the simulator's own change
events, never on sleeps; every wait is bounded. The simulator spaces its two voice events as
real latency does, which keeps discord.py clear of its own lost wake-up race (``LOST_WAKEUP``).

Without a peer interpreter (``DISCORE_VOICE_PEER_PYTHON`` unset and no ``.venv-peer``) the tests
skip, unless ``DISCORE_VOICE_REQUIRE_PEER=1`` (CI) makes that an error.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from discore_voice import Intents, ReceivedAudio, open_shard, voice_connection
from discore_voice._audio.signals import (
    channel,
    find_alignment,
    sine_pcm,
    zero_crossing_frequency,
)
from discore_voice._core.speaking import OPUS_SILENCE_FRAME
from discore_voice._core.transport import XCHACHA20_POLY1305_RTPSIZE
from discore_voice._core.voice.opcodes import VoiceCloseCode, VoiceOpcode
from discore_voice.testing import LocalDiscord, open_local_discord
from discore_voice.testing._stats import StreamStats
from discore_voice.testing._voice.gateway import VoiceGatewaySession, VoiceServer
from discore_voice.testing._world import VoiceEventsOrder

ROOT = Path(__file__).resolve().parents[2]
PEER_SCRIPT = Path(__file__).with_name("discordpy_peer.py")
DEFAULT_PEER_PYTHON = ROOT / ".venv-peer" / "bin" / "python"
SETUP_HINT = "run scripts/setup-peer-venv (or set DISCORE_VOICE_PEER_PYTHON)"

SECONDS = 3.0
HZ = 440.0
#: What discord.py sends for SECONDS of PCM: one Opus frame per 20 ms, then 5 silence frames.
AUDIO_FRAMES = 150
SILENCE_FRAMES = 5
#: The peer gives up on its own after this long; the test's bound is longer, so a hung peer
#: still reports its own error rather than being killed silently.
PEER_TIMEOUT = 60.0
SCENARIO_LIMIT = 90.0
#: How long trailing datagrams may take to be read after the peer said it sent them.
DRAIN_LIMIT = 10.0
#: The 4015 close comes after this many packets: a second into the tone.
CLOSE_AFTER_PACKETS = 50


@pytest.fixture
def peer_python() -> str:
    """The peer venv's interpreter, or a skip (an error under DISCORE_VOICE_REQUIRE_PEER=1)."""
    configured = os.environ.get("DISCORE_VOICE_PEER_PYTHON")
    if configured:
        if not Path(configured).is_file():
            pytest.fail(f"DISCORE_VOICE_PEER_PYTHON={configured} does not exist: {SETUP_HINT}")
        return configured
    if DEFAULT_PEER_PYTHON.is_file():
        return str(DEFAULT_PEER_PYTHON)
    reason = f"no discord.py peer venv: {SETUP_HINT}"
    if os.environ.get("DISCORE_VOICE_REQUIRE_PEER") == "1":
        pytest.fail(f"{reason}; DISCORE_VOICE_REQUIRE_PEER=1 requires it")
    pytest.skip(reason)


# --- the peer process -----------------------------------------------------------------------------


class PeerFailed(AssertionError):
    pass


@dataclass(eq=False)
class Peer:
    """The discord.py process: its progress events as they arrive, and its stderr for reports."""

    process: trio.Process
    events: list[dict[str, Any]] = field(default_factory=list)
    stderr: bytearray = field(default_factory=bytearray)
    stdout_closed: bool = False
    _changed: trio.Event = field(default_factory=trio.Event)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        pending = b""
        async for chunk in self.process.stdout:
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                self._add_line(line)
        if pending:
            self._add_line(pending)
        self.stdout_closed = True
        self._notify()

    def _add_line(self, line: bytes) -> None:
        text = line.decode(errors="replace").strip()
        if not text:
            return
        try:
            event = json.loads(text)
        except ValueError:
            event = {"event": "stdout", "line": text}
        if not isinstance(event, dict):
            event = {"event": "stdout", "line": text}
        self.events.append(event)
        self._notify()

    async def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        async for chunk in self.process.stderr:
            self.stderr += chunk
            # Keep the tail: a report needs the end of the log, not a megabyte of it.
            del self.stderr[: max(0, len(self.stderr) - 64_000)]

    def report(self) -> str:
        lines = [json.dumps(event) for event in self.events]
        tail = self.stderr.decode(errors="replace")[-8_000:]
        return "peer stdout:\n" + "\n".join(lines) + "\npeer stderr (tail):\n" + tail

    def _find(self, name: str) -> dict[str, Any] | None:
        for event in self.events:
            if event.get("event") == name:
                return event
        return None

    async def expect(self, name: str) -> dict[str, Any]:
        """The first ``name`` event; fails at once on an ``error`` event or the peer's exit."""
        while True:
            found = self._find(name)
            if found is not None:
                return found
            if self._find("error") is not None or self.stdout_closed:
                raise PeerFailed(f"discord.py never reported {name!r}\n{self.report()}")
            await self._changed.wait()

    async def release(self) -> None:
        """Let a peer started with ``--hold`` disconnect."""
        await self.expect("holding")
        assert self.process.stdin is not None
        await self.process.stdin.send_all(b"disconnect\n")

    async def exit_code(self) -> int:
        await self.process.wait()
        code = self.process.returncode
        assert code is not None
        return code


@asynccontextmanager
async def run_peer(
    python: str,
    discord: LocalDiscord,
    guild_id: int,
    channel_id: int,
    *options: str,
    token: str | None = None,
) -> AsyncIterator[Peer]:
    """Start discordpy_peer.py; leaving the block early kills it (trio.run_process does)."""
    env = dict(os.environ)
    # The peer venv is self-contained; nothing of ours may leak onto its import path.
    for name in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP"):
        env.pop(name, None)
    env["DISCORE_VOICE_PEER_TOKEN"] = token or discord.bot.token
    command = [
        python,
        str(PEER_SCRIPT),
        *("--gateway-url", discord.gateway_url),
        *("--api-url", discord.api_url),
        *("--ca", str(discord.ca_pem_path)),
        *("--guild-id", str(guild_id)),
        *("--channel-id", str(channel_id)),
        *("--seconds", str(SECONDS)),
        *("--hz", str(HZ)),
        *("--timeout", str(PEER_TIMEOUT)),
        "--hold",
        *options,
    ]
    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(
            partial(
                trio.run_process,
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                check=False,
            )
        )
        peer = Peer(process)
        nursery.start_soon(peer._read_stdout)
        nursery.start_soon(peer._read_stderr)
        yield peer
        # A peer that has not exited by now is stuck: the test already has what it needs.
        nursery.cancel_scope.cancel()


# --- the simulator ------------------------------------------------------------------------------


@asynccontextmanager
async def simulator(
    voice_events_order: VoiceEventsOrder, *, dave: str = "off"
) -> AsyncIterator[tuple[LocalDiscord, VoiceServer]]:
    """The simulator with TLS, offering discord.py's one rtpsize mode.

    DAVE is off unless asked for, so that the sending tests are about the transport layer
    alone: the media server records what it decrypted at that layer, and an established DAVE
    group would end-to-end encrypt the Opus frames inside it.
    """
    async with open_local_discord(
        tls=True,
        voice_events_order=voice_events_order,
        voice_modes=(XCHACHA20_POLY1305_RTPSIZE,),
        resend_session_description_on_resume=True,
        dave=dave,  # type: ignore[arg-type]
        # Discord's two voice events come from different services, milliseconds apart.
        voice_events_gap=VOICE_EVENTS_GAP,
    ) as discord:
        yield discord, discord.voice


def bot_session(voice: VoiceServer, user_id: int) -> VoiceGatewaySession:
    sessions = [session for session in voice.sessions if session.user_id == user_id]
    assert len(sessions) == 1, f"expected one voice session (no re-Identify), got {sessions}"
    return sessions[0]


async def wait_for_trailing_silence(voice: VoiceServer, stream: StreamStats) -> None:
    """discord.py sent its silence before reporting ``played``; wait until it was read.

    The peer holds its disconnect until this returns: otherwise the simulator may handle the
    leave (op 4 on the main gateway) before the last datagrams still queued on its UDP socket,
    and count them as an unknown SSRC.
    """
    with trio.move_on_after(DRAIN_LIMIT):
        await voice.wait_for(lambda: stream.silence_frames >= SILENCE_FRAMES)


def assert_clean_stream(voice: VoiceServer, stream: StreamStats) -> None:
    stats = voice.media.stats
    summary = stream.summary()
    assert stats.drops.get("decrypt_failed", 0) == 0, stats.drops
    assert stats.drops == {}, stats.drops
    assert stream.silence_frames == SILENCE_FRAMES, summary
    assert stream.packets - stream.silence_frames >= AUDIO_FRAMES, summary
    assert (stream.lost, stream.duplicates, stream.reordered) == (0, 0, 0), summary
    assert stream.timestamp_jumps == 0, summary


def assert_heard_the_tone(voice: VoiceServer, user_id: int) -> None:
    recording = voice.media.recordings[user_id]
    received = channel(recording.pcm())
    reference = channel(sine_pcm(SECONDS, hz=HZ))
    match = find_alignment(reference, received)
    assert match.correlation > 0.9, match
    tone = received[match.lag : match.lag + len(reference)]
    assert len(tone) == len(reference), (len(tone), len(reference))
    assert abs(zero_crossing_frequency(tone) - HZ) < 5.0, zero_crossing_frequency(tone)


# --- discord.py's lost wake-up -------------------------------------------------------------------

#: discord.py 2.7.1's VoiceConnectionState._wait_for_state checks the state, then waits on a task
#: it creates anew on each pass, while the state setter does Event.set() and clear() at once. When
#: the simulator's VOICE_SERVER_UPDATE and VOICE_STATE_UPDATE are handled before that task first
#: runs, the second change's wake-up is lost and discord.py gives up after its 20 s timeout. On
#: Discord the two events come from different services, some milliseconds apart, which hides it;
#: the simulator spaces them by VOICE_EVENTS_GAP like real latency. Should the race still
#: happen, it is recognised and reported as such, never retried until it passes.
LOST_WAKEUP = (
    "discord.py lost the wake-up between VOICE_SERVER_UPDATE and VOICE_STATE_UPDATE "
    "(VoiceConnectionState._wait_for_state) and timed out, although the simulator answered"
)
ATTEMPTS = 1
VOICE_EVENTS_GAP = 0.02


class Retry:
    """What a scenario returns when discord.py hit its lost wake-up: run it again."""


RETRY = Retry()


def discordpy_lost_wakeup(discord: LocalDiscord, voice: VoiceServer, peer: Peer) -> bool:
    """Whether discord.py timed out waiting for voice events the simulator did send."""
    log = bytes(peer.stderr)
    updates = [
        kind
        for session in discord.sessions
        for kind in session.dispatch_types
        if kind in ("VOICE_SERVER_UPDATE", "VOICE_STATE_UPDATE")
    ]
    if b"Timed out connecting to voice" in log:
        # The very first handshake: no voice websocket was ever opened.
        answered = {"VOICE_SERVER_UPDATE", "VOICE_STATE_UPDATE"} <= set(updates)
        return answered and not voice.connections
    if b"Could not resume the voice connection" in log:
        # The 4015 path: the repeated op 4 was answered, but no Resume ever arrived.
        resumed = any(info.received_ops[:1] == [VoiceOpcode.RESUME] for info in voice.connections)
        return updates.count("VOICE_SERVER_UPDATE") >= 2 and not resumed
    return False


# --- the tests ----------------------------------------------------------------------------------


async def test_discordpy_plays_three_seconds_of_pcm(peer_python: str) -> None:
    for attempt in range(1, ATTEMPTS + 1):
        started = time.monotonic()
        with trio.fail_after(SCENARIO_LIMIT):
            outcome = await play_three_seconds(peer_python)
        if outcome is not RETRY:
            print(f"discord.py interop: {time.monotonic() - started:.2f} s, attempt {attempt}")
            return
        print(f"attempt {attempt}: {LOST_WAKEUP}; running it again")
    pytest.fail(f"{LOST_WAKEUP}, on all {ATTEMPTS} attempts")


async def play_three_seconds(peer_python: str) -> Retry | None:
    async with simulator(("state", "server")) as (discord, voice):
        guild = discord.add_guild(name="interop")
        stage = guild.add_voice_channel(name="stage")
        bot = discord.bot.user_id
        async with run_peer(peer_python, discord, guild.id, stage.id) as peer:
            ready = await peer.expect("ready")
            assert ready["user_id"] == str(bot)
            assert str(guild.id) in ready["guilds"]
            try:
                connected = await peer.expect("connected")
            except PeerFailed:
                if discordpy_lost_wakeup(discord, voice, peer):
                    return RETRY
                raise
            assert connected["mode"] == XCHACHA20_POLY1305_RTPSIZE
            session = bot_session(voice, bot)
            assert connected["ssrc"] == session.ssrc
            played = await peer.expect("played")
            assert (played["frames"], played["error"]) == (AUDIO_FRAMES, None), peer.report()
            stream = voice.media.stats.stream(session.ssrc)
            await wait_for_trailing_silence(voice, stream)
            await peer.release()
            await peer.expect("done")
            assert await peer.exit_code() == 0, peer.report()
        assert session.mode == XCHACHA20_POLY1305_RTPSIZE
        assert session.speaking_states[:2] == [0, 1], session.speaking_states
        assert_clean_stream(voice, stream)
        assert_heard_the_tone(voice, bot)
    return None


#: Why the 4015 test cannot pass yet, recognised precisely: only this makes it an expected
#: failure, anything else fails.
RESUME_REFUSED = (
    "simulator gap: discord.py answers 4015 by re-sending op 4 for the channel it is in, then "
    "resumes with the token of the VOICE_SERVER_UPDATE that follows; "
    "World.handle_voice_state_update issues a fresh token on such a re-join, so follow_world "
    "ends the voice session (4022) and the Resume gets 4006 (without follow_world, "
    "VoiceServer._resume compares the Identify token: 4004)"
)


def refused_resumes(voice: VoiceServer) -> list[int | None]:
    refusals = (VoiceCloseCode.AUTHENTICATION_FAILED, VoiceCloseCode.SESSION_NO_LONGER_VALID)
    return [
        info.close_code
        for info in voice.connections
        if info.received_ops[:1] == [VoiceOpcode.RESUME] and info.close_code in refusals
    ]


async def test_discordpy_resumes_after_4015_and_the_audio_continues(
    peer_python: str,
) -> None:
    for attempt in range(1, ATTEMPTS + 1):
        started = time.monotonic()
        with trio.fail_after(SCENARIO_LIMIT):
            outcome = await play_through_a_4015(peer_python)
        if isinstance(outcome, str):
            pytest.fail(outcome)
        if outcome is not RETRY:
            print(f"discord.py 4015 interop: {time.monotonic() - started:.2f} s, attempt {attempt}")
            return
        print(f"attempt {attempt}: {LOST_WAKEUP}; running it again")
    pytest.fail(f"{LOST_WAKEUP}, on all {ATTEMPTS} attempts")


async def play_through_a_4015(peer_python: str) -> Retry | str | None:
    """None when discord.py resumed and played on; RETRY; or the known blocker's description."""
    # discord.py re-sends op 4 before resuming, and only completes that step when
    # VOICE_SERVER_UPDATE comes first; it also waits for a Session Description after Resumed.
    async with simulator(("server", "state")) as (discord, voice):
        guild = discord.add_guild(name="interop")
        stage = guild.add_voice_channel(name="stage")
        bot = discord.bot.user_id
        async with run_peer(peer_python, discord, guild.id, stage.id) as peer:
            try:
                await peer.expect("connected")
            except PeerFailed:
                if discordpy_lost_wakeup(discord, voice, peer):
                    return RETRY
                raise
            session = bot_session(voice, bot)
            stream = voice.media.stats.stream(session.ssrc)
            await voice.wait_for(lambda: stream.packets >= CLOSE_AFTER_PACKETS)
            packets_before = stream.packets
            voice.close(session, VoiceCloseCode.VOICE_SERVER_CRASHED)
            played = await peer.expect("played")
            if played["frames"] == AUDIO_FRAMES:
                await wait_for_trailing_silence(voice, stream)
            await peer.release()
            await peer.expect("done")
            assert await peer.exit_code() == 0, peer.report()
        # A refused Resume's close code is recorded once its close handshake has finished.
        with trio.move_on_after(DRAIN_LIMIT):
            await voice.wait_for(lambda: all(info.closed for info in voice.connections))
        refused = refused_resumes(voice)
        if refused:
            return f"{RESUME_REFUSED}; refused with {refused}"
        if discordpy_lost_wakeup(discord, voice, peer):
            return RETRY
        assert (played["frames"], played["error"]) == (AUDIO_FRAMES, None), peer.report()
        assert_resumed_and_continued(voice, session, stream, packets_before, peer)
        assert_clean_stream(voice, stream)
        assert_heard_the_tone(voice, bot)
    return None


def assert_resumed_and_continued(
    voice: VoiceServer,
    session: VoiceGatewaySession,
    stream: StreamStats,
    packets_before: int,
    peer: Peer,
) -> None:
    # The same session, resumed once on a second connection: no fresh Identify.
    assert bot_session(voice, session.user_id) is session
    assert session.resumes == 1, (session.resumes, session.close_codes, peer.report())
    assert session.close_codes[0] == VoiceCloseCode.VOICE_SERVER_CRASHED, session.close_codes
    resumed_on = [
        info for info in voice.connections if info.received_ops[:1] == [VoiceOpcode.RESUME]
    ]
    assert len(resumed_on) == 1, voice.connections
    # discord.py only finishes its resume on a Session Description after Resumed.
    sent_ops = [op for _, op in session.sent]
    after_resumed = sent_ops[sent_ops.index(VoiceOpcode.RESUMED) :]
    assert VoiceOpcode.SESSION_DESCRIPTION in after_resumed, sent_ops
    # The audio went on after the close.
    assert stream.packets - packets_before >= AUDIO_FRAMES - CLOSE_AFTER_PACKETS, (
        packets_before,
        stream.summary(),
    )


# --- our bot hears discord.py ------------------------------------------------------------------


async def test_our_bot_hears_discordpy_through_dave_and_decodes_the_tone(peer_python: str) -> None:
    """Issue 14's interop: an unmodified discord.py plays; we receive it end-to-end encrypted."""
    for attempt in range(1, ATTEMPTS + 1):
        started = time.monotonic()
        with trio.fail_after(SCENARIO_LIMIT):
            outcome = await hear_discordpy(peer_python)
        if outcome is not RETRY:
            print(f"discord.py receive interop: {time.monotonic() - started:.2f} s")
            return
        print(f"attempt {attempt}: {LOST_WAKEUP}; running it again")
    pytest.fail(f"{LOST_WAKEUP}, on all {ATTEMPTS} attempts")


async def hear_discordpy(peer_python: str) -> Retry | None:
    async with simulator(("state", "server"), dave="required") as (discord, voice):
        guild = discord.add_guild(name="interop")
        stage = guild.add_voice_channel(name="stage")
        other = discord.add_bot("discord.py")
        tls = discord.client_ssl_context()
        async with (
            open_shard(
                discord.bot.token,
                intents=Intents.VOICE_DEFAULT,
                gateway_url=discord.gateway_url,
                ssl_context=tls,
            ) as shard,
            voice_connection(shard, guild.id, stage.id, ssl_context=tls) as vc,
            vc.receive() as rx,
        ):
            heard = rx.user(other.user_id)
            async with run_peer(
                peer_python, discord, guild.id, stage.id, "--wait-dave", token=other.token
            ) as peer:
                try:
                    await peer.expect("connected")
                except PeerFailed:
                    if discordpy_lost_wakeup(discord, voice, peer):
                        return RETRY
                    raise
                assert (await peer.expect("dave_ready"))["protocol_version"] == 1
                frames: list[ReceivedAudio] = []
                async for frame in heard:
                    if frame.opus != OPUS_SILENCE_FRAME and not frame.concealed:
                        frames.append(frame)
                    if len(frames) >= AUDIO_FRAMES:
                        break
                # The call was end-to-end encrypted while discord.py played: one group.
                code = vc.voice_privacy_code
                played = await peer.expect("played")
                assert (played["frames"], played["error"]) == (AUDIO_FRAMES, None), peer.report()
                await peer.release()
                await peer.expect("done")
                assert await peer.exit_code() == 0, peer.report()
            stats = vc.receive_stats
        assert code is not None
        # Every frame discord.py sent was opened by our DAVE layer, none passed in the clear.
        assert stats.passed.get("dave.decrypted", 0) >= AUDIO_FRAMES, stats
        assert stats.total_dropped() == 0, stats
        pcm = b"".join(frame.pcm or b"" for frame in frames)
        match = find_alignment(channel(sine_pcm(SECONDS, hz=HZ)), channel(pcm))
        assert match.correlation >= 0.99, match
    return None
