"""containers-policy.json: parsing (strict: every malformed entry an error naming its path),
scope lookup (containers/image's order), identity rules and the evaluation table with exact
verdicts. Signatures are faked here (test_signatures.py verifies real ones with gpgv/openssl):
a fake signature verifies when its `signature` names one of the requirement's keys."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from bootc_live.runtime import policy, signatures
from bootc_live.runtime.policy import DockerReference, Identity, Policy, PolicyError
from bootc_live.runtime.signatures import Claims, Signature, SignatureError, Verified
from servers import hard_timeout

FIXTURES = Path("/usr/share/gocode/src/github.com/containers/image/signature/fixtures")
MANIFEST = b'{"schemaVersion":2,"layers":[]}'
DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
OTHER_DIGEST = "sha256:" + "0" * 64


def parse(doc: dict[str, Any]) -> Policy:
    return Policy.parse(json.dumps(doc).encode(), "policy.json")


def signed_by(key: str, identity: dict[str, str] | None = None) -> dict[str, Any]:
    req: dict[str, Any] = {"type": "signedBy", "keyType": "GPGKeys", "keyPath": f"/keys/{key}"}
    if identity:
        req["signedIdentity"] = identity
    return req


def sigstore_signed(key: str, identity: dict[str, str] | None = None) -> dict[str, Any]:
    req: dict[str, Any] = {"type": "sigstoreSigned", "keyPath": f"/keys/{key}"}
    if identity:
        req["signedIdentity"] = identity
    return req


ACCEPT = [{"type": "insecureAcceptAnything"}]
REJECT = [{"type": "reject"}]


# Scopes.

SCOPES = {
    "": ACCEPT,
    "example.com": ACCEPT,
    "example.com:5000": ACCEPT,
    "example.com/ns": ACCEPT,
    "example.com/ns/repo": ACCEPT,
    "example.com/ns/repo:tag": ACCEPT,
    f"example.com/ns/repo@{OTHER_DIGEST}": ACCEPT,
    "*.example.com": ACCEPT,
    "*.com": ACCEPT,
    "docker.io/library/busybox": ACCEPT,
    "localhost:5000/a": ACCEPT,
}
OCI_SCOPES = {"/srv/images": ACCEPT, "/srv/images/a": ACCEPT}


@pytest.mark.parametrize(
    ("transport", "name", "scope"),
    [
        ("docker", "example.com/ns/repo:tag", 'docker "example.com/ns/repo:tag"'),
        (
            "docker",
            f"example.com/ns/repo@{OTHER_DIGEST}",
            f'docker "example.com/ns/repo@{OTHER_DIGEST}"',
        ),
        ("docker", "example.com/ns/repo:other", 'docker "example.com/ns/repo"'),
        ("docker", f"example.com/ns/repo@{DIGEST}", 'docker "example.com/ns/repo"'),
        ("docker", "example.com/ns/other:x", 'docker "example.com/ns"'),
        ("docker", "example.com/ns/deeper/still:x", 'docker "example.com/ns"'),
        ("docker", "example.com/nsx/repo:x", 'docker "example.com"'),
        ("docker", "example.com:5000/a:b", 'docker "example.com:5000"'),
        # A port-less host is not a parent of host:port; the wildcards are, without the port.
        ("docker", "example.com:6000/a:b", 'docker "*.com"'),
        ("docker", "sub.example.com/a:b", 'docker "*.example.com"'),
        ("docker", "deep.sub.example.com/a:b", 'docker "*.example.com"'),
        ("docker", "other.com/a:b", 'docker "*.com"'),
        ("docker", "busybox:latest", 'docker "docker.io/library/busybox"'),
        ("docker", "docker.io/busybox:1", 'docker "docker.io/library/busybox"'),
        ("docker", "index.docker.io/library/busybox:1", 'docker "docker.io/library/busybox"'),
        ("docker", "alpine:latest", 'docker ""'),
        ("docker", "quay.io/a/b:c", 'docker ""'),
        ("docker", "localhost:5000/a/b:c", 'docker "localhost:5000/a"'),
        ("oci", "/srv/images/a/b", 'oci "/srv/images/a"'),
        ("oci", "/srv/images/a", 'oci "/srv/images/a"'),
        ("oci", "/srv/images/ab", 'oci "/srv/images"'),
        ("oci", "/srv/imagesx", "default"),
        ("oci", "/srv/images/./a//b/", 'oci "/srv/images/a"'),
        ("oci-archive", "/srv/images/root.oci", "default"),
        ("dir", "/srv/images/a", "default"),
        ("docker-archive", "/x.tar", "default"),
    ],
)
def test_the_most_specific_scope_applies(transport: str, name: str, scope: str) -> None:
    pol = parse({"default": REJECT, "transports": {"docker": SCOPES, "oci": OCI_SCOPES}})
    assert pol.requirements_for(transport, name)[0] == scope


def test_a_transport_without_a_matching_scope_or_default_falls_back_to_default() -> None:
    pol = parse({"default": REJECT, "transports": {"docker": {"quay.io": ACCEPT}}})
    scope, reqs = pol.requirements_for("docker", "example.com/a:b")
    assert (scope, [r.type for r in reqs]) == ("default", ["reject"])
    pol = parse({"default": REJECT, "transports": {"docker-archive": {"": ACCEPT}}})
    assert pol.requirements_for("docker-archive", "/any.tar")[0] == 'docker-archive ""'


@pytest.mark.parametrize(
    ("transport", "name", "message"),
    [
        ("docker", "example.com/a", "without a tag or digest"),
        ("docker", f"example.com/a:b@{DIGEST}", "both a tag and a digest"),
        ("docker", "Example.com/A:b", "not a valid Docker reference"),
        ("oci", "relative/dir", "not an absolute path"),
        ("containers-storage", "x", "not checked"),
    ],
)
def test_an_image_that_has_no_policy_identity_is_an_error(
    transport: str, name: str, message: str
) -> None:
    pol = parse({"default": ACCEPT})
    with pytest.raises(PolicyError, match=message) as err:
        pol.requirements_for(transport, name)
    expected = (
        "transport not evaluated" if transport == "containers-storage" else "invalid image name"
    )
    assert err.value.reason == expected


# References and identity rules.


@pytest.mark.parametrize(
    ("text", "expanded"),
    [
        ("busybox", "docker.io/library/busybox"),
        ("busybox:1", "docker.io/library/busybox:1"),
        ("user/app", "docker.io/user/app"),
        ("index.docker.io/x", "docker.io/library/x"),
        ("localhost/x:y", "localhost/x:y"),
        ("host:5000/x", "host:5000/x"),
        ("Host.Example/x", "Host.Example/x"),
        (f"quay.io/a/b@{DIGEST}", f"quay.io/a/b@{DIGEST}"),
        # An IPv6 registry in brackets, as the registry client takes it (a traceback before).
        ("[::1]:5000/x/y:v1", "[::1]:5000/x/y:v1"),
        ("[fd00::2]/x", "[fd00::2]/x"),
    ],
)
def test_docker_references_are_expanded_like_distribution(text: str, expanded: str) -> None:
    assert str(DockerReference.parse(text)) == expanded


def test_an_ipv6_registry_is_looked_up_by_its_repository_and_host() -> None:
    ref = DockerReference.parse("[::1]:5000/team/app:v1")
    assert policy.docker_namespaces(ref) == [
        "[::1]:5000/team/app:v1",
        "[::1]:5000/team/app",
        "[::1]:5000/team",
        "[::1]:5000",
    ]


@pytest.mark.parametrize(
    "text", ["", "UPPER/x", "a//b", "x:", "x@sha256:12", "a" * 64, "q/" + "a" * 300]
)
def test_invalid_docker_references_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        DockerReference.parse(text)


@pytest.mark.parametrize(
    "text",
    [
        "example.com/" + "a" * 19 + "!",  # 17 s before, doubling with each letter more
        '{"x": 1}',
    ],
)
def test_an_invalid_reference_is_refused_in_linear_time(text: str) -> None:
    """A separator of `-`* matched the empty string, so a run of N letters that did not end a
    valid reference was tried in 2^N splits (a policy scope, signedIdentity, --identity or
    bootc.identity= with a typo hung the command or the boot, with no deadline)."""
    start = time.monotonic()
    with pytest.raises(ValueError):
        DockerReference.parse(text)
    with pytest.raises(PolicyError, match="is not a valid scope"):
        parse({"default": ACCEPT, "transports": {"docker": {text: ACCEPT}}})
    assert time.monotonic() - start < 1


REPO = "example.com/ns/repo"
TAGGED = f"{REPO}:v1"
DIGESTED = f"{REPO}@{DIGEST}"
EXACT_REF = Identity("exactReference", reference=DockerReference.parse("vendor.com/p:v1"))
EXACT_REPO = Identity("exactRepository", reference=DockerReference.parse("vendor.com/p"))
REMAP = Identity("remapIdentity", prefix="example.com/ns", signed_prefix="vendor.com/team")
REMAP_SHORT = Identity("remapIdentity", prefix=REPO, signed_prefix="busybox")


@pytest.mark.parametrize(
    ("identity", "image", "signed", "verdict"),
    [
        (Identity("matchExact"), TAGGED, TAGGED, True),
        (Identity("matchExact"), TAGGED, f"{REPO}:v2", False),
        (Identity("matchExact"), TAGGED, REPO, False),
        (Identity("matchExact"), DIGESTED, DIGESTED, True),
        (Identity("matchExact"), DIGESTED, TAGGED, False),
        (Identity("matchRepoDigestOrExact"), TAGGED, TAGGED, True),
        (Identity("matchRepoDigestOrExact"), TAGGED, f"{REPO}:v2", False),
        (Identity("matchRepoDigestOrExact"), TAGGED, REPO, False),
        (Identity("matchRepoDigestOrExact"), DIGESTED, f"{REPO}:any", True),
        (Identity("matchRepoDigestOrExact"), DIGESTED, f"{REPO}:v1", True),
        (Identity("matchRepoDigestOrExact"), DIGESTED, REPO, False),
        (Identity("matchRepoDigestOrExact"), DIGESTED, "example.com/ns/other:v1", False),
        (Identity("matchRepository"), TAGGED, f"{REPO}:v2", True),
        (Identity("matchRepository"), TAGGED, REPO, True),
        (Identity("matchRepository"), DIGESTED, REPO, True),
        (Identity("matchRepository"), TAGGED, "example.com/ns/repo2:v1", False),
        (Identity("matchRepository"), TAGGED, "example.com:443/ns/repo:v1", False),
        (EXACT_REF, TAGGED, "vendor.com/p:v1", True),
        (EXACT_REF, TAGGED, "vendor.com/p:v2", False),
        (EXACT_REF, TAGGED, "vendor.com/p", False),
        (EXACT_REF, TAGGED, TAGGED, False),
        (EXACT_REPO, TAGGED, "vendor.com/p:whatever", True),
        (EXACT_REPO, TAGGED, "vendor.com/p", True),
        (EXACT_REPO, TAGGED, TAGGED, False),
        (REMAP, f"{REPO}:v1", "vendor.com/team/repo:v1", True),
        (REMAP, f"{REPO}:v1", "vendor.com/team/repo:v2", False),
        (REMAP, DIGESTED, "vendor.com/team/repo:v9", True),
        (REMAP, f"{REPO}:v1", TAGGED, False),
        # Outside the prefix nothing is remapped: matchRepoDigestOrExact on the image itself.
        (REMAP, "example.com/nsx/repo:v1", "example.com/nsx/repo:v1", True),
        (REMAP, "example.com/nsx/repo:v1", "vendor.com/teamx/repo:v1", False),
        # A rewritten name that is canonical only once normalised is no name (containers/image
        # parses it as it stands): busybox:v1 is not docker.io/library/busybox:v1 here.
        (REMAP_SHORT, f"{REPO}:v1", "docker.io/library/busybox:v1", False),
        (REMAP_SHORT, f"{REPO}:v1", "busybox:v1", False),
        # A signed identity that is not a reference matches nothing.
        (Identity("matchRepository"), TAGGED, "UPPERCASEISINVALID", False),
        (EXACT_REPO, TAGGED, "", False),
        # A digest containers/image cannot parse (go-digest: a registered algorithm, lower-case
        # hex of its length) makes the claim no reference, whatever the rule.
        *(
            (rule, image, f"{REPO}@{bad}", False)
            for rule in (Identity("matchRepository"), Identity("matchRepoDigestOrExact"))
            for image in (TAGGED, DIGESTED)
            for bad in (
                DIGEST.upper().replace("SHA256", "sha256"),
                f"sha256:{'a' * 32}",
                f"sha512:{'a' * 64}",
                f"md5:{'a' * 32}",
                f"sha256:{'a' * 65}",
            )
        ),
        (Identity("matchRepository"), TAGGED, f"{REPO}@sha384:{'a' * 96}", True),
        (Identity("matchRepository"), TAGGED, f"{REPO}@sha512:{'a' * 128}", True),
    ],
)
def test_identity_rules(identity: Identity, image: str, signed: str, verdict: bool) -> None:
    assert identity.matches(DockerReference.parse(image), signed) is verdict


@pytest.mark.parametrize(
    ("identity", "verdict"),
    [
        (Identity("matchExact"), False),
        (Identity("matchRepoDigestOrExact"), False),
        (Identity("matchRepository"), False),
        (REMAP, False),
        (EXACT_REF, True),
        (EXACT_REPO, True),
    ],
)
def test_images_without_a_docker_identity_match_only_exact_rules(
    identity: Identity, verdict: bool
) -> None:
    """oci:, oci-archive:, dir: images have no Docker reference (containers-policy.json(5))."""
    signed = "vendor.com/p:v1"
    assert identity.matches(None, signed) is verdict


# Evaluation, with faked signature verification.


def fake_verify(sig: Signature, keys: list[tuple[str, bytes]]) -> Verified:
    """Verifies when sig.signature names a key of `keys`; `data` holds the claims as
    'DIGEST REFERENCE'."""
    names = [name for name, _ in keys]
    if sig.signature not in names:
        raise SignatureError(f"not made by {', '.join(names)}", signatures.UNKNOWN_KEY)
    digest, reference = sig.data.decode().split(" ")
    return Verified(f"key {sig.signature}", Claims(digest, reference))


@pytest.fixture
def keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("k1", "k2", "s1"):
        (tmp_path / name).write_bytes(b"key " + name.encode())
    monkeypatch.setattr(signatures, "verify", fake_verify)
    return tmp_path


def sig(kind: str, key: str, digest: str = DIGEST, reference: str = TAGGED) -> Signature:
    return Signature(kind, f"{digest} {reference}".encode(), key)


def evaluate(
    keys: Path, reqs: list[dict[str, Any]], candidates: list[Signature], name: str = TAGGED
) -> policy.Verdict:
    reqs = copy.deepcopy(reqs)
    for req in reqs:
        if "keyPath" in req:
            req["keyPath"] = str(keys / Path(req["keyPath"]).name)
    pol = parse({"default": REJECT, "transports": {"docker": {"example.com/ns": reqs}}})
    return policy.evaluate(pol, "docker", name, MANIFEST, candidates)


def test_accepted_by_the_right_key_names_it_and_the_scope(keys: Path) -> None:
    k1 = str(keys / "k1")
    verdict = evaluate(keys, [signed_by("k1")], [sig("simple", k1)])
    assert verdict == policy.Verdict('docker "example.com/ns"', (f"key {k1}",))
    assert (
        verdict.line() == f'signatures: verified by key {k1} (policy scope docker "example.com/ns")'
    )


def test_insecure_accept_anything_needs_no_signature(keys: Path) -> None:
    verdict = evaluate(keys, ACCEPT, [])
    assert verdict == policy.Verdict('docker "example.com/ns"', ())
    assert verdict.line() == 'signatures: not required (policy scope docker "example.com/ns")'


def reason_of(
    keys: Path, reqs: list[dict[str, Any]], candidates: list[Signature], name: str = TAGGED
) -> str:
    with pytest.raises(PolicyError) as err:
        evaluate(keys, reqs, candidates, name)
    assert err.value.line().startswith(f"docker://{name}: ")
    assert 'docker "example.com/ns"' in str(err.value)
    return err.value.reason


@pytest.mark.parametrize(
    ("reqs", "candidates", "reason"),
    [
        ([{"type": "reject"}], [sig("simple", "k1")], "reject"),
        ([*ACCEPT, {"type": "reject"}], [], "reject"),
        ([signed_by("k1")], [], "no signature"),
        ([signed_by("k1")], [sig("sigstore", "k1")], "no signature"),
        ([sigstore_signed("s1")], [sig("simple", "s1")], "no signature"),
        ([sigstore_signed("s1")], [Signature("other", b"", "s1")], "no signature"),
        ([signed_by("k1")], [sig("simple", "k2")], "unknown key"),
        ([signed_by("k1")], [sig("simple", "k1", digest=OTHER_DIGEST)], "digest mismatch"),
        ([signed_by("k1")], [sig("simple", "k1", digest="sha256:zz")], "digest mismatch"),
        ([signed_by("k1")], [sig("simple", "k1", digest="md5:" + "0" * 32)], "digest mismatch"),
        # This manifest's own sha512: containers/image compares sha256 digests only.
        (
            [signed_by("k1")],
            [sig("simple", "k1", digest="sha512:" + hashlib.sha512(MANIFEST).hexdigest())],
            "digest mismatch",
        ),
        ([signed_by("k1")], [sig("simple", "k1", reference=f"{REPO}:v2")], "identity mismatch"),
        (
            [signed_by("k1", {"type": "exactReference", "dockerReference": "vendor.com/p:v1"})],
            [sig("simple", "k1")],
            "identity mismatch",
        ),
        (
            [signed_by("k1", {"type": "matchRepository"})],
            [sig("simple", "k1", reference="example.com/ns/other:v1")],
            "identity mismatch",
        ),
        # Every requirement must hold: the second has no signature.
        ([signed_by("k1"), sigstore_signed("s1")], [sig("simple", "k1")], "no signature"),
        ([signed_by("k1"), signed_by("k2")], [sig("simple", "k1")], "unknown key"),
        # Of several failing signatures, the one that got furthest names the failure.
        (
            [signed_by("k1")],
            [sig("simple", "k2"), sig("simple", "k1", reference="x.com/y:z"), sig("simple", "k2")],
            "identity mismatch",
        ),
    ],
)
def test_rejections_name_their_reason(
    keys: Path, reqs: list[dict[str, Any]], candidates: list[Signature], reason: str
) -> None:
    candidates = [
        Signature(c.kind, c.data, str(keys / c.signature)) if c.signature else c for c in candidates
    ]
    assert reason_of(keys, reqs, candidates) == reason


def test_any_one_good_signature_satisfies_a_requirement_and_all_requirements_must(
    keys: Path,
) -> None:
    k1, k2, s1 = (str(keys / n) for n in ("k1", "k2", "s1"))
    bad = sig("simple", k2)
    verdict = evaluate(
        keys,
        [signed_by("k1"), signed_by("k2"), sigstore_signed("s1")],
        [bad, sig("simple", k1, digest=OTHER_DIGEST), sig("simple", k1), sig("sigstore", s1)],
    )
    assert verdict.keys == (f"key {k1}", f"key {k2}", f"key {s1}")


def test_a_digest_reference_is_accepted_by_a_signature_of_any_tag_of_its_repository(
    keys: Path,
) -> None:
    k1 = str(keys / "k1")
    candidates = [sig("simple", k1, reference=f"{REPO}:release")]
    assert evaluate(keys, [signed_by("k1")], candidates, name=DIGESTED).keys == (f"key {k1}",)
    assert reason_of(keys, [signed_by("k1")], candidates, name=TAGGED) == "identity mismatch"


def test_remap_identity_accepts_the_vendor_signature_of_a_mirrored_image(keys: Path) -> None:
    k1 = str(keys / "k1")
    remap = {"type": "remapIdentity", "prefix": "example.com/ns", "signedPrefix": "vendor.com"}
    candidates = [sig("simple", k1, reference="vendor.com/repo:v1")]
    assert evaluate(keys, [signed_by("k1", remap)], candidates).keys == (f"key {k1}",)


def test_a_missing_key_file_is_an_error_naming_it(keys: Path) -> None:
    (keys / "k1").unlink()
    with pytest.raises(PolicyError) as err:
        evaluate(keys, [signed_by("k1")], [sig("simple", str(keys / "k1"))])
    assert err.value.reason == "key missing"
    assert str(err.value) == (
        f'{keys}/k1: key named by transports.docker["example.com/ns"][0] cannot be read: '
        "No such file or directory"
    )


@pytest.mark.parametrize("kind", ["fifo", "/dev/null", "directory", "too large"])
def test_a_key_that_is_no_key_file_is_refused_without_waiting(
    keys: Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """keyPath naming a FIFO blocked the check (the host's `inspect`, `check`) for ever, and a
    device such as /dev/zero was read without end: refused now, naming the key."""
    key = keys / "k1"
    key.unlink()
    if kind == "fifo":
        os.mkfifo(key)
    elif kind == "/dev/null":
        key.symlink_to("/dev/null")
    elif kind == "directory":
        key.mkdir()
    else:
        key.write_bytes(b"k" * 1001)
        monkeypatch.setattr(policy, "KEY_LIMIT", 1000, raising=False)
    with hard_timeout(10), pytest.raises(PolicyError) as caught:  # the old code: open() waits
        evaluate(keys, [signed_by("k1")], [sig("simple", str(key))])
    err = caught.value
    assert err.reason == "key missing"
    what = "is larger than 1000 bytes" if kind == "too large" else "is not a regular file"
    assert str(err).startswith(f"{key}: key named by transports.docker")
    assert what in str(err)


def test_key_data_is_the_key(keys: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []

    def verify(sig: Signature, keys: list[tuple[str, bytes]]) -> Verified:
        seen.extend(keys)
        return Verified("k", Claims(DIGEST, TAGGED))

    monkeypatch.setattr(signatures, "verify", verify)
    req = {"type": "sigstoreSigned", "keyData": base64.b64encode(b"PEM").decode()}
    evaluate(keys, [req], [sig("sigstore", "x")])
    assert seen == [('keyData of transports.docker["example.com/ns"][0]', b"PEM")]
    # Wrapped as `base64` writes it (76 columns), CRLF too: Go's decoder skips line ends.
    pem = b"-----BEGIN PUBLIC KEY-----\n" + b"k" * 200 + b"\n-----END PUBLIC KEY-----\n"
    for end in ("\n", "\r\n"):
        seen.clear()
        wrapped = base64.encodebytes(pem).decode().replace("\n", end)
        evaluate(keys, [{"type": "sigstoreSigned", "keyData": wrapped}], [sig("sigstore", "x")])
        assert [data for _, data in seen] == [pem]
    for bad in ("UEVN\t", "UEVN ", "UEV", "UEVN\u00e9"):
        with pytest.raises(PolicyError, match=r"\.keyData is not base64$"):
            evaluate(keys, [{"type": "sigstoreSigned", "keyData": bad}], [sig("sigstore", "x")])


def test_oci_images_are_accepted_only_under_exact_identity_rules(keys: Path) -> None:
    k1 = str(keys / "k1")
    for identity, accepted in (
        (None, False),
        ({"type": "exactReference", "dockerReference": "vendor.com/p:v1"}, True),
    ):
        req = signed_by("k1", identity)
        req["keyPath"] = k1
        pol = parse({"default": [req]})
        candidates = [sig("simple", k1, reference="vendor.com/p:v1")]
        if accepted:
            verdict = policy.evaluate(pol, "oci", "/srv/layout", MANIFEST, candidates)
            assert verdict == policy.Verdict("default", (f"key {k1}",))
        else:
            with pytest.raises(PolicyError, match=r"^oci:/srv/layout: identity mismatch"):
                policy.evaluate(pol, "oci", "/srv/layout", MANIFEST, candidates)


# Parsing: strict.

GOOD_SIGNED_BY = signed_by("k1")


MALFORMED: list[tuple[Any, str]] = [
    ([], "the policy must be an object"),
    ({}, 'the policy has no "default"'),
    ({"default": []}, "default must be a non-empty list of requirements"),
    ({"default": ACCEPT, "extra": 1}, "extra is not a known field"),
    ({"default": [{}]}, "default[0].type must be a string"),
    (
        {"default": [{"type": "acceptAll"}]},
        'default[0].type "acceptAll" is not a requirement type',
    ),
    ({"default": [{"type": "reject", "x": 1}]}, "default[0].x is not a known field"),
    (
        {"default": [{"type": "insecureAcceptAnything", "keyPath": "/k"}]},
        "default[0].keyPath is not a known field",
    ),
    ({"default": ACCEPT, "transports": []}, "transports must be an object"),
    (
        {"default": ACCEPT, "transports": {"dokcer": {}}},
        "transports.dokcer is not a transport containers know",
    ),
    (
        {"default": ACCEPT, "transports": {"docker": []}},
        "transports.docker must be an object of scopes",
    ),
    (
        {"default": ACCEPT, "transports": {"docker": {"": []}}},
        'transports.docker[""] must be a non-empty list',
    ),
    (
        {"default": ACCEPT, "transports": {"docker": {"busybox": ACCEPT}}},
        'transports.docker["busybox"] is not in the fully expanded form',
    ),
    (
        {"default": ACCEPT, "transports": {"docker": {"library/busybox": ACCEPT}}},
        'transports.docker["library/busybox"] is not in the fully expanded form',
    ),
    (
        {"default": ACCEPT, "transports": {"docker": {"index.docker.io/x": ACCEPT}}},
        "is not in the fully expanded form",
    ),
    (
        {"default": ACCEPT, "transports": {"docker": {"example.com/UP": ACCEPT}}},
        'transports.docker["example.com/UP"] is not a valid scope',
    ),
    (
        {"default": ACCEPT, "transports": {"docker": {"example*.*.com": ACCEPT}}},
        'transports.docker["example*.*.com"] is not a valid scope',
    ),
    (
        {"default": ACCEPT, "transports": {"docker": {f"e.com/x:t@{DIGEST}": ACCEPT}}},
        "has both a tag and a digest",
    ),
    (
        {"default": ACCEPT, "transports": {"oci": {"relative": ACCEPT}}},
        'transports.oci["relative"] must be an absolute, canonical path other than /',
    ),
    (
        {"default": ACCEPT, "transports": {"oci": {"/": ACCEPT}}},
        'transports.oci["/"] must be an absolute',
    ),
    (
        {"default": ACCEPT, "transports": {"oci-archive": {"/a/../b": ACCEPT}}},
        'transports.oci-archive["/a/../b"] must be an absolute, canonical',
    ),
    # Two leading slashes: Python's normpath keeps them (POSIX leaves // to the system), Go's
    # Clean does not, so containers/image refuses the scope; it never matched here (an image's
    # path is resolved to one slash), and its images went to the default.
    (
        {"default": ACCEPT, "transports": {"oci": {"//srv/images": REJECT}}},
        'transports.oci["//srv/images"] must be an absolute, canonical',
    ),
    (
        {"default": ACCEPT, "transports": {"dir": {"//srv/images": REJECT}}},
        'transports.dir["//srv/images"] must be an absolute, canonical',
    ),
    # Scopes of transports bootc-live does not evaluate are validated as containers/image
    # validates them: it refuses the whole policy when one is malformed.
    (
        {"default": ACCEPT, "transports": {"containers-storage": {"a.com/x": REJECT}}},
        'transports.containers-storage["a.com/x"] is not a containers-storage scope ([DRIVER@]ROOT',
    ),
    (
        {"default": ACCEPT, "transports": {"containers-storage": {"[overlay@var]x": REJECT}}},
        "is not a containers-storage scope ([DRIVER@]ROOT",
    ),
    (
        {"default": ACCEPT, "transports": {"containers-storage": {"[/var]x@sha256:12": REJECT}}},
        "is not a containers-storage scope ([DRIVER@]ROOT",
    ),
    (
        {"default": ACCEPT, "transports": {"sif": {"relative.sif": REJECT}}},
        'transports.sif["relative.sif"] must be an absolute, canonical path',
    ),
    (
        {"default": ACCEPT, "transports": {"sif": {"/a/": REJECT}}},
        'transports.sif["/a/"] must be an absolute, canonical path',
    ),
    (
        {"default": ACCEPT, "transports": {"docker-archive": {"/x.tar": ACCEPT}}},
        'transports.docker-archive["/x.tar"] is not valid: docker-archive has only the scope',
    ),
    ({"default": [{"type": "signedBy", "keyPath": "/k"}]}, 'default[0] has no "keyType"'),
    (
        {"default": [{**GOOD_SIGNED_BY, "keyType": "X509Certificates"}]},
        'default[0].keyType "X509Certificates" is not supported (only GPGKeys)',
    ),
    (
        {"default": [{**GOOD_SIGNED_BY, "keyType": "signedByGPGKeys"}]},
        'default[0].keyType "signedByGPGKeys" is not supported',
    ),
    ({"default": [{**GOOD_SIGNED_BY, "keyType": 1}]}, "default[0].keyType 1 is not supported"),
    (
        {"default": [{"type": "signedBy", "keyType": "GPGKeys"}]},
        "default[0] needs exactly one of keyPath, keyPaths and keyData, not 0",
    ),
    (
        {"default": [{**GOOD_SIGNED_BY, "keyData": "YQ=="}]},
        "default[0] needs exactly one of keyPath, keyPaths and keyData, not 2",
    ),
    (
        {"default": [{**GOOD_SIGNED_BY, "keyPath": "keys/k"}]},
        "default[0].keyPath must be an absolute path",
    ),
    (
        {"default": [{**GOOD_SIGNED_BY, "keyPath": 3}]},
        "default[0].keyPath must be a string",
    ),
    (
        {"default": [{"type": "signedBy", "keyType": "GPGKeys", "keyPaths": []}]},
        "default[0].keyPaths must not be empty",
    ),
    (
        {"default": [{"type": "signedBy", "keyType": "GPGKeys", "keyPaths": "/k"}]},
        "default[0].keyPaths must be a list of paths",
    ),
    (
        {"default": [{"type": "signedBy", "keyType": "GPGKeys", "keyPaths": ["/a", "b"]}]},
        "default[0].keyPaths[1] must be an absolute path",
    ),
    (
        {"default": [{"type": "signedBy", "keyType": "GPGKeys", "keyData": "not base64!"}]},
        "default[0].keyData is not base64",
    ),
    (
        {"default": [{"type": "signedBy", "keyType": "GPGKeys", "keyData": "YWJjé"}]},
        "default[0].keyData is not base64",
    ),
    (
        {"default": [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/k\u0000ey"}]},
        "default[0].keyPath contains a NUL byte, which no file name can",
    ),
    (
        {"default": [{"type": "signedBy", "keyType": "GPGKeys", "keyPaths": ["/k\ud800"]}]},
        "default[0].keyPaths[0] is not a file name",
    ),
    (
        {
            "default": [
                {
                    **GOOD_SIGNED_BY,
                    "signedIdentity": {"type": "exactReference", "dockerReference": "a.com/b:täg"},
                }
            ]
        },
        "default[0].signedIdentity.dockerReference is not valid",
    ),
    (
        {"default": [{"type": "signedBy", "keyType": "GPGKeys", "keyData": ""}]},
        "default[0].keyData must be a non-empty string",
    ),
    (
        {"default": [{"type": "sigstoreSigned", "keyPath": "/k", "fulcio": {}}]},
        "default[0].fulcio is not supported: only public keys (keyPath, keyPaths, keyData) are",
    ),
    (
        {"default": [{"type": "sigstoreSigned", "keyPath": "/k", "rekorPublicKeyPath": "/r"}]},
        "default[0].rekorPublicKeyPath is not supported",
    ),
    (
        {"default": [{"type": "sigstoreSigned", "keyPath": "/k", "rekorPublicKeyData": "YQ=="}]},
        "default[0].rekorPublicKeyData is not supported",
    ),
    (
        {"default": [{"type": "sigstoreSigned", "keyPath": "/k", "keyType": "GPGKeys"}]},
        "default[0].keyType is not a known field",
    ),
    (
        {"default": [{"type": "sigstoreSigned"}]},
        "default[0] needs exactly one of keyPath, keyPaths and keyData, not 0",
    ),
    (
        {"default": [{**GOOD_SIGNED_BY, "signedIdentity": "matchExact"}]},
        "default[0].signedIdentity must be an object",
    ),
    (
        {"default": [{**GOOD_SIGNED_BY, "signedIdentity": {}}]},
        "default[0].signedIdentity.type must be a string",
    ),
    (
        {"default": [{**GOOD_SIGNED_BY, "signedIdentity": {"type": "matchAnything"}}]},
        'default[0].signedIdentity.type "matchAnything" is not an identity rule',
    ),
    (
        {"default": [{**GOOD_SIGNED_BY, "signedIdentity": {"type": "matchExact", "x": 1}}]},
        "default[0].signedIdentity.x is not a known field",
    ),
    (
        {"default": [{**GOOD_SIGNED_BY, "signedIdentity": {"type": "exactReference"}}]},
        'default[0].signedIdentity has no "dockerReference"',
    ),
    (
        {
            "default": [
                {
                    **GOOD_SIGNED_BY,
                    "signedIdentity": {
                        "type": "exactReference",
                        "dockerReference": "vendor.com/p",
                    },
                }
            ]
        },
        "default[0].signedIdentity.dockerReference has neither a tag nor a digest",
    ),
    (
        {
            "default": [
                {
                    **GOOD_SIGNED_BY,
                    "signedIdentity": {"type": "exactReference", "dockerReference": "V/p:1"},
                }
            ]
        },
        "default[0].signedIdentity.dockerReference is not valid",
    ),
    (
        {
            "default": [
                {
                    **GOOD_SIGNED_BY,
                    "signedIdentity": {"type": "exactRepository", "dockerRepository": 5},
                }
            ]
        },
        "default[0].signedIdentity.dockerRepository must be a non-empty string",
    ),
    (
        {
            "default": [
                {
                    **GOOD_SIGNED_BY,
                    "signedIdentity": {"type": "exactRepository", "dockerReference": "a/b"},
                }
            ]
        },
        "default[0].signedIdentity.dockerReference is not a known field",
    ),
    (
        {
            "default": [
                {
                    **GOOD_SIGNED_BY,
                    "signedIdentity": {"type": "remapIdentity", "prefix": "a.com"},
                }
            ]
        },
        'default[0].signedIdentity has no "signedPrefix"',
    ),
    (
        {
            "default": [
                {
                    **GOOD_SIGNED_BY,
                    "signedIdentity": {
                        "type": "remapIdentity",
                        "prefix": "Under_score",
                        "signedPrefix": "a.com",
                    },
                }
            ]
        },
        "default[0].signedIdentity.prefix must be host[:port] or host[:port]/namespace",
    ),
    (
        {
            "default": [
                {
                    **GOOD_SIGNED_BY,
                    "signedIdentity": {
                        "type": "remapIdentity",
                        "prefix": "a.com",
                        "signedPrefix": "b.com/x:tag",
                    },
                }
            ]
        },
        "default[0].signedIdentity.signedPrefix must be host[:port]",
    ),
]


# Where containers/image loads what we refuse: an unknown transport and docker scopes that
# can never match (it does not validate them), keyTypes it refuses only when evaluating, and
# what an initramfs cannot carry (relative key paths, which depend on the working directory).
STRICTER_THAN_CONTAINERS_IMAGE = (
    "contains a NUL byte, which no file name can",  # it fails when it opens the key
    "is not a file name",  # it reads a lone surrogate as U+FFFD
    "transports.dokcer is not a transport containers know",
    "is not in the fully expanded form",
    "is not a valid scope",
    "has both a tag and a digest",
    'keyType "X509Certificates" is not supported',
    'keyType "signedByGPGKeys" is not supported',
    "must be an absolute path",
    "keyPaths must not be empty",
    "keyData must be a non-empty string",
)


@pytest.mark.parametrize(("doc", "message"), MALFORMED)
def test_malformed_entries_are_errors_naming_their_path(doc: Any, message: str) -> None:
    with pytest.raises(PolicyError) as err:
        parse(doc)
    assert err.value.reason == "malformed policy"
    assert str(err.value).startswith("policy.json: ")
    assert message in str(err.value)


@pytest.mark.parametrize(("doc", "message"), MALFORMED)
def test_skopeo_refuses_the_same_policies_unless_we_are_stricter(
    doc: Any, message: str, tmp_path: Path
) -> None:
    """containers/image's own verdict on each malformed policy (skopeo loads the policy
    before it opens anything): refused too, except where we are knowingly stricter."""
    if shutil.which("skopeo") is None:
        pytest.skip("needs skopeo")
    (tmp_path / "policy.json").write_text(json.dumps(doc))
    done = subprocess.run(
        ["skopeo", "copy", "--policy", str(tmp_path / "policy.json"),
         f"dir:{tmp_path}/missing", f"dir:{tmp_path}/out"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode != 0  # the source does not exist: only the reason differs
    refused = "Error loading trust policy: invalid policy" in done.stderr
    stricter = any(text in message for text in STRICTER_THAN_CONTAINERS_IMAGE)
    assert refused is not stricter, done.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            b'{"default": [{"type": "reject"}], "default": [{"type": "insecureAcceptAnything"}]}',
            'the policy has "default" twice',
        ),
        (
            b'{"default": [{"type": "reject", "type": "insecureAcceptAnything"}]}',
            'default[0] has "type" twice',
        ),
        (
            b'{"default": [{"type": "reject"}], "transports": {"docker": '
            b'{"a.com": [{"type": "reject"}], "a.com": [{"type": "insecureAcceptAnything"}]}}}',
            'transports.docker has "a.com" twice',
        ),
        (
            b'{"default": [{"type": "reject"}], "transports": {"oci": {}, "oci": {}}}',
            'transports has "oci" twice',
        ),
        (b'{"default": [{"type": "reject"}],}', "not a valid policy"),
        (b'{"default": [{"type": "reject"}]} x', "not a valid policy"),
        (b"\xff", "not a valid policy: not UTF-8 text"),
        (b'{"default": NaN}', "not a valid policy: NaN is not a JSON value"),
        (b"[" * 100 + b"]" * 100, "not a valid policy: nested more than 64 levels deep"),
    ],
)
def test_duplicates_and_broken_json_are_errors(text: bytes, message: str) -> None:
    with pytest.raises(PolicyError) as err:
        Policy.parse(text, "policy.json")
    assert str(err.value).startswith("policy.json: ")
    assert message in str(err.value)


def test_load_names_an_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as err:
        Policy.load(str(tmp_path / "nope.json"))
    assert err.value.line() == f"{tmp_path}/nope.json: no such policy file; fix bootc.policy="
    with pytest.raises(PolicyError) as err:
        Policy.load(str(tmp_path))  # a directory
    assert str(err.value) == f"policy {tmp_path} is not a regular file (a directory)"


def test_a_complete_policy_parses_to_what_it_says() -> None:
    pol = parse(
        {
            "default": REJECT,
            "transports": {
                "docker": {
                    "quay.io/team": [
                        {
                            "type": "signedBy",
                            "keyType": "GPGKeys",
                            "keyPaths": ["/k/a.gpg", "/k/b.gpg"],
                        },
                        {
                            "type": "sigstoreSigned",
                            "keyPath": "/k/cosign.pub",
                            "signedIdentity": {"type": "matchRepository"},
                        },
                    ],
                },
                "oci-archive": {"/srv": [{"type": "sigstoreSigned", "keyData": "UEVN"}]},
                # Transports bootc-live never reads are parsed as strictly, and left alone.
                "containers-storage": {"[overlay@/var/lib/x]": ACCEPT},
                "docker-daemon": {"": ACCEPT},
            },
        }
    )
    scope, reqs = pol.requirements_for("docker", "quay.io/team/app:1")
    assert scope == 'docker "quay.io/team"'
    assert reqs == (
        policy.Requirement(
            "signedBy", 'transports.docker["quay.io/team"][0]', ("/k/a.gpg", "/k/b.gpg")
        ),
        policy.Requirement(
            "sigstoreSigned",
            'transports.docker["quay.io/team"][1]',
            ("/k/cosign.pub",),
            identity=Identity("matchRepository"),
        ),
    )
    assert pol.requirements_for("oci-archive", "/srv/root.oci")[1][0].key_data == b"PEM"
    assert pol.key_paths() == ["/k/a.gpg", "/k/b.gpg", "/k/cosign.pub"]


# containers/image's own fixtures (Debian's golang-github-containers-image-dev), read in place.


def need_fixtures() -> None:
    if not FIXTURES.is_dir():
        pytest.skip("needs golang-github-containers-image-dev (./setup installs it)")


def test_containers_image_policy_fixture_is_refused_at_its_first_unsupported_entry() -> None:
    """Its policy.json uses keyTypes and signedBaseLayer that containers/image itself does not
    implement: refused, naming the first, instead of half-read."""
    need_fixtures()
    with pytest.raises(PolicyError) as err:
        Policy.load(str(FIXTURES / "policy.json"))
    assert str(err.value) == (
        f"{FIXTURES}/policy.json: "
        'transports.docker["example.com/hardened"][1].keyType "signedByGPGKeys" is not '
        "supported (only GPGKeys)"
    )


def supported_part(doc: dict[str, Any]) -> dict[str, Any]:
    """The fixture without the scopes that use what we (and containers/image) do not."""

    def supported(req: dict[str, Any]) -> bool:
        return req["type"] != "signedBaseLayer" and req.get("keyType", "GPGKeys") == "GPGKeys"

    docker = {s: r for s, r in doc["transports"]["docker"].items() if all(map(supported, r))}
    return {**doc, "transports": {**doc["transports"], "docker": docker}}


def test_containers_image_policy_fixture_supported_scopes_read_as_containers_image_reads_them() -> (
    None
):
    need_fixtures()
    doc = supported_part(json.loads((FIXTURES / "policy.json").read_text()))
    assert sorted(doc["transports"]["docker"]) == [
        "example.com/playground",
        "example.com/production",
        "example.com/sigstore/key-data-example",
        "example.com/sigstore/key-path-example",
        "private-mirror:5000/vendor-mirror",
        "registry.redhat.io/beta",
    ]
    pol = parse(doc)
    assert pol.requirements_for("dir", "/any/dir") == (
        'dir ""',
        (policy.Requirement("insecureAcceptAnything", 'transports.dir[""][0]'),),
    )
    assert (
        pol.requirements_for("docker", "example.com/playground/x:1")[1][0].type
        == "insecureAcceptAnything"
    )
    assert pol.requirements_for("docker", "example.com/other:1")[1][0].type == "reject"
    _, (beta,) = pol.requirements_for("docker", "registry.redhat.io/beta/ubi:9")
    assert beta.key_paths == (
        "/keys/RH-production-signing-key-gpg-keyring",
        "/keys/RH-beta-signing-key-gpg-keyring",
    )
    _, (mirror,) = pol.requirements_for("docker", "private-mirror:5000/vendor-mirror/p/i:latest")
    assert mirror.identity == Identity(
        "remapIdentity",
        prefix="private-mirror:5000/vendor-mirror",
        signed_prefix="vendor.example.com",
    )
    assert mirror.identity.matches(
        DockerReference.parse("private-mirror:5000/vendor-mirror/p/i:latest"),
        "vendor.example.com/p/i:latest",
    )
    _, (data,) = pol.requirements_for("docker", "example.com/sigstore/key-data-example:1")
    assert (data.type, data.key_data) == ("sigstoreSigned", b"nonsense")
    _, (path,) = pol.requirements_for("docker", "example.com/sigstore/key-path-example:1")
    assert (path.key_paths, path.identity) == (("/keys/public-key",), Identity("matchRepository"))


def test_the_systems_default_policy_parses() -> None:
    """Debian's containers-common policy.json (insecureAcceptAnything), when installed."""
    path = Path("/etc/containers/policy.json")
    if not path.exists():
        pytest.skip("no /etc/containers/policy.json")
    pol = Policy.load(str(path))
    assert pol.requirements_for("docker", "busybox:latest")[0] in ("default", 'docker ""')


def test_a_name_that_pins_a_digest_names_that_image_only() -> None:
    """bootc.identity=REPO@sha256:X (or --identity) accepts image X only, whatever the
    signatures say of the repository: another image is a digest mismatch before any key."""
    accept = Policy.parse(b'{"default": [{"type": "insecureAcceptAnything"}]}', "policy.json")
    manifest = b'{"schemaVersion": 2}'
    pinned = "example.com/app@sha256:" + hashlib.sha256(manifest).hexdigest()
    assert policy.evaluate(accept, "docker", pinned, manifest, []).scope == "default"
    other = "example.com/app@sha256:" + hashlib.sha256(b"another").hexdigest()
    with pytest.raises(PolicyError) as err:
        policy.evaluate(accept, "docker", other, manifest, [])
    assert err.value.reason == policy.DIGEST_MISMATCH
    assert str(err.value).startswith(f"docker://{other}: the name pins sha256:")
