"""``python -m discore_voice.testing`` as a user runs it: one JSON line, then Ctrl-C."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import trio

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
