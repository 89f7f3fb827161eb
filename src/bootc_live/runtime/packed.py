"""The packed root: a squashfs or EROFS image of the image's root, obtained whole as one file.

`bootc-live build` writes it as packed.img: a newc cpio archive whose member
`bootc-live/packed.root` (or parts `packed.root.0`, `.1`, … past handover.PART_SIZE) is the
filesystem image. Appended as an initrd, the kernel unpacks it (`FileSource`: the parts are
joined in place); served by a web server it is streamed, the cpio parsed as it comes
(`payload`), into a file in RAM (`StreamSource`); a URL may serve the bare image too. Either
way the file's sha256 is computed as it is read or written and judged against the pin
(`check_pin`) before anything is mounted. Which filesystem it is comes from its first bytes
(`detect`): the command line does not say.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import os
import re
import stat
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Callable

from . import handover, http, urllib_dracut
from .cmdline import PACKED_PREFIX, ROOT_PREFIX
from .errors import BootcLiveError, SpaceError, shown
from .sources import part_files

MEMBER = "bootc-live/packed.root"
CHUNK = 1 << 20
HEAD = 4096  # the bytes that say which filesystem it is (EROFS: its superblock at 1024)
MAX_NAME = 4096  # a cpio member's name, NUL included (PATH_MAX)
MAX_DIRECTORIES = 16  # directory entries in packed.img (it has one): more is not packed.img
NEWC = b"070701"
_HEADER = 110  # magic and 13 fields of 8 hex digits
_HEX = re.compile(rb"[0-9A-Fa-f]{8}")
SQUASHFS_MAGIC = b"hsqs"
EROFS_MAGIC = 0xE0F5E1E2
EROFS_SUPERBLOCK = 1024
SQUASHFS_COMPRESSORS = {1: "gzip", 2: "lzma", 3: "lzo", 4: "xz", 5: "lz4", 6: "zstd"}
EROFS_ALGORITHMS = ("lz4", "lzma", "deflate", "zstd")  # bits of available_compr_algs
EROFS_ZERO_PADDING = 0x1  # feature_incompat: compressed (lz4) data is zero-padded
EROFS_COMPR_CFGS = 0x2  # feature_incompat: available_compr_algs is a bitmap
PACK_HINT = "serve or append packed.img as bootc-live build or pack wrote it"
SQUASHFS_MOUNTABLE = {1, 3, 4, 5, 6}  # lzma (2) is mksquashfs's only, Linux never had it
# The kernel option each packed root needs: its filesystem's, then its compressor's.
KERNEL_OPTIONS = {
    ("squashfs", "gzip"): "CONFIG_SQUASHFS_ZLIB",
    ("squashfs", "lzo"): "CONFIG_SQUASHFS_LZO",
    ("squashfs", "xz"): "CONFIG_SQUASHFS_XZ",
    ("squashfs", "lz4"): "CONFIG_SQUASHFS_LZ4",
    ("squashfs", "zstd"): "CONFIG_SQUASHFS_ZSTD",
    ("erofs", "lz4"): "CONFIG_EROFS_FS_ZIP",
    ("erofs", "lzma"): "CONFIG_EROFS_FS_ZIP_LZMA",
    ("erofs", "deflate"): "CONFIG_EROFS_FS_ZIP_DEFLATE",
    ("erofs", "zstd"): "CONFIG_EROFS_FS_ZIP_ZSTD",
}


def kernel_hint(fs: Format) -> str:
    """The next step when the kernel does not mount a packed root: what it needs."""
    needs = [{"squashfs": "CONFIG_SQUASHFS", "erofs": "CONFIG_EROFS_FS"}.get(fs.name, "")]
    needs += [
        KERNEL_OPTIONS[(fs.name, c)]
        for c in fs.compressor.split("+")
        if (fs.name, c) in KERNEL_OPTIONS
    ]
    return (
        f"a {fs.name} root compressed with {fs.compressor} needs a kernel with "
        f"{' and '.join(n for n in needs if n)}: boot one that has them, or pack with a "
        "compressor this kernel has (bootc-live pack --pack FORMAT:COMPRESSOR)"
    )


def members(size: int) -> list[tuple[str, int]]:
    """The cpio members that hold a packed root of `size` bytes, in order: MEMBER, or past
    handover.PART_SIZE MEMBER.0, MEMBER.1, … of that size each (the last one shorter)."""
    part_size = handover.PART_SIZE
    if size <= part_size:
        return [(MEMBER, size)]
    return [
        (f"{MEMBER}.{part}", min(part_size, size - offset))
        for part, offset in enumerate(range(0, size, part_size))
    ]


class PackedError(BootcLiveError):
    """The packed root is missing, malformed, or not the one the command line pins."""


@dataclass(frozen=True)
class Format:
    """Which filesystem a packed root is, and its compressor."""

    name: str  # "squashfs" or "erofs": the -t of mount, and the kernel module
    compressor: str


def detect(head: bytes, where: str) -> Format:
    """The filesystem of an image from its first HEAD bytes (magic numbers, superblock)."""
    if not head:
        raise PackedError(f"{where} is empty", PACK_HINT)
    if head[:4] == SQUASHFS_MAGIC and len(head) >= 22:
        (compression,) = struct.unpack_from("<H", head, 20)
        if compression not in SQUASHFS_MOUNTABLE:
            name = SQUASHFS_COMPRESSORS.get(
                compression, f"an unknown compressor (id {compression})"
            )
            raise PackedError(
                f"{where} is squashfs compressed with {name}, which no Linux kernel mounts",
                "pack it again: bootc-live pack --pack squashfs:zstd (or xz, gzip, lz4, lzo)",
            )
        return Format("squashfs", SQUASHFS_COMPRESSORS[compression])
    sb = EROFS_SUPERBLOCK
    if len(head) >= sb + 88 and struct.unpack_from("<I", head, sb)[0] == EROFS_MAGIC:
        (incompat,) = struct.unpack_from("<I", head, sb + 80)
        (algorithms,) = struct.unpack_from("<H", head, sb + 84)
        if incompat & EROFS_COMPR_CFGS:
            names = [n for bit, n in enumerate(EROFS_ALGORITHMS) if algorithms >> bit & 1]
            return Format("erofs", "+".join(names) or "none")
        # Without compression configurations only lz4 exists (lz4hc writes it too), and
        # mkfs.erofs sets ZERO_PADDING whenever it compresses.
        return Format("erofs", "lz4" if incompat & EROFS_ZERO_PADDING else "none")
    raise PackedError(
        f"{where} is neither squashfs nor EROFS (it starts with {shown(head[:8].hex())})",
        PACK_HINT,
    )


class _Input:
    """Exact reads from a byte stream whose reads may return any number of bytes."""

    def __init__(self, read: Callable[[int], bytes], where: str) -> None:
        self._read = read
        self._buffer = bytearray()
        self.where = where
        self.offset = 0  # bytes taken so far

    def _fill(self, n: int) -> bool:
        while len(self._buffer) < n:
            data = self._read(max(CHUNK, n - len(self._buffer)))
            if not data:
                return False
            self._buffer += data
        return True

    def peek(self, n: int) -> bytes:
        self._fill(n)
        return bytes(self._buffer[:n])

    def take(self, n: int, what: str) -> bytes:
        if not self._fill(n):
            raise PackedError(f"{self.where}: truncated {what} at byte {self.offset}", PACK_HINT)
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        self.offset += n
        return data

    def chunks(self, n: int | None) -> Iterator[bytes]:
        """The next `n` bytes (None: all that is left) in pieces of at most CHUNK."""
        left = n
        while left is None or left > 0:
            want = CHUNK if left is None else min(CHUNK, left)
            if self._buffer:
                data = bytes(self._buffer[:want])
                del self._buffer[:want]
            else:
                data = self._read(want)
            if not data:
                if left is None:
                    return
                raise PackedError(
                    f"{self.where}: truncated packed root at byte {self.offset}", PACK_HINT
                )
            self.offset += len(data)
            if left is not None:
                left -= len(data)
            yield data


def payload(read: Callable[[int], bytes], where: str) -> Iterator[bytes]:
    """The filesystem image's bytes from a stream of packed.img (newc cpio) or of the bare
    image (no cpio magic at byte 0), in pieces; malformed or unexpected input: PackedError."""
    src = _Input(read, where)
    if src.peek(len(NEWC)) != NEWC:
        yield from src.chunks(None)
        return
    parts = 0  # members of the packed root seen: packed.root, or packed.root.0, .1, …
    single = False
    directories = 0
    short: tuple[str, int] | None = None  # a part not of PART_SIZE bytes: it must be the last
    while True:
        at = src.offset
        header = src.take(_HEADER, "cpio header")
        fields = [header[i : i + 8] for i in range(6, _HEADER, 8)]
        if header[:6] != NEWC or not all(_HEX.fullmatch(f) for f in fields):
            raise PackedError(f"{where}: not a newc cpio header at byte {at}", PACK_HINT)
        mode, size, name_size = (int(fields[i], 16) for i in (1, 6, 11))
        if not 1 <= name_size <= MAX_NAME:
            raise PackedError(f"{where}: a cpio name of {name_size} bytes at byte {at}", PACK_HINT)
        raw = src.take(name_size, "cpio name")
        if raw[-1:] != b"\0" or b"\0" in raw[:-1]:
            raise PackedError(f"{where}: a malformed cpio name at byte {at}", PACK_HINT)
        name = raw[:-1].decode("utf-8", "backslashreplace")
        src.take(-(_HEADER + name_size) % 4, "cpio header")
        if name == "TRAILER!!!":
            break
        kind = stat.S_IFMT(mode)
        if kind == stat.S_IFDIR and size == 0:
            directories += 1
            if directories > MAX_DIRECTORIES:
                raise PackedError(
                    f"{where}: more than {MAX_DIRECTORIES} directories in the cpio archive "
                    f"(at byte {at}): not a packed.img",
                    PACK_HINT,
                )
            continue
        expected = f"{MEMBER}.{parts}"
        if (
            kind != stat.S_IFREG
            or single
            or name not in (expected, MEMBER)
            or (name == MEMBER and parts)
        ):
            raise PackedError(
                f"{where}: unexpected cpio member '{shown(name)}' at byte {at} (expected "
                f"{MEMBER} or its parts in order)",
                PACK_HINT,
            )
        if short:  # else parts without end, each of a few bytes, would never fill the tmpfs
            raise PackedError(
                f"{where}: {short[0]} holds {short[1]} bytes, not {handover.PART_SIZE}, yet "
                f"{name} follows it (at byte {at}): only the last part is shorter",
                PACK_HINT,
            )
        single = name == MEMBER
        parts += 1
        if not single and size != handover.PART_SIZE:
            short = (name, size)
        yield from src.chunks(size)
        src.take(-size % 4, "cpio padding")
    if not parts:
        raise PackedError(f"{where}: no {MEMBER} in the cpio archive", PACK_HINT)


@dataclass(frozen=True)
class Stored:
    """The packed root as a file, ready to mount."""

    path: str
    sha256: str  # "sha256:HEX" of its bytes
    size: int


def check_pin(stored: Stored, pin: str, where: str) -> None:
    """Refuse a packed root whose sha256 is not the one the command line pins."""
    if stored.sha256 != pin:
        raise PackedError(
            f"the packed root {where} has {stored.sha256}, the command line pins {pin}",
            "the file on the server or in the initrd changed, or bootc.packed.sha256= is of "
            "another build: use the arguments that build printed with it",
        )


Fetched = Callable[[int], None]  # told the bytes stored so far, as they come


def _write(chunks: Iterator[bytes], path: str, where: str, fetched: Fetched) -> Stored:
    """Write `chunks` into a new file at `path`, hashing them."""
    digest = hashlib.sha256()
    size = 0
    try:
        with open(path, "xb") as out:
            for data in chunks:
                digest.update(data)
                out.write(data)
                size += len(data)
                fetched(size)
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise SpaceError(
                f"no space left to store the packed root {where} ({size >> 20} MiB written)",
                "the server sent more than it announced, or add RAM",
            ) from None
        raise PackedError(f"cannot store the packed root {where}: {err.strerror}") from None
    return Stored(path, "sha256:" + digest.hexdigest(), size)


class PackedSource:
    """Where a packed root comes from: its size (if known), its format, and `store()`."""

    description: str  # printable: root= without credentials
    size: int | None  # the bytes its file takes (or at most: a cpio wrapper's), None: unknown
    format: Format | None  # None until its first bytes were read (url-lib)
    in_place: bool  # already in RAM: storing it takes no more (but a part while parts join)
    largest_part: int = 0  # while parts are joined, one more part is in RAM at the peak
    image: str | None = None  # the image's manifest digest, where its origin names it

    @property
    def storing_takes(self) -> int:
        """The RAM storing it adds (0 for a size not known before the fetch)."""
        return self.largest_part if self.in_place else (self.size or 0)

    def store(self, path: str, fetched: Fetched = lambda _: None) -> Stored:
        """The packed root as the file `path`; its format is known afterwards."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class FileSource(PackedSource):
    """A packed root in the initramfs (appended packed.img): used where it is, no copy."""

    in_place = True

    def __init__(self, path: str, description: str = "") -> None:
        self.path = path
        self.description = description or f"{path} in the initramfs"
        self.parts = part_files(path)
        if not self.parts:
            raise PackedError(
                f"no packed root at {path} (nor {path}.0) in the initramfs",
                "append packed.img from bootc-live build as an extra initrd, or fix root=",
            )
        odd = [p for p in self.parts if os.path.islink(p) or not os.path.isfile(p)]
        if odd:
            raise PackedError(
                f"{odd[0]} in the initramfs is no file",
                f"name the file packed.img holds: root={ROOT_PREFIX}{PACKED_PREFIX}/{MEMBER}",
            )
        sizes = [os.path.getsize(p) for p in self.parts]
        self.total = sum(sizes)
        self.size = self.total
        self.largest_part = max(sizes) if len(sizes) > 1 else 0
        with open(self.parts[0], "rb") as f:
            self.format = detect(f.read(HEAD), self.description)

    def store(self, path: str, fetched: Fetched = lambda _: None) -> Stored:
        """Hash the file; parts are joined into `path` first, each deleted once appended (so
        the peak is one part more), the first renamed rather than copied."""
        digest = hashlib.sha256()
        if self.parts == [path]:
            _hash_file(path, digest)
            return Stored(path, "sha256:" + digest.hexdigest(), self.total)
        os.rename(self.parts[0], path)
        try:
            _hash_file(path, digest)
            with open(path, "ab") as out:
                for part in self.parts[1:]:
                    with open(part, "rb") as f:
                        while data := f.read(CHUNK):
                            digest.update(data)
                            out.write(data)
                    os.unlink(part)
        except OSError as err:
            joined = os.path.getsize(path) if os.path.exists(path) else 0
            if err.errno in (errno.ENOSPC, errno.ENOMEM, errno.EDQUOT):
                raise SpaceError(
                    f"no memory left to join the parts of the packed root {self.description} "
                    f"({joined >> 20} of {self.total >> 20} MiB joined)",
                    "add RAM",
                ) from None
            raise PackedError(
                f"cannot join the parts of the packed root {self.description}: {err.strerror}"
            ) from None
        self.parts = [path]
        return Stored(path, "sha256:" + digest.hexdigest(), self.total)


