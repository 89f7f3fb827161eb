"""Image resolution, verification and decompression, through the unpack pipeline."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import zlib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from bootc_live.images import CopiedSource, SourceRef
from bootc_live.runtime import decompress, handover
from bootc_live.runtime.errors import ImageError, LayerError, VerificationError
from bootc_live.runtime.oci import Platform, resolve
from bootc_live.runtime.sources import ArchiveSource, LayoutSource
from bootc_live.runtime.unpack import layer_chunks, layer_sizes, unpack_image
from imagegen import (
    add_nested_index,
    build_layout,
    compress,
    d,
    f,
    layer_tar,
    sha256,
    write_blob,
    write_oci_archive,
)
from unpackers import need

LAYERS = [
    layer_tar([d("etc"), f("etc/os-release", b"ID=test\n"), f("big", os.urandom(3 << 20))]),
    layer_tar([f("etc/hostname", b"live\n"), f("zeros", bytes(8 << 20))]),
]


def unpack(layout: Path, dest: Path, **kw: object) -> Path:
    dest.mkdir()
    image = resolve(LayoutSource(str(layout)), **kw)  # type: ignore[arg-type]
    unpack_image(image, str(dest), warn=lambda _msg: None)
    return dest


@pytest.fixture(autouse=True)
def _root() -> None:
    need(os.geteuid() == 0, "unpacking sets owners: needs root")


@pytest.mark.parametrize(
    ("compression", "kw"),
    [
        ("gzip", {}),
        ("gzip", {"members": 5}),
        ("zstd", {}),
        ("zstd", {"members": 4, "skippable": "middle"}),
        ("zstd", {"skippable": "start"}),
        ("none", {}),
    ],
)
def test_compressions_detected_by_magic(tmp_path: Path, compression: str, kw: dict) -> None:  # type: ignore[type-arg]
    # The declared media type lies on purpose: detection is by magic bytes.
    build_layout(
        tmp_path / "img",
        LAYERS,
        compression=compression,
        compress_kw=kw,
        media_type_override="application/vnd.oci.image.layer.v1.tar",
    )
    root = unpack(tmp_path / "img", tmp_path / "root")
    assert (root / "etc/os-release").read_bytes() == b"ID=test\n"
    assert (root / "zeros").stat().st_size == 8 << 20


def decompress_imported_without(monkeypatch: pytest.MonkeyPatch, module: str) -> ModuleType:
    """A fresh copy of the decompress module, imported while `module` cannot be imported."""
    monkeypatch.setitem(sys.modules, module, None)
    spec = importlib.util.find_spec("bootc_live.runtime.decompress")
    assert spec is not None and spec.loader is not None
    fresh = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fresh)
    return fresh


@pytest.mark.parametrize(
    ("compression", "module", "attribute", "missing", "command"),
    [
        ("gzip", "isal", "_gzip_impl", zlib, "igzip"),
        ("zstd", "zstandard", "_zstandard", None, "zstd"),
    ],
)
def test_without_the_module_the_command_decompresses(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    compression: str,
    module: str,
    attribute: str,
    missing: object,
    command: str,
) -> None:
    """An initramfs's Python has neither isal nor zstandard: igzip and zstd do the work, every
    member and frame of every layer, and the stats say so."""
    need(shutil.which(command) is not None, f"needs the {command} command: run ./setup")
    assert getattr(decompress_imported_without(monkeypatch, module), attribute) is missing
    monkeypatch.setattr(decompress, attribute, missing)
    spawned: list[list[str]] = []
    real_popen = subprocess.Popen

    def popen(argv: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        spawned.append(argv)
        return real_popen(argv, **kw)

    monkeypatch.setattr(subprocess, "Popen", popen)
    build_layout(tmp_path / "img", LAYERS, compression=compression, compress_kw={"members": 3})
    (tmp_path / "root").mkdir()
    stats = unpack_image(
        resolve(LayoutSource(str(tmp_path / "img"))), str(tmp_path / "root"), warn=print
    )
    assert (tmp_path / "root/etc/hostname").read_bytes() == b"live\n"
    assert (tmp_path / "root/zeros").stat().st_size == 8 << 20
    # zstd's window held to the decoders' limit, as unpack_image's default asks.
    limit = [f"--memory={decompress.ZSTD_WINDOW_LIMIT}"] if compression == "zstd" else []
    assert spawned == [[command, "-dcq", *limit]] * len(LAYERS)
    assert (stats.decoders, stats.decompressor) == ([command] * len(LAYERS), command)


def test_gzip_without_isal_or_igzip_uses_zlib(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def isal_used(*_args: object) -> None:
        pytest.fail("isal decompressed a layer while it could not be imported")

    if decompress._gzip_impl is not zlib:  # isal is installed here: make any use of it loud
        monkeypatch.setattr(decompress._gzip_impl, "decompressobj", isal_used)
    assert decompress_imported_without(monkeypatch, "isal")._gzip_impl is zlib
    monkeypatch.setattr(decompress, "_gzip_impl", zlib)
    monkeypatch.setenv("PATH", str(tmp_path / "no-commands"))  # no igzip
    members: list[int] = []
    real_decompressobj = zlib.decompressobj

    def decompressobj(wbits: int) -> Any:
        members.append(wbits)
        return real_decompressobj(wbits)

    monkeypatch.setattr(zlib, "decompressobj", decompressobj)
    build_layout(tmp_path / "img", LAYERS, compression="gzip", compress_kw={"members": 2})
    assert (unpack(tmp_path / "img", tmp_path / "root") / "etc/hostname").read_bytes() == b"live\n"
    assert members == [31] * 2 * len(LAYERS)  # one gzip-framed decoder per member


def test_archive_read_in_place_matches_layout(tmp_path: Path) -> None:
    build_layout(tmp_path / "img", LAYERS, tag="v1")
    archive = write_oci_archive(tmp_path / "img", tmp_path / "img.tar")
    dest = tmp_path / "from-archive"
    dest.mkdir()
    stats = unpack_image(resolve(ArchiveSource(str(archive)), label="v1"), str(dest))
    assert stats.layer_sizes == [len(t) for t in LAYERS]
    assert (dest / "etc/hostname").read_bytes() == b"live\n"
    assert (dest / "big").read_bytes() == (
        unpack(tmp_path / "img", tmp_path / "from-layout", label="v1") / "big"
    ).read_bytes()


# -- choosing the image ----------------------------------------------------------------------


def test_label_rules(tmp_path: Path) -> None:
    single = tmp_path / "single"
    build_layout(single, LAYERS[:1], tag=None)
    assert resolve(LayoutSource(str(single))).layers  # one unnamed image needs no label

    named = tmp_path / "named"
    a = build_layout(named, LAYERS[:1], tag="stable")
    b = build_layout(named, LAYERS, tag="latest")
    assert resolve(LayoutSource(str(named))).manifest_digest == b.manifest_digest
    assert resolve(LayoutSource(str(named)), label="stable").manifest_digest == a.manifest_digest
    with pytest.raises(ImageError, match=r"no image tagged 'nope' \(tags: latest, stable\)"):
        resolve(LayoutSource(str(named)), label="nope")

    two = tmp_path / "two"
    build_layout(two, LAYERS[:1], tag="a")
    build_layout(two, LAYERS, tag="b")
    with pytest.raises(ImageError, match="holds 2 images and none is tagged 'latest'"):
        resolve(LayoutSource(str(two)))


def test_nested_index_and_platforms(tmp_path: Path) -> None:
    layout = tmp_path / "img"
    amd = build_layout(
        layout, [layer_tar([f("arch", b"amd64")])], tag=None, platform=("linux", "amd64")
    )
    arm = build_layout(
        layout, [layer_tar([f("arch", b"arm64")])], tag=None, platform=("linux", "arm64", "v8")
    )
    (layout / "index.json").write_text('{"schemaVersion": 2, "manifests": []}')
    outer = add_nested_index(layout, [amd, arm], tag="multi", depth=2)
    src = LayoutSource(str(layout))
    amd64 = Platform("linux", "amd64")
    assert resolve(src, label="multi", platform=amd64).manifest_digest == amd.manifest_digest
    assert resolve(
        src, label="multi", platform=Platform.parse("linux/arm64/v8")
    ).manifest_digest == (arm.manifest_digest)
    with pytest.raises(
        ImageError,
        match=r"no image for platform linux/s390x \(offers: linux/amd64, linux/arm64/v8\)",
    ):
        resolve(src, label="multi", platform=Platform.parse("linux/s390x"))
    # A pinned digest may name the index the reference points at, or the manifest itself.
    assert (
        resolve(src, label="multi", platform=amd64, digest=outer).manifest_digest
        == amd.manifest_digest
    )
    with pytest.raises(ImageError, match="not the pinned"):
        resolve(src, label="multi", platform=amd64, digest=arm.manifest_digest)
    root = unpack(layout, tmp_path / "root", label="multi", platform=Platform.parse("linux/arm64"))
    assert (root / "arch").read_bytes() == b"arm64"


def test_schema1_is_refused(tmp_path: Path) -> None:
    layout = tmp_path / "img"
    build_layout(layout, LAYERS[:1])
    blob = write_blob(
        layout, json.dumps({"schemaVersion": 1, "name": "x", "fsLayers": []}).encode()
    )
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.docker.distribution.manifest.v1+prettyjws",
                "digest": blob.digest,
                "size": blob.size,
            }
        ],
    }
    (layout / "index.json").write_text(json.dumps(index))
    with pytest.raises(ImageError, match="schema 1"):
        resolve(LayoutSource(str(layout)))


def test_diff_id_count_must_match(tmp_path: Path) -> None:
    build_layout(
        tmp_path / "img", LAYERS, config_extra={"rootfs": {"type": "layers", "diff_ids": []}}
    )
    with pytest.raises(ImageError, match="0 diff_ids for 2 layers"):
        resolve(LayoutSource(str(tmp_path / "img")))


# -- verification ----------------------------------------------------------------------------


def test_corrupt_layer_blob_names_layer_and_digests(tmp_path: Path) -> None:
    info = build_layout(tmp_path / "img", LAYERS, compression="none")
    path = info.layer_paths[1]
    data = bytearray(path.read_bytes())
    data[5000] ^= 0xFF  # inside file data: the tar still parses
    path.write_bytes(bytes(data))
    with pytest.raises(VerificationError) as err:
        unpack(tmp_path / "img", tmp_path / "root")
    message = err.value.line()
    assert message.startswith(f"layer 2/2 sha256:{info.layer_digests[1][7:19]}… digest mismatch")
    assert f"expected {info.layer_digests[1]}, got sha256:" in message
    assert "changed or is corrupt" in message


def test_corrupt_compressed_blob_reports_the_digest_not_the_symptom(tmp_path: Path) -> None:
    info = build_layout(tmp_path / "img", LAYERS, compression="gzip")
    path = info.layer_paths[0]
    data = bytearray(path.read_bytes())
    data[100:200] = bytes(100)  # breaks the deflate stream early
    path.write_bytes(bytes(data))
    with pytest.raises(VerificationError, match=r"layer 1/2 .* digest mismatch"):
        unpack(tmp_path / "img", tmp_path / "root")


def test_truncated_and_oversized_blobs(tmp_path: Path) -> None:
    info = build_layout(tmp_path / "img", LAYERS)
    original = info.layer_paths[0].read_bytes()
    info.layer_paths[0].write_bytes(original[:-10])
    with pytest.raises(VerificationError, match=r"layer 1/2 .* truncated"):
        unpack(tmp_path / "img", tmp_path / "root1")
    info.layer_paths[0].write_bytes(original + b"extra")
    with pytest.raises(VerificationError, match="larger than its descriptor"):
        unpack(tmp_path / "img", tmp_path / "root2")


def test_wrong_diff_id(tmp_path: Path) -> None:
    wrong = [sha256(b"something else"), sha256(LAYERS[1])]
    build_layout(
        tmp_path / "img", LAYERS, config_extra={"rootfs": {"type": "layers", "diff_ids": wrong}}
    )
    with pytest.raises(
        VerificationError, match=r"layer 1/2 .* does not match the config's diff_id"
    ):
        unpack(tmp_path / "img", tmp_path / "root")


def hash_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "diff-hash"]


def test_the_diff_id_hashed_on_its_own_thread_is_judged_and_the_thread_ends(
    tmp_path: Path,
) -> None:
    """The second layer's 8 MiB go through the background hash in more chunks than it may
    hold: a wrong diff_id there is still named, and no hashing thread outlives the unpack,
    whether it failed, succeeded or its reader stopped half-way."""
    wrong = [sha256(LAYERS[0]), sha256(LAYERS[1] + b"\0")]
    build_layout(
        tmp_path / "bad", LAYERS, config_extra={"rootfs": {"type": "layers", "diff_ids": wrong}}
    )
    with pytest.raises(VerificationError, match=r"layer 2/2 .* does not match the config's"):
        unpack(tmp_path / "bad", tmp_path / "root1")
    assert hash_threads() == []

    build_layout(tmp_path / "good", LAYERS)
    root = unpack(tmp_path / "good", tmp_path / "root2")
    assert (root / "zeros").stat().st_size == 8 << 20
    assert hash_threads() == []

    image = resolve(LayoutSource(str(tmp_path / "good")))
    chunks = layer_chunks(image, 1)
    assert next(chunks)
    assert len(hash_threads()) == 1
    chunks.close()
    assert hash_threads() == []
    assert layer_sizes(image) == [len(layer) for layer in LAYERS]


def test_a_layout_this_user_may_not_look_into_is_not_told_as_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`inspect oci:DIR` by a user who may not search DIR (or its blobs/) said "is not an OCI
    image layout (no index.json)" and "blob … is missing". The kernel's EACCES is faked for
    the locked directory (root is not refused)."""
    info = build_layout(tmp_path / "img", LAYERS)
    real_stat = os.stat

    def stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if os.fspath(path).startswith(os.fspath(locked) + "/"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat)
    locked = tmp_path / "img"
    with pytest.raises(ImageError) as err:
        LayoutSource(str(locked))
    assert err.value.line() == (
        f"{locked}/index.json cannot be looked at: Permission denied; check its permissions "
        "and its owner"
    )
    locked = tmp_path / "img" / "blobs"
    with pytest.raises(ImageError) as err:
        resolve(LayoutSource(str(tmp_path / "img")))
    assert err.value.line().startswith(
        f"{locked}/sha256/{info.manifest_digest.partition(':')[2]} cannot be looked at: "
        "Permission denied"
    )
    # What skopeo reads: "no such file" and "no manifest.json" before.
    for source, looked in (
        (f"docker-archive:{locked}/saved.tar", "saved.tar"),
        (f"dir:{locked}", "manifest.json"),
    ):
        with pytest.raises(ImageError, match=f"{locked}/{looked} cannot be looked at: Permission"):
            CopiedSource(SourceRef.parse(source), compress=False)


