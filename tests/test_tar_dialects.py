"""Tar dialects and crafted headers where SPEC.md §3 is silent: decided as Go's archive/tar and
umoci (pinned in tarstream.py), and every refusal is one capped line naming the entry."""

from __future__ import annotations

import io
import os
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bootc_live.runtime import apply as apply_mod
from bootc_live.runtime.apply import Applier
from bootc_live.runtime.errors import LayerError, shown
from bootc_live.runtime.streams import FileStream
from imagegen import (
    BLOCK,
    Entry,
    d,
    extended_header,
    f,
    header_block,
    layer_tar,
    sym,
    wh,
)
from treewalk import snapshot
from unpackers import need


@pytest.fixture(autouse=True)
def _root() -> None:
    need(os.geteuid() == 0, "layer application sets owners and creates devices: needs root")


def apply(tmp_path: Path, *layers: bytes) -> Path:
    """Apply raw layer tars onto tmp_path/root; assert nothing appeared beside the root."""
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    applier = Applier(str(root), lambda _msg: None)
    try:
        for layer in layers:
            applier.apply_layer(FileStream(io.BytesIO(layer)))
    finally:
        applier.close()
        assert sorted(os.listdir(tmp_path)) == ["root"]
    return root


def refused(tmp_path: Path, *layers: bytes) -> str:
    """The one line a crafted layer ends in."""
    with pytest.raises(LayerError) as info:
        apply(tmp_path, *layers)
    line = str(info.value)
    assert "\n" not in line and len(line) <= 300, line
    return line


def raw(*members: bytes) -> bytes:
    return b"".join(members) + bytes(2 * BLOCK)


# -- v7 and the name's trailing slash -----------------------------------------------------------


def test_v7_regular_entry_with_trailing_slash_is_a_directory(tmp_path: Path) -> None:
    root = apply(
        tmp_path,
        layer_tar(
            [
                Entry("old-dir/", "file", typeflag=b"\0", mode=0o750),
                Entry("old-dir/inside", "file", data=b"i", typeflag=b"\0"),
                Entry("plain", "file", data=b"p", typeflag=b"\0"),
            ]
        ),
    )
    st = os.lstat(root / "old-dir")
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o750
    assert (root / "old-dir/inside").read_bytes() == b"i"
    assert (root / "plain").read_bytes() == b"p"


def test_typeflag_0_with_trailing_slash_stays_a_file_as_go_reads_it(tmp_path: Path) -> None:
    """Go (so umoci, containerd, podman) only treats the v7 NUL typeflag this way."""
    root = apply(tmp_path, layer_tar([Entry("not-a-dir/", "file", data=b"f", typeflag=b"0")]))
    assert (root / "not-a-dir").read_bytes() == b"f"


# -- extended header sequences ------------------------------------------------------------------


def test_consecutive_pax_headers_do_not_merge_the_last_applies(tmp_path: Path) -> None:
    first = extended_header({"path": "from-first", "SCHILY.xattr.user.first": "1", "uid": "7"})
    second = extended_header({"SCHILY.xattr.user.second": "2", "gid": "9"})
    root = apply(tmp_path, raw(first, second, header_block("header-name", typeflag=b"0")))
    assert os.listdir(root) == ["header-name"]
    st = os.lstat(root / "header-name")
    assert (st.st_uid, st.st_gid) == (0, 9)
    assert os.listxattr(root / "header-name") == ["user.second"]


def test_a_global_header_drops_the_extended_headers_before_it(tmp_path: Path) -> None:
    pending = extended_header({"path": "hijacked", "uid": "5"})
    globl = extended_header({"comment": "g"}, typeflag=b"g")
    root = apply(tmp_path, raw(pending, globl, header_block("plain", typeflag=b"0", uid=3)))
    assert os.listdir(root) == ["plain"] and os.lstat(root / "plain").st_uid == 3


def test_empty_pax_values_keep_the_header_values_but_empty_xattrs_apply(tmp_path: Path) -> None:
    pax = extended_header({"path": "", "uid": "", "SCHILY.xattr.user.empty": ""})
    root = apply(tmp_path, raw(pax, header_block("kept", typeflag=b"0", uid=4)))
    assert os.listdir(root) == ["kept"] and os.lstat(root / "kept").st_uid == 4
    assert os.getxattr(root / "kept", "user.empty") == b""


# -- values no system call takes: one line naming the entry -------------------------------------


