"""Record a directory tree's metadata (without following symlinks) and compare two records."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, fields, replace

FIELDS = ("type", "mode", "uid", "gid", "size", "sha256", "target", "rdev", "xattrs", "mtime_ns")
# Pseudo-fields accepted by ``ignore``: dir_mtime (mtime of directories only), links.
DEFAULT_IGNORE = frozenset({"dir_mtime"})


@dataclass(frozen=True)
class Record:
    type: str
    mode: int
    uid: int
    gid: int
    size: int | None = None
    sha256: str | None = None
    target: bytes | None = None
    rdev: tuple[int, int] | None = None
    xattrs: tuple[tuple[str, bytes], ...] = ()
    mtime_ns: int = 0
    # Paths (relative, bytes) sharing this inode, when more than one; includes this path.
    links: tuple[bytes, ...] = ()


def _kind(st_mode: int) -> str:
    for test, name in (
        (stat.S_ISREG, "file"),
        (stat.S_ISDIR, "dir"),
        (stat.S_ISLNK, "symlink"),
        (stat.S_ISCHR, "char"),
        (stat.S_ISBLK, "block"),
        (stat.S_ISFIFO, "fifo"),
        (stat.S_ISSOCK, "socket"),
    ):
        if test(st_mode):
            return name
    return "unknown"


HUGE = 1 << 30  # files larger than this get a digest of their non-zero chunks
_CHUNK = 1 << 16


def _hash_file(path: bytes) -> str:
    """The sha256 of the content; for a file over HUGE bytes (a sparse file of 60 GB takes
    minutes to read), ``nonzero:`` and the sha256 of its non-zero 64 KiB chunks with their
    offsets, found through SEEK_DATA: the same for holes and for written zeros."""
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        size = os.fstat(fd).st_size
        if size <= HUGE:
            while chunk := os.read(fd, 1 << 20):
                h.update(chunk)
            return h.hexdigest()
        done = 0  # chunks below this offset are hashed
        while done < size:
            try:
                start = max(done, os.lseek(fd, done, os.SEEK_DATA) // _CHUNK * _CHUNK)
            except OSError:
                break  # only a hole is left
            end = os.lseek(fd, start, os.SEEK_HOLE)
            for offset in range(start, end, _CHUNK):
                chunk = os.pread(fd, _CHUNK, offset)
                if chunk.count(0) != len(chunk):
                    h.update(offset.to_bytes(8, "big") + chunk)
            done = max(end + -end % _CHUNK, start + _CHUNK)
    finally:
        os.close(fd)
    return "nonzero:" + h.hexdigest()


def _xattrs(path: bytes, drop: frozenset[str]) -> tuple[tuple[str, bytes], ...]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return ()
    out = []
    for name in sorted(names):
        if name in drop or any(name.startswith(p) for p in drop if p.endswith(".")):
            continue
        out.append((name, os.getxattr(path, name, follow_symlinks=False)))
    return tuple(out)


def snapshot(
    root: str | bytes | os.PathLike[str],
    *,
    drop_xattrs: Iterable[str] = ("security.selinux",),
) -> dict[bytes, Record]:
    """Map each relative path (bytes; the root itself is ``b"."``) to its :class:`Record`.

    ``drop_xattrs`` names xattrs not to record; a name ending in "." drops a whole namespace.
    """
    base = os.fsencode(root)
    drop = frozenset(drop_xattrs)
    records: dict[bytes, Record] = {}
    inodes: dict[tuple[int, int], list[bytes]] = {}

    def visit(rel: bytes) -> None:
        path = base if rel == b"." else os.path.join(base, rel)
        st = os.lstat(path)
        kind = _kind(st.st_mode)
        rec = Record(
            type=kind,
            mode=st.st_mode,
            uid=st.st_uid,
            gid=st.st_gid,
            size=st.st_size if kind == "file" else None,
            sha256=_hash_file(path) if kind == "file" else None,
            target=os.readlink(path) if kind == "symlink" else None,
            rdev=(os.major(st.st_rdev), os.minor(st.st_rdev))
            if kind in ("char", "block")
            else None,
            xattrs=_xattrs(path, drop),
            mtime_ns=st.st_mtime_ns,
        )
        records[rel] = rec
        if kind != "dir":
            inodes.setdefault((st.st_dev, st.st_ino), []).append(rel)
        else:
            for name in sorted(os.listdir(path)):
                visit(name if rel == b"." else os.path.join(rel, name))

    visit(b".")
    for paths in inodes.values():
        if len(paths) > 1:
            group = tuple(sorted(paths))
            for p in paths:
                records[p] = replace(records[p], links=group)
    return records


def _show(path: bytes) -> str:
    return repr(path)[2:-1]


def _fmt(name: str, value: object) -> str:
    if name == "mode" and isinstance(value, int):
        return oct(value)
    return repr(value)


def diff(
    a: dict[bytes, Record],
    b: dict[bytes, Record],
    *,
    ignore: Iterable[str] = DEFAULT_IGNORE,
    names: tuple[str, str] = ("a", "b"),
) -> list[str]:
    """Human-readable differences between two snapshots; empty when they match.

    ``ignore`` holds Record field names plus ``dir_mtime`` (directory mtimes only).
    """
    skip = frozenset(ignore)
    unknown = skip - set(FIELDS) - {"dir_mtime", "links"}
    if unknown:
        raise ValueError(f"unknown fields to ignore: {sorted(unknown)}")
    out = []
    for path in sorted(a.keys() - b.keys()):
        out.append(f"{_show(path)}: only in {names[0]} ({a[path].type})")
    for path in sorted(b.keys() - a.keys()):
        out.append(f"{_show(path)}: only in {names[1]} ({b[path].type})")
    for path in sorted(a.keys() & b.keys()):
        ra, rb = a[path], b[path]
        for fld in fields(Record):
            name = fld.name
            if name in skip or (name == "mtime_ns" and ra.type == "dir" and "dir_mtime" in skip):
                continue
            va, vb = getattr(ra, name), getattr(rb, name)
            if va != vb:
                out.append(
                    f"{_show(path)}: {name} {names[0]}={_fmt(name, va)} {names[1]}={_fmt(name, vb)}"
                )
    return out


def has_holes(path: str | bytes | os.PathLike[str]) -> bool:
    """True when the file's data does not cover its whole size (SEEK_HOLE before EOF)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        return size > 0 and os.lseek(fd, 0, os.SEEK_HOLE) < size
    finally:
        os.close(fd)
