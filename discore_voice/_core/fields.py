"""Typed, checked access to JSON objects received from a peer.

Every payload parser reads its fields through :class:`Fields`, so a missing key or a wrong type
becomes one :class:`ProtocolError` that names the payload and the field, never a bare ``KeyError``
or ``TypeError``. Values are described by type only: payloads may carry tokens and keys, which must
never reach an exception message.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, TypeVar

from .._errors import ProtocolError
from .snowflake import Snowflake, parse_snowflake

__all__ = ["Fields", "decode_json_object"]

_T = TypeVar("_T")


def decode_json_object(data: str | bytes, *, what: str) -> dict[str, Any]:
    """Decode a JSON text that must be an object."""
    try:
        value = json.loads(data)
    except (ValueError, RecursionError) as exc:
        # json.JSONDecodeError and UnicodeDecodeError are both ValueErrors.
        raise ProtocolError(f"{what} is not valid JSON") from exc
    if not isinstance(value, dict):
        raise ProtocolError(f"{what} must be a JSON object, got {_json_type(value)}")
    return value


class Fields:
    """A read-only view of one JSON object, named for error messages."""

    __slots__ = ("_data", "_what")

    def __init__(self, data: object, what: str) -> None:
        if not isinstance(data, Mapping):
            raise ProtocolError(f"{what} must be a JSON object, got {_json_type(data)}")
        self._data: Mapping[str, object] = data
        self._what = what

    def __contains__(self, key: str) -> bool:
        return key in self._data

    def _get(self, key: str) -> object:
        try:
            return self._data[key]
        except KeyError:
            raise ProtocolError(f"{self._what}: field {key!r} is missing") from None

    def _typed(self, key: str, kind: type[_T], label: str) -> _T:
        value = self._get(key)
        # bool is an int subclass, but a JSON true is never a count or an id.
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise self._wrong(key, label, value)
        return value

    def _wrong(self, key: str, label: str, value: object) -> ProtocolError:
        got = _json_type(value)
        return ProtocolError(f"{self._what}: field {key!r} must be {label}, got {got}")

    def integer(self, key: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
        value: int = self._typed(key, int, "an integer")
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise ProtocolError(
                f"{self._what}: field {key!r} is out of range [{minimum}, {maximum}]"
            )
        return value

    def optional_int(self, key: str, *, default: int | None = None) -> int | None:
        value = self._data.get(key)
        if value is None:
            return default
        return self.integer(key)

    def number(self, key: str) -> float:
        value = self._get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._wrong(key, "a number", value)
        return float(value)

    def string(self, key: str) -> str:
        value: str = self._typed(key, str, "a string")
        return value

    def optional_str(self, key: str) -> str | None:
        value = self._data.get(key)
        if value is None:
            return None
        return self.string(key)

    def boolean(self, key: str, *, default: bool | None = None) -> bool:
        if default is not None and self._data.get(key) is None:
            return default
        value: bool = self._typed(key, bool, "a boolean")
        return value

    def mapping(self, key: str) -> Fields:
        return Fields(self._get(key), f"{self._what}.{key}")

    def array(self, key: str) -> list[object]:
        value: list[object] = self._typed(key, list, "an array")
        return value

    def str_list(self, key: str) -> list[str]:
        items = self.array(key)
        if not all(isinstance(item, str) for item in items):
            raise ProtocolError(f"{self._what}: field {key!r} must be an array of strings")
        return [item for item in items if isinstance(item, str)]

    def int_list(self, key: str) -> list[int]:
        items = self.array(key)
        result = [item for item in items if isinstance(item, int) and not isinstance(item, bool)]
        if len(result) != len(items):
            raise ProtocolError(f"{self._what}: field {key!r} must be an array of integers")
        return result

    def snowflake(self, key: str) -> Snowflake:
        return parse_snowflake(self._get(key), what=f"{self._what}: field {key!r}")

    def optional_snowflake(self, key: str) -> Snowflake | None:
        value = self._data.get(key)
        if value is None:
            return None
        return parse_snowflake(value, what=f"{self._what}: field {key!r}")

    def snowflake_list(self, key: str) -> list[Snowflake]:
        return [
            parse_snowflake(item, what=f"{self._what}: an item of {key!r}")
            for item in self.array(key)
        ]


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
