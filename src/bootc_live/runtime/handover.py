"""The split layout: an image as a cpio archive holding an OCI layout, one member per blob.

`bootc-live build` writes it as rootfs.img (an initrd appended to initrd.img); bootc.kexec
writes it for the next stage, so that the image is neither fetched nor stored twice. Blobs are
verified as they are copied; the offsets of their data in the archive are returned, so the
archive itself can serve as an image source (`SplitLayoutSource`).

bootc.kexec also appends a record of what it verified (`write_record`) and puts the record's
digest on the next command line, so that the next stage does not hash those blobs again
(`trust_previous_stage`). A record counts only with that digest: the command line comes from
stage one, whereas an initrd such as rootfs.img is stored and transferred, and anyone who can
change it could add a record too. (Such a person could as well replace the policy, which is a
file of the initramfs: every initrd of a boot is as trusted as initrd.img; docs/signatures.md.)
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from typing import Any, BinaryIO, Callable

from .blobs import Descriptor, VerifyingReader
from .cpio import MAX_MEMBER, CpioWriter
from .errors import ImageError, MissingBlob
from .memory import (
    PACKED_ANNOTATIONS,
    SIZES_ANNOTATION,
    TMPFS_ANNOTATION,
    ZRAM_ANNOTATION,
)
from .oci import REF_NAME, Image
from .sources import _Slice, blob_path, open_parts, read_file

IMAGE_DIR = "bootc-live/image"  # where the split layout puts the image inside the initramfs
RECORD = "bootc-live/verified.json"  # beside a kexec handover: what stage one verified
RECORD_LIMIT = 1 << 20
PART_SIZE = 2 << 30  # blobs larger than a cpio member allows are stored in parts of this size
OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'


def kernel_arguments(label: str) -> str:
    """The command line that boots the image of a split layout in the initramfs."""
    return f"root=bootc-live:/{IMAGE_DIR} bootclabel={label}"


def index_json(
    image: Image,
    label: str,
    sizes: list[int] | None,
    zram: int | None = None,
    top: Descriptor | None = None,
    carried: Sequence[Mapping[str, Any]] = (),
    packed: Mapping[str, str] | None = None,
    tmpfs: int | None = None,
) -> bytes:
    """The index.json of our layouts: the one image, tagged, with its layers' unpacked sizes,
    what its files take in zram (zramsize) and in a tmpfs (footprint), its `packed` root's
    figures (the memory.PACKED_ANNOTATIONS) when they are known, else what the image's own
    index recorded, if anything. The entry names `top` when given (the document a reference
    named, which signatures sign: an index for a multi-platform tag), else the manifest;
    `carried` entries follow it (signatures, docs/signatures.md)."""
    annotations = {REF_NAME: label}
    known = {
        SIZES_ANNOTATION: None if sizes is None else ",".join(map(str, sizes)),
        ZRAM_ANNOTATION: None if zram is None else str(zram),
        TMPFS_ANNOTATION: None if tmpfs is None else str(tmpfs),
        **{key: (packed or {}).get(key) for key in PACKED_ANNOTATIONS},
    }
    for key, value in known.items():
        value = value if value is not None else image.index_annotations.get(key)
        if value is not None:
            annotations[key] = value
    named = top or image.manifest
    descriptor = {
        "mediaType": named.media_type or "application/vnd.oci.image.manifest.v1+json",
        "digest": named.digest,
        "size": named.size,
        "annotations": annotations,
    }
    if named.platform:
        descriptor["platform"] = dict(named.platform)
    manifests = [descriptor, *carried]
    return json.dumps({"schemaVersion": 2, "manifests": manifests}, indent=1).encode()


def blobs_of(image: Image) -> list[Descriptor]:
    """The image's blobs, each once: manifest, config, layers."""
    seen: dict[str, Descriptor] = {}
    for desc in (image.manifest, image.config_descriptor, *image.layers):
        seen.setdefault(desc.digest, desc)
    return list(seen.values())


def extra_blobs(image: Image, documents: Sequence[bytes]) -> dict[str, bytes]:
    """Small blobs held in memory (a top index, carried signatures) by their sha256 digest,
    those that are not already among the image's blobs."""
    known = {desc.digest for desc in blobs_of(image)}
    found = {"sha256:" + hashlib.sha256(data).hexdigest(): data for data in documents}
    return {digest: data for digest, data in found.items() if digest not in known}


@contextmanager
def verified(image: Image, desc: Descriptor) -> Iterator[VerifyingReader]:
    """The blob's bytes; at the end of the block its digest and size are checked."""
    with image.source.open_blob(desc) as raw:
        reader = VerifyingReader(raw, desc, "blob")
        yield reader
        reader.finish()


Extents = dict[str, list[tuple[int, int]]]  # blob digest → (offset, size) of each part's data


