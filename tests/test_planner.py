"""The RAM planner (SPEC §5): what each root mode needs, and the early stop that names a fit."""

from __future__ import annotations

import io
import os
import random
import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from bootc_live.runtime import boot, decompress, http, memory, registry, roots
from bootc_live.runtime.cmdline import TMPFS, RootMode, parse, parse_zram
from bootc_live.runtime.errors import BootcLiveError
from bootc_live.runtime.memory import MIB, Memory, NotEnoughMemory
from bootc_live.runtime.oci import Image, resolve
from bootc_live.runtime.run import CommandError
from bootc_live.runtime.sources import LayoutSource
from bootc_live.runtime.unpack import unpack_image
from imagegen import MT_LAYER, build_layout, compress, d, f, layer_tar

# Incompressible, so the compressed size is close to the unpacked one: 3x is then a lot.
LAYERS = [layer_tar([d("etc"), f("etc/a", b"a" * 5000)]), layer_tar([f("big", os.urandom(70_000))])]


def image_of(tmp_path: Path, recorded: list[int] | None = None, compression: str = "gzip") -> Image:
    build_layout(tmp_path / "img", LAYERS, compression=compression)
    image = resolve(LayoutSource(str(tmp_path / "img")))
    if recorded is None:
        return image
    # what build records: the layers' sizes, and what the root takes in a tmpfs
    sizes = ",".join(map(str, recorded))
    annotations = {memory.SIZES_ANNOTATION: sizes, memory.TMPFS_ANNOTATION: str(sum(recorded))}
    return replace(image, index_annotations=annotations)


def failure(image: Image, available: int, mode: RootMode = TMPFS, freed: bool = False) -> str:
    mem = Memory(total=8 << 30, available=available)
    with pytest.raises(NotEnoughMemory) as err:
        memory.check(image, mem, blobs_freed=freed, mode=mode)
    return err.value.line()


def test_the_tmpfs_shortfall_is_named_and_zram_suggested(tmp_path: Path) -> None:
    # big and compressible, as build measured it
    image = replace(image_of(tmp_path), index_annotations={memory.TMPFS_ANNOTATION: "1500000000"})
    est = memory.estimate(image)
    assert est == memory.Estimate(1500000000, "recorded by bootc-live build")
    # An image built before build measured that: its layers' tar sizes, 5 % and 16 MiB more.
    older = image_of(tmp_path / "older", [1000 * MIB, 500 * MIB])
    older = replace(older, index_annotations={memory.SIZES_ANNOTATION: f"{1000 * MIB},{500 * MIB}"})
    assert memory.estimate(older) == memory.Estimate(
        1575 * MIB + 16 * MIB, "from the layer sizes bootc-live build recorded"
    )
    available = est.unpacked + memory.UNPACK_RESERVE - MIB  # just short
    line = failure(image, available)
    need = memory.need(image, TMPFS, est).peak
    zram = next(n for n in memory.alternatives(image, est) if n.mode.kind == "zram")
    assert line == (
        f"not enough memory: image needs {-(-need // MIB)} MiB unpacked (recorded by bootc-live "
        f"build), {(available - memory.UNPACK_RESERVE) // MIB} MiB available; add RAM or use "
        f"bootc.zram={zram.device // MIB}M bootc.zram.algorithm=zstd: it needs about "
        f"{-(-zram.peak // MIB)} MiB"
    )
    # The suggestion holds: that zram device fits where the tmpfs does not.
    memory.check(image, Memory(8 << 30, available), blobs_freed=False, mode=zram.mode)
    # Just enough: the tmpfs root passes.
    est2, chosen = memory.check(image, Memory(8 << 30, available + MIB), blobs_freed=False)
    assert (est2, chosen.mode.kind) == (est, "tmpfs")


