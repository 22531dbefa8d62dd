from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from discore_voice import ProtocolError, UsageError
from discore_voice._core.snowflake import (
    MAX_SNOWFLAKE,
    parse_snowflake,
    snowflake_to_wire,
    validate_snowflake,
)

valid_ids = st.integers(min_value=1, max_value=MAX_SNOWFLAKE)


@given(valid_ids)
def test_wire_round_trip(snowflake: int) -> None:
    wire = snowflake_to_wire(snowflake)
    assert isinstance(wire, str)
    assert parse_snowflake(wire, what="id") == snowflake
    assert validate_snowflake(wire, name="guild_id") == snowflake
    assert validate_snowflake(snowflake, name="guild_id") == snowflake


@pytest.mark.parametrize(
    "bad",
    [
        0,
        -1,
        MAX_SNOWFLAKE + 1,
        True,
        False,
        None,
        1.5,
        "",
        "12a",
        "-5",
        " 5",
        "١٢٣",
        [],
        {},
        "9" * 21,
    ],
)
def test_user_arguments_are_rejected_with_usage_error(bad: object) -> None:
    with pytest.raises(UsageError, match="guild_id must be a Discord id"):
        validate_snowflake(bad, name="guild_id")


@given(st.one_of(st.none(), st.booleans(), st.floats(), st.text(), st.integers(max_value=0)))
def test_wire_garbage_is_a_protocol_error(value: object) -> None:
    if isinstance(value, str) and value.isascii() and value.isdigit() and 0 < int(value) < 2**64:
        assert parse_snowflake(value, what="x") == int(value)
        return
    with pytest.raises(ProtocolError, match="not a valid snowflake"):
        parse_snowflake(value, what="x")
