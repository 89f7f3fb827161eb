"""An image's signatures, gathered where containers users keep them, and the policy's verdict.

What is signed is the top document: what the reference or the index.json entry names (an index
for a multi-platform tag, else the manifest); under an index, the platform's manifest may be
signed instead (as podman and skopeo check it, and bootc's image proxy accepts either): the
image is accepted when either one's signatures satisfy the policy. Signatures are looked for
- in a registry's lookaside store (registries.d's `lookaside`, http(s) or file URL):
  NAME@sha256=HEX/signature-1, -2 … until the first that does not exist;
- among a registry's sigstore attachments (registries.d's `use-sigstore-attachments`): the
  manifest tagged sha256-HEX.sig, one signature per layer;
- carried in a layout or oci-archive (docs/signatures.md): index.json entries tagged
  sha256-HEX.sig (cosign's signature manifest) or sha256-HEX.simplesig (one layer per
  signature-N file of a lookaside store).
Nothing found is trusted before `policy.evaluate` has had a signature verified: sizes and counts
are bounded, every blob is read against its digest.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace

from . import http, jsondoc, policy, signatures, strictjson
from .blobs import Descriptor, check_digest, read_verified
from .errors import BootcLiveError, ImageError, shown
from .oci import REF_NAME, Image, tag_part
from .oci import is_signature_tag as is_signature_tag  # the contract's name for it
from .registriesd import RegistriesD, signature_urls
from .registry import RegistrySource
from .signatures import Signature, SignatureError
from .sources import ImageSource, open_file

SIGSTORE_SUFFIX = ".sig"  # cosign's signature manifest
SIMPLE_SUFFIX = ".simplesig"  # simple-signing signatures carried in a layout
SIMPLE_MEDIA_TYPE = "application/vnd.bootc-live.simple-signing.v1"
SIGNATURE_LIMIT = 1 << 20  # bytes of one stored signature: a signature-N file, a layer
MANIFEST_LIMIT = 1 << 20  # bytes of a signature manifest
MAX_SIGNATURES = 32  # read for one image, from all its stores together
SIGNATURES_LIMIT = 4 << 20  # bytes of all signatures and signature manifests read for one image
UNREADABLE = "signature store unreadable"  # a verdict's reason: see boot.check_signatures
IDENTITY_HINT = (
    "the image has no registry name to check the signed identity against: give it with "
    "bootc.identity=REF"
)


class TrustError(BootcLiveError):
    """A signature store cannot be read, or holds more than is plausible."""


class Budget:
    """What one image's signatures may take, across all its stores: MAX_SIGNATURES signatures,
    SIGNATURES_LIMIT bytes. Every signature is verified with a tool: this bounds that work."""

    def __init__(self) -> None:
        self.count = 0
        self.bytes = 0

    def spend(self, size: int, where: str) -> None:
        """`size` bytes more are read (a signature, a signature manifest)."""
        self.bytes += size
        if self.bytes > SIGNATURES_LIMIT:
            raise TrustError(
                f"{where}: the image's signatures take more than {SIGNATURES_LIMIT} bytes in all"
            )

    def left(self) -> int:
        """How many more signatures may be read."""
        return MAX_SIGNATURES - self.count


@dataclass(frozen=True)
class Found:
    """One candidate signature and where it was."""

    signature: Signature
    origin: str  # for messages: "lookaside https://…/signature-1", "attachment … layer 1"
    stored: bytes  # as stored: a lookaside signature-N file; a sigstore layer's blob
    annotations: Mapping[str, str]  # a sigstore layer's annotations ({} for simple signing)
    signs: str = ""  # the digest of the document it was found for (signed_documents)


def signature_tag(digest: str, suffix: str) -> str:
    """The tag signatures of the document `digest` are kept under: sha256-HEX.sig …"""
    algorithm, _, hex_value = digest.partition(":")
    return f"{algorithm}-{hex_value}{suffix}"


def signed_documents(image: Image) -> list[Descriptor]:
    """The documents whose signatures count for the image: the top one, then (under an index)
    the platform's manifest."""
    return [image.top] + ([image.manifest] if image.manifest.digest != image.top.digest else [])


