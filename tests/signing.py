"""Signed test images, made with the real tools.

- GPG keys made by `gpg --batch` in a throwaway GNUPGHOME; images pushed to a real registry and
  signed by skopeo (`copy --sign-by`) into the lookaside store a registries.d file names (its
  `lookaside-staging` a directory, its `lookaside` where readers find it, e.g. nginx serving it).
- sigstore (cosign) signatures made with the openssl command per cosign's format, attached to
  an image as cosign does: the manifest tagged sha256-HEX.sig in the image's repository, pushed
  by skopeo from an OCI layout with its digests kept.
- containers-policy.json and registries.d writers for the cases the tests need.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagegen import MT_CONFIG, MT_MANIFEST, _json, add_to_index, init_layout, write_blob
from registries import Pki, Registry
from unpackers import need

SIGSTORE_LAYER = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGSTORE_ANNOTATION = "dev.cosignproject.cosign/signature"


def need_tools(*tools: str) -> None:
    for tool in tools:
        need(shutil.which(tool) is not None, f"needs {tool}")


def run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        check=False,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# GPG keys.


@dataclass(frozen=True)
class GpgKey:
    fingerprint: str
    public: Path  # binary, as gpg --export writes it
    armored: Path


@contextmanager
def gpg_keys(home: Path, *names: str) -> Iterator[dict[str, GpgKey]]:
    """Signing keys `names` (ed25519, no passphrase) in a new GNUPGHOME `home`; the home's
    agent is stopped at the end."""
    need_tools("gpg", "gpgv", "gpgconf")
    home.mkdir(parents=True, exist_ok=True)
    home.chmod(0o700)
    env = {"GNUPGHOME": str(home)}
    keys = {}
    try:
        for name in names:
            done = run(
                "gpg", "--batch", "--passphrase", "", "--quick-gen-key",
                f"{name} <{name}@example.com>", "ed25519", "sign", "never", env=env,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            listing = run("gpg", "--with-colons", "--list-keys", f"{name}@example.com", env=env)
            fpr = next(
                ln.split(":")[9] for ln in listing.stdout.splitlines() if ln.startswith("fpr")
            )
            public, armored = home / f"{name}.gpg", home / f"{name}.asc"
            public.write_bytes(subprocess.run(
                ["gpg", "--export", fpr], capture_output=True, check=True, env={**os.environ, **env}
            ).stdout)  # fmt: skip
            armored.write_text(run("gpg", "--export", "--armor", fpr, env=env).stdout)
            keys[name] = GpgKey(fpr, public, armored)
        yield keys
    finally:
        run("gpgconf", "--kill", "all", env=env)  # this home's agent, started by the gpg above


# Pushing and signing with skopeo.


def registries_d(
    directory: Path,
    *,
    lookaside: str,
    staging: Path | None = None,
    attachments: bool = False,
    scope: str | None = None,
) -> Path:
    """A registries.d directory (created, or added to: one file per scope): `lookaside` (URL)
    for `scope` (a docker scope; None: default-docker), `staging` the directory skopeo writes
    signatures to, and `use-sigstore-attachments` when `attachments`."""
    directory.mkdir(parents=True, exist_ok=True)
    settings = [f"lookaside: {lookaside}"]
    settings += [f"lookaside-staging: file://{staging}"] if staging else []
    settings += ["use-sigstore-attachments: true"] if attachments else []
    if scope is None:
        text = "default-docker:\n" + "".join(f"  {s}\n" for s in settings)
    else:
        text = f"docker:\n  {scope}:\n" + "".join(f"    {s}\n" for s in settings)
    name = "default" if scope is None else scope.replace("/", "_").replace(":", "_")
    (directory / f"{name}.yaml").write_text("# written by tests/signing.py\n" + text)
    return directory


def skopeo_copy(
    source: str,
    dest: str,
    *,
    pki: Pki,
    registries: Path | None = None,
    gnupg: Path | None = None,
    sign_by: GpgKey | None = None,
    identity: str = "",
    creds: str = "",
) -> None:
    """`skopeo copy` keeping digests to a registry (the test CA trusted; `creds` USER:PASSWORD
    for one with auth), signing with `sign_by` (as `identity` when given) into the
    lookaside-staging of `registries`."""
    argv = ["skopeo", "copy", "--quiet", "--preserve-digests", "--dest-cert-dir"]
    argv += [str(pki.cert_dir)]
    argv += ["--dest-creds", creds] if creds else []
    argv += ["--registries.d", str(registries)] if registries else []
    argv += ["--sign-by", sign_by.fingerprint] if sign_by else []
    argv += ["--sign-identity", identity] if identity else []
    done = run(*argv, source, dest, env={"GNUPGHOME": str(gnupg)} if gnupg else None)
    assert done.returncode == 0, f"skopeo copy {source} {dest}: {done.stderr}"


def raw_manifest(ref: str, pki: Pki) -> bytes:
    """The manifest docker://`ref` names, as the registry serves it."""
    done = subprocess.run(
        ["skopeo", "inspect", "--raw", "--cert-dir", str(pki.cert_dir), f"docker://{ref}"],
        capture_output=True,
        check=True,
        stdin=subprocess.DEVNULL,
    )
    return done.stdout