def _hash_file(path: str, digest: hashlib._Hash) -> None:
    with open(path, "rb") as f:
        while data := f.read(CHUNK):
            digest.update(data)


class StreamSource(PackedSource):
    """A packed root streamed (packed.img or the bare image): its file is written as it comes."""

    in_place = False

    def __init__(
        self,
        read: Callable[[int], bytes],
        description: str,
        size: int | None,
        close: Callable[[], None] = lambda: None,
    ) -> None:
        self.description = description
        self.size = size
        self._close = close
        self._chunks = payload(read, description)
        self._head: list[bytes] = []
        got = 0
        for data in self._chunks:
            self._head.append(data)
            got += len(data)
            if got >= HEAD:
                break
        self.format = detect(b"".join(self._head)[:HEAD], description)

    def store(self, path: str, fetched: Fetched = lambda _: None) -> Stored:
        head, self._head = self._head, []

        def everything() -> Iterator[bytes]:
            yield from head
            yield from self._chunks

        stored = _write(everything(), path, self.description, fetched)
        if self.size is not None and stored.size > self.size:
            raise PackedError(
                f"the packed root {self.description} is larger ({stored.size} bytes) than the "
                f"server announced ({self.size} bytes)",
                PACK_HINT,
            )
        return stored

    def store_into(self, fd: int, fetched: Fetched = lambda _: None) -> Stored:
        """Write the image over the open file `fd` from its start (not truncated)."""
        head, self._head = self._head, []
        digest = hashlib.sha256()
        size = 0
        try:
            for chunk in itertools.chain(head, self._chunks):
                digest.update(chunk)
                view = memoryview(chunk)
                while view:
                    written = os.pwrite(fd, view, size)
                    size += written
                    view = view[written:]
                fetched(size)
        except OSError as err:
            raise PackedError(
                f"cannot store the packed root {self.description}: {err.strerror}"
            ) from None
        return Stored("", "sha256:" + digest.hexdigest(), size)

    def close(self) -> None:
        self._close()


