"""Signatures checked at boot, in QEMU: the demo image in a real registry, signed by skopeo
(GPG, into a lookaside store nginx serves) and with a cosign attachment made with openssl; the
initramfs carries a policy that requires both (`bootc-live build --policy --registries-d`).

One build; its policy has a scope for each case below (the longest match applies):
- by tag from the registry: it boots, and status.json says which keys verified it;
- from the registry, an image carrying another image's signature, an unsigned image, one
  signed by an untrusted key (a GPG signature; a sigstore attachment), identity mismatches
  under matchRepository and exactReference, a repository whose scope is reject: each boot
  stops with one line naming the image, the policy scope and the reason, before any layer of
  it is fetched;
- the image embedded by that build (pulled with its signatures, which it carries): it boots.
- the build's root.oci from nginx, named by bootc.identity=: it boots on the signatures it carries.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bootc_live.demo import demo_layers, host_kernel
from bootc_live.layout import LayerTar, TreeEntry, write_layout
from registries import GUEST_SERVER, Registry, docker_registry, make_pki
from servers import Nginx, nginx
from signing import (
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
    raw_manifest,
    registries_d,
    sigstore_req,
    skopeo_copy,
    write_policy,
)
from unpackers import bootc_live, need_root_and
from vmboot import Result, assert_live, assert_stopped, ready, run

pytestmark = pytest.mark.vm

REGISTRY, LOOKASIDE = 5000, 8080  # ports on GUEST_SERVER
GUEST_REPO = f"{GUEST_SERVER}:{REGISTRY}/test"  # the guest's name of the repositories, the scope


@dataclass
class Setup:
    registry: Registry
    lookaside: Nginx
    gpg: GpgKey
    cosign: CosignKey
    digests: dict[str, str]  # repository → manifest digest
    layers: dict[str, list[str]]  # repository → its layers' digests
    artifacts: Path  # built from the pulled layout, with the policy

    def boot(self, ref: str) -> Result:
        """A registry boot of GUEST_REPO/`ref` (initrd.img alone, root= the registry)."""
        return run(
            self.registry_artifacts,
            f"root=bootc-live:docker://{GUEST_REPO}/{ref}",
            network=True,
            embedded=False,
            forwards=((REGISTRY, self.registry.port), (LOOKASIDE, self.lookaside.port)),
            log=self.console(ref),
        )

    def console(self, name: str) -> Path:
        """Where a boot's console is kept (the test's artifact)."""
        return self.artifacts.with_name(f"console-{name.replace('/', '-')}.log")

    @property
    def registry_artifacts(self) -> Path:
        """The build's kernel and initramfs without its command line (which pins the embedded
        image's digest and names it)."""
        out = self.artifacts.with_name("registry-boot")
        if not out.exists():
            out.mkdir()
            for name in ("vmlinuz", "initrd.img", "rootfs.img", "initrd-full.img"):
                (out / name).symlink_to(self.artifacts / name)
            (out / "cmdline.txt").write_text("\n")
        return out

    def guest_requests(self, path: str) -> list[str]:
        """Requests the guest's client (user agent bootc-live) made to the registry for `path`."""
        return [
            line
            for line in self.registry.log().splitlines()
            if path in line and "useragent=bootc-live" in line
        ]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    need_root_and("docker-registry", "skopeo", "nginx", "openssl", "qemu-system-x86_64")
    work = tmp_path_factory.mktemp("vm-trust")
    store = work / "lookaside"
    store.mkdir()
    pki = make_pki(work / "pki")
    cosign = cosign_key(work / "cosign")
    untrusted = cosign_key(work / "cosign-other")
    demo, moved = work / "demo", work / "moved"
    write_layout(demo, demo_layers(), "v1")
    extra = LayerTar([TreeEntry("etc/moved", data=b"another image\n")])
    write_layout(moved, [*demo_layers(), extra.tar()], "v1")
    with (
        gpg_keys(work / "gnupg", "trusted", "other") as gpg,
        docker_registry(work / "registry", pki) as registry,
        nginx(store, work / "nginx") as web,
    ):
        # The host reaches both at 127.0.0.1, the guest at GUEST_SERVER: one registries.d.
        config = work / "registries.d"
        host_lookaside = web.url("").rstrip("/")
        registries_d(
            config, lookaside=host_lookaside, staging=store, attachments=True, scope=registry.host
        )
        guest_lookaside = f"http://{GUEST_SERVER}:{LOOKASIDE}"
        registries_d(
            config, lookaside=guest_lookaside, attachments=True, scope=f"{GUEST_SERVER}:{REGISTRY}"
        )
        digests, layers = {}, {}
        for layout, repository, key, signed_as in (
            (demo, "test/demo", gpg["trusted"], "test/demo"),
            (moved, "test/moved", None, ""),
            (demo, "test/unsigned", None, ""),
            (demo, "test/otherkey", gpg["other"], "test/otherkey"),
            (demo, "test/mirror", gpg["trusted"], "test/demo"),  # test/demo's identity
            (demo, "test/exact", gpg["trusted"], "test/exact"),
            (demo, "test/rejected", gpg["trusted"], "test/rejected"),
            (demo, "test/sigother", gpg["trusted"], "test/sigother"),
        ):
            skopeo_copy(
                f"oci:{layout}:v1",
                f"docker://{registry.host}/{repository}:v1",
                pki=pki,
                registries=config,
                gnupg=work / "gnupg",
                sign_by=key,
                # As the guest names it.
                identity=f"{GUEST_SERVER}:{REGISTRY}/{signed_as}:v1" if key else "",
            )
            manifest = raw_manifest(f"{registry.host}/{repository}:v1", pki)
            digests[repository] = digest_of(manifest)
            layers[repository] = [layer["digest"] for layer in json.loads(manifest)["layers"]]
        for repository, key in (("test/demo", cosign), ("test/sigother", untrusted)):
            attach_sigstore(
                registry,
                pki,
                repository,
                digests[repository],
                [key],
                work / f"attach-{repository.replace('/', '-')}",
                identity=f"{GUEST_SERVER}:{REGISTRY}/{repository}",
            )
        # test/moved gets test/demo's GPG signature: a real one, of another image.
        move_signature(
            store, ("test/demo", digests["test/demo"]), ("test/moved", digests["test/moved"])
        )

        # The guest's scope: both kinds, by the trusted keys. The host's: the same keys, the
        # identity the guest's (what the images were signed as).
        guest_name = {"type": "exactRepository", "dockerRepository": f"{GUEST_REPO}/demo"}
        policy = write_policy(
            work / "policy.json",
            {
                GUEST_REPO: [
                    gpg_req(gpg["trusted"].public),
                    sigstore_req(cosign.public, MATCH_REPOSITORY),
                ],
                f"{GUEST_REPO}/mirror": [gpg_req(gpg["trusted"].public, MATCH_REPOSITORY)],
                f"{GUEST_REPO}/exact": [
                    gpg_req(gpg["trusted"].public, exact_reference(f"{GUEST_REPO}/exact:v2"))
                ],
                f"{GUEST_REPO}/rejected": [REJECT],
                f"{registry.host}/test": [
                    gpg_req(gpg["trusted"].public, guest_name),
                    sigstore_req(cosign.public, guest_name),
                ],
            },
        )
        layout = work / "pulled"
        pulled = bootc_live(
            "pull", "--policy", str(policy), "--registries-d", str(config), "--ca", str(pki.ca),
            f"docker://{registry.host}/test/demo:v1", "-o", f"oci:{layout}:v1",
        )  # fmt: skip
        assert pulled.returncode == 0, pulled.stderr
        out = work / "artifacts"
        built = bootc_live(
            "build", f"oci:{layout}:v1", "-o", str(out), "--host", "--kver", host_kernel(),
            "--flavour", "systemd", "--ca", str(pki.ca),
            "--policy", str(policy), "--registries-d", str(config),
            "--identity", f"{GUEST_REPO}/demo:v1",
        )  # fmt: skip
        assert built.returncode == 0, built.stderr[-3000:]
        yield Setup(registry, web, gpg["trusted"], cosign, digests, layers, out)


