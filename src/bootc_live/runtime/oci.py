"""OCI image resolution: index.json → (nested) index → manifest → config, all verified."""

from __future__ import annotations

import platform as _platform
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from dataclasses import field as dataclass_field
from typing import Any, BinaryIO

from . import jsondoc
from .blobs import Descriptor, check_digest, digest_of, read_verified, short
from .errors import ImageError, MissingBlob, shown
from .sources import ImageSource

REF_NAME = "org.opencontainers.image.ref.name"
# The grammar of a REF_NAME (OCI image-spec, annotations), which umoci checks in a name it is
# asked for: components of letters and digits joined by - . _ : @ + or --, separated by /.
_COMPONENT = r"[A-Za-z0-9]+(?:(?:[-._:@+]|--)[A-Za-z0-9]+)*"
_REF_NAME_GRAMMAR = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")


def check_ref_name(name: str) -> str:
    """`name` if a reference name can be it (bootclabel=, SOURCE:TAG), else ValueError."""
    if not _REF_NAME_GRAMMAR.fullmatch(name):
        raise ValueError(
            "expected a reference name: letters and digits joined by - . _ : @ + or --, "
            "in components separated by /"
        )
    return name


DEFAULT_LABEL = "latest"
# The tags cosign and bootc-live give what is attached to an image (signatures, attestations,
# SBOMs) in a layout: sha256-HEX.sig … An index.json entry tagged so is never an image to boot.
_SIGNATURE_TAG = re.compile(r"sha256-[0-9a-f]{64}\.(?:sig|simplesig|att|sbom)")


def is_signature_tag(name: str) -> bool:
    """Whether a reference name (or its :TAG part) tags an attachment such as a signature."""
    return bool(_SIGNATURE_TAG.fullmatch(name) or _SIGNATURE_TAG.fullmatch(tag_part(name)))


INDEX_TYPES = {
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
}
MANIFEST_TYPES = {
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
}
SCHEMA1_TYPES = {
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
}
_MACHINE_TO_ARCH = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv7l": "arm",
    "armv6l": "arm",
    "armv8l": "arm",
    "loongarch64": "loong64",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
    "i686": "386",
    "i386": "386",
}


# An architecture's variants, from the most capable to the least: a machine of one runs images
# of the later ones (containers/image's table; other architectures' variants run only their own).
_VARIANT_ORDER = {
    "arm": ("v8", "v7", "v6", "v5"),
    "arm64": ("v8",),
    "amd64": ("v4", "v3", "v2", "v1"),  # x86-64's micro-architecture levels (containerd's)
}
# The /proc/cpuinfo flags each x86-64 level adds to the one before (the x86-64 psABI's levels;
# v1 is every x86-64 processor). A booting machine runs the images of its level and below.
_AMD64_LEVELS = (
    ("v2", frozenset({"cx16", "lahf_lm", "popcnt", "sse4_1", "sse4_2", "ssse3"})),
    ("v3", frozenset({"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"})),
    ("v4", frozenset({"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"})),
)
CPUINFO = "/proc/cpuinfo"
# The variant a machine (uname -m) is of, which containers/image reads from /proc/cpuinfo.
_MACHINE_VARIANT = {"aarch64": "v8", "arm64": "v8", "armv8l": "v8", "armv7l": "v7", "armv6l": "v6"}
# Names podman's --platform takes for an architecture (containerd's normalisation), with the
# variant each implies when none is written: `arm` alone is arm/v7.
_ARCH_ALIASES = {
    "x86_64": ("amd64", ""),
    "x86-64": ("amd64", ""),
    "aarch64": ("arm64", ""),
    "i386": ("386", ""),
    "armhf": ("arm", "v7"),
    "armel": ("arm", "v6"),
    "arm": ("arm", "v7"),
}


