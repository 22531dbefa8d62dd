"""A main gateway shard: the trio shell around :class:`GatewayProtocol`.

``open_shard`` is an async context manager. It yields once READY arrived, runs the shard's one task
in its own nursery, and on exit closes the websocket (code 1000: the session ends) and every
subscription, leaving no task or socket behind.

Failure policy:

- Everything Discord documents as reconnectable (dropped connections, most close codes, op 7,
  op 9, a zombie connection, malformed payloads) is handled inside: resume through
  ``resume_gateway_url`` when the session allows it, identify afresh otherwise, with backoff for
  connections that keep failing.
- The close codes Discord says never to retry (4004 token, 4010/4011 sharding, 4012 version,
  4013/4014 intents), and a TLS certificate that does not verify, are fatal: a
  :class:`GatewayError` subclass. Before READY it is raised by ``async with open_shard(...)``
  itself. After READY the shard closes every subscription (so ``async for`` loops end), cancels
  the body of the ``async with`` block, and raises the error out of it. Only library exceptions
  leave this way; never a bare ``ExceptionGroup`` of ours.
- Using a stopped shard raises :class:`ShardClosed`.
"""

from __future__ import annotations

import json
import logging
import random
import ssl
import sys
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final

import trio
import trio_websocket

from ..._core.gateway.errors import (
    CloseAction,
    CloseVerdict,
    GatewayError,
    GatewayUnreachable,
    ShardClosed,
)
from ..._core.gateway.guilds import ChannelCheck, ChannelVerdict, GuildDirectory
from ..._core.gateway.intents import Intents
from ..._core.gateway.limits import IdentifyLimiter, ReconnectBackoff, SendRateLimiter
from ..._core.gateway.protocol import (
    Dispatched,
    GatewayEvent,
    GatewayProtocol,
    HeartbeatAcked,
    HeartbeatIntervalClamped,
    ReconnectRequested,
    SendKind,
    SendPayload,
    SessionInvalidated,
    SessionReady,
    SessionResumed,
    ZombieConnection,
    build_gateway_url,
)
from ..._core.gateway.voice import (
    GATEWAY_DISCONNECTED,
    GATEWAY_RESUMED,
    GATEWAY_SESSION_LOST,
    VOICE_STATE_SENT,
    build_voice_state_update,
)
from ..._core.snowflake import Snowflake, validate_snowflake
from ..._errors import ProtocolError, UnknownOpcode, UsageError, shorten
from .. import dispatches
from ..dispatches import DEFAULT_BUFFER_SIZE, Dispatch
from ..hub import Hub, Subscription
from ..websocket import (
    WebSocketConnectFailed,
    close_websocket,
    connect_websocket,
    shielded_nursery,
)
from .voice_states import VoiceStateQueue

__all__ = ["DEFAULT_GATEWAY_URL", "Shard", "open_shard", "shard_for_guild"]

DEFAULT_GATEWAY_URL = "wss://gateway.discord.gg"
# Discord closes with 4002 any payload over 4096 bytes.
MAX_SEND_SIZE = 4096
#: What a directory that is behind by a dispatch or two would also say.
_MAY_STILL_COME: Final = frozenset({ChannelVerdict.NOT_IN_GUILD, ChannelVerdict.NO_SUCH_CHANNEL})
# Compressed frames; a big bot's READY or GUILD_CREATE can exceed trio-websocket's 1 MiB default.
MAX_RECEIVE_SIZE = 16 * 1024 * 1024
# Close code for a close that must keep the session resumable (1000/1001 would end it).
RESUMABLE_CLOSE = 4000
# How long leaving ``open_shard`` waits for the websocket close handshake.
CLOSE_GRACE = 5.0
# Bounds of how long a connection must stay up after READY/RESUMED to reset the backoff.
STABLE_MIN = 5.0
STABLE_MAX = 60.0
# How long leaving ``open_shard`` may wait to send the voice leaves still queued: one rate-limit
# window frees every slot, and a leave that never goes out leaves the bot shown in the channel.
LEAVE_FLUSH_TIMEOUT = 65.0

