"""`discore-voice play` end to end: the command in its own process, the local Discord in ours."""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import trio

from discore_voice._audio.opus import PCM_BLOCK_SIZE, OpusEncoder
from discore_voice._audio.signals import channel as channel_samples
from discore_voice._audio.signals import melody_pcm
from discore_voice.testing import LocalDiscord, open_local_discord
from discore_voice.testing._recording import ogg_opus_bytes

WAIT = 60


def _ogg_file(path: Path, seconds: float) -> list[bytes]:
    pcm = melody_pcm(seconds)
    with OpusEncoder() as encoder:
        packets = [
            encoder.encode(pcm[i : i + PCM_BLOCK_SIZE]) for i in range(0, len(pcm), PCM_BLOCK_SIZE)
        ]
    path.write_bytes(ogg_opus_bytes(packets))
    return packets


def _command(discord: LocalDiscord, guild_id: int, channel_id: int, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "discore_voice",
        "play",
        *extra,
        "--guild",
        str(guild_id),
        "--channel",
        str(channel_id),
        "--gateway-url",
        discord.gateway_url,
    ]


def _env(token: str) -> dict[str, str]:
    return {**os.environ, "DISCORD_TOKEN": token}


async def test_ogg_opus_reaches_discord_byte_identical(tmp_path: Path) -> None:
    clip = tmp_path / "clip.opus"
    packets = _ogg_file(clip, 1.0)
    async with open_local_discord(dave="off") as discord:
        guild = discord.add_guild()
        channel = guild.add_voice_channel()
        with trio.fail_after(WAIT):
            result = await trio.run_process(
                _command(discord, guild.id, channel.id, str(clip)),
                env=_env(discord.bot.token),
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
        assert result.returncode == 0, result.stderr.decode()
        recording = discord.voice.media.recordings[discord.bot.user_id]
        assert recording.opus_packets[: len(packets)] == packets
        assert discord.voice_state(guild.id, discord.bot.user_id) is None  # it left


async def test_volume_on_ogg_opus_is_heard_not_ignored(tmp_path: Path) -> None:
    """``--volume`` on an Ogg Opus file decodes it, scales it and re-encodes it."""
    clip = tmp_path / "clip.opus"
    _ogg_file(clip, 1.0)
    levels = {}
    for volume in ("1.0", "0.5"):
        async with open_local_discord(dave="off") as discord:
            guild = discord.add_guild()
            channel = guild.add_voice_channel()
            with trio.fail_after(WAIT):
                result = await trio.run_process(
                    _command(discord, guild.id, channel.id, "--volume", volume, str(clip)),
                    env=_env(discord.bot.token),
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                )
            assert result.returncode == 0, result.stderr.decode()
            heard = channel_samples(discord.voice.media.recordings[discord.bot.user_id].pcm())
            levels[volume] = math.sqrt(sum(x * x for x in heard) / len(heard))
    assert 0.45 < levels["0.5"] / levels["1.0"] < 0.55


async def test_ctrl_c_leaves_the_channel_cleanly(tmp_path: Path) -> None:
    clip = tmp_path / "long.opus"
    _ogg_file(clip, 20.0)
    async with open_local_discord() as discord:
        guild = discord.add_guild()
        channel = guild.add_voice_channel()
        with trio.fail_after(WAIT):
            async with trio.open_nursery() as nursery:
                process = await nursery.start(
                    partial(
                        trio.run_process,
                        _command(discord, guild.id, channel.id, str(clip)),
                        env=_env(discord.bot.token),
                        stderr=subprocess.PIPE,
                        check=False,
                    )
                )
                await discord.voice.wait_for(
                    lambda: (
                        discord.bot.user_id in discord.voice.media.recordings
                        and len(discord.voice.media.recordings[discord.bot.user_id].opus_packets)
                        > 5
                    )
                )
                process.send_signal(signal.SIGINT)
            assert process.returncode == 130
            await discord.wait_for(
                lambda: discord.voice_state(guild.id, discord.bot.user_id) is None
            )


async def test_an_unreachable_gateway_is_one_line_within_the_timeout(tmp_path: Path) -> None:
    clip = tmp_path / "clip.opus"
    _ogg_file(clip, 0.2)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens there once closed
    async with open_local_discord() as discord:
        guild = discord.add_guild()
        command = _command(discord, guild.id, guild.add_voice_channel().id, "--timeout", "1")
        command[command.index("--gateway-url") + 1] = f"ws://127.0.0.1:{port}"
        with trio.fail_after(WAIT):
            result = await trio.run_process(
                [*command, str(clip)],
                env=_env(discord.bot.token),
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
    errors = [line for line in result.stderr.decode().splitlines() if "error" in line]
    assert result.returncode == 1
    assert len(errors) == 1 and "cannot reach the gateway" in errors[0], result.stderr.decode()
    assert "connect_timeout=1 s" in errors[0]


@pytest.mark.parametrize(
    ("token", "channel_exists", "message"),
    [
        ("not-the-token", True, "Discord rejected the token in DISCORD_TOKEN"),
        (None, False, "has no channel 123456789012345678"),
    ],
)
async def test_failures_are_one_line(
    tmp_path: Path, token: str | None, channel_exists: bool, message: str
) -> None:
    clip = tmp_path / "clip.opus"
    _ogg_file(clip, 0.2)
    async with open_local_discord() as discord:
        guild = discord.add_guild()
        channel_id = guild.add_voice_channel().id if channel_exists else 123456789012345678
        with trio.fail_after(WAIT):
            result = await trio.run_process(
                _command(discord, guild.id, channel_id, "--timeout", "1", str(clip)),
                env=_env(token or discord.bot.token),
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
    errors = [line for line in result.stderr.decode().splitlines() if "error" in line]
    assert result.returncode == 1
    assert len(errors) == 1 and message in errors[0], result.stderr.decode()
    assert "Traceback" not in result.stderr.decode()
