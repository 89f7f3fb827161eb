"""Signatures verified with the real tools, and the policy's verdicts on them.

- GPG simple signing end to end: keys made by gpg in the test, images pushed to the real
  docker-registry and signed by skopeo (`copy --sign-by`, a registries.d `lookaside-staging`);
  our verdict on each case must be skopeo's (`skopeo copy --policy`, same inputs).
- containers/image's own signatures and keys (Debian's golang-github-containers-image-dev,
  read in place): GPG ones cross-checked with `skopeo standalone-verify`; sigstore (cosign)
  ones with the verdicts of containers/image's policy_eval_sigstore_test.go (Debian's skopeo
  is built without sigstore).
- sigstore signatures the test makes with the openssl command, per cosign's format.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bootc_live.runtime import policy, registriesd, signatures
from bootc_live.runtime.policy import DockerReference, Policy, PolicyError
from bootc_live.runtime.signatures import Signature, SignatureError
from imagegen import build_layout, f, layer_tar
from registries import Pki, Registry, docker_registry, make_pki
from signing import (
    GpgKey,
    cosign_key,
    cosign_payload,
    cosign_sign,
    digest_of,
    gpg_keys,
    gpg_req,
    need_tools,
    openssl,
    raw_manifest,
    run,
    skopeo_copy,
)
from unpackers import need

FIXTURES = Path("/usr/share/gocode/src/github.com/containers/image/signature/fixtures")
FIXTURE_FPR = "1D8230F6CDB6A06716E414C1DB72F2188BB46CC8"  # public-key.gpg (fixtures_info_test.go)


def need_fixtures() -> None:
    need(FIXTURES.is_dir(), "needs golang-github-containers-image-dev (./setup installs it)")


def sign_policy(path: Path, reqs: list[dict[str, Any]]) -> Policy:
    """A policy (written to `path`, for skopeo too) that applies `reqs` to every docker image
    and accepts the destinations skopeo copies to."""
    doc = {
        "default": [{"type": "reject"}],
        "transports": {"docker": {"": reqs}, "dir": {"": [{"type": "insecureAcceptAnything"}]}},
    }
    path.write_text(json.dumps(doc))
    return Policy.load(str(path))


# GPG keys.


@pytest.fixture(scope="module")
def gnupg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, GpgKey, GpgKey]]:
    """A throwaway GNUPGHOME with two signing keys: the trusted one and another."""
    home = tmp_path_factory.mktemp("gnupg")
    with gpg_keys(home, "trusted", "other") as keys:
        yield home, keys["trusted"], keys["other"]


def test_gpgv_reads_armored_keys_only_after_dearmor(
    gnupg: tuple[Path, GpgKey, GpgKey],
) -> None:
    """gpgv 2.2 reads binary keyrings only: `dearmor` gives gpg's own export, byte for byte."""
    _, trusted, _ = gnupg
    assert signatures.dearmor(trusted.armored.read_bytes()) == trusted.public.read_bytes()
    assert signatures.dearmor(trusted.public.read_bytes()) == trusted.public.read_bytes()
    two = trusted.armored.read_bytes() * 2
    assert signatures.dearmor(two) == trusted.public.read_bytes() * 2
    # What other tools write: headers, no CRC line, CRLF, no blank line without headers.
    lines = trusted.armored.read_text().splitlines()
    assert lines[1] == "" and lines[-2].startswith("=") and len(lines[-2]) == 5
    variants = [
        [lines[0], "Comment: made by a test", "Version: 1", *lines[1:]],
        [*lines[:-2], lines[-1]],
        [lines[0], *lines[2:]],
    ]
    for variant in variants:
        for newline in ("\n", "\r\n"):
            text = newline.join(variant) + newline
            assert signatures.dearmor(text.encode()) == trusted.public.read_bytes()
    with pytest.raises(SignatureError) as err:
        signatures.dearmor(f"{lines[0]}\n\n!!!!\n{lines[-1]}\n".encode())
    assert (err.value.reason, str(err.value)) == (
        "unusable key",
        "an ASCII-armored key is not base64",
    )