def test_tampered_manifest_and_missing_blob(tmp_path: Path) -> None:
    info = build_layout(tmp_path / "img", LAYERS)
    info.config_path.write_bytes(info.config_path.read_bytes().replace(b"amd64", b"arm64"))
    with pytest.raises(VerificationError, match=r"config .* digest mismatch"):
        resolve(LayoutSource(str(tmp_path / "img")))
    info2 = build_layout(tmp_path / "img2", LAYERS)
    info2.layer_paths[1].unlink()
    with pytest.raises(ImageError, match=f"blob {info2.layer_digests[1]} is missing"):
        unpack(tmp_path / "img2", tmp_path / "root")
    assert hash_threads() == []  # the layer's hash had started before its blob was missed


def test_gzip_trailing_garbage_and_bad_tar(tmp_path: Path) -> None:
    garbage = compress(LAYERS[0], "gzip") + b"not gzip at all"
    # Re-point the image at a blob with garbage after the gzip member.
    info = build_layout(tmp_path / "g", [LAYERS[0]])
    info.layer_paths[0].write_bytes(garbage)
    manifest = json.loads(info.manifest_path.read_bytes())
    blob = write_blob(tmp_path / "g", garbage)
    manifest["layers"][0].update(digest=blob.digest, size=blob.size)
    mblob = write_blob(tmp_path / "g", json.dumps(manifest).encode())
    (tmp_path / "g/index.json").write_text(
        json.dumps(
            {
                "schemaVersion": 2,
                "manifests": [
                    {
                        "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "digest": mblob.digest,
                        "size": mblob.size,
                    }
                ],
            }
        )
    )
    with pytest.raises(LayerError, match="trailing garbage"):
        unpack(tmp_path / "g", tmp_path / "root")
    build_layout(tmp_path / "bad", [b"this is not a tar archive".ljust(1024, b"!")])
    with pytest.raises(LayerError, match=r"layer 1/1 .*: tar header checksum mismatch"):
        unpack(tmp_path / "bad", tmp_path / "root2")


MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@pytest.mark.parametrize(
    ("descriptor_type", "change", "story"),
    [
        (MT_MANIFEST, {"mediaType": MT_INDEX}, "its mediaType says index"),
        (MT_MANIFEST, {"manifests": []}, "its manifests field says index"),
        ("", {"manifests": []}, "its manifests field says index, its layers field says manifest"),
        (MT_INDEX, {}, "its descriptor says index"),
    ],
    ids=["mediaType-names-an-index", "carries-manifests", "no-type-both-fields", "index-type"],
)
def test_manifest_index_confusion_is_refused(
    tmp_path: Path, descriptor_type: str, change: dict[str, object], story: str
) -> None:
    layout = tmp_path / "img"
    info = build_layout(layout, LAYERS[:1])
    manifest = json.loads(info.manifest_path.read_bytes()) | change
    if not descriptor_type:
        del manifest["mediaType"]
    blob = write_blob(layout, json.dumps(manifest).encode())
    desc = {"digest": blob.digest, "size": blob.size}
    if descriptor_type:
        desc["mediaType"] = descriptor_type
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [desc]}))
    with pytest.raises(ImageError) as err:
        resolve(LayoutSource(str(layout)))
    assert "is both an index and a manifest" in str(err.value) and story in str(err.value)
    assert "ambiguous" in err.value.line() and "\n" not in err.value.line()


