"""`discore-voice record` end to end: the command in its own process, the local Discord in ours."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import wave
from functools import partial
from pathlib import Path

import trio

from discore_voice._audio.ogg import OggOpusReader
from discore_voice._audio.signals import sine_pcm
from discore_voice.testing import LocalDiscord, SimMember, open_local_discord
from discore_voice.testing._members import encode_pcm

WAIT = 60


def _command(discord: LocalDiscord, guild_id: int, channel_id: int, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "discore_voice",
        "record",
        *extra,
        "--guild",
        str(guild_id),
        "--channel",
        str(channel_id),
        "--gateway-url",
        discord.gateway_url,
    ]


def _packets(path: Path) -> list[bytes]:
    reader = OggOpusReader(str(path))
    packets = reader.feed(path.read_bytes())
    reader.close()
    return packets


async def _until_recording(process: trio.Process) -> None:
    """Read the command's stderr until it says it is recording (then keep draining it)."""
    assert process.stderr is not None
    seen = b""
    async for chunk in process.stderr:
        seen += chunk
        if b"recording into" in seen:
            return
    raise AssertionError(f"the command never started recording: {seen.decode()}")


async def _speak_while_recorded(
    discord: LocalDiscord, member: SimMember, command: list[str], *, interrupt: bool
) -> trio.Process:
    frames = encode_pcm(sine_pcm(0.5))
    env = {**os.environ, "DISCORD_TOKEN": discord.bot.token}
    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(
            partial(trio.run_process, command, env=env, stderr=subprocess.PIPE, check=False)
        )
        await _until_recording(process)
        await member.speak_opus(frames)
        if interrupt:
            process.send_signal(signal.SIGINT)
    return process


async def test_record_writes_what_a_member_said_and_leaves(tmp_path: Path) -> None:
    async with open_local_discord() as discord:
        guild = discord.add_guild()
        channel = guild.add_voice_channel()
        member = discord.add_voice_member(guild.id, channel.id)
        command = _command(discord, guild.id, channel.id, "--out", str(tmp_path), "--seconds", "2")
        with trio.fail_after(WAIT):
            process = await _speak_while_recorded(discord, member, command, interrupt=False)
            await discord.wait_for(
                lambda: discord.voice_state(guild.id, discord.bot.user_id) is None
            )
    assert process.returncode == 0
    packets = _packets(tmp_path / f"{member.user_id}.ogg")
    spoken = [sent.opus for sent in member.sent]
    start = packets.index(spoken[0])
    assert packets[start : start + len(spoken)] == spoken
    assert 95 <= len(packets) <= 105  # two seconds, silence filled around the words


async def test_ctrl_c_ends_the_recording_with_playable_files(tmp_path: Path) -> None:
    async with open_local_discord(dave="off") as discord:
        guild = discord.add_guild()
        channel = guild.add_voice_channel()
        member = discord.add_voice_member(guild.id, channel.id)
        command = _command(discord, guild.id, channel.id, "--out", str(tmp_path), "--format", "wav")
        with trio.fail_after(WAIT):
            process = await _speak_while_recorded(discord, member, command, interrupt=True)
            await discord.wait_for(
                lambda: discord.voice_state(guild.id, discord.bot.user_id) is None
            )
    assert process.returncode == 130
    with wave.open(str(tmp_path / f"{member.user_id}.wav"), "rb") as wav:
        assert wav.getnframes() >= 0.5 * 48_000  # the words were in it, and the header is right
