"""The packed root from a registry in QEMU (issue 18): `bootc-live push-packed` puts the demo
image's packed.img beside the image in the real registry (docker-registry 2.8: no referrers API,
the tag fallback `sha256-HEX`), and the guest boots root=bootc-live:packed:docker://… from it:
the image resolved by its tag, the artifact found, its layer streamed into RAM and mounted.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from bootc_live.demo import demo_layers
from bootc_live.layout import write_layout
from bootc_live.runtime import packedreg
from registries import GUEST_SERVER, auth_json, docker_registry, make_pki, skopeo_push
from test_vm_packed import assert_packed
from unpackers import bootc_live, need_root_and
from vmboot import build_artifacts, run

pytestmark = pytest.mark.vm

USER, PASSWORD = "guest-puller", "pw-for-the-guest"
PORT = 5000  # on GUEST_SERVER


def test_packed_root_from_the_registry(tmp_path: Path) -> None:
    need_root_and("docker-registry", "skopeo", "openssl", "qemu-system-x86_64")
    pki = make_pki(tmp_path / "pki")
    with docker_registry(tmp_path / "registry", pki, users={USER: PASSWORD}) as registry:
        layout = tmp_path / "demo"
        digest = write_layout(layout, demo_layers(), "v1")
        skopeo_push(f"oci:{layout}:v1", registry, "test/demo:v1", pki, f"{USER}:{PASSWORD}")
        creds = auth_json(
            tmp_path / "auth.json",
            {f"{GUEST_SERVER}:{PORT}": (USER, PASSWORD), registry.host: (USER, PASSWORD)},
        )
        art = build_artifacts(
            f"docker://{registry.host}/test/demo:v1", tmp_path / "art", "shell", pki.ca, creds
        )
        assert json.loads((art / "packed.json").read_text())["image"] == digest
        pushed = bootc_live(
            *("push-packed", f"docker://{registry.host}/test/demo:v1", str(art / "packed.img")),
            *("--ca", str(pki.ca), "--auth-file", str(creds)),
            tmpdir=tmp_path,
        )
        assert pushed.returncode == 0, pushed.stderr
        assert f"listed at the tag {packedreg.fallback_tag(digest)}" in pushed.stdout
        sha256 = json.loads((art / "packed.json").read_text())["sha256"]
        assert f"bootc.packed.sha256={sha256}" in pushed.stdout  # the pin printed, required
        start = time.monotonic()
        result = run(
            art,
            f"root=bootc-live:packed:docker://{GUEST_SERVER}:{PORT}/test/demo:v1 "
            f"bootc.packed.sha256={sha256}",
            network=True,
            embedded=False,
            forwards=((PORT, registry.port),),
        )
        seconds = time.monotonic() - start
        log = registry.log()
    root = assert_packed(result, art, root="ro", etc="rw", var="rw", fstype="squashfs")
    assert result.status["manifest"] == digest
    assert any("the packed root of" in m for m in result.messages), result.messages
    # The guest asked the referrers API (404 here), then the tag, then the layer: no image layer.
    guest = [line for line in log.splitlines() if "useragent=bootc-live" in line]
    assert any(f"/manifests/{packedreg.fallback_tag(digest)}" in line for line in guest)
    assert any(f"/blobs/{root['sha256']}" in line for line in guest)
    print(f"packed root from the registry: {root}; boot {seconds:.0f}s")