def test_without_recorded_sizes_the_gzip_trailers_give_them(tmp_path: Path) -> None:
    image = image_of(tmp_path)
    est = memory.estimate(image)
    assert est.how == "from the gzip trailers"
    assert est.unpacked == sum(len(t) for t in LAYERS) * 21 // 20 + 16 * MIB
    # zstd has no trailer (and a frame header may omit the size): the stated ratio, or what
    # the first frame declares where that is more (the first layer: 5000 bytes of "a").
    zstd = image_of(tmp_path / "z", compression="zstd")
    est = memory.estimate(zstd)
    assert est.how == (
        "3x the compressed size (no size recorded), or the size the first zstd frame declares "
        "for 1 of them"
    )
    second = zstd.layers[1]
    assert est.unpacked == len(LAYERS[0]) + 3 * second.size + 16 * MIB
    # An uncompressed layer (buildah commit -D, +tar): its blob is its tar, not a third of it.
    est = memory.estimate(image_of(tmp_path / "n", compression="none"))
    assert est.how == "from the uncompressed layers"
    assert est.unpacked == sum(len(t) for t in LAYERS) * 21 // 20 + 16 * MIB
    # ... unless it is gzip all the same (unpack goes by the bytes): its trailer says how much
    build_layout(
        tmp_path / "g/img", LAYERS, compression="gzip", media_type_override=MT_LAYER["none"]
    )
    est = memory.estimate(resolve(LayoutSource(str(tmp_path / "g/img"))))
    assert est.unpacked == sum(len(t) for t in LAYERS) * 21 // 20 + 16 * MIB


def test_blobs_freed_while_unpacking_count_as_available(tmp_path: Path) -> None:
    image = image_of(tmp_path, compression="zstd")
    est = memory.estimate(image)
    assert est.how.startswith("3x the compressed size")
    mem = Memory(total=1 << 30, available=est.unpacked + memory.UNPACK_RESERVE - 1)
    assert "not enough memory: image needs" in failure(image, mem.available)
    # Embedded blobs are deleted as their layers are applied: all but the largest come back.
    memory.check(image, mem, blobs_freed=True)


def test_a_zram_device_too_small_for_the_image_says_which_size_fits(tmp_path: Path) -> None:
    image = image_of(tmp_path, [400 * MIB, 400 * MIB])
    device = memory.zram_device_size(memory.estimate(image))
    line = failure(image, 16 << 30, RootMode.zram(512 * MIB))
    assert re.fullmatch(
        rf"bootc\.zram=512M is too small for this image: about \d+ MiB unpacked \(recorded by "
        rf"bootc-live build\) need a {device // MIB} MiB device; use bootc\.zram="
        rf"{device // MIB}M \(a zram device takes RAM for what it holds, compressed, and a "
        r"table of 1/256 of its size\)",
        line,
    ), line
    memory.check(image, Memory(1 << 30, 1 << 30), blobs_freed=False, mode=RootMode.zram(device))


def test_erofs_needs_the_tree_and_its_image_at_the_peak(tmp_path: Path) -> None:
    image = image_of(tmp_path, [300 * MIB, 300 * MIB])
    est = memory.estimate(image)
    plain = memory.need(image, RootMode("erofs"), est)
    packed = memory.need(image, RootMode("erofs", erofs_compress="lz4hc"), est)
    assert plain.peak == 2 * est.unpacked
    assert est.unpacked < packed.peak < plain.peak
    assert packed.steady < plain.steady < plain.peak
    line = failure(image, est.unpacked + memory.UNPACK_RESERVE, RootMode("erofs"))
    assert line.startswith(f"not enough memory: image needs {-(-plain.peak // MIB)} MiB for EROFS")
    # The tmpfs root fits in that memory and is named as the way out; zram needs even less
    # (its device's table included).
    zram = next(n for n in memory.alternatives(image, est) if n.mode.kind == "zram")
    assert line.endswith(
        f"; add RAM or use bootc.zram={memory.zram_device_size(est) // MIB}M "
        f"bootc.zram.algorithm=zstd: it needs about {-(-zram.peak // MIB)} MiB"
    )


def test_when_nothing_fits_the_missing_memory_is_named(tmp_path: Path) -> None:
    image = image_of(tmp_path, [300 * MIB, 300 * MIB])
    est = memory.estimate(image)
    least = memory.alternatives(image, est)[0]
    assert least.mode.kind == "zram"
    have = 10 * MIB
    line = failure(image, have + memory.UNPACK_RESERVE)
    assert line.endswith(
        f"; add RAM: even {least.mode.option()} needs about {-(-least.peak // MIB)} MiB, "
        f"{-(-(least.peak - have) // MIB)} MiB more than there is"
    )


