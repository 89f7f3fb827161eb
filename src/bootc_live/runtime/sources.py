"""Image sources: where an image's blobs come from (OCI layout directory, oci-archive file).

A source only hands out raw, unverified byte streams; verification is the caller's job
(`blobs.VerifyingReader`), so every source gets it the same way. URL and registry sources
implement the same interface.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, BinaryIO, Callable, Protocol

from .blobs import Descriptor
from .decompress import compression_of, other_compression
from .errors import ImageError, LayerError, MissingBlob
from .streams import FileStream, Reader
from .tarstream import HARDLINK, REGULAR, Stream, read_entries


class ImageSource(Protocol):
    """Where an image's index and blobs are read from."""

    description: str
    names_one_image: bool  # a registry reference: bootclabel= does not choose among images

    def index_json(self) -> bytes:
        """The top-level `index.json`."""

    def open_blob(self, desc: Descriptor) -> BinaryIO:
        """A raw stream of the blob's bytes (unverified); the caller closes it."""

    def tail(self, desc: Descriptor, n: int) -> bytes:
        """The blob's last `n` bytes, unverified (for estimates); b"" when not at hand cheaply."""

    def prefetch(self, layers: Sequence[Descriptor]) -> None:
        """Start fetching these layers ahead of their reading, if the source gains by that."""

    def release(self, desc: Descriptor) -> None:
        """The blob is no longer needed: free its memory if the source can."""

    def close(self) -> None:
        """Release files and connections."""


NOT_A_FILE = "make it a regular file, or name another"  # the next step, by default