def gather(
    source: ImageSource,
    image: Image,
    registries: RegistriesD | None,
    fetch_policy: http.Policy,
    say: Callable[[str], None],
    kinds: Collection[str] | None = None,
) -> list[Found]:
    """Every candidate signature of the image: carried in the source; from a registry, in its
    lookaside and (when registries.d says so) its sigstore attachments. `registries` None is
    an empty registries.d: containers' built-in lookaside only. `kinds` (SIMPLE, SIGSTORE):
    only signatures that may be of these kinds; one that cannot be read and is of another
    kind (or of no known kind) is passed over. Identical signatures are kept once."""
    budget = Budget()
    found: list[Found] = []
    for document in signed_documents(image):
        digest = document.digest
        here = carried(source, digest, budget, kinds)
        if isinstance(source, RegistrySource):
            ref = docker_reference(source)
            config = registries if registries is not None else RegistriesD({})
            # The CA trusted for the registry (bootc-live's --ca, a CA in the initramfs) is
            # trusted for its lookaside too: a signature is verified whatever the transport was.
            cafile = source.endpoint.cafile
            base = config.lookaside(ref)
            here += lookaside(base, digest, fetch_policy, say, cafile, budget=budget, kinds=kinds)
            if config.use_sigstore_attachments(ref) and _wanted(kinds, signatures.SIGSTORE):
                here += attachments(source, digest, budget)
        found += [replace(one, signs=digest) for one in here]
    unique: dict[Signature, Found] = {}
    for one in found:
        unique.setdefault(one.signature, one)
    return list(unique.values())


def _wanted(kinds: Collection[str] | None, kind: str) -> bool:
    return kinds is None or kind in kinds


def check(
    rules: policy.Policy,
    transport: str,
    name: str,
    source: ImageSource,
    image: Image,
    registries: RegistriesD | None,
    fetch_policy: http.Policy,
    say: Callable[[str], None],
    found: Sequence[Found] | None = None,
) -> policy.Verdict:
    """The policy's verdict on the image, named `name` in `transport` (docker: a reference;
    "" when it has none: then only the policy's default applies). PolicyError when the policy
    does not accept it. Signatures are gathered only when a requirement needs them, unless
    the caller has gathered them already (`found`)."""
    label = policy.image_name(transport, name) if name else source.description
    if not name:  # no Docker identity: evaluated as containers evaluate a docker-archive
        rules, transport = replace(rules, transports={}), "docker-archive"
    _, requirements = rules.requirements_for(transport, name)
    kinds = {req.kind for req in requirements if req.kind}
    if found is None:
        found = gather(source, image, registries, fetch_policy, say, kinds) if kinds else []
    refusals: list[policy.PolicyError] = []
    top = b""
    for desc in signed_documents(image) if kinds else [image.top]:
        with source.open_blob(desc) as raw:
            document = read_verified(raw, desc, "manifest")
        top = top or document  # what a digest in `name` pins: the top document
        mine = [f.signature for f in found if f.signs in ("", desc.digest)]
        try:
            return policy.evaluate(rules, transport, name, document, mine, label, named=top)
        except policy.PolicyError as err:
            refusals.append(err)
    # The top document's refusal, unless only the platform's manifest had signatures.
    refused = refusals[0]
    if refused.reason == policy.NO_SIGNATURE and len(refusals) > 1:
        refused = refusals[1]
    if name or refused.reason != policy.IDENTITY_MISMATCH:
        raise refused
    raise policy.PolicyError(str(refused), refused.reason, IDENTITY_HINT) from None


def docker_reference(source: RegistrySource) -> policy.DockerReference:
    """The name a registry image's signatures are kept by: by its digest when pinned, else by
    its tag."""
    ref = source.ref
    pin = f"@{ref.digest}" if ref.digest else f":{ref.tag or 'latest'}"
    name = f"{ref.registry}/{ref.repository}{pin}"
    try:
        return policy.DockerReference.parse(name)
    except ValueError as err:  # what the registry client took, the policy's grammar did not
        raise policy.PolicyError(
            f"{shown(name)}: not a name the signature policy can take ({err})",
            policy.BAD_REFERENCE,
            "name the registry by a DNS name, an IPv4 address or a plain IPv6 address in [ ]",
        ) from None


def policy_name(source: RegistrySource) -> str:
    """The policy's name of a registry image (docker_reference). A reference with both a tag
    and a digest has none (containers/image refuses it: which of the tag's scope and the
    digest's applies is unclear), as on the host (policy.docker_namespaces): dropping the tag
    would pass over a scope the policy has for REPO:TAG."""
    ref = source.ref
    if ref.tag is not None and ref.digest is not None:
        raise policy.PolicyError(
            f"docker://{shown(str(ref))}: a reference with both a tag and a digest has no "
            "policy identity",
            policy.BAD_REFERENCE,
            "name the image by its digest alone",
        )
    return str(docker_reference(source))


