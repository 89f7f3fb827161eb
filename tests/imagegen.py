"""Build OCI layer tarballs and OCI image layouts in memory for tests.

The tar writer is hand-rolled (not :mod:`tarfile`) so tests can produce what real writers
produce and tarfile cannot: byte-exact binary xattr values, PAX global headers anywhere,
GNU long names, GNU and PAX 1.0 sparse files, base-256 numbers, raw PAX records.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Union

import zstandard

BLOCK = 512

MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = {
    "none": "application/vnd.oci.image.layer.v1.tar",
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
}
REF_NAME = "org.opencontainers.image.ref.name"

_TYPEFLAGS = {
    "file": b"0",
    "hardlink": b"1",
    "symlink": b"2",
    "char": b"3",
    "block": b"4",
    "dir": b"5",
    "fifo": b"6",
}

Name = Union[str, bytes]
MTime = Union[int, float, str, Decimal]


def _b(value: Name) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")


@dataclass
class Entry:
    """One tar member; ``kind`` is file, dir, symlink, hardlink, char, block, fifo or global."""

    name: Name
    kind: str = "file"
    data: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: MTime = 1_600_000_000
    linkname: Name = ""
    devmajor: int = 0
    devminor: int = 0
    xattrs: dict[str, bytes] = field(default_factory=dict)
    # Raw PAX records written after the generated ones (so they can override them).
    pax: dict[Name, Name] = field(default_factory=dict)
    uname: str = ""
    gname: str = ""
    # Override the typeflag byte (e.g. b"\0" for old-style regular files, b"7" contiguous).
    typeflag: bytes | None = None
    # Sparse regular file: data segments (offset, bytes) and the logical size; ``data`` unused.
    sparse: list[tuple[int, bytes]] | None = None
    size: int | None = None

    @property
    def bname(self) -> bytes:
        return _b(self.name)

    @property
    def mtime_ns(self) -> int:
        return mtime_to_ns(self.mtime)

    def content(self) -> bytes:
        """Logical file content (sparse files expanded with zero holes)."""
        if self.sparse is None:
            return self.data
        assert self.size is not None
        buf = bytearray(self.size)
        for offset, chunk in self.sparse:
            buf[offset : offset + len(chunk)] = chunk
        return bytes(buf)


def mtime_to_ns(mtime: MTime) -> int:
    return int(_decimal(mtime) * 1_000_000_000)


def _decimal(mtime: MTime) -> Decimal:
    if isinstance(mtime, float):
        return Decimal(repr(mtime))
    return Decimal(mtime)


def ns(seconds: int, nanoseconds: int) -> str:
    """Exact PAX mtime string for seconds + nanoseconds."""
    return f"{seconds}.{nanoseconds:09d}"


# --- entry helpers -------------------------------------------------------------------------


def f(name: Name, data: bytes = b"", mode: int = 0o644, **kw: object) -> Entry:
    return Entry(name, "file", data=data, mode=mode, **kw)  # type: ignore[arg-type]


def d(name: Name, mode: int = 0o755, **kw: object) -> Entry:
    return Entry(name, "dir", mode=mode, **kw)  # type: ignore[arg-type]


def sym(name: Name, target: Name, **kw: object) -> Entry:
    kw.setdefault("mode", 0o777)
    return Entry(name, "symlink", linkname=target, **kw)  # type: ignore[arg-type]


def hard(name: Name, target: Name, **kw: object) -> Entry:
    return Entry(name, "hardlink", linkname=target, **kw)  # type: ignore[arg-type]


def char(name: Name, major: int, minor: int, mode: int = 0o666, **kw: object) -> Entry:
    return Entry(name, "char", mode=mode, devmajor=major, devminor=minor, **kw)  # type: ignore[arg-type]


def block(name: Name, major: int, minor: int, mode: int = 0o660, **kw: object) -> Entry:
    return Entry(name, "block", mode=mode, devmajor=major, devminor=minor, **kw)  # type: ignore[arg-type]


def fifo(name: Name, mode: int = 0o644, **kw: object) -> Entry:
    return Entry(name, "fifo", mode=mode, **kw)  # type: ignore[arg-type]


def _split_parent(path: Name) -> tuple[bytes, bytes]:
    raw = _b(path).rstrip(b"/")
    parent, _, base = raw.rpartition(b"/")
    return parent, base


def wh(path: Name, **kw: object) -> Entry:
    """Whiteout entry ``DIR/.wh.NAME`` removing ``path`` from lower layers."""
    parent, base = _split_parent(path)
    name = (parent + b"/" if parent else b"") + b".wh." + base
    return Entry(name, "file", mode=0o644, **kw)  # type: ignore[arg-type]


def opq(directory: Name, **kw: object) -> Entry:
    """Opaque whiteout ``DIR/.wh..wh..opq`` hiding the lower layers' children of ``directory``."""
    raw = _b(directory).rstrip(b"/")
    name = (raw + b"/" if raw and raw != b"." else b"") + b".wh..wh..opq"
    return Entry(name, "file", mode=0o644, **kw)  # type: ignore[arg-type]


