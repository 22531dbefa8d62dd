"""Lines on stdin that inject faults into a running simulator (``python -m discore_voice.testing``).

A bot written in another language, tested against the simulator in another process, cannot call
``discord.kick(...)``; it (or its test harness) writes ``kick`` to the simulator's stdin
instead. Each line is one command; each gets one JSON line on stdout: ``{"ok": "kick"}`` or
``{"error": "..."}``. The commands act on the bot's voice state in the simulator's guild:

- ``kick``: a moderator disconnects the bot (VOICE_STATE_UPDATE with a null channel);
- ``move``: a moderator drags the bot to a new voice channel (created for it);
- ``close CODE``: the voice server closes the bot's voice websocket with ``CODE`` (4015: the
  voice server crashed, which a client resumes; 4014: disconnected; 4006: session gone...);
- ``delete-channel``: the bot's voice channel is deleted (everyone in it is disconnected);
- ``help``: the list.

End of input (stdin closed, or never connected) only stops listening: the simulator keeps
serving until it is interrupted.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Final

import trio

from .._core.snowflake import Snowflake
from .._errors import DiscoreVoiceError
from ._sim import LocalDiscord

__all__ = ["COMMANDS", "run_command", "serve_control"]

COMMANDS: Final = {
    "kick": "a moderator disconnects the bot from voice",
    "move": "a moderator drags the bot to a new voice channel",
    "close CODE": "the voice server closes the bot's voice websocket with CODE (e.g. 4015)",
    "delete-channel": "the bot's voice channel is deleted",
    "help": "this list",
}
#: A command line longer than this is refused unread: nothing here needs more.
_MAX_LINE: Final = 200


async def serve_control(discord: LocalDiscord, guild_id: Snowflake, channel_id: Snowflake) -> None:
    """Read commands from stdin until it ends, answering each on stdout."""
    try:
        stream = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    except (OSError, ValueError):
        return  # no stdin to read
    buffer = b""
    async with stream:
        while True:
            try:
                data = await stream.receive_some(4096)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                return
            if not data:
                return
            buffer += data
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                _answer(run_command(discord, guild_id, line.decode("utf-8", "replace")))
            if len(buffer) > _MAX_LINE:
                buffer = b""
                _answer({"error": f"a line longer than {_MAX_LINE} characters was dropped"})


def run_command(discord: LocalDiscord, guild_id: Snowflake, line: str) -> dict[str, object]:
    """Carry out one command line; the JSON-able answer."""
    words = line.split()
    if not words:
        return {"error": "an empty line; try 'help'"}
    command, arguments = words[0].lower()[:40], words[1:]  # capped: echoed in answers
    if command == "help":
        return {"ok": "help", "commands": COMMANDS}
    bot = discord.bot.user_id
    state = discord.voice_state(guild_id, bot)
    if state is None or state.channel_id is None:
        return {"error": f"{command}: the bot is not in a voice channel of the guild"}
    try:
        if command == "kick" and not arguments:
            discord.kick(guild_id, bot)
        elif command == "move" and not arguments:
            target = discord.guild(guild_id).add_voice_channel(name="moved-here")
            discord.move_bot(guild_id, bot, target.id)
            return {"ok": "move", "channel_id": str(target.id)}
        elif command == "close" and len(arguments) == 1 and arguments[0].isdigit():
            code = int(arguments[0][:6])
            if not 1000 <= code <= 4999:
                return {"error": "close: a websocket close code is 1000 to 4999"}
            session = discord.voice.session_for(bot, guild_id)
            if session is None:
                return {"error": "close: the bot has no voice websocket open"}
            discord.voice.close(session, code)
            return {"ok": "close", "code": code}
        elif command == "delete-channel" and not arguments:
            discord.delete_channel(state.channel_id)
        else:
            return {"error": f"unknown command {line.strip()[:_MAX_LINE]!r}; try 'help'"}
    except (DiscoreVoiceError, ValueError) as exc:
        return {"error": f"{command}: {exc}"}
    return {"ok": command}


def _answer(answer: dict[str, object]) -> None:
    print(json.dumps(answer), flush=True)