def kind_of(mode: int) -> str:
    """What a file of `mode` is, in words for a message."""
    for test, kind in (
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return kind
    return "not a regular file"


def open_file(
    path: str, what: str, devices: bool = False, hint: str = "copy it into a regular file"
) -> BinaryIO:
    """`path` opened for reading, if it is a regular file (a block device too, with `devices`):
    a FIFO would block the open itself, or a read, with nothing to say why (opened without
    waiting, then checked). ImageError naming `what` otherwise; a directory is the
    IsADirectoryError open() gives, other OSErrors pass as they are."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:  # a socket: ENXIO ("No such device or address"), which says little
        if err.errno == errno.ENXIO and stat.S_ISSOCK(_mode(path)):
            raise ImageError(f"{what} is not a regular file (a socket)", hint) from None
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISREG(mode) or (devices and stat.S_ISBLK(mode))):
            if stat.S_ISDIR(mode):
                raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
            raise ImageError(f"{what} is not a regular file ({kind_of(mode)})", hint)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _is_null(path: str) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)


def _mode(path: str) -> int:
    try:
        return os.stat(path).st_mode
    except OSError:
        return 0


def read_file(
    path: str, what: str, limit: int, hint: str = NOT_A_FILE, null_is_empty: bool = False
) -> bytes:
    """The whole of `path`, a file named by a user, an image or a command line, to be parsed:
    a regular file of at most `limit` bytes. Opened without waiting, then checked (open_file):
    a FIFO with no writer would block for ever, /dev/zero be read until memory runs out, a
    directory or /dev/null be read as nothing. ImageError naming `what` (which names the
    file) and giving `hint` for those; OSError as open() raises it otherwise
    (FileNotFoundError: the caller says what a missing file means). With `null_is_empty`,
    /dev/null is an empty file, as it is to the program whose file it is (a link to it masks a
    file: dracut's /etc/cmdline.d, containers' registries.d)."""
    if null_is_empty and _is_null(path):
        return b""
    try:
        with open_file(path, what, hint=hint) as f:
            data = f.read(limit + 1)
    except IsADirectoryError:
        raise ImageError(f"{what} is not a regular file (a directory)", hint) from None
    if len(data) > limit:
        raise ImageError(f"{what} is larger than {limit} bytes", hint)
    return data


INDEX_LIMIT = 16 << 20  # bytes of an index.json


def blob_path(digest: str) -> str:
    """The path of a blob inside an OCI layout: blobs/ALG/HEX."""
    algorithm, _, hex_ = digest.partition(":")
    return f"blobs/{algorithm}/{hex_}"


class LayoutSource:
    """An OCI image layout directory.

    A blob may also be stored in parts `HEX.0`, `HEX.1`, … (the split layout of `bootc-live
    build`, whose cpio members are limited to 4 GiB). With `consume`, a blob is deleted once
    released: its layer has been applied, and in an initramfs that gives the memory back.
    """

    names_one_image = False

    def __init__(self, path: str, consume: bool = False) -> None:
        self.path = path
        self.consume = consume
        self.description = f"oci:{path}"
        if not os.path.isfile(looked_at(os.path.join(path, "index.json"))):
            if os.path.isfile(path):  # an oci-archive, say (root.oci)
                raise ImageError(
                    f"{path} is a file, not a directory", "use oci-archive:PATH for an oci-archive"
                )
            if not os.path.lexists(path):
                raise ImageError(f"{path}: no such directory")
            index = os.path.join(path, "index.json")
            if os.path.lexists(index):  # a FIFO, a device, a directory, a link to nothing
                kind = kind_of(_mode(index)) if os.path.exists(index) else "a link to nothing"
                raise ImageError(
                    f"{self.description}: index.json is not a regular file ({kind})",
                    "copy the layout again (skopeo copy … oci:DIR)",
                )
            if os.path.isfile(os.path.join(path, "manifest.json")):
                raise ImageError(
                    f"{path} is a dir: layout (skopeo's, or podman save --format docker-dir), "
                    "not an OCI layout",
                    f"read it as dir:{path}",
                )
            raise ImageError(
                f"{path} is not an OCI image layout (no index.json)",
                "give the directory that holds oci-layout, index.json and blobs/",
            )

    def index_json(self) -> bytes:
        with open_file(
            os.path.join(self.path, "index.json"), f"{self.description}: index.json"
        ) as f:
            data = f.read(INDEX_LIMIT + 1)
        if len(data) > INDEX_LIMIT:  # not cut short, then called invalid JSON
            raise ImageError(f"{self.description}: index.json is implausibly large (over 16 MiB)")
        return data

    def _files(self, desc: Descriptor) -> list[str]:
        return part_files(os.path.join(self.path, blob_path(desc.digest)))

    def open_blob(self, desc: Descriptor) -> BinaryIO:
        files = self._files(desc)
        if not files:
            looked_at(os.path.join(self.path, blob_path(desc.digest)))
            raise MissingBlob(self.description, desc.digest)
        what = f"{self.description}: blob {desc.digest}"
        return open_parts(partial(open_file, name, what) for name in files)

    def tail(self, desc: Descriptor, n: int) -> bytes:
        """The blob's last `n` bytes (unverified: for estimates only)."""
        files = self._files(desc)
        if not files:
            return b""
        try:
            f = open_file(files[-1], self.description)
        except (OSError, ImageError):  # a FIFO, say: an estimate goes without
            return b""
        with f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - n))
            return f.read(n)

    def prefetch(self, layers: Sequence[Descriptor]) -> None:
        pass  # a local file: nothing to gain

    def release(self, desc: Descriptor) -> None:
        if self.consume:
            for name in self._files(desc):
                os.unlink(name)

    def close(self) -> None:
        pass


def looked_at(path: str) -> str:
    """`path`, once it is known to be there or missing: one this user may not look at (a
    directory above it not searchable) is an ImageError that says so, not a missing file."""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        pass
    except OSError as err:
        raise ImageError(
            f"{path} cannot be looked at: {err.strerror}", "check its permissions and its owner"
        ) from None
    return path


def part_files(whole: str) -> list[str]:
    """The file `whole`, or its parts `whole`.0, .1, … (a file past a cpio member's limit, as
    the kernel unpacked it); [] when there is neither."""
    if os.path.exists(whole):
        return [whole]
    parts: list[str] = []
    while os.path.exists(f"{whole}.{len(parts)}"):
        parts.append(f"{whole}.{len(parts)}")
    return parts


def open_parts(openers: Iterable[Callable[[], Any]]) -> BinaryIO:
    """One stream of parts read one after the other, each opened when reached (one part: it)."""
    parts = list(openers)
    return parts[0]() if len(parts) == 1 else _Parts(parts)  # type: ignore[return-value]


class _Parts(Reader):
    """The concatenation of several parts, each opened when reached, read once to the end."""

    def __init__(self, openers: list[Callable[[], Any]]) -> None:
        self._openers = openers
        self._current: Reader | None = None

    def read(self, n: int = -1) -> bytes:
        while True:
            if self._current is None:
                if not self._openers:
                    return b""
                self._current = self._openers.pop(0)()
            data = self._current.read(n)
            if data or n == 0:
                return data
            self._current.close()
            self._current = None

    def close(self) -> None:
        if self._current is not None:
            self._current.close()