def open_http(url: str, policy: http.Policy, log: Callable[[str], None]) -> StreamSource:
    """A packed root at an http(s) URL, streamed with resume (Range) where a connection
    breaks; its size is what the server announces."""
    client = http.Client(url, policy, log)
    reader = http.RangeReader(client, 0, None, http.Retrier(client.url, policy, log))
    try:
        source = StreamSource(reader.read, http.redact(url), None, reader.close)
    except BaseException:
        reader.close()
        raise
    first = reader.first
    source.size = first.total if first is not None else None
    return source


class UrlLibSource(PackedSource):
    """A packed root at an ftp://, tftp:// or nfs:// URL: fetched by dracut's url-lib into a
    file beside `path` first (its size is known only then); packed.img is then unwrapped in
    that file (the image held once), which is renamed `path`, as the bare image is."""

    size = None
    format = None
    in_place = False

    def __init__(self, url: str, policy: http.Policy) -> None:
        self.url = url
        self.policy = policy  # bootc.retries=, bootc.timeout=
        self.description = http.redact(url)

    def store(self, path: str, fetched: Fetched = lambda _: None) -> Stored:
        download = path + ".download"
        try:
            urllib_dracut.fetch(self.url, download, self.policy)
            with open(download, "r+b") as f:
                if f.read(len(NEWC)) != NEWC:
                    os.rename(download, path)
                    file = FileSource(path, self.description)
                    self.format = file.format
                    return file.store(path)
                f.seek(0)
                inner = StreamSource(f.read, self.description, None)
                self.format = inner.format
                # Unwrapped in place: the image's bytes move towards the start of the file
                # they are read from (each to no later a byte than it was read at, so none is
                # overwritten before it is read), and the rest is cut off. A copy held it
                # twice: a packed.img over half the memory left did not fit.
                stored = inner.store_into(f.fileno(), fetched)
                os.ftruncate(f.fileno(), stored.size)
            os.rename(download, path)
            return Stored(path, stored.sha256, stored.size)
        finally:
            if os.path.exists(download):
                os.unlink(download)
