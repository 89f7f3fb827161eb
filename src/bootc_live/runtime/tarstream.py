"""A streaming tar reader: ustar, GNU and PAX headers, sparse files, names as raw bytes.

Written for layer application rather than taken from `tarfile`, because layers need things
`tarfile` does differently: PAX global headers must be ignored (tarfile merges them into later
entries), xattr values and names must stay bytes, and data must flow straight from the
decompressor into the destination file without intermediate copies.

Where SPEC.md §3 is silent, it reads as Go's archive/tar (so umoci, containerd and podman) does:
- formats by magic: `ustar\0` is ustar/PAX (a `tar\0` trailer at byte 508 makes it star, whose
  prefix is 131 bytes), `ustar  \0` is GNU (no prefix field), anything else is v7 (no prefix,
  no device numbers);
- a v7 regular entry (typeflag NUL) whose name ends in `/` is a directory; a `0` entry is a
  regular file whatever its name (GNU tar makes both directories);
- a GNU header whose atime/ctime fields do not parse as numbers, from Go before 1.8, which put
  a ustar prefix there: that field is the prefix when it is ASCII;
- consecutive extended headers do not merge: the last `x` (and the last `L`, `K`) applies; a
  PAX global header (`g`) is ignored and drops what earlier extended headers set (Go returns it
  as an entry of its own, so they never reach the next one);
- a stream that ends after a header's data, even an extended header's, ends the archive; so
  does a zero block followed by another or by the end, but a header after one zero block is
  an error;
- a PAX record with an empty value keeps the header's value (an empty xattr is an empty xattr);
- an owner of 2**32-1 (or -1) is chown's "unchanged": the node stays root's, as with GNU tar
  and umoci;
- extended headers hold at most 1 MiB; a NUL byte in a PAX key or in a path, link path or
  xattr name, a negative size, a number beyond 64 bits, an owner beyond 32 bits, a device
  number Linux cannot encode (major ≥ 4096, minor ≥ 2**20; umoci truncates them) and a sparse
  map out of order or beyond the file are errors naming the entry.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from .errors import LayerError, shown

BLOCK = 512
MAX_EXTENDED = 1 << 20  # bytes of one PAX or GNU long-name header (Go's limit), or sparse map
_INT64 = 1 << 63
_UNCHANGED_ID = (1 << 32) - 1  # (uid_t)-1: "leave the owner" to chown
_MAX_MAJOR = (1 << 12) - 1  # what Linux's dev_t encodes
_MAX_MINOR = (1 << 20) - 1
_STRING_KEYS = ("path", "linkpath", "uname", "gname")  # PAX values that must not hold NUL

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
# Numbers: leading zeros (as Go reads them), then at most 19 digits (int() of thousands raises).
_PAX_LINE = re.compile(rb"0*([0-9]{1,19}) ")
_PAX_NUMBER = re.compile(rb"(-?)0*([0-9]{1,19})")
_PAX_TIME = re.compile(_PAX_NUMBER.pattern + rb"(?:\.([0-9]*))?")  # seconds[.fraction]
_OCTAL = re.compile(rb"[0-7]+")


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
    if field_ and field_[0] & 0x80:  # GNU base-256: two's complement in the other bits
        bits = 8 * len(field_) - 1
        value = int.from_bytes(field_, "big") & ((1 << bits) - 1)
        if field_[0] & 0x40:
            value -= 1 << bits
    else:
        text = field_.strip(b" \0").split(b"\0", 1)[0]
        if not text:
            return 0
        if _OCTAL.fullmatch(text) is None:
            raise LayerError(f"tar header: invalid {what} field {shown(repr(text))}")
        value = int(text, 8)
    if not -_INT64 <= value < _INT64:
        raise LayerError(f"tar header: {what} does not fit in 64 bits")
    return value


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
        if not sep or not key:
            raise LayerError("tar header: PAX record without a key")
        records.append((key.decode("utf-8", "surrogateescape"), value))
        pos = end
    return records


def _pax_int(value: bytes, key: str) -> int:
    m = _PAX_NUMBER.fullmatch(value)
    number = int(m.group(1) + m.group(2)) if m else _INT64
    if not -_INT64 <= number < _INT64:
        raise LayerError(f"tar header: invalid PAX {shown(key)}={shown(repr(value))}")
    return number


def _pax_time_ns(value: bytes) -> int:
    m = _PAX_TIME.fullmatch(value)
    if not m or int(m.group(2)) >= _INT64:
        text = value.decode("ascii", "replace")
        raise LayerError(f"tar header: invalid PAX mtime={shown(repr(text))}")
    sign = -1 if m.group(1) else 1
    frac = (m.group(3) or b"")[:9].ljust(9, b"0")
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
        if stream.at_end():
            # No end-of-archive marker, even after extended headers: Go's reader (umoci,
            # containerd) ends there cleanly too.
            return
        block = stream.read_exact(BLOCK)
        if block == bytes(BLOCK):
            # The end of the archive: a second zero block, or the end of the stream, follows
            # (the caller drains whatever comes after); a header after one zero block is an
            # error, as in Go (other tools would stop there, or go on).
            if not stream.at_end() and stream.read_exact(BLOCK) != bytes(BLOCK):
                raise LayerError("tar stream: a header after a lone zero block")
            return
        if not _checksum_ok(block):
            raise LayerError("tar header checksum mismatch: the layer is corrupt or not a tar")
        typeflag = block[156:157]
        size = _number(block[124:136], "size")
        if typeflag in (b"x", b"g", b"X", b"L", b"K"):
            if not 0 <= size <= MAX_EXTENDED:
                raise LayerError(
                    f"tar header: an extended header of {size} bytes (at most {MAX_EXTENDED})"
                )
            data = stream.read_exact(size)
            stream.skip(-size % BLOCK)
            if typeflag in (b"x", b"X"):
                pending.pax = parse_pax(data)  # the last one applies, as in Go
            elif typeflag == b"L":
                pending.longname = data.split(b"\0", 1)[0]
            elif typeflag == b"K":
                pending.longlink = data.split(b"\0", 1)[0]
            else:  # "g": ignored on purpose (SPEC.md §3), and it ends what came before
                parse_pax(data)
                pending = _Pending()
            continue
        if typeflag == b"V":  # volume label
            if size < 0:
                raise LayerError(f"tar header: a volume label of negative size {size}")
            stream.skip(size + (-size % BLOCK))
            pending = _Pending()
            continue
        entry = _entry_from_header(block, typeflag, size, pending, stream)
        pending = _Pending()
        yield entry
        if entry.kind != REGULAR:
            stream.skip(entry.size)  # a GNU dumpdir listing; no other non-file carries data
        if not _skip_padding(stream, -entry.size % BLOCK):
            return


def _skip_padding(stream: Stream, n: int) -> bool:
    """Skip the padding after a member's data; False when the stream ends within it, which
    Go's reader (umoci, podman) takes as the end of the archive: umoci 0.4.7's `insert` writes
    a layer so, its last member's data not padded and no end-of-archive marker after it."""
    while n:
        if stream.at_end():
            return False
        n -= len(stream.read_some(n))
    return True


