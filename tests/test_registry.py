"""The registry client against a real registry: Debian's docker-registry with TLS and htpasswd.

Images are pushed with skopeo (a demo image, a multi-platform index with zstd and gzip
layers). `bootc-live pull` must write what `skopeo copy` writes (the same manifest and blob
digests and bytes); `unpack` from the registry must give the tree the local layout gives; a
second registry in pull-through mode serves as a mirror, and a dead mirror falls back to the
registry; refusals end in one line naming the cause.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bootc_live.demo import demo_layers
from bootc_live.layout import write_layout
from bootc_live.runtime import http
from imagegen import add_nested_index, build_image, d, f, layer_tar
from registries import Pki, Registry, auth_json, docker_registry, make_pki, skopeo_push
from servers import free_port
from treewalk import diff, snapshot
from unpackers import assert_clean_failure, bootc_live, bootc_live_unpack, need_root_and

pytestmark = pytest.mark.integration

USER, PASSWORD = "tester", "s3cret-pw"


@dataclass
class World:
    pki: Pki
    upstream: Registry
    auth: Path  # credentials for the upstream only
    work: Path
    demo_digest: str
    multi: dict[str, str]  # platform → manifest digest
    multi_layout: Path
    big_blob: tuple[str, int]  # the digest and size of test/multi's amd64 large layer

    def ref(self, name: str, registry: Registry | None = None) -> str:
        return f"docker://{(registry or self.upstream).host}/{name}"

    def run(self, *args: str, auth: bool = True) -> subprocess.CompletedProcess[str]:
        extra = ["--ca", str(self.pki.ca)] + (["--auth-file", str(self.auth)] if auth else [])
        return bootc_live(*args, *extra, tmpdir=self.work)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    need_root_and("docker-registry", "skopeo", "openssl")
    work = tmp_path_factory.mktemp("registry")
    pki = make_pki(work / "pki")
    with docker_registry(work / "upstream", pki, users={USER: PASSWORD}) as upstream:
        creds = f"{USER}:{PASSWORD}"
        demo = work / "demo"
        demo_digest = write_layout(demo, demo_layers(), "v1")
        skopeo_push(f"oci:{demo}:v1", upstream, "test/demo:v1", pki, creds)
        skopeo_push(f"oci:{demo}:v1", upstream, "test/docker:v1", pki, creds, docker_schema2=True)
        multi = work / "multi"
        # The large layer (random: as large gzip'd) is fetched through several connections.
        big = layer_tar([f("big", os.urandom(3 * http.PARALLEL_MIN // 2))])
        amd = build_image(
            multi,
            [layer_tar([d("etc"), f("etc/arch", b"amd64\n")]), big],
            compression=["zstd", "gzip"],
            platform=("linux", "amd64"),
        )
        arm = build_image(
            multi, [layer_tar([d("etc"), f("etc/arch", b"arm64\n")])], platform=("linux", "arm64")
        )
        add_nested_index(multi, [amd, arm], tag="v1")
        skopeo_push(f"oci:{multi}:v1", upstream, "test/multi:v1", pki, creds, all_platforms=True)
        auth = auth_json(work / "auth.json", {upstream.host: (USER, PASSWORD)})
        yield World(
            pki,
            upstream,
            auth,
            work,
            demo_digest,
            {"linux/amd64": amd.manifest_digest, "linux/arm64": arm.manifest_digest},
            multi,
            (amd.layer_digests[1], amd.layer_paths[1].stat().st_size),
        )


def blobs(layout: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (layout / "blobs" / "sha256").iterdir()}


def manifest_digest(layout: Path) -> str:
    return str(json.loads((layout / "index.json").read_text())["manifests"][0]["digest"])


@pytest.mark.parametrize("platform", ["linux/amd64", "linux/arm64"])
def test_pull_writes_what_skopeo_copies(world: World, tmp_path: Path, platform: str) -> None:
    ours, theirs = tmp_path / "ours", tmp_path / "skopeo"
    pulled = world.run(
        "pull", world.ref("test/multi:v1"), "-o", f"oci:{ours}:v1", "--platform", platform
    )
    assert pulled.returncode == 0, pulled.stderr
    arch = platform.split("/")[1]
    copied = subprocess.run(
        [
            *("skopeo", "copy", "--quiet", "--preserve-digests", "--override-arch", arch),
            *("--src-cert-dir", str(world.pki.cert_dir), "--src-creds", f"{USER}:{PASSWORD}"),
            *(world.ref("test/multi:v1"), f"oci:{theirs}:v1"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert copied.returncode == 0, copied.stderr
    # The same platform manifest and blobs; ours also keeps the index the tag names (what its
    # signatures sign, docs/signatures.md), to which its index.json entry points.
    assert manifest_digest(theirs) == world.multi[platform]
    top = manifest_digest(ours)
    index = blobs(ours).pop(top.partition(":")[2])
    assert world.multi[platform] in {m["digest"] for m in json.loads(index)["manifests"]}
    assert {k: v for k, v in blobs(ours).items() if k != top.partition(":")[2]} == blobs(theirs)
    assert pulled.stdout.split()[0] == world.multi[platform]


def test_pull_into_an_archive_then_boot_artifacts_agree(world: World, tmp_path: Path) -> None:
    archive = tmp_path / "demo.oci"
    pulled = world.run("pull", world.ref("test/demo:v1"), "-o", f"oci-archive:{archive}")
    assert pulled.returncode == 0, pulled.stderr
    shown = bootc_live("inspect", f"oci-archive:{archive}:v1")
    assert f"image     {world.demo_digest}" in shown.stdout, shown.stderr
    # By digest, and to the same result.
    again = world.run(
        "pull", world.ref(f"test/demo@{world.demo_digest}"), "-o", f"oci:{tmp_path / 'l'}"
    )
    assert again.returncode == 0, again.stderr
    assert manifest_digest(tmp_path / "l") == world.demo_digest


def test_unpack_from_the_registry_equals_the_local_layout(world: World, tmp_path: Path) -> None:
    local = bootc_live_unpack(f"oci:{world.multi_layout}:v1", tmp_path / "local")
    remote = tmp_path / "remote"
    done = world.run("unpack", world.ref("test/multi:v1"), str(remote))  # zstd + gzip layers
    assert done.returncode == 0, done.stderr
    assert diff(snapshot(local), snapshot(remote)) == []
    assert (remote / "etc/arch").read_text() == "amd64\n"
    # The large layer came in parts of http.PART bytes, as many as it has.
    digest, size = world.big_blob
    parts = [
        line
        for line in world.upstream.log().splitlines()
        if 'msg="response completed"' in line
        and f"/v2/test/multi/blobs/{digest}" in line
        and "useragent=bootc-live" in line
        and "http.response.status=206" in line
    ]
    assert len(parts) >= -(-size // http.PART) >= 2, world.upstream.log()[-3000:]


def test_docker_schema2_images_unpack_like_oci_ones(world: World, tmp_path: Path) -> None:
    oci = tmp_path / "oci"
    done = world.run("unpack", world.ref("test/demo:v1"), str(oci))
    assert done.returncode == 0, done.stderr
    docker = tmp_path / "docker"
    done = world.run("unpack", world.ref("test/docker:v1"), str(docker))
    assert done.returncode == 0, done.stderr
    assert diff(snapshot(oci), snapshot(docker)) == []
    pulled = tmp_path / "pulled"
    assert world.run("pull", world.ref("test/docker:v1"), "-o", f"oci:{pulled}").returncode == 0
    index = json.loads((pulled / "index.json").read_text())["manifests"][0]
    assert index["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert index["digest"] != world.demo_digest  # converted by skopeo: another manifest


def test_refusals_are_one_line(world: World, tmp_path: Path) -> None:
    host, ref = world.upstream.host, world.ref("test/demo:v1")
    line = assert_clean_failure(world.run("inspect", ref, auth=False)).strip()
    # On the host the hint names the host's flag and the places looked, not the build's flag.
    assert line.startswith(
        f"bootc-live: registry {host}: 401 unauthorized for repository test/demo (no "
        "credentials) (UNAUTHORIZED); add credentials with --authfile FILE (or podman login) "
        "(looked in: "
    ), line
    assert "/.docker/config.json)" in line and "bootc-live build" not in line
    wrong = auth_json(tmp_path / "wrong.json", {host: (USER, "nope")})
    failed = bootc_live("inspect", ref, "--ca", str(world.pki.ca), "--auth-file", str(wrong))
    assert "401 unauthorized for repository test/demo (credentials rejected)" in (
        assert_clean_failure(failed)
    )
    missing = world.run("inspect", world.ref("test/demo:nope"))
    assert "registry " + host + ": test/demo has no tag nope (MANIFEST_UNKNOWN); check the " in (
        assert_clean_failure(missing)
    )
    pinned = world.run("inspect", world.ref("test/demo@sha256:" + "0" * 64))
    assert f"test/demo has no manifest sha256:{'0' * 64}" in assert_clean_failure(pinned)
    untrusted = bootc_live("inspect", ref, "--auth-file", str(world.auth))
    said = assert_clean_failure(untrusted)
    assert f"registry {host}: TLS failure" in said
    assert said.rstrip().endswith(
        "trust the registry's CA with --ca FILE, or use --unsecure for a registry without "
        "trusted TLS"
    ), said
    # Unverified TLS only when asked for.
    unsecure = bootc_live("inspect", ref, "--auth-file", str(world.auth), "--unsecure")
    assert unsecure.returncode == 0 and world.demo_digest in unsecure.stdout, unsecure.stderr


def test_a_pull_through_mirror_serves_and_a_dead_one_is_skipped(
    world: World, tmp_path: Path
) -> None:
    with docker_registry(
        tmp_path / "mirror", world.pki, proxy_of=(world.upstream, USER, PASSWORD)
    ) as mirror:
        # The credentials file names the upstream only: the mirror is asked anonymously.
        done = world.run("inspect", world.ref("test/demo:v1"), "--mirror", mirror.host)
        assert done.returncode == 0, done.stderr
        assert world.demo_digest in done.stdout
        assert f"mirror {mirror.host} serves" in done.stderr
        assert "/v2/test/demo/blobs/" in mirror.log()  # the layers came through the mirror
    dead = f"127.0.0.1:{free_port()}"
    done = world.run("inspect", world.ref("test/demo:v1"), "--mirror", dead)
    assert done.returncode == 0, done.stderr
    assert f"bootc-live: mirror {dead}: " in done.stderr and "trying the next" in done.stderr
    assert f"mirror {dead}: mirror" not in done.stderr
    # On the host it names host flags (--retries), not kernel arguments (bootc.retries=).
    assert "--retries" in done.stderr and "bootc." not in done.stderr, done.stderr
    # A mirror is HOST[:PORT]: a URL was taken as a host named "https".
    for given in ("https://127.0.0.1:1", "", "127.0.0.1:1/path"):
        refused = world.run("inspect", world.ref("t/d:v1"), "--mirror", given)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
        assert f"argument --mirror: {given!r}: expected HOST[:PORT]" in refused.stderr