def write_split_layout(
    image: Image, index: bytes, out: BinaryIO, documents: Sequence[bytes] = ()
) -> Extents:
    """Write the split layout to `out` (seekable), `documents` (extra_blobs) too; return where
    each blob's data lies."""
    cpio = CpioWriter(out)
    parts = IMAGE_DIR.split("/")
    for i in range(len(parts)):
        cpio.add_dir("/".join(parts[: i + 1]))
    # The kernel makes no parent directory for a member: one for each digest algorithm.
    algorithms = sorted({"sha256", *(desc.digest.partition(":")[0] for desc in blobs_of(image))})
    for sub in ("blobs", *(f"blobs/{algorithm}" for algorithm in algorithms)):
        cpio.add_dir(f"{IMAGE_DIR}/{sub}")
    cpio.add_bytes(f"{IMAGE_DIR}/oci-layout", OCI_LAYOUT)
    cpio.add_bytes(f"{IMAGE_DIR}/index.json", index)
    extents: Extents = {}
    for desc in blobs_of(image):
        name = f"{IMAGE_DIR}/{blob_path(desc.digest)}"
        where = extents.setdefault(desc.digest, [])
        with verified(image, desc) as reader:
            if desc.size <= MAX_MEMBER:
                where.append((cpio.add_file(name, reader, desc.size), desc.size))  # type: ignore[arg-type]
                continue
            for part, offset in enumerate(range(0, desc.size, PART_SIZE)):
                size = min(PART_SIZE, desc.size - offset)
                where.append((cpio.add_file(f"{name}.{part}", reader, size), size))  # type: ignore[arg-type]
    for digest, data in extra_blobs(image, documents).items():
        name = f"{IMAGE_DIR}/{blob_path(digest)}"
        extents[digest] = [(cpio.add_file(name, io.BytesIO(data), len(data)), len(data))]
    cpio.close()
    return extents


def write_record(image: Image, layers_read: int, out: BinaryIO) -> str:
    """Append to `out`, as a cpio archive of its own, the record of what this stage verified:
    every blob of the manifest (write_split_layout checked them all) and the diff_ids of the top
    `layers_read` layers (read through to their end), and the signature check's verdict.
    Returns the record's digest, which the next command line carries (bootc.kexec.verified=)."""
    data = json.dumps(
        {
            "manifest": image.manifest_digest,
            "layers_read": layers_read,
            "signatures": dict(image.signatures),
        }
    ).encode()
    cpio = CpioWriter(out)
    cpio.add_bytes(RECORD, data)
    cpio.close()
    return "sha256:" + hashlib.sha256(data).hexdigest()


def trust_previous_stage(
    image: Image, layout: str, expected: str, say: Callable[[str], None], root: str = "/"
) -> Image:
    """`image` with what the previous stage verified marked so, when all of these hold: root=
    names the handover at its place in the initramfs; the record beside it has the digest
    `expected` from the command line (which stage one wrote: an appended initrd cannot change
    it); and the record names this very manifest, whose digest resolve() has just checked (it
    fixes every layer digest and, through the config, every diff_id); its signature verdict
    is the previous stage's. Otherwise `image` unchanged: everything is verified here, as
    usual."""
    data = b""
    if os.path.normpath(layout) == os.path.join(root, IMAGE_DIR):
        # Not a regular file (a FIFO would wait for ever), too large, missing: no record.
        with contextlib.suppress(OSError, ImageError):
            data = read_file(os.path.join(root, RECORD), "the kexec record", RECORD_LIMIT)
    matches = data and "sha256:" + hashlib.sha256(data).hexdigest() == expected
    record = json.loads(data) if matches else {}  # stage one wrote it: valid JSON
    if record.get("manifest") != image.manifest_digest:
        say(f"bootc.kexec.verified={expected} matches no record of this image: verifying all")
        return image
    layers = len(image.layers)
    read = range(layers - record["layers_read"], layers)
    say(
        f"kexec handover: {layers} layer digests and {len(read)} diff_ids were verified by the "
        "previous stage, not computed again"
    )
    return replace(
        image,
        verified_blobs=frozenset(range(layers)),
        verified_diff_ids=frozenset(read),
        signatures=record.get("signatures") or {},
    )


class SplitLayoutSource:
    """An image source over a split layout just written to `path` (an ImageSource)."""

    names_one_image = False

    def __init__(self, path: str, index: bytes, extents: Extents) -> None:
        self.path = path
        self.description = f"split layout {path}"
        self._index = index
        self._extents = extents

    def index_json(self) -> bytes:
        return self._index

    def open_blob(self, desc: Descriptor) -> BinaryIO:
        if desc.digest not in self._extents:
            raise MissingBlob(self.description, desc.digest)
        return open_parts(partial(_Slice, self.path, o, s) for o, s in self._extents[desc.digest])

    def tail(self, desc: Descriptor, n: int) -> bytes:
        return b""  # the next stage reads the handover: this one only reads its top layers

    def prefetch(self, layers: Sequence[Descriptor]) -> None:
        pass  # a local file: nothing to gain

    def release(self, desc: Descriptor) -> None:
        pass

    def close(self) -> None:
        pass
