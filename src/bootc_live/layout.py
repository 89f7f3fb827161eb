"""Writing OCI image layouts on the host (pulled images, demo and test images)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .runtime.handover import OCI_LAYOUT
from .runtime.oci import REF_NAME
from .runtime.sources import blob_path

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


class Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


@dataclass
class TreeEntry:
    """A file, directory or symlink for a layer built in memory."""

    path: str
    kind: str = "file"  # "file", "dir", "symlink" or "whiteout"
    data: bytes = b""
    mode: int = 0o644
    target: str = ""


@dataclass
class LayerTar:
    """A layer's tar built from TreeEntry items (numeric owner root, fixed mtime)."""

    entries: list[TreeEntry] = field(default_factory=list)
    mtime: int = 1_700_000_000

    def tar(self) -> bytes:
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for entry in self.entries:
                path = entry.path.strip("/")
                if entry.kind == "whiteout":
                    parent, _, name = path.rpartition("/")
                    path = f"{parent}/.wh.{name}" if parent else f".wh.{name}"
                info = tarfile.TarInfo(path)
                info.mtime = self.mtime
                info.mode = entry.mode
                if entry.kind == "dir":
                    info.type = tarfile.DIRTYPE
                elif entry.kind == "symlink":
                    info.type = tarfile.SYMTYPE
                    info.linkname = entry.target
                else:
                    info.size = len(entry.data)
                tar.addfile(info, io.BytesIO(entry.data) if info.isfile() else None)
        return out.getvalue()


@dataclass(frozen=True)
class Layer:
    """A layer blob in a layout: its digest and size, and the digest of its uncompressed tar."""

    digest: str
    size: int
    diff_id: str
    media_type: str = MEDIA_LAYER_GZIP


def canonical_json(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


class LayoutWriter:
    """A new OCI image layout directory: its blobs are added, then the index that names them.

    The one writer of layouts: `bootc-live pull` copies an image into one, the demo and the
    tests make theirs with it (their layer blobs may also be written straight into `blobs`).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.blobs = directory / "blobs" / "sha256"
        self.blobs.mkdir(parents=True, exist_ok=True)
        (directory / "oci-layout").write_bytes(OCI_LAYOUT)

    def add_blob(self, data: bytes) -> dict[str, Any]:
        """Store `data`; its descriptor's digest and size."""
        digest = hashlib.sha256(data).hexdigest()
        (self.blobs / digest).write_bytes(data)
        return {"digest": f"sha256:{digest}", "size": len(data)}

    def copy_blob(self, digest: str, reader: Readable) -> None:
        """Store the blob `digest` as `reader` hands it over (the caller verifies it)."""
        with open(self.directory / blob_path(digest), "wb") as out:
            shutil.copyfileobj(reader, out, 1 << 20)

    def add_layer(self, tar: bytes) -> Layer:
        """Store an uncompressed layer tar, gzipped (reproducibly)."""
        blob = self.add_blob(gzip.compress(tar, compresslevel=6, mtime=0))
        return Layer(blob["digest"], blob["size"], "sha256:" + hashlib.sha256(tar).hexdigest())

    def add_image(
        self,
        layers: Sequence[Layer],
        tag: str,
        config: Mapping[str, Any] | None = None,
        arch: str = "amd64",
    ) -> str:
        """Write the config (`config` adds to its os, architecture and rootfs), the manifest and
        index.json naming them, tagged `tag`; returns the manifest's digest."""
        image_config = {
            "architecture": arch,
            "os": "linux",
            **(config or {}),
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        }
        manifest = {
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": {"mediaType": MEDIA_CONFIG, **self.add_blob(canonical_json(image_config))},
            "layers": [
                {"mediaType": layer.media_type, "digest": layer.digest, "size": layer.size}
                for layer in layers
            ],
        }
        descriptor = {
            "mediaType": MEDIA_MANIFEST,
            **self.add_blob(canonical_json(manifest)),
            "platform": {"os": "linux", "architecture": arch},
            "annotations": {REF_NAME: tag},
        }
        index = {"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": [descriptor]}
        self.write_index(canonical_json(index))
        return str(descriptor["digest"])

    def write_index(self, index: bytes) -> None:
        """index.json, replaced whole: a reader sees the old one or the new one."""
        tmp = self.directory / "index.json.new"
        tmp.write_bytes(index)
        os.replace(tmp, self.directory / "index.json")


def write_layout(layout: Path, layers: list[bytes], tag: str, arch: str = "amd64") -> str:
    """A new OCI layout of an image of uncompressed layer tars (gzipped here) that runs
    /sbin/init; returns its manifest's digest."""
    out = LayoutWriter(layout)
    blobs = [out.add_layer(tar) for tar in layers]
    return out.add_image(blobs, tag, {"config": {"Cmd": ["/sbin/init"]}}, arch)
