"""`bootc-live pull --policy` against `skopeo copy --policy`, on images signed by the real tools.

One real docker-registry (TLS from a throwaway CA), a lookaside store written by skopeo
(`--sign-by`, registries.d `lookaside-staging`) and served by nginx (registries.d `lookaside`),
and cosign attachments made with openssl (tag sha256-HEX.sig, pushed by skopeo). For each case
both tools get the same policy.json and registries.d: they must agree, bootc-live's refusal is
one line naming the image, the policy scope and the reason, and it leaves nothing behind.

Debian's skopeo is built without sigstore ("Debian-local change: sigstore disabled"): for the
attachments the oracle is openssl itself, verifying what skopeo reads from the registry.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from imagegen import REF_NAME, build_layout, f, layer_tar
from registries import Pki, Registry, docker_registry, make_pki
from servers import Nginx, asked_path, free_port, nginx
from signing import (
    ACCEPT,
    MATCH_REPOSITORY,
    REJECT,
    CosignKey,
    GpgKey,
    attach_sigstore,
    cosign_key,
    digest_of,
    exact_reference,
    gpg_keys,
    gpg_req,
    move_signature,
    need_tools,
    raw_manifest,
    registries_d,
    run,
    sigstore_req,
    sigstore_tag,
    skopeo_copy,
    write_policy,
)
from unpackers import assert_clean_failure, bootc_live

SKOPEO_NO_SIGSTORE = "Debian-local change: sigstore disabled"


@dataclass
class World:
    registry: Registry
    pki: Pki
    lookaside: Nginx
    store: Path  # the lookaside store's directory (what nginx serves)
    registries_d: Path
    gpg: dict[str, GpgKey]  # trusted, other
    cosign: dict[str, CosignKey]  # trusted, other
    digests: dict[str, str]  # repository → manifest digest

    def ref(self, image: str) -> str:
        return f"{self.registry.host}/{image}"


# The images (repository:tag), how each is signed and what a pull of it carries (the suffixes
# of its signature tags: .simplesig GPG, .sig sigstore).
CARRIED = {
    "signed/a:v1": (".simplesig",),  # GPG, the trusted key
    "other/b:v1": (".simplesig",),  # GPG, the other key
    "mirror/a:v1": (".simplesig",),  # GPG, the trusted key, as signed/a:v1 (the same image)
    "moved/c:v1": (".simplesig",),  # signature-1 of signed/a:v1 copied to its lookaside place
    "unsigned/d:v1": (),
    "cosign/e:v1": (".sig",),  # sigstore attachment, the trusted key
    "cosign/f:v1": (".sig",),  # sigstore attachment, the other key
    "both/g:v1": (".simplesig", ".sig"),  # GPG and sigstore, the trusted keys
}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    need_tools("skopeo", "docker-registry", "nginx", "openssl")
    work = tmp_path_factory.mktemp("trust")
    store = work / "lookaside"
    store.mkdir()
    pki = make_pki(work / "pki")
    layouts = {}
    for name in ("a", "b", "c", "d", "e", "f", "g"):
        layouts[name] = work / f"layout-{name}"
        build_layout(str(layouts[name]), [layer_tar([f(name, name.encode() * 100)])])
    cosign = {name: cosign_key(work / f"cosign-{name}") for name in ("trusted", "other")}
    with (
        gpg_keys(work / "gnupg", "trusted", "other") as gpg,
        docker_registry(work / "registry", pki) as registry,
        nginx(store, work / "nginx") as web,
    ):
        lookaside = web.url("").rstrip("/")
        config = registries_d(
            work / "registries.d", lookaside=lookaside, staging=store, attachments=True
        )
        w = World(registry, pki, web, store, config, gpg, cosign, {})

        def push(image: str, layout: str, key: str = "", identity: str = "") -> None:
            skopeo_copy(
                f"oci:{layouts[layout]}:latest",
                f"docker://{w.ref(image)}",
                pki=pki,
                registries=config,
                gnupg=work / "gnupg",
                sign_by=gpg[key] if key else None,
                identity=w.ref(identity) if identity else "",
            )
            w.digests[image.partition(":")[0]] = digest_of(raw_manifest(w.ref(image), pki))

        push("signed/a:v1", "a", "trusted")
        push("other/b:v1", "b", "other")
        push("mirror/a:v1", "a", "trusted", identity="signed/a:v1")
        push("moved/c:v1", "c")
        move_signature(
            store, ("signed/a", w.digests["signed/a"]), ("moved/c", w.digests["moved/c"])
        )
        push("unsigned/d:v1", "d")
        push("cosign/e:v1", "e")
        push("cosign/f:v1", "f")
        push("both/g:v1", "g", "trusted")
        for repository, key in (
            ("cosign/e", "trusted"),
            ("cosign/f", "other"),
            ("both/g", "trusted"),
        ):
            attach_sigstore(
                registry, pki, repository, w.digests[repository], [cosign[key]], work / "attach"
            )
        yield w


Requirements = Callable[[World], list[dict[str, Any]]]


def gpg_trusted(identity: dict[str, str] | None = None) -> Requirements:
    return lambda w: [gpg_req(w.gpg["trusted"].public, identity)]


def sigstore_trusted(w: World) -> list[dict[str, Any]]:
    return [sigstore_req(w.cosign["trusted"].public, MATCH_REPOSITORY)]


@dataclass(frozen=True)
class Case:
    image: str
    requirements: Requirements
    refusal: str  # "" accepted; else what bootc-live's line says after the image (the reason)
    skopeo: bool | None  # skopeo copy --policy accepts it (None: it cannot say, no sigstore)


CASES = {
    "signed by the trusted key": Case("signed/a:v1", gpg_trusted(), "", True),
    "unsigned": Case("unsigned/d:v1", gpg_trusted(), "no simple signature", False),
    "signed by another key": Case("other/b:v1", gpg_trusted(), "unknown key", False),
    "identity mismatch, matchRepository": Case(
        "mirror/a:v1", gpg_trusted(MATCH_REPOSITORY), "identity mismatch", False
    ),
    "identity mismatch, exactReference": Case(
        "signed/a:v1",
        lambda w: [gpg_req(w.gpg["trusted"].public, exact_reference(w.ref("signed/a:v2")))],
        "identity mismatch",
        False,
    ),
    "exactReference of the signed identity": Case(
        "mirror/a:v1",
        lambda w: [gpg_req(w.gpg["trusted"].public, exact_reference(w.ref("signed/a:v1")))],
        "",
        True,
    ),
    "signature moved from another image": Case(
        "moved/c:v1", gpg_trusted(), "digest mismatch", False
    ),
    "reject": Case("signed/a:v1", lambda w: [REJECT], "rejected", False),
    "sigstore attachment, trusted key": Case("cosign/e:v1", sigstore_trusted, "", None),
    "sigstore attachment, another key": Case("cosign/f:v1", sigstore_trusted, "unknown key", None),
    "GPG and sigstore both required, both there": Case(
        "both/g:v1", lambda w: gpg_trusted()(w) + sigstore_trusted(w), "", None
    ),
    "GPG and sigstore both required, GPG only": Case(
        "signed/a:v1",
        lambda w: gpg_trusted()(w) + sigstore_trusted(w),
        "no sigstore signature",
        False,  # skopeo finds no signature to hand to its disabled sigstore code
    ),
}


def skopeo_accepts(w: World, policy: Path, image: str, out: Path) -> bool:
    """skopeo copy --policy (the oracle) with the same registries.d. (A refused copy leaves an
    empty layout at `out`: skopeo makes it before it looks at the source.)"""
    done = run(
        "skopeo", "copy", "--quiet", "--policy", str(policy),
        "--registries.d", str(w.registries_d), "--src-cert-dir", str(w.pki.cert_dir),
        # oci: cannot hold simple signatures: drop them once checked.
        "--remove-signatures", f"docker://{w.ref(image)}", f"oci:{out}:x",
    )  # fmt: skip
    if done.returncode != 0:
        assert "Source image rejected" in done.stderr, done.stderr
        if SKOPEO_NO_SIGSTORE in done.stderr:
            raise SkopeoCannotSay
    return done.returncode == 0


class SkopeoCannotSay(Exception):
    pass


def pull(w: World, policy: Path, image: str, out: Path) -> Any:
    return bootc_live(
        "pull", "--policy", str(policy), "--registries-d", str(w.registries_d),
        "--ca", str(w.pki.ca), f"docker://{w.ref(image)}", "-o", f"oci:{out}:x",
    )  # fmt: skip


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_pull_agrees_with_skopeo(world: World, tmp_path: Path, case: Case) -> None:
    scope = world.registry.host
    policy = write_policy(tmp_path / "policy.json", {scope: case.requirements(world)})
    (tmp_path / "skopeo").mkdir()
    try:
        skopeo: bool | None = skopeo_accepts(world, policy, case.image, tmp_path / "skopeo" / "o")
    except SkopeoCannotSay:
        skopeo = None
    assert skopeo is case.skopeo

    (tmp_path / "ours").mkdir()
    out = tmp_path / "ours" / "out"
    done = pull(world, policy, case.image, out)
    if not case.refusal:
        assert done.returncode == 0, done.stderr
        assert world.digests[case.image.partition(":")[0]] in done.stdout
        return
    stderr = assert_clean_failure(done)
    lines = [ln for ln in stderr.splitlines() if ln.startswith("bootc-live: ")]
    assert len(lines) == 1, stderr
    (line,) = lines
    assert line.startswith(f"bootc-live: docker://{world.ref(case.image)}: {case.refusal}"), line
    assert f'policy scope docker "{scope}"' in line, line
    assert list((tmp_path / "ours").iterdir()) == []  # no output, no temporary beside it


def test_the_attachments_verify_with_openssl_as_skopeo_reads_them(
    world: World, tmp_path: Path
) -> None:
    """The oracle for sigstore: skopeo fetches each image's .sig manifest from the registry,
    openssl verifies its signature with the trusted key; the other key's does not."""
    trusted = world.cosign["trusted"].public
    for repository, verifies in (("cosign/e", True), ("cosign/f", False), ("both/g", True)):
        digest = world.digests[repository]
        layout = tmp_path / repository.replace("/", "-")
        tag = sigstore_tag(digest)
        done = run(
            "skopeo", "copy", "--quiet", "--preserve-digests",
            "--src-cert-dir", str(world.pki.cert_dir),
            f"docker://{world.ref(repository)}:{tag}", f"oci:{layout}:sig",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        index = json.loads((layout / "index.json").read_bytes())
        manifest = json.loads(blob(layout, index["manifests"][0]["digest"]))
        (layer,) = manifest["layers"]
        assert layer["mediaType"] == "application/vnd.dev.cosign.simplesigning.v1+json"
        payload = blob(layout, layer["digest"])
        claims = json.loads(payload)["critical"]
        assert claims["image"]["docker-manifest-digest"] == digest
        assert claims["identity"]["docker-reference"] == world.ref(repository)
        signature = tmp_path / "signature"
        signature.write_bytes(
            base64.b64decode(layer["annotations"]["dev.cosignproject.cosign/signature"])
        )
        (tmp_path / "payload").write_bytes(payload)
        verified = run(
            "openssl", "dgst", "-sha256", "-verify", str(trusted), "-signature",
            str(signature), str(tmp_path / "payload"),
        )  # fmt: skip
        assert (verified.returncode == 0) is verifies, verified.stdout + verified.stderr


def tags(layout: Path) -> set[str]:
    index = json.loads((layout / "index.json").read_bytes())
    return {m.get("annotations", {}).get(REF_NAME, "") for m in index["manifests"]}


def blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / "sha256" / digest.partition(":")[2]).read_bytes()


