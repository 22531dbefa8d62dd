from __future__ import annotations

import subprocess
import sys

import discore_voice


def test_every_public_name_is_exported_and_documented() -> None:
    for name in discore_voice.__all__:
        obj = getattr(discore_voice, name)
        if callable(obj) and not isinstance(obj, int):
            assert obj.__doc__, f"{name} has no docstring"


def test_error_hierarchy_has_one_root() -> None:
    for name in discore_voice.__all__:
        obj = getattr(discore_voice, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, discore_voice.DiscoreVoiceError), name


def test_core_imports_neither_trio_nor_sockets() -> None:
    """The sans-IO promise, checked: importing every core module pulls in no I/O library."""
    code = (
        "import sys, pkgutil, importlib, discore_voice._core as core\n"
        "for m in pkgutil.iter_modules(core.__path__):\n"
        "    importlib.import_module('discore_voice._core.' + m.name)\n"
        "bad = [n for n in ('trio', 'trio_websocket', 'socket', 'ssl', 'asyncio', 'threading')\n"
        "       if n in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "", f"the sans-IO core imported {out}"
