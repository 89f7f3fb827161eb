"""trust: an image's signatures found where they are kept, and the policy's verdict on them.

Carried in an OCI layout and an oci-archive (written with layout.LayoutWriter), in a registry's
lookaside (nginx, and a file:// store) and among its sigstore attachments (the scripted registry
serving the .sig tag); signed with real gpg and openssl, verified with gpgv and openssl. Every
verdict and reason is asserted exactly, and a refusal comes before any layer blob is opened.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from bootc_live import carried, hostpolicy
from bootc_live.layout import LayoutWriter, canonical_json
from bootc_live.runtime import http, oci, policy, trust
from bootc_live.runtime.blobs import Descriptor
from bootc_live.runtime.errors import ImageError
from bootc_live.runtime.policy import Policy, PolicyError
from bootc_live.runtime.registriesd import RegistriesD
from bootc_live.runtime.registry import Reference, RegistrySource
from bootc_live.runtime.sources import ArchiveSource, ImageSource, LayoutSource
from fakeregistry import REPO, TAG, Knobs, serve
from imagegen import add_nested_index, build_image, build_layout, f, layer_tar, write_oci_archive
from servers import asked_path, hard_timeout, nginx
from signing import GpgKey, cosign_payload, cosign_sign, run
from test_signatures import cosign_keys, gnupg  # noqa: F401 - fixtures

NAME = "example.com/app:v1"
EXPANDED = "example.com/app:v1"
POLICY = http.Policy(retries=1, total=10.0, stall=5.0, max_backoff=0.1)
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def simple_payload(digest: str, reference: str) -> bytes:
    """What simple signing signs: cosign's payload with the simple-signing type, and an
    optional object as containers/image writes it (null there is cosign's only)."""
    cosign = b"cosign container image signature"
    payload = cosign_payload(digest, reference).replace(cosign, b"atomic container signature")
    optional = b'"optional": {"creator": "test", "timestamp": 1700000000}'
    return payload.replace(b'"optional": null', optional)


@dataclass(frozen=True)
class Signer:
    """Makes signatures: GPG (simple signing) with the trusted or the other key, and
    sigstore with the P-256 key or another."""

    home: Path
    trusted: GpgKey
    other: GpgKey
    cosign: dict[str, tuple[Path, Path]]
    tmp: Path

    def gpg(self, digest: str, reference: str = EXPANDED, key: GpgKey | None = None) -> bytes:
        key = key or self.trusted
        payload = self.tmp / "simple-payload"
        payload.write_bytes(simple_payload(digest, reference))
        out = self.tmp / "simple-signature"
        out.unlink(missing_ok=True)
        done = run(
            "gpg", "--batch", "--local-user", key.fingerprint, "--output", str(out), "--sign",
            str(payload), env={"GNUPGHOME": str(self.home)},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return out.read_bytes()

    def sigstore(
        self, digest: str, reference: str = EXPANDED, key: str = "ecdsa P-256"
    ) -> tuple[bytes, str]:
        payload = cosign_payload(digest, reference)
        return payload, cosign_sign(self.cosign[key][0], payload, self.tmp)

    @property
    def p256(self) -> Path:
        return self.cosign["ecdsa P-256"][1]


@pytest.fixture(scope="module")
def signer(
    gnupg: tuple[Path, GpgKey, GpgKey],  # noqa: F811 - the fixture
    cosign_keys: dict[str, tuple[Path, Path]],  # noqa: F811 - the fixture
    tmp_path_factory: pytest.TempPathFactory,
) -> Signer:
    home, trusted, other = gnupg
    return Signer(home, trusted, other, cosign_keys, tmp_path_factory.mktemp("signer"))


def image_layout(where: Path, text: bytes = b"hello\n") -> str:
    """An image (one layer) tagged `latest`; its manifest digest."""
    return build_layout(where, [layer_tar([f("etc/motd", text)])]).manifest_digest


def add_entry(layout: Path, descriptor: dict[str, Any], tag: str) -> None:
    index = json.loads((layout / "index.json").read_bytes())
    index["manifests"].append({**descriptor, "annotations": {oci.REF_NAME: tag}})
    LayoutWriter(layout).write_index(canonical_json(index))


def carry_sigstore(layout: Path, digest: str, signed: list[tuple[bytes, str]]) -> None:
    """cosign's signature manifest for `digest`, tagged sha256-HEX.sig in index.json."""
    out = LayoutWriter(layout)
    config = out.add_blob(b"{}")
    layers = [
        {
            "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
            **out.add_blob(payload),
            "annotations": {"dev.cosignproject.cosign/signature": signature},
        }
        for payload, signature in signed
    ]
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
        "layers": layers,
    }
    descriptor = {"mediaType": OCI_MANIFEST, **out.add_blob(canonical_json(manifest))}
    add_entry(layout, descriptor, trust.signature_tag(digest, trust.SIGSTORE_SUFFIX))


def carry_simple(layout: Path, digest: str, blobs: list[bytes]) -> None:
    """Simple-signing signatures of `digest`, tagged sha256-HEX.simplesig in index.json."""
    out = LayoutWriter(layout)
    empty = {"mediaType": "application/vnd.oci.empty.v1+json", **out.add_blob(b"{}")}
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": trust.SIMPLE_MEDIA_TYPE,
        "config": empty,
        "layers": [{"mediaType": trust.SIMPLE_MEDIA_TYPE, **out.add_blob(b)} for b in blobs],
    }
    descriptor = {"mediaType": OCI_MANIFEST, **out.add_blob(canonical_json(manifest))}
    add_entry(layout, descriptor, trust.signature_tag(digest, trust.SIMPLE_SUFFIX))