@dataclass(frozen=True)
class Platform:
    """An OCI platform: os/architecture[/variant]."""

    os: str
    architecture: str
    variant: str = ""
    # The booting machine's own (`machine`): a variant it lacks is its processor's limit.
    booting: bool = dataclass_field(default=False, compare=False)

    @classmethod
    def parse(cls, text: str) -> Platform:
        """OS/ARCH[/VARIANT], written as podman's --platform takes it: in any case, with the
        kernel's names for an architecture (x86_64, aarch64), a bare variant number (arm/7)."""
        parts = text.split("/")
        if not 2 <= len(parts) <= 3 or not all(parts):
            raise ValueError(f"platform {text!r} is not OS/ARCH[/VARIANT]")
        os_, arch, variant = (*(p.lower() for p in parts), "")[:3]
        arch, implied = _ARCH_ALIASES.get(arch, (arch, ""))
        if variant.isascii() and variant.isdigit() and arch in _VARIANT_ORDER:
            variant = f"v{variant}"
        return cls(os_, arch, variant or implied)

    @classmethod
    def host(cls) -> Platform:
        machine = _platform.machine()
        return cls(
            "linux", _MACHINE_TO_ARCH.get(machine, machine), _MACHINE_VARIANT.get(machine, "")
        )

    @classmethod
    def machine(cls) -> Platform:
        """The platform of the machine booting: `host`, and for amd64 the x86-64 level its
        processor has (an image for a higher one would stop at its first instruction)."""
        plat = cls.host()
        level = amd64_level() if plat.architecture == "amd64" else plat.variant
        return cls(plat.os, plat.architecture, level, booting=True)

    def variants(self) -> tuple[str, ...]:
        """The image variants this platform runs, preferred first, as containers/image ranks
        them: the one asked, then the later variants of its architecture, then none; none asked,
        none first, then every variant of the architecture, but for amd64 (an image for x86-64-v3
        is taken when the level is asked, or the booting machine's processor has it: `machine`)."""
        order = _VARIANT_ORDER.get(self.architecture, ())
        if not self.variant:
            return ("", "v1") if self.architecture == "amd64" else ("", *order)
        if self.variant in order:
            return (*order[order.index(self.variant) :], "")
        return (self.variant, "")

    def beyond(self, name: str) -> bool:
        """Whether the platform `name` is of the booting machine's architecture at a higher
        level than its processor's (amd64/v3 on x86-64-v2): no bootc.platform= can help."""
        if not self.booting:
            return False
        try:
            other = Platform.parse(name)
        except ValueError:
            return False
        order = _VARIANT_ORDER.get(self.architecture, ())
        same = (other.os, other.architecture) == (self.os, self.architecture)
        return (
            same
            and self.variant in order
            and other.variant in order
            and order.index(other.variant) < order.index(self.variant)
        )

    def rank(self, obj: Mapping[str, Any]) -> int | None:
        """Where a descriptor's (or a config's) platform comes in `variants` (lower is
        preferred), or None when this platform does not run it."""
        if obj.get("os") != self.os or obj.get("architecture") != self.architecture:
            return None
        variant = obj.get("variant") or ""
        wanted = self.variants()
        return wanted.index(variant) if isinstance(variant, str) and variant in wanted else None

    def matches(self, obj: Mapping[str, Any]) -> bool:
        """Whether this platform runs the image a descriptor's (or a config's) platform names."""
        return self.rank(obj) is not None

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


def amd64_level(cpuinfo: str | None = None) -> str:
    """The x86-64 level ("v1" to "v4") of this machine's processor, by the flags of its first
    processor in `cpuinfo` (CPUINFO); "" when they cannot be read."""
    try:
        with open(cpuinfo or CPUINFO, encoding="utf-8", errors="replace") as f:
            line = next((ln for ln in f if ln.startswith("flags")), "")
    except OSError:
        return ""
    flags = set(line.partition(":")[2].split())
    if not flags:
        return ""
    level = "v1"
    for name, needed in _AMD64_LEVELS:
        if not needed <= flags:
            break
        level = name
    return level


