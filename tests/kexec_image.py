"""A kexec-ready variant of the Debian test image (tests/debian_image.py), for bootc.kexec.

Kept apart from debian_image.py, whose source is part of its cache key.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from pathlib import Path

from bootc_live.layout import LayoutWriter
from debian_image import DebianImage, write_image


def kexec_ready(image: DebianImage, initramfs: Path, dest: Path) -> str:
    """The image plus a top layer with usr/lib/modules/KVER/initramfs.img: what makes a bootc
    image kexec-ready for bootc-live (the initramfs built in the image's userland by `bootc-live
    build`, so it carries the bootc-live modules). Returns the new manifest digest; the layout
    is dest/layout, tagged TAG."""
    out = LayoutWriter(dest / "layout")
    for layer in image.layers:
        os.link(
            image.layout / "blobs" / "sha256" / layer["digest"][7:], out.blobs / layer["digest"][7:]
        )
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in ("usr", "usr/lib", "usr/lib/modules", f"usr/lib/modules/{image.kver}"):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        info = tarfile.TarInfo(f"usr/lib/modules/{image.kver}/initramfs.img")
        info.size, info.mode = initramfs.stat().st_size, 0o600
        with open(initramfs, "rb") as data:
            tar.addfile(info, data)
    tar_bytes = raw.getvalue()
    blob = out.add_blob(gzip.compress(tar_bytes, compresslevel=1, mtime=0))
    layer = {
        "name": "initramfs",
        **blob,
        "diff_id": "sha256:" + hashlib.sha256(tar_bytes).hexdigest(),
        "tar_size": len(tar_bytes),
    }
    return write_image(out, [*image.layers, layer], "2024-01-01T00:00:00Z")