_logger = logging.getLogger("discore_voice.gateway")


class _ShardLog(logging.LoggerAdapter[logging.Logger]):
    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        extra = self.extra or {}
        return f"shard {extra['shard_id']}/{extra['shard_count']}: {msg}", kwargs


def shard_for_guild(guild_id: int | str, shard_count: int) -> int:
    """The shard that serves ``guild_id``: ``(guild_id >> 22) % shard_count``."""
    guild = validate_snowflake(guild_id, name="guild_id")
    _check_shard_numbers(0, shard_count)
    return (guild >> 22) % shard_count


@dataclass(frozen=True, slots=True)
class _Outcome:
    """How one connection ended, and what the next one should do.

    ``progressed``: it reached READY or RESUMED *and then stayed up* (see :func:`_stable_after`).
    Only that resets the reconnect backoff: a gateway that fails right after every resume would
    otherwise be hammered with thousands of reconnects a minute.
    """

    verdict: CloseVerdict
    progressed: bool
    wait: float | None = None


def _stable_after(interval: float | None) -> float:
    """How long a READY or RESUMED connection must last to count as progress.

    Two heartbeat intervals (one acknowledged heartbeat at least), within 5 s to a minute: a
    server that drops each connection soon after READY makes no progress, however fast it
    answers the handshake.
    """
    if interval is None:
        return STABLE_MAX
    return min(STABLE_MAX, max(STABLE_MIN, 2 * interval))


