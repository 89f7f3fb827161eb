"""Mount safety for bench/unpack, which mounts (in a private mount namespace of its own): the
mounts below a path, detached, and a tree removed only once nothing is mounted in it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from benchlib.common import BenchError, run


def mounts_under(path: Path) -> list[Path]:
    """Mount points at or below path, deepest first."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = Path(line.split()[4].encode().decode("unicode_escape"))
            if point == path or path in point.parents:
                found.append(point)
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def unmount_all_under(path: Path) -> None:
    for point in mounts_under(path):
        subprocess.run(["umount", "--lazy", os.fspath(point)], stdin=subprocess.DEVNULL)


def remove_tree(path: Path) -> None:
    """Remove a tree we created, after detaching anything mounted in it."""
    if not path.exists() and not path.is_symlink():
        return
    unmount_all_under(path)
    if mounts_under(path):
        raise BenchError(f"refusing to remove {path}: something is still mounted below it")
    run(["rm", "-rf", "--one-file-system", path])