def test_zram_is_planned_from_the_zstd_pages_build_recorded(tmp_path: Path) -> None:
    """With the image's own figure (its files as zstd pages), zram needs that plus the
    overhead, scaled by the compressor against zstd; without it, a ratio of the gzip size."""
    image = image_of(tmp_path, [400 * MIB, 400 * MIB])
    est = memory.estimate(image)
    zstd, lz4 = RootMode.zram(1 << 30, "zstd"), RootMode.zram(1 << 30, "lz4")
    by_ratio = memory.need(image, zstd, est)
    assert by_ratio.what == f"in zram (zstd) for about {-(-est.unpacked // MIB)} MiB unpacked"
    measured = replace(
        image, index_annotations={**image.index_annotations, memory.ZRAM_ANNOTATION: "314572800"}
    )
    margin = est.unpacked // 64 + 16 * MIB  # dirty pages in flight
    planned = memory.need(measured, zstd, est)
    assert planned.peak == int(300 * MIB * memory.ZRAM_OVERHEAD) + margin
    assert planned.what == (
        f"in zram (zstd) for 300 MiB of zstd pages and about {-(-est.unpacked // MIB)} MiB unpacked"
    )
    # lz4 (the kernel's default figure) stores more than zstd, in the ratio of their figures.
    factor = memory.ZRAM_DEFAULT_VS_GZIP / memory.ZRAM_VS_GZIP["zstd"]
    assert (
        memory.need(measured, lz4, est).peak
        == int(300 * MIB * memory.ZRAM_OVERHEAD * factor) + margin
    )
    # The recorded figure decides the early stop: 1 MiB short of it fails, naming it. The
    # device's table (16 bytes a page of its size) comes on top, whatever it holds.
    table = zstd.zram_size.bytes_for(8 << 30) // memory.ZRAM_TABLE_RATIO
    have = planned.peak + table + memory.UNPACK_RESERVE
    line = failure(measured, have - MIB, zstd)
    assert "MiB in zram (zstd) for 300 MiB of zstd pages and about " in line
    assert line.count("(recorded by bootc-live build)") == 1
    memory.check(measured, Memory(8 << 30, have), blobs_freed=False, mode=zstd)


# A /proc/meminfo as a guest (Debian 12's kernel, 1280 MiB) has it before the image comes, trimmed.
GUEST_MEMINFO = """\
MemTotal:        1246052 kB
MemFree:          962332 kB
MemAvailable:     994548 kB
Buffers:               0 kB
Cached:           176544 kB
Unevictable:      118960 kB
Mlocked:               0 kB
AnonPages:         28840 kB
Shmem:             11488 kB
KReclaimable:      14400 kB
Slab:              36224 kB
SReclaimable:      14400 kB
SUnreclaim:        21824 kB
KernelStack:        2688 kB
PageTables:         1444 kB
VmallocUsed:       12608 kB
Percpu:             1536 kB
HugePages_Total:       0
Hugepagesize:       2048 kB
"""


# The per-CPU lists of /proc/zoneinfo as Debian 12's kernel (6.1) writes them, trimmed: a
# DMA32 zone's pagesets on two CPUs, then another zone's (whose "count" is no pageset's).
GUEST_ZONEINFO = """\
Node 0, zone      DMA
  pages free     3584
        min      20
  pagesets
    cpu: 0
              count: 7
              high:  0
              batch: 1
  vm stats threshold: 4
    cpu: 1
              count: 0
              high:  0
              batch: 1
  vm stats threshold: 4
  node_unreclaimable:  0
Node 0, zone    DMA32
  pages free     212500
        min      1040
  pagesets
    cpu: 0
              count: 4012
              high:  3898
              batch: 63
  vm stats threshold: 16
    cpu: 1
              count: 3551
              high:  3898
              batch: 63
  vm stats threshold: 16
  node_unreclaimable:  0
  start_pfn:           4096
Node 0, zone   Normal
  pages free     0
        count: 99
"""
PER_CPU_PAGES = 7 + 4012 + 3551


