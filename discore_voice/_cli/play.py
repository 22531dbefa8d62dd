"""``discore-voice play``: play files and playlists into a real voice channel, one after another.

Every file is opened before anything joins, so a typo in the tenth entry of a playlist costs a
second, not a login and nine songs. The files then go through the connection's queue, which
plays them gaplessly; this command only watches the handles (a progress bar, or one line per
track when stderr is a log) and, on a terminal, turns keys into queue controls.
"""

from __future__ import annotations

import argparse
import codecs
import enum
import math
import os
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol, TextIO
from urllib.parse import unquote, urlparse

import trio

from .._audio.sources import AudioSource, open_audio_file
from .._core.pcm_buffer import MAX_GAIN, check_gain
from .._core.player.events import TrackEnd, TrackOutcome
from .._errors import DiscoreVoiceError, UsageError
from .._shell.voice.player.queue import TrackQueue
from .._shell.voice.player.track import TrackHandle
from .joining import TOKEN_VARIABLE, Target, add_channel_arguments, joined, say, target_of

__all__ = [
    "KEYS",
    "Controls",
    "Entry",
    "Key",
    "add_parser",
    "expand_playlists",
    "progress_line",
]

#: The exit code of a command line that cannot work (a bad file, an empty playlist), the same
#: as argparse's own; failures of the world (Discord, the network) exit 1.
EXIT_USAGE: Final = 2
EXIT_FAILURE: Final = 1

PLAYLIST_SUFFIXES: Final = frozenset({".m3u", ".m3u8", ".txt"})
#: A progress bar redraw period: smooth enough for a clock in seconds, cheap on a slow terminal.
REDRAW_SECONDS: Final = 0.25
VOLUME_STEP: Final = 0.1
BAR_WIDTH: Final = 20
#: Playlists may list playlists; deeper than this is a mistake, not a library.
_MAX_NESTING: Final = 16
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_CLEAR_LINE: Final = "\r\x1b[K"


