"""The image's kernels: where they lie in its tree, and which of them a stack of layers shows.

The one finder of kernels: `bootc-live inspect` and the host's build read the image's layers or
its unpacked tree with it, and bootc.kexec reads the layers from the top down, keeping the bytes
of the files the finder asks for.

The finder follows the merged tree as an unpacker makes it, whatever wrote the layers:
- an upper layer's entry at a path hides the lower layers' (a link or a device over a kernel's
  file leaves that place without one); within a layer, the last entry at a path counts;
- whiteouts, opaque directories (the root's too) and a non-directory over a directory of the
  kernel's place (`usr/lib/modules/KVER` made a link, say) hide what the layers below have
  there;
- a kernel's file may be a hard link: ostree-based images (Fedora's and CentOS's bootc images)
  store each file once under sysroot/ostree/repo/objects and link every place to it, earlier
  in the same layer or in a lower one. Its bytes are the target's; bootc.kexec reads that
  layer a second time for them (`relink`) when they came before the link. A target that a
  lower layer holds as a hard link is followed to that link's target, as the unpacker links
  it (a chain within one layer is not: tar writers link every name to the first);
- one KVER's file in two places: usr/lib/modules/KVER first, then lib/modules/KVER, then
  boot/vmlinuz-KVER, in whatever order the layers hold them.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass

from .apply import OPAQUE, WHITEOUT, Key, clean
from .tarstream import DIRECTORY, HARDLINK, REGULAR, SYMLINK, TarEntry

KERNEL_PLACES = "/usr/lib/modules/KVER/vmlinuz, /lib/modules/KVER/vmlinuz, /boot/vmlinuz-KVER"
_MODULES = re.compile(rb"(?:usr/)?lib/modules/([^/]+)/(vmlinuz|initramfs\.img)")
_BOOT = re.compile(rb"boot/vmlinuz-([^/]+)")
_RUNS = re.compile(r"[0-9]+|[^0-9]+")  # a version part's numbers (ASCII digits only) and words
# The directories a kernel's place lies under: anything but a directory there hides the place.
_ABOVE = re.compile(rb"usr(?:/lib(?:/modules(?:/[^/]+)?)?)?|lib(?:/modules(?:/[^/]+)?)?|boot")

BootFile = tuple[str, str]  # (KVER, "vmlinuz" or "initramfs.img")
Where = tuple[int, bytes]  # a regular file's bytes: (the layer, counted from the top; its path)
Parts = list[list[tuple[int, str]]]  # a version's parts, each as its numbers and words


def version_key(kver: str) -> tuple[Parts, int, Parts, int, Parts, str]:
    """Orders kernel versions: numbers as numbers, within a part too (6.1.0-10 after 6.1.0-9,
    rc10 after rc9, as `sort -V` and rpm order them); a `~` part before the version without it
    (6.12~rc1 before 6.12, as Debian orders them), and a `+flavour` (Fedora's +debug, +64k)
    just below the plain kernel of the same version, the flavours in order among themselves
    (no two KVERs compare equal, those that differ only in how they write the same numbers
    ordered as text: the choice never depends on the order they were found in)."""
    plain, plus, flavour = kver.partition("+")
    release, tilde, pre = plain.partition("~")
    return (
        _parts(release),
        0 if tilde else 1,
        _parts(pre),
        0 if plus else 1,
        _parts(flavour),
        kver,
    )


def _parts(text: str) -> Parts:
    return [
        [(int(run), "") if "0" <= run[0] <= "9" else (-1, run) for run in _RUNS.findall(part)]
        for part in re.split(r"[.\-]", text)
    ]


def boot_file(path: bytes) -> BootFile | None:
    """Which kernel's vmlinuz or initramfs.img the clean relative `path` is, if any."""
    m = _MODULES.fullmatch(path)
    if m:
        return m.group(1).decode("utf-8", "replace"), m.group(2).decode()
    m = _BOOT.fullmatch(path)
    return (m.group(1).decode("utf-8", "replace"), "vmlinuz") if m else None


def _rank(path: bytes) -> int:
    """Which of a KVER's places is taken when several have its file: usr/lib/modules first."""
    return 0 if path.startswith(b"usr/") else 1 if path.startswith(b"lib/") else 2


def matters(name: bytes) -> bool:
    """Whether a layer's entry `name` can change what a KernelFinder finds."""
    key = clean(name)
    if not key:
        return False
    path = b"/".join(key)
    return (
        key[-1].startswith(WHITEOUT)
        or boot_file(path) is not None
        or _ABOVE.fullmatch(path) is not None
    )


@dataclass
class _Shown:
    """The entry a boot file's path shows: the top layer's, the last of it."""

    which: BootFile
    kind: str
    target: bytes = b""  # a hard link's, clean; a symbolic link's, as it is written
    where: Where | None = None  # where its bytes are, once known


class KernelFinder:
    """The kernels and initramfs images that a stack of layers shows, its layers fed from the
    top down (module docstring).

    For each layer: `entry()` for each of its entries in order, then `end_layer()`. A reader
    that wants the bytes keeps those of each regular file `entry()` answers True for, and if
    `relink()` names paths after a layer, reads that layer again keeping their last regular
    file's bytes, and tells `end_layer()` which it found."""

    def __init__(self) -> None:
        self.named: set[str] = set()  # every KVER that some shown boot file names
        self._shown: dict[bytes, _Shown] = {}  # boot-file paths, as the top layer shows them
        self._hiders: set[bytes] = set()  # paths whose lower content upper layers hide
        self._opaques: set[bytes] = set()  # directories whose lower content they hide
        self._layer = 0  # the current layer, counted from the top
        self._layer_paths: set[bytes] = set()  # boot-file paths this layer has shown
        self._layer_hiders: set[bytes] = set()
        self._layer_opaques: set[bytes] = set()
        self._wanted: dict[bytes, list[_Shown]] = {}  # hard links' targets, by path, unread
        self._layer_found: set[bytes] = set()  # targets this layer has
        self._layer_chained: set[bytes] = set()  # targets' own targets, this layer's links

    def entry(self, name: bytes, kind: str = REGULAR, linkname: bytes = b"") -> bool:
        """Note an entry of the current layer; whether the bytes of this regular file are
        wanted (a boot file's, or a hard link's target)."""
        key = clean(name)
        if not key:
            if kind != DIRECTORY:
                self._layer_hiders.add(b"")
            return False
        last = key[-1]
        if last.startswith(WHITEOUT):
            if last == OPAQUE:
                self._layer_opaques.add(b"/".join(key[:-1]))
            else:
                self._layer_hiders.add(b"/".join((*key[:-1], last[len(WHITEOUT) :])))
            return False
        path = b"/".join(key)
        if kind != DIRECTORY and _ABOVE.fullmatch(path):
            self._layer_hiders.add(path)
        wanted = kind == REGULAR and bool(self._wanted.get(path))
        if wanted:  # the last regular entry at the path in this layer is the one kept
            for link in self._wanted[path]:
                link.where = (self._layer, path)
            self._layer_found.add(path)
        elif kind == HARDLINK and self._wanted.get(path):
            # A target that is a hard link itself (to a file of this layer or a lower one, as
            # the unpacker links it): its target's bytes are the file's.
            chained = b"/".join(clean(linkname))
            links = self._wanted.pop(path)
            for link in links:
                link.where, link.target = None, chained
            self._wanted.setdefault(chained, []).extend(links)
            self._layer_chained.add(chained)
        which = boot_file(path)
        if which is None or self._hidden(key):
            return wanted
        if path in self._shown and path not in self._layer_paths:
            return wanted  # an upper layer's entry shows here
        self._layer_paths.add(path)
        self.named.add(which[0])
        shown = _Shown(which, kind)
        if kind == REGULAR:
            shown.where = (self._layer, path)
        elif kind == HARDLINK:
            shown.target = b"/".join(clean(linkname))
        elif kind == SYMLINK:
            shown.target = linkname
        self._shown[path] = shown
        return kind == REGULAR or wanted

    def note(self, entry: TarEntry) -> bool:
        """`entry()` for a tar entry."""
        return self.entry(entry.name, entry.kind, entry.linkname)

    def relink(self) -> set[bytes]:
        """The targets of this layer's hard-linked boot files (and of the links this layer
        holds at an upper one's targets) whose bytes are not known: those came earlier in this
        layer, or lie in a lower one."""
        chained = {
            t for t in self._layer_chained if any(s.where is None for s in self._wanted.get(t, ()))
        }
        return chained | {
            s.target
            for path, s in self._shown.items()
            if path in self._layer_paths and s.kind == HARDLINK and s.where is None
        }

    def end_layer(self, relinked: Iterable[bytes] = ()) -> None:
        """The current layer is read (`relinked`: the targets `relink()` named that a second
        read of it found): what it whites out hides the layers below it, and the targets not
        found in it are looked for in those."""
        found = set(relinked)
        for path in self._layer_paths:
            shown = self._shown[path]
            if shown.kind == HARDLINK and shown.where is None:
                if shown.target in found:
                    shown.where = (self._layer, shown.target)
                else:
                    self._wanted.setdefault(shown.target, []).append(shown)
        for path in self._layer_found:  # found in this layer: looked for no more
            self._wanted.pop(path, None)
        for target in self._layer_chained & found:  # came before the link to it
            for link in self._wanted.pop(target, []):
                link.where = (self._layer, target)
        self._layer_found, self._layer_chained = set(), set()
        self._hiders |= self._layer_hiders
        self._opaques |= self._layer_opaques
        self._layer_paths, self._layer_hiders, self._layer_opaques = set(), set(), set()
        self._layer += 1

    @property
    def files(self) -> dict[BootFile, bytes]:
        """The path that provides each boot file: a regular file or a hard link, the first of
        its places (_rank)."""
        best: dict[BootFile, bytes] = {}
        for path, shown in self._shown.items():
            if shown.kind in (REGULAR, HARDLINK):
                have = best.get(shown.which)
                if have is None or _rank(path) < _rank(have):
                    best[shown.which] = path
        return best

    def where(self, which: BootFile) -> Where | None:
        """Where the bytes of a boot file are, if they are known yet."""
        path = self.files.get(which)
        return None if path is None else self._shown[path].where

    def at_place(self, which: BootFile) -> tuple[bytes, str, bytes] | None:
        """What the first of a boot file's places shows, if any shows something: the file's
        (`files`), else a symbolic link or whatever took its place. Its path, kind and link
        target."""
        path = self.files.get(which) or min(
            (path for path, shown in self._shown.items() if shown.which == which),
            key=_rank,
            default=None,
        )
        if path is None:
            return None
        shown = self._shown[path]
        return path, shown.kind, shown.target

    def final(self, kver: str) -> bool:
        """Whether the layers below cannot change which files kernel `kver` has: both lie
        in its first place, and their bytes are known."""
        return all(
            (path := self.files.get((kver, what))) is not None
            and _rank(path) == 0
            and self._shown[path].where is not None
            for what in ("vmlinuz", "initramfs.img")
        )

    def kernels(self) -> list[str]:
        """Every KVER with a vmlinuz, lowest version first."""
        return sorted({k for k, what in self.files if what == "vmlinuz"}, key=version_key)

    def complete(self) -> list[str]:
        """Every KVER with both a vmlinuz and an initramfs.img, lowest version first."""
        return [k for k in self.kernels() if (k, "initramfs.img") in self.files]

    def _hidden(self, key: Key) -> bool:
        if b"" in self._hiders or b"" in self._opaques:
            return True
        for depth in range(1, len(key) + 1):
            prefix = b"/".join(key[:depth])
            if prefix in self._hiders or (depth < len(key) and prefix in self._opaques):
                return True
        return False


def in_tree(root: str) -> KernelFinder:
    """The kernels of an unpacked tree at `root` (links never followed, out of it or in)."""
    finder = KernelFinder()
    for name, kind, linkname in _tree_boot_files(root):
        finder.entry(name, kind, linkname)
    finder.end_layer()
    return finder


def _tree_boot_files(root: str) -> Iterable[tuple[bytes, str, bytes]]:
    for modules in ("usr/lib/modules", "lib/modules"):
        for kver in _listing(root, modules):
            for what in ("vmlinuz", "initramfs.img"):
                yield from _file(root, f"{modules}/{kver}/{what}")
    for name in _listing(root, "boot"):
        if name.startswith("vmlinuz-"):
            yield from _file(root, f"boot/{name}")


def _listing(root: str, relative: str) -> list[str]:
    """The names in a directory of the tree; none if it, or a parent, is a link (whose target
    would be the host's)."""
    path = root
    for part in relative.split("/"):
        path = os.path.join(path, part)
        if os.path.islink(path) or not os.path.isdir(path):
            return []
    return sorted(os.listdir(path))


def _file(root: str, relative: str) -> Iterable[tuple[bytes, str, bytes]]:
    """The file at `relative`, its kind and a link's target, if there is one; nothing when a
    directory on the way is a link (usr/lib/modules/KVER -> /elsewhere) or not a
    directory."""
    path = root
    parts = relative.split("/")
    for part in parts[:-1]:
        path = os.path.join(path, part)
        if os.path.islink(path) or not os.path.isdir(path):
            return
    path = os.path.join(path, parts[-1])
    try:
        mode = os.lstat(path).st_mode
        linkname = os.fsencode(os.readlink(path)) if stat.S_ISLNK(mode) else b""
    except OSError:
        return
    kind = REGULAR if stat.S_ISREG(mode) else SYMLINK if stat.S_ISLNK(mode) else "other"
    yield os.fsencode(relative), kind, linkname
