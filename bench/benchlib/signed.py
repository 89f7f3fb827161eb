"""The registry-signed row: the test image pushed to the registry row's docker-registry as
another repository, signed as tests/test_vm_trust.py signs its images (GPG simple signing by
skopeo into a lookaside store nginx serves, a cosign-format sigstore attachment written with
openssl), and artifacts whose initramfs carries a policy requiring both."""

from __future__ import annotations

import json
import os
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchlib.artifacts import run_step
from benchlib.common import BenchError, log
from benchlib.servers import REGISTRY_PASSWORD, REGISTRY_PORT, REGISTRY_USER
from bootc_live.vm import GUEST_SERVER

SIGNED_REPO = "bench/debian-signed:live"
LOOKASIDE_PORT = 8080  # nginx serving the lookaside store, on GUEST_SERVER (a second guestfwd)
# What the guest boots, and the identity both signatures claim (matchRepoDigestOrExact, the
# default signedIdentity, accepts it exactly).
SIGNED_GUEST_REF = f"{GUEST_SERVER}:{REGISTRY_PORT}/{SIGNED_REPO}"
SIGNED_SCOPE = SIGNED_GUEST_REF.rsplit(":", 1)[0]  # the guest's repository: the policy's scope


@dataclass
class Signed:
    """What the row was given: the policy and registries.d its build puts into the initramfs,
    the lookaside nginx's port, the push and signing's seconds, the keys."""

    policy: Path
    registries_d: Path
    lookaside: Any  # tests/servers.py's Nginx
    sign_seconds: float
    gpg_fingerprint: str
    cosign_public: Path

    def lookaside_requests(self) -> list[str]:
        """The signature files nginx served (the guest's requests: the host reads none)."""
        return [line for line in self.lookaside.requests() if "/signature-" in line]


def trust_oci_layout(policy: Path, layout: Path) -> None:
    """Add to `policy` an `oci` scope accepting the test image's layout, the build's SOURCE:
    `bootc-live build` checks its own SOURCE too, and the layout carries no signatures (they are
    in the registry). The guest boots by the registry's name, which the docker scope governs."""
    doc = json.loads(policy.read_text())
    accept = [{"type": "insecureAcceptAnything"}]
    doc["transports"]["oci"] = {os.path.realpath(layout): accept}
    policy.write_text(json.dumps(doc, indent=2) + "\n")


def sign_and_push(
    source: str, layout: Path, digest: str, registry: Any, pki: Any, work: Path, stack: ExitStack
) -> Signed:
    """Push `source` (manifest `digest`, its layout `layout`) to `registry` as SIGNED_REPO,
    signed by a new GPG key (skopeo --sign-by, into a lookaside store nginx serves until the
    stack closes) and a new cosign key (an attachment), both as SIGNED_GUEST_REF; the policy
    requiring both under the guest's scope, and the guest's registries.d."""
    from servers import nginx  # tests/ (import pytest)
    from signing import (
        attach_sigstore,
        cosign_key,
        gpg_keys,
        gpg_req,
        lookaside_dir,
        registries_d,
        sigstore_req,
        skopeo_copy,
        write_policy,
    )

    work.mkdir(parents=True)
    store = work / "lookaside"
    store.mkdir()
    try:
        gpg = stack.enter_context(gpg_keys(work / "gnupg", "bench-signer"))["bench-signer"]
        cosign = cosign_key(work / "cosign")
        web = stack.enter_context(nginx(store, work / "nginx"))
        # skopeo writes the simple signature into the store (the host's name of the registry);
        # the guest reads it from GUEST_SERVER:LOOKASIDE_PORT, and the attachment from the
        # registry (its name of it): one registries.d each, the guest's into the initramfs.
        host_d = registries_d(
            work / "registries.d-host",
            lookaside=web.url("").rstrip("/"),
            staging=store,
            attachments=True,
            scope=registry.host,
        )
        guest_d = registries_d(
            work / "registries.d",
            lookaside=f"http://{GUEST_SERVER}:{LOOKASIDE_PORT}",
            attachments=True,
            scope=f"{GUEST_SERVER}:{REGISTRY_PORT}",
        )
        creds = f"{REGISTRY_USER}:{REGISTRY_PASSWORD}"
        dest = f"docker://{registry.host}/{SIGNED_REPO}"
        log(f"+ skopeo copy --sign-by {gpg.fingerprint} {source} {dest}")
        start = time.monotonic()
        skopeo_copy(
            source,
            dest,
            pki=pki,
            registries=host_d,
            gnupg=work / "gnupg",
            sign_by=gpg,
            identity=SIGNED_GUEST_REF,
            creds=creds,
        )
        repository = SIGNED_REPO.split(":")[0]
        log(f"+ cosign-format attachment (openssl) for {repository}@{digest}")
        attach_sigstore(
            registry,
            pki,
            repository,
            digest,
            [cosign],
            work / "attach",
            identity=SIGNED_GUEST_REF,
            creds=creds,
        )
        seconds = time.monotonic() - start
    except AssertionError as e:  # the helpers assert, for the tests
        raise BenchError(str(e)) from None
    signed = lookaside_dir(store, repository, digest) / "signature-1"
    if not signed.is_file():
        raise BenchError(f"skopeo wrote no simple signature at {signed}")
    policy = write_policy(
        work / "policy.json",
        {SIGNED_SCOPE: [gpg_req(gpg.public), sigstore_req(cosign.public)]},
    )
    trust_oci_layout(policy, layout)
    return Signed(policy, guest_d, web, seconds, gpg.fingerprint, cosign.public)


# The verifiers the dracut module installs whenever the userland building the initramfs has
# them (with a policy or without: module-setup.sh's `inst_multiple -o gpgv openssl`).
VERIFIERS = ("gpgv", "openssl")


def parse_lsinitrd(text: str) -> dict[str, int]:
    """The regular files of an initramfs and their sizes, from `lsinitrd FILE`'s listing (ls -l
    lines after its header: mode, links, owner, group, size, date in three fields, path)."""
    files = {}
    for line in text.splitlines():
        fields = line.split(None, 8)
        if len(fields) == 9 and fields[0].startswith("-") and fields[4].isdigit():
            files[fields[8]] = int(fields[4])
    return files


def initrd_files(initrd: Path) -> dict[str, int]:
    """The regular files in an initrd.img, by dracut's lsinitrd."""
    _, listing = run_step(["lsinitrd", str(initrd)], f"lsinitrd {initrd}")
    return parse_lsinitrd(listing)


def initrd_difference(plain: dict[str, int], signed: dict[str, int]) -> dict[str, Any]:
    """What registry-signed's initramfs holds for the check (uncompressed bytes): the verifiers
    (and whether registry's holds them too), and the files only it has (the policy,
    registries.d, the keys)."""
    verifiers = {
        path: size for path, size in signed.items() if path.rsplit("/", 1)[-1] in VERIFIERS
    }
    only = {path: size for path, size in signed.items() if path not in plain}
    return {
        "verifiers": verifiers,
        "verifiers_in_plain": all(path in plain for path in verifiers),
        "only_signed": only,
        "only_signed_bytes": sum(only.values()),
    }