class _Slice(Reader):
    """A read-only window [offset, offset+size) of a file, with its own position."""

    def __init__(self, path: str, offset: int, size: int) -> None:
        self._file = open_file(path, path, devices=True)  # closed by close()
        self._file.seek(offset)
        self._left = size

    def read(self, n: int = -1) -> bytes:
        n = self._left if n < 0 else min(n, self._left)
        data = self._file.read(n)
        self._left -= len(data)
        return data

    def close(self) -> None:
        self._file.close()


class _Unsparse(Reader):
    """A sparse member's content: its stored chunks (read back to back from `stored`), with
    the holes between them as zeros, up to its real size."""

    def __init__(self, stored: BinaryIO, chunks: Sequence[tuple[int, int]], real_size: int) -> None:
        self._stored = stored
        # (logical offset, length, stored): the holes and chunks in order, then the tail hole.
        self._spans: list[tuple[int, int, bool]] = []
        pos = 0
        for offset, length in chunks:
            if offset > pos:
                self._spans.append((pos, offset - pos, False))
            if length:
                self._spans.append((offset, length, True))
            pos = offset + length
        if real_size > pos:
            self._spans.append((pos, real_size - pos, False))
        self._spans.reverse()  # popped from the end

    def read(self, n: int = -1) -> bytes:
        while self._spans:
            offset, length, stored = self._spans[-1]
            take = length if n < 0 else min(n, length)
            data = self._stored.read(take) if stored else bytes(min(take, 1 << 20))
            if not data:
                return b""  # the archive ends early: the blob's digest check says so
            if len(data) == length:
                self._spans.pop()
            else:
                self._spans[-1] = (offset + len(data), length - len(data), stored)
            return data
        return b""

    def close(self) -> None:
        self._stored.close()


@dataclass(frozen=True)
class _Member:
    offset: int  # of its data in the archive
    size: int  # stored
    sparse: tuple[tuple[int, int], ...] | None = None  # (offset, length) of its stored chunks
    real_size: int = 0


def _member_name(name: bytes) -> str:
    """An archive member's name as a path in the layout (`./blobs/…`, `/blobs/…`: blobs/…)."""
    return os.path.normpath(b"/" + name).lstrip(b"/").decode("utf-8", "surrogateescape")


