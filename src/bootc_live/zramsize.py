"""What a zram root takes: an image's file data as zstd-compressed 4 KiB pages.

zram compresses each page on its own, so what it stores for a tree is not what gzip makes of a
layer: 10 to 15 % more on the two Debian 12 images of the tests and benchmarks, and the ratio
depends on the files.
`bootc-live build` measures it once, on the host, and records it in the index for the runtime's
RAM planner (memory.ZRAM_ANNOTATION), which then plans zram from the image's own figure rather
than from a ratio. Measured with zstd at its default level (3), as the kernel's zram uses it;
pages of one repeated byte count nothing (zram keeps no data for them). Needs the zstandard
module (the `fast` extra); without it nothing is recorded and the planner uses its ratios.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

PAGE = 4096

_zstandard: Any
try:
    import zstandard as _zstandard
except ImportError:  # the planner then uses its stated ratios
    _zstandard = None


def available() -> bool:
    return _zstandard is not None


class PageMeter:
    """Sums what files take as zstd-compressed pages."""

    def __init__(self) -> None:
        assert _zstandard is not None
        self._compressor = _zstandard.ZstdCompressor(level=3, write_checksum=False)
        self.total = 0

    def add(self, read: Callable[[int], bytes], size: int) -> None:
        """A file of `size` bytes, read with `read(n)` (exactly n bytes)."""
        for at in range(0, size, PAGE):
            page = read(min(PAGE, size - at)).ljust(PAGE, b"\0")
            if page.count(page[:1]) != PAGE:  # same-filled: zram stores only the byte
                self.total += min(len(self._compressor.compress(page)), PAGE)


def of_tree(root: Path) -> int:
    """The zstd pages of every regular file under `root` (hard links once; a sparse file's
    data only: its holes, however large, read as zero pages, which cost nothing)."""
    meter = PageMeter()
    seen: set[tuple[int, int]] = set()
    for top, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(top, name)
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            with open(path, "rb") as f:
                for start, end in data_pages(f.fileno(), st.st_size):
                    f.seek(start)
                    meter.add(f.read, end - start)
    return meter.total


def data_pages(fd: int, size: int) -> list[tuple[int, int]]:
    """The (start, end) of the page-aligned runs of a file of `size` bytes that hold data, as
    SEEK_DATA and SEEK_HOLE find them (the whole file where they are not supported)."""
    runs: list[tuple[int, int]] = []
    at = 0
    try:
        while at < size:
            data = os.lseek(fd, at, os.SEEK_DATA)
            at = os.lseek(fd, data, os.SEEK_HOLE)  # past `data`: the end of the file at most
            start = max(data // PAGE * PAGE, runs[-1][1] if runs else 0)
            end = min(-(-at // PAGE) * PAGE, size)
            if start < end:
                runs.append((start, end))
    except OSError as err:
        if err.errno != errno.ENXIO:  # ENXIO: no data after `at`
            return [(0, size)] if size else []
    return runs
