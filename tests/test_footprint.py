"""What unpacking into a tmpfs takes (bootc_live.footprint), against the kernel's own tmpfs.

A layer of many small files, files just over a page, a large one, sparse ones (a run across a
page boundary among them), long and short symbolic links, a hard link, directories and a device
is unpacked into a real tmpfs (in a private mount namespace), then the same with a second layer
that deletes most of it: the pages the meter counts from the first layer's entries are exactly
what the tmpfs holds after it, which is the peak of the two-layer unpack; the figure for both
layers covers that peak; the build's two ways of counting (while unpacking, from the layers)
agree; and the planner's estimate from the recorded figure covers what the root took, where the
tar sizes it used before fell short.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from bootc_live import footprint
from bootc_live.describe import describe
from bootc_live.runtime import memory
from bootc_live.runtime.oci import resolve
from bootc_live.runtime.sources import LayoutSource
from bootc_live.runtime.streams import ChunkStream
from bootc_live.runtime.tarstream import (
    DIRECTORY,
    HARDLINK,
    REGULAR,
    SYMLINK,
    TarEntry,
    read_entries,
)
from bootc_live.runtime.unpack import layer_chunks
from imagegen import build_layout, char, d, f, hard, layer_tar, sparse, sym, wh
from unpackers import need

SMALL = 10000  # files of 100 bytes: 1 KiB each in the tar stream, a page each in a tmpfs
PAGE = footprint.PAGE
SLAB = Path("/sys/kernel/slab")

# Runs in the private mount namespace: a tmpfs, the image unpacked into it (every entry counted
# as build counts it), what statvfs says is in use.
MEASURE = """
import json, os, subprocess, sys
from bootc_live import footprint
from bootc_live.runtime.oci import resolve
from bootc_live.runtime.sources import LayoutSource
from bootc_live.runtime.unpack import unpack_image
layout, root = sys.argv[1], sys.argv[2]
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512m", "footprint", root], check=True)
meter = footprint.TmpfsMeter()
unpack_image(resolve(LayoutSource(layout)), root, warn=lambda m: None, observe=meter.add)
st = os.statvfs(root)
used = (st.f_blocks - st.f_bfree) * st.f_frsize
print(json.dumps({"used": used, "observed": meter.total}))
"""


def first_layer() -> bytes:
    small = [d("small")] + [f(f"small/{i:05}", bytes([i % 251]) * 100) for i in range(SMALL)]
    return layer_tar(
        [
            *small,
            d("data"),
            f("data/empty"),
            f("data/one-page", b"p" * PAGE),
            f("data/five-pages-and-a-byte", b"q" * (5 * PAGE + 1)),
            f("data/large", os.urandom(300 * PAGE + 17)),  # page-cache tree nodes
            sparse("data/sparse", 1 << 20, [(0, b"a" * 512), (512 << 10, b"b" * 5000)]),
            # one run of 1 KiB across the boundary of two pages: both are taken
            sparse("data/across", 64 << 10, [(PAGE - 512, b"c" * 1024), (32 << 10, b"d")]),
            f("data/linked", b"l" * 9000),
            hard("data/linked-again", "data/linked"),
            sym("data/short-link", "linked"),
            sym("data/long-link", "x/" * 100 + "linked"),  # 206 bytes: a page of its own
            char("data/null", 1, 3),
        ]
    )


@pytest.fixture(scope="module")
def layouts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One layer; the same with a second layer that deletes the small files."""
    work = tmp_path_factory.mktemp("footprint")
    first = first_layer()
    build_layout(work / "one", [first])
    build_layout(work / "two", [first, layer_tar([wh("small"), f("note", b"n")])])
    return work / "one", work / "two"


