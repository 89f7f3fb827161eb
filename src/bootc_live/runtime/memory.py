"""Memory planning: will the unpacked image fit? Decided before anything is written."""

from __future__ import annotations

import contextlib
import math
import os
import threading
import weakref
from collections.abc import Collection
from dataclasses import dataclass, replace

from . import decompress
from .blobs import Descriptor
from .cmdline import TMPFS, RootMode
from .errors import BootcLiveError
from .oci import Image
from .unpack import HASH_CHUNKS, QUEUE_CHUNKS

SIZES_ANNOTATION = "org.bootc-live.layer-sizes"  # written by `bootc-live build`
# Also written by `bootc-live build` (bootc_live.zramsize): the bytes the image's file data takes
# as zstd-compressed 4 KiB pages, which is what zram stores.
ZRAM_ANNOTATION = "org.bootc-live.zram-zstd-bytes"
# Also written by `bootc-live build` (bootc_live.footprint): what the image's root takes in a
# tmpfs, its files' pages and the kernel's memory for each entry.
TMPFS_ANNOTATION = "org.bootc-live.tmpfs-bytes"
# Also written by `bootc-live build` when it packed the root (pack.Packed.annotations): the
# packed root's filesystem image, its bytes, sha256 and FORMAT:COMPRESSOR (inspect shows them).
PACKED_BYTES_ANNOTATION = "org.bootc-live.packed-bytes"
PACKED_SHA256_ANNOTATION = "org.bootc-live.packed-sha256"
PACKED_FORMAT_ANNOTATION = "org.bootc-live.packed-format"
PACKED_ANNOTATIONS = (PACKED_BYTES_ANNOTATION, PACKED_SHA256_ANNOTATION, PACKED_FORMAT_ANNOTATION)
RATIO = 3  # stated conservative expansion of a compressed layer when no size is recorded
MEMINFO = "/proc/meminfo"  # a module global: host-side tests point it at a file of their own
# For the kernel, the runtime (its fetch buffers too) and switch-root, where no root is unpacked:
# a packed root, kexec's stage one.
RESERVE = 48 << 20
# An unpacking root's own reserve: the decompressed data in flight between the fetch and the
# apply (unpack.QUEUE_CHUNKS MiB, unpack.HASH_CHUNKS more), and 24 MiB for the rest the runtime
# and its decoder grow by beyond the root's footprint, the kernel, udev and switch-root. The
# reference image's URL boot at 1120 MiB grew the runtime's anonymous memory by 17 MiB at most
# (chunks in flight included), ran a 2 MiB igzip, held 2 MiB in its pipes and 1 MiB of TCP
# buffers; with 16 MiB for the rest, a 512 MiB guest whose tmpfs root filled to its budget met
# the OOM killer once in a loaded test run instead of the root's one-line "full". What the
# source holds ahead (a registry's fetch-ahead, bootc.connections' parts) is planned on top.
UNPACK_RESERVE = (24 + QUEUE_CHUNKS + HASH_CHUNKS) << 20
# Of those 24 MiB, what a zstd frame's window may take (zstd's levels up to 19 use 8 MiB at
# most; --long and --ultra, up to 128 MiB: planned on top, `zstd_window`).
ZSTD_RESERVED_WINDOW = 8 << 20
ZSTD_HEAD = 4096  # bytes read of a zstd layer to find its first frame's window
MIB = 1 << 20


class NotEnoughMemory(BootcLiveError):
    """The machine has too little memory for the image in the chosen mode."""


def meminfo(path: str | None = None) -> dict[str, int]:
    """/proc/meminfo's fields, in bytes (the few counted in pages, HugePages_*, as they are)."""
    values = {}
    with open(path or MEMINFO, encoding="ascii") as f:
        for line in f:
            key, _, rest = line.partition(":")
            words = rest.split()
            if words and words[0].isdigit():
                values[key] = int(words[0]) * (1024 if words[1:] == ["kB"] else 1)
    return values


ZONEINFO = "/proc/zoneinfo"  # as MEMINFO


