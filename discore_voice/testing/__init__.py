"""A local Discord: main gateway v10, a small REST API and a world model, on 127.0.0.1.

Bots are tested against real sockets rather than mocks, so the same code paths run here as against
Discord; the simulator follows Discord's documented behaviour and close codes, and every fault a
bot must survive can be scripted.

In-process use::

    async with open_local_discord() as discord:
        guild = discord.add_guild(name="g")
        channel = guild.add_voice_channel(name="v", user_limit=2)
        ...  # point a client at discord.gateway_url / discord.api_url with discord.bot.token
        await discord.wait_for(lambda: discord.voice_state(guild.id, discord.bot.user_id))

Surface of :class:`LocalDiscord` (the object ``open_local_discord`` yields):

- Lifetime: ``nursery`` (servers started in it, such as a voice gateway, stop with the
  simulator).
- Addresses: ``gateway_url`` (``ws://127.0.0.1:PORT``, ``wss://`` with ``tls=True``), ``api_url``
  (``http(s)://127.0.0.1:PORT/api/v10``), ``ca_pem_path`` and ``client_ssl_context()`` with TLS.
- Accounts: ``bot`` (the default :class:`BotAccount`: ``user_id``, ``token``, ``application_id``,
  ``privileged_intents``), ``add_bot(name, privileged_intents=...)``.
- World: ``add_guild(name=..., shard=None)`` -> :class:`SimGuild`;
  ``guild.add_voice_channel(name=..., user_limit=0)`` -> :class:`SimChannel`;
  ``guild.add_member(name)`` -> :class:`SimUser` (a human);
  ``guilds``, ``guild(id)``. Every bot is a member of every guild. Ids are unique snowflakes whose
  timestamps differ, so consecutive guilds land on consecutive shards (``shard=(id, count)`` picks
  one explicitly).
- Voice: ``voice_state(guild_id, user_id)`` -> :class:`VoiceState` | None; ``voice_session(guild_id,
  user_id)`` -> :class:`SimVoiceSession` | None (session id, token, endpoint); ``voice_sessions``;
  ``validate_voice_identify(server_id, user_id, session_id, token)``; ``voice_endpoint`` (settable,
  ``"host:port"`` or None); ``voice_events_order`` (``("state", "server")`` or the reverse);
  ``set_voice_state(guild_id, user_id, channel_id, ...)`` places a simulated human.
- DAVE (end-to-end encryption): ``open_local_discord(dave="required" | "optional" | "off")``,
  ``"optional"`` by default. The voice gateway is the MLS external sender (ops 21-31, with a
  ``dave_transition_timeout`` for members that never get ready); ``"required"`` closes a client
  offering no DAVE with 4017, ``"optional"`` makes the call transport-only while such a client
  is in it. Each simulated member has its own DAVE client: ``member.epoch``,
  ``voice_privacy_code``, ``dave_protocol_version``, ``frames_heard``, ``frames_decrypted``,
  ``dave_decrypt_failures``, and ``member.dave`` (``never_commits``, ``never_ready``).
  ``discord.voice.dave_downgrade(channel_id)`` / ``dave_upgrade``, and
  ``discord.voice.dave_gateway`` (``channel(id)`` with the group's state, ``corrupt_next``,
  ``drop_next_execute``).
- Faults: ``move_bot``, ``kick``, ``delete_channel``, ``send_voice_server_update``, ``reconnect``
  (op 7), ``invalid_session`` (op 9), ``close_gateway``, ``stall_heartbeat_acks``,
  ``request_heartbeat``.
- Simulated members (``add_voice_member(guild_id, channel_id, name=..., listen=True,
  history=3000)`` -> :class:`SimMember`) as a receiver meets real users: ``speak_opus``,
  ``speak_pcm``, ``speak_tone`` (with ``announce=False`` or ``announce_after=K`` for audio
  before op 5), ``send_opus(frame, padding=..., extension_words=...)``; ``member.padding``
  (RTP padding, 0-255) and ``member.extension_words`` (a 0xBEDE extension) on every packet;
  ``jump_timestamp(delta)``; ``reconnect()`` (op 13, op 11, a new SSRC); ``leave()``, which
  also ends a speaking task quietly. ``member.sent`` holds the newest ``history`` frames as
  :class:`SentFrame` (``opus`` as spoken, before DAVE), ``frames_sent`` counts them all.
  ``open_local_discord(voice_op12=True)`` adds the undocumented op 12 on every join.
  ``discord.voice.media.impair(to_client=UdpFaults(drop=, duplicate=, reorder=, delay=,
  jitter=, seed=))`` impairs what bots receive.
- Observability: ``sessions`` (every identified :class:`GatewaySession`: ``identify`` without the
  token, ``intents``, ``shard``, ``ops_received``, ``received``, ``dispatches``, ``sent``,
  ``close_codes``, ``state``), ``connections`` (every websocket, identified or not:
  :class:`ConnectionInfo`), and ``await wait_for(predicate)``, which wakes on every change.

Documented choices where Discord's docs are silent or the simulator simplifies:

- Without GUILD_VOICE_STATES a session gets no VOICE_STATE_UPDATE, but op 4 still joins and
  VOICE_SERVER_UPDATE is still sent: it is not listed under any intent, and the docs say unlisted
  events are always sent. Without GUILDS there is no GUILD_CREATE / CHANNEL_* at all.
- op 4 for an unknown guild, a guild on another shard, an unknown or non-voice channel, or a full
  channel is ignored: no event at all, so the client's connect times out as it would on Discord.
- op 4 for the channel the bot is already in with the same mute/deaf is a re-join: a new token and
  both events. With only mute/deaf changed it is a VOICE_STATE_UPDATE alone. Leaving when not in
  voice sends nothing.
- The voice ``session_id`` is issued once per (gateway session, guild) and kept across moves and
  re-joins, like Discord's; the voice token is new on every join, move and server change.
- Close codes: undecodable JSON, a non-object or a payload over 4096 bytes -> 4002; a missing or
  unknown opcode, or a malformed ``d`` for a known one -> 4001; anything but heartbeat, identify or
  resume before identifying -> 4003; a second identify or resume -> 4005; a resume ``seq`` ahead of
  the session -> 4007; more than 120 payloads in 60 s -> 4008; no heartbeat within
  ``heartbeat_timeout`` (off by default) -> 4009; a bad token -> 4004; an invalid ``shard`` ->
  4010; more than ``max_guilds_per_shard`` guilds on one session -> 4011; a query version other
  than 10 -> 4012; undefined intent bits -> 4013; a privileged intent the bot's
  ``privileged_intents`` lacks -> 4014. The simulator speaks neither etf nor zstd-stream: such a
  query is closed with 4002 instead of Hello. A simulator bug closes only its own connection, 4000.
- Resuming an unknown or invalidated session, or another bot's, gets op 9 ``d=false``; the
  connection stays open for a fresh Identify.
- Closing with 1000/1001 from the client, op 9 with ``d=false`` and the non-resumable close codes
  (4004, 4007, 4009-4014) invalidate a session; its voice states are then dropped, as the main
  gateway session carried them. Other closes leave it resumable.
- Every server-to-client payload is a text frame, or with ``compress=zlib-stream`` a binary frame
  from one compressor per connection, flushed with Z_SYNC_FLUSH (so it ends ``00 00 FF FF``).
- The REST routes are ``GET /users/@me``, ``/oauth2/applications/@me``, ``/gateway/bot`` (all with
  ``Authorization: Bot <token>``, 401 otherwise) and ``/gateway``; anything else is a JSON 404.
- Tokens and session ids never reach a log line or a repr.
"""

