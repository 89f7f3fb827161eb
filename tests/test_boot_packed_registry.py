"""root=bootc-live:packed:docker://REF booted on the host (test_boot_packed's recording System)
from the scripted registry (tests/fakeregistry.py): the packed root artifact found by the
referrers API or by its tag fallback `sha256-HEX`, its layer streamed and verified; the hostile
cases (a changed layer, another artifactType, two artifacts, an oversized index, no artifact)
each stop with one line, nothing mounted and no file left."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import fakeregistry
from bootc_live import pushpacked
from bootc_live.runtime import boot, packedreg
from bootc_live.runtime.cmdline import parse
from bootc_live.runtime.oci import REF_NAME
from fakeregistry import REPO, TAG, Knobs
from imagegen import ImageInfo, bootable, build_layout, d, f, layer_tar
from servers import hard_timeout
from test_boot_host import System, system  # noqa: F401 - the fixture
from test_boot_packed import (  # noqa: F401 - the fixtures
    expected_calls,
    images,
    packed_system,
    pin,
    tree,
)

MIB = 1 << 20


@pytest.fixture(autouse=True)
def _hard_timeout() -> Iterator[None]:
    with hard_timeout(60):
        yield


@pytest.fixture
def image(tmp_path: Path) -> ImageInfo:
    layer = layer_tar([d("etc"), f("etc/os-release", b"ID=fake\n"), *bootable()])
    return build_layout(tmp_path / "layout", [layer], tag=TAG)


@dataclass
class Ctx:
    """What a test here works with: the recording system, the filesystem images, the OCI
    image in its layout (served by the scripted registry) and the test's directory."""

    system: System
    images: dict[str, Path]
    image: ImageInfo
    tmp: Path


@pytest.fixture
def ctx(
    packed_system: System,  # noqa: F811
    images: dict[str, Path],  # noqa: F811
    image: ImageInfo,
    tmp_path: Path,
) -> Ctx:
    return Ctx(packed_system, images, image, tmp_path)


def attach(
    info: ImageInfo,
    fs_image: Path,
    fs: str,
    created: int = 1,
    artifact_type: str = packedreg.ARTIFACT_TYPE,
) -> dict[str, Any]:
    """The packed root artifact of `info` put into its layout as push-packed makes it; its
    index entry (as the referrers API or the tag's index lists it)."""
    blobs = info.layout / "blobs/sha256"
    data = fs_image.read_bytes()
    layer = pushpacked.Blob(packedreg.LAYER_TYPE + fs, pin(fs_image), len(data), data)
    record = {"format": fs, "compressor": "x", "tool": "test"}
    subject = dict(info.manifest_descriptor)
    subject.pop("annotations", None)
    stamp = f"2026-01-01T00:00:{created:02d}Z"
    manifest = pushpacked.artifact(layer, record, subject, stamp)
    assert isinstance(manifest.body, bytes)
    body = manifest.body
    if artifact_type != packedreg.ARTIFACT_TYPE:
        obj = json.loads(body)
        obj["artifactType"] = artifact_type
        body = json.dumps(obj).encode()
    for blob in (pushpacked.empty(), layer):
        assert isinstance(blob.body, bytes)
        (blobs / blob.digest.split(":")[1]).write_bytes(blob.body)
    digest = pushpacked.sha256_digest(body)
    (blobs / digest.split(":")[1]).write_bytes(body)
    return {
        "mediaType": packedreg.OCI_MANIFEST,
        "digest": digest,
        "size": len(body),
        "artifactType": packedreg.ARTIFACT_TYPE,
        "annotations": {pushpacked.CREATED: stamp},
    }


def index_of(entries: list[dict[str, Any]]) -> bytes:
    return json.dumps({"schemaVersion": 2, "manifests": entries}).encode()


def tag_fallback(info: ImageInfo, entries: list[dict[str, Any]]) -> None:
    """The referrers tag `sha256-HEX` naming an index of `entries`, in the layout."""
    body = index_of(entries)
    digest = pushpacked.sha256_digest(body)
    (info.layout / "blobs/sha256" / digest.split(":")[1]).write_bytes(body)
    index_json = info.layout / "index.json"
    index = json.loads(index_json.read_text())
    tag = packedreg.fallback_tag(info.manifest_digest)
    index["manifests"].append(
        {
            "mediaType": packedreg.OCI_INDEX,
            "digest": digest,
            "size": len(body),
            "annotations": {REF_NAME: tag},
        }
    )
    index_json.write_text(json.dumps(index))


