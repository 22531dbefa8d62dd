"""`discore-voice play` with several files and playlists: order, up-front checks, keys, progress.

The end-to-end tests run the command in its own process against the local Discord in ours (a
listening member hears what it played); the playlist reader, the key controls and the progress
line are plain functions and objects, tested without a connection.
"""

from __future__ import annotations

import array
import errno
import logging
import os
import pty
import signal
import subprocess
import sys
import termios
from functools import partial
from pathlib import Path

import pytest
import trio

from discore_voice._audio.opus import PCM_BLOCK_SIZE, OpusEncoder
from discore_voice._audio.signals import channel as channel_samples
from discore_voice._audio.signals import sine_pcm, zero_crossing_frequency
from discore_voice._cli.main import main
from discore_voice._cli.play import (
    KEYS,
    Controls,
    Entry,
    Key,
    _end_line,
    expand_playlists,
    progress_line,
)
from discore_voice._core.player.events import TrackEnd, TrackOutcome
from discore_voice._core.voice.events import Invalidated, InvalidationReason
from discore_voice._errors import UsageError
from discore_voice.testing import LocalDiscord, SimMember, open_local_discord
from discore_voice.testing._recording import ogg_opus_bytes, pcm_to_wav_bytes

WAIT = 60
TONES = (300, 600, 1200)
FRAME_SAMPLES = 960  # per channel, 20 ms at 48 kHz


def _wav(path: Path, hz: float, seconds: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pcm_to_wav_bytes(sine_pcm(seconds, hz=hz)))
    return path


def _ogg(path: Path, hz: float, seconds: float) -> Path:
    pcm = sine_pcm(seconds, hz=hz)
    with OpusEncoder() as encoder:
        packets = [
            encoder.encode(pcm[i : i + PCM_BLOCK_SIZE]) for i in range(0, len(pcm), PCM_BLOCK_SIZE)
        ]
    path.write_bytes(ogg_opus_bytes(packets))
    return path


def _command(discord: LocalDiscord, guild_id: int, channel_id: int, *files: str) -> list[str]:
    return [
        *(sys.executable, "-m", "discore_voice", "play", *files),
        *("--guild", str(guild_id), "--channel", str(channel_id)),
        *("--gateway-url", discord.gateway_url),
    ]


def _env(token: str) -> dict[str, str]:
    return {**os.environ, "DISCORD_TOKEN": token}


def _tones_heard(pcm: bytes) -> list[tuple[int, int]]:
    """(tone, 20 ms windows) runs in what was heard; silence and the codec's edges left out."""
    left = channel_samples(pcm)
    runs: list[list[int]] = []
    for start in range(0, len(left) - FRAME_SAMPLES + 1, FRAME_SAMPLES):
        window = left[start : start + FRAME_SAMPLES]
        if max(map(abs, window)) < 1000:
            continue
        hz = zero_crossing_frequency(window)
        tone = min(TONES, key=lambda candidate: abs(candidate - hz))
        if abs(tone - hz) > 0.15 * tone:
            continue
        if runs and runs[-1][0] == tone:
            runs[-1][1] += 1
        else:
            runs.append([tone, 1])
    return [(tone, count) for tone, count in runs if count >= 5]