@pytest.mark.parametrize("field", ["layers", "config"])
def test_index_carrying_manifest_fields_is_refused(tmp_path: Path, field: str) -> None:
    layout = tmp_path / "img"
    info = build_layout(layout, LAYERS[:1])
    add_nested_index(layout, [info], tag="nested")
    index = json.loads((layout / "index.json").read_text())
    index[field] = [] if field == "layers" else {}
    (layout / "index.json").write_text(json.dumps(index))
    with pytest.raises(ImageError, match=f"index.json is both.*its {field} field says manifest"):
        resolve(LayoutSource(str(layout)), label="nested")


def test_long_tags_and_labels_give_a_short_line(tmp_path: Path) -> None:
    layout = tmp_path / "img"
    build_layout(layout, LAYERS[:1], tag="t" * 5000, more_tags=["u" * 5000])
    with pytest.raises(ImageError) as err:
        resolve(LayoutSource(str(layout)), label="w\n" * 5000)
    line = err.value.line()
    assert "\n" not in line and len(line) <= 450 and line.count("…") == 2, line


@pytest.mark.parametrize(
    ("platform", "taken"),
    [
        (("", ""), True),  # go-containerregistry writes the fields empty (crane append)
        (("linux", "amd64"), True),
        (("linux", "arm64"), False),  # not this (amd64) machine's: the boot refuses it
    ],
)
def test_an_unlabelled_image_is_judged_by_what_its_config_says(
    tmp_path: Path, platform: tuple[str, str], taken: bool
) -> None:
    build_layout(tmp_path / "img", [layer_tar([f("a", b"a")])], platform=platform, tag="v1")
    index_json = tmp_path / "img/index.json"
    index = json.loads(index_json.read_text())
    for entry in index["manifests"]:
        entry.pop("platform", None)  # as podman save and crane write the entry
    index_json.write_text(json.dumps(index))
    need(Platform.host() == Platform("linux", "amd64"), "the cases are written for amd64")
    if taken:
        resolve(LayoutSource(str(tmp_path / "img")))
        return
    with pytest.raises(ImageError, match=r"is an image for linux/arm64 \(its config\), not for"):
        resolve(LayoutSource(str(tmp_path / "img")))
    told: list[str] = []
    resolve(LayoutSource(str(tmp_path / "img")), foreign=told.append)  # the host's way
    assert len(told) == 1 and "not for this machine (linux/amd64)" in told[0]