def test_an_https_lookaside_is_trusted_with_the_registry_ca_and_read_once(
    world: World, tmp_path: Path
) -> None:
    """The lookaside on https, its certificate from the registry's throwaway CA (--ca): the pull
    verifies and carries the signature, having fetched each signature file once."""
    with nginx(world.store, tmp_path / "nginx", tls=(world.pki.cert, world.pki.key)) as web:
        lookaside = web.url("").rstrip("/").replace("http://", "https://", 1)
        config = registries_d(tmp_path / "registries.d", lookaside=lookaside)
        policy = write_policy(tmp_path / "policy.json", {world.registry.host: gpg_trusted()(world)})
        out = tmp_path / "out"
        done = bootc_live(
            "pull", "--policy", str(policy), "--registries-d", str(config),
            "--ca", str(world.pki.ca), f"docker://{world.ref('signed/a:v1')}", "-o", f"oci:{out}:x",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "signatures: verified by GPG key" in done.stderr
        hex_value = world.digests["signed/a"].partition(":")[2]
        assert f"sha256-{hex_value}.simplesig" in tags(out)
        fetched = [asked_path(line) for line in web.requests()]
        assert fetched == [
            f"/signed/a@sha256={hex_value}/signature-1",
            f"/signed/a@sha256={hex_value}/signature-2",
        ]


@pytest.mark.parametrize("needed", [False, True], ids=["policy needs none", "policy needs them"])
def test_a_lookaside_that_cannot_be_read(world: World, tmp_path: Path, needed: bool) -> None:
    """A lookaside store that refuses connections: a warning, and a pull without signatures,
    when the policy needs none; one line and nothing written when it needs them (the pull
    must not carry fewer signatures than the check used)."""
    config = registries_d(tmp_path / "registries.d", lookaside=f"http://127.0.0.1:{free_port()}")
    requirements = gpg_trusted()(world) if needed else [ACCEPT]
    policy = write_policy(tmp_path / "policy.json", {world.registry.host: requirements})
    (tmp_path / "ours").mkdir()
    out = tmp_path / "ours" / "out"
    done = bootc_live(
        "pull", "--policy", str(policy), "--registries-d", str(config), "--retries", "0",
        "--ca", str(world.pki.ca), f"docker://{world.ref('signed/a:v1')}", "-o", f"oci:{out}:x",
    )  # fmt: skip
    if not needed:
        assert done.returncode == 0, done.stderr
        assert "bootc-live: warning: no signature kept: " in done.stderr
        assert not any(tag.endswith(".simplesig") for tag in tags(out))
        return
    stderr = assert_clean_failure(done)
    (line,) = [ln for ln in stderr.splitlines() if ln.startswith("bootc-live: ")]
    assert "127.0.0.1" in line and "signature-1" in line, line
    assert list((tmp_path / "ours").iterdir()) == []
