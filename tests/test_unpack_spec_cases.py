"""SPEC.md §3 cases where umoci 0.4.7 cannot serve as the oracle: checked against the spec.

Each test names the umoci behaviour that rules it out of test_umoci_diff.py.
"""

from __future__ import annotations

import hashlib
import os
import platform
from pathlib import Path

import pytest

from imagegen import (
    MT_LAYER,
    Entry,
    add_nested_index,
    build_image,
    build_layout,
    d,
    f,
    global_header,
    hard,
    layer_tar,
    ns,
    sparse,
    sym,
    wh,
    write_blob,
)
from treewalk import has_holes, snapshot
from unpackers import assert_clean_failure, bootc_live, bootc_live_unpack, need_root_and

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _needs_root() -> None:
    need_root_and()


def expected_tree(layers: list[list[Entry]]) -> dict[bytes, dict[str, object]]:
    """What unpacking gives for simple layers (files, dirs, symlinks; no whiteouts/hardlinks):
    each path's type, permission bits, owner, content hash, link target, and non-dir mtime.
    Implied parents are 0755 root:root."""
    tree: dict[bytes, dict[str, object]] = {b".": {"type": "dir", "perm": 0o755}}
    for entries in layers:
        for e in entries:
            assert e.kind in ("file", "dir", "symlink"), e.kind
            path = os.path.normpath(e.bname.strip(b"/"))
            parts = path.split(b"/")
            for i in range(1, len(parts)):
                parent = b"/".join(parts[:i])
                tree.setdefault(parent, {"type": "dir", "perm": 0o755, "uid": 0, "gid": 0})
            for old in [p for p in tree if p.startswith(path + b"/")]:
                if e.kind != "dir":
                    del tree[old]
            rec: dict[str, object] = {"type": e.kind, "uid": e.uid, "gid": e.gid}
            if e.kind != "symlink":
                rec["perm"] = e.mode
            if e.kind == "file":
                rec["sha256"] = hashlib.sha256(e.content()).hexdigest()
            if e.kind == "symlink":
                rec["target"] = e.linkname if isinstance(e.linkname, bytes) else e.linkname.encode()
            if e.kind != "dir":
                rec["mtime_ns"] = e.mtime_ns
            tree[path] = rec
    return tree


def assert_tree(root: Path, expected: dict[bytes, dict[str, object]]) -> None:
    snap = snapshot(root)
    assert sorted(snap) == sorted(expected)
    problems = []
    for path, want in expected.items():
        got = snap[path]
        actual = {
            "type": got.type,
            "perm": got.mode & 0o7777,
            "uid": got.uid,
            "gid": got.gid,
            "sha256": got.sha256,
            "target": got.target,
            "mtime_ns": got.mtime_ns,
        }
        for key, value in want.items():
            if actual[key] != value:
                problems.append(f"{path!r}: {key} expected {value!r}, got {actual[key]!r}")
    assert problems == []


SIMPLE = [
    [
        d("etc"),
        f("etc/os-release", b"ID=spec\n", mtime=ns(1_700_000_000, 42)),
        f("usr/bin/tool", hashlib.shake_256(b"tool").digest(200_000), mode=0o4755, uid=7),
        sym("usr/bin/alias", "tool"),
    ],
    [f("etc/os-release", b"ID=spec2\n"), d("var/lib", mode=0o700, uid=3, gid=4)],
    [f("third", b"3", mtime=123)],
]


def unpack(tmp_path: Path, layers: list[bytes], name: str = "root", **kw: object) -> Path:
    layout = tmp_path / f"layout-{name}"
    build_layout(layout, layers, **kw)  # type: ignore[arg-type]
    return bootc_live_unpack(f"oci:{layout}:latest", tmp_path / name)


# --- compression: umoci 0.4.7 has no zstd support ------------------------------------------


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"members": 4},
        {"members": 3, "skippable": "start"},
        {"members": 3, "skippable": "middle"},
        {"members": 2, "skippable": "end"},
    ],
    ids=["one-frame", "multi-frame", "skippable-start", "skippable-middle", "skippable-end"],
)
def test_zstd_layers(kw: dict[str, object], tmp_path: Path) -> None:
    layers = [layer_tar(entries) for entries in SIMPLE]
    root = unpack(tmp_path, layers, compression="zstd", compress_kw=kw)
    assert_tree(root, expected_tree(SIMPLE))


def test_mixed_gzip_zstd_and_plain_layers(tmp_path: Path) -> None:
    layers = [layer_tar(entries) for entries in SIMPLE]
    root = unpack(tmp_path, layers, compression=["zstd", "gzip", "none"])
    assert_tree(root, expected_tree(SIMPLE))


@pytest.mark.parametrize(
    ("actual", "declared"),
    [("gzip", "none"), ("zstd", "gzip"), ("none", "zstd"), ("gzip", "zstd"), ("none", "gzip")],
)
def test_compression_detected_by_magic_when_media_type_lies(
    actual: str, declared: str, tmp_path: Path
) -> None:
    layers = [layer_tar(entries) for entries in SIMPLE]
    root = unpack(
        tmp_path,
        layers,
        compression=actual,
        media_type_override=[MT_LAYER[declared], None, None],
    )
    assert_tree(root, expected_tree(SIMPLE))


