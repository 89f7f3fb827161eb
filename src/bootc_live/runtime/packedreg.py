"""The packed root in a registry: an OCI artifact whose subject is the image's manifest.

`bootc-live push-packed` pushes it into the image's repository (docs/packed.md, "From a
registry"): an OCI image manifest with artifactType ARTIFACT_TYPE, the empty config, ONE layer
(the bare squashfs or EROFS image: its digest is the packed root's sha256) and `subject` the
image's manifest. The boot finds it by the referrers API (OCI 1.1) or, where the registry has
none (404), by the referrers tag schema: the tag `sha256-HEX` of the image's digest names an
index of the artifacts. The one taken is the one whose layer the pin names
(bootc.packed.sha256=, required: the artifact is not signed by the image, and anyone who can
push to the repository can add one about it); entries that are not ours, or malformed, are
passed over.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .blobs import Descriptor, VerifyingReader, short
from .errors import ImageError
from .packed import PackedError, StreamSource
from .registry import MANIFEST_LIMIT, RegistrySource, document

ARTIFACT_TYPE = "application/vnd.bootc-live.packed.v1"
LAYER_TYPE = "application/vnd.bootc-live.packed."  # + "squashfs" or "erofs"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"
MAX_CANDIDATES = 16  # artifact manifests fetched while looking for the pinned one
# Its layer's digest, on the artifact manifest, so on its entry in an index too (the referrers
# API copies a manifest's annotations; push-packed's tag index does): the pinned one is asked
# first, however many others were pushed, and push-packed replaces a re-pushed one.
PIN_ANNOTATION = "org.bootc-live.packed.sha256"
PUSH_HINT = "push one with bootc-live push-packed"


def fallback_tag(digest: str) -> str:
    """The referrers tag schema's tag for a subject: `sha256-HEX`."""
    algorithm, _, hex_ = digest.partition(":")
    return f"{algorithm}-{hex_}"


def candidates(index: bytes, what: str, log: Callable[[str], None]) -> list[Descriptor]:
    """The artifact manifests of ours an index lists, in its order; malformed entries are
    passed over (said in `log`): anyone who can push can add one."""
    manifests = document(index, what).get("manifests")
    if not isinstance(manifests, list):
        raise ImageError(f"{what} has no list of manifests")
    ours = []
    for i, entry in enumerate(manifests):
        if isinstance(entry, dict) and entry.get("artifactType") == ARTIFACT_TYPE:
            try:
                ours.append(Descriptor.from_json(entry, f"{what}, manifest {i}"))
            except ImageError as err:
                log(f"passed over: {err}")
    return ours


@dataclass(frozen=True)
class Artifact:
    """A packed root's artifact: its manifest's digest and its one layer."""

    manifest: str
    layer: Descriptor


def read_artifact(source: RegistrySource, desc: Descriptor, subject: str) -> Artifact:
    """The artifact manifest `desc` names, checked: ours, about `subject`, with one layer."""
    what = f"the packed root artifact {short(desc.digest)} of {source.description}"
    with source.open_blob(Descriptor(OCI_MANIFEST, desc.digest, desc.size)) as f:
        obj = document(f.read(MANIFEST_LIMIT + 1), what)
    layers = obj.get("layers")
    subject_of = obj.get("subject")
    if obj.get("artifactType") != ARTIFACT_TYPE:
        raise PackedError(f"{what} is not of artifactType {ARTIFACT_TYPE}", PUSH_HINT)
    if not isinstance(subject_of, dict) or subject_of.get("digest") != subject:
        raise PackedError(f"{what} is not about the image {subject} (its subject)", PUSH_HINT)
    if not isinstance(layers, list) or len(layers) != 1:
        raise PackedError(f"{what} has not exactly one layer", PUSH_HINT)
    layer = Descriptor.from_json(layers[0], f"{what}, its layer")
    if not layer.media_type.startswith(LAYER_TYPE):
        raise PackedError(
            f"{what}: its layer is a {layer.media_type or 'blob without a media type'}, not "
            f"a {LAYER_TYPE}squashfs or erofs",
            PUSH_HINT,
        )
    return Artifact(desc.digest, layer)