@pytest.mark.parametrize(
    ("records", "kind", "reason"),
    [
        ({"path": "bad\0name"}, "file", "PAX path contains a NUL byte"),
        ({"linkpath": "tar\0get"}, "symlink", "PAX linkpath contains a NUL byte"),
        (
            {"GNU.sparse.name": "sp\0arse", "GNU.sparse.major": "0", "GNU.sparse.map": ""},
            "file",
            "name contains a NUL byte",
        ),
        ({"size": "-1"}, "file", "negative size -1"),
        ({"size": "99999999999999999999"}, "file", "invalid PAX size"),
        ({"uid": "4294967296"}, "file", "owner 4294967296:0 is not a 32-bit uid:gid"),
        ({"uid": "-2"}, "file", "owner -2:0 is not a 32-bit uid:gid"),
        ({"SCHILY.devmajor": "4096"}, "char", "device 4096:0 does not fit"),
        ({"SCHILY.devminor": "1048576"}, "block", "device 0:1048576 does not fit"),
        ({"SCHILY.devmajor": str(1 << 40)}, "char", "does not fit"),
        ({"mtime": "1" * 25}, "file", "invalid PAX mtime"),
        # More digits than int() converts (4300): a ValueError, not a line, before they were cut.
        ({"size": "9" * 5000}, "file", "invalid PAX size"),
        ({"uid": "1" * 5000}, "file", "invalid PAX uid"),
        ({"SCHILY.devmajor": "7" * 5000}, "char", "invalid PAX SCHILY.devmajor"),
        ({"GNU.sparse.major": "1" * 5000}, "file", "invalid PAX GNU.sparse.major"),
    ],
)
def test_crafted_values_end_in_one_line(
    tmp_path: Path, records: dict[str, str], kind: str, reason: str
) -> None:
    entry = Entry("victim", kind, linkname="t" if kind == "symlink" else "", pax=records)
    line = refused(tmp_path, layer_tar([f("before", b"b"), entry]))
    assert reason in line, line
    assert "victim" in line or "tar header" in line or "\\x00" in line, line


def test_pax_numbers_with_thousands_of_digits_are_read_as_go_reads_them(tmp_path: Path) -> None:
    """Leading zeros are read (Go's fixture pax-pos-size-file.tar has size=000…999); more
    than 19 digits after them are refused in one line (int() raises past 4300 digits)."""
    body = b" path=victim\n"
    zeros = b"0" * 5000 + b"%d" % (5000 + 4 + len(body))  # the length counts itself
    size = b" size=" + b"0" * 5000 + b"1\n"
    records = zeros + body + b"%d" % (len(size) + 4) + size
    pax = header_block("PaxHeaders/victim", typeflag=b"x", size=len(records))
    padded = records + bytes(-len(records) % BLOCK)
    member = header_block("header-name", typeflag=b"0") + b"v" + bytes(BLOCK - 1)
    root = apply(tmp_path, raw(pax + padded + member))
    assert os.listdir(root) == ["victim"] and (root / "victim").read_bytes() == b"v"
    shutil.rmtree(root)
    record = b"9" * 25 + b" path=x\n"
    pax = header_block("PaxHeaders/x", typeflag=b"x", size=len(record))
    line = refused(tmp_path, raw(pax + record + bytes(-len(record) % BLOCK) + member))
    assert line == "tar header: malformed PAX record", line


@pytest.mark.parametrize(
    ("value", "ns"),
    [
        ("0001700000000.5", 1_700_000_000_500_000_000),
        ("0" * 5000 + "1700000000", 1_700_000_000 * 10**9),
        ("-0001.25", -1_250_000_000),
        ("1700000000.", 1_700_000_000 * 10**9),
        ("1700000000.1234567899", 1_700_000_000_123_456_789),
    ],
)
def test_pax_mtime_is_read_as_go_reads_it(tmp_path: Path, value: str, ns: int) -> None:
    """Seconds with leading zeros, as in the other PAX numbers; nanoseconds cut after 9 digits."""
    root = apply(tmp_path, layer_tar([f("dated", b"d", pax={"mtime": value})]))
    assert os.lstat(root / "dated").st_mtime_ns == ns


def test_sparse_maps_beyond_a_mebibyte_are_refused(tmp_path: Path) -> None:
    """A sparse map is held in memory: old GNU extension blocks (21 pairs each) or a 1.0 map
    at the start of the data would otherwise grow with the layer, to gigabytes at boot."""
    tail = bytearray(BLOCK - 345)
    tail[386 - 345 : 386 - 345 + 24] = b"%011o\0%011o\0" % (0, 1)
    tail[482 - 345] = 1  # extended: an extension block follows, each saying the same
    tail[483 - 345 : 495 - 345] = b"%011o\0" % 1
    extension = bytes(BLOCK - 8) + b"\x01" + bytes(7)
    old_gnu = header_block("holes", typeflag=b"S", size=1, gnu=True, gnu_tail=bytes(tail))
    line = refused(tmp_path, raw(old_gnu + extension * 2100))
    assert line == "tar header: sparse map larger than 1048576 bytes", line
    records = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": "holes"}
    pax = extended_header({**records, "GNU.sparse.realsize": "1"})
    data = b"300000\n" + b"0\n" * (1 << 20)
    member = header_block("GNUSparseFile.0/holes", typeflag=b"0", size=len(data))
    line = refused(tmp_path, raw(pax + member + data + bytes(-len(data) % BLOCK)))
    assert line == "tar header: sparse map larger than 1048576 bytes", line


