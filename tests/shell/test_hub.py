"""The hub: guild routing for dispatches, drops counted per subscriber, and the end of a source."""

from __future__ import annotations

import logging

import pytest
import trio

from discore_voice._core.gateway.intents import Intents
from discore_voice._core.gateway.voice import VOICE_SERVER_UPDATE, VOICE_STATE_UPDATE
from discore_voice._core.voice.events import MemberConnected
from discore_voice._errors import UsageError
from discore_voice._shell import dispatches
from discore_voice._shell.dispatches import Dispatch
from discore_voice._shell.hub import Hub, Subscription
from discore_voice._shell.shard.connection import open_shard
from discore_voice.testing import LocalDiscord

from .conftest import WAIT

GUILD_A = 81384788765712384
GUILD_B = 41771983423143937


def drain(subscription: Subscription[Dispatch]) -> list[tuple[str, object]]:
    events = []
    while True:
        try:
            events.append(subscription.receive_nowait())
        except trio.WouldBlock:
            return events


class DispatchHub:
    """The shard's use of a hub, as the shard and the forwarded bridge make it."""

    def __init__(self) -> None:
        self.hub: Hub[Dispatch] = Hub(logging.getLogger("test"), 16, what="a dispatch")

    def subscribe(
        self, names: tuple[str, ...], *, guild_id: int | str | None = None
    ) -> Subscription[Dispatch]:
        return dispatches.subscribe(self.hub, names, guild_id=guild_id)

    def publish(self, name: str, data: object) -> None:
        dispatches.publish(self.hub, name, data)

    def close(self) -> None:
        self.hub.close()

    def __len__(self) -> int:
        return len(self.hub)


def hub() -> DispatchHub:
    return DispatchHub()


def test_guild_subscriptions_get_their_guild_only_and_in_order() -> None:
    events = hub()
    everything = events.subscribe(())
    guild_a = events.subscribe((VOICE_STATE_UPDATE,), guild_id=GUILD_A)
    guild_b = events.subscribe((), guild_id=str(GUILD_B))
    published = [
        (VOICE_STATE_UPDATE, {"guild_id": str(GUILD_A), "n": 1}),
        (VOICE_SERVER_UPDATE, {"guild_id": str(GUILD_A), "n": 2}),
        (VOICE_STATE_UPDATE, {"guild_id": str(GUILD_B), "n": 3}),
        (VOICE_STATE_UPDATE, {"guild_id": str(GUILD_A), "n": 4}),
        ("MESSAGE_CREATE", {"n": 5}),  # no guild: a DM
        (VOICE_STATE_UPDATE, {"guild_id": "not a number", "n": 6}),
        (VOICE_STATE_UPDATE, {"guild_id": "\u00b2", "n": 8}),  # a digit to isdigit, not to int
        (VOICE_STATE_UPDATE, ["not", "a", "dict"]),
    ]
    for name, data in published:
        events.publish(name, data)
    assert drain(everything) == published
    assert [data["n"] for _, data in drain(guild_a)] == [1, 4]  # type: ignore[index]
    assert [data["n"] for _, data in drain(guild_b)] == [3]  # type: ignore[index]
    assert guild_a.guild_id == GUILD_A and "guild=" in repr(guild_a)


def test_closed_guild_subscriptions_leave_the_routing() -> None:
    events = hub()
    first = events.subscribe((), guild_id=GUILD_A)
    second = events.subscribe((), guild_id=GUILD_A)
    assert len(events) == 2
    first.close()
    assert first.closed and not second.closed and len(events) == 1
    events.publish(VOICE_STATE_UPDATE, {"guild_id": str(GUILD_A)})
    assert len(drain(second)) == 1
    second.close()
    events.publish(VOICE_STATE_UPDATE, {"guild_id": str(GUILD_A)})
    assert len(events) == 0 and not events.hub.routes_by_guild
    events.close()
    late = events.subscribe((), guild_id=GUILD_A)
    assert late.closed


@pytest.mark.parametrize("guild_id", [0, -1, "12a", True, 1.5])
def test_a_bad_guild_id_is_a_usage_error(guild_id: object) -> None:
    with pytest.raises(UsageError, match="guild_id"):
        hub().subscribe((), guild_id=guild_id)  # type: ignore[arg-type]


async def test_a_shard_routes_voice_events_by_guild(discord: LocalDiscord) -> None:
    mine, other = discord.add_guild(name="mine"), discord.add_guild(name="other")
    mine_voice, other_voice = mine.add_voice_channel(), other.add_voice_channel()
    with trio.fail_after(WAIT):
        async with open_shard(
            discord.bot.token, intents=Intents.VOICE_DEFAULT, gateway_url=discord.gateway_url
        ) as shard:
            with (
                shard.subscribe(VOICE_STATE_UPDATE, VOICE_SERVER_UPDATE) as everything,
                shard.subscribe(
                    VOICE_STATE_UPDATE, VOICE_SERVER_UPDATE, guild_id=mine.id
                ) as mine_only,
            ):
                await shard.update_voice_state(other.id, other_voice.id)
                await shard.update_voice_state(mine.id, mine_voice.id)
                seen = [await everything.receive() for _ in range(4)]
                # Everything published so far has been offered: the guild subscription has
                # exactly its guild's two events.
                got = drain(mine_only)
    assert {int(data["guild_id"]) for _, data in seen} == {mine.id, other.id}
    assert sorted(name for name, _ in got) == [VOICE_SERVER_UPDATE, VOICE_STATE_UPDATE]
    assert {int(data["guild_id"]) for _, data in got} == {mine.id}  # type: ignore[index]


def test_a_full_subscriber_loses_its_own_items_only_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events: Hub[MemberConnected] = Hub(logging.getLogger("test.hub"), 4, what="a voice event")
    slow = events.subscribe(2)
    fast = events.subscribe()
    for user in range(1, 6):
        events.publish(MemberConnected(user))
    assert slow.dropped == 3 and fast.dropped == 1
    assert [slow.receive_nowait().user_id for _ in range(2)] == [1, 2]
    # The first drop and each power of two are logged, not every one.
    drops = [r for r in caplog.records if "not keeping up" in r.getMessage()]
    assert [r.getMessage().rsplit("(", 1)[1] for r in drops] == [
        "1 dropped so far)",
        "2 dropped so far)",
        "1 dropped so far)",
    ]


async def test_closing_the_hub_ends_iteration_after_what_is_buffered() -> None:
    events: Hub[MemberConnected] = Hub(logging.getLogger("test"), 8)
    subscription = events.subscribe()
    events.publish(MemberConnected(7))
    events.close()
    assert [event.user_id async for event in subscription] == [7]
    late = events.subscribe()
    assert late.closed
    with pytest.raises(trio.EndOfChannel):
        late.receive_nowait()


def test_broadcast_reaches_every_guild_and_bad_sizes_are_refused() -> None:
    events = hub()
    a = events.subscribe(("GATEWAY_SESSION_LOST",), guild_id=GUILD_A)
    b = events.subscribe((), guild_id=GUILD_B)
    events.hub.broadcast(("GATEWAY_SESSION_LOST", {"reason": "x"}), name="GATEWAY_SESSION_LOST")
    assert len(drain(a)) == 1 and len(drain(b)) == 1
    for size in (0, -1, True, 1.5):
        with pytest.raises(UsageError, match="buffer_size"):
            events.hub.subscribe(size)  # type: ignore[arg-type]
