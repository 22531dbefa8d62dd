from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from discore_voice import ProtocolError
from discore_voice._core.fields import Fields, decode_json_object

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


def test_missing_field_names_payload_and_field() -> None:
    with pytest.raises(ProtocolError, match=r"READY: field 'ssrc' is missing"):
        Fields({}, "READY").integer("ssrc")


@pytest.mark.parametrize(
    ("value", "method"),
    [
        (True, "integer"),
        ("1", "integer"),
        (1.0, "integer"),
        (1, "string"),
        (1, "boolean"),
        ({}, "array"),
    ],
)
def test_wrong_types_are_rejected(value: object, method: str) -> None:
    with pytest.raises(ProtocolError, match=r"READY: field 'k' must be"):
        getattr(Fields({"k": value}, "READY"), method)("k")


def test_range_is_checked() -> None:
    with pytest.raises(ProtocolError, match="out of range"):
        Fields({"port": 70000}, "READY").integer("port", minimum=1, maximum=65535)


def test_messages_describe_types_not_values() -> None:
    secret = "super-secret-token-value"
    with pytest.raises(ProtocolError) as excinfo:
        Fields({"token": secret}, "VOICE_SERVER_UPDATE").integer("token")
    assert secret not in str(excinfo.value)


def test_nested_objects_name_their_path() -> None:
    with pytest.raises(ProtocolError, match=r"SELECT_PROTOCOL\.data: field 'port' is missing"):
        Fields({"data": {}}, "SELECT_PROTOCOL").mapping("data").integer("port")


def test_typed_lists() -> None:
    fields = Fields({"modes": ["a", "b"], "key": [1, 2], "ids": ["1", "2"], "bad": [1, "x"]}, "X")
    assert fields.str_list("modes") == ["a", "b"]
    assert fields.int_list("key") == [1, 2]
    assert fields.snowflake_list("ids") == [1, 2]
    with pytest.raises(ProtocolError):
        fields.str_list("bad")
    with pytest.raises(ProtocolError):
        fields.int_list("bad")


@given(st.binary())
def test_decode_json_object_rejects_garbage_with_protocol_error(data: bytes) -> None:
    try:
        value = decode_json_object(data, what="frame")
    except ProtocolError:
        return
    assert isinstance(value, dict)


@given(json_values)
def test_decode_json_object_accepts_only_objects(value: object) -> None:
    text = json.dumps(value)
    if isinstance(value, dict):
        assert decode_json_object(text, what="frame") == value
    else:
        with pytest.raises(ProtocolError, match="must be a JSON object"):
            decode_json_object(text, what="frame")


def test_deeply_nested_json_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        decode_json_object("[" * 100_000 + "]" * 100_000, what="frame")


@given(
    json_values, st.sampled_from(["integer", "string", "boolean", "array", "snowflake", "mapping"])
)
def test_any_field_access_raises_only_protocol_error(value: object, method: str) -> None:
    with contextlib.suppress(ProtocolError):
        getattr(Fields({"k": value}, "X"), method)("k")
