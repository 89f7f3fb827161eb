"""A streaming tar reader: ustar, GNU and PAX headers, sparse files, names as raw bytes.

Written for layer application rather than taken from `tarfile`, because layers need things
`tarfile` does differently: PAX global headers must be ignored (tarfile merges them into later
entries), xattr values and names must stay bytes, and data must flow straight from the
decompressor into the destination file without intermediate copies.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from .errors import LayerError

BLOCK = 512

REGULAR = "file"
HARDLINK = "hardlink"
SYMLINK = "symlink"
CHAR = "char"
BLOCKDEV = "block"
DIRECTORY = "dir"
FIFO = "fifo"

_KINDS = {
    b"0": REGULAR,
    b"\0": REGULAR,
    b"7": REGULAR,
    b"1": HARDLINK,
    b"2": SYMLINK,
    b"3": CHAR,
    b"4": BLOCKDEV,
    b"5": DIRECTORY,
    b"6": FIFO,
    b"D": DIRECTORY,  # GNU dumpdir: a directory whose data (a listing) is skipped
}
_PAX_LINE = re.compile(rb"(\d+) ")


class Stream(Protocol):
    """What the tar reader consumes: a byte stream that can be read exactly."""

    def read_exact(self, n: int) -> bytes:
        """Return exactly n bytes, or raise LayerError at a premature end."""

    def read_some(self, n: int) -> memoryview:
        """Return between 1 and n bytes without copying, or raise LayerError at the end."""

    def skip(self, n: int) -> None:
        """Discard exactly n bytes."""

    def at_end(self) -> bool:
        """Whether the stream has no more bytes."""


@dataclass
class TarEntry:
    """One member of a layer, as the applier needs it (names are raw bytes)."""

    name: bytes
    kind: str
    mode: int
    uid: int
    gid: int
    size: int  # bytes of data stored in the archive for this entry
    mtime_ns: int
    linkname: bytes = b""
    devmajor: int = 0
    devminor: int = 0
    xattrs: dict[str, bytes] = field(default_factory=dict)
    # For sparse files: (offset, length) chunks, stored back to back; real_size is the file size.
    sparse: list[tuple[int, int]] | None = None
    real_size: int = 0


def _number(field_: bytes, what: str) -> int:
    if field_ and field_[0] & 0x80:  # GNU base-256
        value = int.from_bytes(field_[1:], "big")
        if field_[0] == 0xFF:
            value -= 1 << (8 * (len(field_) - 1))
        elif field_[0] != 0x80:
            raise LayerError(f"tar header: invalid base-256 {what}")
        return value
    text = field_.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise LayerError(f"tar header: invalid {what} field {text!r}") from None


def _cstring(field_: bytes) -> bytes:
    return field_.split(b"\0", 1)[0]


def _checksum_ok(block: bytes) -> bool:
    try:
        stored = _number(block[148:156], "checksum")
    except LayerError:
        return False
    unsigned = sum(block[:148]) + 256 + sum(block[156:])
    if stored == unsigned:
        return True
    signed = sum(b - 256 if b > 127 else b for b in block[:148] + b" " * 8 + block[156:])
    return stored == signed


def parse_pax(data: bytes) -> list[tuple[str, bytes]]:
    """Parse PAX extended header records into (key, raw value) pairs, in order."""
    records = []
    pos = 0
    while pos < len(data):
        if data[pos] == 0:  # padding after the last record
            break
        m = _PAX_LINE.match(data, pos)
        if not m:
            raise LayerError("tar header: malformed PAX record")
        length = int(m.group(1))
        end = pos + length
        if length <= len(m.group(0)) or end > len(data) or data[end - 1 : end] != b"\n":
            raise LayerError("tar header: malformed PAX record length")
        record = data[m.end() : end - 1]
        key, sep, value = record.partition(b"=")
        if not sep:
            raise LayerError("tar header: PAX record without '='")
        records.append((key.decode("utf-8", "surrogateescape"), value))
        pos = end
    return records


def _pax_int(value: bytes, key: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise LayerError(f"tar header: invalid PAX {key}={value!r}") from None


def _pax_time_ns(value: bytes) -> int:
    text = value.decode("ascii", "replace")
    m = re.fullmatch(r"(-?)(\d+)(?:\.(\d*))?", text)
    if not m:
        raise LayerError(f"tar header: invalid PAX mtime={text!r}")
    sign = -1 if m.group(1) else 1
    frac = (m.group(3) or "")[:9].ljust(9, "0")
    return sign * (int(m.group(2)) * 1_000_000_000 + int(frac))


def _sparse_pairs(numbers: list[int]) -> list[tuple[int, int]]:
    if len(numbers) % 2:
        raise LayerError("tar header: odd number of values in a sparse map")
    return list(zip(numbers[0::2], numbers[1::2]))


class _Pending:
    """Extended header state collected for the next real entry."""

    def __init__(self) -> None:
        self.pax: list[tuple[str, bytes]] = []
        self.longname: bytes | None = None
        self.longlink: bytes | None = None


def read_entries(stream: Stream) -> Iterator[TarEntry]:
    """Yield the entries of a tar stream.

    The caller must consume a regular file's data (`entry.size` bytes) through `stream` before
    asking for the next entry; the reader skips everything else.
    Iteration stops at the end-of-archive marker.
    """
    pending = _Pending()
    while True:
        if stream.at_end() and not (pending.pax or pending.longname or pending.longlink):
            return  # no end-of-archive marker: Go's reader (umoci, containerd) accepts this too
        block = stream.read_exact(BLOCK)
        if block == bytes(BLOCK):
            return  # end of archive (a second zero block may follow; the caller drains)
        if not _checksum_ok(block):
            raise LayerError("tar header checksum mismatch: the layer is corrupt or not a tar")
        typeflag = block[156:157]
        size = _number(block[124:136], "size")
        if typeflag in (b"x", b"g", b"X", b"L", b"K"):
            data = stream.read_exact(size)
            stream.skip(-size % BLOCK)
            if typeflag in (b"x", b"X"):
                pending.pax.extend(parse_pax(data))
            elif typeflag == b"L":
                pending.longname = data.split(b"\0", 1)[0]
            elif typeflag == b"K":
                pending.longlink = data.split(b"\0", 1)[0]
            # "g": PAX global headers are ignored on purpose (SPEC.md §3).
            continue
        if typeflag == b"V":  # volume label
            stream.skip(size + (-size % BLOCK))
            pending = _Pending()
            continue
        entry = _entry_from_header(block, typeflag, size, pending, stream)
        pending = _Pending()
        yield entry
        if entry.kind != REGULAR:
            stream.skip(entry.size)  # a GNU dumpdir listing; no other non-file carries data
        stream.skip(-entry.size % BLOCK)


def _entry_from_header(
    block: bytes, typeflag: bytes, size: int, pending: _Pending, stream: Stream
) -> TarEntry:
    magic = block[257:265]
    name = _cstring(block[0:100])
    if magic[:6] == b"ustar\0":
        prefix = _cstring(block[345:500])
        if prefix:
            name = prefix + b"/" + name
    kind = _KINDS.get(typeflag)
    sparse: list[tuple[int, int]] | None = None
    real_size = size
    if typeflag == b"S":  # old GNU sparse
        kind = REGULAR
        sparse, real_size = _gnu_sparse(block, stream)
    if kind is None:
        shown = name.decode("utf-8", "replace")
        raise LayerError(f"tar entry {shown}: unsupported type {typeflag!r}")
    entry = TarEntry(
        name=name,
        kind=kind,
        mode=_number(block[100:108], "mode") & 0o7777,
        uid=_number(block[108:116], "uid"),
        gid=_number(block[116:124], "gid"),
        size=size,
        mtime_ns=_number(block[136:148], "mtime") * 1_000_000_000,
        linkname=_cstring(block[157:257]),
        devmajor=_number(block[329:337], "devmajor") if kind in (CHAR, BLOCKDEV) else 0,
        devminor=_number(block[337:345], "devminor") if kind in (CHAR, BLOCKDEV) else 0,
        sparse=sparse,
        real_size=real_size,
    )
    if pending.longname is not None:
        entry.name = pending.longname
    if pending.longlink is not None:
        entry.linkname = pending.longlink
    if pending.pax:
        _apply_pax(entry, pending.pax, stream)
    if entry.kind != REGULAR and typeflag != b"D":
        # Header-only types carry no data whatever their size field says (as Go's reader does).
        entry.size = 0
    if entry.sparse is None and entry.kind == REGULAR:
        entry.real_size = entry.size
    return entry


def _gnu_sparse(block: bytes, stream: Stream) -> tuple[list[tuple[int, int]], int]:
    numbers = []
    for i in range(4):
        off = 386 + i * 24
        numbers += [
            _number(block[off : off + 12], "sparse"),
            _number(block[off + 12 : off + 24], "sparse"),
        ]
    extended = block[482]
    real_size = _number(block[483:495], "realsize")
    while extended:
        ext = stream.read_exact(BLOCK)
        for i in range(21):
            off = i * 24
            numbers += [
                _number(ext[off : off + 12], "sparse"),
                _number(ext[off + 12 : off + 24], "sparse"),
            ]
        extended = ext[504]
    pairs = [(o, n) for o, n in _sparse_pairs(numbers) if (o, n) != (0, 0)]
    return pairs, real_size


def _apply_pax(entry: TarEntry, records: list[tuple[str, bytes]], stream: Stream) -> None:
    sparse_numbers: list[int] = []
    sparse_major = None
    sparse_name = None
    sparse_size = None
    for key, value in records:
        if key == "path":
            entry.name = value
        elif key == "linkpath":
            entry.linkname = value
        elif key == "size":
            entry.size = _pax_int(value, key)
        elif key == "uid":
            entry.uid = _pax_int(value, key)
        elif key == "gid":
            entry.gid = _pax_int(value, key)
        elif key == "mtime":
            entry.mtime_ns = _pax_time_ns(value)
        elif key.startswith("SCHILY.xattr."):
            entry.xattrs[key[len("SCHILY.xattr.") :]] = value
        elif key in ("SCHILY.devmajor", "SCHILY.devminor"):
            setattr(entry, key[len("SCHILY.") :], _pax_int(value, key))
        elif key in ("GNU.sparse.offset", "GNU.sparse.numbytes"):  # format 0.0
            sparse_numbers.append(_pax_int(value, key))
        elif key == "GNU.sparse.map":  # format 0.1
            sparse_numbers = [_pax_int(v, key) for v in value.split(b",") if v]
        elif key in ("GNU.sparse.size", "GNU.sparse.realsize"):
            sparse_size = _pax_int(value, key)
        elif key == "GNU.sparse.major":
            sparse_major = _pax_int(value, key)
        elif key == "GNU.sparse.name":
            sparse_name = value
    if sparse_size is None and sparse_major is None:
        return
    if entry.kind != REGULAR:
        raise LayerError("tar header: sparse map on a non-regular entry")
    if sparse_name is not None:
        entry.name = sparse_name
    if sparse_major == 1:  # format 1.0: the map is at the start of the data
        sparse_numbers, used = _read_sparse_map_1_0(stream)
        entry.size -= used
    entry.sparse = _sparse_pairs(sparse_numbers)
    entry.real_size = sparse_size if sparse_size is not None else entry.size


def _read_sparse_map_1_0(stream: Stream) -> tuple[list[int], int]:
    data = b""
    used = 0

    def next_number() -> int:
        nonlocal data, used
        while b"\n" not in data:
            data += stream.read_exact(BLOCK)
            used += BLOCK
            if len(data) > 1 << 20:
                raise LayerError("tar header: sparse map too large")
        line, _, data = data.partition(b"\n")
        return _pax_int(line, "GNU.sparse map")

    count = next_number()
    numbers = [next_number() for _ in range(2 * count)]
    return numbers, used
