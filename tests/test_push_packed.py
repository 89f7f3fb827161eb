"""The packed root in a registry: `bootc-live push-packed` into the real registry (Debian's
docker-registry 2.8, which has no referrers API: the tag fallback `sha256-HEX`), then found,
streamed and verified by the runtime's discovery (runtime/packedreg.py) as the boot does it."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest

from bootc_live.demo import demo_layers
from bootc_live.layout import write_layout
from bootc_live.runtime import packed, packedreg
from bootc_live.runtime.blobs import Descriptor
from bootc_live.runtime.http import Policy
from bootc_live.runtime.registry import Reference, RegistrySource
from registries import Pki, Registry, auth_json, docker_registry, make_pki, skopeo_push
from test_boot_packed import packed_img, pin
from test_packed import erofs, make_tree, squashfs
from unpackers import bootc_live, need_root_and

pytestmark = pytest.mark.integration

USER, PASSWORD = "tester", "s3cret-pw"
FAST = Policy(retries=2, stall=5, max_backoff=0.05)


@dataclass
class World:
    pki: Pki
    registry: Registry
    auth: Path
    work: Path
    image: str  # the demo image's manifest digest
    squashfs: Path  # the bare images
    erofs: Path

    @property
    def ref(self) -> str:
        return f"{self.registry.host}/test/demo:v1"

    def push(self, file: Path, *extra: str, epoch: int = 1) -> subprocess.CompletedProcess[str]:
        return bootc_live(
            "push-packed",
            f"docker://{self.ref}",
            str(file),
            "--ca",
            str(self.pki.ca),
            "--auth-file",
            str(self.auth),
            *extra,
            tmpdir=self.work,
            env={"SOURCE_DATE_EPOCH": str(epoch)},
        )

    def source(self) -> RegistrySource:
        return RegistrySource(
            Reference.parse(self.ref),
            FAST,
            lambda _: None,
            auth_file=str(self.auth),
            cafile=str(self.pki.ca),
        )


def packed_file(where: Path, image: Path, made_from: str, fs: str) -> Path:
    """packed.img and its record, as `bootc-live pack -o FILE` writes them."""
    where.mkdir(parents=True, exist_ok=True)
    file = where / "packed.img"
    file.write_bytes(packed_img(image))
    record = {
        "image": made_from,
        "sha256": pin(image),
        "bytes": image.stat().st_size,
        "format": fs,
        "compressor": "zstd" if fs == "squashfs" else "lz4hc",
        "tool": "test",
        "kernel": None,
    }
    (where / "packed.img.json").write_text(json.dumps(record))
    return file


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    need_root_and("docker-registry", "skopeo", "openssl", "mksquashfs", "mkfs.erofs")
    work = tmp_path_factory.mktemp("pushpacked")
    pki = make_pki(work / "pki")
    tree = make_tree(work / "tree")
    with docker_registry(work / "registry", pki, users={USER: PASSWORD}) as registry:
        demo = work / "demo"
        digest = write_layout(demo, demo_layers(), "v1")
        skopeo_push(f"oci:{demo}:v1", registry, "test/demo:v1", pki, f"{USER}:{PASSWORD}")
        auth = auth_json(work / "auth.json", {registry.host: (USER, PASSWORD)})
        yield World(
            pki,
            registry,
            auth,
            work,
            digest,
            squashfs(tree, work / "root.squashfs", "zstd"),
            erofs(tree, work / "root.erofs", "lz4hc"),
        )


def fetch(world: World, tmp: Path, want: str) -> packed.Stored:
    """What the boot's discovery finds for the pin `want`, streamed into a file as
    PackedRoot.load does."""
    with closing(world.source()) as source:
        source.index_json()
        stream = packedreg.open_registry(source, world.image, want, lambda _: None)
        try:
            return stream.store(str(tmp / "packed.root"))
        finally:
            stream.close()


def test_pushed_then_found_by_the_tag_fallback(world: World, tmp_path: Path) -> None:
    file = packed_file(tmp_path / "a", world.squashfs, world.image, "squashfs")
    done = world.push(file)
    assert done.returncode == 0, done.stderr
    tag = packedreg.fallback_tag(world.image)
    assert f"listed at the tag {tag}" in done.stdout
    assert (
        f"root=bootc-live:packed:docker://{world.registry.host}/test/demo@{world.image} "
        f"bootc.packed.sha256={pin(world.squashfs)}\n"
    ) in done.stdout
    stored = fetch(world, tmp_path, pin(world.squashfs))
    assert stored.sha256 == pin(world.squashfs)
    assert Path(stored.path).read_bytes() == world.squashfs.read_bytes()
    with closing(world.source()) as source:
        index = json.loads(source.tagged(tag)[0])
        assert source.referrers(world.image, packedreg.ARTIFACT_TYPE) is None  # 2.8: none
    (entry,) = [m for m in index["manifests"] if m["digest"] in done.stdout]
    assert entry["artifactType"] == packedreg.ARTIFACT_TYPE
    # Pushed again: the layer is there, the index keeps one entry for it.
    again = world.push(file)
    assert again.returncode == 0, again.stderr
    assert "its layer was there already" in again.stdout
    with closing(world.source()) as source:
        listed = [m["digest"] for m in json.loads(source.tagged(tag)[0])["manifests"]]
    assert listed.count(entry["digest"]) == 1
    # Pushed again later (a CI rerun: another date, so another manifest): its older entry
    # goes, however often it is pushed (the index grew by one each time, and past 16 the
    # boot no longer looked at the pinned one).
    for epoch in (2, 3, 4):
        assert world.push(file, epoch=epoch).returncode == 0
    with closing(world.source()) as source:
        listed = json.loads(source.tagged(tag)[0])["manifests"]
    same = [
        m for m in listed if m["annotations"].get(packedreg.PIN_ANNOTATION) == pin(world.squashfs)
    ]
    assert len(same) == 1 and same[0]["annotations"]["org.opencontainers.image.created"] == (
        "1970-01-01T00:00:04Z"
    )
    (tmp_path / "again").mkdir()
    assert fetch(world, tmp_path / "again", pin(world.squashfs)).sha256 == pin(world.squashfs)


def test_of_two_artifacts_the_pin_picks_one(world: World, tmp_path: Path) -> None:
    older = packed_file(tmp_path / "sq", world.squashfs, world.image, "squashfs")
    newer = packed_file(tmp_path / "ero", world.erofs, world.image, "erofs")
    assert world.push(older, epoch=100).returncode == 0
    assert world.push(newer, epoch=200).returncode == 0
    for n, got in ((1, world.erofs), (2, world.squashfs)):
        (tmp_path / str(n)).mkdir()
        assert fetch(world, tmp_path / str(n), pin(got)).sha256 == pin(got)
    with pytest.raises(packed.PackedError, match=r"none of the \d+ packed roots .* is the one"):
        fetch(world, tmp_path, "sha256:" + "0" * 64)


def test_a_packed_root_of_another_image_is_not_pushed(world: World, tmp_path: Path) -> None:
    other = "sha256:" + "ab" * 32
    file = packed_file(tmp_path, world.squashfs, other, "squashfs")
    done = world.push(file)
    assert done.returncode != 0
    (line,) = done.stderr.strip().splitlines()
    assert f"was made from the image {other}, the registry's is {world.image}" in line


def test_a_record_that_is_not_the_file_is_refused(world: World, tmp_path: Path) -> None:
    file = packed_file(tmp_path, world.squashfs, world.image, "squashfs")
    file.write_bytes(packed_img(world.erofs))
    done = world.push(file)
    assert done.returncode != 0
    assert "its record says" in done.stderr


def test_no_artifact_names_the_image_and_the_command(world: World) -> None:
    with closing(world.source()) as source:
        source.index_json()
        missing = "sha256:" + "12" * 32
        with pytest.raises(packed.PackedError) as err:
            packedreg.open_registry(source, missing, pin(world.squashfs), lambda _: None)
    line = err.value.line()
    assert missing in line and "push one with bootc-live push-packed" in line


class ManyArtifacts:
    """A repository whose referrers tag lists many artifacts about the image, the pinned one
    last: others' pushes, or a packed root pushed many times before the annotation."""

    description = "stub registry"
    ref = Reference.parse("registry.example/x/y:v1")

    class endpoint:  # the attribute RegistrySource has
        name = "registry.example"

    def fall_back(self) -> str:
        return ""  # no mirror before it

    def __init__(self, subject: str, pinned: str, others: int, annotated: bool) -> None:
        self.manifests: dict[str, bytes] = {}
        entries = []
        layers = [f"sha256:{i:064x}" for i in range(others)] + [pinned]
        for i, layer in enumerate(layers):
            notes = {packedreg.PIN_ANNOTATION: layer} if annotated else {}
            body = json.dumps(
                {
                    "schemaVersion": 2,
                    "mediaType": packedreg.OCI_MANIFEST,
                    "artifactType": packedreg.ARTIFACT_TYPE,
                    "config": {
                        "mediaType": packedreg.EMPTY_TYPE,
                        "digest": "sha256:" + "4" * 64,
                        "size": 2,
                    },
                    "layers": [
                        {
                            "mediaType": packedreg.LAYER_TYPE + "erofs",
                            "digest": layer,
                            "size": 10 + i,
                        }
                    ],
                    "subject": {"mediaType": packedreg.OCI_MANIFEST, "digest": subject, "size": 1},
                    "annotations": notes,
                }
            ).encode()
            digest = "sha256:" + hashlib.sha256(body).hexdigest()
            self.manifests[digest] = body
            entries.append(
                {
                    "mediaType": packedreg.OCI_MANIFEST,
                    "digest": digest,
                    "size": len(body),
                    "artifactType": packedreg.ARTIFACT_TYPE,
                    "annotations": notes,
                }
            )
        self.index = json.dumps({"schemaVersion": 2, "manifests": entries}).encode()
        self.read: list[str] = []

    def referrers(self, _digest: str, _type: str) -> None:
        return None  # no referrers API: the tag schema

    def tagged(self, _tag: str) -> tuple[bytes, str]:
        return self.index, packedreg.OCI_INDEX

    def open_blob(self, desc: Descriptor) -> io.BytesIO:
        self.read.append(desc.digest)
        return io.BytesIO(self.manifests[desc.digest])


