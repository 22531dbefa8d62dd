"""One definition of "leaving the block closes it", shared by every closable object.

Subscriptions, event streams, bridges and codecs all own something that must be released
deterministically; each supports ``with`` and ``async with`` by calling its ``close()``.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

__all__ = ["ClosesOnExit"]


class ClosesOnExit:
    """Mixin: ``with`` and ``async with`` call :meth:`close` when the block ends, however."""

    __slots__ = ()

    def close(self) -> None:
        """Release what the object holds; idempotent."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