@pytest.mark.parametrize("variant", [[], {}, 8, None, "v8", ""])
def test_a_platform_s_variant_of_any_json_type_is_compared_not_raised(variant: object) -> None:
    """Empty values are no variant; a malformed one (8) matches nothing (no TypeError)."""
    entry = {"os": "linux", "architecture": "arm64", "variant": variant}
    malformed = variant == 8
    assert Platform("linux", "arm64", "v8").matches(entry) is not malformed
    assert Platform("linux", "arm64").matches(entry) is not malformed


@pytest.mark.parametrize(
    "options",
    [
        ["--format=posix"],  # PAX sparse 1.0
        ["--format=posix", "--sparse-version=0.0"],
        ["--format=posix", "--sparse-version=0.1"],
        ["--format=gnu"],  # old GNU sparse ('S'), which skopeo refuses
    ],
)
def test_an_oci_archive_that_tar_wrote_sparse_is_read_with_its_holes(
    tmp_path: Path, options: list[str]
) -> None:
    """`tar --sparse -cf image.tar -C layout .` of a layout whose plain-tar blob has holes
    stores only its data: the member was read as the whole blob, 'truncated'. skopeo reads it."""
    from treewalk import has_holes
    from unpackers import bootc_live

    layer = layer_tar([f("zeros", bytes(8 << 20)), f("tail", b"end")])
    info = build_layout(tmp_path / "layout", [layer], compression="none", tag="v1")
    blob = tmp_path / "layout/blobs/sha256" / info.layer_digests[0].partition(":")[2]
    subprocess.run(["fallocate", "--dig-holes", str(blob)], check=True)
    assert has_holes(blob)
    archive = tmp_path / "image.tar"
    tar = ["tar", "--sparse", *options, "-cf", str(archive), "-C", str(tmp_path / "layout"), "."]
    subprocess.run(tar, check=True)
    assert archive.stat().st_size < 1 << 20  # the zeros are not in it
    root = tmp_path / "root"
    done = bootc_live("unpack", f"oci-archive:{archive}:v1", str(root))
    assert done.returncode == 0, done.stderr
    assert (root / "zeros").read_bytes() == bytes(8 << 20) and (
        root / "tail"
    ).read_bytes() == b"end"


