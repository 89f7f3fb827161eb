"""What unpacking an image into a tmpfs takes: its files' pages, and memory for each entry.

tmpfs keeps a file's data in whole 4 KiB pages (holes take none). Each entry also costs the
kernel an inode and a dentry from their slab caches (752 and 192 bytes on Debian 12's kernel,
x86_64; a long name, a security module's blob more), a file of more than one page the nodes of
its page-cache tree (576 bytes for each 64 pages, and the levels above), a symbolic link longer
than 127 bytes a page of its own, an extended attribute its name and value; and while its layer
is applied, the runtime's applier keeps a record of it (about 200 bytes). None of that is in a
layer's tar stream, which counts a 100-byte file as 1 KiB (header and block) where tmpfs takes
about 5: an image of many small files needs far more than its tar size.

`bootc-live build` sums it over every layer's entries and records it (memory.TMPFS_ANNOTATION);
the runtime's planner then plans a tmpfs root (and the zram and EROFS roots' trees) from it.
What an upper layer deletes or replaces is counted all the same: the layers are applied in order,
so before that upper layer comes the lower one's files are all in memory, and the sum of every
layer's entries is never below what the unpack holds at any moment.
"""

from __future__ import annotations

from collections.abc import Sequence

from .runtime.tarstream import HARDLINK, REGULAR, SYMLINK, TarEntry

PAGE = 4096
# An inode (752) and its dentry (192), with room for a long name's own allocation and a
# security module's blob; the applier's record of the entry (runtime/apply.py); and 256 bytes
# for kernels whose slab objects are larger than Debian 12's (the planner adds nothing to this
# figure: the pages, the most of it, are the same on every kernel with 4 KiB pages).
INODE = 1024 + 256 + 256
DENTRY = 256 + 256  # a further name of a hard-linked file: a dentry, and the applier's record
TREE_NODE = 576  # a node of a file's page-cache tree: 64 pages, or 64 nodes below it
SHORT_SYMLINK = 127  # longer link targets take a page
XATTR = 40  # the head of the kernel's record of an extended attribute, its value follows
# An extended attribute is one allocation for the head and value, one for the name: the sizes
# of the kernel's small allocations, and whole pages (a power of two of them) above 8 KiB: a
# value of 64 KiB takes 128 KiB.
SMALL_ALLOCATIONS = (8, 16, 32, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096, 8192)


def allocated(size: int) -> int:
    """What the kernel's allocator takes for `size` bytes (kmalloc: SMALL_ALLOCATIONS)."""
    for small in SMALL_ALLOCATIONS:
        if size <= small:
            return small
    return PAGE << ((size - 1) // PAGE).bit_length()


def _pages(size: int) -> int:
    return -(-size // PAGE)


def touched_pages(runs: Sequence[tuple[int, int]]) -> int:
    """The distinct pages that runs of (offset, length) bytes touch: a sparse file's."""
    spans = sorted(
        (offset // PAGE, (offset + length - 1) // PAGE) for offset, length in runs if length > 0
    )
    total, end = 0, -1
    for first, last in spans:
        if last <= end:
            continue
        total += last - max(first, end + 1) + 1
        end = last
    return total


def tree_nodes(pages: int) -> int:
    """The nodes of the page-cache tree (an xarray of 64 slots a node) of a file of `pages`."""
    if pages <= 1:
        return 0
    total, level = 0, pages
    while level > 1:
        level = -(-level // 64)
        total += level
    return total


def pages(entry: TarEntry) -> int:
    """The pages (in bytes) tmpfs gives one entry's data or link target."""
    if entry.kind == REGULAR:
        count = touched_pages(entry.sparse) if entry.sparse else _pages(entry.size)
        return count * PAGE
    if entry.kind == SYMLINK and len(entry.linkname) > SHORT_SYMLINK:
        return PAGE
    return 0


def charge(entry: TarEntry) -> int:
    """The bytes one entry takes: its `pages`, the memory for its inode, its page-cache tree and
    its extended attributes."""
    if entry.kind == HARDLINK:
        return DENTRY
    data = pages(entry)
    xattrs = sum(allocated(XATTR + len(v)) + allocated(len(k) + 1) for k, v in entry.xattrs.items())
    return INODE + xattrs + data + tree_nodes(data // PAGE) * TREE_NODE


class TmpfsMeter:
    """Sums what entries take (`total`), and of it their pages (`pages`)."""

    def __init__(self) -> None:
        self.total = 0
        self.pages = 0

    def add(self, entry: TarEntry) -> None:
        self.total += charge(entry)
        if entry.kind != HARDLINK:
            self.pages += pages(entry)