def _format(block: bytes) -> str:
    """'ustar', 'star', 'gnu' or 'v7', by magic, as Go's reader tells them apart."""
    if block[257:263] == b"ustar\0":
        return "star" if block[508:512] == b"tar\0" else "ustar"
    if block[257:265] == b"ustar  \0":
        return "gnu"
    return "v7"


def _prefix(block: bytes, fmt: str) -> bytes:
    if fmt == "ustar":
        return _cstring(block[345:500])
    if fmt == "star":
        return _cstring(block[345:476])
    if fmt == "gnu":
        # Go before 1.8 wrote a ustar prefix into GNU headers, over atime and ctime: when
        # those do not parse as numbers, the field is that prefix (if it is ASCII).
        try:
            for start in (345, 357):
                if block[start]:
                    _number(block[start : start + 12], "atime/ctime")
        except LayerError:
            prefix = _cstring(block[345:500])
            return prefix if prefix.isascii() else b""
    return b""


def _entry_from_header(
    block: bytes, typeflag: bytes, size: int, pending: _Pending, stream: Stream
) -> TarEntry:
    fmt = _format(block)
    name = _cstring(block[0:100])
    prefix = _prefix(block, fmt)
    if prefix:
        name = prefix + b"/" + name
    kind = _KINDS.get(typeflag)
    sparse: list[tuple[int, int]] | None = None
    real_size = size
    if typeflag == b"S" and fmt == "gnu":  # old GNU sparse
        kind = REGULAR
        sparse, real_size = _gnu_sparse(block, stream)
    if kind is None:
        raise LayerError(f"tar entry {shown(name)}: unsupported type {typeflag!r}")
    devices = kind in (CHAR, BLOCKDEV) and fmt != "v7"
    entry = TarEntry(
        name=name,
        kind=kind,
        mode=_number(block[100:108], "mode") & 0o7777,
        uid=_number(block[108:116], "uid"),
        gid=_number(block[116:124], "gid"),
        size=size,
        mtime_ns=_number(block[136:148], "mtime") * 1_000_000_000,
        linkname=_cstring(block[157:257]),
        devmajor=_number(block[329:337], "devmajor") if devices else 0,
        devminor=_number(block[337:345], "devminor") if devices else 0,
        sparse=sparse,
        real_size=real_size,
    )
    if pending.longname:
        entry.name = pending.longname
    if pending.longlink:
        entry.linkname = pending.longlink
    if pending.pax:
        # As Go's reader: a GNU long name or link wins over the PAX path or linkpath, whichever
        # came first (GNU.sparse.name wins over both).
        overridden = {"path"} if pending.longname else set()
        overridden |= {"linkpath"} if pending.longlink else set()
        _apply_pax(entry, [r for r in pending.pax if r[0] not in overridden], stream)
    if typeflag == b"\0" and entry.name.endswith(b"/"):
        entry.kind = DIRECTORY  # a v7 directory
    if entry.kind != REGULAR and typeflag != b"D":
        # Header-only types carry no data whatever their size field says (as Go's reader does).
        entry.size = 0
    if entry.sparse is None:
        entry.real_size = entry.size
    # chown takes (uid_t)-1 as "leave the owner": GNU tar and umoci leave the extracting
    # user's (root's) there, and so do we (-1 to os.chown).
    entry.uid = -1 if entry.uid == _UNCHANGED_ID else entry.uid
    entry.gid = -1 if entry.gid == _UNCHANGED_ID else entry.gid
    _check(entry)
    return entry


