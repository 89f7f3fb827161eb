"""Signatures carried in the layouts and archives the host writes (docs/signatures.md, "Carried
signatures"): sigstore attachments as cosign keeps them in a layout (an index.json entry tagged
sha256-HEX.sig), simple signatures as the files of a lookaside store (tagged sha256-HEX.simplesig),
both beside the document they sign, which the layout keeps (an index too)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from .layout import MEDIA_CONFIG, MEDIA_MANIFEST, canonical_json
from .runtime import signatures, trust
from .runtime.blobs import Descriptor, digest_of, read_verified
from .runtime.errors import ImageError
from .runtime.oci import INDEX_TYPES, REF_NAME, Image

EMPTY_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY = b"{}"


def entries(image: Image, found: Sequence[trust.Found]) -> tuple[list[dict[str, Any]], list[bytes]]:
    """The index.json entries of the signatures `found` (for the image's top document, and for
    its platform's manifest under an index), and the blobs they and the documents from the top
    one down to the image's manifest need."""
    documents = documents_between(image)
    index: list[dict[str, Any]] = []
    for signed in trust.signed_documents(image):
        here = [f for f in found if (f.signs or image.top.digest) == signed.digest]
        attached = [f for f in here if f.signature.kind == signatures.SIGSTORE and f.annotations]
        stored = [f for f in here if f not in attached and f.signature.kind != signatures.OTHER]
        for suffix, group in ((trust.SIGSTORE_SUFFIX, attached), (trust.SIMPLE_SUFFIX, stored)):
            if not group:
                continue
            manifest, blobs = _signature_manifest(group, suffix == trust.SIGSTORE_SUFFIX)
            documents += [*blobs, manifest]
            index.append(
                {
                    "mediaType": MEDIA_MANIFEST,
                    "digest": digest_of(manifest, "sha256:"),
                    "size": len(manifest),
                    "annotations": {REF_NAME: trust.signature_tag(signed.digest, suffix)},
                }
            )
    return index, documents


def _signature_manifest(group: Sequence[trust.Found], sigstore: bool) -> tuple[bytes, list[bytes]]:
    """A signature manifest holding each signature of `group` as a layer, and its blobs."""
    layers = []
    for found in group:
        layer: dict[str, Any] = {
            "mediaType": signatures.SIGSTORE_MEDIA_TYPE if sigstore else trust.SIMPLE_MEDIA_TYPE,
            "digest": digest_of(found.stored, "sha256:"),
            "size": len(found.stored),
        }
        if sigstore:
            layer["annotations"] = dict(found.annotations)
        layers.append(layer)
    blobs = [found.stored for found in group]
    manifest: dict[str, Any] = {"schemaVersion": 2, "mediaType": MEDIA_MANIFEST, "layers": layers}
    if sigstore:  # what cosign writes: a config naming the layers
        rootfs = {"type": "layers", "diff_ids": [layer["digest"] for layer in layers]}
        config = canonical_json({"architecture": "", "os": "", "config": {}, "rootfs": rootfs})
        config_type = MEDIA_CONFIG
    else:
        config, config_type = EMPTY, EMPTY_MEDIA_TYPE
        manifest["artifactType"] = trust.SIMPLE_MEDIA_TYPE
    digest = digest_of(config, "sha256:")
    manifest["config"] = {"mediaType": config_type, "digest": digest, "size": len(config)}
    return canonical_json(manifest), [config, *blobs]


def documents_between(image: Image, depth: int = 8) -> list[bytes]:
    """The documents from the top one (included) down to the image's manifest (excluded): the
    indexes a multi-platform reference names, which a layout keeps for its signatures."""
    if image.top.digest == image.manifest_digest:
        return []
    path = _path(image, image.top, depth)
    if path is None:
        raise ImageError(
            f"{image.source.description}: {image.top.digest} does not lead to the image"
        )
    return path


def _path(image: Image, desc: Descriptor, depth: int) -> list[bytes] | None:
    if depth == 0:
        return None
    with image.source.open_blob(desc) as raw:
        data = read_verified(raw, desc, "index")
    listed = json.loads(data).get("manifests") or []
    for entry in listed:
        child = Descriptor.from_json(entry, desc.digest)
        if child.digest == image.manifest_digest:
            return [data]
        if child.media_type in INDEX_TYPES:
            below = _path(image, child, depth - 1)
            if below is not None:
                return [data, *below]
    return None