def accepted(setup: Setup) -> dict[str, object]:
    """The status's signatures of the demo image: the scope, and the keys in the policy's order."""
    return {
        "checked": True,
        "accepted": True,
        "scope": f'docker "{GUEST_REPO}"',
        "keys": [
            f"GPG key {setup.gpg.fingerprint} ({setup.gpg.public})",
            f"sigstore key {setup.cosign.public} (ecdsa P-256)",
        ],
    }


def test_a_signed_image_boots_from_the_registry(setup: Setup) -> None:
    before = len(setup.lookaside.requests())
    result = setup.boot("demo:v1")
    assert_live(result, root="ro", etc="rw", var="rw", whiteout="yes")
    status = ready(result.boot.output)
    assert status["manifest"] == setup.digests["test/demo"]
    assert 0 < status["signatures"].pop("seconds") < 60  # the check's time, for bench/boot
    assert status["signatures"] == accepted(setup)
    digest = setup.digests["test/demo"]
    fetched = setup.lookaside.requests()[before:]
    assert f'"GET /test/demo@sha256={digest[7:]}/signature-1 HTTP/1.1" 200' in " ".join(fetched)
    assert setup.guest_requests(f"/v2/test/demo/manifests/sha256-{digest[7:]}.sig")
    for layer in setup.layers["test/demo"]:
        assert setup.guest_requests(f"/v2/test/demo/blobs/{layer}")