def boot_registry(
    tmp: Path, reg: fakeregistry.FakeRegistry, pinned: Path, args: str = ""
) -> tuple[int, dict[str, Any]]:
    """Boot the packed root of the registry's image, pinned to the filesystem image `pinned`."""
    argv = [
        f"root=bootc-live:packed:docker://{reg.host}/{REPO}:{TAG}",
        f"bootc.packed.sha256={pin(pinned)}",
        "bootc.registry.unsecure=1",
        "bootc.keep-modules",
        "bootc.retries=2",
        *args.split(),
    ]
    code = boot.main(["boot", str(tmp / "newroot")], lambda: parse(argv))
    return code, json.loads((tmp / "run/status.json").read_text())


def stored(tmp: Path) -> Path:
    return tmp / "work/packed/packed.root"


@pytest.mark.parametrize("fs", ["squashfs", "erofs"])
@pytest.mark.parametrize("how", ["referrers", "tag"])
def test_found_by_the_referrers_api_or_its_tag_and_booted(
    ctx: Ctx,
    fs: str,
    how: str,
) -> None:
    entry = attach(ctx.image, ctx.images[fs], fs)
    knobs = Knobs()
    if how == "referrers":
        knobs.referrers = index_of([entry])
    else:
        tag_fallback(ctx.image, [entry])
    with fakeregistry.serve(ctx.image.layout, knobs) as reg:
        code, status = boot_registry(ctx.tmp, reg, ctx.images[fs])
    assert code == 0, status
    size = ctx.images[fs].stat().st_size
    assert ctx.system.calls == expected_calls(fs, "", ctx.tmp, str(stored(ctx.tmp)), size)
    assert stored(ctx.tmp).read_bytes() == ctx.images[fs].read_bytes()
    assert status["manifest"] == ctx.image.manifest_digest
    assert status["root"]["sha256"] == pin(ctx.images[fs])
    assert status["root"]["image"] == ctx.image.manifest_digest
    (asked,) = reg.hits("/referrers/")
    assert asked.path == (
        f"/v2/{REPO}/referrers/{ctx.image.manifest_digest}?artifactType="
        "application%2Fvnd.bootc-live.packed.v1"
    )
    fallback = reg.hits(f"/manifests/{packedreg.fallback_tag(ctx.image.manifest_digest)}")
    assert len(fallback) == (0 if how == "referrers" else 1)
    assert reg.hits(f"/blobs/{pin(ctx.images[fs])}")


@pytest.mark.parametrize("pinned", ["squashfs", "erofs"])
def test_of_several_artifacts_the_pin_picks_one_and_a_foreign_one_is_passed_over(
    ctx: Ctx,
    pinned: str,
) -> None:
    foreign = attach(
        ctx.image, ctx.images["erofs"], "erofs", created=3, artifact_type="application/x-other"
    )
    older = attach(ctx.image, ctx.images["squashfs"], "squashfs", created=1)
    newer = attach(ctx.image, ctx.images["erofs"], "erofs", created=2)
    tag_fallback(ctx.image, [foreign, newer, older])
    with fakeregistry.serve(ctx.image.layout, Knobs()) as reg:
        code, status = boot_registry(ctx.tmp, reg, ctx.images[pinned])
    assert code == 0, status
    assert status["root"]["sha256"] == pin(ctx.images[pinned])
    assert status["root"]["format"] == pinned


def failed(fake: System, tmp: Path, status: dict[str, Any], code: int, *messages: str) -> None:
    """Stopped with one line saying `messages`, nothing mounted, no file of the packed root."""
    assert code == 1, status
    assert status["state"] == "failed"
    line = status["message"]
    assert "\n" not in line and all(m in line for m in messages), line
    assert fake.mounted == []
    assert not stored(tmp).exists()


def test_a_changed_layer_stops_at_its_end(
    ctx: Ctx,
) -> None:
    entry = attach(ctx.image, ctx.images["squashfs"], "squashfs")
    tag_fallback(ctx.image, [entry])
    digest = pin(ctx.images["squashfs"])
    with fakeregistry.serve(ctx.image.layout, Knobs(tamper=digest)) as reg:
        code, status = boot_registry(ctx.tmp, reg, ctx.images["squashfs"])
    failed(ctx.system, ctx.tmp, status, code, "the packed root layer", "digest mismatch")