def per_cpu_free(path: str | None = None) -> int:
    """The free pages the kernel keeps on its per-CPU lists (/proc/zoneinfo's pagesets), in
    bytes: MemFree leaves them out, yet any allocation gets them (the kernel drains the lists
    before it would fail). When the reference image's boots planned (656 to 1280 MiB of RAM)
    they held 3 to 32 MiB. 0 if the file cannot be read."""
    pages = 0
    try:
        with open(path or ZONEINFO, encoding="ascii", errors="replace") as f:
            in_pagesets = False
            for line in f:
                words = line.split()
                if line.startswith("Node"):
                    in_pagesets = False
                elif words == ["pagesets"]:
                    in_pagesets = True
                elif in_pagesets and len(words) == 2 and words[0] == "count:":
                    pages += int(words[1]) if words[1].isdigit() else 0
    except OSError:
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Memory:
    """What the kernel can give: /proc/meminfo's MemTotal and MemAvailable, and the free pages
    on its per-CPU lists (per_cpu_free)."""

    total: int
    available: int
    per_cpu: int = 0  # of `available`: the free pages on the per-CPU lists

    @classmethod
    def read(cls, path: str | None = None, zoneinfo: str | None = None) -> Memory:
        return cls.of(meminfo(path), zoneinfo)

    @classmethod
    def of(cls, values: dict[str, int], zoneinfo: str | None = None) -> Memory:
        """From meminfo's `values`, and the per-CPU lists now."""
        lists = per_cpu_free(zoneinfo)
        available = values.get("MemAvailable", values["MemFree"]) + lists
        return cls(values["MemTotal"], available, lists)


MIN_FREE_KBYTES = "/proc/sys/vm/min_free_kbytes"  # module globals, as MEMINFO
THP_ENABLED = "/sys/kernel/mm/transparent_hugepage/enabled"


def base_min_free_kbytes(total: int) -> int:
    """The free-memory reserve the kernel sets for `total` bytes of RAM (mm/page_alloc.c:
    the square root of 16 x its KiB, within 128 KiB and 256 MiB): about 4.3 MiB for 1.2 GiB."""
    return min(max(math.isqrt((total >> 10) * 16), 128), 262144)


def lower_min_free(
    total: int, path: str | None = None, thp: str | None = None
) -> tuple[int, int] | None:
    """Give the reserve transparent hugepages add back to the root: with THP on (Debian's
    kernels: madvise), khugepaged raises vm.min_free_kbytes to keep 2 MiB blocks free for
    compaction (44 MiB on a 1.2 GiB machine), and the kernel keeps free about 1.5 x that
    (MemAvailable leaves it out). A live root lives in RAM that no swap or page cache can give
    back, so the kernel's own reserve for the machine's RAM is set instead, for the boot and the
    system after it (the image's sysctl.d may set vm.min_free_kbytes again). (was, now) in KiB
    when lowered; None when it was no higher, when transparent hugepages are off (then nothing
    raised it: it was set so), or when it cannot be written."""
    target = path or MIN_FREE_KBYTES
    try:
        with open(thp or THP_ENABLED, encoding="ascii") as f:
            if "[never]" in f.read():
                return None
    except OSError:
        return None  # a kernel without transparent hugepages
    try:
        with open(target, encoding="ascii") as f:
            was = int(f.read().strip())
    except (OSError, ValueError):
        return None
    now = base_min_free_kbytes(total)
    if was <= now:
        return None
    try:
        with open(target, "w", encoding="ascii") as f:
            f.write(f"{now}\n")
    except OSError:
        return None
    return was, now


# What holds the memory in use (MemTotal - MemAvailable), by meminfo's fields: the initramfs's
# files sit in a ramfs, whose pages the kernel keeps off the reclaimable lists (Unevictable);
# /run and the journal in tmpfs (Shmem); the processes' own memory (AnonPages); the kernel's.
IN_USE_BY = {
    "initramfs_files": ("Unevictable",),
    "tmpfs": ("Shmem",),
    "processes": ("AnonPages",),
    "kernel": ("SUnreclaim", "KernelStack", "PageTables", "Percpu", "VmallocUsed"),
}