def rules(tmp: Path, reqs: list[dict[str, Any]], scope: str = "") -> Policy:
    doc: dict[str, Any] = {"default": reqs}
    if scope:
        doc = {"default": [{"type": "reject"}], "transports": {"docker": {scope: reqs}}}
    path = tmp / "policy.json"
    path.write_text(json.dumps(doc))
    return Policy.load(str(path))


def gpg_req(key: GpgKey, identity: dict[str, str] | None = None) -> dict[str, Any]:
    req: dict[str, Any] = {"type": "signedBy", "keyType": "GPGKeys", "keyPath": str(key.public)}
    return {**req, "signedIdentity": identity} if identity else req


def sigstore_req(pub: Path) -> dict[str, Any]:
    return {"type": "sigstoreSigned", "keyPath": str(pub)}


def verdict_of(
    source: ImageSource, rules_: Policy, name: str = NAME, registries: RegistriesD | None = None
) -> policy.Verdict:
    """trust.check on the image of `source`, asserting that no layer blob was opened."""
    opened: list[str] = []
    real = source.open_blob

    def recording(desc: Descriptor) -> BinaryIO:
        opened.append(desc.digest)
        return real(desc)

    source.open_blob = recording  # type: ignore[method-assign]
    image = oci.resolve(source)
    try:
        return trust.check(rules_, "docker", name, source, image, registries, POLICY, print)
    finally:
        assert opened and not {d.digest for d in image.layers} & set(opened), opened


# Carried in a layout and an oci-archive.


@pytest.fixture
def signed_layout(tmp_path: Path, signer: Signer) -> tuple[Path, str]:
    """An image with one GPG signature and one sigstore signature carried, both by trusted
    keys for NAME."""
    layout = tmp_path / "layout"
    digest = image_layout(layout)
    carry_simple(layout, digest, [signer.gpg(digest)])
    carry_sigstore(layout, digest, [signer.sigstore(digest)])
    return layout, digest