def sparse(name: Name, size: int, segments: Sequence[tuple[int, bytes]], **kw: object) -> Entry:
    """Sparse regular file of logical ``size``; bytes outside ``segments`` are holes."""
    return Entry(name, "file", sparse=list(segments), size=size, **kw)  # type: ignore[arg-type]


def global_header(records: dict[Name, Name]) -> Entry:
    """A PAX global header ('g') placed wherever it appears in the entry list."""
    return Entry("pax_global_header", "global", pax=dict(records), mtime=0)


# --- tar writer ----------------------------------------------------------------------------


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % BLOCK)


def _octal_fits(value: int, width: int) -> bool:
    return 0 <= value < 8 ** (width - 1)


def _num(value: int, width: int) -> bytes:
    """Octal when it fits, otherwise GNU base-256 (also read by Go and GNU tar)."""
    if _octal_fits(value, width):
        return b"%0*o\0" % (width - 1, value)
    if value < 0:
        value += 1 << (8 * (width - 1))
        return b"\xff" + value.to_bytes(width - 1, "big")
    return b"\x80" + value.to_bytes(width - 1, "big")


def _header(
    name: bytes,
    *,
    typeflag: bytes,
    size: int = 0,
    mode: int = 0o644,
    uid: int = 0,
    gid: int = 0,
    mtime: int = 0,
    linkname: bytes = b"",
    uname: bytes = b"",
    gname: bytes = b"",
    devmajor: int = 0,
    devminor: int = 0,
    prefix: bytes = b"",
    gnu: bool = False,
    gnu_tail: bytes = b"",
) -> bytes:
    """One 512-byte ustar (or old GNU) header block with a correct checksum."""
    assert len(name) <= 100 and len(linkname) <= 100 and len(prefix) <= 155, name
    hdr = bytearray(BLOCK)

    def put(offset: int, width: int, value: bytes) -> None:
        assert len(value) <= width, (offset, value)
        hdr[offset : offset + len(value)] = value

    put(0, 100, name)
    put(100, 8, _num(mode, 8))
    put(108, 8, _num(uid, 8))
    put(116, 8, _num(gid, 8))
    put(124, 12, _num(size, 12))
    put(136, 12, _num(mtime, 12))
    put(148, 8, b" " * 8)
    put(156, 1, typeflag)
    put(157, 100, linkname)
    put(257, 8, b"ustar  \0" if gnu else b"ustar\x0000")
    put(265, 32, uname)
    put(297, 32, gname)
    put(329, 8, _num(devmajor, 8))
    put(337, 8, _num(devminor, 8))
    if gnu:
        assert not prefix
        put(345, BLOCK - 345, gnu_tail)
    else:
        put(345, 155, prefix)
    checksum = sum(hdr)
    put(148, 8, b"%06o\0 " % checksum)
    return bytes(hdr)


def pax_record(key: Name, value: Name) -> bytes:
    """``"%d %s=%s\\n"`` where the length counts itself."""
    body = b" " + _b(key) + b"=" + _b(value) + b"\n"
    length = len(body) + 1
    while len(str(length)) + len(body) != length:
        length = len(str(length)) + len(body)
    return str(length).encode() + body