@pytest.mark.parametrize("annotated", [True, False])
def test_the_pinned_artifact_is_found_among_many(annotated: bool) -> None:
    subject, pinned = "sha256:" + "5" * 64, "sha256:" + "6" * 64
    source = ManyArtifacts(subject, pinned, 40, annotated)
    if annotated:  # asked first, and alone
        found = packedreg.find(source, subject, pinned, lambda _: None)  # type: ignore[arg-type]
        assert found.layer.digest == pinned and len(source.read) == 1
        return
    # Nothing says which is which: 16 are examined, and the line says so.
    with pytest.raises(packed.PackedError) as err:
        packedreg.find(source, subject, pinned, lambda _: None)  # type: ignore[arg-type]
    assert err.value.line().startswith(
        f"none of the 41 packed roots of the image {subject} in the registry is the one "
        f"bootc.packed.sha256= pins ({pinned}) (16 examined: the others' annotations name "
        "other packed roots, or they came past the first 16)"
    )


def test_push_trusts_the_ca_given_besides_the_systems(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`push-packed --ca FILE`, as --help says and as the pull does: FILE besides the system's
    CAs, not instead of them (a registry whose certificate the system trusts was refused)."""
    import fakeregistry
    from bootc_live import pushpacked
    from imagegen import build_layout, f, layer_tar
    from servers import throwaway_ca

    system_ca, cert, key = throwaway_ca(tmp_path / "system", "127.0.0.1")
    other_ca, _, _ = throwaway_ca(tmp_path / "other", "127.0.0.1")
    monkeypatch.setenv("SSL_CERT_FILE", str(system_ca))  # where OpenSSL finds the system's
    build_layout(tmp_path / "layout", [layer_tar([f("x", b"x")])], tag=fakeregistry.TAG)
    with fakeregistry.serve(tmp_path / "layout", fakeregistry.Knobs(tls=(cert, key))) as reg:
        ref = Reference.parse(f"{reg.host}/{fakeregistry.REPO}:{fakeregistry.TAG}")
        for ca in (None, str(other_ca)):
            pushpacked.Pusher(ref, None, lambda _: None, ca=ca).ping()


def test_push_requests_follow_retries_and_timeout(tmp_path: Path) -> None:
    """`push-packed --retries N --timeout S` bound the push as they bound the pull: a
    connection cut before its answer is tried again (N times), a silent one gives up after S."""
    import socket
    import threading

    from bootc_live import pushpacked
    from bootc_live.runtime.errors import BootcLiveError
    from servers import hard_timeout

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    seen: list[str] = []
    done = threading.Event()

    def answer() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                seen.append("connection")
                if len(seen) == 1:
                    continue  # the first is cut before any answer
                if len(seen) == 3:
                    done.wait()  # the third says nothing, until the test ends
                    continue
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")

    threading.Thread(target=answer, daemon=True).start()
    ref = Reference.parse(f"127.0.0.1:{port}/x/y:v1")
    url = f"http://127.0.0.1:{port}/v2/"
    try:
        patient = Policy(retries=1, stall=10.0, max_backoff=0.1)
        status, _, body = pushpacked.Pusher(ref, None, print, policy=patient).request("GET", url)
        assert (status, body, len(seen)) == (200, b"{}", 2)
        hasty = Policy(retries=0, stall=1.0)
        # Without the bound the default minute would pass: the hard limit fails the test first.
        with hard_timeout(20), pytest.raises(BootcLiveError, match="GET /v2/ failed: timed out"):
            pushpacked.Pusher(ref, None, print, policy=hasty).request("GET", url)
    finally:
        done.set()
        server.close()