# Carried in a layout or archive.


def carried(
    source: ImageSource,
    digest: str,
    budget: Budget | None = None,
    kinds: Collection[str] | None = None,
) -> list[Found]:
    """The signatures index.json's entries tagged sha256-HEX.sig and .simplesig hold: one
    entry each at most."""
    budget = budget or Budget()
    wanted = {signature_tag(digest, SIMPLE_SUFFIX): SIMPLE_SUFFIX}
    if _wanted(kinds, signatures.SIGSTORE):
        wanted[signature_tag(digest, SIGSTORE_SUFFIX)] = SIGSTORE_SUFFIX
    seen: dict[str, int] = {}
    try:
        entries = jsondoc.loads(source.index_json())["manifests"]
    except (ValueError, KeyError, TypeError):
        return []  # resolve() has read it: not a list of entries here means none is ours
    found: list[Found] = []
    for i, obj in enumerate(entries if isinstance(entries, list) else []):
        desc = Descriptor.from_json(obj, f"{source.description}: index.json entry {i}")
        name = desc.annotations.get(REF_NAME, "")
        tag = name if name in wanted else tag_part(name)
        if tag not in wanted:
            continue
        if tag in seen:
            raise TrustError(
                f"{source.description}: index.json entries {seen[tag]} and {i} are both tagged "
                f"{tag}: a layout carries one signature manifest per tag (remove one)"
            )
        seen[tag] = i
        origin = f"{source.description} {tag}"
        manifest = _read(source, desc, MANIFEST_LIMIT, origin, budget)
        if wanted[tag] == SIGSTORE_SUFFIX:
            found += _sigstore(source, manifest, origin, budget)
        else:
            found += _simple(source, manifest, origin, budget, kinds)
    return found


def _simple(
    source: ImageSource,
    manifest: bytes,
    origin: str,
    budget: Budget,
    kinds: Collection[str] | None,
) -> list[Found]:
    """The signature-N files a .simplesig manifest's layers hold, in order."""
    found = []
    blobs: dict[str, bytes] = {}
    for i, desc in enumerate(_layers(manifest, origin, budget)):
        if desc.media_type != SIMPLE_MEDIA_TYPE:
            continue  # not a signature: it cannot satisfy a requirement
        where = f"{origin} layer {i + 1}"
        if desc.digest not in blobs:
            blobs[desc.digest] = _read(source, desc, SIGNATURE_LIMIT, where, budget)
        blob = blobs[desc.digest]
        sig = _from_blob(blob, where, kinds)
        if sig is not None:
            found.append(Found(sig, where, blob, {}))
    return found


def _sigstore(source: ImageSource, manifest: bytes, origin: str, budget: Budget) -> list[Found]:
    """The signatures of a cosign signature manifest, one per layer."""
    layers = _layers(manifest, origin, budget)
    read: dict[str, bytes] = {}
    for i, desc in enumerate(layers):
        if desc.digest not in read:
            read[desc.digest] = _read(
                source, desc, SIGNATURE_LIMIT, f"{origin} layer {i + 1}", budget
            )
    blobs = [read[desc.digest] for desc in layers]
    by_digest = {desc.digest: blob for desc, blob in zip(layers, blobs)}
    try:
        sigs = signatures.from_signature_manifest(manifest, lambda d, _n: by_digest[d])
    except SignatureError as err:
        raise SignatureError(f"{origin}: {err}", err.reason) from None
    return [
        Found(sig, f"{origin} layer {i + 1}", blob, dict(desc.annotations))
        for i, (sig, desc, blob) in enumerate(zip(sigs, layers, blobs))
    ]


def _layers(manifest: bytes, origin: str, budget: Budget) -> list[Descriptor]:
    """A signature manifest's layer descriptors, at most what the budget has left."""
    try:
        layers = strictjson.loads(manifest, MANIFEST_LIMIT)["layers"]
        if not isinstance(layers, list):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise SignatureError(
            f"{origin}: a malformed signature manifest", signatures.INVALID_SIGNATURE
        ) from None
    if len(layers) > budget.left():
        more = f", more than {MAX_SIGNATURES}"
        if budget.count:
            more += f" with the {budget.count} of the image's other stores"
        raise TrustError(f"{origin}: {len(layers)} signatures{more}")
    budget.count += len(layers)
    try:
        return [
            Descriptor.from_json(obj, f"{origin} layer {i + 1}") for i, obj in enumerate(layers)
        ]
    except ImageError:  # an annotation that is no string, say
        raise SignatureError(
            f"{origin}: a malformed signature manifest", signatures.INVALID_SIGNATURE
        ) from None