class MemberIndex:
    """An oci-archive read in place: member offsets are indexed once, nothing is extracted.
    A member tar wrote sparse (`tar --sparse`) is read with its holes as zeros."""

    description: str
    names_one_image = False
    size: int  # of the archive
    _members: dict[str, _Member]

    def _index_members(self, stream: Stream, tell: Callable[[], int]) -> None:
        self._members = {}
        try:
            for entry in read_entries(stream):
                if entry.kind == REGULAR:
                    sparse = tuple(entry.sparse) if entry.sparse is not None else None
                    member = _Member(tell(), entry.size, sparse, entry.real_size)
                    self._members[_member_name(entry.name)] = member
                    stream.skip(entry.size)
                elif entry.kind == HARDLINK and _member_name(entry.linkname) in self._members:
                    # tar archives a file's second name as a link to the first (a layout
                    # whose blobs share an inode), which skopeo extracts as the same file
                    self._members[_member_name(entry.name)] = self._members[
                        _member_name(entry.linkname)
                    ]
        except LayerError as err:
            raise ImageError(f"{self.description} is not a valid oci-archive: {err}") from None
        if "index.json" not in self._members:
            self._check_whole()
            if "manifest.json" in self._members:  # what `podman save` and `docker save` write
                raise ImageError(
                    f"{self.description} is a docker-archive, not an oci-archive",
                    "save it with podman save --format oci-archive, or convert it with "
                    "bootc-live pull docker-archive:PATH -o oci-archive:FILE",
                )
            raise ImageError(
                f"{self.description} is not an oci-archive (no index.json inside)",
                "give a file written by podman save --format oci-archive, skopeo copy … "
                "oci-archive:PATH or bootc-live pull",
            )

    def _open_member(self, offset: int, size: int) -> BinaryIO:
        raise NotImplementedError

    def _check_whole(self) -> None:
        """Something is missing: an archive cut short at the end of a member (a tar can end
        there) says so, by the two zero blocks every tar writer ends with, which it lacks."""
        with self._open_member(max(0, self.size - 1024), min(1024, self.size)) as f:
            end = f.read(1024)
            while len(end) < min(1024, self.size) and (more := f.read(1024 - len(end))):
                end += more  # a network stream may hand it over in several pieces
        if end != bytes(1024):
            raise ImageError(
                f"{self.description} is cut short: it does not end as a tar ends",
                "copy or download it again",
            )

    def _open(self, member: _Member) -> BinaryIO:
        stored = self._open_member(member.offset, member.size)
        if member.sparse is None:
            return stored
        return _Unsparse(stored, member.sparse, member.real_size)  # type: ignore[return-value]

    def index_json(self) -> bytes:
        member = self._members["index.json"]
        size = member.real_size
        if size > INDEX_LIMIT:
            raise ImageError(f"{self.description}: index.json is implausibly large ({size} bytes)")
        data = b""
        with self._open(member) as f:
            while len(data) < size and (part := f.read(size - len(data))):
                data += part  # a network stream may hand it over in several pieces
        return data

    def open_blob(self, desc: Descriptor) -> BinaryIO:
        name = blob_path(desc.digest)
        if name not in self._members:
            self._check_whole()
            raise MissingBlob(self.description, desc.digest)
        return self._open(self._members[name])

    def tail(self, desc: Descriptor, n: int) -> bytes:
        """The blob's last `n` bytes (unverified: for estimates only)."""
        name = blob_path(desc.digest)
        if name not in self._members:
            return b""
        member = self._members[name]
        if member.sparse is not None:
            return b""  # an estimate goes without
        offset, size = member.offset, member.size
        with self._open_member(offset + max(0, size - n), min(n, size)) as f:
            return f.read(n)

    def prefetch(self, layers: Sequence[Descriptor]) -> None:
        pass  # one archive, read in order

    def release(self, desc: Descriptor) -> None:
        pass  # an archive is freed as a whole, by close()

    def close(self) -> None:
        pass


def _refuse_compressed(head: bytes, what: str) -> None:
    """An archive compressed as a whole (skopeo and podman load read those) is not read in
    place, and a cpio archive is none: said so, not 'tar header checksum mismatch'."""
    if head.startswith(b"070701"):  # newc: bootc-live build's rootfs.img, say
        raise ImageError(
            f"{what} is a cpio archive, not an oci-archive (a tar)",
            "bootc-live build writes root.oci as the oci-archive; its rootfs.img goes after "
            "initrd.img as an initrd, which the kernel unpacks",
        )
    kind = compression_of(head)
    if kind == "none":
        kind = other_compression(head)
    if kind:
        raise ImageError(
            f"{what} is {kind}-compressed as a whole (an oci-archive is read in place)",
            f"decompress it first: {_DECOMPRESS[kind]} FILE",
        )


_DECOMPRESS = {"gzip": "gunzip", "zstd": "unzstd", "xz": "unxz", "bzip2": "bunzip2"}


class ArchiveSource(MemberIndex):
    """An oci-archive file. With `delete`, the file goes away on close() (a download)."""

    def __init__(
        self,
        path: str,
        delete: bool = False,
        name: str = "",
        release: Callable[[], None] = lambda: None,
    ) -> None:
        """`name`: what the archive is called in messages (a download: its URL), else path;
        `release`: run once the deleted file is gone (its download area goes too)."""
        self.path = path
        self.delete = delete
        self.release_area = release
        self.description = f"oci-archive:{name or path}"
        try:
            hint = "save the archive to a file first"  # a pipe cannot be indexed
            with open_file(path, self.description, devices=True, hint=hint) as f:
                _refuse_compressed(f.read(6), self.description)
                self.size = f.seek(0, os.SEEK_END)
                f.seek(0)
                self._index_members(FileStream(f), f.tell)
        except FileNotFoundError:
            raise ImageError(f"{path}: no such file") from None
        except IsADirectoryError:
            raise ImageError(
                f"{path} is a directory", "use oci:DIR for an OCI layout directory"
            ) from None

    def _open_member(self, offset: int, size: int) -> BinaryIO:
        return _Slice(self.path, offset, size)  # type: ignore[return-value]

    def close(self) -> None:
        if self.delete and os.path.exists(self.path):
            os.unlink(self.path)
        if self.delete:
            self.release_area()