def in_use_by(path: str | None = None, zoneinfo: str | None = None) -> dict[str, int]:
    """The memory in use now (as Memory.read counts what is available), and what holds it
    (IN_USE_BY; `other`: the rest, such as page cache the kernel would not give up, and
    reclaimable slab it counts as available only in part): for the status, so that a boot says
    where its memory went before the image came."""
    values = meminfo(path)
    return held_by(values, Memory.of(values, zoneinfo))


def held_by(values: dict[str, int], mem: Memory) -> dict[str, int]:
    """in_use_by's figures from meminfo's `values` and the Memory read with them."""
    in_use = mem.total - mem.available
    parts = {name: sum(values.get(k, 0) for k in keys) for name, keys in IN_USE_BY.items()}
    return {"in_use": in_use, **parts, "other": in_use - sum(parts.values())}


def recorded_number(value: str) -> int | None:
    """A figure `bootc-live build` recorded in an annotation (unverified: index.json is not
    signed), or None: only ASCII digits, 20 at most (2**64 has 20; str.isdigit also takes "²",
    which int() refuses, and int() refuses more than 4300 digits)."""
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 20 else None


def recorded_numbers(value: str) -> list[int]:
    """The figures of a comma-separated annotation that are numbers (recorded_number)."""
    return [n for n in map(recorded_number, value.split(",")) if n is not None]


@dataclass(frozen=True)
class Estimate:
    """The unpacked size of an image, and how it was found."""

    unpacked: int
    how: str


