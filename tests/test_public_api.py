from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import discore_voice

CORE = Path(discore_voice.__file__).parent / "_core"
IO_MODULES = {
    "trio",
    "trio_websocket",
    "socket",
    "ssl",
    "asyncio",
    "threading",
    "selectors",
    "time",
}


def test_every_public_name_is_exported_and_documented() -> None:
    for name in discore_voice.__all__:
        obj = getattr(discore_voice, name)
        if isinstance(obj, type) or callable(obj):
            assert obj.__doc__, f"{name} has no docstring"


def test_every_public_member_of_a_public_class_is_documented() -> None:
    missing = []
    for name in discore_voice.__all__:
        cls = getattr(discore_voice, name)
        if not isinstance(cls, type) or issubclass(cls, BaseException):
            continue
        for attribute, value in vars(cls).items():
            if attribute.startswith("_"):
                continue
            target = value.fget if isinstance(value, property) else value
            if isinstance(value, staticmethod | classmethod):
                target = value.__func__
            if (callable(target) or isinstance(value, property)) and not target.__doc__:
                missing.append(f"{name}.{attribute}")
    assert not missing, f"undocumented: {missing}"


def test_error_hierarchy_has_one_root() -> None:
    for name in discore_voice.__all__:
        obj = getattr(discore_voice, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, discore_voice.DiscoreVoiceError), name


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, relative imports resolved to absolute names."""
    package = ["discore_voice", *path.relative_to(CORE.parent).parent.parts]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                found.add(".".join([*base, *([node.module] if node.module else [])]))
            else:
                found.add(node.module or "")
    return found


def test_the_core_is_sans_io() -> None:
    """No module of the core imports an I/O or clock module, or reaches up into the shell."""
    modules = sorted(CORE.rglob("*.py"))
    assert len(modules) > 10
    for path in modules:
        for name in _imports(path):
            assert name.split(".")[0] not in IO_MODULES, f"{path}: {name}"
            for above in ("_shell", "testing", "_cli"):
                assert not name.startswith(f"discore_voice.{above}"), f"{path}: {name}"


def test_import_does_not_load_native_audio_libraries() -> None:
    code = "import sys, discore_voice; print('pyogg' in sys.modules, 'davey' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["False", "False"]


def test_public_objects_present_as_the_package_and_nothing_is_logged_by_default() -> None:
    import logging

    import discore_voice.testing

    for package in (discore_voice, discore_voice.testing):
        for name in package.__all__:
            obj = getattr(package, name)
            defined_here = getattr(obj, "__module__", "").startswith("discore_voice")
            if (isinstance(obj, type) or callable(obj)) and defined_here:
                assert obj.__module__ == package.__name__, name
    assert "discore_voice._" not in repr(discore_voice.VoiceConnection)
    assert any(
        isinstance(handler, logging.NullHandler)
        for handler in logging.getLogger("discore_voice").handlers
    )