@pytest.mark.parametrize("as_archive", [False, True])
def test_carried_signatures_are_found_and_accepted(
    signed_layout: tuple[Path, str], signer: Signer, tmp_path: Path, as_archive: bool
) -> None:
    layout, digest = signed_layout
    source: ImageSource = LayoutSource(str(layout))
    if as_archive:
        source = ArchiveSource(str(write_oci_archive(layout, tmp_path / "image.oci")))
    image = oci.resolve(source)
    assert image.top.digest == digest  # never the signature manifests tagged beside it
    found = trust.gather(source, image, None, POLICY, print)
    hex_ = digest.partition(":")[2]
    assert [(x.signature.kind, x.origin) for x in found] == [
        ("simple", f"{source.description} sha256-{hex_}.simplesig layer 1"),
        ("sigstore", f"{source.description} sha256-{hex_}.sig layer 1"),
    ]
    assert set(found[1].annotations) == {"dev.cosignproject.cosign/signature"}
    both = rules(tmp_path, [gpg_req(signer.trusted), sigstore_req(signer.p256)], "example.com")
    verdict = verdict_of(source, both)
    fpr = signer.trusted.fingerprint
    assert verdict == policy.Verdict(
        'docker "example.com"',
        (
            f"GPG key {fpr} ({signer.trusted.public})",
            f"sigstore key {signer.p256} (ecdsa P-256)",
        ),
    )
    assert verdict.line() == (
        f"signatures: verified by GPG key {fpr} ({signer.trusted.public}), sigstore key "
        f'{signer.p256} (ecdsa P-256) (policy scope docker "example.com")'
    )


def refusal(
    source: ImageSource, rules_: Policy, name: str = NAME, registries: RegistriesD | None = None
) -> PolicyError:
    with pytest.raises(PolicyError) as caught:
        verdict_of(source, rules_, name, registries)
    return caught.value


def test_under_an_index_the_index_or_the_platforms_manifest_may_be_signed(
    tmp_path: Path, signer: Signer
) -> None:
    """As podman checks a multi-platform tag (the manifest it pulls) and bootc's image proxy
    (either): `cosign sign` of the index, or signatures of the linux/amd64 manifest alone, are
    accepted; another platform's signature is not, and is never carried."""
    pol = rules(tmp_path, [gpg_req(signer.trusted)])
    for case in ("index", "amd64", "arm64", "amd64 by another key"):
        layout = tmp_path / case.replace(" ", "-")
        amd = build_image(
            layout, [layer_tar([f("etc/motd", b"amd\n")])], platform=("linux", "amd64")
        )
        arm = build_image(
            layout, [layer_tar([f("etc/motd", b"arm\n")])], platform=("linux", "arm64")
        )
        index = add_nested_index(layout, [amd, arm], tag="latest")
        signed, key = {
            "index": (index, signer.trusted),
            "amd64": (amd.manifest_digest, signer.trusted),
            "arm64": (arm.manifest_digest, signer.trusted),
            "amd64 by another key": (amd.manifest_digest, signer.other),
        }[case]
        carry_simple(layout, signed, [signer.gpg(signed, key=key)])
        source = LayoutSource(str(layout))
        image = oci.resolve(source)
        assert (image.top.digest, image.manifest_digest) == (index, amd.manifest_digest)
        if case in ("index", "amd64"):
            keys = verdict_of(source, pol).keys
            assert keys == (f"GPG key {signer.trusted.fingerprint} ({signer.trusted.public})",)
            # Named by the index's digest (docker://…@sha256:INDEX, bootc.identity=): the pin
            # is the index's, which the manifest's signature does not change.
            assert verdict_of(source, pol, name=f"example.com/app@{index}").keys == keys
            found = trust.gather(source, image, None, POLICY, print)
            # inspect's line for the signature: this image's, not "another image".
            said = hostpolicy._verified_by(
                found[0].signature, pol.default, hostpolicy.Checked(image, tuple(found), None)
            )
            which = "this image" if case == "index" else "this image's manifest for its platform"
            assert said.endswith(f"signs {EXPANDED} for {which}"), said
            assert [one.signs for one in found] == [signed]
            entries, _ = carried.entries(image, found)  # what pull and build carry
            tags = [e["annotations"][oci.REF_NAME] for e in entries]
            assert tags == [trust.signature_tag(signed, trust.SIMPLE_SUFFIX)]
            continue
        with pytest.raises(PolicyError) as err:
            verdict_of(source, pol)
        reason = "no signature" if case == "arm64" else "unknown key"
        assert err.value.reason == reason, err.value


