"""What `bootc-live build` records for the zram planner: files as zstd-compressed 4 KiB pages."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path

import zstandard
from pytest import MonkeyPatch

from bootc_live import zramsize
from bootc_live.describe import describe
from bootc_live.runtime.oci import resolve
from bootc_live.runtime.sources import LayoutSource
from imagegen import build_layout, d, f, hard, layer_tar, sym

TEXT = b"".join(b"line %d of a configuration file\n" % i for i in range(400))  # 12.6 KB
NOISE = random.Random(3).randbytes(5000)  # incompressible: a whole page, and part of one


def pages(data: bytes) -> int:
    """What zstd makes of each 4 KiB page of `data` (the last one zero-padded), page by page."""
    z = zstandard.ZstdCompressor(level=3, write_checksum=False)
    total = 0
    for at in range(0, len(data), 4096):
        page = data[at : at + 4096].ljust(4096, b"\0")
        if page.count(page[:1]) != 4096:
            total += min(len(z.compress(page)), 4096)
    return total


def test_the_layers_files_are_counted_page_by_page(tmp_path: Path) -> None:
    """What `inspect` and a --host build record: each regular file of each layer, page by
    page; links have no data of their own, same-filled pages cost nothing."""
    layers = [
        layer_tar(
            [
                d("etc"),
                f("etc/text", TEXT),
                f("zeros", b"\0" * 20000),  # same-filled pages: zram keeps no data for them
                f("sevens", b"7" * 8192),
                f("empty"),
                hard("etc/again", "etc/text"),
                sym("link", "etc/text"),
            ]
        ),
        layer_tar([f("noise", NOISE)]),
    ]
    build_layout(tmp_path / "img", layers)
    facts = describe(resolve(LayoutSource(str(tmp_path / "img"))))
    assert facts.zram == pages(TEXT) + pages(NOISE)
    assert facts.layer_sizes == [len(t) for t in layers]
    # Incompressible data takes whole pages: 4096 for the first, and the compressed tail.
    assert 4096 < pages(NOISE) < 2 * 4096 and pages(TEXT) < 4096


def test_a_tree_gives_what_its_layer_gives(tmp_path: Path) -> None:
    """What a build in the image's userland records, from the unpacked tree."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/text").write_bytes(TEXT)
    (root / "noise").write_bytes(NOISE)
    os.link(root / "etc/text", root / "etc/again")  # one inode: counted once
    (root / "link").symlink_to("etc/text")
    (root / "zeros").write_bytes(b"\0" * 9000)
    os.mkfifo(root / "fifo")
    tar = layer_tar([d("etc"), f("etc/text", TEXT), f("noise", NOISE), f("zeros", b"\0" * 9000)])
    build_layout(tmp_path / "img", [tar])
    facts = describe(resolve(LayoutSource(str(tmp_path / "img"))))
    assert zramsize.of_tree(root) == facts.zram == pages(TEXT) + pages(NOISE)


def test_a_sparse_files_holes_are_not_read(tmp_path: Path, monkeypatch: MonkeyPatch) -> None:
    """A file of 1 TiB that holds a few pages (lastlog with a high uid, a preallocated
    image): its holes are zero pages, which cost nothing, and reading them took hours. Only
    its data is read, and counts as the dense file's."""
    tree, dense = tmp_path / "tree", tmp_path / "dense"
    tree.mkdir()
    dense.mkdir()
    with open(tree / "sparse", "wb") as out:
        out.truncate(1 << 40)
        for at in (0, 5 << 30, (1 << 40) - 8192):
            out.seek(at)
            out.write(NOISE)
    (tree / "empty").write_bytes(b"")
    (dense / "pages").write_bytes(NOISE.ljust(8192, b"\0") * 3)
    read: list[int] = []
    add = zramsize.PageMeter.add

    def counted(meter: zramsize.PageMeter, read_: Callable[[int], bytes], size: int) -> None:
        read.append(size)
        assert sum(read) <= 1 << 20, "the holes were read"
        add(meter, read_, size)

    monkeypatch.setattr(zramsize.PageMeter, "add", counted)
    assert zramsize.of_tree(tree) == zramsize.of_tree(dense)
    assert sum(read) <= 2 * 3 * 8192, read
