"""Unit tests of the test tooling itself: imagegen (tar/OCI writer) and treewalk."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import zstandard

from imagegen import (
    MT_INDEX,
    REF_NAME,
    add_nested_index,
    build_layout,
    char,
    compress,
    d,
    f,
    fifo,
    global_header,
    hard,
    layer_tar,
    ns,
    opq,
    pax_record,
    read_index,
    sha256,
    sparse,
    sym,
    wh,
    write_oci_archive,
)
from treewalk import diff, has_holes, snapshot

LONG_PREFIXED = "a" * 60 + "/" + "b" * 60 + "/" + "c" * 60  # fits ustar prefix + name
LONG_PAX = "/".join(["x" * 50] * 6)  # 305 bytes: needs PAX path / GNU 'L'
SEGMENTS = [(0, b"A" * 512), (49152, b"B" * 4096), (60416, b"C" * 10)]


def sample_entries() -> list:
    return [
        d("dir", mode=0o1777),
        f("dir/file", b"hello", mtime=ns(1_700_000_000, 123_456_789), xattrs={"user.b": b"\xff\0"}),
        sym("dir/link", "file"),
        hard("dir/hl", "dir/file"),
        char("dev", 1, 3),
        fifo("p", mode=0o600),
        f(LONG_PREFIXED, b"L"),
        f(LONG_PAX, b"LL", uid=3_000_000, gid=4_000_000_000),
        sym("longlink", LONG_PAX),
        f(b"bad\xffname", b"x", mode=0o4755),
        sparse("sp", 100_000, SEGMENTS),
    ]


def read_members(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data), encoding="utf-8", errors="surrogateescape") as tf:
        return {m.name: m for m in tf.getmembers()}


@pytest.mark.parametrize("fmt", ["pax", "gnu"])
def test_tar_read_back_by_tarfile(fmt: str) -> None:
    entries = sample_entries()
    data = layer_tar(entries, fmt=fmt)
    assert len(data) % 512 == 0
    members = read_members(data)
    assert members["dir"].isdir() and members["dir"].mode == 0o1777
    file = members["dir/file"]
    assert file.size == 5 and file.pax_headers["SCHILY.xattr.user.b"] == "\udcff\x00"
    assert file.pax_headers["mtime"] == "1700000000.123456789"
    assert members["dir/link"].issym() and members["dir/link"].linkname == "file"
    assert members["dir/hl"].islnk() and members["dir/hl"].linkname == "dir/file"
    assert members["dev"].ischr() and (members["dev"].devmajor, members["dev"].devminor) == (1, 3)
    assert members["p"].isfifo()
    assert members[LONG_PREFIXED].size == 1
    big = members[LONG_PAX]
    assert (big.uid, big.gid) == (3_000_000, 4_000_000_000)
    assert members["longlink"].linkname == LONG_PAX
    assert members["bad\udcffname"].mode == 0o4755
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        extracted = tf.extractfile("sp")
        assert extracted is not None
        assert extracted.read() == sparse("sp", 100_000, SEGMENTS).content()


def test_pax_prefix_split_and_path_record() -> None:
    data = layer_tar([f(LONG_PREFIXED), f(LONG_PAX)])
    # the first entry needs no PAX header: its name lives in ustar prefix + name
    assert data[156:157] == b"0" and data[345:365] == b"a" * 20
    assert data[512 + 156 : 512 + 157] == b"x"
    assert pax_record("path", LONG_PAX) in data


def test_pax_record_length_counts_itself() -> None:
    for n in range(1, 300):
        rec = pax_record("k", "v" * n)
        length, _, _ = rec.partition(b" ")
        assert int(length) == len(rec)


@pytest.mark.skipif(shutil.which("tar") is None, reason="needs GNU tar")
@pytest.mark.parametrize("fmt", ["pax", "gnu"])
def test_gnu_tar_extracts_same_tree(fmt: str, tmp_path: Path) -> None:
    entries = [e for e in sample_entries() if e.kind not in ("char",)]
    data = layer_tar([*entries, global_header({"comment": "x"}), f("after", b"z")], fmt=fmt)
    (tmp_path / "l.tar").write_bytes(data)
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(
        ["tar", "--xattrs", "--xattrs-include=user.*", "-xpf", tmp_path / "l.tar", "-C", out],
        check=True,
    )
    snap = snapshot(out)
    assert snap[b"dir/file"].xattrs == (("user.b", b"\xff\0"),)
    assert snap[b"dir/file"].mtime_ns == 1_700_000_000_123_456_789
    assert snap[b"dir/file"].links == (b"dir/file", b"dir/hl")
    assert snap[b"bad\xffname"].mode == 0o104755
    assert snap[os.fsencode(LONG_PAX)].uid == 3_000_000
    assert snap[b"longlink"].target == os.fsencode(LONG_PAX)
    assert snap[b"p"].type == "fifo"
    assert (out / "sp").read_bytes() == sparse("sp", 100_000, SEGMENTS).content()
    assert (out / "after").read_bytes() == b"z"


def test_gnu_sparse_header_and_large_size() -> None:
    size = 9 * 2**30
    data = layer_tar([sparse("huge", size, [(4096, b"x")])], fmt="gnu")
    assert data[156:157] == b"S"
    assert data[483] == 0x80 and int.from_bytes(data[484:495], "big") == size
    pax = layer_tar([sparse("huge", size, [(4096, b"x")])], fmt="pax")
    assert pax_record("GNU.sparse.realsize", str(size)) in pax


def test_whiteout_names() -> None:
    assert wh("a/b/c").bname == b"a/b/.wh.c"
    assert wh("top").bname == b".wh.top"
    assert opq("a/b").bname == b"a/b/.wh..wh..opq"
    assert opq(".").bname == b".wh..wh..opq"


def test_global_header_is_not_merged_by_writer() -> None:
    data = layer_tar([f("a"), global_header({"uid": "7"}), f("b")], global_pax={"comment": "c"})
    types = []
    pos = 0
    while data[pos : pos + 512] != b"\0" * 512:
        hdr = data[pos : pos + 512]
        types.append(hdr[156:157])
        size = int(hdr[124:136].strip(b"\0 ") or b"0", 8)
        pos += 512 + -(-size // 512) * 512
    assert types == [b"g", b"0", b"g", b"0"]


def test_compress_round_trips() -> None:
    data = layer_tar([f(f"f{i}", os.urandom(3000)) for i in range(20)])
    gz = compress(data, "gzip", members=4)
    assert gz.count(b"\x1f\x8b\x08") >= 4
    assert gzip.decompress(gz) == data
    assert compress(data, "none") == data
    for where in (None, "start", "middle", "end"):
        zs = compress(data, "zstd", members=3, skippable=where)
        dctx = zstandard.ZstdDecompressor()
        out = dctx.stream_reader(io.BytesIO(zs), read_across_frames=True).read()
        assert out == data
        assert (b"\x50\x2a\x4d\x18" in zs) == (where is not None)
    assert compress(data, "zstd", skippable="start")[:4] == b"\x50\x2a\x4d\x18"


def verify_blob(layout: Path, desc: dict) -> bytes:
    digest = desc["digest"]
    data = (layout / "blobs" / "sha256" / digest.split(":")[1]).read_bytes()
    assert sha256(data) == digest and len(data) == desc["size"]
    return data


def test_build_layout_is_consistent(tmp_path: Path) -> None:
    layers = [layer_tar([f("a", b"1")]), layer_tar([f("b", b"2")]), layer_tar([f("c")])]
    info = build_layout(
        tmp_path / "img", layers, compression=["gzip", "zstd", "none"], more_tags=["v1"]
    )
    layout = tmp_path / "img"
    assert json.loads((layout / "oci-layout").read_bytes()) == {"imageLayoutVersion": "1.0.0"}
    index = read_index(layout)
    assert [m["annotations"][REF_NAME] for m in index["manifests"]] == ["latest", "v1"]
    manifest = json.loads(verify_blob(layout, index["manifests"][0]))
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    config = json.loads(verify_blob(layout, manifest["config"]))
    assert config["rootfs"]["diff_ids"] == [sha256(t) for t in layers] == info.diff_ids
    kinds = [ld["mediaType"].rsplit(".", 1)[1] for ld in manifest["layers"]]
    assert kinds == ["tar+gzip", "tar+zstd", "tar"]
    blobs = [verify_blob(layout, ld) for ld in manifest["layers"]]
    assert gzip.decompress(blobs[0]) == layers[0] and blobs[2] == layers[2]
    assert [p.read_bytes() for p in info.layer_paths] == blobs
    assert info.manifest_path.read_bytes() == verify_blob(layout, index["manifests"][0])


def test_nested_index_and_multiple_images(tmp_path: Path) -> None:
    layout = tmp_path / "img"
    amd = build_layout(layout, [layer_tar([f("amd")])], tag="single")
    arm = build_layout(layout, [layer_tar([f("arm")])], tag=None, platform=("linux", "arm64"))
    outer = add_nested_index(layout, [amd, arm], tag="multi", depth=2)
    index = read_index(layout)
    assert len(index["manifests"]) == 3
    top = index["manifests"][2]
    assert top["digest"] == outer and top["mediaType"] == MT_INDEX
    inner_desc = json.loads(verify_blob(layout, top))["manifests"][0]
    inner = json.loads(verify_blob(layout, inner_desc))
    plats = [m["platform"]["architecture"] for m in inner["manifests"]]
    assert plats == ["amd64", "arm64"]
    assert [m["digest"] for m in inner["manifests"]] == [amd.manifest_digest, arm.manifest_digest]


@pytest.mark.parametrize("blobs_first", [True, False])
def test_oci_archive_layout(tmp_path: Path, blobs_first: bool) -> None:
    info = build_layout(tmp_path / "img", [layer_tar([f("a")])])
    archive = write_oci_archive(tmp_path / "img", tmp_path / "img.tar", blobs_first=blobs_first)
    with tarfile.open(archive) as tf:
        names = tf.getnames()
        assert tf.extractfile("index.json").read() == (tmp_path / "img/index.json").read_bytes()
    assert "oci-layout" in names and "blobs/sha256" in names
    assert f"blobs/sha256/{info.layer_digests[0].split(':')[1]}" in names
    assert (names[0] == "blobs") == blobs_first


def test_snapshot_records_everything(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    (root / "d" / "f").write_bytes(b"data")
    os.chmod(root / "d" / "f", 0o4750)
    os.link(root / "d" / "f", root / "hl")
    os.symlink("d/f", root / "s")
    os.symlink("/nonexistent", root / "dangling")
    os.mkfifo(root / "p")
    weird = os.fsencode(root) + b"/n\xffx"
    with open(weird, "wb") as fh:
        fh.write(b"w")
    os.setxattr(root / "hl", "user.v", b"\0\xff")
    os.utime(root / "s", ns=(1, 1_600_000_000_000_000_007), follow_symlinks=False)
    snap = snapshot(root)
    assert set(snap) == {b".", b"d", b"d/f", b"hl", b"s", b"dangling", b"p", b"n\xffx"}
    assert snap[b"d/f"].mode == 0o104750 and snap[b"d/f"].size == 4
    assert snap[b"d/f"].sha256 == hashlib.sha256(b"data").hexdigest()
    assert snap[b"d/f"].links == snap[b"hl"].links == (b"d/f", b"hl")
    assert snap[b"hl"].xattrs == (("user.v", b"\0\xff"),)
    assert snap[b"s"].target == b"d/f" and snap[b"s"].mtime_ns == 1_600_000_000_000_000_007
    assert snap[b"dangling"].type == "symlink" and snap[b"p"].type == "fifo"
    assert snap[b"d"].links == () and snap[b"s"].links == ()


def test_diff_reports_and_ignores(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for root in (a, b):
        (root / "d").mkdir(parents=True)
        (root / "f").write_bytes(b"x")
        os.utime(root / "f", ns=(0, 1000))
    assert diff(snapshot(a), snapshot(b)) == []
    os.utime(b / "d", ns=(0, 5))
    assert diff(snapshot(a), snapshot(b)) == []
    assert diff(snapshot(a), snapshot(b), ignore=()) != []
    (b / "f").write_bytes(b"y")
    os.utime(b / "f", ns=(0, 1000))
    (b / "extra").mkdir()
    os.setxattr(b / "d", "user.x", b"1")
    problems = diff(snapshot(a), snapshot(b), names=("umoci", "bootc-live"))
    assert any(p.startswith("extra: only in bootc-live") for p in problems)
    assert any(p.startswith("f: sha256") for p in problems)
    assert any(p.startswith("d: xattrs") for p in problems)
    assert diff(snapshot(a), snapshot(b, drop_xattrs=["user."])) != []
    assert not any("xattrs" in p for p in diff(snapshot(a), snapshot(b, drop_xattrs=["user."])))


def test_has_holes(tmp_path: Path) -> None:
    path = tmp_path / "sp"
    with open(path, "wb") as fh:
        fh.write(b"x" * 4096)
        fh.truncate(1 << 20)
    full = tmp_path / "full"
    full.write_bytes(b"y" * 8192)
    assert has_holes(path) and not has_holes(full)