def _pax_member(records: dict[bytes, bytes], name: bytes, typeflag: bytes, gnu: bool) -> bytes:
    payload = b"".join(pax_record(k, v) for k, v in records.items())
    base = name.rstrip(b"/").rpartition(b"/")[2][:80] or b"x"
    hname = (b"PaxHeaders.0/" + base) if typeflag == b"x" else b"pax_global_header"
    return _header(hname, typeflag=typeflag, size=len(payload), gnu=gnu) + _pad(payload)


def extended_header(records: dict[Name, Name], typeflag: bytes = b"x") -> bytes:
    """A standalone PAX extended ('x') or global ('g') header member, for crafted sequences."""
    return _pax_member({_b(k): _b(v) for k, v in records.items()}, b"crafted", typeflag, False)


def header_block(name: Name, **kw: object) -> bytes:
    """One raw ustar header block (see ``_header`` for the fields), checksum included."""
    return _header(_b(name), **kw)  # type: ignore[arg-type]


def _gnu_long(typeflag: bytes, value: bytes) -> bytes:
    payload = value + b"\0"
    return _header(b"././@LongLink", typeflag=typeflag, size=len(payload), gnu=True) + _pad(payload)


def _split_ustar(name: bytes) -> tuple[bytes, bytes] | None:
    """Split a name into ustar (prefix, name) if it fits 155/100, else None."""
    if len(name) <= 100:
        return b"", name
    for i in range(min(155, len(name) - 2), 0, -1):
        if name[i : i + 1] == b"/" and 0 < len(name) - i - 1 <= 100:
            return name[:i], name[i + 1 :]
    return None


def _mtime_fields(mtime: MTime) -> tuple[int, bytes | None]:
    value = _decimal(mtime)
    seconds = int(value.to_integral_value(rounding="ROUND_FLOOR"))
    if value == seconds:
        return seconds, None
    text = format(value.normalize(), "f")
    return seconds, text.encode()


def _sparse_gnu_tail(segments: list[tuple[int, int]], realsize: int) -> tuple[bytes, bytes]:
    """Old GNU header tail (atime..realsize) with up to 4 map entries; plus extension blocks."""
    first, rest = segments[:4], segments[4:]
    tail = bytearray(BLOCK - 345)
    # offsets relative to byte 345: atime(12) ctime(12) offset(12) longnames(4) unused(1)
    pos = 386 - 345
    for off, length in first:
        tail[pos : pos + 12] = _num(off, 12)
        tail[pos + 12 : pos + 24] = _num(length, 12)
        pos += 24
    tail[482 - 345] = 1 if rest else 0
    tail[483 - 345 : 495 - 345] = _num(realsize, 12)
    ext = b""
    while rest:
        chunk, rest = rest[:21], rest[21:]
        blk = bytearray(BLOCK)
        pos = 0
        for off, length in chunk:
            blk[pos : pos + 12] = _num(off, 12)
            blk[pos + 12 : pos + 24] = _num(length, 12)
            pos += 24
        blk[504] = 1 if rest else 0
        ext += bytes(blk)
    return bytes(tail), ext


def _sparse_map(entry: Entry) -> tuple[list[tuple[int, int]], bytes]:
    assert entry.sparse is not None and entry.size is not None
    segments = sorted(entry.sparse)
    # GNU tar reads each segment's data from a fresh 512-byte block while Go and Python read
    # the data contiguously; they agree only on block-aligned segments, which is what GNU writes.
    for i, (off, chunk) in enumerate(segments):
        last = i == len(segments) - 1
        assert off % BLOCK == 0 and (last or len(chunk) % BLOCK == 0), "unaligned sparse segment"
    spans = [(off, len(chunk)) for off, chunk in segments]
    end = spans[-1][0] + spans[-1][1] if spans else 0
    assert end <= entry.size
    if end < entry.size or not spans:
        spans.append((entry.size, 0))  # GNU tar marks a trailing hole this way
    return spans, b"".join(chunk for _, chunk in segments)