class _Log:
    """A child's stderr, read as far as the text a test waits for (never by sleeping)."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self.text = ""

    async def until(self, wanted: str) -> None:
        while wanted not in self.text:
            chunk = await self._stream.receive_some()
            if not chunk:
                raise AssertionError(f"never said {wanted!r}:\n{self.text}")
            self.text += chunk.decode(errors="replace")


async def _hears_more(discord: LocalDiscord, member: SimMember) -> None:
    heard = member.frames_heard
    await discord.voice.wait_for(lambda: member.frames_heard > heard + 5)


# --- end to end --------------------------------------------------------------------------------


async def test_files_and_a_playlist_are_heard_in_order(tmp_path: Path) -> None:
    first = _wav(tmp_path / "first.wav", TONES[0], 0.6)
    second = _ogg(tmp_path / "second.opus", TONES[1], 0.6)
    _wav(tmp_path / "lists" / "sounds" / "third.wav", TONES[2], 0.6)
    playlist = tmp_path / "lists" / "list.m3u"
    playlist.write_text("#EXTM3U\n\n# the last one, relative to the playlist\nsounds/third.wav\n")
    async with open_local_discord(dave="off") as discord:
        guild = discord.add_guild()
        channel = guild.add_voice_channel()
        member = discord.add_voice_member(guild.id, channel.id, history=None)
        with trio.fail_after(WAIT):
            result = await trio.run_process(
                _command(discord, guild.id, channel.id, str(first), str(second), str(playlist)),
                env=_env(discord.bot.token),
                stdin=subprocess.DEVNULL,
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
            log = result.stderr.decode()
            assert result.returncode == 0, log
            await discord.voice.wait_for(lambda: member.frames_heard >= 85)
    heard = _tones_heard(member.heard_pcm(discord.bot.user_id))
    assert [tone for tone, _ in heard] == list(TONES), heard
    assert all(25 <= windows <= 31 for _, windows in heard), heard  # 30 frames each
    lines = log.splitlines()
    for index, name in enumerate(("first.wav", "second.opus", "third.wav"), 1):
        assert f"[{index}/3] playing {name}" in lines, log
        assert f"[{index}/3] {name}: finished (00:00.6)" in lines, log
    assert "played 3 of 3 tracks; leaving" in lines, log
    assert "\r" not in log  # no redraws into a log


async def test_a_bad_file_in_a_playlist_fails_before_joining(tmp_path: Path) -> None:
    good = _wav(tmp_path / "good.wav", 440, 0.2)
    (tmp_path / "notes.wav").write_text("not audio at all\n")
    playlist = tmp_path / "list.txt"
    playlist.write_text("good.wav\nnotes.wav\n")
    async with open_local_discord(dave="off") as discord:
        guild = discord.add_guild()
        channel = guild.add_voice_channel()
        with trio.fail_after(WAIT):
            result = await trio.run_process(
                _command(discord, guild.id, channel.id, str(good), str(playlist)),
                env=_env(discord.bot.token),
                stdin=subprocess.DEVNULL,
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
        assert discord.connections == []  # it never reached the gateway
    log = result.stderr.decode()
    assert result.returncode == 2, log
    lines = log.splitlines()
    assert len(lines) == 1 and lines[0].startswith("discore-voice play: error: "), log
    assert "notes.wav" in log and f"listed at {playlist} line 2" in log, log


async def test_keys_through_a_terminal_pause_louder_skip_and_quit(tmp_path: Path) -> None:
    first = _wav(tmp_path / "first.wav", TONES[0], 10.0)
    second = _wav(tmp_path / "second.wav", TONES[1], 10.0)
    master, slave = pty.openpty()
    before = termios.tcgetattr(slave)
    try:
        async with open_local_discord(dave="off") as discord:
            guild = discord.add_guild()
            channel = guild.add_voice_channel()
            member = discord.add_voice_member(guild.id, channel.id)
            command = _command(discord, guild.id, channel.id, str(first), str(second))
            with trio.fail_after(WAIT):
                async with trio.open_nursery() as nursery:
                    process: trio.Process = await nursery.start(
                        partial(
                            trio.run_process,
                            command,
                            env=_env(discord.bot.token),
                            stdin=slave,
                            stderr=subprocess.PIPE,
                            check=False,
                        )
                    )
                    assert process.stderr is not None
                    log = _Log(process.stderr)
                    await log.until("[1/2] playing first.wav")
                    for key, answer in [
                        (b"", "[1/2] playing first.wav"),
                        (b"+", "volume 1.1"),
                        (b" ", "paused"),
                        (b"p", "resumed"),
                        (b"n", "[2/2] playing second.wav"),
                        (b"", "[2/2] playing second.wav"),
                        (b"q", "quit; played 2 of 2 tracks; leaving"),
                    ]:
                        if not key:  # until the member hears the track that started
                            await _hears_more(discord, member)
                        os.write(master, key)
                        await log.until(answer)
            assert process.returncode == 0, log.text
        assert termios.tcgetattr(slave) == before  # out of cbreak again
    finally:
        os.close(master)
        os.close(slave)
    assert "keys: n skip" in log.text
    assert "[1/2] first.wav: stopped after" in log.text
    assert "[2/2] second.wav: stopped after" in log.text


async def test_ctrl_c_puts_the_terminal_back(tmp_path: Path) -> None:
    clip = _wav(tmp_path / "long.wav", TONES[0], 10.0)
    master, slave = pty.openpty()
    before = termios.tcgetattr(slave)
    try:
        async with open_local_discord(dave="off") as discord:
            guild = discord.add_guild()
            channel = guild.add_voice_channel()
            with trio.fail_after(WAIT):
                async with trio.open_nursery() as nursery:
                    process: trio.Process = await nursery.start(
                        partial(
                            trio.run_process,
                            _command(discord, guild.id, channel.id, str(clip)),
                            env=_env(discord.bot.token),
                            stdin=slave,
                            stderr=subprocess.PIPE,
                            check=False,
                        )
                    )
                    assert process.stderr is not None
                    log = _Log(process.stderr)
                    await log.until("[1/1] playing long.wav")
                    assert termios.tcgetattr(slave) != before  # in cbreak while it plays
                    process.send_signal(signal.SIGINT)
                    await log.until("interrupted")
            assert process.returncode == 130, log.text
            await discord.wait_for(
                lambda: discord.voice_state(guild.id, discord.bot.user_id) is None
            )
        assert termios.tcgetattr(slave) == before
    finally:
        os.close(master)
        os.close(slave)


async def test_a_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    clip = _wav(tmp_path / "clip.wav", TONES[0], 1.5)
    master, slave = pty.openpty()
    try:
        async with open_local_discord(dave="off") as discord:
            guild = discord.add_guild()
            channel = guild.add_voice_channel()
            with trio.fail_after(WAIT):
                result = await trio.run_process(
                    _command(discord, guild.id, channel.id, str(clip)),
                    env=_env(discord.bot.token),
                    stdin=subprocess.DEVNULL,
                    stderr=slave,
                    check=False,
                )
        os.close(slave)
        shown = b""
        while True:  # the child has exited: what it wrote is buffered, then EIO
            try:
                chunk = os.read(master, 4096)
            except OSError as exc:
                assert exc.errno == errno.EIO
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(master)
    text = shown.decode()
    assert result.returncode == 0, text
    assert "\r\x1b[K[1/1] clip.wav  00:0" in text, text
    assert " / 00:01  [" in text, text  # the length, once known, and the bar
    assert "\r\x1b[K[1/1] clip.wav: finished (00:01.5)\r\n" in text, text


async def test_a_kicked_bot_says_why_and_exits_non_zero(tmp_path: Path) -> None:
    clip = _wav(tmp_path / "long.wav", TONES[0], 10.0)
    async with open_local_discord(dave="off") as discord:
        guild = discord.add_guild()
        channel = guild.add_voice_channel()
        member = discord.add_voice_member(guild.id, channel.id)
        with trio.fail_after(WAIT):
            async with trio.open_nursery() as nursery:
                process: trio.Process = await nursery.start(
                    partial(
                        trio.run_process,
                        _command(discord, guild.id, channel.id, str(clip), str(clip)),
                        env=_env(discord.bot.token),
                        stdin=subprocess.DEVNULL,
                        stderr=subprocess.PIPE,
                        check=False,
                    )
                )
                assert process.stderr is not None
                log = _Log(process.stderr)
                await discord.voice.wait_for(lambda: member.frames_heard > 5)
                discord.kick(guild.id, discord.bot.user_id)
                await log.until("tracks\n")
    assert process.returncode == 1, log.text
    assert "[1/2] long.wav: invalidated after" in log.text, log.text
    assert "[2/2]" not in log.text  # never started: no line of its own
    assert "the voice connection ended (kicked: " in log.text, log.text
    assert "played 1 of 2 tracks" in log.text, log.text


# --- what fails before joining ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (["missing.wav"], "missing.wav: No such file or directory"),
        (["list.m3u8"], "missing.wav: No such file or directory (listed at "),
        (["nowhere.m3u"], "nowhere.m3u: No such file or directory"),
        (["empty.txt"], "nothing to play"),
        (["urls.m3u"], "only files can be played, not URLs (https://example.com/a.mp3)"),
        (["self.m3u"], "a playlist that lists itself"),
        (["good.wav", "--volume", "-1"], "volume must be a finite number"),
    ],
)
def test_input_errors_are_one_line_exit_2(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    files: list[str],
    message: str,
) -> None:
    _wav(tmp_path / "good.wav", 440, 0.1)
    (tmp_path / "list.m3u8").write_text("good.wav\nmissing.wav\n")
    (tmp_path / "empty.txt").write_text("# nothing here\n\n")
    (tmp_path / "urls.m3u").write_text("https://example.com/a.mp3\n")
    (tmp_path / "self.m3u").write_text("good.wav\n./self.m3u\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DISCORD_TOKEN", "token")
    monkeypatch.setattr(logging, "basicConfig", lambda **_: None)  # main's, for a real process
    # A gateway nobody listens on: were anything to try to join, it would fail with exit 1.
    code = main(["play", *files, "--guild", "1", "--channel", "2", "--gateway-url", "ws://0:9"])
    errors = capsys.readouterr().err.splitlines()
    assert code == 2, errors
    assert len(errors) == 1 and errors[0].startswith("discore-voice play: error: "), errors
    assert message in errors[0], errors


# --- playlists ---------------------------------------------------------------------------------


def test_playlists_expand_in_order_relative_to_their_folder(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    inner = tmp_path / "a" / "b" / "inner.txt"
    inner.write_text("\ufeff# a BOM, then a comment\n  deep.wav  \n/abs/olute.opus\n")
    outer = tmp_path / "a" / "outer.M3U"
    outer.write_text(f"one.wav\nb/inner.txt\nfile://{tmp_path}/with%20space.wav\n")
    entries = expand_playlists([tmp_path / "first.wav", outer, Path("last.flac")])
    assert entries == [
        Entry(tmp_path / "first.wav"),
        Entry(tmp_path / "a" / "one.wav", f"{outer} line 1"),
        Entry(tmp_path / "a" / "b" / "deep.wav", f"{tmp_path / 'a' / 'b' / 'inner.txt'} line 2"),
        Entry(Path("/abs/olute.opus"), f"{tmp_path / 'a' / 'b' / 'inner.txt'} line 3"),
        Entry(tmp_path / "with space.wav", f"{outer} line 3"),
        Entry(Path("last.flac")),
    ]


def test_a_latin_1_m3u_is_read_and_two_playlists_listing_each_other_are_refused(
    tmp_path: Path,
) -> None:
    (tmp_path / "old.m3u").write_bytes("caf\xe9.mp3\n".encode("latin-1"))
    assert expand_playlists([tmp_path / "old.m3u"]) == [
        Entry(tmp_path / "café.mp3", f"{tmp_path / 'old.m3u'} line 1")
    ]
    (tmp_path / "ping.m3u").write_text("pong.m3u\n")
    (tmp_path / "pong.m3u").write_text("ping.m3u\n")
    with pytest.raises(UsageError, match="lists itself"):
        expand_playlists([tmp_path / "ping.m3u"])


# --- keys --------------------------------------------------------------------------------------


class _FakeTrack:
    def __init__(self) -> None:
        self.paused = False
        self.volume = 1.0

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False


class _FakeQueue:
    def __init__(self, count: int) -> None:
        self.tracks = [_FakeTrack() for _ in range(count)]
        self.stopped = False

    @property
    def current(self) -> _FakeTrack | None:
        return self.tracks[0] if self.tracks else None

    @property
    def upcoming(self) -> tuple[_FakeTrack, ...]:
        return tuple(self.tracks[1:])

    def skip(self) -> None:
        if self.tracks:
            self.tracks.pop(0)

    def stop(self) -> None:
        self.tracks.clear()
        self.stopped = True


def test_the_key_map() -> None:
    assert {key for key, action in KEYS.items() if action is Key.SKIP} == {"n", "s"}
    assert {key for key, action in KEYS.items() if action is Key.PAUSE} == {" ", "p"}
    assert KEYS["+"] is Key.LOUDER and KEYS["-"] is Key.QUIETER and KEYS["q"] is Key.QUIT


def test_keys_skip_pause_and_quit() -> None:
    queue = _FakeQueue(3)
    controls = Controls(queue)
    first = queue.current
    assert first is not None
    assert controls.press("x") is None and controls.press("\x1b") is None
    assert controls.press(" ") == "paused" and first.paused
    assert controls.press("P") == "resumed" and not first.paused
    assert controls.press("n") == "skipped" and queue.current is not first
    assert controls.press("S") == "skipped" and len(queue.tracks) == 1
    assert not controls.quit
    assert controls.press("q") == "quitting"
    assert controls.quit and queue.stopped
    assert controls.press("p") == "nothing is playing"
    assert controls.press("n") == "nothing is playing"


def test_volume_keys_step_by_a_tenth_for_this_track_and_the_next_never_below_zero() -> None:
    queue = _FakeQueue(2)
    controls = Controls(queue)
    for _ in range(3):
        controls.press("+")
    assert controls.press("=") == "volume 1.4"
    assert [track.volume for track in queue.tracks] == [1.4, 1.4]
    queue.skip()
    for _ in range(20):
        controls.press("-")
    assert controls.volume == 0.0 and queue.tracks[0].volume == 0.0
    assert controls.press("+") == "volume 0.1"


# --- the progress line -------------------------------------------------------------------------


def test_the_progress_line() -> None:
    line = progress_line(3, 5, "song.opus", 83.4, 225.0)
    assert line == "[3/5] song.opus  01:23 / 03:45  [#######-------------]"
    assert progress_line(1, 1, "live", 3725.0, None) == "[1/1] live  1:02:05"
    paused = progress_line(1, 2, "a.wav", 5.0, 10.0, paused=True, volume=0.5)
    assert paused.endswith("[##########----------]  paused  vol 0.50")
    assert progress_line(1, 1, "a.wav", 12.0, 10.0).endswith("[" + "#" * 20 + "]")


def test_a_long_name_gives_way_to_the_clock_and_the_bar() -> None:
    line = progress_line(1, 2, "x" * 200, 1.0, 2.0, width=60)
    assert len(line) == 59
    assert line.startswith("[1/2] xxx") and "...  00:01 / 00:02  [" in line
    assert len(progress_line(1, 2, "x" * 200, 1.0, 2.0, width=10)) == 9


def test_end_lines_say_how_each_track_ended() -> None:
    kicked = Invalidated(InvalidationReason.KICKED, "disconnected by a moderator")
    ends = [
        TrackEnd(1, "/music/a.wav", TrackOutcome.FINISHED, 30),
        TrackEnd(2, "b.opus", TrackOutcome.STOPPED, 3051),
        TrackEnd(3, "c.flac", TrackOutcome.FAILED, 5, error=UsageError("c.flac: corrupt")),
        TrackEnd(4, "d.wav", TrackOutcome.INVALIDATED, 50, invalidation=kicked),
    ]
    assert [_end_line(end.track_id, 4, end) for end in ends] == [
        "[1/4] a.wav: finished (00:00.6)",
        "[2/4] b.opus: stopped after 01:01.0",
        "[3/4] c.flac: failed after 00:00.1: c.flac: corrupt",
        "[4/4] d.wav: invalidated after 00:01.0 (kicked)",
    ]


def test_samples_helper_reads_tones() -> None:
    """The tone detector the end-to-end test relies on, on clean input."""
    pcm = b"".join(sine_pcm(0.2, hz=hz) for hz in TONES)
    assert _tones_heard(pcm) == [(tone, 10) for tone in TONES]
    assert _tones_heard(bytes(array.array("h", [0] * 9600))) == []