def test_a_sparse_members_holes_come_in_bounded_pieces() -> None:
    """A hostile map may claim a hole of a terabyte: read whole, it came as one bytes()."""
    import io

    from bootc_live.runtime.sources import _Unsparse

    reader = _Unsparse(io.BytesIO(b"abcdef"), [(0, 3), (10, 3)], 1 << 40)
    assert reader.read(-1) == b"abc"
    assert reader.read(-1) == bytes(7) and reader.read(-1) == b"def"
    assert len(reader.read(-1)) == 1 << 20  # the tail hole, a MiB at a time


@pytest.mark.parametrize(
    "change",
    [
        {"annotations": {"org.opencontainers.image.ref.name": 5}},
        {"annotations": {"org.opencontainers.image.ref.name": ["latest"]}},
        {"platform": {"os": "linux", "architecture": 64}},
        {"mediaType": 5},
    ],
    ids=["tag-a-number", "tag-a-list", "architecture-a-number", "mediatype-a-number"],
)
def test_descriptor_fields_of_the_wrong_json_type_are_one_line(
    tmp_path: Path, change: dict[str, object]
) -> None:
    """Go's decoder refuses a number or list where a descriptor has a string: one line, not
    the TypeError of a tag or platform compared with it (inspect lists the platforms too)."""
    layout = tmp_path / "img"
    build_layout(layout, LAYERS[:1], tag="latest")
    index = json.loads((layout / "index.json").read_text())
    index["manifests"].append(index["manifests"][0] | change)
    (layout / "index.json").write_text(json.dumps(index))
    with pytest.raises(ImageError, match=r"index.json entry 1: malformed descriptor \(a mediaT"):
        resolve(LayoutSource(str(layout)))


def test_a_null_annotation_is_an_empty_one_as_go_reads_it(tmp_path: Path) -> None:
    layout = tmp_path / "img"
    info = build_layout(layout, LAYERS[:1], tag="latest")
    index = json.loads((layout / "index.json").read_text())
    untagged = index["manifests"][0] | {"annotations": {"org.opencontainers.image.ref.name": None}}
    index["manifests"].insert(0, untagged)
    (layout / "index.json").write_text(json.dumps(index))
    assert resolve(LayoutSource(str(layout))).manifest_digest == info.manifest_digest


def test_an_oci_archive_holding_a_blob_as_a_hard_link_is_read(tmp_path: Path) -> None:
    """GNU tar archives a file's second name as a link to the first: a layout whose layer blob
    is also linked under another name, that name archived first. skopeo extracts the archive,
    so it reads the blob; here its data is the first name's member."""
    need(shutil.which("tar") is not None, "GNU tar is missing")
    layout = tmp_path / "img"
    info = build_layout(layout, LAYERS)
    os.link(info.layer_paths[1], layout / "layer-copy")
    archive = tmp_path / "img.tar"
    names = ["layer-copy", "blobs", "index.json", "oci-layout"]
    subprocess.run(["tar", "-C", str(layout), "-cf", str(archive), *names], check=True)
    listing = subprocess.run(["tar", "-tvf", str(archive)], capture_output=True, text=True)
    assert " link to layer-copy" in listing.stdout  # the blob is a hard link member
    dest = tmp_path / "root"
    dest.mkdir()
    unpack_image(resolve(ArchiveSource(str(archive))), str(dest))
    assert (dest / "etc/hostname").read_bytes() == b"live\n"