def sparse_1_0(name: str, segments: list[tuple[int, bytes]], real: int, zeros: int) -> bytes:
    """A PAX format 1.0 sparse member: its map (each number after `zeros` leading zeros, so
    that lines span blocks), padded to a block, then the segments' data back to back."""
    numbers = [len(segments)] + [n for offset, data in segments for n in (offset, len(data))]
    text = b"".join(b"0" * zeros + b"%d\n" % n for n in numbers)
    body = text + bytes(-len(text) % BLOCK) + b"".join(data for _, data in segments)
    records = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": name}
    pax = extended_header({**records, "GNU.sparse.realsize": str(real)})
    member = header_block(f"GNUSparseFile.0/{name}", typeflag=b"0", size=len(body))
    return pax + member + body + bytes(-len(body) % BLOCK)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(st.tuples(st.integers(0, 3000), st.binary(max_size=700)), max_size=40),
    st.integers(0, 1200),
)
def test_a_1_0_sparse_map_is_read_line_by_line_across_blocks(
    tmp_path: Path, gaps: list[tuple[int, bytes]], zeros: int
) -> None:
    """The map is read a block at a time, a block's lines parsed together (a long line joined
    once): segments of any length, empty ones too, and lines that span blocks."""
    segments, end = [], 0
    for gap, data in gaps:
        segments.append((end + gap, data))
        end += gap + len(data)
    shutil.rmtree(tmp_path / "root", ignore_errors=True)
    root = apply(tmp_path, raw(sparse_1_0("holes", segments, end + 5, zeros)))
    expected = bytearray(end + 5)
    for offset, data in segments:
        expected[offset : offset + len(data)] = data
    assert (root / "holes").read_bytes() == bytes(expected)