def add_parser(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "play",
        help="play audio files and playlists into a voice channel (token from DISCORD_TOKEN)",
        description="Join a voice channel and play each FILE in turn, gaplessly: Ogg Opus "
        "passes through untouched, other formats are decoded with the 'av' extra. A .m3u, "
        ".m3u8 or .txt FILE is a playlist: one path a line, '#' lines ignored, relative paths "
        "taken from the playlist's folder. Every file is checked before joining. On a terminal: "
        "n or s skips, space or p pauses, + and - change the volume, q quits. The bot token is "
        f"read from the {TOKEN_VARIABLE} environment variable. Ctrl-C leaves the channel cleanly.",
    )
    parser.add_argument(
        "files", nargs="+", type=Path, metavar="FILE", help="audio files and playlists, in order"
    )
    add_channel_arguments(parser)
    parser.add_argument(
        "--volume",
        type=float,
        default=1.0,
        help="gain (default 1.0); an Ogg Opus file is then decoded, scaled and re-encoded",
    )
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    target = target_of(args)
    try:
        sources = _open_all(expand_playlists(args.files), volume=args.volume)
    except DiscoreVoiceError as exc:
        print(f"discore-voice play: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    live = sys.stderr.isatty()
    keys_fd = _keys_fd(sys.stdin)
    code: int = trio.run(_play, target, sources, keys_fd, live, args.volume)
    return code


# --- the files ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    """A file to play, and the playlist line that named it (None: the command line did)."""

    path: Path
    listed_at: str | None = None


def expand_playlists(paths: Sequence[Path]) -> list[Entry]:
    """The files to play, playlists replaced by what they list, in order.

    A playlist is known by its suffix rather than sniffed: ``.txt`` and ``.m3u`` are never
    audio, and sniffing would open every file twice. Raises :class:`UsageError` naming the
    playlist and line when a playlist cannot be read, lists a URL, or lists itself.
    """
    entries: list[Entry] = []
    for path in paths:
        _expand(path, None, entries, ())
    if not entries:
        raise UsageError("nothing to play: the playlists list no files")
    return entries


def _expand(path: Path, listed_at: str | None, into: list[Entry], within: tuple[Path, ...]) -> None:
    if path.suffix.lower() not in PLAYLIST_SUFFIXES:
        into.append(Entry(path, listed_at))
        return
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError):  # a symlink loop: reading it fails below, with its name
        resolved = path.absolute()
    if resolved in within:
        raise UsageError(f"{path}: a playlist that lists itself (at {listed_at})")
    if len(within) >= _MAX_NESTING:
        raise UsageError(f"{path}: playlists nested more than {_MAX_NESTING} deep")
    for number, line in enumerate(_playlist_text(path, listed_at).splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        where = f"{path} line {number}"
        _expand(_entry_path(text, path.parent, where), where, into, (*within, resolved))


def _playlist_text(path: Path, listed_at: str | None) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        where = f" (listed at {listed_at})" if listed_at else ""
        raise UsageError(f"{path}: {exc.strerror or 'cannot be read'}{where}") from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        if path.suffix.lower() == ".m3u":
            return data.decode("latin-1")  # the original M3U's encoding; it never fails
        raise UsageError(f"{path}: not a UTF-8 text playlist") from exc


def _entry_path(text: str, folder: Path, where: str) -> Path:
    if text.lower().startswith("file://"):
        return Path(unquote(urlparse(text).path))
    if _URL.match(text):
        raise UsageError(f"{where}: only files can be played, not URLs ({text[:80]})")
    path = Path(text)
    return path if path.is_absolute() else folder / path


def _open_all(entries: Sequence[Entry], *, volume: float) -> list[AudioSource]:
    """Open (and so check) every file now, so a bad one fails before anything joins."""
    check_gain(volume)
    sources: list[AudioSource] = []
    for entry in entries:
        try:
            sources.append(open_audio_file(entry.path, volume=volume))
        except DiscoreVoiceError as exc:
            if entry.listed_at is None:
                raise
            raise UsageError(f"{exc} (listed at {entry.listed_at})") from exc
    return sources


# --- keys --------------------------------------------------------------------------------------


class Key(enum.Enum):
    """What a key asks of the queue."""

    SKIP = "skip"
    PAUSE = "pause"
    LOUDER = "louder"
    QUIETER = "quieter"
    QUIT = "quit"


#: '=' is '+' without shift on most layouts: holding shift to turn it up is a needless chore.
KEYS: Final[Mapping[str, Key]] = {
    "n": Key.SKIP,
    "s": Key.SKIP,
    " ": Key.PAUSE,
    "p": Key.PAUSE,
    "+": Key.LOUDER,
    "=": Key.LOUDER,
    "-": Key.QUIETER,
    "q": Key.QUIT,
}

KEY_HELP: Final = "keys: n skip, space pause, + and - volume, q quit"


class _Track(Protocol):
    @property
    def paused(self) -> bool: ...

    @property
    def volume(self) -> float: ...

    @volume.setter
    def volume(self, value: float) -> None: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...


class _Queue(Protocol):
    @property
    def current(self) -> _Track | None: ...

    @property
    def upcoming(self) -> Sequence[_Track]: ...

    def skip(self) -> object: ...

    def stop(self) -> None: ...


class Controls:
    """Keys to queue actions, kept apart from the terminal so they can be tested without one.

    The volume is the listener's choice, not a track's: a change applies to the playing track
    and to every track after it, so the next song does not jump back to where it was.
    """

    def __init__(self, queue: _Queue) -> None:
        self._queue = queue
        #: The gain on top of ``--volume``, set by + and -.
        self.volume = 1.0
        #: q was pressed: the queue was stopped, and the command leaves.
        self.quit = False

    def press(self, key: str) -> str | None:
        """Act on ``key``; a few words for the user, or None for a key that means nothing."""
        action = KEYS.get(key.lower())
        if action is None:
            return None
        current = self._queue.current
        if action is Key.QUIT:
            self.quit = True
            self._queue.stop()
            return "quitting"
        if action is Key.LOUDER or action is Key.QUIETER:
            step = VOLUME_STEP if action is Key.LOUDER else -VOLUME_STEP
            self.volume = min(MAX_GAIN, max(0.0, round(self.volume + step, 2)))
            for track in (current, *self._queue.upcoming):
                if track is not None:
                    track.volume = self.volume
            return f"volume {self.volume:.1f}"
        if current is None:
            return "nothing is playing"
        if action is Key.SKIP:
            self._queue.skip()
            return "skipped"
        if current.paused:
            current.resume()
            return "resumed"
        current.pause()
        return "paused"


def _keys_fd(stdin: TextIO | None) -> int | None:
    """stdin's descriptor when keys can be read from it: a terminal we may switch to cbreak.

    A background job must not touch the terminal (the kernel would stop it with SIGTTOU), so
    keys are off unless the process is in the terminal's foreground group; a terminal that is
    not the controlling one (``pty.openpty`` in a test) has no job control to fear.
    """
    if os.name != "posix" or stdin is None:
        return None
    try:
        fd = stdin.fileno()
    except (OSError, ValueError):
        return None
    if not os.isatty(fd):
        return None
    try:
        if os.tcgetpgrp(fd) != os.getpgrp():
            return None
    except OSError:
        pass
    return fd


@contextmanager
def _cbreak(fd: int | None) -> Iterator[None]:
    """Keys arrive one at a time, unechoed; the terminal is put back however the block ends."""
    if fd is None:
        yield
        return
    import termios  # POSIX only, and only reached there
    import tty

    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield
    finally:
        with suppress(termios.error):  # a terminal that hung up has nothing to put back
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def _read_keys(fd: int, controls: Controls, progress: Progress) -> None:
    """Wait for the terminal to be readable, never blocking a thread, until it closes."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    while True:
        await trio.lowlevel.wait_readable(fd)
        try:
            data = os.read(fd, 256)
        except BlockingIOError:
            continue
        except OSError:
            return  # the terminal went away (EIO): play on without keys
        if not data:
            return
        for key in decoder.decode(data):
            message = controls.press(key)
            if message is not None:
                progress.note(message)


# --- progress ----------------------------------------------------------------------------------


def _clock(seconds: float, *, tenths: bool = False) -> str:
    """``mm:ss`` (``h:mm:ss`` past an hour); ``tenths`` for a total, where a short clip's
    ``00:00`` would read as nothing played."""
    tenth = max(0, math.floor(seconds * 10 + 1e-6))
    hours, rest = divmod(tenth // 10, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"
    return f"{text}.{tenth % 10}" if tenths else text


def _short_name(name: str) -> str:
    return Path(name).name or name


def progress_line(
    index: int,
    total: int,
    name: str,
    position: float,
    duration: float | None,
    *,
    paused: bool = False,
    volume: float = 1.0,
    width: int = 80,
) -> str:
    """``[3/5] name  01:23 / 03:45  [#######-------]``, cut to fit ``width`` columns.

    The name gives way first, since the clock and the bar are what a redraw is for; one column
    stays free, because a line that fills the last one wraps on some terminals and ``\\r`` then
    redraws only its second half.
    """
    head = f"[{index}/{total}] "
    if duration is None or duration <= 0:
        tail = f"  {_clock(position)}"
    else:
        filled = round(BAR_WIDTH * min(1.0, max(0.0, position / duration)))
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        tail = f"  {_clock(position)} / {_clock(duration)}  [{bar}]"
    if paused:
        tail += "  paused"
    if not math.isclose(volume, 1.0):
        tail += f"  vol {volume:.2f}"
    room = max(8, width - 1 - len(head) - len(tail))
    if len(name) > room:
        name = name[: room - 3] + "..."
    return (head + name + tail)[: max(1, width - 1)]


def _end_line(index: int, total: int, end: TrackEnd) -> str:
    played = _clock(end.frames * 0.02, tenths=True)
    how = end.outcome.value
    if end.outcome is TrackOutcome.FAILED:
        error = end.error
        how = f"failed after {played}: {str(error) or type(error).__name__}"
    elif end.outcome is TrackOutcome.FINISHED:
        how = f"finished ({played})"
    elif end.outcome is TrackOutcome.STOPPED:
        how = f"stopped after {played}"
    elif end.invalidation is not None:
        how = f"invalidated after {played} ({end.invalidation.reason.value})"
    return f"[{index}/{total}] {_short_name(end.name)}: {how}"


class Progress:
    """How tracks are shown: a redrawn bar on a terminal, one line a start and an end in a log."""

    def __init__(
        self, total: int, stream: TextIO, *, live: bool, volume: float, controls: Controls
    ) -> None:
        self.total = total
        self.live = live
        self._stream = stream
        self._volume = volume  # --volume, which the bar shows times the keys' volume
        self._controls = controls
        self._drawn = False  # a bar is on screen, without its newline

    def _write(self, text: str) -> None:
        self._stream.write(text)
        self._stream.flush()

    def _line(self, text: str) -> None:
        self._write((_CLEAR_LINE if self._drawn else "") + text + "\n")
        self._drawn = False

    def started(self, index: int, track: TrackHandle) -> None:
        if not self.live:
            self._line(f"[{index}/{self.total}] playing {_short_name(track.name)}")

    def draw(self, index: int, track: TrackHandle) -> None:
        if not self.live:
            return
        try:
            width = os.get_terminal_size(self._stream.fileno()).columns
        except (OSError, ValueError):
            width = 0
        width = width or 80  # a terminal may not know its size (a fresh pty says 0)
        line = progress_line(
            index,
            self.total,
            _short_name(track.name),
            track.position,
            track.duration,
            paused=track.paused,
            volume=self._volume * self._controls.volume,
            width=width,
        )
        self._write(_CLEAR_LINE + line)
        self._drawn = True

    def ended(self, index: int, end: TrackEnd) -> None:
        self._line(_end_line(index, self.total, end))

    def note(self, message: str) -> None:
        """A key's effect: the bar shows it at its next redraw; a log gets a line."""
        if not self.live:
            self._line(message)

    def close(self) -> None:
        """End a bar's line, so whatever is printed next (Ctrl-C's message) starts afresh."""
        if self._drawn:
            self._write("\n")
            self._drawn = False


def _never_heard(end: TrackEnd | None) -> bool:
    """Tracks a quit or an invalidation took out of the queue: not worth a line each."""
    return (
        end is not None
        and end.frames == 0
        and end.outcome in (TrackOutcome.STOPPED, TrackOutcome.INVALIDATED)
    )


async def _report(tracks: Sequence[TrackHandle], progress: Progress) -> None:
    """Follow the tracks in queue order until each has ended (the queue never reorders here)."""
    for index, track in enumerate(tracks, 1):
        if _never_heard(track.outcome):
            continue
        progress.started(index, track)
        while track.outcome is None:
            progress.draw(index, track)
            with trio.move_on_after(REDRAW_SECONDS if progress.live else math.inf):
                await track.wait()
        progress.ended(index, track.outcome)


# --- the command -------------------------------------------------------------------------------


async def _play(
    target: Target, sources: Sequence[AudioSource], keys_fd: int | None, live: bool, volume: float
) -> int:
    async with joined(target) as vc:
        queue: TrackQueue = vc.queue
        tracks = [queue.enqueue(source) for source in sources]
        controls = Controls(queue)
        progress = Progress(len(tracks), sys.stderr, live=live, volume=volume, controls=controls)
        try:
            with _cbreak(keys_fd):
                async with trio.open_nursery() as nursery:
                    if keys_fd is not None:
                        say(KEY_HELP)  # in cbreak already: a key pressed from now on counts
                        nursery.start_soon(_read_keys, keys_fd, controls, progress)
                    await _report(tracks, progress)
                    nursery.cancel_scope.cancel()
        finally:
            progress.close()
        invalidation = await queue.wait_idle()
    ends = [track.outcome for track in tracks]
    heard = sum(1 for end in ends if end is not None and end.frames > 0)
    failed = sum(1 for end in ends if end is not None and end.outcome is TrackOutcome.FAILED)
    summary = f"played {heard} of {len(tracks)} tracks"
    if invalidation is not None:
        say(
            f"the voice connection ended ({invalidation.reason.value}: {invalidation.detail}); "
            f"{summary}"
        )
        return EXIT_FAILURE
    if controls.quit:
        say(f"quit; {summary}; leaving")
        return 0
    if failed:
        say(f"{summary}, {failed} failed; leaving")
        return EXIT_FAILURE
    say(f"{summary}; leaving")
    return 0
