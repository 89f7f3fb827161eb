"""The image's kernels: where they lie in its tree, and which of them a stack of layers shows.

The one finder of kernels: `bootc-live inspect` and the host's build read the image's layers or
its unpacked tree with it, bootc.kexec reads the layers from the top down until the kernel it
boots, and that kernel's initramfs, are known.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

from .apply import OPAQUE, WHITEOUT, Key, clean

KERNEL_PLACES = "/usr/lib/modules/KVER/vmlinuz, /lib/modules/KVER/vmlinuz, /boot/vmlinuz-KVER"
_MODULES = re.compile(rb"(?:usr/)?lib/modules/([^/]+)/(vmlinuz|initramfs\.img)")
_BOOT = re.compile(rb"boot/vmlinuz-([^/]+)")

BootFile = tuple[str, str]  # (KVER, "vmlinuz" or "initramfs.img")


def version_key(kver: str) -> list[tuple[int, str]]:
    """Orders kernel versions: numeric parts as numbers (6.1.0-10 after 6.1.0-9)."""
    return [(int(p), "") if p.isdigit() else (-1, p) for p in re.split(r"[.\-+~]", kver)]


def boot_file(path: bytes) -> BootFile | None:
    """Which kernel's vmlinuz or initramfs.img the clean relative `path` is, if any."""
    m = _MODULES.fullmatch(path)
    if m:
        return m.group(1).decode("utf-8", "replace"), m.group(2).decode()
    m = _BOOT.fullmatch(path)
    return (m.group(1).decode("utf-8", "replace"), "vmlinuz") if m else None


def matters(name: bytes) -> bool:
    """Whether a layer's entry `name` can change what a KernelFinder finds."""
    key = clean(name)
    return bool(key) and (key[-1].startswith(WHITEOUT) or boot_file(b"/".join(key)) is not None)


class KernelFinder:
    """The kernels and initramfs images that a stack of layers shows, its layers fed from the
    top down, as the merged tree has them: a lower layer's file counts unless an upper layer
    has the same path, or whites it out or a parent, or makes a parent opaque."""

    def __init__(self) -> None:
        self.files: dict[BootFile, bytes] = {}  # the regular file that provides each, by path
        self.named: set[str] = set()  # every KVER that some shown boot file names
        self._shown: set[bytes] = set()  # boot-file paths the layers read so far have
        self._whiteouts: set[bytes] = set()  # paths whited out by the layers read so far
        self._opaques: set[bytes] = set()  # directories whose lower content they hide
        self._layer_whiteouts: set[bytes] = set()
        self._layer_opaques: set[bytes] = set()

    def entry(self, name: bytes, regular: bool) -> BootFile | None:
        """Note an entry of the current layer; the boot file it provides, if it is the first
        regular file shown for it (the caller then keeps its data)."""
        key = clean(name)
        last = key[-1] if key else b""
        if last.startswith(WHITEOUT):
            if last == OPAQUE:
                self._layer_opaques.add(b"/".join(key[:-1]))
            else:
                self._layer_whiteouts.add(b"/".join((*key[:-1], last[len(WHITEOUT) :])))
            return None
        path = b"/".join(key)
        which = boot_file(path)
        if which is None or path in self._shown or self._hidden(key):
            return None
        self._shown.add(path)
        self.named.add(which[0])
        if not regular or which in self.files:
            return None  # a link or other: it hides lower ones, and is no kernel
        self.files[which] = path
        return which

    def end_layer(self) -> None:
        """The current layer is read: what it whites out hides the layers below it."""
        self._whiteouts |= self._layer_whiteouts
        self._opaques |= self._layer_opaques
        self._layer_whiteouts, self._layer_opaques = set(), set()

    def kernels(self) -> list[str]:
        """Every KVER with a vmlinuz, lowest version first."""
        return sorted({k for k, what in self.files if what == "vmlinuz"}, key=version_key)

    def complete(self) -> list[str]:
        """Every KVER with both a vmlinuz and an initramfs.img, lowest version first."""
        return [k for k in self.kernels() if (k, "initramfs.img") in self.files]

    def _hidden(self, key: Key) -> bool:
        for depth in range(1, len(key) + 1):
            prefix = b"/".join(key[:depth])
            if prefix in self._whiteouts or (depth < len(key) and prefix in self._opaques):
                return True
        return False


def in_tree(root: str) -> KernelFinder:
    """The kernels of an unpacked tree at `root` (links never followed out of it)."""
    finder = KernelFinder()
    for name, regular in _tree_boot_files(root):
        finder.entry(name, regular)
    finder.end_layer()
    return finder


def _tree_boot_files(root: str) -> Iterable[tuple[bytes, bool]]:
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


def _file(root: str, relative: str) -> Iterable[tuple[bytes, bool]]:
    path = os.path.join(root, relative)
    if os.path.lexists(path):
        yield os.fsencode(relative), os.path.isfile(path) and not os.path.islink(path)
