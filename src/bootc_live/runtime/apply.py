"""Layer application: OCI changeset semantics onto a directory, never writing outside it.

Every path is resolved component by component from a descriptor of the root, reading symlinks
ourselves and resolving them inside the root (as `openat2(RESOLVE_IN_ROOT)` would), so no entry of
an untrusted layer can write, link, chmod or delete anything outside the root, whatever symlinks
earlier layers planted. The final component of an entry is never followed.

Decisions where runtimes differ (SPEC.md §3):
- whiteouts (`.wh.NAME`, `.wh..wh..opq`) hide lower layers only: what the same layer adds, before
  or after the whiteout in tar order, and under whatever name it reached it (through symlinks),
  stays: both are compared where they land in the root, not by name;
- a hardlink to a path that does not exist is an error (containerd's naive applier too), never a
  silent copy; a hardlink to a symlink links the symlink itself; hardlink entries carry no
  metadata of their own (the inode's is the target's);
- an existing directory redefined by a directory entry keeps its contents and takes the entry's
  mode, owner, xattrs (the old xattrs are cleared first) and mtime, as umoci does;
- a directory's mtime is applied when its layer is done, and a directory a layer only adds to
  keeps its earlier mtime, so the tree does not depend on when it was unpacked; it is applied
  where the directory really is, following no link: one the layer replaced later (by a link,
  say) gets none, nor does what the link leads to;
- `security.selinux` and `trusted.overlay.*` are never applied (the booted system labels itself;
  overlay metadata from a build host must not steer our mounts);
- an entry that replaces a symlink (or removes one, or a directory) changes where paths below it
  resolve: the descriptors cached for resolved directories are all dropped, so later entries of
  this layer and the next go into what is there now (a real `lib/` that replaced
  `lib -> usr/lib`), never through the old target.

The work a layer causes stays in proportion to its entries, however they are arranged: a
whiteout repeated, or nested deepest first, walks what the layer added once (Cleared); entries
below a chain of links start from their cached parent, and the link names path resolution
follows are counted against a budget (_LINK_STEPS), past which the layer is refused.

What the tar reader accepts where SPEC.md §3 is silent (v7 directories, extended header
sequences, number ranges) is pinned in tarstream.py.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any, Callable

from .errors import LAYER_HINT, LayerError, SpaceError, limit_hint, shown
from .tarstream import (
    BLOCKDEV,
    CHAR,
    DIRECTORY,
    FIFO,
    HARDLINK,
    REGULAR,
    SYMLINK,
    Stream,
    TarEntry,
    read_entries,
)

Key = tuple[bytes, ...]  # lexical path inside the root, as a tuple of bytes components

WHITEOUT = b".wh."
OPAQUE = b".wh..wh..opq"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_SYMLINKS = 40
_CACHE_SIZE = 64
_KEEP_EVERY = 16  # _set_dir_times keeps a descriptor every this many levels
# The names of link targets path resolution may follow: one walk through 40 links of 4095
# bytes (the kernel's limits) and 64 for each entry applied; a real layer follows a few.
_LINK_STEPS = 1 << 17
_LINK_STEPS_PER_ENTRY = 64
_COPY = 1 << 20
_SKIPPED_XATTRS = ("security.selinux", "trusted.overlay.")


PATH_MAX = 4096  # bytes of a path, its terminating NUL included (linux/limits.h)


class Touched:
    """The real keys a layer's entries were applied at, and their ancestors (what the layer's
    whiteouts keep), as a tree of names: marking a key costs its depth, not its depth squared
    (a set of every prefix did, and a deep path made it grow by megabytes)."""

    def __init__(self) -> None:
        self.root: dict[Any, Any] = {}

    def mark(self, key: Key) -> dict[Any, Any]:
        node = self.root
        for part in key:
            node = node.setdefault(part, {})
        return node

    def node(self, key: Key) -> dict[Any, Any] | None:
        """The tree below `key`, or None if nothing was at or below it."""
        node: dict[Any, Any] | None = self.root
        for part in key:
            if node is None:
                return None
            node = node.get(part)
        return node


_SELF, _CHILDREN = 0, 1  # marks in Cleared's tree, whose names are bytes
_Node = dict[Any, Any]  # a node of Touched's or Cleared's tree


class Cleared(Touched):
    """Where a layer's whiteouts have already removed all that the lower layers put (a name
    whited out: it and all below it; a directory made opaque: all below it), by real key, as a
    tree of names: a later whiteout at or below such a place has nothing left to hide, and
    without this a layer that repeats one (cheap in a tar: a header each) made every repeat walk
    all that the layer added there, quadratic work from a small layer. Nothing later in the layer
    can bring the lower layers' content back there: entries only add this layer's."""

    def add(self, key: Key, below_only: bool) -> None:
        self.mark(key)[_CHILDREN if below_only else _SELF] = True

    @staticmethod
    def emptied(node: dict[Any, Any] | None) -> bool:
        """Whether nothing of the lower layers is left below the place of `node`."""
        return node is not None and (_SELF in node or _CHILDREN in node)

    def covers(self, key: Key, below_only: bool) -> bool:
        """Whether nothing of the lower layers is left at `key` (below_only: below it)."""
        node = self.root
        for part in key:
            if _SELF in node or _CHILDREN in node:  # a whiteout of an ancestor, or its opaque
                return True
            below = node.get(part)
            if below is None:
                return False
            node = below
        return _SELF in node or (below_only and _CHILDREN in node)


def _check_length(path: Key, key: Key) -> None:
    """Refuse, as GNU tar and umoci do, an entry at a path of PATH_MAX bytes or more: no
    program of the booted system could open it by its path, and each level of it costs the
    kernel an inode."""
    if sum(len(part) + 1 for part in path) >= PATH_MAX:
        raise LayerError(
            f"layer entry {_show(key)} would be at a path of over {PATH_MAX - 1} bytes (PATH_MAX)",
            LAYER_HINT,
        )


def clean(name: bytes) -> Key:
    """Lexically clean a tar name into components; `..` cannot climb above the root."""
    parts: list[bytes] = []
    for part in name.split(b"/"):
        if part in (b"", b"."):
            continue
        if part == b"..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return tuple(parts)


def _show(key: Key) -> str:
    return shown(b"/" + b"/".join(key))


def _lstat(name: bytes, dir_fd: int) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _rmtree(dir_fd: int, name: bytes, keep_going: bool = False) -> None:
    """Remove directory `name` and all below it.

    Without recursion and with one descriptor held at a time, so that no tree is too deep
    (a layer may nest thousands of directories): each directory is read once, its other
    entries removed and its subdirectories listed; down into each in turn, and back up
    through `..`, checked to be the directory come down from. `keep_going`: what cannot be
    removed is left and the rest goes (the first failure is raised at the end).
    """
    failed: list[OSError] = []

    def fail(err: OSError) -> None:
        if not keep_going:
            raise err
        failed.append(err)

    def read(fd: int) -> list[bytes]:
        subdirectories = []
        with os.scandir(fd) as it:
            for child in it:
                child_name = os.fsencode(child.name)
                try:
                    if child.is_dir(follow_symlinks=False):
                        subdirectories.append(child_name)
                    else:
                        os.unlink(child_name, dir_fd=fd)
                except OSError as err:
                    fail(err)
        return subdirectories

    fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    try:
        left = read(fd)  # the subdirectories of fd still to remove
        above: list[tuple[list[bytes], bytes, int, int]] = []  # (left, name, st_dev, st_ino)
        while left or above:
            if not left:
                left, down, dev, ino = above.pop()
                up = os.open(b"..", _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = up
                st = os.fstat(fd)
                if (st.st_dev, st.st_ino) != (dev, ino):
                    raise OSError(errno.ESTALE, "a directory moved while it was being removed")
                try:
                    os.rmdir(down, dir_fd=fd)
                except OSError as err:
                    fail(err)
                continue
            down = left.pop()
            try:
                below = os.open(down, _DIR_FLAGS, dir_fd=fd)
            except OSError as err:
                fail(err)
                continue
            st = os.fstat(fd)
            os.close(fd)
            fd = below
            above.append((left, down, st.st_dev, st.st_ino))
            left = read(fd)
    finally:
        os.close(fd)
    try:
        os.rmdir(name, dir_fd=dir_fd)
    except OSError as err:
        raise (failed[0] if failed else err) from None
    if failed:
        raise failed[0]


def rmtree(path: str, keep_going: bool = False) -> None:
    """Remove `path` (a tree, a file or a symlink) if it is there, however deep the tree.

    The path is taken as written: an empty one, or one ending in `.` or `..`, names no
    entry of a directory and is left alone (os.path.abspath would make "" the current
    directory, and read `link/..` without following the link).
    """
    parent, name = os.path.split(path.rstrip("/"))
    if name in ("", ".", ".."):
        return
    try:
        dir_fd = os.open(parent or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        existing = _lstat(os.fsencode(name), dir_fd)
        if existing is None:
            return
        if stat.S_ISDIR(existing.st_mode):
            _rmtree(dir_fd, os.fsencode(name), keep_going)
        else:
            os.unlink(name, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)


class Applier:
    """Applies layer tar streams, in order, onto the directory `root`."""

    def __init__(
        self,
        root: str,
        warn: Callable[[str], None],
        observe: Callable[[TarEntry], None] | None = None,
    ) -> None:
        self.root_fd = os.open(root, _DIR_FLAGS)
        self._warn = warn
        self._observe = observe  # told of every entry, before it is applied
        self._warned: set[str] = set()
        # Resolved directories: lexical key -> (descriptor, real key: where it is in the root)
        # (and how many links the walk to it followed: a lookup may follow 40 in all)
        self._dirs: OrderedDict[Key, tuple[int, Key, int]] = OrderedDict()
        self._stale: list[int] = []  # forgotten descriptors, closed once no caller holds them
        self.entries = 0
        self.bytes_written = 0
        # Real keys of this layer's entries and their ancestors (what its whiteouts keep).
        self._touched = Touched()
        self._cleared = Cleared()
        self._dir_times: dict[Key, int] = {}  # mtimes to set when the layer is done
        self._link_steps = 0  # names of link targets followed (_walk)

    def close(self) -> None:
        self._forget_dirs()
        self._close_stale()
        os.close(self.root_fd)

    # -- the layer ------------------------------------------------------------------------

    def apply_layer(self, stream: Stream) -> None:
        """Apply one layer's uncompressed tar stream."""
        self._touched = Touched()
        self._cleared = Cleared()
        self._dir_times = {}
        for entry in read_entries(stream):
            if self._observe is not None:
                self._observe(entry)
            key = clean(entry.name)
            self._close_stale()
            try:
                self._apply(entry, key, stream)
            except OSError as err:
                if err.errno == errno.ENOSPC:
                    raise SpaceError(
                        f"the root filesystem is full while writing {_show(key)} "
                        f"({self.bytes_written >> 20} MiB written)",
                        "the image is larger than the space given to it: "
                        "add RAM or use bootc.zram=",
                    ) from None
                raise LayerError(
                    f"cannot apply {_show(key)}: {err.strerror or err}",
                    limit_hint(err)
                    or "this system refused it: check the space, the inodes and the limits "
                    "where the root is written",
                ) from None
            except (ValueError, OverflowError) as err:  # a value no system call takes
                raise LayerError(f"cannot apply {_show(key)}: {err}", LAYER_HINT) from None
            self.entries += 1
        self._set_dir_times()

    def _apply(self, entry: TarEntry, key: Key, stream: Stream) -> None:
        if key and key[-1].startswith(WHITEOUT):
            if entry.kind == REGULAR:
                stream.skip(entry.size)
            self._whiteout(key)
            return
        if not key:
            if entry.kind != DIRECTORY:
                raise LayerError(f"layer entry {shown(entry.name)} would replace the root itself")
            self._define_dir(self.root_fd, entry, key, key, clear_xattrs=True)
            return
        _check_length(key, key)  # before any directory is made for it
        parent, real_parent = self._resolve(key[:-1], create=True)
        self._note_parent(real_parent, parent)
        name = key[-1]
        real = (*real_parent, name)
        _check_length(real, key)  # through links, it may be longer
        self._touched.mark(real)
        existing = _lstat(name, parent)
        if entry.kind == DIRECTORY:
            if existing is not None and not stat.S_ISDIR(existing.st_mode):
                self._remove(parent, name, existing)
                existing = None
            if existing is None:
                os.mkdir(name, 0o700, dir_fd=parent)
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
            try:
                self._define_dir(fd, entry, key, real, clear_xattrs=existing is not None)
            finally:
                os.close(fd)
        elif entry.kind == HARDLINK:
            self._hardlink(entry, key, real, parent, existing)
        else:
            if existing is not None:
                self._remove(parent, name, existing)
            if entry.kind == REGULAR:
                self._regular(entry, key, parent, stream)
            else:
                self._special(entry, parent, name)

    # -- entry kinds ----------------------------------------------------------------------

    def _define_dir(
        self, fd: int, entry: TarEntry, key: Key, real: Key, clear_xattrs: bool = False
    ) -> None:
        """A directory entry's metadata; its mtime is set when the layer is done, keyed by the
        directory itself (`real`: `key` with symlinks resolved), however a later entry names it."""
        if clear_xattrs:
            for attr in os.listxattr(fd):
                if not attr.startswith(_SKIPPED_XATTRS):
                    os.removexattr(fd, attr)
        os.chown(fd, entry.uid, entry.gid)
        os.chmod(fd, entry.mode)
        self._set_xattrs(fd, entry, key)
        self._dir_times[real] = entry.mtime_ns

    def _regular(self, entry: TarEntry, key: Key, parent: int, stream: Stream) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(key[-1], flags, 0o600, dir_fd=parent)
        try:
            if entry.sparse is None:
                self._copy(stream, fd, entry.size)
            else:
                self._copy_sparse(entry, key, stream, fd)
            os.chown(fd, entry.uid, entry.gid)
            os.chmod(fd, entry.mode)
            self._set_xattrs(fd, entry, key)
            os.utime(fd, ns=(entry.mtime_ns, entry.mtime_ns))
        finally:
            os.close(fd)

    def _copy(self, stream: Stream, fd: int, size: int) -> None:
        while size:
            data = stream.read_some(min(size, _COPY))
            size -= len(data)
            while data:
                written = os.write(fd, data)
                data = data[written:]
                self.bytes_written += written

    def _copy_sparse(self, entry: TarEntry, key: Key, stream: Stream, fd: int) -> None:
        assert entry.sparse is not None  # checked by the tar reader
        for offset, length in entry.sparse:
            if length:  # a map may hold many empty segments: no system call for them
                os.lseek(fd, offset, os.SEEK_SET)
                self._copy(stream, fd, length)
        os.ftruncate(fd, entry.real_size)

    def _special(self, entry: TarEntry, parent: int, name: bytes) -> None:
        if entry.kind == SYMLINK:
            os.symlink(entry.linkname, name, dir_fd=parent)
        else:
            kind = {CHAR: stat.S_IFCHR, BLOCKDEV: stat.S_IFBLK, FIFO: stat.S_IFIFO}[entry.kind]
            device = os.makedev(entry.devmajor, entry.devminor) if kind != stat.S_IFIFO else 0
            os.mknod(name, kind | 0o600, device, dir_fd=parent)
        os.chown(name, entry.uid, entry.gid, dir_fd=parent, follow_symlinks=False)
        if entry.kind != SYMLINK:
            os.chmod(name, entry.mode, dir_fd=parent)
        # Path-based xattr calls have no dir_fd; /proc/self/fd/N names the resolved parent.
        self._set_xattrs(b"/proc/self/fd/%d/%s" % (parent, name), entry, ())
        os.utime(name, ns=(entry.mtime_ns, entry.mtime_ns), dir_fd=parent, follow_symlinks=False)

    def _hardlink(
        self, entry: TarEntry, key: Key, real: Key, parent: int, existing: os.stat_result | None
    ) -> None:
        target = clean(entry.linkname)
        missing = LayerError(
            f"layer entry {_show(key)} is a hardlink to {_show(target)}, which does not exist"
        )
        if not target:
            raise LayerError(f"layer entry {_show(key)} is a hardlink to the root directory")
        if target == key:
            if existing is None:
                raise missing
            return  # a link to itself: nothing to do
        try:
            target_parent, real_target_parent = self._resolve(target[:-1], create=False)
        except FileNotFoundError:
            raise missing from None
        target_stat = _lstat(target[-1], target_parent)
        if target_stat is None:
            raise missing
        if stat.S_ISDIR(target_stat.st_mode):
            raise LayerError(f"layer entry {_show(key)} is a hardlink to a directory")
        if existing is not None:
            if (existing.st_dev, existing.st_ino) == (target_stat.st_dev, target_stat.st_ino):
                return  # already the same inode
            if real_target_parent[: len(real)] == real:
                raise LayerError(
                    f"layer entry {_show(key)} is a hardlink to {_show(target)}, "
                    "which replacing it would remove"
                )
            self._remove(parent, key[-1], existing)
        os.link(
            target[-1], key[-1], src_dir_fd=target_parent, dst_dir_fd=parent, follow_symlinks=False
        )

    # -- metadata -------------------------------------------------------------------------

    def _set_xattrs(self, where: int | bytes, entry: TarEntry, key: Key) -> None:
        for attr, value in entry.xattrs.items():
            if attr.startswith(_SKIPPED_XATTRS):
                self._warn_once(attr, f"not applying {attr} xattrs from the image")
                continue
            try:
                if isinstance(where, int):
                    os.setxattr(where, attr, value)
                else:
                    os.setxattr(where, attr, value, follow_symlinks=False)
            except OSError as err:
                if err.errno in (errno.ERANGE, errno.E2BIG):
                    raise LayerError(
                        f"{_show(key)}: its xattr {shown(attr)} ({len(value)} bytes) is not one "
                        f"Linux can hold ({err.strerror}; a name of at most 255 bytes, a value "
                        "of at most 64 KiB)"
                    ) from None
                if err.errno not in (errno.EOPNOTSUPP, errno.EPERM):
                    raise
                namespace = attr.split(".", 1)[0]
                self._warn_once(
                    namespace,
                    f"the root filesystem does not take {namespace}.* xattrs "
                    f"({err.strerror}); {attr} of {_show(key) if key else 'a node'} and others "
                    "are dropped",
                )

    def _warn_once(self, topic: str, message: str) -> None:
        if topic not in self._warned:
            self._warned.add(topic)
            self._warn(message)

    def _note_parent(self, key: Key, fd: int) -> None:
        """Remember a directory's mtime before this layer changes its contents."""
        if key not in self._dir_times:
            self._dir_times[key] = os.fstat(fd).st_mtime_ns

    def _set_dir_times(self) -> None:
        """Give each directory the layer changed its mtime. Each is found at its real key, from
        the root, following no link: a real key has none, so a link there now (or nothing, or
        a file) means the layer replaced that directory later, and the one now reached through
        the link is not the one to set. In the keys' order, from the deepest descriptor kept on
        the way to the last one (every _KEEP_EVERY levels and its end, so few are open): a key
        below a deep directory opens what is below, not the whole path again."""
        path: list[bytes] = []  # the real key walked last, as far as it exists
        kept: dict[int, int] = {}  # descriptors of path[:depth], by depth

        def leave(depth: int, fd: int) -> None:
            """Done with `fd`, at `depth`: closed unless it is the root or kept every 16."""
            if fd != self.root_fd and depth % _KEEP_EVERY:
                kept.pop(depth, None)
                os.close(fd)

        try:
            for key in sorted(self._dir_times):
                common = 0
                while common < min(len(path), len(key)) and path[common] == key[common]:
                    common += 1
                depth = max((d for d in kept if d <= common), default=0)
                for deeper in [d for d in kept if d > depth]:
                    os.close(kept.pop(deeper))
                del path[depth:]
                fd = kept.get(depth, self.root_fd)
                for part in key[depth:]:
                    try:
                        below = os.open(part, _DIR_FLAGS, dir_fd=fd)
                    except OSError as err:
                        if err.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                            raise
                        break  # replaced or removed later in the layer
                    leave(depth, fd)
                    fd, depth = below, depth + 1
                    path.append(part)
                    if depth % _KEEP_EVERY == 0:
                        kept[depth] = fd
                else:
                    mtime_ns = self._dir_times[key]
                    os.utime(fd, ns=(mtime_ns, mtime_ns))
                    if fd != self.root_fd:
                        kept[depth] = fd  # the next key may be below it
                    continue
                leave(depth, fd)
        finally:
            for fd in kept.values():
                os.close(fd)

    # -- whiteouts and removal ------------------------------------------------------------

    def _whiteout(self, key: Key) -> None:
        parent_key, name = key[:-1], key[-1]
        if name != OPAQUE:
            name = name[len(WHITEOUT) :]
            if name in (b"", b".", b".."):
                raise LayerError(f"layer has an invalid whiteout {_show(key)}")
        try:
            parent, real_parent = self._resolve(parent_key, create=False)
        except (FileNotFoundError, LayerError):
            return  # whiting out below something that is not a directory: nothing to hide
        self._note_parent(real_parent, parent)
        opaque = name == OPAQUE
        target = real_parent if opaque else (*real_parent, name)
        if self._cleared.covers(target, below_only=opaque):
            return
        if opaque:
            for child in os.listdir(parent):
                child_name = os.fsencode(child)
                self._remove_lower(parent, child_name, (*real_parent, child_name))
        else:
            self._remove_lower(parent, name, target)
        self._cleared.add(target, below_only=opaque)

    def _remove_lower(self, dir_fd: int, name: bytes, key: Key) -> None:
        """Remove what lower layers put at `name`, keeping what this layer added.

        Depth first through what this layer touched, by a loop (a layer may nest deeper than
        Python recurses), one descriptor held for each level. Below a place that an earlier
        whiteout of the layer cleared (Cleared), only this layer's content is left: it is not
        walked again (whiteouts nested deepest first would each walk all the layer added below
        them).
        """
        stack: list[tuple[int, Iterator[bytes], _Node, _Node | None]] = []

        def visit(parent: int, child: bytes, touched: _Node | None, cleared: _Node | None) -> None:
            existing = _lstat(child, parent)
            if existing is None:
                return
            if touched is None:
                self._remove(parent, child, existing)
            elif stat.S_ISDIR(existing.st_mode) and not Cleared.emptied(cleared):
                fd = os.open(child, _DIR_FLAGS, dir_fd=parent)
                names = [os.fsencode(n) for n in os.listdir(fd)]
                stack.append((fd, iter(names), touched, cleared))

        try:
            visit(dir_fd, name, self._touched.node(key), self._cleared.node(key))
            while stack:
                fd, children, below, cleared = stack[-1]
                child = next(children, None)
                if child is None:
                    os.close(fd)
                    stack.pop()
                else:
                    visit(
                        fd, child, below.get(child), None if cleared is None else cleared.get(child)
                    )
        finally:
            for fd, _, _, _ in stack:
                os.close(fd)

    def _remove(self, dir_fd: int, name: bytes, existing: os.stat_result) -> None:
        """Remove a node; every removal goes through here (it keeps the cache true)."""
        if stat.S_ISDIR(existing.st_mode):
            self._forget_dirs()
            _rmtree(dir_fd, name)
        else:
            if stat.S_ISLNK(existing.st_mode):
                self._forget_dirs()  # cached directories may have been reached through it
            os.unlink(name, dir_fd=dir_fd)

    # -- resolution inside the root -------------------------------------------------------

    def _forget_dirs(self) -> None:
        """Drop the cache after a directory or symlink removal: cached paths (below it, or
        reached through it from anywhere) may now resolve elsewhere."""
        self._stale.extend(fd for fd, _, _ in self._dirs.values())
        self._dirs.clear()

    def _close_stale(self) -> None:
        for fd in self._stale:
            os.close(fd)
        self._stale.clear()

    def _dir(self, key: Key, create: bool) -> int:
        """A descriptor of directory `key`, resolved inside the root (cached; do not close)."""
        return self._resolve(key, create)[0]

    def _resolve(self, key: Key, create: bool) -> tuple[int, Key]:
        """`_dir`, and the real key of that directory (symlinks resolved)."""
        if not key:
            return self.root_fd, ()
        found = self._dirs.get(key)
        if found is not None:
            self._dirs.move_to_end(key)
            return found[:2]
        parent = self._dirs.get(key[:-1])
        if parent is not None:  # the siblings' parent, cached by their first walk: one step
            self._dirs.move_to_end(key[:-1])
            found = self._walk(key, create, parent)
        else:
            found = self._walk(key, create)
        self._remember(key, found)
        return found[:2]

    def _remember_parent(self, key: Key, fd: int, names: list[bytes], links: int) -> None:
        """Cache `key` as resolved at `fd` (the walk goes on with its own descriptor)."""
        if key not in self._dirs:
            self._remember(key, (os.dup(fd), tuple(names), links))

    def _remember(self, key: Key, found: tuple[int, Key, int]) -> None:
        self._dirs[key] = found
        if len(self._dirs) > _CACHE_SIZE:
            self._stale.append(self._dirs.popitem(last=False)[1][0])

    def _walk(
        self, key: Key, create: bool, parent: tuple[int, Key, int] | None = None
    ) -> tuple[int, Key, int]:
        """Resolve `key` from the root, or only its last name from `parent` (its parent's
        descriptor, real key and the links followed to it). A walk from the root also caches
        the parent it passes, so that a sibling's walk is one step: without it, each entry
        below a link paid the link's whole expansion again (40 links of 4095 bytes: tens of
        thousands of steps an entry). The links expanded are counted against a budget for all
        the entries so far (_LINK_STEPS): a layer that makes its entries pay more is refused."""
        # One descriptor at a time, the current directory's (a tree 1000 deep fits any open-file
        # limit): its parent, for `..`, is opened from it, which inside the root is the
        # directory `names` ends in (symbolic links are followed here, not by the kernel).
        cur = self.root_fd if parent is None else os.dup(parent[0])
        names: list[bytes] = [] if parent is None else list(parent[1])  # `cur`'s real key
        todo = list(reversed(key if parent is None else key[-1:]))
        key_parts = len(todo)  # of `todo`, the bottom ones are key's, above them links'
        links = 0 if parent is None else parent[2]

        def enter(fd: int) -> None:
            nonlocal cur
            if cur != self.root_fd:
                os.close(cur)
            cur = fd

        try:
            while todo:
                if len(todo) == key_parts:
                    if key_parts == 1 and parent is None and len(key) > 1:
                        self._remember_parent(key[:-1], cur, names, links)
                    key_parts -= 1
                part = todo.pop()
                if part in (b"", b"."):
                    continue
                if part == b"..":
                    if names:
                        enter(os.open(b"..", _DIR_FLAGS, dir_fd=cur))
                        names.pop()
                    continue
                try:
                    fd = os.open(part, _DIR_FLAGS, dir_fd=cur)
                except FileNotFoundError:
                    if not create:
                        raise
                    _check_length((*names, part), key)  # reached through links, perhaps
                    os.mkdir(part, 0o755, dir_fd=cur)
                    fd = os.open(part, _DIR_FLAGS, dir_fd=cur)
                    enter(fd)
                    os.chown(fd, 0, 0)
                    os.chmod(fd, 0o755)  # implied parents: 0755 root:root, whatever the umask
                    names.append(part)
                    # The layer's own, whatever comes next (a link's `..` may leave it at once):
                    # its whiteouts keep it, in whatever order they come.
                    self._touched.mark(tuple(names))
                    continue
                except OSError as err:
                    if err.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                else:
                    enter(fd)
                    names.append(part)
                    continue
                st = os.stat(part, dir_fd=cur, follow_symlinks=False)
                if not stat.S_ISLNK(st.st_mode):
                    raise LayerError(f"{_show(key)}: a parent is not a directory")
                links += 1
                if links > _MAX_SYMLINKS:
                    raise LayerError(f"{_show(key)}: too many levels of symbolic links")
                target = os.readlink(part, dir_fd=cur)
                if target.startswith(b"/"):
                    enter(self.root_fd)
                    names.clear()
                parts = target.split(b"/")
                self._link_steps += len(parts)
                if self._link_steps > _LINK_STEPS + _LINK_STEPS_PER_ENTRY * self.entries:
                    raise LayerError(
                        f"{_show(key)}: the layer's paths go through symbolic links too often "
                        f"({self._link_steps} names of link targets followed for "
                        f"{self.entries + 1} entries)",
                        LAYER_HINT,
                    )
                todo.extend(reversed(parts))
        except BaseException:
            enter(self.root_fd)  # closes the current one
            raise
        return (os.dup(cur) if cur == self.root_fd else cur), tuple(names), links