def find(source: RegistrySource, subject: str, pin: str, log: Callable[[str], None]) -> Artifact:
    """The packed root of the image `subject` in its repository: by the referrers API, else
    its tag fallback; the one whose layer is the pinned one."""
    while True:
        index = source.referrers(subject, ARTIFACT_TYPE)
        how = f"the referrers API of {source.endpoint.name}"
        if index is None:
            tag = fallback_tag(subject)
            tagged = source.tagged(tag)
            index = tagged[0] if tagged is not None else None
            how = f"the tag {tag} of {source.endpoint.name}"
        found = []
        if index is not None:
            found = candidates(index, f"{how} ({source.description})", log)
        if found:
            break
        empty = source.endpoint.name
        nxt = source.fall_back()
        if not nxt:
            raise PackedError(
                f"no packed root in the registry for the image {subject} (asked {how})",
                f"{PUSH_HINT} docker://{source.ref.registry}/{source.ref.repository} packed.img",
            )
        log(f"{empty} has no packed root of the image {subject}; asking {nxt}")
    # Those that say they are the pinned one first, then those that say nothing (pushed before
    # the annotation); those that say they are another are not asked. The annotation is not
    # signed: an entry that lies about itself can only hide itself, and the pin, checked on
    # the bytes, decides what boots.
    said = [desc.annotations.get(PIN_ANNOTATION) for desc in found]
    asked = [d for d, s in zip(found, said) if s == pin] + [d for d, s in zip(found, said) if not s]
    asked = asked[:MAX_CANDIDATES]
    pinned: list[Artifact] = []
    for desc in asked:
        try:
            artifact = read_artifact(source, desc, subject)
        except (PackedError, ImageError) as err:
            log(f"passed over: {err}")  # another's entry must not stop the boot
            continue
        if artifact.layer.digest == pin:
            pinned.append(artifact)
    sizes = sorted({artifact.layer.size for artifact in pinned})
    if len(sizes) > 1:  # one blob, several sizes: all but one lie, and which is not known here
        raise PackedError(
            f"the registry lists {len(pinned)} packed roots of the image {subject} whose layer "
            f"is the pinned {pin}, of different sizes ({', '.join(map(str, sizes))} bytes): "
            f"artifacts {', '.join(short(a.manifest) for a in pinned)}",
            "delete the artifacts not pushed by bootc-live push-packed from the pinned file",
        )
    if pinned:
        if len(found) > 1:
            log(f"{len(found)} packed roots for the image; taking {short(pinned[0].manifest)}")
        return pinned[0]
    examined = (
        f" ({len(asked)} examined: the others' annotations name other packed roots, or they "
        f"came past the first {MAX_CANDIDATES})"
        if len(asked) < len(found)
        else ""
    )
    raise PackedError(
        f"none of the {len(found)} packed roots of the image {subject} in the registry is the "
        f"one bootc.packed.sha256= pins ({pin}){examined}",
        f"{PUSH_HINT} of that build, or give the bootc.packed.sha256= it printed",
    )


def open_registry(
    source: RegistrySource, subject: str, pin: str, log: Callable[[str], None]
) -> StreamSource:
    """The packed root of the image `subject`: its artifact's layer, streamed and verified
    against the layer's digest as it comes (size and digest: a mismatch stops at its end)."""
    artifact = find(source, subject, pin, log)
    layer = artifact.layer
    raw = source.open_blob(layer)
    verifying = VerifyingReader(raw, layer, "the packed root layer")

    def read(n: int) -> bytes:
        data = verifying.read(n)
        if not data:
            verifying.finish()
        return data

    def close() -> None:
        raw.close()
        source.close()

    log(
        f"the packed root of {subject}: artifact {short(artifact.manifest)}, layer "
        f"{layer.digest} ({layer.size >> 20} MiB)"
    )
    try:
        stream = StreamSource(
            read, f"{source.description} (packed {short(layer.digest)})", layer.size, close
        )
    except BaseException:
        raw.close()
        raise
    return stream
