"""The shard's guild directory: what READY, GUILD_CREATE and CHANNEL_* say of a join's ids."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from discore_voice._core.gateway.guilds import ChannelVerdict, GuildDirectory

GUILD, OTHER = 100000000000000001, 100000000000000002
VOICE, STAGE, TEXT = 200000000000000001, 200000000000000002, 200000000000000003
ELSEWHERE = 200000000000000009


def channel(channel_id: int, kind: int, guild_id: int = GUILD) -> dict[str, Any]:
    return {"id": str(channel_id), "type": kind, "guild_id": str(guild_id)}


def directory() -> GuildDirectory:
    guilds = GuildDirectory()
    guilds.dispatch("READY", {"guilds": [{"id": str(GUILD), "unavailable": True}]})
    guilds.dispatch(
        "GUILD_CREATE",
        {"id": str(GUILD), "channels": [channel(VOICE, 2), channel(STAGE, 13), channel(TEXT, 0)]},
    )
    return guilds


def verdict(guilds: GuildDirectory, guild_id: int, channel_id: int) -> ChannelVerdict:
    return guilds.check(guild_id, channel_id).verdict


def test_voice_and_stage_channels_are_joinable_and_the_rest_refused_with_why() -> None:
    guilds = directory()
    assert verdict(guilds, GUILD, VOICE) is ChannelVerdict.VOICE
    assert verdict(guilds, GUILD, STAGE) is ChannelVerdict.VOICE
    text = guilds.check(GUILD, TEXT)
    assert text.verdict is ChannelVerdict.NOT_A_VOICE_CHANNEL
    assert text.detail == f"channel {TEXT} of guild {GUILD} is a text channel, not a voice channel"
    assert verdict(guilds, GUILD, ELSEWHERE) is ChannelVerdict.NO_SUCH_CHANNEL
    assert verdict(guilds, OTHER, VOICE) is ChannelVerdict.NOT_IN_GUILD


def test_swapped_ids_and_a_channel_of_another_guild_are_named() -> None:
    guilds = directory()
    guilds.dispatch("GUILD_CREATE", {"id": str(OTHER), "channels": [channel(ELSEWHERE, 2, OTHER)]})
    swapped = guilds.check(VOICE, GUILD)
    assert swapped.verdict is ChannelVerdict.NOT_IN_GUILD and "swapped" in swapped.detail
    foreign = guilds.check(GUILD, ELSEWHERE)
    assert foreign.verdict is ChannelVerdict.NO_SUCH_CHANNEL
    assert f"it is a channel of guild {OTHER}" in foreign.detail


def test_nothing_is_judged_before_ready_or_before_the_guilds_channels_are_listed() -> None:
    guilds = GuildDirectory()
    assert verdict(guilds, GUILD, TEXT) is ChannelVerdict.UNKNOWN
    guilds.dispatch("READY", {"guilds": [{"id": str(GUILD), "unavailable": True}]})
    assert verdict(guilds, GUILD, TEXT) is ChannelVerdict.UNKNOWN  # its GUILD_CREATE is to come
    assert verdict(guilds, OTHER, TEXT) is ChannelVerdict.NOT_IN_GUILD  # READY lists them all


def test_channel_and_guild_events_keep_it_current() -> None:
    guilds = directory()
    guilds.dispatch("CHANNEL_CREATE", channel(ELSEWHERE, 2))
    assert verdict(guilds, GUILD, ELSEWHERE) is ChannelVerdict.VOICE
    guilds.dispatch("CHANNEL_DELETE", channel(VOICE, 2))
    assert verdict(guilds, GUILD, VOICE) is ChannelVerdict.NO_SUCH_CHANNEL
    guilds.dispatch("GUILD_DELETE", {"id": str(GUILD), "unavailable": True})  # an outage
    assert verdict(guilds, GUILD, TEXT) is ChannelVerdict.UNKNOWN
    guilds.dispatch("GUILD_DELETE", {"id": str(GUILD)})  # removed from the guild
    assert verdict(guilds, GUILD, TEXT) is ChannelVerdict.NOT_IN_GUILD
    guilds.dispatch("GUILD_CREATE", {"id": str(GUILD), "channels": [channel(VOICE, 2)]})
    assert verdict(guilds, GUILD, VOICE) is ChannelVerdict.VOICE  # added back
    # A new session's READY says which guilds are left.
    guilds.dispatch("READY", {"guilds": []})
    assert verdict(guilds, GUILD, VOICE) is ChannelVerdict.NOT_IN_GUILD


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=25),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=12,
)
entries = st.fixed_dictionaries(
    {},
    optional={
        "id": st.sampled_from([str(GUILD), str(VOICE), "0", "-1", "x", str(1 << 70)]) | json_values,
        "type": st.integers(-3, 300) | json_values,
        "guild_id": st.sampled_from([str(GUILD), "nope"]) | json_values,
        "unavailable": st.booleans() | json_values,
        "channels": st.lists(
            json_values | st.builds(channel, st.integers(1, 9), st.integers(0, 20))
        ),
        "guilds": st.lists(json_values, max_size=4),
    },
)
names = st.sampled_from(
    ["READY", "GUILD_CREATE", "GUILD_DELETE", "CHANNEL_CREATE", "CHANNEL_UPDATE", "CHANNEL_DELETE"]
)


@given(st.lists(st.tuples(names, entries | json_values), max_size=12))
def test_malformed_dispatches_are_skipped_and_never_raise(
    dispatches: list[tuple[str, Any]],
) -> None:
    guilds = directory()
    for name, data in dispatches:
        guilds.dispatch(name, data)
    for guild_id, channel_id in ((GUILD, VOICE), (GUILD, TEXT), (OTHER, ELSEWHERE)):
        check = guilds.check(guild_id, channel_id)
        assert isinstance(check.verdict, ChannelVerdict)
        assert len(check.detail) < 300
