"""Lazy detection of the native Opus libraries behind pyogg.

A bot that only relays pre-encoded Opus must run on a machine without libopus, so nothing here
runs at import time: the first audio feature that needs a codec calls :func:`load_opus`, which
imports pyogg once, caches the outcome (success or failure) and turns every way pyogg can fail
into a :class:`~discore_voice._errors.NativeLibraryMissing` that names the library and the command
that installs it.

pyogg 0.6.14a1 decides availability while it is being imported: it calls
``ctypes.util.find_library`` for ``ogg``, ``opus``, ``opusfile`` (and more) and records the result
in ``PYOGG_*_AVAIL`` flags. It only defines the libopus bindings when *both* libopus and
libopusfile were found, and the import itself dies with a ``NameError`` when libogg is missing.
It also appends to ``os.environ["PATH"]`` on every library it probes (and prints a traceback
instead of loading anything when ``PATH`` is unset), so the import runs with ``PATH`` guaranteed
present and restored afterwards.

We bind our own ctypes prototypes to pyogg's library handle instead of calling pyogg's Python
wrappers: that lets the encoder pass ``bytes`` straight to libopus (no copy, no extra Python
frame on the 20 ms hot path) and gives mypy real signatures.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Final, cast

from ._errors import NativeLibraryMissing

__all__ = [
    "NativeStatus",
    "OpusLib",
    "install_command",
    "load_opus",
    "native_status",
    "opus_load_attempted",
    "require_opusenc",
]

_DEBIAN_PACKAGES: Final = "libopus0 libopusfile0 libogg0"
_PIP_PYOGG: Final = "python -m pip install 'pyogg>=0.6.14a1'"

# Keyed by the ID / ID_LIKE words of /etc/os-release; the first match wins. Every command installs
# all three libraries because pyogg needs all three before it exposes any libopus binding.
_LINUX_COMMANDS: Final[tuple[tuple[str, str], ...]] = (
    ("debian", f"sudo apt-get install -y {_DEBIAN_PACKAGES}"),
    ("ubuntu", f"sudo apt-get install -y {_DEBIAN_PACKAGES}"),
    ("fedora", "sudo dnf install -y opus opusfile libogg"),
    ("rhel", "sudo dnf install -y opus opusfile libogg"),
    ("arch", "sudo pacman -S --needed opus opusfile libogg"),
    ("alpine", "sudo apk add opus opusfile libogg"),
    ("opensuse", "sudo zypper install -y libopus0 libopusfile0 libogg0"),
    ("suse", "sudo zypper install -y libopus0 libopusfile0 libogg0"),
)
_OPUSENC_COMMANDS: Final[dict[str, str]] = {
    "debian": "sudo apt-get install -y libopusenc0",
    "ubuntu": "sudo apt-get install -y libopusenc0",
    "fedora": "sudo dnf install -y libopusenc",
    "rhel": "sudo dnf install -y libopusenc",
    "arch": "sudo pacman -S --needed libopusenc",
    "alpine": "sudo apk add libopusenc",
}


def _os_release_ids(path: str = "/etc/os-release") -> list[str]:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return []
    ids: list[str] = []
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key in ("ID", "ID_LIKE"):
            ids.extend(value.strip().strip("\"'").lower().split())
    return ids


def install_command(*, opusenc: bool = False) -> str:
    """The command that fixes a missing library on this machine.

    Users copy it from the error message verbatim, so it must match their package manager;
    Debian/Ubuntu is the fallback because that is what most bot hosts run.
    """
    if sys.platform == "darwin":
        return "brew install libopusenc" if opusenc else "brew install opus opusfile libogg"
    if sys.platform == "win32":
        return "put opus.dll, opusfile.dll and ogg.dll (e.g. MSYS2's opusfile package) on PATH"
    ids = _os_release_ids()
    if opusenc:
        for word in ids:
            if word in _OPUSENC_COMMANDS:
                return _OPUSENC_COMMANDS[word]
        return _OPUSENC_COMMANDS["debian"]
    for word in ids:
        for distro, command in _LINUX_COMMANDS:
            if word == distro:
                return command
    return _LINUX_COMMANDS[0][1]


# ---------------------------------------------------------------------------------------------
# The typed facade.

_c_int_p = ctypes.POINTER(ctypes.c_int)


@dataclass(frozen=True, slots=True, eq=False)
class OpusLib:
    """Typed handles to the libopus functions the codec wrappers call.

    State pointers are plain ``int`` addresses (``c_void_p``); PCM and packet buffers are
    ``bytes`` in and ``ctypes`` char arrays out. The CTL functions are variadic in C, so their
    prototypes declare only the fixed arguments and callers pass the rest as ``ctypes`` objects:
    that is the one form CPython calls correctly on every ABI, including Apple arm64.
    ``pyogg`` is the imported package, for features built on its own wrappers (``OpusFile``,
    ``opus.ope_*``).
    """

    encoder_create: Callable[[int, int, int, Any], int | None]
    encoder_destroy: Callable[[int], None]
    encoder_ctl: Callable[..., int]
    encode: Callable[[int, bytes, int, Any, int], int]
    decoder_create: Callable[[int, int, Any], int | None]
    decoder_destroy: Callable[[int], None]
    decoder_ctl: Callable[..., int]
    decode: Callable[[int, bytes | None, int, Any, int, int], int]
    strerror: Callable[[int], bytes | None]
    version: str
    pyogg: Any
    opusenc_available: bool


def _bind(lib: ctypes.CDLL, name: str, restype: Any, argtypes: list[Any]) -> Any:
    # ``lib[name]`` returns a fresh function object, unlike ``lib.name`` which pyogg has already
    # configured with its own argtypes; changing those would break pyogg's wrappers.
    fn = lib[name]
    fn.restype = restype
    fn.argtypes = argtypes
    return fn


def _make_facade(pyogg: Any, libopus: ctypes.CDLL, opusenc_available: bool) -> OpusLib:
    c_int, c_int32, c_void_p, c_char_p = (
        ctypes.c_int,
        ctypes.c_int32,
        ctypes.c_void_p,
        ctypes.c_char_p,
    )
    get_version = _bind(libopus, "opus_get_version_string", c_char_p, [])
    return OpusLib(
        encoder_create=_bind(
            libopus, "opus_encoder_create", c_void_p, [c_int32, c_int, c_int, _c_int_p]
        ),
        encoder_destroy=_bind(libopus, "opus_encoder_destroy", None, [c_void_p]),
        encoder_ctl=_bind(libopus, "opus_encoder_ctl", c_int, [c_void_p, c_int]),
        encode=_bind(
            libopus, "opus_encode", c_int32, [c_void_p, c_char_p, c_int, c_char_p, c_int32]
        ),
        decoder_create=_bind(libopus, "opus_decoder_create", c_void_p, [c_int32, c_int, _c_int_p]),
        decoder_destroy=_bind(libopus, "opus_decoder_destroy", None, [c_void_p]),
        decoder_ctl=_bind(libopus, "opus_decoder_ctl", c_int, [c_void_p, c_int]),
        decode=_bind(
            libopus, "opus_decode", c_int, [c_void_p, c_char_p, c_int32, c_char_p, c_int, c_int]
        ),
        strerror=_bind(libopus, "opus_strerror", c_char_p, [c_int]),
        version=cast(bytes, get_version()).decode("ascii", "replace"),
        pyogg=pyogg,
        opusenc_available=opusenc_available,
    )


# ---------------------------------------------------------------------------------------------
# Loading, once.


def _import_pyogg() -> ModuleType:
    """Import pyogg for real. Tests replace this to simulate a broken installation."""
    return importlib.import_module("pyogg")


@dataclass(frozen=True, slots=True)
class _Missing:
    library: str
    command: str
    reason: str
    cause: BaseException | None


_lock = threading.Lock()
_result: OpusLib | _Missing | None = None


def _import_with_path_guard() -> ModuleType:
    # pyogg does ``os.environ["PATH"] += ...`` for every library it probes. Without PATH that is a
    # KeyError its bare ``except:`` swallows, and the library is reported missing although it is
    # installed; with PATH the value grows on every probe. Give it a PATH, then put things back.
    saved = os.environ.get("PATH")
    if saved is None:
        os.environ["PATH"] = os.defpath
    try:
        return _import_pyogg()
    finally:
        if saved is None:
            os.environ.pop("PATH", None)
        else:
            os.environ["PATH"] = saved


def _first_unfindable(names: tuple[str, ...]) -> str | None:
    for name in names:
        if ctypes.util.find_library(name) is None:
            return name
    return None


def _diagnose_import_failure(exc: BaseException) -> _Missing:
    if isinstance(exc, ModuleNotFoundError) and exc.name == "pyogg":
        return _Missing("pyogg (Python package)", _PIP_PYOGG, f"pyogg is not installed: {exc}", exc)
    # pyogg's import raises NameError when libogg is missing: its libopus bindings use ctypes
    # aliases that pyogg.ogg only defines once libogg loaded. Its ogg submodule survives the
    # failed import and says so.
    ogg = sys.modules.get("pyogg.ogg")
    if ogg is not None and getattr(ogg, "PYOGG_OGG_AVAIL", True) is False:
        return _missing("libogg", "pyogg could not load libogg", exc)
    missing = _first_unfindable(("ogg", "opus", "opusfile"))
    reason = f"importing pyogg failed: {type(exc).__name__}: {exc}"
    return _missing(f"lib{missing}" if missing else "libopus", reason, exc)


def _missing(library: str, reason: str, cause: BaseException | None = None) -> _Missing:
    return _Missing(library, install_command(), reason, cause)


def _load() -> OpusLib | _Missing:
    try:
        pyogg = _import_with_path_guard()
    except Exception as exc:
        return _diagnose_import_failure(exc)
    opus = getattr(pyogg, "opus", None)
    if not getattr(opus, "PYOGG_OPUS_AVAIL", False):
        return _missing("libopus", "pyogg could not load libopus")
    if not getattr(opus, "PYOGG_OPUS_FILE_AVAIL", False):
        # pyogg defines no libopus binding at all without libopusfile, even for plain encoding.
        return _missing("libopusfile", "pyogg could not load libopusfile")
    if not getattr(pyogg, "PYOGG_OGG_AVAIL", False):
        return _missing("libogg", "pyogg could not load libogg")
    libopus = getattr(opus, "libopus", None)
    if not isinstance(libopus, ctypes.CDLL):
        return _missing("libopus", "pyogg exposes no libopus handle")
    try:
        return _make_facade(pyogg, libopus, bool(getattr(opus, "PYOGG_OPUS_ENC_AVAIL", False)))
    except (AttributeError, OSError) as exc:
        # A libopus too old to export a symbol we bind.
        return _missing("libopus", f"libopus lacks a needed symbol: {exc}", exc)


def _get() -> OpusLib | _Missing:
    global _result
    result = _result
    if result is None:
        with _lock:
            # Import happens under the lock so two worker threads don't import pyogg (and mutate
            # PATH) at the same time.
            if _result is None:
                _result = _load()
            result = _result
    return result


def load_opus() -> OpusLib:
    """Return the libopus bindings, loading them on first use.

    The first call imports pyogg, which probes several libraries with ``find_library`` (on Linux
    that spawns ``ldconfig``; about 0.2 s). Call it once at startup, or from a worker thread, if
    that would stall an event loop.

    Raises :class:`NativeLibraryMissing` (every time, with a fresh exception) when a library is
    missing; the outcome is cached for the life of the process, like pyogg's own import.
    """
    result = _get()
    if isinstance(result, _Missing):
        raise NativeLibraryMissing(result.library, result.command) from result.cause
    return result


def opus_load_attempted() -> bool:
    """Whether :func:`load_opus` already ran in this process (whatever it found): now free."""
    return _result is not None


def require_opusenc() -> OpusLib:
    """Like :func:`load_opus`, but also insists on libopusenc, which writing Ogg Opus needs."""
    lib = load_opus()
    if not lib.opusenc_available:
        raise NativeLibraryMissing("libopusenc", install_command(opusenc=True))
    return lib


@dataclass(frozen=True, slots=True)
class NativeStatus:
    """What a ``doctor`` command shows: never raises, always says what to do."""

    available: bool
    version: str | None
    missing_library: str | None
    install_command: str | None
    reason: str | None
    opusenc_available: bool


def native_status() -> NativeStatus:
    """Report whether Opus encoding/decoding is usable here, without raising."""
    result = _get()
    if isinstance(result, _Missing):
        return NativeStatus(
            available=False,
            version=None,
            missing_library=result.library,
            install_command=result.command,
            reason=result.reason,
            opusenc_available=False,
        )
    return NativeStatus(
        available=True,
        version=result.version,
        missing_library=None,
        install_command=None,
        reason=None,
        opusenc_available=result.opusenc_available,
    )


def _reset_for_tests() -> None:
    """Forget the cached outcome so a test can load again with a patched :func:`_import_pyogg`.

    pyogg itself stays in ``sys.modules``: simulating a missing library for real pyogg therefore
    needs a fresh interpreter (see tests/audio/test_native.py).
    """
    global _result
    with _lock:
        _result = None
