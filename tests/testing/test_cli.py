"""``python -m discore_voice.testing`` as a user runs it: one JSON line, then Ctrl-C."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from discore_voice import (
    Intents,
    InvalidationReason,
    PcmSource,
    open_shard,
    voice_connection,
)
from discore_voice._audio.signals import sine_pcm
from discore_voice._errors import UsageError
from discore_voice.testing import open_local_discord
from discore_voice.testing._control import run_command

from .conftest import ConnectGateway


async def read_line(stream: trio.abc.ReceiveStream) -> bytes:
    data = b""
    while b"\n" not in data:
        chunk = await stream.receive_some(4096)
        assert chunk, f"the command exited before printing its line: {data!r}"
        data += chunk
    return data


async def test_command_prints_json_serves_and_exits_cleanly_on_sigint(
    connect: ConnectGateway,
) -> None:
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "discore_voice.testing", "--heartbeat-interval", "5000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None and process.stderr is not None
        with trio.fail_after(20):
            line = await read_line(process.stdout)
        info = json.loads(line)
        assert set(info) >= {
            "gateway_url",
            "api_url",
            "bot_token",
            "bot_user_id",
            "guild_id",
            "voice_channel_id",
        }
        assert info["gateway_url"].startswith("ws://127.0.0.1:")
        assert info["api_url"].startswith("http://127.0.0.1:") and info["api_url"].endswith("/v10")
        async with connect(info["gateway_url"]) as gw:
            hello = await gw.hello()
            assert hello["d"]["heartbeat_interval"] == 5000
            ready = await gw.identify(info["bot_token"], hello=False)
            assert ready["d"]["user"]["id"] == info["bot_user_id"]
            created = await gw.dispatch("GUILD_CREATE")
            assert created["d"]["id"] == info["guild_id"]
            assert [c["id"] for c in created["d"]["channels"]] == [info["voice_channel_id"]]
        process.send_signal(signal.SIGINT)
        with trio.fail_after(10):
            code = await process.wait()
        stderr = b""
        while chunk := await process.stderr.receive_some(65536):
            stderr += chunk
        assert code == 0, stderr
        assert b"Traceback" not in stderr
        assert info["bot_token"].encode() not in stderr
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                await pipe.aclose()


async def test_command_help() -> None:
    result = await trio.run_process(
        [sys.executable, "-m", "discore_voice.testing", "--help"], capture_stdout=True
    )
    assert result.returncode == 0
    for flag in (b"--tls", b"--host", b"--port"):
        assert flag in result.stdout


class Lines:
    """A subprocess's stdout, a line at a time."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = b""

    async def next(self) -> dict[str, object]:
        while b"\n" not in self._buffer:
            chunk = await self._stream.receive_some(4096)
            assert chunk, f"the command exited before a whole line: {self._buffer!r}"
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        answer: dict[str, object] = json.loads(line)
        return answer


async def test_members_listen_and_speak_faults_come_from_stdin_and_exit_reports(
    tmp_path: Path,
) -> None:
    """A bot in another process: it plays, hears a speaker, survives a 4015 and is kicked by
    lines on the simulator's stdin; on exit the simulator says what its listeners heard."""
    process = await trio.lowlevel.open_process(
        [
            *(sys.executable, "-m", "discore_voice.testing", "--dave", "off"),
            *("--listeners", "2", "--speakers", "1", "--save", str(tmp_path)),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stdin is not None and process.stdout is not None
        lines = Lines(process.stdout)
        with trio.fail_after(30):
            info = await lines.next()
            members = info["members"]
            assert isinstance(members, dict)
            assert set(members) == {"listener-1", "listener-2", "speaker-1"}
            await process.stdin.send_all(b"help\n")
            assert "close CODE" in (await lines.next())["commands"]  # type: ignore[operator]
            async with (
                open_shard(
                    str(info["bot_token"]),
                    intents=Intents.VOICE_DEFAULT,
                    gateway_url=str(info["gateway_url"]),
                ) as shard,
                voice_connection(shard, str(info["guild_id"]), str(info["voice_channel_id"])) as vc,
                vc.receive(decode=False) as rx,
            ):
                speaker = rx.user(str(members["speaker-1"]))
                heard = 0
                async for _ in speaker:
                    heard += 1
                    if heard == 10:
                        break  # the speaker's tone reaches the bot
                await vc.play(PcmSource.from_bytes(sine_pcm(0.5)))
                await process.stdin.send_all(b"close 4015\n")
                assert await lines.next() == {"ok": "close", "code": 4015}
                # A 4015 (the voice server crashed) is resumed, not fatal.
                await vc.wait_for(
                    lambda: (
                        vc.websocket_stats.closes.get(4015) == 1
                        and vc.websocket_stats.resumes == 1
                        and vc.is_connected
                    )
                )
                await process.stdin.send_all(b"bogus\n")
                assert "unknown command" in str((await lines.next())["error"])
                await process.stdin.send_all(b"kick\n")
                assert await lines.next() == {"ok": "kick"}
                invalidation = await vc.wait_invalidated()
                assert invalidation.reason is InvalidationReason.KICKED
            process.send_signal(signal.SIGINT)
            report = await lines.next()
            assert await process.wait() == 0
        heard_by = {entry["member"]: entry for entry in report["heard"]}  # type: ignore[attr-defined]
        for name in ("listener-1", "listener-2"):
            assert heard_by[name]["frames"] >= 25  # the half second the bot played
            assert (tmp_path / f"{name}.wav").stat().st_size > 25 * 3840
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        for pipe in (process.stdin, process.stdout, process.stderr):
            if pipe is not None:
                await pipe.aclose()


async def test_hostile_control_lines_get_an_error_answer_never_an_exception() -> None:
    async with open_local_discord(dave="off") as discord:
        guild = discord.add_guild()
        for line in [
            "",
            "   ",
            "close",
            "close 99999999999999",
            "close 12",
            "close -1",
            "kick now",
            "\x00\xff",
            "x" * 500,
            "move",
            "delete-channel",
        ]:
            answer = run_command(discord, guild.id, line)
            assert set(answer) == {"error"} and len(str(answer["error"])) < 300, (line, answer)
        assert run_command(discord, guild.id, "HELP")["ok"] == "help"


async def test_connect_timeout_must_be_a_number() -> None:
    with pytest.raises(UsageError, match="connect_timeout"):
        async with open_shard("a.b.c", intents=Intents.VOICE_DEFAULT, connect_timeout="10"):  # type: ignore[arg-type]
            raise AssertionError("must not open")