def estimate(image: Image) -> Estimate:
    """Unpacked size in a tmpfs: what build measured the root takes in one (its figure for each
    entry has room for other kernels' slab sizes: footprint.INODE), else the tar sizes it
    recorded, else each gzip layer's trailer (ISIZE, when the source can read a blob's last
    bytes cheaply and the value is plausible), else a stated ratio. Only the first counts the
    pages and inodes of many small files."""
    footprint = recorded_number(image.index_annotations.get(TMPFS_ANNOTATION, ""))
    if footprint is not None:
        return Estimate(footprint, "recorded by bootc-live build")
    sizes = recorded_numbers(image.index_annotations.get(SIZES_ANNOTATION, ""))
    if len(sizes) == len(image.layers):
        # tmpfs rounds files up to pages where tar rounds to 512 bytes: allow 5 %.
        return Estimate(
            sum(sizes) * 21 // 20 + 16 * MIB, "from the layer sizes bootc-live build recorded"
        )
    plain = [layer.plain_tar for layer in image.layers]
    trailers = [
        _plain_size(image, layer) if tar else _gzip_isize(image, layer)
        for layer, tar in zip(image.layers, plain)
    ]
    known = [t for t in trailers if t is not None]
    # The rest: the stated ratio, or what a zstd layer's first frame declares if that is more
    # (a lower bound of the layer's size: its other frames come on top).
    ratios = [layer.size * RATIO for layer, t in zip(image.layers, trailers) if t is None]
    declared = [
        _zstd_declared(image, layer) for layer, t in zip(image.layers, trailers) if t is None
    ]
    guessed = sum(max(ratio, size) for ratio, size in zip(ratios, declared))
    more = sum(size > ratio for ratio, size in zip(ratios, declared))
    by_frame = f", or the size the first zstd frame declares for {more} of them" if more else ""
    if not known:
        return Estimate(
            image.compressed_size * RATIO + guessed - sum(ratios) + 16 * MIB,
            f"{RATIO}x the compressed size (no size recorded){by_frame}",
        )
    how = "from the uncompressed layers" if all(plain) else "from the gzip trailers"
    if any(plain) and not all(plain):
        how += " and the uncompressed layers"
    if len(known) < len(trailers):
        how += f", {RATIO}x the compressed size for {len(trailers) - len(known)} other layers"
    return Estimate((sum(known) + guessed) * 21 // 20 + 16 * MIB, how + by_frame)


# The most a zstd frame expands its bytes: a block of 4 (a 3-byte header and a byte repeated)
# gives 128 KiB at most.
ZSTD_MAX_RATIO = 1 << 15


def _zstd_declared(image: Image, layer: Descriptor) -> int:
    """The content size a zstd layer's first frame declares, whatever its media type says; 0
    for another layer, a frame that declares none, or more than its bytes can hold (a corrupt
    frame: the unpack says so)."""
    size = decompress.zstd_content_size(_head(image, layer, ZSTD_HEAD)) or 0
    return size if size <= layer.size * ZSTD_MAX_RATIO else 0


def zstd_window(image: Image) -> int:
    """The window the decoder of the image's zstd layers holds: the largest their first
    frames declare, ZSTD_RESERVED_WINDOW at least, decompress.ZSTD_WINDOW_LIMIT at most (and
    for a layer whose first frame cannot be read). The unpack refuses a frame that asks
    more."""
    window = ZSTD_RESERVED_WINDOW
    for layer in image.layers:
        if "zstd" in layer.media_type:
            declared = decompress.zstd_window(_head(image, layer, ZSTD_HEAD))
            window = max(window, decompress.ZSTD_WINDOW_LIMIT if declared is None else declared)
    # More than the decoders take is refused as the layer is read, with its reason.
    return min(window, decompress.ZSTD_WINDOW_LIMIT)


# The heads read, by source and blob digest: the estimate and the zstd window each look at a
# layer's head, and from a registry each read is one request (a connection dropped after it).
_HEADS: weakref.WeakKeyDictionary[object, dict[str, bytes]] = weakref.WeakKeyDictionary()


def _head(image: Image, layer: Descriptor, n: int) -> bytes:
    """The blob's first `n` bytes at most (ZSTD_HEAD at most), unverified (for estimates); b""
    if unreadable. One read a blob: its first ZSTD_HEAD bytes are kept for the next look."""
    try:
        heads = _HEADS.setdefault(image.source, {})
    except TypeError:  # a source that cannot be referred to weakly: read each time
        heads = {}
    data = heads.get(layer.digest)
    if data is None:
        data = b""
        try:
            with contextlib.closing(image.source.open_blob(layer)) as blob:
                while len(data) < ZSTD_HEAD and (part := blob.read(ZSTD_HEAD - len(data))):
                    data += part
        except (OSError, BootcLiveError):
            return b""
        heads[layer.digest] = data
    return data[:n]


def _plain_size(image: Image, layer: Descriptor) -> int | None:
    """An uncompressed layer's tar size: its blob's, unless it was compressed all the same
    (unpack goes by the bytes, not the media type): a gzip trailer then says how much, and a
    zstd blob (or a gzip one whose trailer is not believable) is not known."""
    isize = _gzip_isize(image, layer, any_type=True)
    if isize is not None:
        return isize
    return layer.size if decompress.compression_of(_head(image, layer, 4)) == "none" else None


def _gzip_isize(image: Image, layer: Descriptor, any_type: bool = False) -> int | None:
    """The uncompressed size a gzip blob's trailer states (mod 4 GiB), if it is believable.

    A blob of several gzip members states only its last one's size, and sizes wrap at 4 GiB:
    a size below the compressed one, or any doubt, gives None (the stated ratio is used).
    `any_type`: whatever the media type says (a tar's last bytes are zeros: None); the blob
    must then begin as gzip does, since the last bytes of a zstd blob under a tar media type
    (unpack goes by the bytes) are its checksum, any number up to 4 GiB. A gzip media type is
    taken at its word: reading each blob's head would be one more request a layer from a
    registry, for blobs no tool writes (containers/image refuses zstd under it); if it lies,
    the root's budget still stops the unpack in one line.
    """
    if not (any_type or "gzip" in layer.media_type) or layer.size < 18:
        return None
    try:
        data = image.source.tail(layer, 4)
    except (OSError, BootcLiveError):
        return None
    if len(data) != 4:
        return None
    isize = int.from_bytes(data, "little")
    if not layer.size <= isize < (1 << 32) - 1:
        return None
    if "gzip" in layer.media_type:
        return isize
    return isize if _head(image, layer, 2) == decompress.GZIP_MAGIC else None


# RAM that zram takes for what gzip stores in one byte, by compressor (measured on Debian 12's
# files with a margin; lzo-rle is the kernel's default). Unknown compressors count as the worst.
ZRAM_VS_GZIP = {"zstd": 1.3, "lz4hc": 1.6, "deflate": 1.2, "842": 2.0}
ZRAM_DEFAULT_VS_GZIP = 1.8
# With the image's own figure (ZRAM_ANNOTATION: its files as zstd pages): zram's RAM is that
# times ZRAM_OVERHEAD (zsmalloc's size classes, ext4's metadata: 1.06 measured on the Debian
# test image, 1.04 on the reference image), times the compressor's figure against zstd's (from
# ZRAM_VS_GZIP); plus the dirty pages in flight, which are then the only unknown (about 35 MiB
# measured at the peak of the test image's zram boot at 512 MiB, the runtime's own included).
ZRAM_OVERHEAD = 1.08
EROFS_VS_GZIP = 1.7  # an lz4/lz4hc-compressed EROFS image, for what gzip stores in one byte
GRAIN = 16 * MIB  # suggested sizes are rounded up to this


@dataclass(frozen=True)
class Need:
    """What a mode takes: RAM at the peak, and once the root is ready."""

    mode: RootMode
    peak: int
    steady: int
    what: str  # what the peak is made of, for messages
    device: int = 0  # zram: the smallest device that holds the unpacked root


def mib_up(n: int) -> int:
    return -(-n // MIB)


def _round_up(n: int) -> int:
    return -(-n // GRAIN) * GRAIN


def recorded_zram(image: Image) -> int | None:
    """What `bootc-live build` measured the image's files take as zstd pages, if it did."""
    return recorded_number(image.index_annotations.get(ZRAM_ANNOTATION, ""))


ZRAM_TABLE_RATIO = 256  # the zram device's table: 16 bytes for each 4 KiB page of its size


def zram_device_size(est: Estimate) -> int:
    """The smallest zram device for the root: on top of the tree, ext4's inode tables (one
    256-byte inode per 4 KiB block, see roots.ZramDevice), a block per directory, its
    metadata."""
    return _round_up(est.unpacked * 116 // 100 + 16 * MIB)


def need(image: Image, mode: RootMode, est: Estimate | None = None) -> Need:
    """The memory `mode` needs for `image`, from the sizes it records or stated ratios."""
    est = est or estimate(image)
    packed = gzip_like(image)
    if mode.kind == "zram":
        factor = ZRAM_VS_GZIP.get(mode.zram_algorithm or "", ZRAM_DEFAULT_VS_GZIP)
        zstd_pages = recorded_zram(image)
        if zstd_pages is None:
            # Compressed data, the allocator's and ext4's overhead, and dirty pages in flight.
            ram = int(packed * factor) + est.unpacked // 32 + 32 * MIB
            basis = ""
        else:
            stored = int(zstd_pages * ZRAM_OVERHEAD * factor / ZRAM_VS_GZIP["zstd"])
            ram = stored + est.unpacked // 64 + 16 * MIB
            basis = f"{mib_up(zstd_pages)} MiB of zstd pages and "
        algorithm = mode.zram_algorithm or "the kernel's default"
        return Need(
            mode,
            ram,
            ram,
            f"in zram ({algorithm}) for {basis}about {mib_up(est.unpacked)} MiB unpacked",
            zram_device_size(est),
        )
    if mode.kind == "erofs":
        image_size = int(packed * EROFS_VS_GZIP) if mode.erofs_compress else est.unpacked
        return Need(
            mode,
            est.unpacked + image_size,
            image_size + 16 * MIB,
            "for EROFS (the unpacked tree and its image, while it is packed)",
        )
    return Need(mode, est.unpacked, est.unpacked, "unpacked")


def gzip_like(image: Image) -> int:
    """The compressed size zram's and EROFS's ratios are stated against (ZRAM_VS_GZIP,
    EROFS_VS_GZIP): a plain tar layer counts as gzip would make it, 1/RATIO of it (taken as
    it is, an uncompressed image was planned larger in zram than in a plain tmpfs)."""
    return sum(layer.size // RATIO if layer.plain_tar else layer.size for layer in image.layers)


ZRAM_SUGGESTED = "zstd"  # the compressor suggested: the smallest figure of ZRAM_VS_GZIP


def with_table(chosen: Need, device: int) -> Need:
    """`chosen` with a zram device's table: the kernel allocates it at the device's size, 16
    bytes a 4 KiB page, used or not (bootc.zram=400% on 1 GiB: 16 MiB)."""
    table = device // ZRAM_TABLE_RATIO
    return replace(chosen, peak=chosen.peak + table, steady=chosen.steady + table)


def alternatives(image: Image, est: Estimate, zram_algorithm: str | None = None) -> list[Need]:
    """Every mode, smallest peak first, with the sizes it would need; zram with the given
    compressor (else the one suggested), its device's table included."""
    device = zram_device_size(est)
    zram = with_table(
        need(image, RootMode.zram(device, zram_algorithm or ZRAM_SUGGESTED), est), device
    )
    options = [TMPFS, RootMode("erofs"), RootMode("erofs", erofs_compress="lz4hc")]
    return sorted([zram, *(need(image, m, est) for m in options)], key=lambda n: n.peak)


def available(memory: Memory, image: Image, *, blobs_freed: bool, ahead: int = 0) -> int:
    """What the root may take, besides UNPACK_RESERVE and the `ahead` bytes the source holds
    ahead of the unpack. With `blobs_freed` the image's blobs already sit in RAM (embedded or
    appended initrd) and each is deleted once its layer is applied, so at the peak only the
    largest one remains."""
    have = memory.available - UNPACK_RESERVE - ahead
    if blobs_freed and image.layers:
        stored = {layer.digest: layer.size for layer in image.layers}  # a blob listed twice: once
        have += sum(stored.values()) - max(stored.values())
    return have


ROOT_KINDS = ("tmpfs", "zram", "erofs")


def check(
    image: Image,
    memory: Memory,
    *,
    blobs_freed: bool,
    mode: RootMode = TMPFS,
    ahead: int = 0,
    kinds: Collection[str] = ROOT_KINDS,
) -> tuple[Estimate, Need]:
    """Stop early, naming the shortfall and a mode that would fit, unless `mode` fits; only
    modes of `kinds` are named (those this initramfs can make: roots.usable_kinds)."""
    est = estimate(image)
    chosen = need(image, mode, est)
    given = 0 if mode.zram_size is None else mode.zram_size.bytes_for(memory.total)
    if mode.zram_size is not None:  # a device too small is planned as the size it would take
        chosen = with_table(chosen, max(given, chosen.device))
    have = available(memory, image, blobs_freed=blobs_freed, ahead=ahead)
    if given < chosen.device and chosen.peak <= have:  # else: no size would do, say so below
        raise NotEnoughMemory(
            f"bootc.zram={mode.zram_size} is too small for this image: about "
            f"{mib_up(est.unpacked)} MiB unpacked ({est.how}) need a {mib_up(chosen.device)} MiB "
            "device",
            f"use bootc.zram={mib_up(chosen.device)}M (a zram device takes RAM for what it "
            "holds, compressed, and a table of 1/256 of its size)",
        )
    if chosen.peak > have:
        others = [n for n in alternatives(image, est, mode.zram_algorithm) if n.mode.kind in kinds]
        fits = [n for n in others if n.peak <= have and n.mode != mode]
        if fits:
            best = fits[0]
            hint = f"add RAM or use {best.mode.option()}: it needs about {mib_up(best.peak)} MiB"
        else:
            least = others[0]
            hint = (
                f"add RAM: even {least.mode.option()} needs about {mib_up(least.peak)} MiB, "
                f"{mib_up(least.peak - have)} MiB more than there is"
            )
        raise NotEnoughMemory(
            f"not enough memory: image needs {mib_up(chosen.peak)} MiB {chosen.what} "
            f"({est.how}), {max(have, 0) // MIB} MiB available",
            hint,
        )
    return est, chosen


PACKED_UPPERS = 32 * MIB  # a packed root's /etc and /var uppers: what the first boot writes


@dataclass(frozen=True)
class RecordedPacked:
    """The packed root `bootc-live build` made of an image, as its index records it."""

    size: int  # of the filesystem image
    sha256: str  # "sha256:HEX"
    format: str  # "squashfs:xz"

    def need(self) -> int:
        """The RAM a boot of it takes: the image, stored, and its uppers (check_packed)."""
        return self.size + PACKED_UPPERS


def recorded_packed(image: Image) -> RecordedPacked | None:
    """The packed root's figures `bootc-live build` recorded, if it did."""
    size, sha256, fmt = (image.index_annotations.get(k, "") for k in PACKED_ANNOTATIONS)
    number = recorded_number(size)
    if number is None or not sha256.startswith("sha256:") or not fmt:
        return None
    return RecordedPacked(number, sha256, fmt)


def packed_zram_device() -> int:
    """The smallest zram device for a packed root's uppers: PACKED_UPPERS as ext4 holds it."""
    return zram_device_size(Estimate(PACKED_UPPERS, "what the first boot writes"))


def check_packed(
    memory: Memory, size: int | None, stored: int, where: str, mode: RootMode = TMPFS
) -> tuple[int, str]:
    """A packed root of `size` bytes (None: not known before it is fetched) that takes `stored`
    more bytes of RAM to store, its uppers on a tmpfs or (zram `mode`) a zram device: stop now,
    with the figures, unless it fits; (the peak, what it is made of)."""
    uppers, table = "a tmpfs", 0
    have = memory.available - RESERVE
    if mode.zram_size is not None:
        device, smallest = mode.zram_size.bytes_for(memory.total), packed_zram_device()
        # The device's table, allocated at its size (a device too small: the size it would take).
        table = max(device, smallest) // ZRAM_TABLE_RATIO
        if device < smallest and stored + PACKED_UPPERS + table <= have:  # else: said below
            raise NotEnoughMemory(
                f"bootc.zram={mode.zram_size} is too small for a packed root's overlays: "
                f"{PACKED_UPPERS >> 20} MiB of writes need a {mib_up(smallest)} MiB device",
                f"use bootc.zram={mib_up(smallest)}M (a zram device takes RAM for what it "
                "holds, compressed, and a table of 1/256 of its size)",
            )
        algorithm = mode.zram_algorithm or "the kernel's default"
        uppers = (
            f"a {mib_up(max(device, smallest))} MiB zram device ({algorithm}), at most, and "
            f"{mib_up(table)} MiB for its table"
        )
    peak = stored + PACKED_UPPERS + table
    if size is None:
        held = "size unknown until fetched"
    elif stored == 0:
        held = f"{mib_up(size)} MiB, in memory already"
    elif stored != size:
        held = (
            f"{mib_up(size)} MiB in memory already, {mib_up(stored)} MiB more while its parts join"
        )
    else:
        held = f"{mib_up(size)} MiB"
    what = (
        f"for the packed root {where} ({held}) and {PACKED_UPPERS >> 20} MiB for the /etc and "
        f"/var overlays on {uppers}"
    )
    if peak > have:
        raise NotEnoughMemory(
            f"not enough memory: needs {mib_up(peak)} MiB {what}, {max(have, 0) // MIB} MiB "
            "available",
            "add RAM",
        )
    return peak, what


class PeakWatch:
    """Samples memory in use (MemTotal less what Memory.read counts available) in a thread;
    `peak` is the highest seen, `at_peak` what held it then (in_use_by's figures)."""

    def __init__(
        self, interval: float = 0.2, path: str | None = None, zoneinfo: str | None = None
    ) -> None:
        self.interval = interval
        self.path, self.zoneinfo = path, zoneinfo
        self.peak = 0
        self.start = 0
        self._peak_read: tuple[dict[str, int], Memory] | None = None  # meminfo at the peak
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-peak", daemon=True)

    @property
    def at_peak(self) -> dict[str, int]:
        return {} if self._peak_read is None else held_by(*self._peak_read)

    def _sample(self) -> None:
        values = meminfo(self.path)
        mem = Memory.of(values, self.zoneinfo)
        if self._peak_read is None or mem.total - mem.available > self.peak:
            self.peak = mem.total - mem.available
            self._peak_read = values, mem

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> PeakWatch:
        self._sample()
        self.start = self.peak
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
