"""Signatures on the host (issue 17): --policy and its companions on every image command, pull
keeping an image's signatures, inspect naming the key of each, and what build puts into the
initramfs and onto the command line. Signatures are made here with the real gpg and openssl."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bootc_live import build as build_mod
from bootc_live import selfcheck
from bootc_live.demo import demo_layers, host_kernel
from bootc_live.hostpolicy import TrustOptions, storage_policy
from bootc_live.images import UsageError
from bootc_live.layout import write_layout
from bootc_live.runtime import registriesd, signatures
from bootc_live.runtime.oci import resolve
from bootc_live.runtime.policy import Policy, PolicyError
from bootc_live.runtime.sources import LayoutSource
from imagegen import (
    MT_CONFIG,
    MT_MANIFEST,
    REF_NAME,
    add_nested_index,
    add_to_index,
    build_image,
    build_layout,
    f,
    layer_tar,
    write_blob,
)
from unpackers import assert_clean_failure, bootc_live, need

IDENTITY = "registry.example/app:v1"
SIMPLE_TYPE = "application/vnd.bootc-live.simple-signing.v1"


def run(*argv: str, env: dict[str, str] | None = None, data: bytes | None = None) -> bytes:
    done = subprocess.run(
        argv, input=data, capture_output=True, check=False, env={**os.environ, **(env or {})}
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout


@dataclass(frozen=True)
class Keys:
    gnupg: dict[str, str]  # GNUPGHOME
    trusted: str  # fingerprint
    trusted_key: Path  # its public key, binary
    other: str
    cosign_private: Path
    cosign_public: Path


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keys]:
    for tool in ("gpg", "gpgv", "gpgconf", "openssl"):
        need(shutil.which(tool) is not None, f"needs {tool}")
    work = tmp_path_factory.mktemp("keys")
    home = work / "gnupg"
    home.mkdir(mode=0o700)
    env = {"GNUPGHOME": str(home)}
    fingerprints = []
    try:
        for name in ("trusted", "other"):
            run("gpg", "--batch", "--passphrase", "", "--quick-gen-key", f"{name} <{name}@t>",
                "ed25519", "sign", "never", env=env)  # fmt: skip
            listing = run("gpg", "--with-colons", "--list-keys", f"{name}@t", env=env).decode()
            fingerprints.append(
                next(ln.split(":")[9] for ln in listing.splitlines() if ln.startswith("fpr"))
            )
        public = work / "trusted.gpg"
        public.write_bytes(run("gpg", "--export", fingerprints[0], env=env))
        private, pem = work / "cosign.key", work / "cosign.pub"
        run("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-out", str(private))  # fmt: skip
        run("openssl", "pkey", "-in", str(private), "-pubout", "-out", str(pem))
        yield Keys(env, fingerprints[0], public, fingerprints[1], private, pem)
    finally:
        subprocess.run(["gpgconf", "--kill", "all"], env={**os.environ, **env}, check=False)


def payload(kind: str, digest: str, reference: str) -> bytes:
    signed = {"simple": "atomic container signature", "sigstore": signatures.SIGSTORE_TYPE}
    return json.dumps(
        {
            "critical": {
                "type": signed[kind],
                "image": {"docker-manifest-digest": digest},
                "identity": {"docker-reference": reference},
            },
            "optional": {},
        }
    ).encode()


def gpg_sign(keys: Keys, fingerprint: str, digest: str, reference: str = IDENTITY) -> bytes:
    """A simple signature as a lookaside store keeps it (signature-N)."""
    return run(
        "gpg", "--batch", "--local-user", fingerprint, "--sign", "--output", "-",
        env=keys.gnupg, data=payload("simple", digest, reference),
    )  # fmt: skip


def cosign_layer(keys: Keys, digest: str, reference: str = IDENTITY) -> tuple[bytes, str]:
    """A sigstore signature: the payload (the layer blob) and its base64 signature."""
    data = payload("sigstore", digest, reference)
    signature = run("openssl", "dgst", "-sha256", "-sign", str(keys.cosign_private), data=data)
    return data, base64.b64encode(signature).decode()


def described(blob: Any) -> dict[str, Any]:
    return {"digest": blob.digest, "size": blob.size}


def carry(
    layout: Path, digest: str, simple: list[bytes], sigstore: list[tuple[bytes, str]]
) -> None:
    """Signatures of `digest` carried in `layout` as docs/signatures.md says (written here by
    hand, not by bootc-live's own writer)."""
    hex_value = digest.partition(":")[2]
    if simple:
        empty = write_blob(layout, b"{}")
        layers = [
            {"mediaType": SIMPLE_TYPE, **described(write_blob(layout, blob))} for blob in simple
        ]
        manifest = {
            "schemaVersion": 2,
            "mediaType": MT_MANIFEST,
            "artifactType": SIMPLE_TYPE,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", **described(empty)},
            "layers": layers,
        }
        blob = write_blob(layout, json.dumps(manifest).encode())
        add_to_index(
            layout, {"mediaType": MT_MANIFEST, **described(blob)}, f"sha256-{hex_value}.simplesig"
        )
    if sigstore:
        layers = [
            {
                "mediaType": signatures.SIGSTORE_MEDIA_TYPE,
                **described(write_blob(layout, data)),
                "annotations": {signatures.SIGSTORE_ANNOTATION: signature},
            }
            for data, signature in sigstore
        ]
        config = write_blob(layout, b'{"rootfs":{"type":"layers","diff_ids":[]}}')
        manifest = {
            "schemaVersion": 2,
            "mediaType": MT_MANIFEST,
            "config": {"mediaType": MT_CONFIG, **described(config)},
            "layers": layers,
        }
        blob = write_blob(layout, json.dumps(manifest).encode())
        add_to_index(
            layout, {"mediaType": MT_MANIFEST, **described(blob)}, f"sha256-{hex_value}.sig"
        )


def write_policy(path: Path, keys: Keys, *, default: str = "reject", trusted: bool = True) -> Path:
    """registry.example needs a GPG signature by the trusted key (or, with `trusted` False,
    by the other key, which made none of the signatures) and a sigstore one."""
    key = keys.trusted_key if trusted else path.with_name("other.gpg")
    if not trusted:
        key.write_bytes(run("gpg", "--export", keys.other, env=keys.gnupg))
    doc: dict[str, Any] = {
        "default": [{"type": default}],
        "transports": {
            "docker": {
                "registry.example": [
                    {"type": "signedBy", "keyType": "GPGKeys", "keyPath": str(key)},
                    {"type": "sigstoreSigned", "keyPath": str(keys.cosign_public)},
                ]
            }
        },
    }
    path.write_text(json.dumps(doc))
    return path


@pytest.fixture
def signed(tmp_path: Path, keys: Keys) -> tuple[Path, str]:
    """A layout whose image v1 carries a simple and a sigstore signature for IDENTITY."""
    layout = tmp_path / "img"
    info = build_layout(layout, [layer_tar([f("hello", b"world")])], tag="v1")
    digest = info.manifest_digest
    carry(layout, digest, [gpg_sign(keys, keys.trusted, digest)], [cosign_layer(keys, digest)])
    return layout, digest


def index_of(archive: Path) -> dict[str, Any]:
    with tarfile.open(archive) as tar:
        member = tar.extractfile("index.json")
        assert member is not None
        return dict(json.load(member))


def test_pull_keeps_the_signatures_and_inspect_names_the_key_of_each(
    tmp_path: Path, keys: Keys, signed: tuple[Path, str]
) -> None:
    layout, digest = signed
    policy = write_policy(tmp_path / "policy.json", keys)
    out = tmp_path / "pulled.tar"
    trust = ["--policy", str(policy), "--identity", IDENTITY]
    pulled = bootc_live("pull", f"oci:{layout}:v1", "-o", f"oci-archive:{out}", *trust)
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stdout.strip().endswith("with 2 signatures"), pulled.stdout
    assert f"signatures: verified by GPG key {keys.trusted}" in pulled.stderr
    tags = [m["annotations"][REF_NAME] for m in index_of(out)["manifests"]]
    hex_value = digest.partition(":")[2]
    assert tags == ["latest", f"sha256-{hex_value}.sig", f"sha256-{hex_value}.simplesig"]

    # The copy verifies as the original did: same signatures, same keys.
    shown = bootc_live("inspect", f"oci-archive:{out}", *trust)
    assert shown.returncode == 0, shown.stderr
    lines = [ln for ln in shown.stdout.splitlines() if ln.startswith("signature")]
    assert len(lines) == 2, shown.stdout
    assert lines[0].startswith(f"signature 1 sigstore (oci-archive:{out} sha256-{hex_value}.sig")
    assert f"verified by sigstore key {keys.cosign_public} (ecdsa P-256)" in lines[0]
    assert lines[1].startswith("signature 2 simple (")
    assert f"verified by GPG key {keys.trusted} ({keys.trusted_key})" in lines[1]
    assert lines[1].endswith(f"signs {IDENTITY} for this image")

    # A layout, too; and inspect without a policy still lists them.
    again = bootc_live("pull", f"oci-archive:{out}", "-o", f"oci:{tmp_path / 'dir'}", *trust)
    assert again.returncode == 0, again.stderr
    listed = bootc_live("inspect", f"oci:{tmp_path / 'dir'}", "--insecure-policy")
    assert listed.returncode == 0, listed.stderr
    assert "signature 2 simple (" in listed.stdout and "no key of the policy" in listed.stdout
    assert "\npolicy    signatures: not checked (--insecure-policy)\n" in listed.stdout


def test_a_rejected_image_is_one_line_and_nothing_is_left(
    tmp_path: Path, keys: Keys, signed: tuple[Path, str]
) -> None:
    layout, _ = signed
    policy = write_policy(tmp_path / "policy.json", keys, trusted=False)
    trust = ["--policy", str(policy), "--identity", IDENTITY]
    before = sorted(os.listdir(tmp_path))
    for command in (
        ["pull", f"oci:{layout}:v1", "-o", f"oci-archive:{tmp_path / 'out.tar'}"],
        ["pull", f"oci:{layout}:v1", "-o", f"oci:{tmp_path / 'out'}"],
        ["unpack", f"oci:{layout}:v1", str(tmp_path / "root")],
        ["erofs", f"oci:{layout}:v1", "-o", str(tmp_path / "root.erofs")],
        ["build", f"oci:{layout}:v1", "-o", str(tmp_path / "art"), "--host"],
    ):
        if command[0] != "pull" and os.geteuid() != 0:
            continue  # these need root; the check comes after that test
        said = assert_clean_failure(bootc_live(*command, *trust, tmpdir=tmp_path))
        last = said.strip().splitlines()[-1]
        assert last.startswith(
            f"bootc-live: docker://{IDENTITY}: unknown key under policy scope docker "
            '"registry.example" (transports.docker["registry.example"][0]): signed by key'
        ), (command, said)
        assert sorted(os.listdir(tmp_path)) == before, command


def test_without_identity_a_layout_is_checked_by_its_path_as_skopeo_does(
    tmp_path: Path, keys: Keys, signed: tuple[Path, str]
) -> None:
    layout, _ = signed
    policy = tmp_path / "policy.json"
    accept = [{"type": "insecureAcceptAnything"}]
    policy.write_text(
        json.dumps({"default": [{"type": "reject"}], "transports": {"oci": {str(layout): accept}}})
    )
    ok = bootc_live("inspect", f"oci:{layout}:v1", "--policy", str(policy))
    assert ok.returncode == 0, ok.stderr
    assert f'policy    signatures: not required (policy scope oci "{layout}")' in ok.stdout
    # A signedBy whose identity rule needs the image's name: it has none without --identity.
    gpg = {"type": "signedBy", "keyType": "GPGKeys", "keyPath": str(keys.trusted_key)}
    policy.write_text(json.dumps({"default": [gpg]}))
    said = assert_clean_failure(bootc_live("inspect", f"oci:{layout}:v1", "--policy", str(policy)))
    assert "identity mismatch under policy scope default" in said, said
    assert said.strip().endswith("give it with --identity REF"), said
    named = bootc_live(
        "inspect", f"oci:{layout}:v1", "--policy", str(policy), "--identity", IDENTITY
    )
    assert named.returncode == 0, named.stderr


def test_a_multi_platform_tag_keeps_its_index_which_the_signatures_sign(
    tmp_path: Path, keys: Keys
) -> None:
    layout = tmp_path / "img"
    amd = build_image(layout, [layer_tar([f("a", b"amd64")])], platform=("linux", "amd64"))
    arm = build_image(layout, [layer_tar([f("a", b"arm64")])], platform=("linux", "arm64"))
    top = add_nested_index(layout, [amd, arm], tag="v1", depth=2)
    carry(layout, top, [gpg_sign(keys, keys.trusted, top)], [cosign_layer(keys, top)])
    policy = write_policy(tmp_path / "policy.json", keys)
    trust = ["--policy", str(policy), "--identity", IDENTITY]
    out = tmp_path / "out"
    pulled = bootc_live(
        "pull", f"oci:{layout}:v1", "-o", f"oci:{out}:v1", "--platform", "linux/arm64", *trust
    )
    assert pulled.returncode == 0, pulled.stderr
    entry = json.loads((out / "index.json").read_text())["manifests"][0]
    assert entry["digest"] == top and entry["annotations"][REF_NAME] == "v1"
    shown = bootc_live("inspect", f"oci:{out}:v1", "--platform", "linux/arm64", *trust)
    assert shown.returncode == 0, shown.stderr
    assert f"image     {arm.manifest_digest}\nsigned    {top} (the index SOURCE names)" in (
        shown.stdout
    )
    assert "verified by GPG key" in shown.stdout
    assert not (out / "blobs/sha256" / amd.manifest_digest.partition(":")[2]).exists()


def test_policy_options_are_checked_before_anything_is_read(tmp_path: Path) -> None:
    layout = tmp_path / "img"
    build_layout(layout, [layer_tar([f("a", b"a")])], tag="v1")
    both = bootc_live("inspect", f"oci:{layout}", "--policy", "/x", "--insecure-policy")
    assert assert_clean_failure(both).strip() == (
        "bootc-live: --insecure-policy and --policy contradict each other; give one of them"
    )
    bad = bootc_live("inspect", f"oci:{layout}", "--identity", "Not/A:Ref:x")
    assert bad.returncode == 2 and "--identity: 'Not/A:Ref:x' is not an image reference" in (
        bad.stderr
    )
    untagged = bootc_live("inspect", f"oci:{layout}", "--identity", "registry.example/app")
    assert "it needs a :TAG or @DIGEST, as the image was signed" in untagged.stderr
    registry = bootc_live("inspect", "docker://127.0.0.1:9/x:v1", "--identity", IDENTITY)
    assert assert_clean_failure(registry).strip() == (
        "bootc-live: --identity names SOURCEs that have no registry name; "
        "docker://127.0.0.1:9/x:v1 is checked as itself; leave --identity out"
    )
    malformed = tmp_path / "policy.json"
    malformed.write_text('{"default": [{"type": "signedBy"}]}')
    said = assert_clean_failure(
        bootc_live(
            "pull", f"oci:{layout}", "-o", f"oci:{tmp_path / 'o'}", "--policy", str(malformed)
        )
    )
    assert f"bootc-live: {malformed}: default[0]" in said, said
    assert not (tmp_path / "o").exists()
    missing = bootc_live("inspect", f"oci:{layout}", "--policy", str(tmp_path / "none.json"))
    assert f"{tmp_path / 'none.json'}: no such policy file; fix --policy FILE\n" in (
        assert_clean_failure(missing)
    )


# build: what goes into the initramfs and onto the command line.


def test_build_puts_the_policy_its_registries_d_and_its_keys_into_the_initramfs(
    tmp_path: Path,
) -> None:
    key, pem = tmp_path / "keys/k.gpg", tmp_path / "keys/c.pub"
    key.parent.mkdir()
    key.write_bytes(b"key")
    pem.write_bytes(b"pem")
    policy = tmp_path / "p.json"
    gpg = {"type": "signedBy", "keyType": "GPGKeys", "keyPaths": [str(key), str(key)]}
    cosign = {"type": "sigstoreSigned", "keyPath": str(pem)}
    policy.write_text(
        json.dumps({"default": [gpg], "transports": {"docker": {"a.example": [cosign]}}})
    )
    regs = tmp_path / "registries.d"
    regs.mkdir()
    (regs / "a.yaml").write_text("docker:\n  a.example:\n    use-sigstore-attachments: true\n")
    (regs / "notes.txt").write_text("not read by containers, not copied")
    files = build_mod.trust_files(TrustOptions(policy=str(policy), registries_d=str(regs)))
    assert files == [
        (policy, "/etc/containers/policy.json"),
        (regs / "a.yaml", f"{registriesd.DEFAULT_DIR}/a.yaml"),
        (key, str(key)),
        (pem, str(pem)),
    ]
    assert build_mod.trust_files(TrustOptions()) == []  # the host's own policy stays on the host

    pem.unlink()
    with pytest.raises(build_mod.BuildError) as caught:
        build_mod.trust_files(TrustOptions(policy=str(policy), registries_d=str(regs)))
    assert caught.value.line() == (
        f"{policy} names the key {pem}, which is missing; put the key there, or fix the "
        "policy's keyPath (the boot reads it at that path)"
    )
    (regs / "b.yaml").write_text("docker:\n  a.example:\n    lookaside: https://x\n")
    with pytest.raises(registriesd.RegistriesDError, match="configured both in"):
        build_mod.trust_files(TrustOptions(policy=str(policy), registries_d=str(regs)))
    with pytest.raises(UsageError):
        TrustOptions(policy=str(policy), insecure=True)
    policy.write_text("{}")
    with pytest.raises(PolicyError, match='has no "default"'):
        build_mod.trust_files(TrustOptions(policy=str(policy)))


def test_build_pins_the_signed_document_and_names_the_identity(tmp_path: Path) -> None:
    digest = "sha256:" + "ab" * 32
    args = build_mod.boot_arguments("v1", digest, IDENTITY)
    assert args == (
        f"root=bootc-live:/bootc-live/image bootclabel=v1 bootc.digest={digest} "
        f"bootc.identity={IDENTITY}"
    )
    assert build_mod.boot_arguments("v1", digest, None).endswith(f"bootc.digest={digest}")
    build_layout(tmp_path / "img", [layer_tar([f("a", b"a")])], tag="v1")
    image = resolve(LayoutSource(str(tmp_path / "img")), label="v1")
    script = build_mod.ipxe_script(args, image, "6.1").splitlines()
    assert f"kernel vmlinuz initrd=initrd.img initrd=rootfs.img {args}" in script
    assert (
        "# For URL boot instead: kernel vmlinuz initrd=initrd.img "
        f"root=bootc-live:${{base-url}}/root.oci bootclabel=v1 bootc.digest={digest} "
        f"bootc.identity={IDENTITY}"
    ) in script
    assert "# (drop bootc.digest= to follow whatever image the tag or URL holds)" in script


# A real build (the host's dracut): what the initramfs holds, and its self-check.


ELSEWHERE = "other.example/demo:v1"  # under the policy's default: the unsigned demo passes


@pytest.fixture(scope="module")
def built(
    keys: Keys, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, Path, Path]]:
    """Artifacts of the demo image built with a policy naming a GPG and a sigstore key, and the
    initramfs unpacked: (artifacts, unpacked tree, registries.d)."""
    need(os.geteuid() == 0, "building an initramfs needs root")
    need(shutil.which("dracut") is not None, "needs dracut")
    work = tmp_path_factory.mktemp("built")
    write_layout(work / "layout", demo_layers(), "demo")
    regs = work / "registries.d"
    regs.mkdir()
    (regs / "example.yaml").write_text("docker:\n  registry.example:\n    lookaside: https://s\n")
    policy = write_policy(work / "policy.json", keys, default="insecureAcceptAnything")
    out = work / "signed out"  # dracut cannot work under a path with a space: build copes
    done = bootc_live(
        "build", f"oci:{work / 'layout'}:demo", "-o", str(out), "--host", "--kver", host_kernel(),
        "--policy", str(policy), "--registries-d", str(regs), "--identity", ELSEWHERE,
        tmpdir=work, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    tree = selfcheck.unpack(out / "initrd.img", Path("/"), work / "tree")
    yield out, tree, regs
    shutil.rmtree(tree, ignore_errors=True)


@pytest.mark.integration
def test_the_built_initramfs_holds_the_policy_its_keys_and_verifiers(
    built: tuple[Path, Path, Path], keys: Keys
) -> None:
    out, tree, regs = built
    policy = json.loads((tree / "etc/containers/policy.json").read_text())
    assert policy["transports"]["docker"]["registry.example"][0]["keyPath"] == str(keys.trusted_key)
    assert (tree / str(keys.trusted_key).lstrip("/")).read_bytes() == keys.trusted_key.read_bytes()
    assert (tree / str(keys.cosign_public).lstrip("/")).read_bytes() == (
        keys.cosign_public.read_bytes()
    )
    assert (tree / "etc/containers/registries.d/example.yaml").read_bytes() == (
        regs / "example.yaml"
    ).read_bytes()
    assert any((tree / d / "gpgv").exists() for d in ("usr/bin", "bin"))
    assert any((tree / d / "openssl").exists() for d in ("usr/bin", "bin"))
    cmdline = (out / "cmdline.txt").read_text().split()
    digest = next(a for a in cmdline if a.startswith("bootc.digest=sha256:"))
    assert cmdline[-1] == f"bootc.identity={ELSEWHERE}"
    assert index_of(out / "root.oci")["manifests"][0]["digest"] == digest.partition("=")[2]
    assert f"initrd=rootfs.img {' '.join(cmdline)}" in (out / "boot.ipxe").read_text()


@pytest.mark.integration
def test_the_self_check_names_a_missing_verifier_a_policy_needs(
    built: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _, tree, _ = built
    assert "bootc-live" in selfcheck.probe(tree, Path("/")).modules  # whole, it passes
    for tool, kind in (("gpgv", "signedBy"), ("openssl", "sigstoreSigned")):
        copy = tmp_path / tool
        subprocess.run(["cp", "-a", tree, copy], check=True)
        for d in ("usr/bin", "bin"):
            if (copy / d / tool).is_file() and not (copy / d / tool).is_symlink():
                (copy / d / tool).unlink()
        with pytest.raises(selfcheck.SelfCheckError) as caught:
            selfcheck.probe(copy, Path("/"))
        assert caught.value.line().startswith(
            f"the initramfs lacks the command {tool}, needed by {kind} in "
            "/etc/containers/policy.json"
        ), caught.value.line()
        shutil.rmtree(copy)
    # One that is there but does not run.
    copy = tmp_path / "broken"
    subprocess.run(["cp", "-a", tree, copy], check=True)
    gpgv = next(copy / d / "gpgv" for d in ("usr/bin", "bin") if (copy / d / "gpgv").is_file())
    gpgv.unlink()
    gpgv.write_text("#!/bin/sh\necho 'gpgv: broken'\nexit 2\n")
    gpgv.chmod(0o755)
    with pytest.raises(selfcheck.SelfCheckError) as caught:
        selfcheck.probe(copy, Path("/"))
    assert caught.value.line() == (
        "the initramfs cannot run gpgv --version: gpgv: broken, needed by signedBy; reinstall "
        "the package that provides it in the image"
    )


def test_what_skopeo_copies_is_checked_with_no_signatures(tmp_path: Path, keys: Keys) -> None:
    """docker-archive (and containers-storage) images come through skopeo's copy, which keeps
    no signature: insecureAcceptAnything passes, a signature requirement fails by name."""
    need(shutil.which("skopeo") is not None, "needs skopeo")
    build_layout(tmp_path / "img", [layer_tar([f("a", b"a")])], tag="v1")
    archive = tmp_path / "saved.tar"
    run("skopeo", "--insecure-policy", "copy", "--quiet", f"oci:{tmp_path / 'img'}:v1",
        f"docker-archive:{archive}")  # fmt: skip
    policy = tmp_path / "policy.json"
    accept = [{"type": "insecureAcceptAnything"}]
    gpg = [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": str(keys.trusted_key)}]
    policy.write_text(json.dumps({"default": gpg, "transports": {"docker-archive": {"": accept}}}))
    ok = bootc_live("inspect", f"docker-archive:{archive}", "--policy", str(policy))
    assert ok.returncode == 0, ok.stderr
    assert 'policy    signatures: not required (policy scope docker-archive "")' in ok.stdout
    policy.write_text(json.dumps({"default": gpg}))
    said = assert_clean_failure(
        bootc_live("inspect", f"docker-archive:{archive}", "--policy", str(policy))
    )
    assert f"docker-archive:{archive}: no simple signature, and policy scope default" in said
    # skopeo's dir: is scoped by its absolute path, as skopeo scopes it; the signatures one
    # holds are not copied (they stopped skopeo: an OCI layout cannot take them)
    copied = tmp_path / "copied:dir"  # skopeo reads all after dir: as the path
    run("skopeo", "--insecure-policy", "copy", "--quiet", f"oci:{tmp_path / 'img'}:v1",
        f"dir:{copied}")  # fmt: skip
    (copied / "signature-1").write_bytes(b"a signature skopeo carries along")
    policy.write_text(json.dumps({"default": gpg, "transports": {"dir": {str(copied): accept}}}))
    ok = bootc_live("inspect", f"dir:{copied}", "--policy", str(policy))
    assert ok.returncode == 0, ok.stderr
    assert f'policy    signatures: not required (policy scope dir "{copied}")' in ok.stdout


def test_containers_storage_is_checked_under_its_transport_scope() -> None:
    gpg = {"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/k.gpg"}
    accept = {"type": "insecureAcceptAnything"}
    rules = Policy.parse(
        json.dumps(
            {"default": [gpg], "transports": {"containers-storage": {"": [accept]}}}
        ).encode(),
        "p.json",
    )
    assert [r.type for r in storage_policy(rules).default] == ["insecureAcceptAnything"]
    plain = Policy.parse(json.dumps({"default": [gpg]}).encode(), "p.json")
    assert storage_policy(plain) == plain
    scoped = Policy.parse(
        json.dumps(
            {"default": [gpg], "transports": {"containers-storage": {"[vfs@/x]a": [accept]}}}
        ).encode(),
        "p.json",
    )
    with pytest.raises(PolicyError) as caught:
        storage_policy(scoped)
    assert caught.value.line() == (
        "p.json: transports.containers-storage has store-specific scopes, which bootc-live does "
        "not read; give the image's registry name with --identity REF"
    )