@dataclass(frozen=True)
class Image:
    """A resolved, verified image: the manifest's layers and the config's diff_ids."""

    source: ImageSource
    manifest: Descriptor
    config_descriptor: Descriptor
    config: Mapping[str, Any]
    layers: Sequence[Descriptor]
    diff_ids: Sequence[str]
    annotations: Mapping[str, str]
    index_annotations: Mapping[str, str]  # of the image's entry in index.json
    # The document index.json's entry names (the manifest, or an index above it): what the tag
    # or digest names, and what signatures sign.
    top: Descriptor
    # Indices of the layers whose blob digest, and whose diff_id, an earlier boot stage verified
    # (bootc.kexec's handover): not hashed again. Set by handover.trust_previous_stage() only.
    verified_blobs: frozenset[int] = frozenset()
    verified_diff_ids: frozenset[int] = frozenset()
    # What the signature check found ({"checked": bool, "scope": …, "keys": […]}), for the status
    # and the kexec handover (which passes it to the next stage, `handover.write_record`).
    signatures: Mapping[str, Any] = dataclass_field(default_factory=dict)

    @property
    def manifest_digest(self) -> str:
        return self.manifest.digest

    @property
    def config_digest(self) -> str:
        return self.config_descriptor.digest

    @property
    def compressed_size(self) -> int:
        """The layer blobs' size (compressed, unless they are plain tars: `blobs_are`)."""
        return sum(layer.size for layer in self.layers)

    @property
    def blobs_are(self) -> str:
        """What `compressed_size` measures, for messages: "compressed", "uncompressed" (every
        layer a plain tar) or "of blobs, some uncompressed"."""
        plain = {layer.plain_tar for layer in self.layers}
        if plain == {True}:
            return "uncompressed"
        return "of blobs, some uncompressed" if True in plain else "compressed"


def _parse_json(data: bytes, what: str) -> dict[str, Any]:
    try:
        obj = jsondoc.loads(data)
    except ValueError as err:
        raise ImageError(f"{what} is not valid JSON ({err})") from None
    if not isinstance(obj, dict):
        raise ImageError(f"{what} is not a JSON object")
    return obj


def _kind(media_type: str, obj: Mapping[str, Any], what: str) -> str:
    """'index' or 'manifest': what the descriptor's media type, the document's own `mediaType`
    and its fields (`manifests`; `layers`, `config`) say, which must not contradict each other.

    A document that reads as both (CVE-2021-41190: a manifest naming an index type or carrying
    `manifests`, an index carrying `layers` or `config`) is refused, as containerd and
    distribution refuse it since; without any media type the fields decide.
    """
    own = obj.get("mediaType", "")
    if not isinstance(own, str):
        raise ImageError(f"{what} has a mediaType that is not a string")
    if SCHEMA1_TYPES & {media_type, own} or obj.get("schemaVersion") == 1:
        raise ImageError(
            f"{what} is a Docker schema 1 manifest, which is not supported",
            "push the image again with a current tool (it then gets a schema 2 or OCI manifest)",
        )
    said: dict[str, str] = {}  # who says what it is
    for who, declared in (("its descriptor", media_type), ("its mediaType", own)):
        if declared in INDEX_TYPES:
            said[who] = "index"
        elif declared in MANIFEST_TYPES:
            said[who] = "manifest"
        elif declared:
            raise ImageError(f"{what} has unsupported media type {shown(repr(declared))}")
    if "manifests" in obj:
        said["its manifests field"] = "index"
    for field in ("layers", "config"):
        if field in obj:
            said[f"its {field} field"] = "manifest"
    kinds = set(said.values())
    if len(kinds) > 1:
        story = ", ".join(f"{who} says {kind}" for who, kind in said.items())
        raise ImageError(
            f"{what} is both an index and a manifest ({story})",
            "refusing an ambiguous document: rebuild the image with a current tool",
        )
    if not kinds:
        raise ImageError(f"{what} is neither an index nor a manifest (no media type)")
    return kinds.pop()


def _open_document(source: ImageSource, desc: Descriptor, what: str) -> BinaryIO:
    """The manifest or index an index entry names. One whose media type says it is neither (an
    artifact, schema 1) is refused before it is asked for; one without a media type is asked
    for as a document all the same (a registry serves them from /manifests/, not /blobs/, as
    containers/image asks for every entry of an index), and what it is its fields say."""
    if desc.media_type and desc.media_type not in INDEX_TYPES | MANIFEST_TYPES:
        _kind(desc.media_type, {}, what)  # raises, naming the media type
    if not desc.media_type:
        desc = replace(desc, media_type="application/vnd.oci.image.manifest.v1+json")
    return source.open_blob(desc)


def _descriptors(index: Mapping[str, Any], what: str) -> list[Descriptor]:
    manifests = index.get("manifests")
    if not isinstance(manifests, list):
        raise ImageError(f"{what} has no manifests list")
    return [Descriptor.from_json(m, f"{what} entry {i}") for i, m in enumerate(manifests)]