def test_a_compressed_payload_is_cut_at_the_limit(
    gnupg: tuple[Path, GpgKey, GpgKey], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A few KB of bzip2 expand to 64 MiB: gpgv is ended once its output passes the payload
    limit (/tmp is RAM at boot), whoever signed it; the signature is invalid, never a tool
    failure."""
    home, trusted, other = gnupg
    zeros = tmp_path / "zeros"
    with zeros.open("wb") as out:
        out.truncate(64 << 20)
    written = []

    def watched(argv: list[str], **kwargs: Any) -> Any:
        try:
            return real_run(argv, **kwargs)
        finally:  # the payload file only grows: its size now is the most gpgv wrote
            written.append(Path(argv[argv.index("--output") + 1]).stat().st_size)

    real_run = signatures.run
    monkeypatch.setattr(signatures, "run", watched)
    for key in (trusted, other):
        bomb = tmp_path / f"{key.fingerprint}.gpg"
        done = run(
            "gpg", "--batch", "--sign", "--local-user", key.fingerprint, "--compress-algo",
            "bzip2", "--compress-level", "9", "--output", str(bomb), str(zeros),
            env={"GNUPGHOME": str(home)},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert bomb.stat().st_size < 64 << 10
        with pytest.raises(SignatureError) as err:
            signatures.verify(
                signatures.from_blob(bomb.read_bytes()), [("k", trusted.public.read_bytes())]
            )
        assert (err.value.reason, str(err.value)) == (
            "invalid signature",
            f"the signed payload is larger than {signatures.PAYLOAD_LIMIT} bytes",
        )
    assert written == [signatures.PAYLOAD_LIMIT + 1] * 2


def test_a_key_gpgv_cannot_read_is_named_whatever_key_signed(
    gnupg: tuple[Path, GpgKey, GpgKey], tmp_path: Path
) -> None:
    """gpgv stops at a keyring it cannot read: a good signature by the next key was told as
    "signed by key …, which is not trusted". The key at fault is named, in any order."""
    home, trusted, _ = gnupg
    message = tmp_path / "message.gpg"
    done = run(
        "gpg", "--batch", "--sign", "--local-user", trusted.fingerprint, "--output",
        str(message), str(trusted.public), env={"GNUPGHOME": str(home)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    signature = signatures.from_blob(message.read_bytes())
    key = trusted.public.read_bytes()
    for junk in (b"not a key\n", bytes(range(256)), key[:-7], key[:1]):
        for keys in (
            [("junk.gpg", junk), ("trusted", key)],
            [("trusted", key), ("junk.gpg", junk)],
        ):
            with pytest.raises(SignatureError) as err:
                signatures.verify(signature, keys)
            assert (err.value.reason, str(err.value)) == (
                "unusable key",
                "junk.gpg: not an OpenPGP public key",
            )


@pytest.mark.parametrize("keyring", sorted(Path("/usr/share/keyrings").glob("*.gpg")))
def test_the_keyrings_debian_ships_are_public_keys(keyring: Path) -> None:
    assert signatures._public_keyring(keyring.read_bytes())


# containers/image's GPG fixtures, cross-checked with skopeo standalone-verify.

# signature file → our reason (None: verified); skopeo standalone-verify's verdict must agree.
GPG_FIXTURES = {
    "image.signature": None,
    "no-optional-fields.signature": None,
    # Two messages back to back: gpgv (and gpgme, hence skopeo) verify the first, and the
    # payload is the one verified.
    "double.signature": None,
    "corrupt.signature": "bad signature",
    "corrupt.signature-v3": "bad signature",
    "expired.signature": "bad signature",
    "unknown-key.signature": "unknown key",
    "unknown-key.signature-v3": "unknown key",
    "invalid-blob.signature": "invalid signature",
    "invalid-blob.signature-v3": "invalid signature",
    "unsigned-literal.signature": "invalid signature",
    "unsigned-encrypted.signature": "invalid signature",
}


@pytest.fixture(scope="module")
def fixture_keyring(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A GNUPGHOME holding the fixtures' public key, for skopeo standalone-verify."""
    need_tools("gpg", "gpgv", "gpgconf", "skopeo")
    need_fixtures()
    home = tmp_path_factory.mktemp("fixture-gnupg")
    home.chmod(0o700)
    env = {"GNUPGHOME": str(home)}
    try:
        assert run("gpg", "--import", str(FIXTURES / "public-key.gpg"), env=env).returncode == 0
        yield home
    finally:
        run("gpgconf", "--kill", "all", env=env)


@pytest.mark.parametrize("name", sorted(GPG_FIXTURES))
def test_containers_image_gpg_signatures(name: str, fixture_keyring: Path) -> None:
    blob = (FIXTURES / name).read_bytes()
    keys = [("public-key.gpg", (FIXTURES / "public-key.gpg").read_bytes())]
    expected = GPG_FIXTURES[name]
    if expected is None:
        verified = signatures.verify(signatures.from_blob(blob), keys)
        assert verified.key == f"GPG key {FIXTURE_FPR} (public-key.gpg)"
        assert verified.claims == signatures.Claims(
            "sha256:20bf21ed457b390829cdbeec8795a7bea1626991fda603e0d01b4e7f60427e55",
            "testing/manifest",
        )
    else:
        with pytest.raises(SignatureError) as err:
            signatures.verify(signatures.from_blob(blob), keys)
        assert err.value.reason == expected
    skopeo = run(
        "skopeo", "standalone-verify", str(FIXTURES / "image.manifest.json"),
        "docker.io/testing/manifest", FIXTURE_FPR, str(FIXTURES / name),
        env={"GNUPGHOME": str(fixture_keyring)},
    )  # fmt: skip
    assert (skopeo.returncode == 0) is (expected is None), skopeo.stderr


@pytest.mark.parametrize(
    "optional",
    [
        {"creator": "me", "timestamp": 1_700_000_000},
        None,
        {"other": [1]},
        {"timestamp": 1.0},
        {"creator": 5},
        {"timestamp": "now"},
        {"timestamp": 1.5},
        {"timestamp": True},
        {"creator": None, "timestamp": None},
        "duplicate",
        # Go reads a number as a float64 first: 2^63 - 1 is 2^63 there, beyond int64.
        {"timestamp": 2**63 - 1},
        {"timestamp": 2**63 - 512},
        {"timestamp": -(2**63)},
        {"timestamp": 1e18},
    ],
)
def test_optional_claims_are_read_as_skopeo_reads_them(
    optional: Any, gnupg: tuple[Path, GpgKey, GpgKey], tmp_path: Path
) -> None:
    """The verdict of skopeo standalone-verify (containers/image) on the same signature."""
    need_tools("skopeo")
    home, trusted, _ = gnupg
    manifest = tmp_path / "manifest.json"
    manifest.write_bytes(b'{"schemaVersion": 2}')
    critical = {
        "type": signatures.SIMPLE_TYPE,
        "image": {"docker-manifest-digest": digest_of(manifest.read_bytes())},
        "identity": {"docker-reference": "example.com/x:v1"},
    }
    text = json.dumps({"critical": critical, "optional": optional})
    if optional == "duplicate":
        text = text.replace('"duplicate"', '{"creator": "a", "creator": "b"}')
    (tmp_path / "payload").write_text(text)
    signed = tmp_path / "signature"
    done = run(
        "gpg", "--batch", "--sign", "--local-user", trusted.fingerprint, "--output",
        str(signed), str(tmp_path / "payload"), env={"GNUPGHOME": str(home)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    skopeo = run(
        "skopeo", "standalone-verify", str(manifest), "example.com/x:v1", trusted.fingerprint,
        str(signed), env={"GNUPGHOME": str(home)},
    )  # fmt: skip
    try:
        signatures.verify(
            signatures.from_blob(signed.read_bytes()), [("k", trusted.public.read_bytes())]
        )
        ours = ""
    except SignatureError as err:
        ours = str(err)
    assert (ours == "") is (skopeo.returncode == 0), (ours, skopeo.stderr)
    assert ours == "" or ours.startswith("the signed payload is malformed: its optional "), ours


def test_a_signature_by_a_subkey_is_refused_as_skopeo_refuses_it(
    gnupg: tuple[Path, GpgKey, GpgKey], tmp_path: Path
) -> None:
    """containers/image trusts the primary keys of a key file: a signature made by a signing
    subkey is "not accepted" by skopeo's signedBy; it verified here (gpgv's VALIDSIG names
    the primary key too)."""
    need_tools("skopeo")
    home, _, _ = gnupg
    env = {"GNUPGHOME": str(home)}
    done = run(
        "gpg", "--batch", "--passphrase", "", "--quick-gen-key", "primary <p@example.com>",
        "ed25519", "cert", "never", env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    listing = run("gpg", "--with-colons", "--list-keys", "p@example.com", env=env).stdout
    primary = next(ln.split(":")[9] for ln in listing.splitlines() if ln.startswith("fpr"))
    done = run(
        "gpg", "--batch", "--passphrase", "", "--quick-add-key", primary, "ed25519", "sign",
        "never", env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    listing = run("gpg", "--with-colons", "--list-keys", primary, env=env).stdout
    subkey = [ln.split(":")[9] for ln in listing.splitlines() if ln.startswith("fpr")][1]
    public = tmp_path / "primary.gpg"
    armored = run("gpg", "--export", "--armor", primary, env=env).stdout
    public.write_bytes(signatures.dearmor(armored.encode()))
    manifest = tmp_path / "manifest.json"
    manifest.write_bytes(b'{"schemaVersion": 2}')
    critical = {
        "type": signatures.SIMPLE_TYPE,
        "image": {"docker-manifest-digest": digest_of(manifest.read_bytes())},
        "identity": {"docker-reference": "example.com/x:v1"},
    }
    (tmp_path / "payload").write_text(json.dumps({"critical": critical, "optional": {}}))
    signed = tmp_path / "signature-1"
    done = run(
        "gpg", "--batch", "--sign", "--local-user", primary, "--output", str(signed),
        str(tmp_path / "payload"), env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    # skopeo's signedBy, on the same files: a dir: image carries signature-1.
    pol = {
        "default": [{"type": "reject"}],
        "transports": {"dir": {"": [{
            "type": "signedBy", "keyType": "GPGKeys", "keyPath": str(public),
            "signedIdentity": {"type": "exactReference", "dockerReference": "example.com/x:v1"},
        }]}},
    }  # fmt: skip
    (tmp_path / "policy.json").write_text(json.dumps(pol))
    image = tmp_path / "image"
    image.mkdir()
    shutil.copy(manifest, image / "manifest.json")
    shutil.copy(signed, image / "signature-1")
    skopeo = run(
        "skopeo", "--policy", str(tmp_path / "policy.json"), "copy", f"dir:{image}",
        f"dir:{tmp_path / 'copy'}",
    )  # fmt: skip
    assert skopeo.returncode != 0
    assert f"Signature by key {subkey} is not accepted" in skopeo.stderr
    with pytest.raises(SignatureError) as err:
        signatures.verify(signatures.from_blob(signed.read_bytes()), [("k", public.read_bytes())])
    assert (err.value.reason, str(err.value)) == (
        "unknown key",
        f"signed by subkey {subkey} of key {primary}: only a signature by the primary key is "
        "accepted (as containers/image)",
    )


def test_containers_image_gpg_signature_through_the_policy(tmp_path: Path) -> None:
    """dir-img-valid: accepted for its identity, refused for another one, for another
    manifest and for an unsigned image — the cases of policy_eval_signedby_test.go."""
    need_tools("gpgv")
    need_fixtures()
    pol = sign_policy(
        tmp_path / "policy.json",
        [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": str(FIXTURES / "public-key.gpg")}],
    )

    def verdict(image_dir: str, name: str) -> str:
        d = FIXTURES / image_dir
        sigs = [signatures.from_blob(p.read_bytes()) for p in sorted(d.glob("signature-*"))]
        try:
            manifest = (d / "manifest.json").read_bytes()
            return policy.evaluate(pol, "docker", name, manifest, sigs).keys[0]
        except PolicyError as err:
            return err.reason

    trusted = f"GPG key {FIXTURE_FPR} ({FIXTURES}/public-key.gpg)"
    assert verdict("dir-img-valid", "testing/manifest:latest") == trusted
    assert verdict("dir-img-valid-2", "testing/manifest:latest") == trusted
    assert verdict("dir-img-mixed", "testing/manifest:latest") == trusted
    assert verdict("dir-img-valid", "testing/manifest:notlatest") == "identity mismatch"
    assert verdict("dir-img-modified-manifest", "testing/manifest:latest") == "digest mismatch"
    assert verdict("dir-img-unsigned", "testing/manifest:latest") == "no signature"


# GPG end to end: skopeo signs into a lookaside store, our verdicts against skopeo's.


@dataclass
class Signed:
    registry: Registry
    pki: Pki
    registries_d: Path
    lookaside: Path
    gnupg: Path
    trusted: GpgKey
    other: GpgKey

    def ref(self, name: str) -> str:
        return f"{self.registry.host}/{name}"

    def manifest(self, name: str) -> bytes:
        return raw_manifest(self.ref(name), self.pki)

    def signatures(self, name: str) -> list[Signature]:
        """The image's signatures, found as the boot will find them: registries.d says
        where the lookaside store is, signature-1, -2 … until one is missing."""
        config = registriesd.RegistriesD.load(str(self.registries_d))
        ref = DockerReference.parse(self.ref(name))
        digest = "sha256:" + hashlib.sha256(self.manifest(name)).hexdigest()
        found = []
        for url in registriesd.signature_urls(config.lookaside(ref), digest):
            assert url.startswith("file://")
            path = Path(url[len("file://") :])
            if not path.exists():
                return found
            found.append(signatures.from_blob(path.read_bytes()))
        raise AssertionError("unreachable")

    def ours(self, pol: Policy, name: str) -> str:
        """Our verdict: the key that verified, or the reason of the refusal."""
        try:
            verdict = policy.evaluate(
                pol, "docker", self.ref(name), self.manifest(name), self.signatures(name)
            )
        except PolicyError as err:
            return err.reason
        return ", ".join(verdict.keys)

    def skopeos(self, policy_file: Path, name: str, out: Path) -> bool:
        """Whether skopeo, with the same policy and registries.d, accepts the image."""
        done = run(
            "skopeo", "copy", "--quiet", "--policy", str(policy_file),
            "--registries.d", str(self.registries_d),
            "--src-cert-dir", str(self.pki.cert_dir),
            f"docker://{self.ref(name)}", f"dir:{out}",
        )  # fmt: skip
        if done.returncode != 0:
            assert "Source image rejected" in done.stderr, done.stderr
        return done.returncode == 0


def push(signed: Signed, layout: str, name: str, *, key: GpgKey | None, identity: str = "") -> None:
    skopeo_copy(
        f"oci:{layout}:latest",
        f"docker://{signed.ref(name)}",
        pki=signed.pki,
        registries=signed.registries_d,
        gnupg=signed.gnupg,
        sign_by=key,
        identity=identity,
    )


@pytest.fixture(scope="module")
def signed(
    gnupg: tuple[Path, GpgKey, GpgKey], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Signed]:
    """Images in a real registry, signed by skopeo into a file lookaside store:
    - signed/a:v1 by the trusted key (and signed/a:v2: the same manifest, no tag of its own);
    - other/b:v1 by the other key;
    - mirror/a:v1, the same image, signed by the trusted key as SIGNED_AS;
    - moved/c:v1, unsigned, then given signed/a's signature (another image's);
    - unsigned/d:v1."""
    need_tools("skopeo", "docker-registry")
    home, trusted, other = gnupg
    work = tmp_path_factory.mktemp("signed")
    layouts = {}
    for name in ("a", "b", "c", "d"):
        layouts[name] = str(work / f"layout-{name}")
        build_layout(layouts[name], [layer_tar([f(name, name.encode())])])
    lookaside = work / "lookaside"
    registries_d = work / "registries.d"
    registries_d.mkdir()
    # skopeo writes to lookaside-staging; the readers read `lookaside`: the same directory.
    (registries_d / "default.yaml").write_text(
        "# signatures beside the registry\n"
        "default-docker:\n"
        f"  lookaside: file://{lookaside}\n"
        f"  lookaside-staging: file://{lookaside}\n"
    )
    pki = make_pki(work)
    with docker_registry(work / "registry", pki) as registry:
        s = Signed(registry, pki, registries_d, lookaside, home, trusted, other)
        push(s, layouts["a"], "signed/a:v1", key=trusted)
        push(s, layouts["a"], "signed/a:v2", key=None)
        push(s, layouts["b"], "other/b:v1", key=other)
        push(s, layouts["a"], "mirror/a:v1", key=trusted, identity=s.ref("signed/a:v1"))
        push(s, layouts["c"], "moved/c:v1", key=None)
        push(s, layouts["d"], "unsigned/d:v1", key=None)
        digest_c = "sha256:" + hashlib.sha256(s.manifest("moved/c:v1")).hexdigest()
        digest_a = "sha256:" + hashlib.sha256(s.manifest("signed/a:v1")).hexdigest()
        moved = lookaside / f"moved/c@{digest_c.replace(':', '=')}"
        moved.mkdir(parents=True)
        shutil.copy(lookaside / f"signed/a@{digest_a.replace(':', '=')}/signature-1", moved)
        yield s


def test_skopeo_wrote_signatures_where_registriesd_says_they_are(signed: Signed) -> None:
    config = registriesd.RegistriesD.load(str(signed.registries_d))
    ref = DockerReference.parse(signed.ref("signed/a:v1"))
    assert config.lookaside(ref, write=True) == f"file://{signed.lookaside}/signed/a"
    digest = "sha256:" + hashlib.sha256(signed.manifest("signed/a:v1")).hexdigest()
    first = registriesd.signature_url(config.lookaside(ref), digest, 1)
    assert first == f"file://{signed.lookaside}/signed/a@sha256={digest[7:]}/signature-1"
    assert Path(first[7:]).is_file()
    assert len(signed.signatures("signed/a:v1")) == 1
    assert signed.signatures("unsigned/d:v1") == []


def test_skopeo_writes_where_registriesd_says_for_each_scope(
    signed: Signed, tmp_path: Path
) -> None:
    """The most specific scope that names a store wins; a scope without one falls through;
    without lookaside-staging, lookaside is where signatures are written."""
    host = signed.registry.host
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "scopes.yaml").write_text(
        "docker:\n"
        f"  {host}:\n"
        f"    lookaside-staging: file://{tmp_path}/host\n"
        f"  {host}/ns:\n"
        f"    lookaside: file://{tmp_path}/ns\n"
        f"  {host}/ns/app:v1:\n"
        "    use-sigstore-attachments: false\n"
    )
    layout = str(tmp_path / "layout")
    build_layout(layout, [layer_tar([f("scopes", b"x")])])
    config = registriesd.RegistriesD.load(str(tmp_path / "d"))
    here = Signed(**{**signed.__dict__, "registries_d": tmp_path / "d"})
    for name, store in (("ns/app:v1", "ns"), ("ns/deeper/app:v1", "ns"), ("other/x:v1", "host")):
        push(here, layout, name, key=signed.trusted)
        digest = "sha256:" + hashlib.sha256(here.manifest(name)).hexdigest()
        ours = config.lookaside(DockerReference.parse(here.ref(name)), write=True)
        repo = name.partition(":")[0]
        assert ours == f"file://{tmp_path}/{store}/{repo}"
        assert Path(registriesd.signature_url(ours, digest, 1)[len("file://") :]).is_file()


CASES = [
    # (case, image, requirement maker (trusted, other, signed) -> requirements, our verdict)
    ("trusted key", "signed/a:v1", lambda t, o, s: [gpg_req(t.public)], "trusted"),
    ("armored key file", "signed/a:v1", lambda t, o, s: [gpg_req(t.armored)], "trusted"),
    ("keyPaths", "signed/a:v1", lambda t, o, s: [gpg_req([o.public, t.public])], "trusted"),
    ("another key", "signed/a:v1", lambda t, o, s: [gpg_req(o.public)], "unknown key"),
    ("signed by another key", "other/b:v1", lambda t, o, s: [gpg_req(t.public)], "unknown key"),
    ("signature moved", "moved/c:v1", lambda t, o, s: [gpg_req(t.public)], "digest mismatch"),
    ("unsigned", "unsigned/d:v1", lambda t, o, s: [gpg_req(t.public)], "no signature"),
    ("reject", "signed/a:v1", lambda t, o, s: [{"type": "reject"}], "reject"),
    (
        "signed and rejected",
        "signed/a:v1",
        lambda t, o, s: [gpg_req(t.public), {"type": "reject"}],
        "reject",
    ),
    # The same manifest under another tag: the signature names v1.
    ("other tag, exact", "signed/a:v2", lambda t, o, s: [gpg_req(t.public)], "identity mismatch"),
    (
        "other tag, matchRepository",
        "signed/a:v2",
        lambda t, o, s: [gpg_req(t.public, {"type": "matchRepository"})],
        "trusted",
    ),
    (
        "mirror, matchRepository",
        "mirror/a:v1",
        lambda t, o, s: [gpg_req(t.public, {"type": "matchRepository"})],
        "identity mismatch",
    ),
    (
        "mirror, exactReference",
        "mirror/a:v1",
        lambda t, o, s: [
            gpg_req(t.public, {"type": "exactReference", "dockerReference": s("signed/a:v1")})
        ],
        "trusted",
    ),
    (
        "mirror, exactReference of another tag",
        "mirror/a:v1",
        lambda t, o, s: [
            gpg_req(t.public, {"type": "exactReference", "dockerReference": s("signed/a:v2")})
        ],
        "identity mismatch",
    ),
    (
        "mirror, exactRepository",
        "mirror/a:v1",
        lambda t, o, s: [
            gpg_req(t.public, {"type": "exactRepository", "dockerRepository": s("signed/a")})
        ],
        "trusted",
    ),
    (
        "mirror, remapIdentity",
        "mirror/a:v1",
        lambda t, o, s: [
            gpg_req(
                t.public,
                {"type": "remapIdentity", "prefix": s("mirror"), "signedPrefix": s("signed")},
            )
        ],
        "trusted",
    ),
]


@pytest.mark.parametrize(
    ("image", "make", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_gpg_verdicts_agree_with_skopeo(
    signed: Signed, tmp_path: Path, image: str, make: Any, expected: str
) -> None:
    policy_file = tmp_path / "policy.json"
    pol = sign_policy(policy_file, make(signed.trusted, signed.other, signed.ref))
    ours = signed.ours(pol, image)
    trusted = f"GPG key {signed.trusted.fingerprint} ("
    assert ours.startswith(trusted) if expected == "trusted" else ours == expected
    assert signed.skopeos(policy_file, image, tmp_path / "out") is (expected == "trusted")


def test_a_tampered_gpg_signature_is_refused(signed: Signed, tmp_path: Path) -> None:
    """One byte of the signed message changed (the compressed payload or the signature)."""
    pol = sign_policy(tmp_path / "policy.json", [gpg_req(signed.trusted.public)])
    (good,) = signed.signatures("signed/a:v1")
    manifest = signed.manifest("signed/a:v1")
    reasons = set()
    for offset in (len(good.data) // 3, len(good.data) - 5):
        data = bytearray(good.data)
        data[offset] ^= 0x01
        with pytest.raises(PolicyError) as err:
            policy.evaluate(pol, "docker", signed.ref("signed/a:v1"), manifest, [
                Signature("simple", bytes(data))
            ])  # fmt: skip
        reasons.add(err.value.reason)
    assert reasons <= {"bad signature", "invalid signature"} and reasons


# sigstore: containers/image's cosign fixtures.

COSIGN_IMAGE = "192.168.64.2:5000/cosign-signed-single-sample:latest"


def cosign_verdict(
    tmp_path: Path, image_dir: str, name: str, identity: dict[str, str] | None = None
) -> str:
    req: dict[str, Any] = {"type": "sigstoreSigned", "keyPath": str(FIXTURES / "cosign.pub")}
    if identity is not None:
        req["signedIdentity"] = identity
    pol = sign_policy(tmp_path / "policy.json", [req])
    d = FIXTURES / image_dir
    sigs = [signatures.from_blob(p.read_bytes()) for p in sorted(d.glob("signature-*"))]
    try:
        return policy.evaluate(pol, "docker", name, (d / "manifest.json").read_bytes(), sigs).keys[
            0
        ]
    except PolicyError as err:
        return err.reason


REPOSITORY = {"type": "matchRepository"}
EXACT = {"type": "matchExact"}
COSIGN_KEY = f"sigstore key {FIXTURES}/cosign.pub (ecdsa P-256)"


@pytest.mark.parametrize(
    ("image_dir", "name", "identity", "expected"),
    [
        ("dir-img-cosign-valid", COSIGN_IMAGE, REPOSITORY, COSIGN_KEY),
        ("dir-img-cosign-valid-2", COSIGN_IMAGE, REPOSITORY, COSIGN_KEY),
        ("dir-img-cosign-mixed", COSIGN_IMAGE, REPOSITORY, COSIGN_KEY),
        ("dir-img-cosign-valid", "testing/manifest:notlatest", REPOSITORY, "identity mismatch"),
        ("dir-img-cosign-valid-2", "this/doesnt:match", REPOSITORY, "identity mismatch"),
        ("dir-img-cosign-modified-manifest", COSIGN_IMAGE, REPOSITORY, "digest mismatch"),
        ("dir-img-cosign-manifest-digest-error", COSIGN_IMAGE, REPOSITORY, "digest mismatch"),
        ("dir-img-cosign-other-attachment", "testing/manifest:latest", REPOSITORY, "no signature"),
        ("dir-img-unsigned", "testing/manifest:latest", REPOSITORY, "no signature"),
        ("dir-img-valid", "testing/manifest:latest", REPOSITORY, "no signature"),
        # cosign signs a repository, without a tag: only matchRepository-like rules accept it.
        ("dir-img-cosign-valid", COSIGN_IMAGE, None, "identity mismatch"),
        ("dir-img-cosign-valid", COSIGN_IMAGE, EXACT, "identity mismatch"),
        ("dir-img-cosign-valid-with-tag", "192.168.64.2:5000/skopeo-signed:tag", EXACT, COSIGN_KEY),
        (
            "dir-img-cosign-valid-with-tag",
            "192.168.64.2:5000/skopeo-signed:othertag",
            EXACT,
            "identity mismatch",
        ),
    ],
)
def test_containers_image_cosign_signatures(
    tmp_path: Path, image_dir: str, name: str, identity: dict[str, str] | None, expected: str
) -> None:
    need_tools("openssl")
    need_fixtures()
    assert cosign_verdict(tmp_path, image_dir, name, identity) == expected


def test_containers_image_cosign_signature_by_an_unknown_key() -> None:
    need_tools("openssl")
    need_fixtures()
    sig = signatures.from_blob((FIXTURES / "unknown-cosign-key.signature").read_bytes())
    with pytest.raises(SignatureError) as err:
        signatures.verify(sig, [("cosign.pub", (FIXTURES / "cosign.pub").read_bytes())])
    assert (err.value.reason, str(err.value)) == (
        "unknown key",
        "the sigstore signature does not verify with cosign.pub",
    )


def test_cosign_fixture_key_data_and_broken_signatures() -> None:
    """keyData works as keyPath does; a signature without or with a garbage signature is
    refused (policy_eval_sigstore_test.go's cases)."""
    need_tools("openssl")
    need_fixtures()
    key = (FIXTURES / "cosign.pub").read_bytes()
    sig = signatures.from_blob((FIXTURES / "dir-img-cosign-valid/signature-1").read_bytes())
    assert signatures.verify(sig, [("keyData", key)]).key == "sigstore key keyData (ecdsa P-256)"
    for garbage, reason in (
        ("", "invalid signature"),
        ("!!", "invalid signature"),
        (base64.b64encode(b"invalid signature").decode(), "unknown key"),
    ):
        with pytest.raises(SignatureError) as err:
            signatures.verify(Signature("sigstore", sig.data, garbage), [("k", key)])
        assert err.value.reason == reason
    with pytest.raises(SignatureError) as err:
        signatures.verify(sig, [("empty", b"")])
    assert (err.value.reason, str(err.value)) == (
        "unusable key",
        "empty: 0 PEM PUBLIC KEY blocks where one is expected",
    )


@pytest.mark.parametrize("tail", ["=", "==", "\n=", "A", "AA="])
def test_a_cosign_signature_with_base64_past_its_end_is_refused(tail: str) -> None:
    """Go's base64 (containers/image reads the annotation so) refuses padding or a partial
    quantum after the last whole one; Python's decoder drops them, which let the fixture's
    valid signature with "=" appended verify."""
    need_tools("openssl")
    need_fixtures()
    key = (FIXTURES / "cosign.pub").read_bytes()
    sig = signatures.from_blob((FIXTURES / "dir-img-cosign-valid/signature-1").read_bytes())
    assert len(sig.signature) % 4 == 0
    with pytest.raises(SignatureError) as err:
        signatures.verify(Signature("sigstore", sig.data, sig.signature + tail), [("k", key)])
    assert (err.value.reason, str(err.value)) == (
        "invalid signature",
        "a sigstore signature without a base64 signature",
    )
    with pytest.raises(ValueError):
        signatures.go_base64("QUJD" + tail)


def test_unusable_keys_and_missing_tools_stop_the_evaluation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not a verdict on a signature but on the system: the error says so, whatever other
    signatures there are. The key is the fixture policy's keyData ("nonsense")."""
    need_tools("openssl", "gpgv")
    need_fixtures()
    pol = Policy.parse(
        json.dumps({"default": [{"type": "sigstoreSigned", "keyData": "bm9uc2Vuc2U="}]}).encode(),
        "policy.json",
    )
    d = FIXTURES / "dir-img-cosign-valid"
    sig = signatures.from_blob((d / "signature-1").read_bytes())
    manifest = (d / "manifest.json").read_bytes()
    with pytest.raises(PolicyError) as err:
        policy.evaluate(pol, "docker", COSIGN_IMAGE, manifest, [sig, sig])
    assert err.value.reason == "unusable key"
    assert str(err.value) == (
        f"docker://{COSIGN_IMAGE}: keyData of default[0]: 0 PEM PUBLIC KEY blocks where one is "
        "expected"
    )
    monkeypatch.setenv("PATH", str(tmp_path))
    key = base64.b64encode((FIXTURES / "public-key.gpg").read_bytes()).decode()
    gpg = Policy.parse(
        json.dumps(
            {"default": [{"type": "signedBy", "keyType": "GPGKeys", "keyData": key}]}
        ).encode(),
        "policy.json",
    )
    image = signatures.from_blob((FIXTURES / "image.signature").read_bytes())
    with pytest.raises(PolicyError) as err:
        policy.evaluate(gpg, "docker", "testing/manifest:latest", b"{}", [image])
    assert (err.value.reason, str(err.value)) == (
        "verification tool failed",
        "docker://testing/manifest:latest: gpgv could not verify: gpgv: command not found",
    )
    with pytest.raises(PolicyError) as err:
        policy.evaluate(pol, "docker", COSIGN_IMAGE, manifest, [sig])
    assert err.value.reason == "unusable key"  # the key is read before any tool runs
    with pytest.raises(SignatureError) as sig_err:
        signatures.verify(sig, [("cosign.pub", (FIXTURES / "cosign.pub").read_bytes())])
    assert (sig_err.value.reason, str(sig_err.value)) == (
        "verification tool failed",
        "openssl could not verify: openssl: command not found",
    )


def test_a_sigstore_signature_manifest_as_cosign_attaches_it(tmp_path: Path) -> None:
    """The .sig tag's manifest: one layer per signature (the payload as its blob, the
    signature in its annotation); other attachments are not signatures."""
    need_tools("openssl")
    need_fixtures()
    fixture = json.loads((FIXTURES / "dir-img-cosign-valid/signature-1").read_bytes()[15:])
    payload = base64.b64decode(fixture["payload"])
    blobs = {"sha256:" + hashlib.sha256(payload).hexdigest(): payload, "sha256:" + "0" * 64: b"x"}
    layers = [
        {"mediaType": "application/vnd.in-toto+json", "digest": "sha256:" + "0" * 64, "size": 1},
        {
            "mediaType": signatures.SIGSTORE_MEDIA_TYPE,
            "digest": "sha256:" + hashlib.sha256(payload).hexdigest(),
            "size": len(payload),
            "annotations": fixture["annotations"],
        },
    ]
    manifest = json.dumps({"schemaVersion": 2, "layers": layers}).encode()
    read = []

    def read_blob(digest: str, size: int) -> bytes:
        read.append((digest, size))
        return blobs[digest]

    found = signatures.from_signature_manifest(manifest, read_blob)
    assert [sig.kind for sig in found] == ["other", "sigstore"]
    assert read == [(layer["digest"], layer["size"]) for layer in layers]
    image_manifest = (FIXTURES / "dir-img-cosign-valid/manifest.json").read_bytes()
    digest = "sha256:" + hashlib.sha256(image_manifest).hexdigest()
    assert signatures.sigstore_tag(digest) == f"sha256-{digest[7:]}.sig"
    pol = sign_policy(
        tmp_path / "policy.json",
        [
            {
                "type": "sigstoreSigned",
                "keyPath": str(FIXTURES / "cosign.pub"),
                "signedIdentity": REPOSITORY,
            }
        ],
    )
    verdict = policy.evaluate(pol, "docker", COSIGN_IMAGE, image_manifest, found)
    assert verdict.keys == (COSIGN_KEY,)
    for broken in (
        b"[]",
        b'{"layers": {}}',
        b'{"layers": [{"mediaType": 1}]}',
        json.dumps({"layers": [{**layers[1], "size": -1}]}).encode(),
    ):
        with pytest.raises(SignatureError, match="a malformed sigstore signature manifest"):
            signatures.from_signature_manifest(broken, read_blob)


# sigstore: signatures made here with openssl, per cosign's format.


@pytest.fixture(scope="module")
def cosign_keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """name → (private key, public key PEM) for each key type cosign uses."""
    work = tmp_path_factory.mktemp("cosign-keys")
    keys = {}
    for name, algorithm in (
        ("ecdsa P-256", ("EC", "ec_paramgen_curve:P-256")),
        ("ecdsa P-384", ("EC", "ec_paramgen_curve:P-384")),
        ("rsa", ("RSA", "rsa_keygen_bits:2048")),
        ("ed25519", ("ed25519",)),
        ("other P-256", ("EC", "ec_paramgen_curve:P-256")),
    ):
        made = cosign_key(work / name, algorithm)
        keys[name] = (made.private, made.public)
    return keys


MANIFEST = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}'
MANIFEST_DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()


@pytest.mark.parametrize("key_type", ["ecdsa P-256", "ecdsa P-384", "rsa", "ed25519"])
def test_openssl_made_sigstore_signatures(
    cosign_keys: dict[str, tuple[Path, Path]], tmp_path: Path, key_type: str
) -> None:
    private, public = cosign_keys[key_type]
    assert signatures.public_key_type(public.read_bytes()) == key_type
    pol = sign_policy(
        tmp_path / "policy.json",
        [{"type": "sigstoreSigned", "keyPath": str(public), "signedIdentity": REPOSITORY}],
    )
    payload = cosign_payload(MANIFEST_DIGEST, "registry.example/app")
    b64 = cosign_sign(private, payload, tmp_path, ed25519=key_type == "ed25519")
    attachment = signatures.from_attachment(
        signatures.SIGSTORE_MEDIA_TYPE, payload, {signatures.SIGSTORE_ANNOTATION: b64}
    )

    def verdict(sig: Signature, name: str = "registry.example/app:1") -> str:
        try:
            return policy.evaluate(pol, "docker", name, MANIFEST, [sig]).keys[0]
        except PolicyError as err:
            return err.reason

    assert verdict(attachment) == f"sigstore key {public} ({key_type})"
    tampered = payload.replace(b"registry.example/app", b"registry.example/evil")
    assert verdict(Signature("sigstore", tampered, b64)) == "unknown key"
    assert verdict(attachment, "registry.example/other:1") == "identity mismatch"
    other_payload = cosign_payload("sha256:" + "1" * 64, "registry.example/app")
    other = cosign_sign(private, other_payload, tmp_path, ed25519=key_type == "ed25519")
    assert verdict(Signature("sigstore", other_payload, other)) == "digest mismatch"
    wrong_type = payload.replace(b"cosign container image signature", b"atomic container signature")
    forged = cosign_sign(private, wrong_type, tmp_path, ed25519=key_type == "ed25519")
    assert verdict(Signature("sigstore", wrong_type, forged)) == "invalid signature"
    # The signature's bytes exactly: openssl dgst reads only as many as the key's largest
    # signature, so bytes after a good one passed it (Go's verifiers refuse them). An ECDSA
    # signature's DER is shorter than that largest at times, an RSA one never is.
    raw = base64.b64decode(b64)
    wrapped = Signature("sigstore", payload, base64.encodebytes(raw).decode())  # as Go reads it
    assert verdict(wrapped) == f"sigstore key {public} ({key_type})"
    for changed in (raw + b"\0" * 100, raw + b"\0", raw[:-1]):
        again = Signature("sigstore", payload, base64.b64encode(changed).decode())
        assert verdict(again) == "unknown key", len(changed) - len(raw)


def test_a_sigstore_signature_by_another_key_is_refused(
    cosign_keys: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    private, _ = cosign_keys["other P-256"]
    _, trusted = cosign_keys["ecdsa P-256"]
    payload = cosign_payload(MANIFEST_DIGEST, "registry.example/app")
    sig = Signature("sigstore", payload, cosign_sign(private, payload, tmp_path))
    with pytest.raises(SignatureError) as err:
        signatures.verify(sig, [("trusted.pub", trusted.read_bytes())])
    assert err.value.reason == "unknown key"
    # Any one of several keys is enough (keyPaths), whatever the others' types.
    keys = [
        (f"{name}.pub", cosign_keys[name][1].read_bytes())
        for name in ("rsa", "ed25519", "ecdsa P-384", "ecdsa P-256", "other P-256")
    ]
    assert signatures.verify(sig, keys).key == "sigstore key other P-256.pub (ecdsa P-256)"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"not json", "the signed payload is malformed"),
        (b'{"critical": {}, "optional": {}}', "not an object of exactly type, image, identity"),
        (
            b'{"critical": {"type": "cosign container image signature", "image": '
            b'{"docker-manifest-digest": "sha256:00"}, "identity": {"docker-reference": "a/b"},'
            b' "extra": 1}, "optional": null}',
            "not an object of exactly type, image, identity",
        ),
        (
            b'{"critical": {"type": "cosign container image signature", "image": '
            b'{"docker-manifest-digest": "sha256:00"}, "identity": {"docker-reference": "a/b",'
            b' "docker-reference": "c/d"}}, "optional": null}',
            "not an object of exactly docker-reference",
        ),
        (
            b'{"critical": {"type": "cosign container image signature", "image": '
            b'{"docker-manifest-digest": 5}, "identity": {"docker-reference": "a/b"}}, '
            b'"optional": null}',
            "its digest or identity is not a string",
        ),
        (
            # As Go reads JSON: a byte order mark is no JSON (json.loads of bytes skipped it).
            b"\xef\xbb\xbf" + cosign_payload("sha256:" + "0" * 64, "a/b"),
            "it begins with a byte order mark",
        ),
    ],
)
def test_signed_payloads_are_read_strictly(payload: bytes, message: str) -> None:
    with pytest.raises(SignatureError) as err:
        signatures.parse_claims(payload, signatures.SIGSTORE_TYPE)
    assert err.value.reason == "invalid signature"
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"", "an empty signature"),
        (b"\x00no newline", "a signature with no format name"),
        (b"\x00x509\n...", "a signature of unknown format x509"),
        (b"\x00sigstore-json\n{", "a malformed sigstore signature"),
        (b'\x00sigstore-json\n{"mimeType": 1, "payload": ""}', "a malformed sigstore signature"),
    ],
)
def test_stored_signature_blobs_that_cannot_be_read(blob: bytes, message: str) -> None:
    with pytest.raises(SignatureError) as err:
        signatures.from_blob(blob)
    assert (err.value.reason, str(err.value)) == ("invalid signature", message)


def test_public_key_types_cosign_does_not_use_are_refused(tmp_path: Path) -> None:
    need_tools("openssl")
    openssl("genpkey", "-algorithm", "ed448", "-out", str(tmp_path / "k"))
    openssl("pkey", "-in", str(tmp_path / "k"), "-pubout", "-out", str(tmp_path / "k.pub"))
    with pytest.raises(SignatureError, match="a public key of a type cosign does not use"):
        signatures.public_key_type((tmp_path / "k.pub").read_bytes())
    with pytest.raises(SignatureError, match="a PEM public key that cannot be read"):
        signatures.public_key_type(b"-----BEGIN PUBLIC KEY-----\nMAo=\n-----END PUBLIC KEY-----\n")


@pytest.mark.parametrize("curve", ["P-256", "P-384", "P-521"])
def test_an_ecdsa_key_with_a_compressed_point_is_unusable(curve: str, tmp_path: Path) -> None:
    """Go's x509 (containers/image) cannot read an ECDSA key whose point is compressed; openssl
    can, and verified signatures with a key containers/image refuses."""
    need_tools("openssl")
    key, pub = tmp_path / "k", tmp_path / "k.pub"
    openssl(
        "genpkey", "-algorithm", "EC", "-pkeyopt", f"ec_paramgen_curve:{curve}", "-out", str(key)
    )
    openssl("pkey", "-in", str(key), "-pubout", "-out", str(pub))
    assert signatures.public_key_type(pub.read_bytes()) == f"ecdsa {curve}"
    openssl("ec", "-in", str(key), "-pubout", "-conv_form", "compressed", "-out", str(pub))
    with pytest.raises(SignatureError) as err:
        signatures.public_key_type(pub.read_bytes())
    assert (err.value.reason, str(err.value)) == (
        "unusable key",
        "an ECDSA public key whose point is not uncompressed (containers/image cannot read it)",
    )