def test_empty_segments_of_a_sparse_map_cost_no_system_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mebibyte of map can list 100 000 empty segments: each was an lseek."""
    seeks = [0]
    lseek = os.lseek

    def counted(*args: Any) -> int:
        seeks[0] += 1
        return lseek(*args)

    monkeypatch.setattr(apply_mod.os, "lseek", counted)
    segments = [(i, b"") for i in range(100_000)] + [(200_000, b"data")]
    root = apply(tmp_path, raw(sparse_1_0("holes", segments, 200_004, 0)))
    assert (root / "holes").read_bytes() == bytes(200_000) + b"data"
    assert seeks[0] <= 2, seeks


@pytest.mark.parametrize(
    ("name", "value", "size"),
    [(b"user." + b"n" * 300, b"v", 1), (b"user.big", b"v" * 70_000, 70_000)],
)
def test_an_xattr_linux_cannot_hold_is_named(
    tmp_path: Path, name: bytes, value: bytes, size: int
) -> None:
    line = refused(tmp_path, layer_tar([f("x", pax={b"SCHILY.xattr." + name: value})]))
    assert line.startswith(f"/x: its xattr {shown(name.decode())} ({size} bytes) is not one "), line
    assert line.endswith("a name of at most 255 bytes, a value of at most 64 KiB)"), line


def test_nul_in_an_xattr_name_ends_in_one_line(tmp_path: Path) -> None:
    line = refused(tmp_path, layer_tar([f("x", pax={b"SCHILY.xattr.user.a\0b": b"v"})]))
    assert line == "tar entry x: PAX key SCHILY.xattr.user.a\\x00b contains a NUL byte"


@pytest.mark.parametrize("major", [4096, 1 << 21])
def test_device_numbers_beyond_linux_end_in_one_line(tmp_path: Path, major: int) -> None:
    """Base-256 header numbers too (os.makedev would overflow, umoci truncates)."""
    dev = header_block("dev/big", typeflag=b"3", devmajor=major, devminor=1)
    line = refused(tmp_path, raw(dev))
    assert f"tar entry dev/big: device {major}:1 does not fit" in line


def test_negative_base256_size_ends_in_one_line(tmp_path: Path) -> None:
    line = refused(tmp_path, raw(header_block("neg", typeflag=b"0", size=-512)))
    assert line == "tar entry neg: negative size -512"
    # A header-only type ignores its size field, as Go's reader does.
    root = apply(tmp_path, raw(header_block("dir", typeflag=b"5", size=-512)))
    assert os.path.isdir(root / "dir")


def test_oversized_extended_header_is_refused_before_it_is_read(tmp_path: Path) -> None:
    huge = header_block("PaxHeaders/x", typeflag=b"x", size=1 << 40)
    line = refused(tmp_path, raw(huge))
    assert "an extended header of 1099511627776 bytes (at most 1048576)" in line


def test_owner_all_ones_is_chowns_unchanged_so_root(tmp_path: Path) -> None:
    root = apply(tmp_path, layer_tar([f("odd", b"o", uid=2**32 - 1, gid=5)]))
    st = os.lstat(root / "odd")
    assert (st.st_uid, st.st_gid) == (0, 5)


# -- messages are capped ------------------------------------------------------------------------


def test_shown_escapes_and_shortens_in_the_middle() -> None:
    assert shown(b"a\nb\xff") == "a\\x0ab\\xff"
    long = shown("x" * 500 + "MIDDLE" + "y" * 500)
    assert long == "x" * 60 + "…" + "y" * 60


def test_a_huge_path_gives_a_short_error_line(tmp_path: Path) -> None:
    name = "start-" + "p" * 1_000_000 + "-end"
    line = refused(tmp_path, layer_tar([f(name, b"x")]))
    assert line.startswith("layer entry /start-ppp") and "…" in line, line
    assert line.endswith("-end would be at a path of over 4095 bytes (PATH_MAX)")
    assert len(line) < 300
    # A name over NAME_MAX in a path under PATH_MAX: the kernel's refusal, as short.
    line = refused(tmp_path, layer_tar([f("start-" + "p" * 300 + "-end", b"x")]))
    assert line.startswith("cannot apply /start-ppp") and "-end:" in line, line
    assert "File name too long" in line and len(line) < 300


def test_a_name_with_a_newline_stays_on_one_line(tmp_path: Path) -> None:
    line = refused(tmp_path, layer_tar([f("new\nline", b"f"), f("new\nline/child", b"x")]))
    assert line == "/new\\x0aline: a parent is not a directory"


# -- cached directories after a replacement -----------------------------------------------------

LOWER = [d("usr"), d("usr/lib"), sym("lib", "usr/lib"), f("lib/via-link", b"1")]


@pytest.mark.parametrize(
    "layers",
    [
        [[*LOWER, d("lib"), f("lib/after", b"2")]],
        [LOWER, [d("lib"), f("lib/after", b"2")]],
        [LOWER, [wh("lib"), f("lib/after", b"2")]],
        [[*LOWER, sym("other", "lib/"), f("other/x", b"x")], [d("lib"), f("other/after", b"2")]],
    ],
    ids=["same-layer", "later-layer", "whiteout", "reached-through-another-link"],
)
def test_a_replaced_symlink_is_never_followed_again(tmp_path: Path, layers: list) -> None:  # type: ignore[type-arg]
    root = apply(tmp_path, *(layer_tar(entries) for entries in layers))
    assert not (root / "lib").is_symlink() and (root / "lib").is_dir()
    assert (root / "lib/after").read_bytes() == b"2"
    assert sorted(os.listdir(root / "usr/lib")) in (["via-link"], ["via-link", "x"])


def test_a_symlink_replaced_by_another_symlink_is_resolved_again(tmp_path: Path) -> None:
    root = apply(
        tmp_path,
        layer_tar([d("a"), d("b"), sym("l", "a"), f("l/one", b"1")]),
        layer_tar([sym("l", "b"), f("l/two", b"2")]),
    )
    assert os.listdir(root / "a") == ["one"] and os.listdir(root / "b") == ["two"]


def test_a_symlink_replaced_by_a_file_is_not_a_parent_any_more(tmp_path: Path) -> None:
    line = refused(
        tmp_path,
        layer_tar([d("a"), sym("l", "a"), f("l/one", b"1"), f("l", b"file"), f("l/two", b"2")]),
    )
    assert line == "/l: a parent is not a directory"
    assert snapshot(tmp_path / "root")[b"a"].type == "dir"
    assert os.listdir(tmp_path / "root" / "a") == ["one"]


def test_a_header_after_a_lone_zero_block_is_an_error(tmp_path: Path) -> None:
    """Go refuses it; entries hidden there would be seen by some tools and not by others."""
    hidden = layer_tar([f("hidden", b"h")])
    line = refused(tmp_path, layer_tar([f("a", b"a")])[: -2 * BLOCK] + bytes(BLOCK) + hidden)
    assert line == "tar stream: a header after a lone zero block"
    root = apply(tmp_path, layer_tar([f("b", b"b")])[:-BLOCK])  # one zero block, then the end
    assert "b" in os.listdir(root)