def _pick_label(descs: list[Descriptor], label: str | None, where: str) -> list[Descriptor]:
    names = sorted({d.annotations.get(REF_NAME, "") for d in descs} - {""})
    wanted = label if label is not None else DEFAULT_LABEL
    chosen = [d for d in descs if d.annotations.get(REF_NAME) == wanted]
    if not chosen and ":" not in wanted:
        # podman save names its image `localhost/name:TAG`: a bare TAG names it when no other
        # full name has that tag part (`latest` finds `localhost/name:latest`, if alone).
        tagged = [d for d in descs if tag_part(d.annotations.get(REF_NAME, "")) == wanted]
        full = sorted({d.annotations[REF_NAME] for d in tagged})
        if len(full) > 1:
            raise ImageError(
                f"{where} has {len(full)} images tagged {shown(repr(wanted))} under different "
                f"names ({shown(', '.join(full))})",
                "name one in full with bootclabel=NAME:TAG",
            )
        chosen = tagged
    if chosen:
        return chosen
    if label is None and len(descs) == 1:
        return descs  # a single image needs no name
    if not descs:
        raise ImageError(f"{where} holds no image")
    available = shown(", ".join(names)) if names else "none"
    if label is None:
        raise ImageError(
            f"{where} holds {len(descs)} images and none is tagged {DEFAULT_LABEL!r} "
            f"(tags: {available})",
            "name one with bootclabel=, or pick one by its digest with bootc.digest=",
        )
    raise ImageError(
        f"{where} has no image tagged {shown(repr(label))} (tags: {available})",
        "fix bootclabel=",
    )


def tag_part(name: str) -> str:
    """The tag of a full reference `host/path:tag` (empty when it has none)."""
    head, colon, tag = name.rpartition(":")
    return tag if colon and head and "/" not in tag else ""


def _platform_of(obj: Mapping[str, Any]) -> Platform:
    """A descriptor's platform, as written (for messages)."""
    os_, arch, variant = (
        obj.get(k) or d for k, d in (("os", "?"), ("architecture", "?"), ("variant", ""))
    )
    return Platform(shown(str(os_), 40), shown(str(arch), 40), shown(str(variant), 40))


# The annotation Docker's buildx gives an index entry that is an attestation about another
# entry's image (its platform is unknown/unknown): no platform an image can be picked for.
_REFERENCE_TYPE = "vnd.docker.reference.type"


def offered_platforms(descs: Sequence[Descriptor]) -> list[str]:
    """The platforms index entries name, as written, once each, in their order; attestations
    left out."""
    offered = [
        str(_platform_of(d.platform))
        for d in descs
        if d.platform and d.annotations.get(_REFERENCE_TYPE) != "attestation-manifest"
    ]
    return list(dict.fromkeys(offered))


def choosable_platform(descs: Sequence[Descriptor]) -> str | None:
    """The first platform of the entries that bootc.platform= can name so that it picks the
    entry (not one written Linux/AMD64, which reads as linux/amd64, nor ?/amd64)."""
    for name in offered_platforms(descs):
        try:
            plat = Platform.parse(name)
        except ValueError:
            continue
        if any(d.platform and plat.matches(d.platform) for d in descs):
            return name
    return None


def _rank_platforms(descs: list[Descriptor], plat: Platform, where: str) -> list[Descriptor]:
    """The entries whose image this platform runs, the one containers/image picks first: those
    of the most preferred platform (`Platform.rank`) in their order, and so on; those that name
    no platform last."""
    if len(descs) == 1 and descs[0].platform is None:
        return descs
    unnamed = len(plat.variants())  # after every platform this one runs
    ranked = []
    for position, desc in enumerate(descs):
        rank = unnamed if desc.platform is None else plat.rank(desc.platform)
        if rank is not None:
            ranked.append((rank, position, desc))
    if not ranked:
        offered = offered_platforms(descs)
        raise ImageError(
            f"{where} has no image for platform {plat} (offers: {', '.join(offered) or 'none'})",
            _choose_hint(plat, choosable_platform(descs)),
        )
    return [desc for _rank, _position, desc in sorted(ranked, key=lambda item: item[:2])]


def _choose_hint(plat: Platform, choosable: str | None) -> str:
    """The next step when nothing is for `plat`: the bootc.platform= that picks `choosable`,
    unless it is this machine's architecture at a level its processor lacks."""
    if choosable is not None and plat.beyond(choosable):
        return (
            f"the image needs a {choosable} processor, and this machine's is {plat}: boot it "
            f"on one that has it, or publish the image for {plat.os}/{plat.architecture} too"
        )
    return f"choose one with bootc.platform={choosable or 'OS/ARCH[/VARIANT]'}"


