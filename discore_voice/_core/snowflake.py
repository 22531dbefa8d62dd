"""Discord ids: ints in Python, decimal strings on the wire.

Discord sends snowflakes as strings because JavaScript cannot hold 64-bit ints; we keep them as
ints so they compare, hash and shift (shard routing) naturally.
"""

from __future__ import annotations

from .._errors import ProtocolError, UsageError

__all__ = [
    "MAX_SNOWFLAKE",
    "Snowflake",
    "parse_snowflake",
    "snowflake_to_wire",
    "validate_snowflake",
]

Snowflake = int
MAX_SNOWFLAKE = (1 << 64) - 1


def _coerce(value: object) -> int | None:
    # bool is an int subclass; True is never a meaningful id.
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 20:
        number = int(value)
    else:
        return None
    return number if 0 < number <= MAX_SNOWFLAKE else None


def validate_snowflake(value: object, *, name: str) -> Snowflake:
    """Check a caller's id argument: a positive int, or a string of digits, below 2**64."""
    number = _coerce(value)
    if number is None:
        raise UsageError(
            f"{name} must be a Discord id (a positive integer below 2**64, or a string of digits), "
            f"got {type(value).__name__} {_describe(value)}"
        )
    return number


def parse_snowflake(value: object, *, what: str) -> Snowflake:
    """Parse an id received from a peer; malformed ids are the peer's protocol error."""
    number = _coerce(value)
    if number is None:
        raise ProtocolError(f"{what} is not a valid snowflake: {type(value).__name__}")
    return number


def snowflake_to_wire(value: Snowflake) -> str:
    """Discord expects ids as decimal strings in every JSON payload."""
    return str(value)


def _describe(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