# Refused at boot: the repository, the scope that applies, what the line says after the image.
REFUSALS = {
    "another image's signature": ("moved", GUEST_REPO, "digest mismatch"),
    "unsigned": ("unsigned", GUEST_REPO, "no simple signature"),
    "signed by an untrusted key": ("otherkey", GUEST_REPO, "unknown key"),
    # Its GPG signature is good; its sigstore attachment is by a key the policy does not trust.
    "sigstore attachment by an untrusted key": ("sigother", GUEST_REPO, "unknown key"),
    "identity mismatch, matchRepository": ("mirror", f"{GUEST_REPO}/mirror", "identity mismatch"),
    "identity mismatch, exactReference": ("exact", f"{GUEST_REPO}/exact", "identity mismatch"),
    "reject": ("rejected", f"{GUEST_REPO}/rejected", "rejected"),
}


@pytest.mark.parametrize("case", REFUSALS.values(), ids=REFUSALS.keys())
def test_a_refused_image_stops_the_boot_before_any_layer(
    setup: Setup, case: tuple[str, str, str]
) -> None:
    repository, scope, reason = case
    result = setup.boot(f"{repository}:v1")
    line = f"docker://{GUEST_REPO}/{repository}:v1: {reason}"
    assert_stopped(result, line)
    (message,) = [m for m in result.messages if line in m]
    assert f'policy scope docker "{scope}"' in message, message
    states = [status["state"] for status in result.statuses]
    assert states == ["resolving", "failed"], states
    assert result.status["after"] == "resolving"
    assert result.status["signatures"]["accepted"] is False
    assert setup.guest_requests(f"/v2/test/{repository}/manifests/v1")
    for layer in setup.layers[f"test/{repository}"]:  # its config may be read, no layer
        assert setup.guest_requests(f"/v2/test/{repository}/blobs/{layer}") == []


def test_the_embedded_image_boots_with_the_signatures_it_carries(setup: Setup) -> None:
    """No network: both signatures come from the image's layout in the initramfs."""
    result = run(setup.artifacts, log=setup.console("embedded"))
    assert_live(result, root="ro", etc="rw", var="rw", whiteout="yes")
    status = ready(result.boot.output)
    assert status["manifest"] == setup.digests["test/demo"]
    assert 0 < status["signatures"].pop("seconds") < 60  # the check's time, for bench/boot
    assert status["signatures"] == accepted(setup)


def test_root_oci_from_a_url_boots_with_the_signatures_it_carries(
    setup: Setup, tmp_path: Path
) -> None:
    """The build's root.oci on a web server (nginx), named by bootc.identity=: its carried
    signatures satisfy the policy, as the embedded image's do (no lookaside, no registry)."""
    identity = f"bootc.identity={GUEST_REPO}/demo:v1"
    with nginx(setup.artifacts, tmp_path / "nginx") as web:
        result = run(
            setup.registry_artifacts,
            f"root=bootc-live:http://{GUEST_SERVER}/root.oci {identity}",
            network=True,
            embedded=False,
            forwards=((80, web.port),),
            log=setup.console("url"),
        )
    assert_live(result, root="ro", etc="rw", var="rw", whiteout="yes")
    status = ready(result.boot.output)
    assert status["manifest"] == setup.digests["test/demo"]
    assert 0 < status["signatures"].pop("seconds") < 60
    assert status["signatures"] == accepted(setup)