def _open_held(
    source: ImageSource, ranked: list[Descriptor], where: str
) -> tuple[Descriptor, BinaryIO]:
    """The first of `ranked` whose document is here, and the document: an index pulled for one
    platform holds one image of several this machine runs (arm64 and arm64/v8, arm/v7 and
    arm/v6), not necessarily the preferred one. MissingBlob (the first's) when none is."""
    missing: MissingBlob | None = None
    for desc in ranked:
        try:
            return desc, _open_document(source, desc, f"{where}: {short(desc.digest)}")
        except MissingBlob as err:
            missing = missing or err
    assert missing is not None  # `ranked` is never empty
    raise missing


def resolve(
    source: ImageSource,
    label: str | None = None,
    platform: Platform | None = None,
    digest: str | None = None,
    foreign: Callable[[str], None] | None = None,
) -> Image:
    """Find the image in `source` by label and platform, verifying every document on the way.
    An image of another platform than this machine's, when none was asked for, is refused, or
    told to `foreign` and taken (the host: `bootc-live build` for another machine)."""
    # At boot (no `foreign`), what this machine's processor runs; the host builds for others.
    plat = platform or (Platform.host() if foreign is not None else Platform.machine())
    if source.names_one_image:
        label = None  # a registry reference: bootclabel= (from cmdline.txt) is for layouts
    if digest is not None:
        check_digest(digest, "bootc.digest")
    where = source.description
    index = _parse_json(source.index_json(), f"{where}: index.json")
    _kind("application/vnd.oci.image.index.v1+json", index, f"{where}: index.json")
    entries = [
        d
        for d in _descriptors(index, f"{where}: index.json")
        if not is_signature_tag(d.annotations.get(REF_NAME, ""))
    ]
    if digest is not None and label is None:
        # No name asked for: the pinned digest picks among the index's entries, if one is it
        # (an untagged image of several; else it pins what the label and platform pick).
        entries = [d for d in entries if d.digest == digest][:1] or entries  # one, if tagged twice
    candidates = _pick_label(entries, label, where)
    ranked = _rank_platforms(candidates, plat, where)
    top: Descriptor | None = None  # the one picked from index.json
    seen: list[str] = []
    siblings: list[Descriptor] = []  # the index entries `ranked` was picked from
    for _depth in range(8):
        try:
            desc, raw = _open_held(source, ranked, where)
        except MissingBlob:
            if not siblings:
                raise
            raise _not_held(source, siblings, plat, where) from None
        top = top or desc
        seen.append(desc.digest)
        with raw:
            data = read_verified(raw, desc, "manifest")
        if digest is not None and not desc.digest.startswith(digest.partition(":")[0] + ":"):
            seen.append(digest_of(data, digest))  # a sha512 pin of a sha256-named document
        what = f"{where}: {short(desc.digest)}"
        obj = _parse_json(data, what)
        if _kind(desc.media_type, obj, what) == "manifest":
            break
        siblings = _descriptors(obj, what)
        ranked = _rank_platforms(siblings, plat, what)
    else:
        raise ImageError(f"{where}: indexes nested too deeply")
    if digest is not None and digest not in seen:
        raise ImageError(
            f"{where}: image digest is {seen[-1]}, not the pinned {digest}",
            "the image changed: update bootc.digest= or rebuild the boot entry",
        )
    assert top is not None  # set by the first document read
    image = _image_from_manifest(source, desc, obj, what, top)
    if desc.platform is None:  # no descriptor said: the config says (podman save writes none)
        _check_config_platform(image.config, plat, what, None if platform else foreign)
    return image


def _not_held(
    source: ImageSource, entries: list[Descriptor], plat: Platform, where: str
) -> ImageError:
    """The platform's image of an index that is here only in part (pulled with --platform):
    which platforms' images are here."""
    held = []
    for entry in entries:
        try:
            _open_document(source, entry, f"{where}: {short(entry.digest)}").close()
        except ImageError:  # not here (MissingBlob), or no image's (an artifact's)
            continue
        held.append(entry)
    offered = offered_platforms(held)
    return ImageError(
        f"{where} holds its index only in part: not its image for {plat} (it holds "
        f"{', '.join(offered) or 'none'})",
        _choose_hint(plat, choosable_platform(held)),
    )