class Shard:
    """One gateway connection (a shard) of a bot. Create it with :func:`open_shard`.

    Satisfies :class:`~discore_voice.GatewayVoiceBridge`, so voice connections can use it
    directly.
    """

    def __init__(
        self,
        token: str,
        *,
        intents: Intents,
        shard_id: int,
        shard_count: int,
        gateway_url: str,
        ssl_context: ssl.SSLContext | None,
        identify_limiter: IdentifyLimiter,
        buffer_size: int,
        connect_timeout: float,
    ) -> None:
        self._intents = intents
        self._shard_id = shard_id
        self._shard_count = shard_count
        self._gateway_url = gateway_url
        self._ssl_context = ssl_context
        self._identify_limiter = identify_limiter
        self._connect_timeout = connect_timeout
        self._protocol = GatewayProtocol(
            token,
            intents=int(intents),
            shard_id=shard_id,
            shard_count=shard_count,
            properties={"os": sys.platform, "browser": "discore_voice", "device": "discore_voice"},
        )
        self._log = _ShardLog(_logger, {"shard_id": shard_id, "shard_count": shard_count})
        self._hub: Hub[Dispatch] = Hub(self._log, buffer_size, what="a dispatch")
        self._limiter = SendRateLimiter()
        self._user_id: Snowflake = 0
        self._live: trio_websocket.WebSocketConnection | None = None
        self._state_changed = trio.Event()
        self._settled = trio.Event()
        self._finished = trio.Event()
        self._active_scope: trio.CancelScope | None = None
        self._stopped = False
        self._closing = False
        self._failure: GatewayError | None = None
        self._nursery: trio.Nursery | None = None
        self._session_live = False
        self._voice_states = VoiceStateQueue(self._log)
        self._guilds = GuildDirectory()
        self._guilds_changed = trio.Event()  # set (and replaced) when the directory learns

    def __repr__(self) -> str:
        state = "closed" if self._stopped else "ready" if self.is_ready else "reconnecting"
        return (
            f"<Shard {self._shard_id}/{self._shard_count} user_id={self._user_id} "
            f"intents={int(self._intents)} {state}>"
        )

    # --- public surface -------------------------------------------------------------------

    @property
    def user_id(self) -> Snowflake:
        """The bot's user id, from READY."""
        return self._user_id

    @property
    def intents(self) -> Intents:
        """The intents it identified with; voice connections check for GUILD_VOICE_STATES."""
        return self._intents

    @property
    def shard_id(self) -> int:
        """This shard's number: it serves the guilds ``shard_for_guild`` maps to it."""
        return self._shard_id

    @property
    def shard_count(self) -> int:
        """How many shards the bot runs, as given to ``open_shard``."""
        return self._shard_count

    @property
    def is_ready(self) -> bool:
        """Connected with a live session (False while reconnecting, and once closed)."""
        return self._live is not None and not self._stopped

    @property
    def is_closed(self) -> bool:
        """Stopped for good: left its block, or failed; using it now raises ShardClosed."""
        return self._stopped

    @property
    def failure(self) -> GatewayError | None:
        """The fatal error that stopped the shard, if one did."""
        return self._failure

    @property
    def latency(self) -> float | None:
        """Seconds between the last heartbeat and its ACK."""
        return self._protocol.latency

    def serves_guild(self, guild_id: int | str) -> bool:
        """Whether Discord routes ``guild_id``'s events (and voice) through this shard."""
        return shard_for_guild(guild_id, self._shard_count) == self._shard_id

    def check_voice_channel(self, guild_id: int | str, channel_id: int | str) -> ChannelCheck:
        """Whether the bot could join ``channel_id`` of ``guild_id``, from what READY, GUILD_CREATE
        and CHANNEL_* said (``ChannelVerdict.UNKNOWN`` where they have not said yet, as without
        the GUILDS intent). Voice connections ask before they send op 4."""
        guild = validate_snowflake(guild_id, name="guild_id")
        channel = validate_snowflake(channel_id, name="channel_id")
        return self._guilds.check(guild, channel)

    async def wait_voice_channel(
        self, guild_id: int | str, channel_id: int | str, *, grace: float
    ) -> ChannelCheck:
        """:meth:`check_voice_channel`, given ``grace`` seconds to stop saying "no such guild"
        or "no such channel": a bot that just created the channel (or was just added to the
        guild) has the REST answer before the gateway's CHANNEL_CREATE (or GUILD_CREATE)."""
        with trio.move_on_after(grace):
            while True:
                changed = self._guilds_changed
                check = self.check_voice_channel(guild_id, channel_id)
                if check.verdict not in _MAY_STILL_COME:
                    return check
                await changed.wait()
        return self.check_voice_channel(guild_id, channel_id)

    def subscribe(
        self,
        *event_names: str,
        buffer_size: int | None = None,
        guild_id: int | str | None = None,
    ) -> Subscription[Dispatch]:
        """Receive dispatches named ``event_names`` (every dispatch if none are named).

        With ``guild_id``, only that guild's dispatches (by their ``guild_id``) are delivered,
        and other guilds' never wake the reader. Subscribing to a stopped shard gives a
        subscription that is already ended.
        """
        return dispatches.subscribe(self._hub, event_names, buffer_size, guild_id=guild_id)

    async def update_voice_state(
        self,
        guild_id: int | str,
        channel_id: int | str | None,
        *,
        self_mute: bool = False,
        self_deaf: bool = False,
    ) -> None:
        """Send op 4: join or move to ``channel_id``, or leave with None.

        Returns once sent (not once Discord answered). Waits for the rate limiter, and for a
        reconnect to finish if the shard is between connections. Like any gateway send, a
        request written just as Discord drops the connection can be lost: callers that need the
        answer (a voice connection) wait for it with a timeout.
        """
        guild = validate_snowflake(guild_id, name="guild_id")
        channel = None if channel_id is None else validate_snowflake(channel_id, name="channel_id")
        if not isinstance(self_mute, bool) or not isinstance(self_deaf, bool):
            raise UsageError("self_mute and self_deaf must be booleans")
        if not self._intents & Intents.GUILD_VOICE_STATES:
            self._log.warning(
                "updating a voice state without the GUILD_VOICE_STATES intent: Discord will "
                "not send the VOICE_STATE_UPDATE a voice connection needs"
            )
        if not self.serves_guild(guild):
            self._log.warning("guild %d is not served by this shard; Discord ignores op 4", guild)
        self._log.debug("voice state update: guild %d, channel %s", guild, channel)
        payload = build_voice_state_update(guild, channel, self_mute=self_mute, self_deaf=self_deaf)
        _check_size(payload)
        if self._stopped:
            raise ShardClosed(self._closed_message())
        if channel is None:
            # Queued, never dropped, and sent ahead of joins (see ``voice_states``).
            self._voice_states.leave(guild, payload)
            return
        await self._voice_states.update(guild, payload)

    @property
    def send_budget(self) -> int:
        """Ordinary sends (op 4 and the like) this connection may make now without waiting for
        the rate limit; 0 means the next one waits (a leave waits queued, in order)."""
        return max(0, self._limiter.free(trio.current_time()))

    @property
    def subscriber_count(self) -> int:
        """Live subscriptions to this shard's dispatches (voice connections hold one each)."""
        return len(self._hub)

    @property
    def voice_leaves_queued(self) -> int:
        """Leaves (op 4 with no channel) waiting for the shard's send budget or connection."""
        return self._voice_states.leaves_queued

    # --- sending --------------------------------------------------------------------------

    async def _send_voice_states(self) -> None:
        """The shard's op 4 sender: drains the voice state queue as the send budget allows.

        It waits for a live connection and a free slot *before* it chooses what to send, so a
        leave queued while a join waited for the budget still goes first.
        """
        queue = self._voice_states
        while not self._stopped:
            if not len(queue):
                await queue.wait_changed()
                continue
            connection = await self._wait_for_send_slot()
            if connection is None:
                return  # the shard stopped: _stop() released every caller still queued
            request = queue.next_request()
            if request is None:
                continue  # every request was withdrawn meanwhile
            self._limiter.record(trio.current_time())
            try:
                await connection.send_message(json.dumps(request.payload, separators=(",", ":")))
                # In order with the guild's dispatches: its answers can only come after this.
                data = request.payload["d"]
                marker = {"guild_id": data["guild_id"], "channel_id": data["channel_id"]}
                dispatches.publish(self._hub, VOICE_STATE_SENT, marker, explicit=True)
            except trio_websocket.ConnectionClosed:
                # The shard task notices too and reconnects; the request stays queued for the
                # next connection. (Like any send, one written as the connection drops may be
                # lost on the way: the voice connection's own timeout covers a join.)
                if self._live is connection:
                    await self._state_changed.wait()
                continue
            queue.done(request)

    async def _wait_for_send_slot(self) -> trio_websocket.WebSocketConnection | None:
        """A live connection with an ordinary send slot free now; None once the shard stopped."""
        logged = False
        while not self._stopped:
            connection = self._live
            if connection is None:
                await self._state_changed.wait()
                continue
            delay = self._limiter.delay(trio.current_time())
            if delay <= 0:
                return connection
            leaves = self._voice_states.leaves_queued
            if not logged:
                # A leave that waits keeps the bot shown in a channel it left: say so.
                self._log.log(
                    logging.INFO if leaves else logging.DEBUG,
                    "send rate limit reached; the next op 4 waits %.2f s (%d voice leave(s) "
                    "queued)",
                    delay,
                    leaves,
                )
                logged = True
            await trio.sleep(delay)
        return None

    async def _flush_leaves(self) -> None:
        """On the way out: send the leaves still queued, as the budget allows (runs bounded)."""
        queue = self._voice_states
        if not queue.leaves_queued or self._stopped:
            return
        self._log.info("sending %d queued voice leave(s) before closing", queue.leaves_queued)
        while queue.leaves_queued and not self._stopped:
            await queue.wait_changed()

    async def _send_priority(
        self, connection: trio_websocket.WebSocketConnection, payload: dict[str, Any]
    ) -> None:
        text = json.dumps(payload, separators=(",", ":"))
        # Reserved slots make a wait here near impossible; a sleep is still safer than a 4008.
        delay = self._limiter.delay(trio.current_time(), priority=True)
        if delay > 0:
            await trio.sleep(delay)
        self._limiter.record(trio.current_time())
        await connection.send_message(text)

    def _announce_disconnected(self) -> None:
        """The connection dropped: voice connections waiting for dispatches wait for the resume.

        Then, if the session cannot be resumed, that it is lost (see below)."""
        if self._session_live:
            self._hub.broadcast(
                (GATEWAY_DISCONNECTED, {}), name=GATEWAY_DISCONNECTED, explicit=True
            )
        self._announce_if_session_lost()

    def _announce_if_session_lost(self) -> None:
        """Tell voice subscribers, at once, that the gateway session ended without a resume.

        Discord drops a session's voice states with it (its voice servers close with 4014), so
        every voice connection of this shard is over; without this they would learn it only from
        that close and a move grace, seconds later, and report it as a kick.
        """
        if not self._session_live or self._protocol.has_session:
            return
        self._session_live = False
        reason = "the gateway session ended and could not be resumed"
        self._log.warning("%s; its voice connections end with it", reason)
        news = (GATEWAY_SESSION_LOST, {"reason": reason})
        self._hub.broadcast(news, name=GATEWAY_SESSION_LOST, explicit=True)

    def _closed_message(self) -> str:
        if self._failure is not None:
            return f"the shard stopped: {self._failure}"
        return "the shard is closed"

    def _notify(self) -> None:
        self._state_changed.set()
        self._state_changed = trio.Event()

    # --- the shard task -------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._session_loop()
        except GatewayError as exc:
            self._failure = exc
        except Exception as exc:
            # A bug of ours: surface it as a library error rather than a bare exception.
            error = GatewayError(f"the shard stopped on an unexpected {type(exc).__name__}")
            error.__cause__ = exc
            self._failure = error
        finally:
            self._stop()

    def _stop(self) -> None:
        self._stopped = True
        self._live = None
        lost = self._voice_states.close(self._closed_message())
        if lost:
            self._log.warning("%d queued voice leave(s) were never sent: the shard stopped", lost)
        self._hub.close()
        self._notify()
        self._settled.set()
        self._finished.set()
        if self._failure is not None:
            # A fatal close needs no traceback; an unexpected error (a bug) does.
            cause = self._failure.__cause__
            unexpected = cause is not None and not isinstance(cause, WebSocketConnectFailed)
            self._log.error("stopped: %s", self._failure, exc_info=cause if unexpected else None)
            if self._nursery is not None:
                self._nursery.cancel_scope.cancel()
        else:
            self._log.info("closed")

    async def _session_loop(self) -> None:
        backoff = ReconnectBackoff()
        started = trio.current_time()
        while not self._closing:
            resuming = self._protocol.can_resume
            url = self._protocol.connect_url(self._gateway_url)
            self._log.info(
                "connecting (%s, attempt %d)",
                "resume" if resuming else "identify",
                backoff.attempts + 1,
            )
            try:
                outcome = await self._connect_once(url)
            except WebSocketConnectFailed as exc:
                if exc.certificate:
                    raise GatewayError(str(exc)) from exc
                # Discord: when a reconnect to resume_gateway_url fails, go back to the base URL
                # (a resume is still worth trying there).
                self._protocol.resume_gateway_url = None
                delay = backoff.next_delay(random.random())
                self._give_up_before_ready(started, delay, backoff.attempts, str(exc))
                self._log.warning("%s; retrying in %.1f s", exc, delay)
                await self._pause(delay)
                continue
            if outcome is None:
                return
            verdict = outcome.verdict
            if verdict.action is CloseAction.FATAL:
                assert verdict.error is not None
                raise verdict.error
            if outcome.progressed:
                backoff.reset()
            # Every reconnect waits, with jitter; the backoff grows until a connection stays up.
            delay = backoff.next_delay(random.random())
            if outcome.wait is not None:
                delay = max(delay, outcome.wait)
            self._give_up_before_ready(started, delay, backoff.attempts, verdict.description)
            # A reconnect after a connection that stayed up is routine (Discord asks for them);
            # one after a connection that did not is a failing gateway, worth a warning.
            self._log.log(
                logging.INFO if outcome.progressed else logging.WARNING,
                "disconnected: %s; %s in %.1f s (attempt %d since the last stable connection)",
                verdict.description,
                "resuming" if verdict.action is CloseAction.RESUME else "identifying",
                delay,
                backoff.attempts,
            )
            await self._pause(delay)

    def _give_up_before_ready(self, started: float, delay: float, attempts: int, last: str) -> None:
        """Before the first READY, a retry that would end past ``connect_timeout`` is not made.

        A bot pointed at a wrong or unreachable gateway learns it in ``connect_timeout``
        seconds, not never; a shard that was ready once keeps reconnecting instead.
        """
        if self._settled.is_set():
            return
        if trio.current_time() + delay - started < self._connect_timeout:
            return
        raise GatewayUnreachable(
            f"no READY from the gateway within connect_timeout={self._connect_timeout:g} s "
            f"({attempts} attempt{'s' if attempts != 1 else ''}; the last: {shorten(last, 200)})"
        )

    async def _pause(self, delay: float) -> None:
        with self._interruptible():
            await trio.sleep(delay)

    def _interruptible(self) -> trio.CancelScope:
        """A scope that a graceful close cancels (sleeps, connecting, driving a connection).

        The websocket's reader task stays outside it, so a closing shard can still complete the
        close handshake.
        """
        scope = trio.CancelScope()
        if self._closing:
            scope.cancel()
        self._active_scope = scope
        return scope

    async def _connect_once(self, url: str) -> _Outcome | None:
        """Run one connection; None when the shard is closing."""
        outcome: _Outcome | None = None
        failure: BaseException | None = None
        try:
            async with trio.open_nursery() as nursery:
                readers: trio.Nursery = await nursery.start(shielded_nursery)
                try:
                    opened = None
                    with self._interruptible():
                        opened = await connect_websocket(
                            readers,
                            url,
                            ssl_context=self._ssl_context,
                            connect_timeout=self._connect_timeout,
                            max_message_size=MAX_RECEIVE_SIZE,
                        )
                    if opened is not None:
                        connection, stream = opened
                        try:
                            with self._interruptible():
                                outcome = await self._run_connection(connection)
                        finally:
                            self._live = None
                            self._notify()
                            self._announce_disconnected()
                            code = 1000 if self._closing else RESUMABLE_CLOSE
                            await close_websocket(connection, stream, code=code)
                finally:
                    readers.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            failure = _collapse(group)
            if failure is group:
                raise
        if failure is not None:
            raise failure
        return outcome

    async def _close_gracefully(self) -> None:
        """Interrupt whatever the shard task does, let it close its websocket with 1000, wait."""
        self._closing = True
        if self._active_scope is not None:
            self._active_scope.cancel()
        await self._finished.wait()

    async def _run_connection(self, connection: trio_websocket.WebSocketConnection) -> _Outcome:
        """Run one connection until it must be replaced."""
        protocol = self._protocol
        protocol.begin_connection(jitter=random.random())
        self._limiter.reset()
        ready_at: float | None = None

        def progressed() -> bool:
            if ready_at is None:
                return False
            return trio.current_time() - ready_at >= _stable_after(protocol.heartbeat_interval)

        identify: tuple[float, dict[str, Any]] | None = None
        try:
            while True:
                now = trio.current_time()
                events: list[GatewayEvent] = protocol.poll(now)
                if identify is not None and identify[0] <= now:
                    self._log.info("identifying with intents %d", protocol.intents)
                    await self._send_priority(connection, identify[1])
                    identify = None
                wake = protocol.next_wakeup()
                if identify is not None:
                    wake = identify[0] if wake is None else min(wake, identify[0])
                if not events:
                    with trio.move_on_at(wake if wake is not None else float("inf")):
                        message = await connection.get_message()
                        try:
                            if isinstance(message, str):
                                events = protocol.receive_text(message, trio.current_time())
                            else:
                                events = protocol.receive_bytes(message, trio.current_time())
                        except UnknownOpcode as exc:
                            self._log.debug("ignored: %s", exc)
                        except ProtocolError as exc:
                            self._log.warning("reconnecting after a malformed payload: %s", exc)
                            verdict = protocol.connection_lost(None)
                            description = "the gateway sent a malformed payload"
                            return _Outcome(CloseVerdict(verdict.action, description), progressed())
                for event in events:
                    if isinstance(event, SendPayload):
                        if event.kind is SendKind.IDENTIFY:
                            at = self._identify_limiter.reserve(trio.current_time(), self._shard_id)
                            identify = (at, event.payload)
                        else:
                            if event.kind is SendKind.RESUME:
                                self._log.info("resuming at sequence %s", protocol.sequence)
                            await self._send_priority(connection, event.payload)
                    elif isinstance(event, Dispatched):
                        if self._guilds.dispatch(event.name, event.data):
                            self._guilds_changed.set()
                            self._guilds_changed = trio.Event()
                        dispatches.publish(self._hub, event.name, event.data)
                    elif isinstance(event, SessionReady | SessionResumed):
                        ready_at = trio.current_time()
                        self._session_live = True
                        if isinstance(event, SessionResumed):
                            self._hub.broadcast(
                                (GATEWAY_RESUMED, {}), name=GATEWAY_RESUMED, explicit=True
                            )
                        if isinstance(event, SessionReady):
                            self._user_id = event.user_id
                            self._log.info("ready as user %d", event.user_id)
                        else:
                            self._log.info("resumed")
                        self._live = connection
                        self._notify()
                        self._settled.set()
                    elif isinstance(event, HeartbeatIntervalClamped):
                        self._log.warning(
                            "the gateway asked for a heartbeat every %s s; heartbeating every "
                            "%g s instead",
                            shorten(event.asked, 40),
                            event.used,
                        )
                    elif isinstance(event, HeartbeatAcked):
                        self._log.debug("heartbeat acknowledged (latency %s s)", event.latency)
                    elif isinstance(event, ReconnectRequested):
                        verdict = protocol.connection_lost(None)
                        return _Outcome(
                            CloseVerdict(verdict.action, "Discord asked for a reconnect (op 7)"),
                            progressed(),
                        )
                    elif isinstance(event, SessionInvalidated):
                        verdict = protocol.connection_lost(None)
                        if event.resumable:
                            description = "the session was invalidated (op 9, resumable)"
                            return _Outcome(CloseVerdict(verdict.action, description), progressed())
                        description = "the session was invalidated (op 9, not resumable)"
                        return _Outcome(
                            CloseVerdict(CloseAction.IDENTIFY, description),
                            progressed(),
                            wait=random.uniform(1.0, 5.0),
                        )
                    elif isinstance(event, ZombieConnection):
                        self._log.warning("no heartbeat ACK since the last heartbeat; reconnecting")
                        verdict = protocol.connection_lost(None)
                        description = "zombie connection (heartbeat not acknowledged)"
                        return _Outcome(CloseVerdict(verdict.action, description), progressed())
        except trio_websocket.ConnectionClosed as exc:
            code = exc.reason.code if exc.reason is not None else None
            return _Outcome(protocol.connection_lost(code), progressed())


