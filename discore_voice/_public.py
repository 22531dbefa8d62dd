"""Present the public API as what it is: ``discore_voice.Connected``, not its private module.

The public names are defined in private modules and re-exported from the package, so by default
their reprs, tracebacks and docs would say ``discore_voice._core.voice.events.Connected``: a
private path users must not import from. As trio does, each exported class and function is
given the package as its ``__module__`` (classes' methods too, for their reprs and docs).
Pickling still finds them: the package exports every one under the same name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["present_as"]


def present_as(package: str, namespace: Mapping[str, Any], names: Iterable[str]) -> None:
    """Set ``__module__`` to ``package`` on the exported objects defined under it privately."""
    private = package + "._"
    seen: set[int] = set()

    def fix(obj: Any) -> None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        module = getattr(obj, "__module__", None)
        if not isinstance(module, str) or not module.startswith(private):
            return
        try:
            obj.__module__ = package
        except (AttributeError, TypeError):  # a slot wrapper or another read-only object
            return
        if isinstance(obj, type):
            for member in vars(obj).values():
                target = getattr(member, "fget", None) or getattr(member, "__func__", member)
                if callable(target):
                    fix(target)

    for name in names:
        fix(namespace[name])