def _check(entry: TarEntry) -> None:
    """Refuse what no filesystem call could take, naming the entry."""
    problem = ""
    if b"\0" in entry.name:
        problem = "its name contains a NUL byte"
    elif b"\0" in entry.linkname:
        problem = "its link name contains a NUL byte"
    elif entry.size < 0 or entry.real_size < 0:
        problem = f"negative size {min(entry.size, entry.real_size)}"
    elif not (-1 <= entry.uid < _UNCHANGED_ID and -1 <= entry.gid < _UNCHANGED_ID):
        problem = f"owner {entry.uid}:{entry.gid} is not a 32-bit uid:gid"
    elif not (0 <= entry.devmajor <= _MAX_MAJOR and 0 <= entry.devminor <= _MAX_MINOR):
        problem = (
            f"device {entry.devmajor}:{entry.devminor} does not fit Linux's device numbers "
            f"(major < {_MAX_MAJOR + 1}, minor < {_MAX_MINOR + 1})"
        )
    elif not -_INT64 <= entry.mtime_ns // 1_000_000_000 < _INT64:
        problem = "its mtime does not fit in 64 bits"
    elif entry.sparse is not None and not _sparse_ok(entry.sparse, entry.size, entry.real_size):
        problem = "inconsistent sparse map"
    if problem:
        raise LayerError(f"tar entry {shown(entry.name)}: {problem}")