def lookaside_dir(store: Path, repository: str, digest: str) -> Path:
    """Where a file lookaside store keeps the signatures of `repository` (the path in its
    registry, without the host) at `digest`: REPO@sha256=HEX (signature-1, -2 … inside)."""
    return store / f"{repository}@{digest.replace(':', '=', 1)}"


def move_signature(store: Path, source: tuple[str, str], target: tuple[str, str]) -> Path:
    """Copy signature-1 of (repository, digest) `source` to be the first signature of
    `target` in the same store: a real signature, of another image."""
    there = lookaside_dir(store, *target)
    there.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(lookaside_dir(store, *source) / "signature-1", there / "signature-1"))


# sigstore (cosign) signatures with the openssl command.


@dataclass(frozen=True)
class CosignKey:
    private: Path
    public: Path  # PEM SubjectPublicKeyInfo, as cosign.pub holds it


def openssl(*argv: str) -> None:
    done = run("openssl", *argv)
    assert done.returncode == 0, done.stderr


def cosign_key(
    stem: Path, algorithm: Sequence[str] = ("EC", "ec_paramgen_curve:P-256")
) -> CosignKey:
    """A key pair of `algorithm` (openssl genpkey's -algorithm and an optional -pkeyopt) at
    STEM.key and STEM.pub."""
    need_tools("openssl")
    name, *options = algorithm
    private, public = stem.with_suffix(".key"), stem.with_suffix(".pub")
    gen = ["-algorithm", name, *(arg for opt in options for arg in ("-pkeyopt", opt))]
    openssl("genpkey", *gen, "-out", str(private))
    openssl("pkey", "-in", str(private), "-pubout", "-out", str(public))
    return CosignKey(private, public)


def cosign_payload(digest: str, reference: str) -> bytes:
    """cosign's signed payload for the manifest `digest`, claiming the identity `reference`."""
    return json.dumps(
        {
            "critical": {
                "identity": {"docker-reference": reference},
                "image": {"docker-manifest-digest": digest},
                "type": "cosign container image signature",
            },
            "optional": None,
        }
    ).encode()


def cosign_sign(private: Path, payload: bytes, tmp: Path, ed25519: bool = False) -> str:
    """The base64 of cosign's signature over `payload` (ASN.1 DER for ECDSA, PKCS #1 v1.5
    for RSA, both over SHA-256; pure Ed25519)."""
    data, sig = tmp / "payload", tmp / "sig"
    data.write_bytes(payload)
    if ed25519:
        openssl("pkeyutl", "-sign", "-inkey", str(private), "-rawin", "-in", str(data),
                "-out", str(sig))  # fmt: skip
    else:
        openssl("dgst", "-sha256", "-sign", str(private), "-out", str(sig), str(data))
    return base64.b64encode(sig.read_bytes()).decode()


def sigstore_tag(digest: str) -> str:
    """The tag cosign keeps the signatures of the manifest `digest` under."""
    algorithm, _, hex_value = digest.partition(":")
    return f"{algorithm}-{hex_value}.sig"