# --- tar features umoci 0.4.7 rejects ------------------------------------------------------

HIJACK = {
    "uid": "1234",
    "gid": "99",
    "mtime": "1",
    "path": "hijacked",
    "linkpath": "hijacked",
    "SCHILY.xattr.user.global": "g",
    "comment": "global header",
}


@pytest.mark.parametrize("fmt", ["pax", "gnu"])
def test_pax_global_headers_are_ignored(fmt: str, tmp_path: Path) -> None:
    """umoci 0.4.7: 'unknown typeflag 'g''. Spec: ignored, never merged into entries."""
    entries = SIMPLE[0]
    tar = layer_tar(
        [entries[0], global_header(HIJACK), *entries[1:], global_header({"uid": "5"})],
        fmt=fmt,
        global_pax=HIJACK,
    )
    root = unpack(tmp_path, [tar])
    assert_tree(root, expected_tree([entries]))
    assert all(rec.xattrs == () for rec in snapshot(root).values())


GNU_SEGMENTS = [(i * 8192, hashlib.shake_256(b"%d" % i).digest(1024)) for i in range(30)]


@pytest.mark.parametrize(
    ("fmt", "segments"),
    [("gnu", GNU_SEGMENTS[:3]), ("gnu", GNU_SEGMENTS), ("pax", GNU_SEGMENTS)],
    ids=["gnu-in-header", "gnu-extension-blocks", "pax-1.0"],
)
def test_sparse_files_have_holes(fmt: str, segments: list, tmp_path: Path) -> None:
    """umoci 0.4.7 fails on GNU 'S' entries and writes PAX sparse files without holes."""
    size = 2**20
    entry = sparse("sp", size, segments, mode=0o640, mtime=ns(1_600_000_000, 5))
    root = unpack(tmp_path, [layer_tar([entry, f("after", b"a")], fmt=fmt)])
    assert_tree(
        root,
        expected_tree([[Entry("sp", data=entry.content(), **_meta(entry))]])
        | {b"after": {"type": "file", "sha256": hashlib.sha256(b"a").hexdigest()}},
    )
    assert has_holes(root / "sp")


def _meta(e: Entry) -> dict[str, object]:
    return {"mode": e.mode, "uid": e.uid, "gid": e.gid, "mtime": e.mtime}


@pytest.mark.parametrize("fmt", ["gnu", "pax"])
def test_sparse_file_larger_than_8_gib(fmt: str, tmp_path: Path) -> None:
    """Sizes beyond the 11-digit octal field: GNU base-256 realsize / PAX realsize record."""
    size = 8 * 2**30 + 4096
    tail = b"end of a very large file"
    entry = sparse("huge", size, [(0, b"start".ljust(512, b".")), (size - 4096, tail)])
    root = unpack(tmp_path, [layer_tar([entry], fmt=fmt)])
    st = os.stat(root / "huge")
    assert st.st_size == size
    assert st.st_blocks * 512 < 2**20, "the hole was written out"
    with open(root / "huge", "rb") as fh:
        assert fh.read(5) == b"start"
        fh.seek(size - 4096)
        assert fh.read(len(tail)) == tail


# --- whiteout names: umoci 0.4.7 deletes the parent directory, then fails -------------------


