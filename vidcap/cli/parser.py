"""The argument parser every vidcap command line uses.

Usage mistakes are one line naming ``--help``, exit status 2. Flags are never abbreviated:
argparse's default takes any unambiguous prefix, so ``--mode all`` (a slip for
``--decode-mode``) silently meant ``--model all``. An unknown flag is an error that names
the closest real ones instead.
"""

from __future__ import annotations

import argparse
import difflib
import itertools
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from vidcap.errors import EMPTY_PATH, UsageError

EXIT_USAGE = 2


class OneLineParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` with one-line errors, no abbreviations, and "did you
    mean" for an unknown flag (raised by the (sub)command's own parser, which knows its
    flags)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        if message.startswith("the following arguments are required"):
            message = self._swallowed(getattr(self, "_words", ())) or message
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def _swallowed(self, words: Sequence[str]) -> str | None:
        """An input taken as a flag's optional value (``--ray video.mp4``: no input left):
        what the flag took, and how to give both."""
        for flag, word in itertools.pairwise(words):
            action = self._option_string_actions.get(flag)
            if action is not None and action.nargs == "?" and not word.startswith("-"):
                value = action.metavar or action.dest.upper()
                return (
                    f"{flag} took {word!r} as its {value}, leaving no input; put {flag} after "
                    f"the inputs or write {flag}={value}"
                )
        return None

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        words = list(sys.argv[1:] if args is None else args)
        words = words[: words.index("--")] if "--" in words else words
        self._words = words  # (for ``error``)
        if self._subparsers is not None:  # only the flags before the command are its own
            words = list(itertools.takewhile(lambda word: word.startswith("-"), words))
        unknown = [word for word in words if self._unknown_flag(word)]  # said first
        if unknown:
            self._unrecognized(unknown)
        parsed, extras = super().parse_known_args(args, namespace)
        if extras and self._subparsers is None:
            self._unrecognized(extras)
        if self._subparsers is None:  # a command's: the flags given, at their defaults too
            known = self._option_string_actions
            flags = (word.split("=", 1)[0] for word in words if word.startswith("-"))
            parsed.given_flags = frozenset(flag for flag in flags if flag in known)
        return parsed, extras

    def _unknown_flag(self, word: str) -> bool:
        """A word that is a flag this parser does not have: ``--name`` (``=value`` aside), or
        ``-x…`` (a letter: ``-1`` is a number) whose short flag ``-x`` it lacks too."""
        known = self._option_string_actions
        if word.startswith("--"):
            return word != "--" and word.split("=", 1)[0] not in known
        short = len(word) > 1 and word[0] == "-" and word[1].isalpha()
        return short and word not in known and word[:2] not in known

    def _unrecognized(self, words: Sequence[str]) -> NoReturn:
        self.error(f"unrecognized arguments: {' '.join(words)}{self._did_you_mean(words)}")

    def _did_you_mean(self, extras: Sequence[str]) -> str:
        flags = [flag for action in self._actions for flag in action.option_strings]
        hints = []
        for extra in extras:
            if not extra.startswith("-") or extra[1:2].isdigit():
                continue
            word = extra.split("=", 1)[0]
            if len(word) == 2:  # -o: the long flags it may stand for (--out)
                close = [flag for flag in flags if flag.startswith(f"-{word}")][:2]
            else:  # -fps: one dash short of --fps; --keyf: the start of --keyframes
                long = word if word.startswith("--") else f"-{word}"
                near = difflib.get_close_matches(long, flags, n=2, cutoff=0.6)
                begun = [flag for flag in flags if flag.startswith(long)]  # (then those it is
                # part of: --mode, --model or --decode-mode; not --keyf's --token)
                part = [*begun, *(flag for flag in near if long[2:] in flag)]
                close = list(dict.fromkeys(part))[:2] if begun else near
            hints += [flag for flag in close if flag not in hints]
        return f"; did you mean {' or '.join(hints)}?" if hints else ""


def path_arg(value: str) -> Path:
    """A path argument (``type=path_arg``): an empty one is refused, not taken for '.' as
    ``Path("")`` is (``vidcap caption "$VIDEOS"`` with the variable unset captioned the
    whole working folder; ``--out ""`` wrote into it)."""
    return Path(nonempty(value))


def nonempty(value: str) -> str:
    """A path or URL argument given as text (an input, ``--out``): not empty."""
    if not value.strip():
        raise argparse.ArgumentTypeError(EMPTY_PATH)
    return value


def local_folder(value: str) -> Path:
    """An output folder to read (``vidcap search``, ``report``, ``export``): a local path.
    A URL (``vidcap caption --out s3://…`` writes to one) is refused, saying what to do."""
    from vidcap.inputs import is_url, local_path, shown_source

    nonempty(value)
    if is_url(value):
        raise argparse.ArgumentTypeError(
            f"{shown_source(value)} is a URL: search, report and export read a local folder; copy it here "
            "first (aws s3 sync, gsutil rsync, or fsspec's get with recursive=True)"
        )
    try:
        return Path(local_path(value))
    except UsageError as exc:  # (a file:// URL of another machine)
        raise argparse.ArgumentTypeError(str(exc)) from exc


# --- where a command writes --------------------------------------------------------------


def _blocking_file(path: Path) -> Path | None:
    """The file standing where ``path`` or one of its folders would be made, if any."""
    for part in (path, *path.parents):
        if part.exists():
            return None if part.is_dir() else part
    return None


def check_out_folder(path: Path, flag: str) -> None:
    """``flag`` names a folder to write into (made as needed): a usage error, before any
    work, where its name is not UTF-8, a file stands there or in the way of one of its
    folders, or no folder can be made where it goes (read-only, another user's)."""
    from vidcap.inputs import require_utf8_name

    require_utf8_name(path, flag)
    if (blocking := _blocking_file(path)) == path:
        raise UsageError(f"{flag} {path} is a file, not a folder: remove it or choose another")
    if blocking is not None:
        raise UsageError(f"{flag} {path}: {blocking} is a file, not a folder; choose another")
    there = next((part for part in (path, *path.parents) if part.is_dir()), None)
    if there is None:
        return
    try:  # (a folder made and removed at once: nothing is left if the command stops later)
        os.rmdir(tempfile.mkdtemp(prefix=".vidcap-probe-", dir=there))
    except OSError as exc:
        raise UsageError(f"{flag} {path}: cannot write there ({exc.strerror or exc})") from exc


def check_out_file(path: Path, flag: str, reads: Sequence[Path] = ()) -> None:
    """``flag`` names a file to write (its folders made as needed): a usage error, before
    any work, where a folder stands there, a file in the way of its folders, or it is one
    of the files the command ``reads`` (written over, the input would be lost)."""
    from vidcap.inputs import require_utf8_name

    require_utf8_name(path, flag)
    if path.is_dir():
        raise UsageError(f"{flag} {path} is a folder: give a file name (such as {path}/out.json)")
    if (blocking := _blocking_file(path.parent)) is not None:
        raise UsageError(f"{flag} {path}: {blocking} is a file, not a folder; choose another")
    for source in reads:
        if _same_file(path, source):
            raise UsageError(
                f"{flag} {path} is {source}, which this command reads: choose another file"
            )


def _same_file(a: Path, b: Path) -> bool:
    """Is ``a`` (to write: its folders made, ``x/..`` collapsed as they will be) ``b``?"""
    try:
        if a.exists() and b.exists():
            return a.samefile(b)  # (links, hard links)
        where = os.path.realpath(os.path.normpath(os.path.abspath(a)))
        return b.exists() and where == os.path.realpath(b)
    except OSError:
        return False


def check_writable(path: Path, flag: str) -> None:
    """Can a file be made where ``path`` goes (its folders made)? Asked before long work whose
    result it holds: a usage error now, not a lost result later (a read-only or full file
    system, a folder of another user, ``/proc``)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as exc:
        raise UsageError(f"{flag} {path}: cannot write there ({exc.strerror or exc})") from exc