def measure(layout: Path, root: Path) -> dict[str, int]:
    root.mkdir()
    done = subprocess.run(
        [
            *("unshare", "-m", "--propagation", "private"),
            *(sys.executable, "-c", MEASURE, str(layout), str(root)),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")},
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def slab_size(cache: str) -> int:
    return int((SLAB / cache / "slab_size").read_text())


def test_the_pages_counted_are_what_a_tmpfs_takes(
    layouts: tuple[Path, Path], tmp_path: Path
) -> None:
    need(os.geteuid() == 0 and shutil.which("unshare") is not None, "needs root and unshare")
    one, two = layouts
    after_one, after_two = measure(one, tmp_path / "one"), measure(two, tmp_path / "two")
    facts_one = describe(resolve(LayoutSource(str(one))))
    facts_two = describe(resolve(LayoutSource(str(two))))
    # The first layer's pages, counted from its entries, are what the kernel's tmpfs took.
    meter = footprint.TmpfsMeter()
    for entry in entries_of(one):
        meter.add(entry)
    assert meter.pages == after_one["used"], (meter.pages, after_one)
    assert after_one["used"] >= (SMALL + 1 + 6 + 300 + 2 + 2 + 3 + 1) * PAGE
    # Two layers: the second deletes the small files, so the unpack's peak was after the first.
    # The figure for both covers that peak; build counts the same while it unpacks (in the
    # image's userland) as from the layers (--host, describe).
    assert after_two["used"] == after_one["used"] - SMALL * PAGE + PAGE  # + note's page
    assert facts_two.tmpfs == after_two["observed"] and facts_one.tmpfs == after_one["observed"]
    assert facts_two.tmpfs is not None and facts_two.tmpfs > after_one["used"]
    # The planner's estimate from the recorded figure covers the peak, with an inode and a
    # dentry of this kernel's for every entry; the tar sizes it planned with before did not.
    image = resolve(LayoutSource(str(two)))
    recorded = replace(image, index_annotations={memory.TMPFS_ANNOTATION: str(facts_two.tmpfs)})
    estimate = memory.estimate(recorded).unpacked
    per_entry = slab_size("shmem_inode_cache") + slab_size("dentry")
    taken = after_one["used"] + (SMALL + 20) * per_entry
    sizes = ",".join(map(str, facts_two.layer_sizes or []))
    tar_sizes = replace(image, index_annotations={memory.SIZES_ANNOTATION: sizes})
    old = memory.estimate(tar_sizes).unpacked
    print(f"tmpfs: {after_one['used']} in use at the peak; estimate {estimate}, tar sizes' {old}")
    assert estimate >= taken
    assert old < after_one["used"], "the tar sizes covered it"


def entries_of(layout: Path) -> list[TarEntry]:
    image = resolve(LayoutSource(str(layout)))
    found = []
    stream = ChunkStream(layer_chunks(image, 0))
    for entry in read_entries(stream):
        found.append(entry)
        if entry.kind == REGULAR:
            stream.skip(entry.size)
    stream.drain()
    return found


def test_an_entry_costs_at_least_this_kernels_inode_and_dentry() -> None:
    """The per-entry figure against the slab caches of the kernel running here, the applier's
    record (200), and the 256 bytes for other kernels' larger objects: the planner's only room
    for them (it adds nothing to the recorded figure, whose pages are exact)."""
    need(SLAB.is_dir(), "needs /sys/kernel/slab")
    assert slab_size("shmem_inode_cache") + slab_size("dentry") + 200 + 256 <= footprint.INODE
    assert slab_size("dentry") + 200 <= footprint.DENTRY


def entry(kind: str, size: int = 0, link: bytes = b"", **kw: object) -> TarEntry:
    return TarEntry(b"x", kind, 0o644, 0, 0, size, 0, linkname=link, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "made, expected",
    [
        (entry(REGULAR), footprint.INODE),
        (entry(REGULAR, 1), footprint.INODE + PAGE),
        (entry(REGULAR, PAGE), footprint.INODE + PAGE),
        # two pages: a node of the page-cache tree; 65 pages: two below one
        (entry(REGULAR, PAGE + 1), footprint.INODE + 2 * PAGE + 576),
        (entry(REGULAR, 65 * PAGE), footprint.INODE + 65 * PAGE + 3 * 576),
        # sparse: 1 KiB across a page boundary takes two pages, runs in one page one
        (entry(REGULAR, 1024, sparse=[(PAGE - 512, 1024)]), footprint.INODE + 2 * PAGE + 576),
        (entry(REGULAR, 1024, sparse=[(0, 512), (1024, 512)]), footprint.INODE + PAGE),
        (
            entry(REGULAR, xattrs={"trusted.a": b"b" * 19}),
            footprint.INODE + 64 + 16,  # head and value: 59 bytes; the name and its NUL: 10
        ),
        # a long value takes pages, a power of two of them: 64 KiB and the head, 128 KiB
        (entry(REGULAR, xattrs={"user.big": b"v" * 65536}), footprint.INODE + (128 << 10) + 16),
        (entry(REGULAR, xattrs={"user.mid": b"v" * 8152}), footprint.INODE + 8192 + 16),
        (entry(REGULAR, xattrs={"user.mid": b"v" * 8153}), footprint.INODE + (16 << 10) + 16),
        (entry(SYMLINK, link=b"l" * 127), footprint.INODE),
        (entry(SYMLINK, link=b"l" * 128), footprint.INODE + PAGE),
        (entry(DIRECTORY), footprint.INODE),
        (entry(HARDLINK, link=b"target"), footprint.DENTRY),
    ],
)
def test_what_one_entry_takes(made: TarEntry, expected: int) -> None:
    assert footprint.charge(made) == expected


# Runs in the private mount namespace: the tmpfs root prepared at a budget, then resized to
# the machine's memory once the image is in; its inodes at each step.
ROOT_INODES = """
import json, os, sys
from bootc_live.runtime import roots
from bootc_live.runtime.mounts import MountPlan
target, budget, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
root = roots.Root(target, size, MountPlan(rw=True), budget)
root.prepare()
prepared = os.statvfs(target).f_files
root.mount(None)
print(json.dumps([prepared, os.statvfs(target).f_files]))
"""


def test_a_tmpfs_root_has_an_inode_for_every_entry_its_budget_holds(tmp_path: Path) -> None:
    """The planner's budget holds budget / footprint.INODE entries at most; the tmpfs they go
    into must have as many inodes. The kernel's default (half its pages of RAM, whatever the
    size) is an eighth of what the machine's memory holds of them: an image of many small
    files that the planner found room for stopped half-way, "the root filesystem is full"."""
    need(os.geteuid() == 0 and shutil.which("unshare") is not None, "needs root and unshare")
    total = memory.Memory.read().total  # as a boot's: the root may take all of it
    budget = total // 2
    (tmp_path / "root").mkdir()
    done = subprocess.run(
        [
            *("unshare", "-m", "--propagation", "private"),
            *(sys.executable, "-c", ROOT_INODES, str(tmp_path / "root"), str(budget), str(total)),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")},
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    prepared, resized = json.loads(done.stdout)
    assert prepared >= budget // footprint.INODE
    assert resized >= total // footprint.INODE