def test_another_artifact_type_in_the_manifest_is_passed_over(
    ctx: Ctx,
) -> None:
    entry = attach(
        ctx.image, ctx.images["squashfs"], "squashfs", artifact_type="application/x-other"
    )
    with fakeregistry.serve(ctx.image.layout, Knobs(referrers=index_of([entry]))) as reg:
        code, status = boot_registry(ctx.tmp, reg, ctx.images["squashfs"])
    failed(
        ctx.system, ctx.tmp, status, code, "none of the 1 packed roots", "bootc.packed.sha256= pins"
    )


def test_only_other_artifacts_is_no_packed_root(
    ctx: Ctx,
) -> None:
    entry = attach(ctx.image, ctx.images["squashfs"], "squashfs")
    other = dict(entry, artifactType="application/vnd.dev.cosign.artifact.sig.v1+json")
    with fakeregistry.serve(ctx.image.layout, Knobs(referrers=index_of([other]))) as reg:
        code, status = boot_registry(ctx.tmp, reg, ctx.images["squashfs"])
    failed(
        ctx.system,
        ctx.tmp,
        status,
        code,
        f"no packed root in the registry for the image {ctx.image.manifest_digest}",
        f"push one with bootc-live push-packed docker://{reg.host}/{REPO} packed.img",
    )
    assert ctx.system.calls == []


def test_no_referrers_api_and_no_tag(
    ctx: Ctx,
) -> None:
    with fakeregistry.serve(ctx.image.layout, Knobs()) as reg:
        code, status = boot_registry(ctx.tmp, reg, ctx.images["squashfs"])
    tag = packedreg.fallback_tag(ctx.image.manifest_digest)
    failed(
        ctx.system,
        ctx.tmp,
        status,
        code,
        "no packed root",
        f"(asked the tag {tag} of registry {reg.host})",
    )


def test_an_oversized_referrers_index_is_one_line(
    ctx: Ctx,
) -> None:
    entry = attach(ctx.image, ctx.images["squashfs"], "squashfs")
    huge = index_of([entry] * 40_000)
    assert len(huge) > 4 << 20
    with fakeregistry.serve(ctx.image.layout, Knobs(referrers=huge)) as reg:
        code, status = boot_registry(ctx.tmp, reg, ctx.images["squashfs"])
    failed(ctx.system, ctx.tmp, status, code, "referrers index is larger than 4194304 bytes")


WRONG = "sha256:" + "0" * 64


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("bootc.packed.sha256", f"is the one bootc.packed.sha256= pins ({WRONG})"),
        ("bootc.digest", WRONG),  # the ctx.image's: checked before any artifact is asked for
        ("bootc.packed.image", f"bootc.packed.image= says {WRONG}"),
    ],
)
def test_a_digest_on_the_command_line_that_is_not_the_registry_s(
    ctx: Ctx,
    option: str,
    message: str,
) -> None:
    tag_fallback(ctx.image, [attach(ctx.image, ctx.images["squashfs"], "squashfs")])
    with fakeregistry.serve(ctx.image.layout, Knobs()) as reg:
        code, status = boot_registry(ctx.tmp, reg, ctx.images["squashfs"], f"{option}={WRONG}")
    failed(ctx.system, ctx.tmp, status, code, message)
    if option != "bootc.packed.sha256":
        assert not reg.hits("/referrers/") and not reg.hits("sha256-")


@pytest.mark.parametrize("bad", [{"size": -1}, {"digest": "sha256:zz"}, {"size": "12"}])
def test_a_malformed_entry_of_our_type_is_passed_over(ctx: Ctx, bad: dict[str, Any]) -> None:
    """Anyone who can push can list one (docs/packed.md): the genuine one after it boots."""
    genuine = attach(ctx.image, ctx.images["squashfs"], "squashfs")
    knobs = Knobs(referrers=index_of([dict(genuine, **bad), genuine]))
    with fakeregistry.serve(ctx.image.layout, knobs) as reg:
        code, status = boot_registry(ctx.tmp, reg, ctx.images["squashfs"])
    assert code == 0, status
    assert status["root"]["sha256"] == pin(ctx.images["squashfs"])
    assert stored(ctx.tmp).read_bytes() == ctx.images["squashfs"].read_bytes()


