"""Assembles the world, the gateway and REST into one async context manager.

Everything runs in one nursery owned by the context manager, so leaving the ``async with``
closes every listener and connection: a test cannot leak a server into the next one.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from .._core.snowflake import Snowflake
from .._core.transport import SUPPORTED_MODES
from .._errors import UsageError
from ._dave.gateway import DEFAULT_TRANSITION_TIMEOUT, DaveMode
from ._gateway import ConnectionInfo, GatewayServer
from ._members import DEFAULT_HISTORY, SimMember
from ._rest import RestServer
from ._tls import TlsMaterial
from ._voice.gateway import VoiceServer, WorldVoiceAuthority
from ._world import VoiceEventsOrder, World

__all__ = ["LocalDiscord", "open_local_discord"]

logger = logging.getLogger("discore_voice.testing")


class LocalDiscord(World):
    """The running simulator: the world (see :class:`World`) plus its addresses."""

    _tls: TlsMaterial | None = None
    _gateway: GatewayServer | None = None
    _rest: RestServer | None = None
    _voice_server: VoiceServer | None = None
    _nursery: trio.Nursery | None = None
    api_url = ""

    def __repr__(self) -> str:
        return f"<LocalDiscord gateway={self.gateway_url} api={self.api_url}>"

    @property
    def tls(self) -> bool:
        return self._tls is not None

    @property
    def ca_pem_path(self) -> Path:
        """The CA that signed the servers' certificate (only with ``tls=True``)."""
        if self._tls is None:
            raise UsageError("the simulator was opened without tls=True")
        return self._tls.ca_pem_path

    def client_ssl_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts the simulator's CA (only with ``tls=True``)."""
        if self._tls is None:
            raise UsageError("the simulator was opened without tls=True")
        return self._tls.client_context()

    @property
    def nursery(self) -> trio.Nursery:
        """The simulator's own nursery: servers started here (a voice gateway) end with it."""
        if self._nursery is None:
            raise UsageError("the simulator is not running")
        return self._nursery

    @property
    def voice(self) -> VoiceServer:
        """The voice gateway and UDP media server: sessions, members, stats, faults."""
        if self._voice_server is None:
            raise UsageError("the simulator is not running")
        return self._voice_server

    def add_voice_member(
        self,
        guild_id: Snowflake,
        channel_id: Snowflake,
        *,
        name: str = "member",
        listen: bool = True,
        history: int | None = DEFAULT_HISTORY,
    ) -> SimMember:
        """A simulated human in a voice channel, seen by bots on both gateways.

        It joins the guild, gets a voice state on the main gateway, and speaks and listens on
        the voice server; ``member.leave()`` and ``member.reconnect()`` act on the voice server
        only. ``history`` bounds its per-packet records (``SimMember.history``).
        """
        user = self.guild(guild_id).add_member(name)
        self.set_voice_state(guild_id, user.user_id, channel_id)
        return self.voice.add_member(
            guild_id, channel_id, user.user_id, listen=listen, history=history
        )

    @property
    def connections(self) -> list[ConnectionInfo]:
        """Every gateway websocket so far, identified or not."""
        return [] if self._gateway is None else list(self._gateway.connections)

    @property
    def rest_requests(self) -> list[tuple[str, str, int]]:
        """(method, path, status) of every REST request so far."""
        return [] if self._rest is None else list(self._rest.requests)


async def _after(delay: float, action: Callable[[], None]) -> None:
    await trio.sleep(delay)
    action()


