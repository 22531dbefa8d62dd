"""Argument checks shared by the public API: one wording for one mistake, wherever it is made.

Every check raises :class:`UsageError` naming the argument, and returns the value it checked.
"""

from __future__ import annotations

from ._errors import UsageError

__all__ = ["check_bool", "check_int"]


def check_int(name: str, value: object, low: int, high: int) -> int:
    """An int in ``[low, high]``; ``True`` is refused (``bitrate=True`` is always a mistake)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise UsageError(f"{name} must be an int, got {type(value).__name__}")
    if not low <= value <= high:
        raise UsageError(f"{name} must be between {low} and {high}, got {value}")
    return value


def check_bool(name: str, value: object) -> bool:
    """A real bool: ``self_mute=1`` is refused rather than guessed at."""
    if not isinstance(value, bool):
        raise UsageError(f"{name} must be a bool, got {type(value).__name__}")
    return value