@pytest.mark.parametrize("lie", [-1, 1, 1 << 40])
def test_artifacts_that_disagree_on_the_pinned_layer_s_size_are_named(ctx: Ctx, lie: int) -> None:
    """One blob cannot have two sizes: which artifact lies is not known, so the boot says which
    artifacts disagree, not 'not enough memory' or a Content-Range error of the first one."""
    genuine = attach(ctx.image, ctx.images["squashfs"], "squashfs")
    real = ctx.images["squashfs"].stat().st_size
    blobs = ctx.image.layout / "blobs/sha256"
    manifest = json.loads((blobs / genuine["digest"].split(":")[1]).read_bytes())
    manifest["layers"][0]["size"] = real + lie if lie < 1 << 30 else lie
    body = json.dumps(manifest).encode()
    digest = pushpacked.sha256_digest(body)
    (blobs / digest.split(":")[1]).write_bytes(body)
    hostile = dict(genuine, digest=digest, size=len(body))
    with fakeregistry.serve(ctx.image.layout, Knobs(referrers=index_of([hostile, genuine]))) as reg:
        code, status = boot_registry(ctx.tmp, reg, ctx.images["squashfs"])
    sizes = sorted([real, manifest["layers"][0]["size"]])
    failed(
        ctx.system,
        ctx.tmp,
        status,
        code,
        f"whose layer is the pinned {pin(ctx.images['squashfs'])}, of different sizes "
        f"({sizes[0]}, {sizes[1]} bytes)",
        "delete the artifacts not pushed by bootc-live push-packed from the pinned file",
    )
    assert ctx.system.calls == [] and not reg.hits(f"/blobs/{pin(ctx.images['squashfs'])}")


def test_a_referrers_index_in_pages_is_read_to_its_end(ctx: Ctx) -> None:
    """The distribution spec: a Link header (rel="next") when the list does not fit one
    answer. Three cosign signatures on the first page, the packed root on the second: it
    was never looked for there."""
    entry = attach(ctx.image, ctx.images["squashfs"], "squashfs")
    cosign = dict(entry, artifactType="application/vnd.dev.cosign.artifact.sig.v1+json")
    pages = (index_of([cosign, cosign, cosign]), index_of([entry]))
    with fakeregistry.serve(ctx.image.layout, Knobs(referrers_pages=pages)) as reg:
        code, status = boot_registry(ctx.tmp, reg, ctx.images["squashfs"])
    assert code == 0, status
    assert stored(ctx.tmp).read_bytes() == ctx.images["squashfs"].read_bytes()
    assert [hit.path.rpartition("?")[2] for hit in reg.hits("/referrers/")] == [
        "artifactType=application%2Fvnd.bootc-live.packed.v1",
        "page=1",
    ]


def test_a_referrers_answer_that_is_no_index_is_no_api(ctx: Ctx) -> None:
    """An HTML page (a proxy's, a UI's) where the API would be: the referrers tag is asked,
    as oras-go does (it was 'the referrers API is not valid JSON')."""
    entry = attach(ctx.image, ctx.images["erofs"], "erofs")
    tag_fallback(ctx.image, [entry])
    knobs = Knobs(referrers=b"<html>Not here</html>", referrers_type="text/html")
    with fakeregistry.serve(ctx.image.layout, knobs) as reg:
        code, status = boot_registry(ctx.tmp, reg, ctx.images["erofs"])
    assert code == 0, status
    assert reg.hits(f"/manifests/{packedreg.fallback_tag(ctx.image.manifest_digest)}")


def test_a_mirror_without_the_packed_root_hands_over_to_the_registry(ctx: Ctx) -> None:
    """Mirrors copy images, not always what refers to them: a mirror that served the image
    but has no packed root of it stopped the boot, telling the user to push what was there."""
    mirror_layout = ctx.tmp / "mirror"
    shutil.copytree(ctx.image.layout, mirror_layout)  # before the artifact: the image only
    entry = attach(ctx.image, ctx.images["squashfs"], "squashfs")
    tag_fallback(ctx.image, [entry])
    with (
        fakeregistry.serve(mirror_layout, Knobs()) as mirror,
        fakeregistry.serve(ctx.image.layout, Knobs()) as primary,
    ):
        code, status = boot_registry(
            ctx.tmp, primary, ctx.images["squashfs"], f"bootc.registry.mirror={mirror.host}"
        )
    assert code == 0, status
    assert stored(ctx.tmp).read_bytes() == ctx.images["squashfs"].read_bytes()
    assert mirror.hits("/manifests/v1") and not mirror.hits(f"/blobs/{pin(ctx.images['squashfs'])}")
    assert primary.hits(f"/blobs/{pin(ctx.images['squashfs'])}")