from __future__ import annotations

from .._public import present_as as _present_as
from ._dave.gateway import DaveChannel, DaveGateway, DaveMode
from ._dave.members import SimDaveMember
from ._faults import ABRUPT, UdpFaults
from ._gateway import ConnectionInfo
from ._media import MediaServer
from ._members import SentFrame, SimMember
from ._recording import Recording
from ._sim import LocalDiscord, open_local_discord
from ._stats import MediaStats, StreamStats
from ._voice.gateway import VoiceGatewaySession, VoiceServer
from ._world import (
    GUILD_VOICE_STATES,
    GUILDS,
    PRIVILEGED_INTENTS,
    BotAccount,
    Dispatch,
    GatewaySession,
    SimChannel,
    SimGuild,
    SimUser,
    SimVoiceSession,
    VoiceState,
)

__all__ = [
    "ABRUPT",
    "GUILDS",
    "GUILD_VOICE_STATES",
    "PRIVILEGED_INTENTS",
    "BotAccount",
    "ConnectionInfo",
    "DaveChannel",
    "DaveGateway",
    "DaveMode",
    "Dispatch",
    "GatewaySession",
    "LocalDiscord",
    "MediaServer",
    "MediaStats",
    "Recording",
    "SentFrame",
    "SimChannel",
    "SimDaveMember",
    "SimGuild",
    "SimMember",
    "SimUser",
    "SimVoiceSession",
    "StreamStats",
    "UdpFaults",
    "VoiceGatewaySession",
    "VoiceServer",
    "VoiceState",
    "open_local_discord",
]

_present_as(__name__, globals(), __all__)