def entry_bytes(entry: Entry, *, fmt: str = "pax") -> bytes:
    """Serialize one entry (with its PAX / GNU long-name prefix members) to tar blocks."""
    if fmt not in ("pax", "gnu"):
        raise ValueError(fmt)
    gnu = fmt == "gnu"
    if entry.kind == "global":
        records = {_b(k): _b(v) for k, v in entry.pax.items()}
        return _pax_member(records, b"", b"g", gnu)

    name = entry.bname
    if entry.kind == "dir" and not name.endswith(b"/"):
        name += b"/"
    linkname = _b(entry.linkname)
    typeflag = entry.typeflag if entry.typeflag is not None else _TYPEFLAGS[entry.kind]
    payload = entry.data if entry.kind == "file" else b""
    size = len(payload)
    seconds, frac = _mtime_fields(entry.mtime)

    pax: dict[bytes, bytes] = {}
    out = b""
    gnu_tail = b""
    ext_blocks = b""
    if entry.sparse is not None:
        spans, stored = _sparse_map(entry)
        assert entry.size is not None
        if gnu:
            typeflag = b"S"
            gnu_tail, ext_blocks = _sparse_gnu_tail(spans, entry.size)
            payload, size = stored, len(stored)
        else:
            text = b"%d\n" % len(spans) + b"".join(b"%d\n%d\n" % s for s in spans)
            payload = _pad(text) + stored
            size = len(payload)
            pax[b"GNU.sparse.major"] = b"1"
            pax[b"GNU.sparse.minor"] = b"0"
            pax[b"GNU.sparse.name"] = name
            pax[b"GNU.sparse.realsize"] = b"%d" % entry.size
            base = name.rstrip(b"/").rpartition(b"/")[2]
            name = b"GNUSparseFile.0/" + base[:80]

    prefix = b""
    if gnu:
        if len(name) > 100:
            out += _gnu_long(b"L", name)
            name = name[:100]
        if len(linkname) > 100:
            out += _gnu_long(b"K", linkname)
            linkname = linkname[:100]
    else:
        split = _split_ustar(name)
        if split is None:
            pax[b"path"] = name
            name = name[:100]
        else:
            prefix, name = split
        if len(linkname) > 100:
            pax[b"linkpath"] = linkname
            linkname = linkname[:100]
        for key, value, width in (
            (b"size", size, 12),
            (b"uid", entry.uid, 8),
            (b"gid", entry.gid, 8),
        ):
            if not _octal_fits(value, width):
                pax[key] = b"%d" % value
    if frac is not None:
        pax[b"mtime"] = frac
    elif not gnu and not _octal_fits(seconds, 12):
        pax[b"mtime"] = b"%d" % seconds
    for xname, xvalue in entry.xattrs.items():
        pax[b"SCHILY.xattr." + _b(xname)] = xvalue
    for key, value in entry.pax.items():
        pax[_b(key)] = _b(value)
    if pax:
        out += _pax_member(pax, name if not prefix else prefix + b"/" + name, b"x", gnu)

    def clamp(value: int, width: int) -> int:
        return value if (gnu or _octal_fits(value, width)) else 0

    out += _header(
        name,
        typeflag=typeflag,
        size=clamp(size, 12),
        mode=entry.mode,
        uid=clamp(entry.uid, 8),
        gid=clamp(entry.gid, 8),
        mtime=seconds if (gnu or _octal_fits(seconds, 12)) else 0,
        linkname=linkname,
        uname=entry.uname.encode(),
        gname=entry.gname.encode(),
        devmajor=entry.devmajor,
        devminor=entry.devminor,
        prefix=prefix,
        gnu=gnu,
        gnu_tail=gnu_tail,
    )
    return out + ext_blocks + _pad(payload)