def test_what_holds_the_memory_in_use(tmp_path: Path) -> None:
    """The status's breakdown of the memory in use: each part from its meminfo fields, the
    rest named `other`, the whole MemTotal - what is available: MemAvailable and the free
    pages on the kernel's per-CPU lists, which MemFree leaves out."""
    path = tmp_path / "meminfo"
    path.write_text(GUEST_MEMINFO)
    zoneinfo = tmp_path / "zoneinfo"
    zoneinfo.write_text(GUEST_ZONEINFO)
    lists = PER_CPU_PAGES * os.sysconf("SC_PAGE_SIZE")
    assert memory.per_cpu_free(str(zoneinfo)) == lists
    parts = memory.in_use_by(str(path), str(zoneinfo))
    in_use = (1246052 - 994548) * 1024 - lists
    assert parts == {
        "in_use": in_use,
        "initramfs_files": 118960 * 1024,
        "tmpfs": 11488 * 1024,
        "processes": 28840 * 1024,
        "kernel": (21824 + 2688 + 1444 + 1536 + 12608) * 1024,
        "other": in_use - (118960 + 11488 + 28840 + 40100) * 1024,
    }
    # HugePages_Total counts pages, not kB; Memory.read still takes MemTotal and MemAvailable.
    assert memory.meminfo(str(path))["HugePages_Total"] == 0
    assert Memory.read(str(path), str(zoneinfo)) == Memory(
        1246052 * 1024, 994548 * 1024 + lists, lists
    )
    # Without a zoneinfo to read, MemAvailable alone.
    missing = str(tmp_path / "nx")
    assert Memory.read(str(path), missing) == Memory(1246052 * 1024, 994548 * 1024)


def test_the_peak_keeps_what_held_the_memory_then(tmp_path: Path) -> None:
    """The `ready` status's memory_at_peak: the breakdown of the sample with the most in use,
    not of the first or the last."""
    path, zoneinfo = tmp_path / "meminfo", tmp_path / "zoneinfo"
    zoneinfo.write_text(GUEST_ZONEINFO)
    watch = memory.PeakWatch(path=str(path), zoneinfo=str(zoneinfo))

    def sample(available_kib: int, anon_kib: int) -> None:
        text = GUEST_MEMINFO.replace("994548", str(available_kib))
        path.write_text(text.replace("AnonPages:         28840", f"AnonPages:  {anon_kib}"))
        watch._sample()

    sample(900000, 20000)  # before the fetch
    sample(100000, 31000)  # the peak: 800 000 kB more in use
    sample(300000, 25000)  # the runtime's own memory freed, some of the root's too
    assert watch.at_peak["processes"] == 31000 * 1024
    assert watch.at_peak["in_use"] == watch.peak
    lists = PER_CPU_PAGES * os.sysconf("SC_PAGE_SIZE")
    assert watch.peak == (1246052 - 100000) * 1024 - lists