@asynccontextmanager
async def open_local_discord(
    *,
    tls: bool = False,
    host: str = "127.0.0.1",
    gateway_port: int = 0,
    api_port: int = 0,
    voice_events_order: VoiceEventsOrder = ("state", "server"),
    heartbeat_interval: int = 41250,
    heartbeat_timeout: float | None = None,
    rate_limit: tuple[int, float] = (120, 60.0),
    max_guilds_per_shard: int = 2500,
    shard_count: int = 1,
    voice_events_gap: float = 0.0,
    voice_modes: Sequence[str] = SUPPORTED_MODES,
    voice_heartbeat_interval_ms: float = 13_750.0,
    resend_session_description_on_resume: bool = False,
    dave: DaveMode = "optional",
    dave_transition_timeout: float = DEFAULT_TRANSITION_TIMEOUT,
    voice_op12: bool = False,
) -> AsyncIterator[LocalDiscord]:
    """Run a local Discord until the block ends.

    ``heartbeat_interval`` is in milliseconds, as Hello carries it. ``heartbeat_timeout`` (seconds,
    off by default) closes a connection with 4009 when no heartbeat arrives in time.
    ``max_guilds_per_shard`` is the 4011 threshold and ``shard_count`` what ``/gateway/bot``
    recommends. ``voice_modes`` are the transport modes the voice server offers, in order.
    ``voice_events_gap`` spaces the two voice dispatches (seconds), as real latency does.
    ``resend_session_description_on_resume`` imitates what discord.py expects after a resume.
    ``dave``: ``"required"`` is Discord since 2026-03 (a client offering no DAVE is closed with
    4017); ``"optional"`` (the default, so clients without DAVE can still be tested) runs DAVE
    and makes the call transport-only while a client without it is present; ``"off"`` speaks
    no DAVE at all. ``dave_transition_timeout`` is how long a transition waits for op 23s.
    ``voice_op12`` makes the voice server send the undocumented op 12 (a participant's SSRCs)
    on every join, as Discord does in the wild (``discord.voice.send_op12`` toggles it later).
    """
    material = TlsMaterial() if tls else None
    try:
        discord = LocalDiscord(
            voice_events_order=voice_events_order,
            heartbeat_interval=heartbeat_interval,
            heartbeat_timeout=heartbeat_timeout,
            rate_limit=rate_limit,
            max_guilds_per_shard=max_guilds_per_shard,
            shard_count=shard_count,
            voice_events_gap=voice_events_gap,
        )
        discord._tls = material
        server_context = material.server_context() if material is not None else None
        gateway = GatewayServer(discord, server_context)
        rest = RestServer(discord, server_context, lambda: discord.gateway_url)
        voice = VoiceServer(
            WorldVoiceAuthority(discord),
            modes=voice_modes,
            heartbeat_interval_ms=voice_heartbeat_interval_ms,
            ssl_context=server_context,
            resend_session_description_on_resume=resend_session_description_on_resume,
            dave_mode=dave,
            dave_transition_timeout=dave_transition_timeout,
            send_op12=voice_op12,
        )
        discord._gateway, discord._rest, discord._voice_server = gateway, rest, voice
        async with trio.open_nursery() as nursery:
            discord._nursery = nursery
            discord._call_later = lambda delay, action: nursery.start_soon(_after, delay, action)
            gateway_bound = await nursery.start(gateway.serve, host, gateway_port)
            api_bound = await nursery.start(rest.serve, host, api_port)
            await nursery.start(voice.serve, host)
            nursery.start_soon(voice.follow_world, discord)
            # Discord sends a bare host:port (clients add wss://); without TLS our clients take a
            # full ws:// URL as given, so that plain-socket tests need no certificate.
            discord.voice_endpoint = voice.endpoint if tls else voice.endpoint_url
            url_host = f"[{host}]" if ":" in host else host
            discord.gateway_url = f"{'wss' if tls else 'ws'}://{url_host}:{gateway_bound}"
            discord.api_url = f"{'https' if tls else 'http'}://{url_host}:{api_bound}/api/v10"
            logger.info("local discord: gateway %s, api %s", discord.gateway_url, discord.api_url)
            try:
                yield discord
            finally:
                discord._nursery = None
                nursery.cancel_scope.cancel()
    finally:
        if material is not None:
            material.cleanup()