@pytest.mark.parametrize("form", ["layout", "archive"])
def test_an_index_json_over_16_mib_is_called_so(tmp_path: Path, form: str) -> None:
    """Not cut at 16 MiB and then called invalid JSON ("Unterminated string …")."""
    layout = tmp_path / "img"
    build_layout(layout, LAYERS[:1])
    index = json.loads((layout / "index.json").read_text()) | {"padding": "x" * (17 << 20)}
    (layout / "index.json").write_text(json.dumps(index))
    with pytest.raises(ImageError, match=r"index.json is implausibly large \("):
        if form == "layout":
            resolve(LayoutSource(str(layout)))
        else:
            resolve(ArchiveSource(str(write_oci_archive(layout, tmp_path / "img.tar"))))


@pytest.mark.parametrize("label", [None, "latest"])
def test_a_tag_two_full_names_share_is_called_ambiguous(tmp_path: Path, label: str | None) -> None:
    """`skopeo copy … oci:DIR:localhost/a:latest`, then `…:docker.io/x/b:latest`: the bare tag
    names neither. Not "no image tagged 'latest' (tags: …:latest, …:latest)"."""
    layout = tmp_path / "img"
    build_layout(layout, LAYERS[:1], tag="localhost/a:latest")
    build_layout(layout, LAYERS[1:], tag="docker.io/x/b:latest")
    with pytest.raises(ImageError) as err:
        resolve(LayoutSource(str(layout)), label=label)
    assert err.value.line() == (
        f"oci:{layout} has 2 images tagged 'latest' under different names "
        "(docker.io/x/b:latest, localhost/a:latest); name one in full with bootclabel=NAME:TAG"
    )
    assert resolve(LayoutSource(str(layout)), label="localhost/a:latest").layers


@pytest.mark.parametrize("order", ["index-first", "blobs-first"])
@pytest.mark.parametrize("cut", ["in-padding", "at-a-block"])
def test_an_oci_archive_cut_at_the_end_of_a_member_is_called_cut_short(
    tmp_path: Path, order: str, cut: str
) -> None:
    """A tar may end after any member (Go's reader, and this one, end it there), so a copy cut
    short there reads as a complete archive: not "blob … is missing" or "no index.json inside",
    but what its end, without the two zero blocks every tar writer ends with, says."""
    layout = tmp_path / "img"
    build_layout(layout, LAYERS[:1], compression="none")
    archive = write_oci_archive(layout, tmp_path / "img.tar", blobs_first=order == "blobs-first")
    data = archive.read_bytes()
    with tarfile.open(archive) as tar:  # the first JSON blob: a blob it needs follows it
        member = next(m for m in tar if m.name.startswith("blobs/") and m.isfile() and m.size % 512)
    end = member.offset_data + member.size
    archive.write_bytes(data[: end + (8 if cut == "in-padding" else -end % 512)])
    with pytest.raises(ImageError) as err:
        resolve(ArchiveSource(str(archive)))
    assert err.value.line() == (
        f"oci-archive:{archive} is cut short: it does not end as a tar ends; "
        "copy or download it again"
    )


def test_a_cpio_archive_given_as_an_oci_archive_is_named(tmp_path: Path) -> None:
    """rootfs.img (the split layout) is a cpio archive: not 'tar header checksum mismatch: the
    layer is corrupt or not a tar'."""
    build_layout(tmp_path / "img", LAYERS[:1])
    image = resolve(LayoutSource(str(tmp_path / "img")))
    rootfs = tmp_path / "rootfs.img"
    with open(rootfs, "wb") as out:
        handover.write_split_layout(image, handover.index_json(image, "latest", None), out)
    with pytest.raises(ImageError) as err:
        ArchiveSource(str(rootfs))
    assert err.value.line() == (
        f"oci-archive:{rootfs} is a cpio archive, not an oci-archive (a tar); bootc-live build "
        "writes root.oci as the oci-archive; its rootfs.img goes after initrd.img as an initrd, "
        "which the kernel unpacks"
    )
