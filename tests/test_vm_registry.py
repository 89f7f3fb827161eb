"""Registry boot in QEMU: the guest pulls the demo image from a real registry (docker-registry
with TLS from a throwaway CA and htpasswd auth) through guestfwd to loopback, by tag, by digest,
through a pull-through mirror, and stops with one line on a wrong pin or wrong credentials.

The initramfs carries the CA (`build --ca`) and the credentials (`build --auth-file`).
"""

from __future__ import annotations

import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bootc_live.demo import demo_layers
from bootc_live.layout import write_layout
from registries import GUEST_SERVER, Registry, auth_json, docker_registry, make_pki, skopeo_push
from unpackers import bootc_live, need_root_and
from vmboot import Result, assert_live, assert_stopped, build_artifacts, ready, run

pytestmark = pytest.mark.vm

USER, PASSWORD = "guest-puller", "pw-for-the-guest"
UPSTREAM, MIRROR = 5000, 5001  # ports on GUEST_SERVER


@dataclass
class Setup:
    upstream: Registry
    mirror: Registry
    digest: str
    artifacts: Path  # systemd initrd with the CA and the right credentials
    wrong: Path  # shell initrd with the CA and wrong credentials

    def boot(self, artifacts: Path, ref: str, extra: str = "") -> Result:
        return run(
            artifacts,
            f"root=bootc-live:docker://{GUEST_SERVER}:{UPSTREAM}/{ref} {extra}".strip(),
            network=True,
            embedded=False,
            forwards=((UPSTREAM, self.upstream.port), (MIRROR, self.mirror.port)),
        )

    def guest_pulls(self, registry: Registry) -> int:
        """Blob requests the guest's client (user agent bootc-live) made to a registry."""
        return sum(
            1
            for line in registry.log().splitlines()
            if "/v2/test/demo/blobs/" in line and "useragent=bootc-live" in line
        )


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    need_root_and("docker-registry", "skopeo", "openssl", "qemu-system-x86_64")
    work = tmp_path_factory.mktemp("vm-registry")
    pki = make_pki(work / "pki")
    with docker_registry(work / "upstream", pki, users={USER: PASSWORD}) as upstream:
        layout = work / "demo"
        digest = write_layout(layout, demo_layers(), "v1")
        skopeo_push(f"oci:{layout}:v1", upstream, "test/demo:v1", pki, f"{USER}:{PASSWORD}")
        with docker_registry(work / "mirror", pki, proxy_of=(upstream, USER, PASSWORD)) as mirror:
            # The guest names the registry as the guest sees it; the host as it sees it.
            guest = f"{GUEST_SERVER}:{UPSTREAM}"
            right = auth_json(
                work / "right.json",
                {f"{GUEST_SERVER}:{UPSTREAM}": (USER, PASSWORD), upstream.host: (USER, PASSWORD)},
            )
            wrong = auth_json(work / "wrong.json", {f"{GUEST_SERVER}:{UPSTREAM}": (USER, "nope")})
            yield Setup(
                upstream,
                mirror,
                digest,
                # `bootc-live build docker://…`: the host pulls the image with our client too.
                build_artifacts(
                    f"docker://{upstream.host}/test/demo:v1",
                    work / "right",
                    "systemd",
                    ca=pki.ca,
                    auth_file=right,
                    auth_registries=(guest,),  # the host's name for it is not the guest's
                ),
                build_artifacts(
                    f"oci:{layout}:v1",
                    work / "wrong",
                    "shell",
                    ca=pki.ca,
                    auth_file=wrong,
                    auth_registries=(guest,),
                ),
            )


def ready_digest(result: Result) -> str:
    return str(ready(result.boot.output)["manifest"])


def test_the_credentials_are_in_the_initramfs_for_root_only(setup: Setup) -> None:
    listing = subprocess.run(
        ["lsinitrd", str(setup.artifacts / "initrd.img")],
        capture_output=True,
        text=True,
        errors="replace",
    ).stdout
    entries = [
        line.split() for line in listing.splitlines() if line.endswith(" etc/bootc-live/auth.json")
    ]
    assert len(entries) == 1 and entries[0][0] == "-rw-------", listing[-2000:]
    assert entries[0][1:3] == ["1", "root"]
    for holder in ("initrd.img", "initrd-full.img"):  # the artifacts holding them: root's too
        mode = (setup.artifacts / holder).stat().st_mode
        assert stat.S_IMODE(mode) & 0o077 == 0, (holder, oct(mode))


def test_boot_from_the_registry_by_tag(setup: Setup) -> None:
    before = setup.guest_pulls(setup.upstream)
    result = setup.boot(setup.artifacts, "test/demo:v1")
    assert_live(result, root="ro", etc="rw", var="rw", fstype="tmpfs", whiteout="yes")
    assert ready_digest(result) == setup.digest
    assert setup.guest_pulls(setup.upstream) > before  # from the registry itself
    assert PASSWORD not in result.boot.output  # secrets are never logged


def test_boot_from_the_registry_by_digest_with_vm_forward(setup: Setup) -> None:
    """`bootc-live vm --forward` lets a user try it: the guest reaches the host's registry."""
    root = f"root=bootc-live:docker://{GUEST_SERVER}:{UPSTREAM}/test/demo@{setup.digest}"
    result = bootc_live(
        *("vm", str(setup.artifacts), "--forward", f"{UPSTREAM}:{setup.upstream.port}"),
        *("--append", root, "--accel", "tcg", "--mem", "512", "--timeout", "300"),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "BOOTC-LIVE-REPORT root=ro etc=rw var=rw" in result.stdout, result.stdout[-3000:]
    assert ready(result.stdout)["manifest"] == setup.digest


def test_boot_through_the_mirror(setup: Setup) -> None:
    upstream_before = setup.guest_pulls(setup.upstream)
    result = setup.boot(
        setup.artifacts, "test/demo:v1", f"bootc.registry.mirror={GUEST_SERVER}:{MIRROR}"
    )
    assert_live(result, root="ro", whiteout="yes")
    assert any(f"mirror {GUEST_SERVER}:{MIRROR} serves" in m for m in result.messages)
    assert setup.guest_pulls(setup.mirror) > 0
    assert setup.guest_pulls(setup.upstream) == upstream_before  # nothing fetched around it


def test_a_wrong_digest_pin_stops_the_boot(setup: Setup) -> None:
    wrong = "sha256:" + "0" * 64
    result = setup.boot(setup.artifacts, f"test/demo@{wrong}")
    assert_stopped(
        result,
        f"registry {GUEST_SERVER}:{UPSTREAM}: test/demo has no manifest {wrong} "
        "(MANIFEST_UNKNOWN); check the repository, tag or digest in docker://",
    )
    # bootc.digest= against a tag: the image is there, but it is not the pinned one.
    result = setup.boot(setup.artifacts, "test/demo:v1", f"bootc.digest={wrong}")
    assert_stopped(result, f"image digest is {setup.digest}, not the pinned {wrong}")


def test_wrong_credentials_stop_the_boot(setup: Setup) -> None:
    assert_stopped(
        setup.boot(setup.wrong, "test/demo:v1"),
        f"registry {GUEST_SERVER}:{UPSTREAM}: 401 unauthorized for repository test/demo "
        "(credentials rejected) (UNAUTHORIZED); add credentials with bootc-live build --auth-file",
    )
