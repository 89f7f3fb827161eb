"""The servers the guest fetches from: nginx (the image and a tiny one over http) and
docker-registry (TLS from a throwaway CA, htpasswd auth), on 127.0.0.1, seen by the guest at
GUEST_SERVER through QEMU's guestfwd."""

from __future__ import annotations

import os
import re
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchlib.common import BenchError, log
from bootc_live.layout import LayerTar, TreeEntry, write_layout
from bootc_live.vm import GUEST_SERVER

# The registry row: docker-registry on 127.0.0.1 (TLS from a throwaway CA, htpasswd auth), seen
# by the guest at GUEST_SERVER:REGISTRY_PORT through QEMU's guestfwd; the test image is pushed
# there once per run, and its initramfs carries the CA and these credentials.
REGISTRY_PORT = 5000
REGISTRY_REPO = "bench/debian:live"
REGISTRY_USER, REGISTRY_PASSWORD = "bench-puller", "bench-puller-pw"
TINY_TAG = "bootc-live-bench-tiny"


def write_tiny_archive(path: Path, workdir: Path) -> None:
    """An oci-archive of a tiny image (one small layer): a boot of it measures the baseline."""
    layout = workdir / "tiny-layout"
    layer = LayerTar(
        [
            TreeEntry("etc", "dir", mode=0o755),
            TreeEntry("var", "dir", mode=0o755),
            TreeEntry("etc/hostname", data=b"bootc-live-bench-tiny\n"),
        ]
    )
    write_layout(layout, [layer.tar()], TINY_TAG)
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for member in sorted(layout.rglob("*")):
            tar.add(member, arcname=os.fspath(member.relative_to(layout)), recursive=False)


@contextmanager
def serving(artifacts: Path, workdir: Path) -> Iterator[int]:
    """nginx on 127.0.0.1 serving root.oci (the image), packed.img (the packed root) when the
    build made one, and tiny.oci; yields its port."""
    from servers import nginx  # tests/servers.py (imports pytest)

    served = workdir / "served"
    served.mkdir(parents=True)
    (served / "root.oci").symlink_to(artifacts / "root.oci")
    if (artifacts / "packed.img").exists():
        (served / "packed.img").symlink_to(artifacts / "packed.img")
    write_tiny_archive(served / "tiny.oci", workdir)
    with nginx(served, workdir / "nginx") as server:
        yield server.port


def registry_credentials(workdir: Path) -> tuple[Any, Path]:
    """What the registry row's initramfs carries: a throwaway CA (the registry's certificate is
    valid for 127.0.0.1 and GUEST_SERVER) and an auth.json naming the registry as the guest sees
    it, GUEST_SERVER:REGISTRY_PORT."""
    from registries import auth_json, make_pki  # tests/registries.py (imports pytest)

    pki = make_pki(workdir / "pki")
    auth = auth_json(
        workdir / "auth.json",
        {f"{GUEST_SERVER}:{REGISTRY_PORT}": (REGISTRY_USER, REGISTRY_PASSWORD)},
    )
    return pki, auth


@contextmanager
def registry_serving(source: str, pki: Any, workdir: Path) -> Iterator[tuple[Any, float]]:
    """docker-registry on 127.0.0.1 (TLS, htpasswd auth) with `source` pushed to it by skopeo as
    REGISTRY_REPO; yields the registry (its port, its log) and the push's seconds."""
    from registries import docker_registry, skopeo_push

    with docker_registry(workdir, pki, users={REGISTRY_USER: REGISTRY_PASSWORD}) as registry:
        log(f"+ skopeo copy {source} docker://{registry.host}/{REGISTRY_REPO}")
        start = time.monotonic()
        try:
            creds = f"{REGISTRY_USER}:{REGISTRY_PASSWORD}"
            skopeo_push(source, registry, REGISTRY_REPO, pki, creds)
        except AssertionError as e:  # skopeo_push asserts, for the tests
            raise BenchError(str(e)) from None
        yield registry, time.monotonic() - start


def guest_blob_requests(registry: Any, name: str = REGISTRY_REPO) -> dict[str, Any]:
    """The blob requests the guest's client (user agent bootc-live) made to the registry for
    the repository of `name`, from the registry's log: its completed responses, their statuses,
    and how many blobs they were."""
    repo = name.split(":")[0]
    responses = [
        line
        for line in registry.log().splitlines()
        if 'msg="response completed"' in line
        and f"/v2/{repo}/blobs/" in line
        and "useragent=bootc-live" in line
    ]
    statuses = sorted({m[1] for line in responses if (m := re.search(r"status=(\d+)", line))})
    blobs = {m[1] for line in responses if (m := re.search(r"blobs/(sha256:[0-9a-f]+)", line))}
    return {"responses": len(responses), "statuses": statuses, "blobs": len(blobs)}