def test_refusals_name_the_image_the_scope_and_the_reason(tmp_path: Path, signer: Signer) -> None:
    layout = tmp_path / "layout"
    digest = image_layout(layout)
    source = LayoutSource(str(layout))
    trusted = rules(tmp_path, [gpg_req(signer.trusted)])
    label = f"docker://{NAME}"

    err = refusal(source, trusted)  # unsigned
    assert (err.reason, str(err)) == (
        policy.NO_SIGNATURE,
        f"{label}: no simple signature, and policy scope default requires one (default[0])",
    )

    carry_simple(layout, digest, [signer.gpg(digest, key=signer.other)])
    err = refusal(source, trusted)
    assert err.reason == policy.UNKNOWN_KEY
    assert str(err).startswith(f"{label}: unknown key under policy scope default (default[0]): ")
    assert f"signed by key {signer.other.fingerprint[-16:]}, which is not trusted" in str(err)

    assert verdict_of(source, rules(tmp_path, [gpg_req(signer.other)])).keys == (
        f"GPG key {signer.other.fingerprint} ({signer.other.public})",
    )
    err = refusal(source, rules(tmp_path, [{"type": "reject"}], "example.com/app"))
    assert (err.reason, str(err)) == (
        policy.REJECT,
        f'{label}: rejected by policy scope docker "example.com/app" '
        f'(transports.docker["example.com/app"][0] is reject)',
    )


def test_a_signature_moved_to_another_image_is_a_digest_mismatch(
    tmp_path: Path, signer: Signer
) -> None:
    """The signature of image A, carried beside image B under B's tag: the signed digest is A's."""
    digest_a = image_layout(tmp_path / "a", b"a\n")
    layout = tmp_path / "b"
    digest_b = image_layout(layout, b"b\n")
    carry_simple(layout, digest_b, [signer.gpg(digest_a)])
    err = refusal(LayoutSource(str(layout)), rules(tmp_path, [gpg_req(signer.trusted)]))
    assert (err.reason, str(err)) == (
        policy.DIGEST_MISMATCH,
        f"docker://{NAME}: digest mismatch under policy scope default (default[0]): signed "
        f"manifest digest {digest_a} is not this image's",
    )


def test_identity_rules_and_an_image_without_a_name(tmp_path: Path, signer: Signer) -> None:
    layout = tmp_path / "layout"
    digest = image_layout(layout)
    carry_sigstore(layout, digest, [signer.sigstore(digest, "example.com/other:v1")])
    source = LayoutSource(str(layout))
    default = rules(tmp_path, [sigstore_req(signer.p256)])
    err = refusal(source, default)
    assert (err.reason, str(err)) == (
        policy.IDENTITY_MISMATCH,
        f"docker://{NAME}: identity mismatch under policy scope default (default[0]): signed "
        "identity example.com/other:v1 is not accepted by matchRepoDigestOrExact",
    )
    # Without a name (no bootc.identity=): the default only, and a line saying to give one.
    err = refusal(source, default, name="")
    assert (err.reason, err.hint) == (policy.IDENTITY_MISMATCH, trust.IDENTITY_HINT)
    assert str(err).startswith(f"oci:{layout}: identity mismatch under policy scope default")
    exact = {"type": "exactReference", "dockerReference": "example.com/other:v1"}
    accepted = rules(tmp_path, [{**sigstore_req(signer.p256), "signedIdentity": exact}])
    assert verdict_of(source, accepted, name="").scope == "default"
    # With a name, its scope applies; without, never (only the default does).
    scoped = rules(tmp_path, [sigstore_req(signer.p256)], "example.com/app")
    err = refusal(source, scoped, name="")
    assert (err.reason, str(err)) == (
        policy.REJECT,
        f"oci:{layout}: rejected by policy scope default (default[0] is reject)",
    )