def _check_config_platform(
    config: Mapping[str, Any],
    plat: Platform,
    what: str,
    foreign: Callable[[str], None] | None,
) -> None:
    """An image whose index entry names no platform is still of one: its config's (when it
    says one: go-containerregistry writes empty fields). Not the one asked for: refused; not
    this machine's, none asked: `foreign` is told (the host builds for other machines), else
    refused (at boot it would not run), unless this machine's architecture has no OCI name."""
    os_, arch = config.get("os"), config.get("architecture")
    if not (isinstance(os_, str) and isinstance(arch, str) and os_ and arch):
        return
    if plat.matches(config):
        return
    variant = config.get("variant")
    its = shown(str(Platform(os_, arch, variant if isinstance(variant, str) else "")))
    if foreign is not None:
        foreign(f"{what} is an image for {its} (its config), not for this machine ({plat})")
        return
    if plat.architecture not in _MACHINE_TO_ARCH.values():
        return  # this machine's own name for its architecture: nothing to compare with
    raise ImageError(
        f"{what} is an image for {its} (its config), not for {plat}",
        _choose_hint(plat, its).replace("choose one", "choose it"),
    )


def all_manifests(source: ImageSource, top: Descriptor, limit: int = 1000) -> list[Descriptor]:
    """Every image manifest descriptor `top` reaches (an index.json entry: a resolved image's
    `top`), nested indexes followed once each (a document named twice is read once; at most
    `limit` documents)."""
    where = source.description
    todo = [top]
    seen: set[str] = set()
    found = []
    while todo:
        desc = todo.pop(0)
        if desc.digest in seen:
            continue
        seen.add(desc.digest)
        if len(seen) > limit:
            raise ImageError(f"{where}: its indexes name more than {limit} documents")
        with _open_document(source, desc, f"{where}: {short(desc.digest)}") as raw:
            obj = _parse_json(
                read_verified(raw, desc, "manifest"), f"{where}: {short(desc.digest)}"
            )
        if _kind(desc.media_type, obj, where) == "index":
            todo += _descriptors(obj, where)
        else:
            found.append(desc)
    return found


def _check_layer_type(media_type: str, what: str) -> None:
    """A layer this unpacks: a tar, compressed or not (by its media type, OCI's or Docker's);
    an encrypted one (ocicrypt) or an artifact's blob is named, not read as a corrupt tar."""
    if media_type.endswith("+encrypted"):
        raise ImageError(
            f"{what} is encrypted ({shown(media_type)})",
            "decrypt the image first: skopeo copy --decryption-key KEY SOURCE oci-archive:FILE",
        )
    if media_type and ".tar" not in media_type:
        raise ImageError(
            f"{what} is no filesystem layer: its media type is {shown(media_type)}",
            "give the image, not an artifact about it",
        )


def _image_from_manifest(
    source: ImageSource,
    desc: Descriptor,
    manifest: Mapping[str, Any],
    what: str,
    top: Descriptor,
) -> Image:
    config_desc = Descriptor.from_json(manifest.get("config"), f"{what} config")
    layer_objs = manifest.get("layers")
    if not isinstance(layer_objs, list):
        raise ImageError(f"{what}: manifest has no layers list")
    layers = [
        Descriptor.from_json(obj, f"{what} layer {i + 1}") for i, obj in enumerate(layer_objs)
    ]
    for i, layer in enumerate(layers):
        _check_layer_type(layer.media_type, f"{what} layer {i + 1}/{len(layers)}")
    with source.open_blob(config_desc) as raw:
        config = _parse_json(read_verified(raw, config_desc, "config"), f"{what} config")
    rootfs = config.get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list):
        raise ImageError(f"{what}: config has no rootfs.diff_ids")
    if len(diff_ids) != len(layers):
        raise ImageError(f"{what}: config lists {len(diff_ids)} diff_ids for {len(layers)} layers")
    for i, diff_id in enumerate(diff_ids):
        check_digest(diff_id, f"{what} diff_id {i + 1}")
    annotations = manifest.get("annotations") or {}
    return Image(
        source=source,
        manifest=desc,
        config_descriptor=config_desc,
        config=config,
        layers=tuple(layers),
        diff_ids=tuple(diff_ids),
        annotations=annotations if isinstance(annotations, dict) else {},
        index_annotations=top.annotations,
        top=top,
    )