@pytest.mark.parametrize("name", [".wh.", ".wh..", ".wh..."])
def test_degenerate_whiteouts_are_errors(name: str, tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    build_layout(layout, [layer_tar([d("d"), f("d/k")]), layer_tar([f(f"d/{name}")])])
    assert_clean_failure(bootc_live("unpack", f"oci:{layout}:latest", str(tmp_path / "root")))


# --- xattrs the spec never applies -----------------------------------------------------------


def test_selinux_and_overlay_xattrs_not_applied(tmp_path: Path) -> None:
    xattrs = {
        "security.selinux": b"system_u:object_r:bin_t:s0\0",
        "trusted.overlay.opaque": b"y",
        "trusted.overlay.redirect": b"/x",
        "trusted.overlayx": b"kept",
        "user.kept": b"k",
    }
    root = unpack(tmp_path, [layer_tar([d("dir", xattrs=xattrs), f("file", xattrs=xattrs)])])
    snap = snapshot(root, drop_xattrs=())
    kept = (("trusted.overlayx", b"kept"), ("user.kept", b"k"))
    assert snap[b"dir"].xattrs == kept
    assert snap[b"file"].xattrs == kept


# --- image selection: umoci refuses a tag reaching several manifests ("tag is ambiguous") ---


def _platform_images(layout: Path) -> tuple[object, object]:
    amd = build_image(layout, [layer_tar([f("arch", b"amd64")])], platform=("linux", "amd64"))
    arm = build_image(layout, [layer_tar([f("arch", b"arm64")])], platform=("linux", "arm64", "v8"))
    return amd, arm


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_nested_index_picks_running_platform(depth: int, tmp_path: Path) -> None:
    if platform.machine() != "x86_64":
        pytest.skip("expects an amd64 host")
    layout = tmp_path / "layout"
    arm_first = list(reversed(_platform_images(layout)))
    add_nested_index(layout, arm_first, tag="multi", depth=depth)  # type: ignore[arg-type]
    root = bootc_live_unpack(f"oci:{layout}:multi", tmp_path / "root")
    assert (root / "arch").read_bytes() == b"amd64"


def test_nested_index_without_running_platform_fails(tmp_path: Path) -> None:
    if platform.machine() != "x86_64":
        pytest.skip("expects an amd64 host")
    layout = tmp_path / "layout"
    _, arm = _platform_images(layout)
    add_nested_index(layout, [arm], tag="multi", depth=2)  # type: ignore[list-item]
    result = bootc_live("unpack", f"oci:{layout}:multi", str(tmp_path / "root"))
    assert "amd64" in assert_clean_failure(result)


def test_single_untagged_image_needs_no_tag(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    build_layout(layout, [layer_tar(entries) for entries in SIMPLE], tag=None)
    root = bootc_live_unpack(f"oci:{layout}", tmp_path / "root")
    assert_tree(root, expected_tree(SIMPLE))


def test_default_tag_is_latest(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    build_layout(layout, [layer_tar([f("which", b"other")])], tag="other")
    build_layout(layout, [layer_tar([f("which", b"latest")])], tag="latest")
    root = bootc_live_unpack(f"oci:{layout}", tmp_path / "root")
    assert (root / "which").read_bytes() == b"latest"


# --- verification messages --------------------------------------------------------------------


def test_digest_mismatch_names_blob_expected_and_actual(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    info = build_layout(
        layout, [layer_tar([f("a", b"a")]), layer_tar([f("b", b"good")])], compression="none"
    )
    # a well-formed tar of the same size: only the digest can tell
    forged = layer_tar([f("b", b"evil")])
    info.layer_paths[1].write_bytes(forged)
    result = bootc_live("unpack", f"oci:{layout}:latest", str(tmp_path / "root"))
    stderr = assert_clean_failure(result)
    expected = info.layer_digests[1].split(":")[1]
    actual = hashlib.sha256(forged).hexdigest()
    assert expected[:12] in stderr and actual[:12] in stderr
    assert not (tmp_path / "root" / "b").exists()


def test_diff_id_mismatch_names_layer(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    tar = layer_tar([f("a", b"a")])
    wrong = "sha256:" + "ab" * 32
    info = build_layout(
        layout, [tar], config_extra={"rootfs": {"type": "layers", "diff_ids": [wrong]}}
    )
    result = bootc_live("unpack", f"oci:{layout}:latest", str(tmp_path / "root"))
    stderr = assert_clean_failure(result)
    assert info.layer_digests[0].split(":")[1][:12] in stderr


def test_missing_blob_fails(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    info = build_layout(layout, [layer_tar([f("a")])])
    info.layer_paths[0].unlink()
    assert_clean_failure(bootc_live("unpack", f"oci:{layout}:latest", str(tmp_path / "root")))


def test_orphan_blob_is_ignored(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    build_layout(layout, [layer_tar(entries) for entries in SIMPLE])
    write_blob(layout, b"not referenced by anything")
    assert_tree(bootc_live_unpack(f"oci:{layout}", tmp_path / "root"), expected_tree(SIMPLE))


# --- destination contract ------------------------------------------------------------------


def test_dest_must_be_new_or_empty(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    build_layout(layout, [layer_tar(entries) for entries in SIMPLE])
    (tmp_path / "empty").mkdir()
    assert_tree(bootc_live_unpack(f"oci:{layout}", tmp_path / "empty"), expected_tree(SIMPLE))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "precious").write_bytes(b"keep me")
    assert_clean_failure(bootc_live("unpack", f"oci:{layout}", str(tmp_path / "full")))
    assert (tmp_path / "full" / "precious").read_bytes() == b"keep me"


def test_hardlink_to_lower_layer_symlink_links_the_symlink(tmp_path: Path) -> None:
    layers = [layer_tar([f("t", b"t"), sym("s", "t")]), layer_tar([hard("h", "s"), wh("s")])]
    root = unpack(tmp_path, layers)
    assert os.readlink(root / "h") == "t"
    assert os.lstat(root / "h").st_nlink == 1


def test_implied_parents_inside_setgid_dir_are_0755_root(tmp_path: Path) -> None:
    """umoci 0.4.7 lets the kernel's setgid inheritance shape implied parents (02755, the
    parent's gid); the spec pins implied parents to 0755 root:root."""
    layers = [
        layer_tar([d("sg", mode=0o2775, gid=5)]),
        layer_tar([f("sg/implied/deeper/file"), d("sg/explicit", mode=0o755)]),
    ]
    snap = snapshot(unpack(tmp_path, layers))
    for path in (b"sg/implied", b"sg/implied/deeper", b"sg/explicit"):
        assert (snap[path].mode, snap[path].uid, snap[path].gid) == (0o40755, 0, 0), path
    assert snap[b"sg/implied/deeper/file"].gid == 0
    assert snap[b"sg"].mode == 0o42775