def layer_tar(
    entries: Iterable[Entry | bytes],
    *,
    fmt: str = "pax",
    global_pax: dict[Name, Name] | None = None,
    record_size: int | None = None,
) -> bytes:
    """A complete layer tar: entries (raw ``bytes`` items are copied verbatim), two zero blocks.

    ``fmt='pax'`` writes ustar headers with PAX 'x' records where needed; ``fmt='gnu'`` writes
    old GNU headers with 'L'/'K' long names, base-256 numbers and 'S' sparse files (PAX records
    are still added for xattrs and sub-second mtimes, as Go's writer would).
    ``record_size`` pads the archive to a multiple of that many bytes (GNU tar uses 10240).
    """
    out = io.BytesIO()
    if global_pax is not None:
        out.write(entry_bytes(global_header(global_pax), fmt=fmt))
    for item in entries:
        out.write(item if isinstance(item, bytes) else entry_bytes(item, fmt=fmt))
    out.write(b"\0" * (2 * BLOCK))
    data = out.getvalue()
    if record_size:
        data += b"\0" * (-len(data) % record_size)
    return data


# --- compression ---------------------------------------------------------------------------


def _chunks(data: bytes, members: int) -> list[bytes]:
    if members <= 1:
        return [data]
    step = max(1, -(-len(data) // members))
    parts = [data[i : i + step] for i in range(0, len(data), step)]
    while len(parts) < members:
        parts.append(b"")
    return parts


def zstd_skippable_frame(payload: bytes = b"bootc-live test", magic_low: int = 0) -> bytes:
    assert 0 <= magic_low <= 0xF
    return (
        (0x184D2A50 + magic_low).to_bytes(4, "little")
        + len(payload).to_bytes(4, "little")
        + payload
    )


def compress(
    data: bytes,
    method: str,
    *,
    members: int = 1,
    skippable: str | None = None,
    level: int = 3,
    window_log: int | None = None,
) -> bytes:
    """Compress a tar as ``gzip``, ``zstd`` or ``none``.

    ``members`` > 1 splits the input into that many gzip members / zstd frames.
    ``skippable`` ('start', 'middle' or 'end') inserts a zstd skippable frame there.
    ``window_log``: zstd frames that declare a window of 2**window_log bytes, as `zstd
    --long=N` writes them from a pipe (no content size).
    """
    parts = _chunks(data, members)
    if method == "none":
        assert skippable is None
        return data
    if method == "gzip":
        assert skippable is None
        return b"".join(gzip.compress(p, compresslevel=6, mtime=0) for p in parts)
    if method == "zstd" and window_log is not None:
        params = zstandard.ZstdCompressionParameters.from_level(
            level, window_log=window_log, write_content_size=0, write_checksum=1
        )
        streaming = zstandard.ZstdCompressor(compression_params=params)
        frames = [(o := streaming.compressobj()).compress(p) + o.flush() for p in parts]
    elif method == "zstd":
        cctx = zstandard.ZstdCompressor(level=level, write_content_size=True, write_checksum=True)
        frames = [cctx.compress(p) for p in parts]
    if method == "zstd":
        if skippable is not None:
            where = {"start": 0, "middle": len(frames) // 2 or 1, "end": len(frames)}[skippable]
            frames.insert(where, zstd_skippable_frame())
        return b"".join(frames)
    raise ValueError(method)


# --- OCI image layout ----------------------------------------------------------------------


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _json(obj: object) -> bytes:
    return json.dumps(obj, indent=None, separators=(",", ":"), sort_keys=True).encode()


@dataclass
class Blob:
    digest: str
    size: int
    path: Path


@dataclass
class ImageInfo:
    layout: Path
    manifest_digest: str
    manifest_size: int
    manifest_path: Path
    manifest_descriptor: dict[str, object]
    config_digest: str
    config_path: Path
    layer_digests: list[str]
    layer_paths: list[Path]
    layer_media_types: list[str]
    diff_ids: list[str]
    tags: list[str]

    def blob_path(self, digest: str) -> Path:
        return blob_path(self.layout, digest)


def blob_path(layout: Path | str, digest: str) -> Path:
    algo, _, hexdigest = digest.partition(":")
    return Path(layout) / "blobs" / algo / hexdigest


def init_layout(layout: Path | str) -> Path:
    """Create an empty OCI image layout (no-op when one exists)."""
    layout = Path(layout)
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    if not (layout / "oci-layout").exists():
        (layout / "oci-layout").write_bytes(_json({"imageLayoutVersion": "1.0.0"}))
    if not (layout / "index.json").exists():
        write_index(layout, [])
    return layout


def write_blob(layout: Path | str, data: bytes) -> Blob:
    digest = sha256(data)
    path = blob_path(layout, digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return Blob(digest, len(data), path)


def read_index(layout: Path | str) -> dict[str, object]:
    return json.loads((Path(layout) / "index.json").read_bytes())


def write_index(
    layout: Path | str, manifests: list[dict[str, object]], media_type: bool = True
) -> None:
    index: dict[str, object] = {"schemaVersion": 2, "manifests": manifests}
    if media_type:
        index["mediaType"] = MT_INDEX
    (Path(layout) / "index.json").write_bytes(_json(index))


def add_to_index(layout: Path | str, descriptor: dict[str, object], tag: str | None) -> None:
    """Append a descriptor to index.json, annotated with ``tag`` as its ref.name."""
    index = read_index(layout)
    manifests = list(index["manifests"])  # type: ignore[call-overload]
    desc = dict(descriptor)
    if tag is not None:
        annotations = dict(desc.get("annotations") or {})  # type: ignore[call-overload]
        annotations[REF_NAME] = tag
        desc["annotations"] = annotations
    manifests.append(desc)
    write_index(layout, manifests)


def build_image(
    layout: Path | str,
    layers: Sequence[bytes],
    *,
    compression: str | Sequence[str] = "gzip",
    platform: tuple[str, ...] = ("linux", "amd64"),
    config_extra: dict[str, object] | None = None,
    media_type_override: str | Sequence[str | None] | None = None,
    compress_kw: dict[str, object] | None = None,
) -> ImageInfo:
    """Write the blobs of one image (layers, config, manifest); does not touch index.json.

    ``layers`` are uncompressed tars; each is compressed with ``compression`` (one method or a
    list, one per layer). ``media_type_override`` replaces the declared layer media types (to
    test magic-byte detection) — one string for all layers, or a list with None = keep.
    """
    layout = init_layout(layout)
    methods = [compression] * len(layers) if isinstance(compression, str) else list(compression)
    assert len(methods) == len(layers)
    if media_type_override is None or isinstance(media_type_override, str):
        overrides: list[str | None] = [media_type_override] * len(layers)
    else:
        overrides = list(media_type_override)
    layer_descs = []
    diff_ids = []
    blobs = []
    for tar_bytes, method, override in zip(layers, methods, overrides):
        blob = write_blob(layout, compress(tar_bytes, method, **(compress_kw or {})))  # type: ignore[arg-type]
        blobs.append(blob)
        diff_ids.append(sha256(tar_bytes))
        layer_descs.append(
            {"mediaType": override or MT_LAYER[method], "digest": blob.digest, "size": blob.size}
        )
    os_name, arch, *variant = platform
    config: dict[str, object] = {
        "created": "2024-01-01T00:00:00Z",
        "architecture": arch,
        "os": os_name,
        "config": {"Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "imagegen"}] * len(layers),
    }
    if variant:
        config["variant"] = variant[0]
    config.update(config_extra or {})
    config_blob = write_blob(layout, _json(config))
    manifest = {
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": {
            "mediaType": MT_CONFIG,
            "digest": config_blob.digest,
            "size": config_blob.size,
        },
        "layers": layer_descs,
    }
    manifest_blob = write_blob(layout, _json(manifest))
    plat: dict[str, object] = {"os": os_name, "architecture": arch}
    if variant:
        plat["variant"] = variant[0]
    descriptor: dict[str, object] = {
        "mediaType": MT_MANIFEST,
        "digest": manifest_blob.digest,
        "size": manifest_blob.size,
        "platform": plat,
    }
    return ImageInfo(
        layout=layout,
        manifest_digest=manifest_blob.digest,
        manifest_size=manifest_blob.size,
        manifest_path=manifest_blob.path,
        manifest_descriptor=descriptor,
        config_digest=config_blob.digest,
        config_path=config_blob.path,
        layer_digests=[b.digest for b in blobs],
        layer_paths=[b.path for b in blobs],
        layer_media_types=[str(ld["mediaType"]) for ld in layer_descs],
        diff_ids=diff_ids,
        tags=[],
    )


def build_layout(
    layout: Path | str,
    layers: Sequence[bytes],
    *,
    compression: str | Sequence[str] = "gzip",
    tag: str | None = "latest",
    more_tags: Iterable[str] = (),
    platform: tuple[str, ...] = ("linux", "amd64"),
    config_extra: dict[str, object] | None = None,
    media_type_override: str | Sequence[str | None] | None = None,
    compress_kw: dict[str, object] | None = None,
) -> ImageInfo:
    """Write an image into an OCI layout (created if needed) and list it in index.json.

    With ``tag=None`` the index entry has no ref.name annotation. Calling this again on the same
    layout adds another image (multiple tagged images in one layout).
    """
    info = build_image(
        layout,
        layers,
        compression=compression,
        platform=platform,
        config_extra=config_extra,
        media_type_override=media_type_override,
        compress_kw=compress_kw,
    )
    tags = ([tag] if tag is not None else []) + list(more_tags)
    for t in tags or [None]:
        add_to_index(layout, info.manifest_descriptor, t)
    info.tags = tags
    return info


def add_nested_index(
    layout: Path | str,
    images: Sequence[ImageInfo | dict[str, object]],
    *,
    tag: str | None = "latest",
    depth: int = 1,
) -> str:
    """List ``images`` in an image-index blob, wrapped in ``depth - 1`` more index blobs, and
    reference the outermost one from index.json (index.json → index → … → manifests).

    Returns the digest of the outermost index blob.
    """
    descs = [i.manifest_descriptor if isinstance(i, ImageInfo) else i for i in images]
    desc: dict[str, object] = {}
    for _ in range(depth):
        blob = write_blob(
            layout, _json({"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": descs})
        )
        desc = {"mediaType": MT_INDEX, "digest": blob.digest, "size": blob.size}
        descs = [desc]
    add_to_index(layout, desc, tag)
    return str(desc["digest"])


def write_oci_archive(
    layout: Path | str, path: Path | str, *, blobs_first: bool = True, compress_gz: bool = False
) -> Path:
    """Tar an OCI layout the way ``skopeo copy ... oci-archive:`` does (plain tar, no ./ prefix).

    ``blobs_first`` follows a lexical walk (blobs/, index.json, oci-layout); False puts
    oci-layout and index.json first.
    """
    layout = Path(layout)
    names = []
    for dirpath, dirnames, filenames in os.walk(layout):
        dirnames.sort()
        rel = Path(dirpath).relative_to(layout)
        if str(rel) != ".":
            names.append(rel)
        names.extend(rel / n for n in sorted(filenames))
    top = [Path("index.json"), Path("oci-layout")]
    rest = [n for n in names if n not in top]
    ordered = sorted(names, key=str) if blobs_first else top + rest
    path = Path(path)
    mode = "w:gz" if compress_gz else "w"
    with tarfile.open(path, mode, format=tarfile.PAX_FORMAT) as tar:
        for name in ordered:
            info = tar.gettarinfo(layout / name, arcname=str(name))
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            if info.isfile():
                with open(layout / name, "rb") as fh:
                    tar.addfile(info, fh)
            else:
                tar.addfile(info)
    return path


BUSYBOX = Path("/bin/busybox")  # Debian's busybox-static (./setup): static, for this machine


def bootable() -> list[Entry]:
    """What the runtime's last check (initcheck) asks of a root it says is ready: the mount
    points of the kernel's filesystems, an os-release, an init this machine runs."""
    return [
        *(d(name) for name in ("proc", "sys", "dev", "run", "sbin", "usr", "usr/lib")),
        f("usr/lib/os-release", b"ID=test\n"),
        f("sbin/init", BUSYBOX.read_bytes(), mode=0o755),
    ]


def write_bootable(where: Path) -> None:
    """bootable() written into the directory `where`."""
    for entry in bootable():
        path = where / os.fsdecode(entry.name)
        if entry.kind == "dir":
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.write_bytes(entry.data)
            path.chmod(entry.mode)
