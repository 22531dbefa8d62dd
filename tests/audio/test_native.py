"""Native library detection: lazy, cached, and helpful when something is missing.

Real pyogg decides availability once per process, at import, so the end-to-end "library missing"
checks run in fresh interpreters with ``ctypes.util.find_library`` patched before anything is
imported. The in-process tests swap ``_native._import_pyogg`` for fakes to cover the mapping from
each pyogg failure mode to the right error.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from discore_voice import _native
from discore_voice._errors import NativeLibraryMissing

REPO_ROOT = Path(__file__).resolve().parents[2]
DEBIAN_COMMAND = "sudo apt-get install -y libopus0 libopusfile0 libogg0"


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    _native._reset_for_tests()
    yield
    # monkeypatch undoes its patches after this fixture's teardown has been scheduled, so the
    # next load (in any test) imports the real pyogg again.
    _native._reset_for_tests()


def _real_pyogg() -> ModuleType:
    import pyogg

    assert isinstance(pyogg, ModuleType)
    return pyogg


def _fake_pyogg(*, opus: bool = True, opusfile: bool = True, opusenc: bool = True) -> ModuleType:
    """A stand-in shaped like pyogg 0.6.14a1 after an import that found some libraries."""
    real = _real_pyogg()
    fake = ModuleType("pyogg")
    fake_opus = ModuleType("pyogg.opus")
    fake_opus.PYOGG_OPUS_AVAIL = opus  # type: ignore[attr-defined]
    fake_opus.PYOGG_OPUS_FILE_AVAIL = opusfile  # type: ignore[attr-defined]
    fake_opus.PYOGG_OPUS_ENC_AVAIL = opusenc  # type: ignore[attr-defined]
    if opus:
        fake_opus.libopus = real.opus.libopus  # type: ignore[attr-defined]
    fake.opus = fake_opus  # type: ignore[attr-defined]
    fake.PYOGG_OGG_AVAIL = True  # type: ignore[attr-defined]
    return fake


def test_loads_real_libopus() -> None:
    lib = _native.load_opus()
    assert lib.version.startswith("libopus ")
    assert lib.pyogg is _real_pyogg()
    assert _native.load_opus() is lib, "the facade is cached"


def test_status_of_a_working_install() -> None:
    status = _native.native_status()
    assert status.available
    assert status.version is not None and status.version.startswith("libopus ")
    assert status.missing_library is None and status.install_command is None


def test_pyogg_is_imported_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[None] = []

    def importer() -> ModuleType:
        calls.append(None)
        return _fake_pyogg()

    monkeypatch.setattr(_native, "_import_pyogg", importer)
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        _native.load_opus()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _native.native_status()
    assert len(calls) == 1


@pytest.mark.parametrize(
    ("flags", "library"),
    [
        ({"opus": False}, "libopus"),
        ({"opus": False, "opusfile": False}, "libopus"),
        ({"opusfile": False}, "libopusfile"),
    ],
)
def test_missing_library_is_named_with_its_install_command(
    monkeypatch: pytest.MonkeyPatch, flags: dict[str, bool], library: str
) -> None:
    monkeypatch.setattr(_native, "_import_pyogg", lambda: _fake_pyogg(**flags))
    with pytest.raises(NativeLibraryMissing) as info:
        _native.load_opus()
    assert info.value.library == library
    assert info.value.install_command == _native.install_command()
    assert library in str(info.value)
    assert _native.install_command() in str(info.value)


def test_failure_is_cached_but_raised_fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[None] = []

    def importer() -> ModuleType:
        calls.append(None)
        return _fake_pyogg(opus=False)

    monkeypatch.setattr(_native, "_import_pyogg", importer)
    errors = []
    for _ in range(3):
        with pytest.raises(NativeLibraryMissing) as info:
            _native.load_opus()
        errors.append(info.value)
    assert len(calls) == 1
    assert len({id(e) for e in errors}) == 3, "re-raising one instance would grow its traceback"


def test_import_failure_without_libogg(monkeypatch: pytest.MonkeyPatch) -> None:
    # What pyogg 0.6.14a1 really does without libogg: pyogg.ogg imports with the flag off, then
    # pyogg.opus dies on a ctypes alias pyogg.ogg never defined.
    ogg = ModuleType("pyogg.ogg")
    ogg.PYOGG_OGG_AVAIL = False  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pyogg.ogg", ogg)

    def importer() -> ModuleType:
        raise NameError("name 'c_int_p' is not defined")

    monkeypatch.setattr(_native, "_import_pyogg", importer)
    with pytest.raises(NativeLibraryMissing) as info:
        _native.load_opus()
    assert info.value.library == "libogg"
    assert isinstance(info.value.__cause__, NameError)
    status = _native.native_status()
    assert not status.available
    assert status.missing_library == "libogg"
    assert status.reason is not None


def test_unexplained_import_failure_names_the_unfindable_library(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delitem(sys.modules, "pyogg.ogg", raising=False)
    real_find = ctypes.util.find_library
    monkeypatch.setattr(
        ctypes.util, "find_library", lambda name: None if name == "opusfile" else real_find(name)
    )

    def importer() -> ModuleType:
        raise OSError("something odd")

    monkeypatch.setattr(_native, "_import_pyogg", importer)
    with pytest.raises(NativeLibraryMissing) as info:
        _native.load_opus()
    assert info.value.library == "libopusfile"


def test_pyogg_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    def importer() -> ModuleType:
        raise ModuleNotFoundError("No module named 'pyogg'", name="pyogg")

    monkeypatch.setattr(_native, "_import_pyogg", importer)
    with pytest.raises(NativeLibraryMissing) as info:
        _native.load_opus()
    assert "pyogg" in info.value.library
    assert "pip install" in info.value.install_command


def test_status_never_raises_when_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_native, "_import_pyogg", lambda: _fake_pyogg(opus=False))
    status = _native.native_status()
    assert not status.available
    assert status.missing_library == "libopus"
    assert status.install_command == _native.install_command()
    assert status.version is None


def test_require_opusenc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_native, "_import_pyogg", lambda: _fake_pyogg(opusenc=False))
    assert _native.load_opus().opusenc_available is False
    with pytest.raises(NativeLibraryMissing) as info:
        _native.require_opusenc()
    assert info.value.library == "libopusenc"
    assert info.value.install_command == _native.install_command(opusenc=True)


def test_path_mutation_is_undone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/usr/bin:/bin")

    def importer() -> ModuleType:
        os.environ["PATH"] += ";/somewhere;/else"
        return _fake_pyogg()

    monkeypatch.setattr(_native, "_import_pyogg", importer)
    _native.load_opus()
    assert os.environ["PATH"] == "/usr/bin:/bin"


def test_missing_path_is_supplied_then_removed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PATH", raising=False)
    seen: list[str | None] = []

    def importer() -> ModuleType:
        seen.append(os.environ.get("PATH"))
        os.environ["PATH"] += ";/pyogg"
        return _fake_pyogg()

    monkeypatch.setattr(_native, "_import_pyogg", importer)
    _native.load_opus()
    assert seen == [os.defpath]
    assert "PATH" not in os.environ


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="distribution detection")
@pytest.mark.parametrize(
    ("ids", "command"),
    [
        (["debian"], DEBIAN_COMMAND),
        (["ubuntu", "debian"], DEBIAN_COMMAND),
        (["linuxmint", "ubuntu"], DEBIAN_COMMAND),
        (["fedora"], "sudo dnf install -y opus opusfile libogg"),
        (["arch"], "sudo pacman -S --needed opus opusfile libogg"),
        ([], DEBIAN_COMMAND),
    ],
)
def test_install_command_matches_the_distribution(
    monkeypatch: pytest.MonkeyPatch, ids: list[str], command: str
) -> None:
    monkeypatch.setattr(_native, "_os_release_ids", lambda: ids)
    assert _native.install_command() == command


def test_os_release_parsing(tmp_path: Path) -> None:
    release = tmp_path / "os-release"
    release.write_text('NAME="Ubuntu"\nID=ubuntu\nID_LIKE="debian foo"\n', encoding="utf-8")
    assert _native._os_release_ids(str(release)) == ["ubuntu", "debian", "foo"]
    assert _native._os_release_ids(str(tmp_path / "absent")) == []


# ---------------------------------------------------------------------------------------------
# The real thing, in fresh interpreters.

_PROBE = textwrap.dedent(
    """
    import ctypes.util, json, os, sys

    hidden = set(sys.argv[1:])
    real_find = ctypes.util.find_library

    def find_library(name):
        return None if name.removeprefix("lib") in hidden else real_find(name)

    ctypes.util.find_library = find_library
    path_before = os.environ.get("PATH")

    import discore_voice
    from discore_voice._native import load_opus, native_status
    from discore_voice._audio.opus import OpusEncoder
    from discore_voice._errors import NativeLibraryMissing

    out = {"pyogg_imported_by_package": "pyogg" in sys.modules}
    status = native_status()
    out["available"] = status.available
    out["missing"] = status.missing_library
    try:
        load_opus()
    except NativeLibraryMissing as exc:
        out["load"] = {"library": exc.library, "command": exc.install_command, "msg": str(exc)}
    try:
        OpusEncoder()
    except NativeLibraryMissing as exc:
        out["encoder"] = exc.library
    else:
        out["encoder"] = None
    out["path_restored"] = os.environ.get("PATH") == path_before
    print(json.dumps(out))
    """
)


def _probe(*hidden: str) -> dict[str, object]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", _PROBE, *hidden],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    # pyogg prints tracebacks from its bare excepts; none may show up.
    assert proc.stderr == "", proc.stderr
    result = json.loads(proc.stdout)
    assert isinstance(result, dict)
    return result


@pytest.mark.parametrize(
    ("hidden", "library"),
    [("opus", "libopus"), ("opusfile", "libopusfile"), ("ogg", "libogg")],
)
def test_really_missing_library_in_a_fresh_interpreter(hidden: str, library: str) -> None:
    result = _probe(hidden)
    assert result["pyogg_imported_by_package"] is False, "import discore_voice must stay lazy"
    assert result["available"] is False
    assert result["missing"] == library
    load = result["load"]
    assert isinstance(load, dict)
    assert load["library"] == library
    assert load["command"] == _native.install_command()
    assert library in load["msg"] and _native.install_command() in load["msg"]
    assert result["encoder"] == library
    assert result["path_restored"] is True


def test_working_install_in_a_fresh_interpreter() -> None:
    result = _probe()
    assert result["pyogg_imported_by_package"] is False
    assert result["available"] is True
    assert "load" not in result
    assert result["encoder"] is None
    assert result["path_restored"] is True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Debian host")
def test_debian_message_names_the_packages() -> None:
    if "debian" not in _native._os_release_ids():
        pytest.skip("not a Debian-family host")
    load = _probe("opus")["load"]
    assert isinstance(load, dict)
    assert load["msg"] == (
        f"the native library libopus is not installed; install it with: {DEBIAN_COMMAND}"
    )
