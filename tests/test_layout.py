"""The one writer of OCI layouts: what it writes is read back by our reader, skopeo and umoci."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from bootc_live.build import write_oci_layout
from bootc_live.layout import LayerTar, TreeEntry, write_layout
from bootc_live.runtime.handover import OCI_LAYOUT, index_json
from bootc_live.runtime.oci import Image, resolve
from bootc_live.runtime.sources import LayoutSource
from bootc_live.runtime.unpack import layer_chunks
from unpackers import need_root_and

TARS = [
    LayerTar([TreeEntry("etc", "dir", mode=0o755), TreeEntry("etc/hostname", data=b"one\n")]),
    LayerTar([TreeEntry("etc/hostname", "whiteout"), TreeEntry("usr", "dir", mode=0o755)]),
]


def files(layout: Path) -> dict[str, bytes]:
    return {
        os.fspath(p.relative_to(layout)): p.read_bytes() for p in layout.rglob("*") if p.is_file()
    }


def written(tmp_path: Path) -> tuple[Path, str, list[bytes]]:
    tars = [layer.tar() for layer in TARS]
    return tmp_path / "layout", write_layout(tmp_path / "layout", tars, "v1"), tars


def read_back(layout: Path, tag: str) -> tuple[Image, list[bytes]]:
    """The image as our reader finds it, and each layer's tar (its diff_id verified)."""
    image = resolve(LayoutSource(os.fspath(layout)), tag)
    return image, [b"".join(layer_chunks(image, i)) for i in range(len(image.layers))]


def test_a_written_layout_reads_back(tmp_path: Path) -> None:
    layout, digest, tars = written(tmp_path)
    image, layers = read_back(layout, "v1")
    assert (image.manifest_digest, layers) == (digest, tars)
    assert image.config["config"] == {"Cmd": ["/sbin/init"]}
    blobs = [image.manifest, image.config_descriptor, *image.layers]
    assert set(files(layout)) == {
        "oci-layout",
        "index.json",
        *(d.digest.replace("sha256:", "blobs/sha256/") for d in blobs),
    }
    assert (layout / "oci-layout").read_bytes() == OCI_LAYOUT
    index = json.loads((layout / "index.json").read_bytes())
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"


def test_the_same_layers_make_the_same_bytes(tmp_path: Path) -> None:
    _, digest, tars = written(tmp_path / "a")
    assert write_layout(tmp_path / "b", tars, "v1") == digest
    assert files(tmp_path / "a" / "layout") == files(tmp_path / "b")


def test_a_pulled_copy_is_the_same_image_with_the_index_it_was_given(tmp_path: Path) -> None:
    layout, digest, tars = written(tmp_path)
    image, _ = read_back(layout, "v1")
    index = index_json(image, "copy", [1, 2])
    write_oci_layout(image, index, tmp_path / "copy")
    copied, layers = read_back(tmp_path / "copy", "copy")
    assert (copied.manifest_digest, layers) == (digest, tars)
    assert (tmp_path / "copy" / "index.json").read_bytes() == index
    theirs, ours = files(layout), files(tmp_path / "copy")
    assert {k: v for k, v in ours.items() if k != "index.json"} == {
        k: v for k, v in theirs.items() if k != "index.json"
    }


@pytest.mark.integration
def test_skopeo_and_umoci_read_a_written_layout(tmp_path: Path) -> None:
    need_root_and("skopeo", "umoci")
    layout, digest, _ = written(tmp_path)
    inspected = subprocess.run(
        ["skopeo", "inspect", f"oci:{layout}:v1"], capture_output=True, text=True, check=True
    )
    assert json.loads(inspected.stdout)["Digest"] == digest
    bundle = tmp_path / "bundle"
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:v1", bundle], check=True)
    rootfs = bundle / "rootfs"
    assert sorted(os.listdir(rootfs)) == ["etc", "usr"]
    assert os.listdir(rootfs / "etc") == []
