"""Give the memory of the initramfs's unused kernel modules to the root.

The initramfs lives in RAM for the whole boot, and a generic one carries every driver of its
kernel: on Debian 12 about 130 MiB of module files, two thirds of the initramfs. By the time the
image is unpacked, udev has bound the drivers of the devices this boot uses (the network is up,
the source is open) and the root has loaded what it needs (zram, ext4, loop, erofs, overlay);
after switch root the initramfs is freed anyway and the image's own modules serve. So the files
of the modules that are not loaded are deleted then, which returns their pages at once.

Only ever inside an initramfs (/etc/initrd-release, as systemd tells), not with
bootc.keep-modules=1, and only where the files can be deleted: Debian 13's initramfs (dracut-ng,
systemd 257, kernel 6.12) keeps its modules on a read-only filesystem, so nothing is counted
there, and a file that cannot be deleted ends the freeing, never the boot.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import ImageError
from .sources import read_file

INITRD_RELEASE = "/etc/initrd-release"
MODULES_DIR = "/lib/modules"
PROC_MODULES = "/proc/modules"
PAGE = 4096
DEP_LIMIT = 64 << 20  # bytes of modules.dep (a distribution kernel's whole is under 1 MiB)
_SUFFIXES = (".ko.xz", ".ko.zst", ".ko.gz", ".ko")


@dataclass(frozen=True)
class Unused:
    """The files of the modules that are not loaded, and the memory they hold."""

    paths: tuple[str, ...] = ()
    size: int = 0


def module_name(path: str) -> str:
    """The name the kernel lists a module file under: kernel/fs/fat/vfat.ko.xz -> vfat,
    lz4hc_compress.ko -> lz4hc_compress, nf-nat.ko -> nf_nat."""
    name = os.path.basename(path)
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name.replace("-", "_")


def in_initramfs(release: str = INITRD_RELEASE) -> bool:
    return os.path.exists(release)


def unused(directory: str | None = None, proc_modules: str = PROC_MODULES) -> Unused:
    """The module files (as modules.dep lists them) whose module is not loaded now."""
    base = directory or os.path.join(MODULES_DIR, os.uname().release)
    try:
        loaded = _loaded(proc_modules)
        # Not a regular file (a FIFO would wait for ever, /dev/zero fill the memory), too
        # large, unreadable: nothing is freed, as without one.
        data = read_file(os.path.join(base, "modules.dep"), "modules.dep", DEP_LIMIT)
    except (OSError, ImageError):
        return Unused()
    text = data.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n")
    listed = [line.partition(":")[0].strip() for line in text.split("\n")]
    if not os.access(base, os.W_OK):  # e.g. read-only (EROFS): nothing can be given back
        return Unused()
    paths = [os.path.join(base, rel) for rel in listed if rel and module_name(rel) not in loaded]
    return reclaimable(paths)


def reclaimable(paths: Iterable[str]) -> Unused:
    """Those of `paths` that are regular files, and the pages deleting them all gives back: a
    file's once, and only when all its names are among them (one name of several frees
    nothing)."""
    found: list[str] = []
    names: dict[tuple[int, int], int] = {}
    links: dict[tuple[int, int], tuple[int, int]] = {}  # an inode -> its links, its size
    for path in paths:
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        found.append(path)
        inode = (st.st_dev, st.st_ino)
        names[inode] = names.get(inode, 0) + 1
        links[inode] = (st.st_nlink, st.st_size)
    size = sum(pages(n) for inode, (nlink, n) in links.items() if names[inode] >= nlink)
    return Unused(tuple(found), size)


def _loaded(proc_modules: str) -> set[str]:
    with open(proc_modules, encoding="ascii", errors="replace") as f:
        return {line.split(" ", 1)[0] for line in f}


def pages(size: int) -> int:
    # The initramfs is a ramfs (a root= is given) or a tmpfs: a file holds whole pages, and
    # ramfs counts no blocks.
    return -(-size // PAGE) * PAGE


def free(files: Unused, proc_modules: str = PROC_MODULES) -> Unused:
    """Delete `files` (as `unused` counted them), but those of modules loaded since; what was
    deleted, and the memory given back."""
    loaded = _loaded(proc_modules)
    return delete(path for path in files.paths if module_name(path) not in loaded)


def delete(paths: Iterable[str]) -> Unused:
    """Delete `paths` from the initramfs; what was deleted, and the memory given back: a file's
    pages when its last name goes. A file already gone is skipped; one that cannot be deleted
    ends the deleting (the rest cannot be either), never the boot."""
    deleted, freed = [], 0
    for path in paths:
        try:
            st = os.lstat(path)
            os.unlink(path)
        except FileNotFoundError:
            continue
        except OSError as err:
            if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM, errno.EBUSY):
                break  # what was freed is reported
            raise
        deleted.append(path)
        if st.st_nlink == 1:
            freed += pages(st.st_size)
    return Unused(tuple(deleted), freed)