def _sparse_ok(chunks: list[tuple[int, int]], stored: int, real_size: int) -> bool:
    """Chunks in order, not overlapping, inside the file, adding up to the data stored."""
    end = 0
    for offset, length in chunks:
        if offset < end or length < 0 or offset + length > real_size:
            return False
        end = offset + length
    return sum(length for _, length in chunks) == stored


def _gnu_sparse(block: bytes, stream: Stream) -> tuple[list[tuple[int, int]], int]:
    def chunks(area: bytes, count: int) -> list[tuple[int, int]]:
        found = []
        for i in range(count):
            off = i * 24
            if area[off] == 0:  # the map ends at the first empty offset (as GNU and Go do)
                break
            found.append(
                (
                    _number(area[off : off + 12], "sparse"),
                    _number(area[off + 12 : off + 24], "sparse"),
                )
            )
        return found

    pairs = chunks(block[386:482], 4)
    extended = block[482]
    real_size = _number(block[483:495], "realsize")
    held = BLOCK
    while extended:
        held += BLOCK
        if held > MAX_EXTENDED:  # each block holds 21 more pairs: memory, unless bounded
            raise LayerError(f"tar header: sparse map larger than {MAX_EXTENDED} bytes")
        ext = stream.read_exact(BLOCK)
        pairs += chunks(ext, 21)
        extended = ext[504]
    return [(o, n) for o, n in pairs if n], real_size


def _apply_pax(entry: TarEntry, records: list[tuple[str, bytes]], stream: Stream) -> None:
    sparse_numbers: list[int] = []
    sparse_major = None
    sparse_name = None
    sparse_size = None
    for key, value in records:
        if "\0" in key:
            raise LayerError(
                f"tar entry {shown(entry.name)}: PAX key {shown(key)} contains a NUL byte"
            )
        if key in _STRING_KEYS and b"\0" in value:
            raise LayerError(f"tar entry {shown(value)}: its PAX {key} contains a NUL byte")
        if key.startswith("SCHILY.xattr."):
            entry.xattrs[key[len("SCHILY.xattr.") :]] = value
        elif not value:
            continue  # an empty record keeps the header's value (as Go does)
        elif key == "path":
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
        raise LayerError(f"tar entry {shown(entry.name)}: sparse map on a non-regular entry")
    if sparse_name is not None:
        entry.name = sparse_name
    if entry.size < 0:
        raise LayerError(f"tar entry {shown(entry.name)}: negative size {entry.size}")
    if sparse_major == 1:  # format 1.0: the map is at the start of the data
        sparse_numbers, used = _read_sparse_map_1_0(stream, entry.size)
        entry.size -= used
    entry.sparse = _sparse_pairs(sparse_numbers)
    entry.real_size = sparse_size if sparse_size is not None else entry.size


def _read_sparse_map_1_0(stream: Stream, size: int) -> tuple[list[int], int]:
    """The map at the start of a format 1.0 sparse file's data: a count, then that many
    offset and length pairs, a decimal number a line, padded to a block. Read a block at a
    time, each block's lines parsed together (a line over many blocks joined once): a map of
    many short lines, or one very long line, costs what its bytes do."""
    numbers: list[int] = []
    wanted = 1  # the count, then 2 x count more
    pieces: list[bytes] = []  # of a line not ended yet
    used = 0
    while len(numbers) < wanted:
        if used + BLOCK > size:
            raise LayerError("tar header: sparse map longer than the entry's data")
        if used + BLOCK > MAX_EXTENDED:
            raise LayerError(f"tar header: sparse map larger than {MAX_EXTENDED} bytes")
        block = stream.read_exact(BLOCK)
        used += BLOCK
        if b"\n" not in block:
            pieces.append(block)
            continue
        lines = b"".join([*pieces, block]).split(b"\n")
        pieces = [lines.pop()]
        for line in lines:
            numbers.append(_map_number(line))
            if len(numbers) == 1:
                wanted += 2 * max(numbers[0], 0)
            if len(numbers) == wanted:
                break
    return numbers[1:], used


def _map_number(line: bytes) -> int:
    if 0 < len(line) < 19 and line.isdigit():  # the usual: fewer digits than 2**63 has
        return int(line)
    return _pax_int(line, "GNU.sparse map")