def _check_size(payload: dict[str, Any]) -> None:
    if len(json.dumps(payload, separators=(",", ":")).encode()) > MAX_SEND_SIZE:
        raise UsageError(f"a gateway payload must not exceed {MAX_SEND_SIZE} bytes")


def _collapse(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """One exception out of a nursery's group, when that is all it holds."""
    leaves = list(_leaves(group))
    if len(leaves) == 1:
        return leaves[0]
    if leaves and all(isinstance(leaf, trio.Cancelled) for leaf in leaves):
        return leaves[0]
    return group


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    result: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            result.extend(_leaves(exc))
        else:
            result.append(exc)
    return result


def _check_shard_numbers(shard_id: int, shard_count: int) -> None:
    for name, value in (("shard_id", shard_id), ("shard_count", shard_count)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise UsageError(f"{name} must be an integer")
    if shard_count < 1:
        raise UsageError("shard_count must be at least 1")
    if not 0 <= shard_id < shard_count:
        raise UsageError("shard_id must be at least 0 and below shard_count")


@asynccontextmanager
async def open_shard(
    token: str,
    *,
    intents: Intents | int,
    shard_id: int = 0,
    shard_count: int = 1,
    gateway_url: str = DEFAULT_GATEWAY_URL,
    ssl_context: ssl.SSLContext | None = None,
    identify_limiter: IdentifyLimiter | None = None,
    buffer_size: int = DEFAULT_BUFFER_SIZE,
    connect_timeout: float = 10.0,
) -> AsyncIterator[Shard]:
    """Connect one shard and yield it once READY arrived.

    ``ssl_context`` verifies ``wss://`` (default: ``ssl.create_default_context()``); pass one
    trusting a test CA for a local simulator. Shards of one bot started together should share one
    ``identify_limiter`` built with the bot's ``max_concurrency``. ``buffer_size`` is each
    subscription's default buffer. See the module docstring for what is raised, and when.

    ``connect_timeout`` bounds each connection attempt, and the wait for the first READY:
    a gateway that cannot be reached (or drops every connection before READY) raises
    :class:`GatewayUnreachable` after it, with the last failure. Once ready, network failures
    are retried with backoff for as long as the block lasts.
    """
    if not isinstance(token, str) or not token.strip() or any(c.isspace() for c in token):
        raise UsageError("token must be a non-empty string without whitespace")
    if isinstance(intents, bool) or not isinstance(intents, int) or intents < 0:
        raise UsageError("intents must be an Intents value (a non-negative integer)")
    _check_shard_numbers(shard_id, shard_count)
    build_gateway_url(gateway_url)  # validates: UsageError for anything but ws:// or wss://
    if ssl_context is not None and not isinstance(ssl_context, ssl.SSLContext):
        raise UsageError("ssl_context must be an ssl.SSLContext")
    if (
        isinstance(connect_timeout, bool)
        or not isinstance(connect_timeout, int | float)
        or not connect_timeout > 0
    ):
        raise UsageError("connect_timeout must be a positive number of seconds")
    shard = Shard(
        token,
        intents=Intents(intents),
        shard_id=shard_id,
        shard_count=shard_count,
        gateway_url=gateway_url,
        ssl_context=ssl_context,
        identify_limiter=identify_limiter if identify_limiter is not None else IdentifyLimiter(),
        buffer_size=buffer_size,
        connect_timeout=connect_timeout,
    )
    failure: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            shard._nursery = nursery
            nursery.start_soon(shard._run)
            nursery.start_soon(shard._send_voice_states)
            await shard._settled.wait()
            if not shard._stopped:
                try:
                    yield shard
                finally:
                    with trio.CancelScope(shield=True):
                        with trio.move_on_after(LEAVE_FLUSH_TIMEOUT) as flushing:
                            await shard._flush_leaves()
                        if flushing.cancelled_caught:
                            shard._log.warning(
                                "closing with %d voice leave(s) unsent after %g s",
                                shard.voice_leaves_queued,
                                LEAVE_FLUSH_TIMEOUT,
                            )
                        with trio.move_on_after(CLOSE_GRACE):
                            await shard._close_gracefully()
                    nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        failure = _collapse(group)
        if failure is group:
            raise
    if failure is not None:
        raise failure
    if shard._failure is not None:
        raise shard._failure
    if not shard._closing:
        raise ShardClosed("the shard stopped before it was ready")