def test_the_per_cpu_lists_are_what_awk_sums_in_this_machines_zoneinfo(tmp_path: Path) -> None:
    """This machine's own /proc/zoneinfo (a newer kernel's, with more fields per pageset),
    copied once so both read the same: the pagesets' counts, as awk sums them."""
    snapshot = tmp_path / "zoneinfo"
    snapshot.write_bytes(Path("/proc/zoneinfo").read_bytes())
    summed = subprocess.run(
        ["awk", '/^Node/ {p = 0} $1 == "pagesets" {p = 1} p && $1 == "count:" {s += $2} '
         "END {print s + 0}", str(snapshot)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert memory.per_cpu_free(str(snapshot)) == int(summed) * os.sysconf("SC_PAGE_SIZE")
    assert "pagesets" in snapshot.read_text()


@pytest.mark.parametrize(
    "total, kib",
    [
        (1267699712, 4450),  # the 1280 MiB guest's MemTotal: isqrt(1237988 x 16)
        (4096 * MIB, 8192),
        (1 * MIB, 128),  # the floor
        (8 << 40, 262144),  # the ceiling (8 TiB would give 370727)
    ],
)
def test_the_kernels_own_reserve(total: int, kib: int) -> None:
    assert memory.base_min_free_kbytes(total) == kib


def test_a_reserve_that_cannot_be_read_is_left_alone(tmp_path: Path) -> None:
    knob, thp = tmp_path / "min_free_kbytes", tmp_path / "enabled"
    thp.write_text("always [madvise] never\n")
    assert memory.lower_min_free(4096 * MIB, str(knob), str(thp)) is None  # missing
    knob.write_text("many\n")
    assert memory.lower_min_free(4096 * MIB, str(knob), str(thp)) is None
    assert knob.read_text() == "many\n"
    # A kernel without transparent hugepages: nothing raised it.
    knob.write_text("45056\n")
    assert memory.lower_min_free(4096 * MIB, str(knob), str(tmp_path / "none")) is None
    assert knob.read_text() == "45056\n"


@pytest.mark.parametrize(
    "root, options, sizes, ahead",
    [
        ("/bootc-live/image", "", [100 * MIB], 0),  # in the initramfs: nothing fetched
        ("http://10.0.2.100/root.oci", "", [100 * MIB], 0),  # one connection: no parts
        ("http://10.0.2.100/root.oci", "bootc.connections=4", [100 * MIB], 5 * http.PART),
        ("http://10.0.2.100/root.oci", "bootc.connections=4", [MIB, 2 * MIB], 0),  # no part
        # a registry: the small layers after the first come ahead, twice while joined
        ("docker://10.0.2.100:5000/demo:v1", "", [100 * MIB, MIB, 3 * MIB], 8 * MIB),
        ("docker://10.0.2.100:5000/demo:v1", "", [MIB, 100 * MIB], 0),
        ("docker://10.0.2.100:5000/demo:v1", "", [MIB] + [6 * MIB] * 20, registry.PREFETCH_HELD),
        (
            "docker://10.0.2.100:5000/demo:v1",
            "bootc.connections=8",
            [100 * MIB, MIB],
            2 * MIB + 9 * http.PART,
        ),
    ],
)
def test_what_a_source_holds_ahead_is_planned(
    tmp_path: Path, root: str, options: str, sizes: list[int], ahead: int
) -> None:
    """The unpack's reserve grows by what the source may hold ahead of it: the parts of
    bootc.connections (one more than the connections), a registry's fetch-ahead."""
    image = image_of(tmp_path)
    layers = [replace(image.layers[0], size=size) for size in sizes]
    spec = parse(f"root=bootc-live:{root} {options}".split())
    assert boot.held_ahead(spec, replace(image, layers=layers)) == ahead


def test_a_driver_built_into_the_kernel_needs_no_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A monolithic kernel, an initramfs without /lib/modules: modprobe fails ("Module zram
    not found"), yet zram-control, loop and the filesystems are there. Only a driver that is
    not there stops the boot."""
    tried: list[str] = []

    def no_modules(argv: list[str], **_kw: object) -> None:
        tried.append(argv[1])
        raise CommandError(f"{argv[0]} failed", "hint", detail=f"Module {argv[1]} not found")

    monkeypatch.setattr(roots, "run", no_modules)
    (tmp_path / "module/zram").mkdir(parents=True)  # built in, with its parameters
    (tmp_path / "module/loop").mkdir(parents=True)
    (tmp_path / "filesystems").write_text("nodev\ttmpfs\n\text4\nnodev\toverlay\n\terofs\n")
    monkeypatch.setattr(roots, "SYS_MODULE", str(tmp_path / "module"))
    monkeypatch.setattr(roots, "PROC_FILESYSTEMS", str(tmp_path / "filesystems"))
    roots.modprobe("zram", "ext4", "loop", "erofs", "overlay", hint="h")
    assert tried == ["zram", "ext4", "loop", "erofs", "overlay"]
    with pytest.raises(CommandError, match="modprobe failed"):
        roots.modprobe("squashfs", hint="h")


def test_an_uncompressed_image_is_planned_in_zram_and_erofs_as_gzip_would_be(
    tmp_path: Path,
) -> None:
    """zram's and EROFS's ratios are stated against a gzip blob's size: a plain tar counted
    whole made the compressed modes need more than a plain tmpfs (1.9 GiB in zram, 2.8 GiB
    for EROFS lz4hc, against 1.1 GiB, for a 1 GiB tar), and refused them."""
    plain, gzipped = image_of(tmp_path / "n", compression="none"), image_of(tmp_path / "g")
    assert memory.gzip_like(plain) == sum(layer.size // memory.RATIO for layer in plain.layers)
    assert memory.gzip_like(gzipped) == gzipped.compressed_size
    # Two layers of 512 MiB each (what estimate reads of a plain tar is its size).
    big = replace(plain, layers=[replace(layer, size=512 * MIB) for layer in plain.layers])
    tmpfs = memory.need(big, TMPFS)
    zram = memory.need(big, RootMode.zram(2 << 30, "zstd"))
    lz4hc = memory.need(big, RootMode("erofs", erofs_compress="lz4hc"))
    assert zram.peak < 0.7 * tmpfs.peak, (zram, tmpfs)
    assert lz4hc.steady < 0.7 * tmpfs.steady, (lz4hc, tmpfs)


def test_the_zram_file_system_runs_out_of_blocks_before_inodes(tmp_path: Path) -> None:
    """Made as a zram root's is (roots.MKFS_EXT4, real mkfs.ext4): every file takes a block
    at least, so inodes must not run out first. At one inode per 8 KiB an image of 60 600
    small files failed half-way in a device the planner had sized for it."""
    need_tool = shutil.which("mkfs.ext4") and shutil.which("dumpe2fs")
    assert need_tool, "apt-get install e2fsprogs (./setup)"
    device = tmp_path / "device"
    with open(device, "wb") as f:
        f.truncate(memory.zram_device_size(memory.Estimate(256 * MIB, "a test")))
    subprocess.run([*roots.MKFS_EXT4, device], check=True)
    info = subprocess.run(["dumpe2fs", "-h", device], capture_output=True, text=True, check=True)
    fields = dict(line.split(":", 1) for line in info.stdout.splitlines() if ":" in line)
    inodes, blocks = int(fields["Inode count"]), int(fields["Block count"])
    assert int(fields["Block size"]) == 4096
    assert inodes >= blocks, (inodes, blocks)


def test_a_zstd_window_beyond_the_reserve_is_planned_and_no_frame_asks_more(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """zstd --long and --ultra frames make their decoder hold a window of up to 128 MiB,
    where memory.UNPACK_RESERVE holds 8: the plan holds the largest window the layers' first
    frames declare beyond that, and the unpack lets no frame ask more (a later frame's window
    was memory no plan had)."""
    monkeypatch.setattr(memory, "MEMINFO", str(tmp_path / "meminfo"))
    monkeypatch.setattr(memory, "ZONEINFO", str(tmp_path / "none"))
    (tmp_path / "meminfo").write_text("MemTotal: 2097152 kB\nMemFree: 1048576 kB\n")
    tars = [layer_tar([d("etc"), f(f"etc/{n}", os.urandom(2000) * 30)]) for n in "ab"]
    plans = {}
    for name, window_log in (("gzip", None), ("zstd", 25), ("mixed", 22)):
        kw = {} if window_log is None else {"window_log": window_log}
        compression = "gzip" if name == "gzip" else ["zstd", "gzip"] if name == "mixed" else "zstd"
        build_layout(tmp_path / name, tars, compression=compression, compress_kw=kw)
        image = resolve(LayoutSource(str(tmp_path / name)))
        spec = parse([f"root=bootc-live:{tmp_path / name}"])
        plans[name] = boot.plan_root(spec, image, image.source, boot.Report(stream=io.StringIO()))
    assert plans["gzip"].window == plans["mixed"].window == memory.ZSTD_RESERVED_WINDOW  # 4 MiB
    assert plans["zstd"].window == 32 * MIB
    assert plans["gzip"].have - plans["zstd"].have == 24 * MIB
    # The unpack holds the decoder to the planned window.
    image = resolve(LayoutSource(str(tmp_path / "zstd")))
    (tmp_path / "root").mkdir()
    with pytest.raises(BootcLiveError, match="need a window over 8 MiB"):
        unpack_image(image, str(tmp_path / "root"), max_window=8 * MIB)
    # A window over what the decoders take is planned as that, and refused as it is read.
    image = resolve(LayoutSource(str(tmp_path / "zstd")))
    huge = compress(os.urandom(1000), "zstd", window_log=31)
    monkeypatch.setattr(memory, "_head", lambda *_: huge)
    assert decompress.zstd_window(huge) == 2 << 30
    assert memory.zstd_window(image) == decompress.ZSTD_WINDOW_LIMIT
    monkeypatch.undo()
    # A first frame that cannot be read is planned as the most a decoder takes.
    image = resolve(LayoutSource(str(tmp_path / "zstd")))
    (tmp_path / "zstd/blobs/sha256" / image.layers[0].digest[7:]).unlink()
    assert memory.zstd_window(image) == decompress.ZSTD_WINDOW_LIMIT


def test_the_mode_a_shortfall_suggests_fits_with_its_zram_table(tmp_path: Path) -> None:
    """The zram mode a tmpfs shortfall names, and the figure it says that mode needs, count
    the device's table as the check of that mode does: without it (19 MiB for a 4.7 GiB
    device) a machine just short of it was told to use bootc.zram=…, which was then refused."""
    image = image_of(tmp_path, [4 << 30])
    est = memory.estimate(image)
    device = memory.zram_device_size(est)
    bare = memory.need(image, RootMode.zram(device, "zstd"), est).peak  # no table
    for have in (bare, bare + device // memory.ZRAM_TABLE_RATIO // 2):
        line = failure(image, have + memory.UNPACK_RESERVE)
        suggested = re.search(
            r"(?:use|even) (bootc\.zram=\S+ bootc\.zram\.algorithm=[^\s:]+)", line
        )
        assert suggested, line
        mode = parse(["root=bootc-live:/image", *suggested.group(1).split()]).mode
        mem = Memory(8 << 30, have + memory.UNPACK_RESERVE)
        if " or use " in line:
            memory.check(image, mem, blobs_freed=False, mode=mode)  # the suggestion holds
        else:  # nothing fits: the figure named is what that mode is refused for
            named = re.search(r"needs about (\d+) MiB", line)
            assert named, line
            assert f"needs {named.group(1)} MiB" in failure(image, mem.available, mode)


def test_a_zram_device_too_small_is_not_resized_into_memory_that_is_not_there(
    tmp_path: Path,
) -> None:
    """bootc.zram= too small for the image, on a machine that could not hold the image in a
    zram device of the right size either: the shortfall of memory is named, not a larger
    device (the next boot with that size was refused for memory)."""
    image = image_of(tmp_path, [400 * MIB, 400 * MIB])
    device = memory.zram_device_size(memory.estimate(image))
    right = RootMode.zram(device, "zstd")
    have = 40 * MIB
    with pytest.raises(NotEnoughMemory):
        memory.check(image, Memory(1 << 30, have), blobs_freed=False, mode=right)
    for given in ("512M", "10%"):
        line = failure(image, have, RootMode("zram", parse_zram(given), "zstd"))
        assert line.startswith("not enough memory: image needs "), line
        assert "is too small" not in line
        # ... and that shortfall is the right-sized device's, as its own boot would say.
        assert line == failure(image, have, right), line


def test_a_zstd_layer_under_a_tar_media_type_has_no_gzip_trailer(tmp_path: Path) -> None:
    """A zstd layer under a plain tar's media type: unpack goes by the bytes; the estimate read
    its last four bytes, the zstd checksum, as a gzip trailer's size, any number up to 4 GiB
    (3.4 GiB planned for this 0.6 MiB layer), and refused boots that fit. A gzip media type is
    taken at its word: the blob's head is not read (one more request a layer, from a
    registry)."""
    content = random.Random(0).randbytes(300_000) + b"x" * 300_000
    tars = [layer_tar([f("big", content)])]
    build_layout(tmp_path / "none", tars, compression="zstd", media_type_override=MT_LAYER["none"])
    image = resolve(LayoutSource(str(tmp_path / "none")))
    assert image.source.tail(image.layers[0], 4) != b"\0" * 4  # the frame's checksum
    est = memory.estimate(image)
    assert est == memory.Estimate(
        image.compressed_size * memory.RATIO + 16 * MIB,
        "3x the compressed size (no size recorded)",
    )
    build_layout(tmp_path / "gzip", [layer_tar([f("big", content)])], compression="gzip")
    image = resolve(LayoutSource(str(tmp_path / "gzip")))
    opened = []
    real_open = image.source.open_blob
    image.source.open_blob = lambda desc: opened.append(desc) or real_open(desc)  # type: ignore[method-assign]
    est = memory.estimate(image)
    assert est.how == "from the gzip trailers" and opened == []


def test_each_layers_head_is_read_once_for_the_plan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The estimate (a zstd frame's declared size) and the zstd window both look at a zstd
    layer's first bytes: from a registry each read was one more GET, dropped after 4 KiB."""
    monkeypatch.setattr(memory, "MEMINFO", str(tmp_path / "meminfo"))
    monkeypatch.setattr(memory, "ZONEINFO", str(tmp_path / "none"))
    (tmp_path / "meminfo").write_text("MemTotal: 2097152 kB\nMemFree: 1048576 kB\n")
    tars = [layer_tar([d("etc"), f(f"etc/{n}", os.urandom(2000) * 30)]) for n in "ab"]
    build_layout(tmp_path / "img", tars, compression="zstd")
    image = resolve(LayoutSource(str(tmp_path / "img")))
    opened: list[str] = []
    real_open = image.source.open_blob
    image.source.open_blob = lambda desc: opened.append(desc.digest) or real_open(desc)  # type: ignore[method-assign]
    spec = parse([f"root=bootc-live:{tmp_path / 'img'}"])
    boot.plan_root(spec, image, image.source, boot.Report(stream=io.StringIO()))
    assert sorted(opened) == sorted(layer.digest for layer in image.layers)
