"""Temporary files and directories of a host command, removed however the command ends.

A path is recorded *before* it is created, so a signal that lands between its creation and the
`try` that would clean it up cannot leave it behind: `cli.main` removes whatever is still
recorded when a command ends, by success, failure or signal.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from .runtime.apply import rmtree
from .runtime.errors import BootcLiveError, shown

_LEFT: set[str] = set()
_PARENTS: list[str] = []  # directories made on the way to a path: removed at the end if empty


def track(path: str | Path) -> None:
    """Remove `path` when the command ends, unless `done` says it is kept (or gone)."""
    _LEFT.add(os.fspath(path))


def done(path: str | Path) -> None:
    _LEFT.discard(os.fspath(path))


def make_dir(prefix: str, parent: str | None = None) -> str:
    """A new private directory under `parent` (default $TMPDIR, else /var/tmp), tracked."""
    base = parent or os.environ.get("TMPDIR") or "/var/tmp"
    while True:
        path = os.path.join(base, f"{prefix}{secrets.token_hex(6)}")
        track(path)
        try:
            os.mkdir(path, 0o700)
            return path
        except FileExistsError:
            done(path)
        except OSError as err:
            done(path)
            if parent or not os.environ.get("TMPDIR"):
                raise
            # Not a path the command line gave: the environment's, named as such.
            raise BootcLiveError(
                f"TMPDIR={shown(base)}: {err.strerror}",
                "set TMPDIR to a directory with room for the work, or unset it (/var/tmp)",
            ) from None


def remove(path: str | Path) -> None:
    """Remove a tracked path now (a tree or a file)."""
    name = os.fspath(path)
    with contextlib.suppress(OSError):  # what cannot be removed is left; the rest goes
        rmtree(name, keep_going=True)  # not shutil's: it recurses, an image's tree is deeper
    done(name)


def make_parents(path: str | Path) -> None:
    """Create the missing directories above `path`; those still empty when the command ends
    (it failed before writing `path`, or removed it) are removed then."""
    missing: list[str] = []
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.lexists(parent):
        missing.append(parent)
        parent = os.path.dirname(parent)
    for directory in reversed(missing):
        _PARENTS.append(directory)
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory)


def remove_all() -> None:
    for path in sorted(_LEFT, reverse=True):
        remove(path)
    while _PARENTS:
        with contextlib.suppress(OSError):  # not empty: it holds what the command made
            os.rmdir(_PARENTS.pop())
