"""A writer for newc cpio archives, the format the kernel unpacks into the initramfs."""

from __future__ import annotations

import os
import shutil
import stat
from typing import BinaryIO

MAX_MEMBER = 0xFFFFFFFF  # newc stores sizes in 8 hex digits


def next_archive(end: int) -> int:
    """Where an archive appended to `end` bytes of initrd starts: after 4 to 7 zero bytes, at
    a 4-byte boundary, where the kernel looks for the next one. The zeros also end an lz4
    legacy stream (dracut's --lz4), which has no end mark of its own: the kernel reads on for
    a chunk size, and the next archive's first bytes are none."""
    base = end + 4
    return base + -base % 4


def _pad(n: int) -> bytes:
    return b"\0" * (-n % 4)


class CpioWriter:
    """Writes members to `out` one at a time, streaming file data; close() writes the trailer."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._ino = 0
        self._written = 0

    def _header(self, name: str, mode: int, size: int, nlink: int = 1) -> None:
        encoded = name.encode() + b"\0"
        self._ino += 1
        fields = (self._ino, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, len(encoded), 0)
        header = b"070701" + b"".join(b"%08X" % value for value in fields)
        self._write(header + encoded + _pad(len(header) + len(encoded)))

    def _write(self, data: bytes) -> None:
        self._out.write(data)
        self._written += len(data)

    def add_dir(self, name: str, mode: int = 0o755) -> None:
        self._header(name, stat.S_IFDIR | mode, 0, nlink=2)

    def add_file(self, name: str, src: BinaryIO, size: int, mode: int = 0o644) -> int:
        """Add a regular file of `size` bytes read from `src`; return the offset of its data."""
        if size > MAX_MEMBER:
            raise ValueError(f"cpio member {name} is larger than 4 GiB")
        self._header(name, stat.S_IFREG | mode, size)
        offset = self._written
        start = self._out.tell() if self._out.seekable() else None
        shutil.copyfileobj(_Limited(src, size), self._out, 1 << 20)
        if start is not None and self._out.tell() - start != size:
            raise ValueError(f"cpio member {name}: source ended early")
        self._written += size
        self._write(_pad(size))
        return offset

    def reserve_file(self, name: str, size: int, mode: int = 0o644) -> int:
        """Add a regular file of `size` bytes whose data is written later, into the room left
        for it (`out` must be seekable; the room is a hole until then); return its offset."""
        if size > MAX_MEMBER:
            raise ValueError(f"cpio member {name} is larger than 4 GiB")
        self._header(name, stat.S_IFREG | mode, size)
        offset = self._written
        self._out.seek(size, os.SEEK_CUR)
        self._written += size
        self._write(_pad(size))
        return offset

    def add_bytes(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._header(name, stat.S_IFREG | mode, len(data))
        self._write(data + _pad(len(data)))

    def close(self) -> None:
        self._header("TRAILER!!!", 0, 0, nlink=1)
        self._write(b"\0" * (-self._written % 512))


class _Limited:
    """Reads at most `size` bytes from `src`."""

    def __init__(self, src: BinaryIO, size: int) -> None:
        self._src = src
        self._left = size

    def read(self, n: int = -1) -> bytes:
        n = self._left if n < 0 else min(n, self._left)
        data = self._src.read(n) if n else b""
        self._left -= len(data)
        return data