def signature_manifest(layout: Path, signed: Sequence[tuple[bytes, str]], tag: str) -> str:
    """Write cosign's signature manifest into the OCI layout `layout` under `tag`: one layer
    per (payload, base64 signature), the config cosign writes. Its digest."""
    init_layout(layout)
    layers = []
    for payload, signature in signed:
        blob = write_blob(layout, payload)
        layers.append(
            {
                "mediaType": SIGSTORE_LAYER,
                "digest": blob.digest,
                "size": blob.size,
                "annotations": {SIGSTORE_ANNOTATION: signature},
            }
        )
    config = write_blob(
        layout,
        _json(
            {
                "architecture": "",
                "config": {},
                "created": "0001-01-01T00:00:00Z",
                "history": [{"created": "0001-01-01T00:00:00Z"}],
                "os": "",
                "rootfs": {"type": "layers", "diff_ids": [layer["digest"] for layer in layers]},
            }
        ),
    )
    manifest = write_blob(
        layout,
        _json(
            {
                "schemaVersion": 2,
                "mediaType": MT_MANIFEST,
                "config": {"mediaType": MT_CONFIG, "digest": config.digest, "size": config.size},
                "layers": layers,
            }
        ),
    )
    descriptor = {"mediaType": MT_MANIFEST, "digest": manifest.digest, "size": manifest.size}
    add_to_index(layout, descriptor, tag)
    return manifest.digest


def attach_sigstore(
    registry: Registry,
    pki: Pki,
    repository: str,
    digest: str,
    keys: Sequence[CosignKey],
    work: Path,
    *,
    identity: str = "",
    creds: str = "",
) -> str:
    """Sign the manifest `digest` of registry/`repository` with each of `keys` and attach the
    signatures as cosign does (tag sha256-HEX.sig); the identity claimed is the repository
    (cosign's default) unless `identity` says another; `creds` for a registry with auth. The
    tag's manifest digest."""
    work.mkdir(parents=True, exist_ok=True)
    claim = identity or f"{registry.host}/{repository}"
    payload = cosign_payload(digest, claim)
    signed = [(payload, cosign_sign(key.private, payload, work)) for key in keys]
    layout = work / f"sig-{digest[7:19]}"
    tag = sigstore_tag(digest)
    made = signature_manifest(layout, signed, tag)
    dest = f"docker://{registry.host}/{repository}:{tag}"
    skopeo_copy(f"oci:{layout}:{tag}", dest, pki=pki, creds=creds)
    return made


# containers-policy.json.


def gpg_req(
    key: Path | Sequence[Path], identity: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """signedBy (GPGKeys) with keyPath, or keyPaths for several keys."""
    req: dict[str, Any] = {"type": "signedBy", "keyType": "GPGKeys"}
    if isinstance(key, Path):
        req["keyPath"] = str(key)
    else:
        req["keyPaths"] = [str(p) for p in key]
    if identity:
        req["signedIdentity"] = dict(identity)
    return req


def sigstore_req(key: Path, identity: Mapping[str, str] | None = None) -> dict[str, Any]:
    req: dict[str, Any] = {"type": "sigstoreSigned", "keyPath": str(key)}
    if identity:
        req["signedIdentity"] = dict(identity)
    return req


REJECT: dict[str, Any] = {"type": "reject"}
ACCEPT: dict[str, Any] = {"type": "insecureAcceptAnything"}
MATCH_REPOSITORY = {"type": "matchRepository"}


def exact_reference(ref: str) -> dict[str, str]:
    return {"type": "exactReference", "dockerReference": ref}


def write_policy(
    path: Path,
    docker: Mapping[str, Sequence[Mapping[str, Any]]],
    default: Sequence[Any] = (REJECT,),
) -> Path:
    """A policy.json: `docker` maps scopes of the docker transport to their requirements,
    `default` (reject) is for everything else. (skopeo checks the source only, never where it
    copies to.)"""
    doc = {
        "default": list(default),
        "transports": {"docker": {scope: list(reqs) for scope, reqs in docker.items()}},
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path
