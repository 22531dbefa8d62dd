from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from discore_voice import ProtocolError
from discore_voice._core.gateway.voice import (
    build_voice_state_update,
    parse_voice_server_update,
    parse_voice_state_update,
)

ids = st.integers(min_value=1, max_value=2**64 - 1)


@given(ids, st.none() | ids, st.booleans(), st.booleans())
def test_op4_has_string_ids_and_null_channel(
    guild_id: int, channel_id: int | None, mute: bool, deaf: bool
) -> None:
    payload = json.loads(
        json.dumps(build_voice_state_update(guild_id, channel_id, self_mute=mute, self_deaf=deaf))
    )
    assert payload["op"] == 4
    assert payload["d"] == {
        "guild_id": str(guild_id),
        "channel_id": None if channel_id is None else str(channel_id),
        "self_mute": mute,
        "self_deaf": deaf,
    }


@given(ids, st.none() | ids, ids, st.text(min_size=1), st.booleans(), st.booleans())
def test_voice_state_update_parses(
    guild_id: int, channel_id: int | None, user_id: int, session: str, mute: bool, deaf: bool
) -> None:
    update = parse_voice_state_update(
        {
            "guild_id": str(guild_id),
            "channel_id": None if channel_id is None else str(channel_id),
            "user_id": str(user_id),
            "session_id": session,
            "self_mute": mute,
            "self_deaf": deaf,
            "member": {"user": {"id": str(user_id)}},
        }
    )
    assert (update.guild_id, update.channel_id, update.user_id) == (guild_id, channel_id, user_id)
    assert (update.session_id, update.self_mute, update.self_deaf) == (session, mute, deaf)


def test_voice_server_update_with_null_or_empty_endpoint_means_no_server() -> None:
    for endpoint in (None, ""):
        update = parse_voice_server_update({"token": "t", "guild_id": "42", "endpoint": endpoint})
        assert update.endpoint is None
    update = parse_voice_server_update({"token": "t", "guild_id": "42", "endpoint": "h:443"})
    assert update.endpoint == "h:443"
    assert update.guild_id == 42


def test_reprs_hide_token_and_session_id() -> None:
    server = parse_voice_server_update({"token": "TOKEN123", "guild_id": "1", "endpoint": "e"})
    state = parse_voice_state_update({"user_id": "1", "session_id": "SESSION456"})
    assert "TOKEN123" not in repr(server)
    assert "SESSION456" not in repr(state)


@pytest.mark.parametrize(
    "data",
    [
        None,
        [],
        {"guild_id": "1", "endpoint": "e"},
        {"token": 5, "guild_id": "1", "endpoint": "e"},
        {"token": "t", "guild_id": "abc", "endpoint": "e"},
        {"token": "t", "guild_id": "1", "endpoint": 443},
    ],
)
def test_malformed_voice_server_update(data: object) -> None:
    with pytest.raises(ProtocolError):
        parse_voice_server_update(data)


@given(
    st.dictionaries(
        st.sampled_from(
            ["guild_id", "channel_id", "user_id", "session_id", "self_mute", "token", "endpoint"]
        ),
        st.none() | st.booleans() | st.integers() | st.text(),
    )
)
def test_fuzzed_dispatches_raise_only_protocol_error(data: dict[str, object]) -> None:
    for parse in (parse_voice_state_update, parse_voice_server_update):
        with contextlib.suppress(ProtocolError):
            parse(data)