def test_no_signature_is_read_when_no_requirement_needs_one(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    image_layout(layout)
    source = LayoutSource(str(layout))
    anything = rules(tmp_path, [{"type": "insecureAcceptAnything"}])
    verdict = verdict_of(source, anything)
    assert verdict.line() == "signatures: not required (policy scope default)"


def test_signature_entries_are_never_booted(tmp_path: Path, signer: Signer) -> None:
    """An entry tagged sha256-HEX.sig is not an image: the one image needs no bootclabel=, and
    naming the signature's tag finds nothing."""
    layout = tmp_path / "layout"
    digest = image_layout(layout)
    carry_sigstore(layout, digest, [signer.sigstore(digest)])
    source = LayoutSource(str(layout))
    index = json.loads((layout / "index.json").read_bytes())
    index["manifests"][0]["annotations"] = {}  # the image untagged, the signature tagged
    LayoutWriter(layout).write_index(canonical_json(index))
    assert oci.resolve(source).top.digest == digest
    tag = trust.signature_tag(digest, trust.SIGSTORE_SUFFIX)
    assert trust.is_signature_tag(tag) and trust.is_signature_tag(f"localhost/app:{tag}")
    assert not trust.is_signature_tag("sha256-abc.sig") and not trust.is_signature_tag("v1")
    with pytest.raises(ImageError, match=f"has no image tagged '{tag}' \\(tags: none\\)"):
        oci.resolve(source, label=tag)


def test_a_malformed_carried_signature_names_where_it_is(tmp_path: Path, signer: Signer) -> None:
    layout = tmp_path / "layout"
    digest = image_layout(layout)
    carry_simple(layout, digest, [b"\x00unknown-format\nxx"])
    with pytest.raises(trust.signatures.SignatureError) as caught:
        verdict_of(LayoutSource(str(layout)), rules(tmp_path, [gpg_req(signer.trusted)]))
    hex_ = digest.partition(":")[2]
    assert str(caught.value) == (
        f"oci:{layout} sha256-{hex_}.simplesig layer 1: a signature of unknown format "
        "unknown-format"
    )


def test_one_entry_per_tag_and_one_budget_for_all_carried_signatures(
    tmp_path: Path, signer: Signer
) -> None:
    """MAX_SIGNATURES and SIGNATURES_LIMIT bound an image's signatures in all its stores, not
    in each; an entry tagged twice is malformed; a signature stored many times counts once."""
    layout = tmp_path / "layout"
    digest = image_layout(layout)
    source = LayoutSource(str(layout))
    image = oci.resolve(source)
    good = signer.gpg(digest)
    carry_simple(layout, digest, [good] * trust.MAX_SIGNATURES)
    found = trust.gather(source, image, None, POLICY, print)
    assert [x.origin for x in found] == [
        f"oci:{layout} {trust.signature_tag(digest, '.simplesig')} layer 1"
    ]
    carry_simple(layout, digest, [good])  # a second entry tagged .simplesig
    with pytest.raises(trust.TrustError) as caught:
        trust.gather(source, image, None, POLICY, print)
    tag = trust.signature_tag(digest, trust.SIMPLE_SUFFIX)
    assert str(caught.value) == (
        f"oci:{layout}: index.json entries 1 and 2 are both tagged {tag}: a layout carries one "
        "signature manifest per tag (remove one)"
    )

    def fresh(name: str) -> Path:
        where = tmp_path / name
        assert image_layout(where) == digest
        return where

    split = fresh("split")  # 20 + 20 signatures: each store within MAX_SIGNATURES, not both
    carry_simple(split, digest, [good] * 20)
    carry_sigstore(split, digest, [signer.sigstore(digest)] * 20)
    with pytest.raises(trust.TrustError) as caught:
        trust.gather(LayoutSource(str(split)), image, None, POLICY, print)
    assert str(caught.value) == (
        f"oci:{split} {trust.signature_tag(digest, '.sig')}: 20 signatures, more than "
        f"{trust.MAX_SIGNATURES} with the 20 of the image's other stores"
    )
    big = fresh("big")  # five distinct 1 MiB signatures: 5 MiB, more than SIGNATURES_LIMIT
    carry_simple(big, digest, [bytes([i]) * trust.SIGNATURE_LIMIT for i in range(1, 6)])
    with pytest.raises(trust.TrustError) as caught:
        trust.gather(LayoutSource(str(big)), image, None, POLICY, print)
    assert str(caught.value) == (
        f"oci:{big} {tag} layer 4: the image's signatures take more than "
        f"{trust.SIGNATURES_LIMIT} bytes in all"
    )


def test_check_reads_only_the_kinds_its_requirements_verify(tmp_path: Path, signer: Signer) -> None:
    """A malformed sigstore signature, an over-full .sig store: nothing a GPG requirement
    reads; gather (host pull/inspect) still reads all of them and refuses them."""
    layout = tmp_path / "layout"
    digest = image_layout(layout)
    carry_simple(layout, digest, [b"\x00sigstore-json\nnot json", signer.gpg(digest)])
    carry_sigstore(layout, digest, [(b"{}", "AA==")] * (trust.MAX_SIGNATURES + 1))
    source = LayoutSource(str(layout))
    verdict = verdict_of(source, rules(tmp_path, [gpg_req(signer.trusted)]))
    assert verdict.keys == (f"GPG key {signer.trusted.fingerprint} ({signer.trusted.public})",)
    with pytest.raises(trust.signatures.SignatureError) as caught:
        verdict_of(source, rules(tmp_path, [sigstore_req(signer.p256)]))
    tag = trust.signature_tag(digest, trust.SIMPLE_SUFFIX)
    assert str(caught.value) == f"oci:{layout} {tag} layer 1: a malformed sigstore signature"
    with pytest.raises(trust.signatures.SignatureError):
        trust.gather(source, oci.resolve(source), None, POLICY, print)


@pytest.mark.parametrize("path", ["%00x", "%ff"])
def test_a_file_lookaside_path_that_is_not_one_is_refused(path: str) -> None:
    digest = "sha256:" + "1" * 64
    with pytest.raises(trust.TrustError) as caught:
        trust.lookaside(f"file:///tmp/{path}/x/y", digest, POLICY, print)
    assert str(caught.value).startswith(f"lookaside file:///tmp/{path}/x/y@sha256=")
    assert str(caught.value).endswith("/signature-1: not a usable file path")


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero"])
def test_a_file_lookaside_signature_that_is_no_file_is_refused_without_waiting(
    tmp_path: Path, kind: str
) -> None:
    """signature-1 a FIFO blocked gathering (the boot, `inspect`) in open() for ever; a link
    to /dev/zero was read up to the limit. Refused now, naming it."""
    digest = "sha256:" + "1" * 64
    where = tmp_path / f"{REPO}@sha256={'1' * 64}"
    where.mkdir(parents=True)
    signature = where / "signature-1"
    if kind == "fifo":
        os.mkfifo(signature)
    else:
        signature.symlink_to(kind)
    with hard_timeout(10), pytest.raises(trust.TrustError) as caught:  # the old code waited
        trust.lookaside(f"file://{tmp_path}/{REPO}", digest, POLICY, print)
    err = caught.value
    assert str(err).startswith(f"lookaside {str(tmp_path)[:40]}")
    kind = "a FIFO" if kind == "fifo" else "a character device"
    assert str(err).endswith(f"/signature-1 is not a regular file ({kind})")
    assert err.line().endswith("; remove it from the store")


# A registry: lookaside (nginx, file://) and sigstore attachments.


def registry_source(port: int) -> RegistrySource:
    ref = Reference.parse(f"127.0.0.1:{port}/{REPO}:{TAG}")
    return RegistrySource(ref, POLICY, print, unsecure=True)


def lookaside_store(root: Path, digest: str, blobs: list[bytes]) -> None:
    hex_ = digest.partition(":")[2]
    where = root / f"{REPO}@sha256={hex_}"
    where.mkdir(parents=True)
    for i, blob in enumerate(blobs, 1):
        (where / f"signature-{i}").write_bytes(blob)


def test_registry_lookaside_over_http_and_file(tmp_path: Path, signer: Signer) -> None:
    layout = tmp_path / "layout"
    digest = image_layout(layout)
    with serve(layout, Knobs()) as registry:
        name = f"127.0.0.1:{registry.port}/{REPO}:{TAG}"
        other = signer.gpg(digest, name, key=signer.other)
        good = signer.gpg(digest, name)
        store = tmp_path / "store"
        lookaside_store(store, digest, [other, good])
        trusted = rules(tmp_path, [gpg_req(signer.trusted)])
        key = f"GPG key {signer.trusted.fingerprint} ({signer.trusted.public})"
        with nginx(store, tmp_path / "nginx") as web:
            top = web.url("").rstrip("/")
            config = RegistriesD.parse(
                {"d.yaml": f"docker:\n  {registry.host}:\n    lookaside: {top}\n"}
            )
            source = registry_source(registry.port)
            image = oci.resolve(source)
            found = trust.gather(source, image, config, POLICY, print)
            hex_ = digest.partition(":")[2]
            assert [x.origin for x in found] == [
                f"lookaside {web.url(f'x/y@sha256={hex_}/signature-{i}')}" for i in (1, 2)
            ]
            assert [x.stored for x in found] == [other, good]
            assert verdict_of(source, trusted, name, config).keys == (key,)
            # signature-3 was asked for and was not there: the list ends at the first 404.
            asked = [asked_path(line) for line in web.requests()]
            assert asked[-1] == f"/x/y@sha256={hex_}/signature-3"
        config = RegistriesD.parse({"d.yaml": f"default-docker:\n  lookaside: file://{store}\n"})
        assert verdict_of(registry_source(registry.port), trusted, name, config).keys == (key,)
        # No registries.d: containers' built-in lookaside, which holds nothing here.
        err = refusal(registry_source(registry.port), trusted, name)
        assert err.reason == policy.NO_SIGNATURE


def test_registry_sigstore_attachments(tmp_path: Path, signer: Signer) -> None:
    """Two signatures attached (tag sha256-HEX.sig), one by a trusted key; read only when
    registries.d says so. Signed for NAME: the policy accepts that repository for this one."""
    layout = tmp_path / "layout"
    digest = image_layout(layout)
    attached = [signer.sigstore(digest, key="other P-256"), signer.sigstore(digest)]
    carry_sigstore(layout, digest, attached)
    index = json.loads((layout / "index.json").read_bytes())
    index["manifests"][0]["annotations"] = {oci.REF_NAME: TAG}
    LayoutWriter(layout).write_index(canonical_json(index))
    with serve(layout, Knobs()) as registry:
        name = f"{registry.host}/{REPO}:{TAG}"
        config = RegistriesD.parse(
            {"d.yaml": "default-docker:\n  use-sigstore-attachments: true\n"}
        )
        repository = {"type": "exactRepository", "dockerRepository": "example.com/app"}
        trusted = rules(tmp_path, [{**sigstore_req(signer.p256), "signedIdentity": repository}])
        err = refusal(registry_source(registry.port), trusted, name)  # attachments not read
        assert err.reason == policy.NO_SIGNATURE
        assert not registry.hits(".sig")
        source = registry_source(registry.port)
        found = trust.gather(source, oci.resolve(source), config, POLICY, print)
        tag = trust.signature_tag(digest, trust.SIGSTORE_SUFFIX)
        assert [x.origin for x in found] == [f"attachment {tag} layer {i}" for i in (1, 2)]
        assert [x.stored for x in found] == [payload for payload, _ in attached]
        verdict = verdict_of(registry_source(registry.port), trusted, name, config)
        assert verdict.keys == (f"sigstore key {signer.p256} (ecdsa P-256)",)
        elsewhere = {"type": "exactRepository", "dockerRepository": "example.com/else"}
        other = rules(tmp_path, [{**sigstore_req(signer.p256), "signedIdentity": elsewhere}])
        err = refusal(registry_source(registry.port), other, name, config)
        assert (err.reason, str(err)) == (
            policy.IDENTITY_MISMATCH,
            f"docker://{name}: identity mismatch under policy scope default (default[0]): "
            "none of 2 signatures accepted: the sigstore signature does not verify with "
            f"{signer.p256}; signed identity {EXPANDED} is not accepted by exactRepository "
            "example.com/else",
        )


def test_a_registry_without_attachments_has_none(tmp_path: Path, signer: Signer) -> None:
    layout = tmp_path / "layout"
    image_layout(layout)
    with serve(layout, Knobs()) as registry:
        source = registry_source(registry.port)
        config = RegistriesD.parse(
            {"d.yaml": "default-docker:\n  use-sigstore-attachments: true\n"}
        )
        assert trust.gather(source, oci.resolve(source), config, POLICY, print) == []
        assert [r.status for r in registry.hits(".sig")] == [404]


def test_lookaside_bounds(
    tmp_path: Path, signer: Signer, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store"
    digest = "sha256:" + "1" * 64
    where = store / f"x/y@sha256={'1' * 64}"
    where.mkdir(parents=True)
    blob = signer.gpg(digest)
    for i in range(1, trust.MAX_SIGNATURES + 3):
        (where / f"signature-{i}").write_bytes(blob)
    found = trust.lookaside(f"file://{store}/x/y", digest, POLICY, print)
    assert len(found) == trust.MAX_SIGNATURES
    assert f"only the first {trust.MAX_SIGNATURES} signatures are read" in capsys.readouterr().out
    (where / "signature-1").write_bytes(b"x" * (trust.SIGNATURE_LIMIT + 1))
    with pytest.raises(trust.TrustError, match=f"larger than {trust.SIGNATURE_LIMIT} bytes"):
        trust.lookaside(f"file://{store}/x/y", digest, POLICY, print)
    with pytest.raises(trust.TrustError, match="a file URL must name a local path"):
        trust.lookaside("file://elsewhere/x/y", digest, POLICY, print)


def test_a_signature_manifest_with_too_many_layers_is_refused(
    tmp_path: Path, signer: Signer
) -> None:
    layout = tmp_path / "layout"
    digest = image_layout(layout)
    many = [(b"{}", "AA==")] * (trust.MAX_SIGNATURES + 1)
    carry_sigstore(layout, digest, many)
    tag = trust.signature_tag(digest, trust.SIGSTORE_SUFFIX)
    with pytest.raises(trust.TrustError) as caught:
        verdict_of(LayoutSource(str(layout)), rules(tmp_path, [sigstore_req(signer.p256)]))
    assert str(caught.value) == (
        f"oci:{layout} {tag}: {trust.MAX_SIGNATURES + 1} signatures, more than "
        f"{trust.MAX_SIGNATURES}"
    )


def test_a_registry_reference_with_a_tag_and_a_digest_has_no_policy_identity() -> None:
    """As containers/image and the host's check: the tag was dropped at boot, so the policy's
    scope for REPO:TAG (here: signatures required) was passed over for the repository's."""
    rules = Policy.parse(
        json.dumps(
            {
                "default": [{"type": "reject"}],
                "transports": {
                    "docker": {
                        "example.com/app": [{"type": "insecureAcceptAnything"}],
                        "example.com/app:prod": [{"type": "reject"}],
                    }
                },
            }
        ).encode(),
        "policy.json",
    )
    digest = "sha256:" + "a" * 64
    source = RegistrySource(Reference.parse(f"example.com/app:prod@{digest}"), POLICY, print)
    with pytest.raises(PolicyError) as err:
        rules.requirements_for("docker", trust.policy_name(source))
    assert err.value.reason == policy.BAD_REFERENCE
    assert "both a tag and a digest" in err.value.line()
    # The host refuses the same name alike.
    with pytest.raises(PolicyError) as host:
        rules.requirements_for("docker", f"example.com/app:prod@{digest}")
    assert host.value.reason == policy.BAD_REFERENCE