def _read(source: ImageSource, desc: Descriptor, limit: int, where: str, budget: Budget) -> bytes:
    """A small blob of the source, verified against its descriptor."""
    check_digest(desc.digest, where)
    if desc.size > limit:
        raise TrustError(f"{where}: {desc.size} bytes, more than a signature takes ({limit})")
    budget.spend(desc.size, where)
    with source.open_blob(desc) as raw:
        return read_verified(raw, desc, where, limit)


def _from_blob(blob: bytes, where: str, kinds: Collection[str] | None = None) -> Signature | None:
    """The signature a stored blob holds; None when it cannot be read and cannot be of one of
    `kinds` (None: every kind) either: no requirement could use it."""
    try:
        return signatures.from_blob(blob)
    except SignatureError as err:
        if kinds is not None and not any(_may_be(blob, kind) for kind in kinds):
            return None
        raise SignatureError(f"{where}: {err}", err.reason) from None


def _may_be(blob: bytes, kind: str) -> bool:
    """Whether a stored blob may be a signature of `kind`: it says it is (signatures.from_blob's
    formats), or it does not say (no format name, an unknown one: containers refuse it too)."""
    formats = {b"simple-signing": signatures.SIMPLE, b"sigstore-json": signatures.SIGSTORE}
    if not blob.startswith(b"\x00"):
        return kind == signatures.SIMPLE
    name, newline, _ = blob[1:].partition(b"\n")
    return not newline or formats.get(name, kind) == kind


# A registry's stores.


def attachments(source: RegistrySource, digest: str, budget: Budget | None = None) -> list[Found]:
    """The sigstore signatures the registry keeps under the tag sha256-HEX.sig."""
    budget = budget or Budget()
    tag = signature_tag(digest, SIGSTORE_SUFFIX)
    got = source.tagged(tag)
    if got is None:
        return []
    budget.spend(len(got[0]), f"attachment {tag}")
    return _sigstore(source, got[0], f"attachment {tag}", budget)


def lookaside(
    base: str,
    digest: str,
    fetch_policy: http.Policy,
    say: Callable[[str], None],
    cafile: str | None = None,
    *,
    budget: Budget | None = None,
    kinds: Collection[str] | None = None,
) -> list[Found]:
    """signature-1, -2 … of `digest` below a repository's lookaside URL, until one is missing."""
    budget = budget or Budget()
    found: list[Found] = []
    for url in signature_urls(base, digest):
        if not budget.left():
            say(f"{http.redact(base)}: only the first {MAX_SIGNATURES} signatures are read")
            break
        blob = _fetch(url, fetch_policy, say, cafile)
        if blob is None:
            break
        origin = f"lookaside {http.redact(url)}"
        budget.count += 1
        budget.spend(len(blob), origin)
        sig = _from_blob(blob, origin, kinds)
        if sig is not None:
            found.append(Found(sig, origin, blob, {}))
    return found


def _fetch(
    url: str, fetch_policy: http.Policy, say: Callable[[str], None], cafile: str | None
) -> bytes | None:
    """A signature-N file's bytes, or None when it does not exist (404, no such file)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "file":
        try:
            data, _ = http.read_body(
                http.Client(url, fetch_policy, say, cafile=cafile), "signature", SIGNATURE_LIMIT
            )
        except http.FetchError as err:
            if err.status == 404:
                return None
            raise
        return data
    if parts.netloc not in ("", "localhost"):
        raise TrustError(f"lookaside {shown(url)}: a file URL must name a local path")
    try:
        path = urllib.parse.unquote(parts.path, errors="strict")
        if "\0" in path:
            raise ValueError("NUL")
    except ValueError:  # a NUL, bytes that are not UTF-8
        raise TrustError(f"lookaside {shown(url)}: not a usable file path") from None
    try:
        # Opened without waiting, then checked: a FIFO would block the open or the read for
        # ever, a device (/dev/zero) give bytes without end.
        with open_file(path, f"lookaside {shown(path)}", hint="remove it from the store") as f:
            data = f.read(SIGNATURE_LIMIT + 1)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except ImageError as err:
        raise TrustError(str(err), err.hint) from None
    except OSError as err:
        raise TrustError(f"lookaside {shown(path)}: cannot be read: {err.strerror}") from None
    if len(data) > SIGNATURE_LIMIT:
        raise TrustError(f"lookaside {shown(path)}: larger than {SIGNATURE_LIMIT} bytes")
    return data
