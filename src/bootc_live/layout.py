"""Writing OCI image layouts on the host (demo and test images, pulled images)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from .runtime.oci import REF_NAME

MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


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


def _write_blob(layout: Path, data: bytes) -> dict[str, object]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    path = layout / "blobs" / "sha256" / digest[7:]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {"digest": digest, "size": len(data)}


def write_layout(layout: Path, layers: list[bytes], tag: str, arch: str = "amd64") -> str:
    """Write an image of uncompressed layer tars (gzipped here) into a new OCI layout."""
    layout.mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    descriptors = []
    diff_ids = []
    for tar in layers:
        diff_ids.append("sha256:" + hashlib.sha256(tar).hexdigest())
        blob = _write_blob(layout, gzip.compress(tar, compresslevel=6, mtime=0))
        descriptors.append({"mediaType": MEDIA_LAYER_GZIP, **blob})
    config = {
        "architecture": arch,
        "os": "linux",
        "config": {"Cmd": ["/sbin/init"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    config_blob = _write_blob(layout, json.dumps(config, sort_keys=True).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": {"mediaType": MEDIA_CONFIG, **config_blob},
        "layers": descriptors,
    }
    manifest_blob = _write_blob(layout, json.dumps(manifest, sort_keys=True).encode())
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": MEDIA_MANIFEST,
                **manifest_blob,
                "platform": {"os": "linux", "architecture": arch},
                "annotations": {REF_NAME: tag},
            }
        ],
    }
    tmp = layout / "index.json.new"
    tmp.write_text(json.dumps(index, indent=1))
    os.replace(tmp, layout / "index.json")
    return str(manifest_blob["digest"])
