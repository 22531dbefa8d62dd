"""Voice in a second process: the main bot owns the shard, a worker owns the voice connection.

A voice connection needs only three things from the main gateway: the bot's user id, the
VOICE_STATE_UPDATE and VOICE_SERVER_UPDATE dispatches, and a way to send op 4 (a voice state
update). :class:`~discore_voice.ForwardedBridge` is exactly that, fed by hand, so voice can run
in another process or on another machine (Discore's "bridges").

Here the two processes talk over a loopback TCP socket, one JSON object per line:

* main -> worker: ``{"t": "VOICE_STATE_UPDATE" | "VOICE_SERVER_UPDATE", "d": {...}}``, every
  voice dispatch the shard receives;
* worker -> main: ``{"op": 4, "d": {"guild_id", "channel_id", "self_mute", "self_deaf"}}``, the
  voice state updates the worker's connection asks for (join, switch, mute, leave).

It runs on the local Discord (no token, no network); a simulated member checks the audio that
the worker sent::

    python examples/bridge_worker.py
"""

from __future__ import annotations

import json
import math
import struct
import sys
from typing import Any

import trio

from discore_voice import (
    BRIDGE_EVENTS,
    ForwardedBridge,
    Intents,
    PcmSource,
    Shard,
    Snowflake,
    open_shard,
    voice_connection,
)


async def read_lines(stream: trio.abc.ReceiveStream) -> Any:
    """Yield one decoded JSON object per line until the peer closes the stream."""
    buffer = b""
    async for chunk in stream:
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            yield json.loads(line)


async def send_line(stream: trio.abc.SendStream, lock: trio.Lock, message: object) -> None:
    async with lock:  # two tasks write to the stream; a line must not interleave
        await stream.send_all(json.dumps(message).encode() + b"\n")


# --- the worker process: ForwardedBridge + voice_connection ----------------------------------


async def worker(port: int, user_id: int, guild_id: int, channel_id: int) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    lock = trio.Lock()

    async def send_voice_state(
        guild: Snowflake, channel: Snowflake | None, self_mute: bool, self_deaf: bool
    ) -> None:
        request = {
            "guild_id": str(guild),
            "channel_id": None if channel is None else str(channel),
            "self_mute": self_mute,
            "self_deaf": self_deaf,
        }
        await send_line(stream, lock, {"op": 4, "d": request})

    async def forward_dispatches(bridge: ForwardedBridge) -> None:
        async for event in read_lines(stream):
            bridge.dispatch(event["t"], event["d"])
        bridge.close()  # the main bot went away: the connection sees GATEWAY_CLOSED

    async with stream:
        with ForwardedBridge(user_id, send_voice_state) as bridge:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(forward_dispatches, bridge)
                async with voice_connection(bridge, guild_id, channel_id) as vc:
                    print(f"worker: connected through the bridge ({vc.encryption_mode})")
                    end = await vc.play(PcmSource.from_bytes(tone(), name="tone"))
                    print(f"worker: played {end.frames} frames ({end.outcome.value}); leaving")
                # Leaving sent op 4 with a null channel through the bridge; we are done.
                nursery.cancel_scope.cancel()


def tone(seconds: float = 0.6, hertz: float = 523.0) -> bytes:
    out = bytearray()
    for i in range(int(48_000 * seconds)):
        value = int(8192 * math.sin(2 * math.pi * hertz * i / 48_000))
        out += struct.pack("<hh", value, value)
    return bytes(out)


# --- the main process: the shard, forwarding both ways ---------------------------------------


async def serve_worker(shard: Shard, stream: trio.SocketStream) -> None:
    """Forward voice dispatches to the worker and its op 4 requests to the shard."""
    lock = trio.Lock()
    async with stream, trio.open_nursery() as nursery:

        async def forward_dispatches() -> None:
            # The two voice dispatches and the shard's news about its gateway session, so the
            # worker's connection ends at once if the session is lost and waits out an outage.
            with shard.subscribe(*BRIDGE_EVENTS) as subscription:
                async for name, data in subscription:
                    await send_line(stream, lock, {"t": name, "d": data})

        nursery.start_soon(forward_dispatches)
        async for request in read_lines(stream):
            if request.get("op") == 4:
                d = request["d"]
                await shard.update_voice_state(
                    d["guild_id"],
                    d["channel_id"],
                    self_mute=d["self_mute"],
                    self_deaf=d["self_deaf"],
                )
        nursery.cancel_scope.cancel()  # the worker closed its end


async def main() -> None:
    from discore_voice.testing import open_local_discord

    async with open_local_discord() as discord:
        guild = discord.add_guild(name="bridge guild")
        channel = guild.add_voice_channel(name="Worker's channel")
        alice = discord.add_voice_member(guild.id, channel.id, name="alice")
        bot = discord.bot.user_id
        async with (
            open_shard(
                discord.bot.token, intents=Intents.VOICE_DEFAULT, gateway_url=discord.gateway_url
            ) as shard,
            trio.open_nursery() as nursery,
        ):
            (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
            port = listener.socket.getsockname()[1]
            command = [
                sys.executable,
                *(f"-W{option}" for option in sys.warnoptions),
                __file__,
                "worker",
                *(str(n) for n in (port, shard.user_id, guild.id, channel.id)),
            ]
            worker_process = await nursery.start(trio.run_process, command)
            print(f"main: started worker process {worker_process.pid}")
            async with listener:
                stream = await listener.accept()
            await serve_worker(shard, stream)
            await worker_process.wait()
            print(f"main: worker exited with code {worker_process.returncode}")
        print(f"main: alice heard {alice.frames_heard} frames from the worker")
        print(f"main: bot voice state after leaving: {discord.voice_state(guild.id, bot)}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        port, user_id, guild_id, channel_id = (int(arg) for arg in sys.argv[2:6])
        trio.run(worker, port, user_id, guild_id, channel_id)
    else:
        trio.run(main)
