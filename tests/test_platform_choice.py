"""Which image of a multi-platform index is taken: the one skopeo and podman take.

containers/image ranks an index's entries by the platforms the one asked runs (arm/v7 runs
arm/v6 and v5, then an image without a variant; no variant asked takes one without, then
arm64's v8 …; amd64's v2 and v3 only when asked), the first of the best; an entry without a
platform only when none runs. skopeo 1.9.3 (`--override-os/-arch/-variant`) is the oracle, on
indexes hypothesis writes; podman's `--platform` is the oracle of how OS/ARCH[/VARIANT] is
spelled (x86_64, Linux/AMD64, arm alone); `podman manifest` writes the lists users bring.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bootc_live.runtime import cmdline, oci
from bootc_live.runtime.errors import ImageError
from bootc_live.runtime.oci import Platform, resolve
from bootc_live.runtime.sources import ArchiveSource, LayoutSource
from unpackers import bootc_live, need, need_root_and

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
ATTESTATION = {"vnd.docker.reference.type": "attestation-manifest"}


def _blob(layout: Path, data: bytes) -> dict[str, Any]:
    digest = hashlib.sha256(data).hexdigest()
    path = layout / "blobs/sha256" / digest
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


Entries = list[tuple[dict[str, Any] | None, bool]]
Nest = tuple[int, dict[str, Any] | None] | None


def write_index(
    layout: Path, entries: Entries, docker: bool = False, nest: Nest = None
) -> list[str]:
    """An OCI layout tagged `t`: an index (a Docker manifest list if `docker`) of one image per
    entry (its platform, or None for none; whether it is an attestation); each image's config
    has the label n=its position, and the entry's platform. `nest` (FROM, PLATFORM): the
    entries from FROM on are in an index of their own, the last entry, of PLATFORM (or of
    none). Returns the manifests' digests."""
    layout.mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    layer = _blob(layout, bytes(1024))  # an empty tar
    manifest_type = DOCKER_MANIFEST if docker else OCI_MANIFEST
    config_type = (
        "application/vnd.docker.container.image.v1+json"
        if docker
        else "application/vnd.oci.image.config.v1+json"
    )
    layer_type = (
        "application/vnd.docker.image.rootfs.diff.tar"
        if docker
        else "application/vnd.oci.image.layer.v1.tar"
    )
    listed, digests = [], []
    for n, (plat, attestation) in enumerate(entries):
        config: dict[str, Any] = {
            "config": {"Labels": {"n": str(n)}},
            "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]},
        }
        if plat is not None:  # (an image whose entry says none: its config says none either)
            config.update(os=plat.get("os") or "", architecture=plat.get("architecture") or "")
        manifest = {
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": {"mediaType": config_type, **_blob(layout, json.dumps(config).encode())},
            "layers": [{"mediaType": layer_type, **layer}],
        }
        entry: dict[str, Any] = {
            "mediaType": manifest_type,
            **_blob(layout, json.dumps(manifest).encode()),
        }
        if plat is not None:
            entry["platform"] = plat
        if attestation:
            entry["annotations"] = ATTESTATION
        listed.append(entry)
        digests.append(entry["digest"])
    index_type = DOCKER_LIST if docker else OCI_INDEX
    if nest is not None and nest[0] < len(listed):
        start, plat = nest
        inner = {"schemaVersion": 2, "mediaType": index_type, "manifests": listed[start:]}
        entry = {"mediaType": index_type, **_blob(layout, json.dumps(inner).encode())}
        if plat is not None:
            entry["platform"] = plat
        listed = [*listed[:start], entry]
    index = _blob(
        layout,
        json.dumps({"schemaVersion": 2, "mediaType": index_type, "manifests": listed}).encode(),
    )
    top = {"mediaType": index_type, **index}
    if docker:  # skopeo's oci: reads only OCI types in index.json: an OCI index names the list
        top = {
            "mediaType": OCI_INDEX,
            **_blob(
                layout,
                json.dumps(
                    {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [top]}
                ).encode(),
            ),
        }
    top["annotations"] = {"org.opencontainers.image.ref.name": "t"}
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [top]}))
    return digests


def ours(layout: Path, plat: Platform | None) -> int | None:
    """The position of the image bootc-live takes (None: it refuses)."""
    try:
        image = resolve(LayoutSource(str(layout)), label="t", platform=plat)
    except ImageError:
        return None
    return int(image.config["config"]["Labels"]["n"])


def skopeo_takes(layout: Path, plat: Platform) -> int | None:
    """The position of the image skopeo takes for `plat` (None: it finds none)."""
    argv = ["skopeo", "--override-os", plat.os, "--override-arch", plat.architecture]
    argv += ["--override-variant", plat.variant] if plat.variant else []
    done = subprocess.run(
        [*argv, "inspect", "--config", f"oci:{layout}:t"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        assert "no image found in" in done.stderr, done.stderr
        return None
    return int(json.loads(done.stdout)["config"]["Labels"]["n"])


OSES = st.sampled_from(["linux", "windows", "unknown"])
ARCHES = st.sampled_from(["amd64", "arm64", "arm", "386", "unknown"])
VARIANTS = st.sampled_from(["", "v1", "v2", "v3", "v5", "v6", "v7", "v8", "v9"])


@st.composite
def platforms(draw: st.DrawFn) -> dict[str, Any]:
    plat: dict[str, Any] = {"os": draw(OSES), "architecture": draw(ARCHES)}
    variant = draw(VARIANTS)
    if variant:
        plat["variant"] = variant
    if draw(st.booleans()):  # fields containers/image does not compare
        plat["os.version"] = "10.0.17763.1234"
        plat["os.features"] = ["win32k"]
    for field in draw(st.sets(st.sampled_from(["os", "architecture", "variant"]), max_size=1)):
        plat[field] = draw(st.sampled_from([None, "", "absent"]))  # null, empty, left out
        if plat[field] == "absent":
            del plat[field]
    return plat


ENTRIES = st.lists(
    st.tuples(st.none() | platforms(), st.booleans()).map(
        # An attestation names unknown/unknown, as buildx writes it.
        lambda e: ({"os": "unknown", "architecture": "unknown"}, True) if e[1] else e
    ),
    min_size=1,
    max_size=6,
)
WANTED = st.builds(
    Platform,
    st.sampled_from(["linux", "windows"]),
    st.sampled_from(["amd64", "arm64", "arm", "386"]),
    VARIANTS,
)


AMD64 = {"os": "linux", "architecture": "amd64"}
AMD64_V3 = {**AMD64, "variant": "v3"}
ARM_V6 = {"os": "linux", "architecture": "arm", "variant": "v6"}
ARM_V7 = {**ARM_V6, "variant": "v7"}
ARM64_V8 = {"os": "linux", "architecture": "arm64", "variant": "v8"}


def x86_64_levels_meet(entries: Entries, wanted: Platform, nest: Nest) -> bool:
    """Where bootc-live ranks x86-64's levels as containerd does and skopeo 1.9.3 does not (it
    compares amd64's variants as written): an amd64 image of v1 (every x86-64 processor's
    level, no variant's too) or of a level at most the one asked. Not compared there; the
    tests below say what is taken."""
    plats = [plat for plat, _ in entries] + ([nest[1]] if nest else [])
    return wanted.architecture == "amd64" and any(
        plat and plat.get("architecture") == "amd64" and plat.get("variant") in LEVELS
        for plat in plats
    )


LEVELS = ("v1", "v2", "v3", "v4")


@pytest.fixture(scope="module")
def skopeo() -> None:
    need(shutil.which("skopeo") is not None, "needs skopeo")


@pytest.mark.usefixtures("skopeo")
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ENTRIES,
    WANTED,
    st.booleans(),
    st.none() | st.tuples(st.integers(0, 5), st.none() | platforms()),
)
# podman manifest add of a GOAMD64=v3 build first, the baseline second: v3 was taken.
@example([(AMD64_V3, False), (AMD64, False)], Platform("linux", "amd64"), False, None)
# arm/v7 runs an arm/v6 image: it was refused.
@example([(ARM_V6, False)], Platform("linux", "arm", "v7"), False, None)
# No variant asked: arm/v7 before arm/v6 (then v5), whatever their order.
@example([(ARM_V6, False), (ARM_V7, False)], Platform("linux", "arm"), True, None)
# amd64/v2 runs amd64: it was refused.
@example([(AMD64, False)], Platform("linux", "amd64", "v2"), False, None)
def test_the_image_taken_is_the_one_skopeo_takes(
    entries: Entries, wanted: Platform, docker: bool, nest: Nest
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        layout = Path(tmp, "layout")
        write_index(layout, entries, docker=docker, nest=nest)
        if x86_64_levels_meet(entries, wanted, nest):
            return
        expected = skopeo_takes(layout, wanted)
        if docker and expected is None:
            # A Docker list's entry without a platform is never skopeo's; bootc-live takes it
            # as an OCI index's (its config's platform is checked then): not compared.
            return
        assert ours(layout, wanted) == expected, (entries, str(wanted))


def test_nothing_offered_for_the_platform_is_one_line_naming_what_is(tmp_path: Path) -> None:
    """buildx's attestations (unknown/unknown) are no platform offered; the one to choose is
    one bootc.platform= can name."""
    layout = tmp_path / "layout"
    write_index(
        layout,
        [
            ({"os": "linux", "architecture": "arm64", "variant": "v8"}, False),
            ({"os": "unknown", "architecture": "unknown"}, True),
            ({"os": "linux", "architecture": "arm64", "variant": "v8"}, False),
            ({"os": "Linux", "architecture": "s390x"}, False),
        ],
    )
    with pytest.raises(ImageError) as err:
        resolve(LayoutSource(str(layout)), label="t", platform=Platform("linux", "amd64"))
    line = err.value.line()
    assert "\n" not in line
    assert line.endswith(
        "has no image for platform linux/amd64 (offers: linux/arm64/v8, Linux/s390x); "
        "choose one with bootc.platform=linux/arm64/v8"
    ), line


@pytest.mark.parametrize(
    ("machine", "taken"),
    [("armv6l", 1), ("armv7l", 0), ("armv8l", 2), ("aarch64", 4), ("x86_64", 5)],
)
def test_this_machine_s_variant_is_the_one_asked(
    machine: str, taken: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """None asked, the image is one this machine runs (containers/image reads the variant
    from /proc/cpuinfo; uname -m says it): an armv6l board took the arm/v7 image listed
    first, which it cannot run."""
    layout = tmp_path / "layout"
    write_index(
        layout,
        [
            ({"os": "linux", "architecture": "arm", "variant": "v7"}, False),
            ({"os": "linux", "architecture": "arm", "variant": "v6"}, False),
            ({"os": "linux", "architecture": "arm", "variant": "v8"}, False),
            ({"os": "linux", "architecture": "arm64"}, False),
            ({"os": "linux", "architecture": "arm64", "variant": "v8"}, False),
            ({"os": "linux", "architecture": "amd64"}, False),
        ],
    )
    monkeypatch.setattr(oci._platform, "machine", lambda: machine)
    assert ours(layout, None) == taken


def podman_in(tmp_path: Path) -> list[str]:
    """podman with a private vfs store under tmp_path (its runroot by a short name: podman
    refuses one of over 50 characters; the `run` symlink is left behind in tmp_path only)."""
    run = Path(tempfile.mkdtemp(prefix="bl-run-"))
    (tmp_path / "run").symlink_to(run)
    store = ["--root", str(tmp_path / "root"), "--runroot", str(run), "--storage-driver", "vfs"]
    return ["podman", *store]


def reset(podman: list[str]) -> None:
    """The store emptied, the runroot outside tmp_path removed."""
    subprocess.run([*podman, "system", "reset", "-f"], capture_output=True, timeout=120)
    shutil.rmtree(podman[podman.index("--runroot") + 1], ignore_errors=True)


# How podman's --platform reads what a user writes, and what bootc.platform= reads it as.
SPELLINGS = [
    "linux/x86_64",
    "Linux/AMD64",
    "linux/x86-64",
    "linux/aarch64",
    "LINUX/ARM64/V8",
    "linux/arm64/8",
    "linux/arm",
    "linux/arm/7",
    "linux/armhf",
    "linux/armel",
    "linux/i386",
    "linux/amd64/v2",
]


@pytest.mark.integration
def test_a_platform_is_read_as_podman_reads_it(tmp_path: Path) -> None:
    need_root_and("podman")
    layout = tmp_path / "layout"
    entries: list[tuple[dict[str, str] | None, bool]] = [
        ({"os": "linux", "architecture": a, **({"variant": v} if v else {})}, False)
        for a, v in (
            ("amd64", ""),
            ("arm64", ""),
            ("arm64", "v8"),
            ("arm", "v5"),
            ("arm", ""),
            ("arm", "v6"),
            ("arm", "v7"),
            ("386", ""),
            ("amd64", "v2"),
        )
    ]
    write_index(layout, entries)
    podman = podman_in(tmp_path)

    def call(*args: str) -> str:
        done = subprocess.run(
            [*podman, *args], capture_output=True, text=True, timeout=120, check=False
        )
        assert done.returncode == 0, f"podman {args}: {done.stderr}"
        return done.stdout.strip()

    try:
        for spelling in SPELLINGS:
            pulled = call("pull", "-q", "--platform", spelling, f"oci:{layout}:t")
            label = call("image", "inspect", "--format", "{{.Labels.n}}", pulled)
            call("rmi", "-a", "-f")
            assert ours(layout, Platform.parse(spelling)) == int(label), spelling
    finally:
        reset(podman)


def test_the_kernel_s_names_of_an_architecture_pick_at_boot_and_on_the_host(
    tmp_path: Path,
) -> None:
    """bootc.platform=linux/x86_64 (uname -m's name) was 'no image for platform linux/x86_64
    (offers: linux/amd64)'; podman --platform takes it (test above)."""
    layout = tmp_path / "layout"
    digests = write_index(
        layout, [(AMD64, False), ({"os": "linux", "architecture": "arm64"}, False)]
    )
    for spelling, taken in (("linux/x86_64", 0), ("Linux/AArch64", 1)):
        plat = cmdline.parse([f"bootc.platform={spelling}"]).platform
        assert ours(layout, plat) == taken, spelling
        done = bootc_live("inspect", f"oci:{layout}:t", "--platform", spelling)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"image     {digests[taken]}\n"), done.stdout


@pytest.mark.integration
def test_a_list_podman_manifest_made_is_read_as_skopeo_reads_it(tmp_path: Path) -> None:
    """`podman manifest create/add` of images built for arm/v6, arm/v7, arm64 and amd64, the
    arm ones annotated with their variant, pushed as an OCI layout: each platform asked takes
    skopeo's image; one no image runs is one line naming those there."""
    need_root_and("podman", "skopeo")
    env = {**os.environ, "BUILDAH_ISOLATION": "chroot"}
    podman = podman_in(tmp_path)

    def call(*args: str) -> str:
        done = subprocess.run(
            [*podman, *args], env=env, capture_output=True, text=True, timeout=300, check=False
        )
        assert done.returncode == 0, f"podman {args}: {done.stderr}"
        return done.stdout.strip()

    try:
        call("manifest", "create", "localhost/list:1")
        for plat in ("linux/arm/v6", "linux/arm/v7", "linux/arm64", "linux/amd64"):
            ctx = tmp_path / plat.replace("/", "-")
            ctx.mkdir()
            (ctx / "platform").write_text(plat)
            (ctx / "Containerfile").write_text("FROM scratch\nCOPY platform /\n")
            name = f"localhost/img:{ctx.name}"
            call("build", "-q", "--platform", plat, "-t", name, str(ctx))
            call("manifest", "add", "localhost/list:1", f"containers-storage:{name}")
            if plat.startswith("linux/arm/"):  # podman 4.3 writes no variant of a config
                digest = call("image", "inspect", "--format", "{{.Digest}}", name)
                call("manifest", "annotate", "--variant", plat[-2:], "localhost/list:1", digest)
        layout = tmp_path / "layout"
        call("manifest", "push", "--all", "localhost/list:1", f"oci:{layout}:t")
    finally:
        reset(podman)
    index = json.loads((layout / "index.json").read_text())
    listed = json.loads(
        (layout / "blobs/sha256" / index["manifests"][0]["digest"][7:]).read_bytes()
    )
    assert {e["platform"].get("variant", "") for e in listed["manifests"]} >= {"v6", "v7"}
    for asked in ("linux/arm", "linux/arm/v8", "linux/arm/v6", "linux/arm64/v8", "linux/amd64"):
        plat = Platform.parse(asked)
        image = resolve(LayoutSource(str(layout)), label="t", platform=plat)
        done = subprocess.run(
            ["skopeo", "--override-os", plat.os, "--override-arch", plat.architecture,
             "--override-variant", plat.variant or "", "inspect", f"oci:{layout}:t"],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        layers = json.loads(done.stdout)["Layers"]
        assert [layer.digest for layer in image.layers] == layers, asked
    with pytest.raises(ImageError) as err:
        resolve(LayoutSource(str(layout)), label="t", platform=Platform.parse("linux/arm/v5"))
    assert err.value.line().endswith(
        "has no image for platform linux/arm/v5 (offers: linux/arm/v6, linux/arm/v7, "
        "linux/arm64, linux/amd64); choose one with bootc.platform=linux/arm/v6"
    ), err.value.line()


def test_inspect_lists_no_attestation_as_a_platform(tmp_path: Path) -> None:
    """buildx writes an attestation manifest (unknown/unknown) after each image's entry: it
    was listed among the platforms the image offers."""
    layout = tmp_path / "layout"
    attestation = ({"os": "unknown", "architecture": "unknown"}, True)
    write_index(layout, [(AMD64, False), attestation, (ARM_V7, False), attestation])
    done = bootc_live("inspect", f"oci:{layout}:t", "--platform", "linux/arm/v7")
    assert done.returncode == 0, done.stderr
    assert "\nplatforms linux/amd64, linux/arm/v7\n" in done.stdout, done.stdout


@pytest.mark.parametrize(
    ("entries", "pulled", "machine", "taken"),
    [
        ([{"os": "linux", "architecture": "arm64"}, ARM64_V8], "linux/arm64", "aarch64", 0),
        ([ARM_V7, ARM_V6], "linux/arm/v6", "armv7l", 1),
    ],
)
def test_an_index_pulled_for_one_platform_boots_the_image_it_holds(
    entries: list[dict[str, str]],
    pulled: str,
    machine: str,
    taken: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """bootc-live build/pull --platform keeps the whole index and one image's blobs: the
    machine it boots prefers another image it runs (aarch64 prefers arm64/v8 to arm64, as
    containers/image does; armv7l arm/v7 to arm/v6), which is not there, and the boot stopped
    with 'holds its index only in part' instead of taking the one held."""
    layout, archive = tmp_path / "layout", tmp_path / "part.tar"
    write_index(layout, [(plat, False) for plat in entries])
    done = bootc_live(
        "pull", "--platform", pulled, f"oci:{layout}:t", "-o", f"oci-archive:{archive}"
    )
    assert done.returncode == 0, done.stderr
    monkeypatch.setattr(oci._platform, "machine", lambda: machine)
    image = resolve(ArchiveSource(str(archive)))
    assert int(image.config["config"]["Labels"]["n"]) == taken


def test_an_index_held_in_part_names_the_images_held_not_attestations(tmp_path: Path) -> None:
    """A buildx index of which only the amd64 image and the attestations are here (copied so,
    or pulled with --platform by a tool that keeps attestations): asked for arm64, it said
    'it holds linux/amd64, unknown/unknown'."""
    layout = tmp_path / "layout"
    attestation = ({"os": "unknown", "architecture": "unknown"}, True)
    digests = write_index(
        layout, [attestation, (AMD64, False), attestation, (ARM64_V8, False), attestation]
    )
    (layout / "blobs/sha256" / digests[3].removeprefix("sha256:")).unlink()
    with pytest.raises(ImageError) as err:
        resolve(LayoutSource(str(layout)), label="t", platform=Platform.parse("linux/arm64"))
    assert err.value.line().endswith(
        "holds its index only in part: not its image for linux/arm64 (it holds linux/amd64); "
        "choose one with bootc.platform=linux/amd64"
    ), err.value.line()


# /proc/cpuinfo's flags of processors of each x86-64 level: QEMU's default qemu64 model (v1),
# a Nehalem (v2), a Haswell (v3), a Skylake server (v4); only the flags line counts.
QEMU64 = (
    "fpu de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse "
    "sse2 syscall nx lm rep_good nopl cpuid pni cx16 hypervisor lahf_lm svm"
)
NEHALEM = QEMU64 + " ssse3 sse4_1 sse4_2 popcnt"
HASWELL = NEHALEM + " avx avx2 bmi1 bmi2 f16c fma abm movbe xsave"
SKYLAKE = HASWELL + " avx512f avx512dq avx512cd avx512bw avx512vl"


@pytest.mark.parametrize(
    ("flags", "level"),
    [(QEMU64, "v1"), (NEHALEM, "v2"), (HASWELL, "v3"), (SKYLAKE, "v4"), ("", "")],
)
def test_the_x86_64_level_is_read_from_the_processor_s_flags(
    flags: str, level: str, tmp_path: Path
) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: {flags}\n\n")
    assert oci.amd64_level(str(cpuinfo)) == level
    assert oci.amd64_level(str(tmp_path / "none")) == ""


@pytest.mark.parametrize(
    ("entries", "flags", "taken"),
    [
        # Both published: each machine takes the best it runs (a GOAMD64=v3 build for v3).
        ([AMD64_V3, AMD64], NEHALEM, 1),
        ([AMD64_V3, AMD64], HASWELL, 0),
        ([AMD64_V3, AMD64], SKYLAKE, 0),
        ([AMD64, {**AMD64, "variant": "v2"}], HASWELL, 1),
        # v1 is every x86-64 processor's, as no variant is.
        ([{**AMD64, "variant": "v1"}], QEMU64, 0),
        ([{**AMD64, "variant": "v1"}, AMD64], NEHALEM, 0),
    ],
)
def test_the_booting_machine_takes_the_best_x86_64_level_it_runs(
    entries: list[dict[str, str]],
    flags: str,
    taken: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    layout, cpuinfo = tmp_path / "layout", tmp_path / "cpuinfo"
    write_index(layout, [(plat, False) for plat in entries])
    cpuinfo.write_text(f"flags\t\t: {flags}\n")
    monkeypatch.setattr(oci, "CPUINFO", str(cpuinfo))
    monkeypatch.setattr(oci._platform, "machine", lambda: "x86_64")
    image = resolve(LayoutSource(str(layout)), label="t")
    assert int(image.config["config"]["Labels"]["n"]) == taken


def test_an_image_for_a_higher_x86_64_level_is_refused_naming_the_processor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a v3 image, on a machine of x86-64-v2 (QEMU's default model is v1): it was taken,
    and stopped at its first AVX2 instruction after the switch root (or glibc's 'CPU does not
    support x86-64-v3'). The host (`foreign`: it builds for other machines) takes no level it
    was not asked for either, but says nothing of its own processor."""
    layout, cpuinfo = tmp_path / "layout", tmp_path / "cpuinfo"
    write_index(layout, [(AMD64_V3, False)])
    cpuinfo.write_text(f"flags\t\t: {NEHALEM}\n")
    monkeypatch.setattr(oci, "CPUINFO", str(cpuinfo))
    monkeypatch.setattr(oci._platform, "machine", lambda: "x86_64")
    with pytest.raises(ImageError) as err:
        resolve(LayoutSource(str(layout)), label="t")
    assert err.value.line().endswith(
        "has no image for platform linux/amd64/v2 (offers: linux/amd64/v3); the image needs a "
        "linux/amd64/v3 processor, and this machine's is linux/amd64/v2: boot it on one that "
        "has it, or publish the image for linux/amd64 too"
    ), err.value.line()
    with pytest.raises(ImageError) as err:
        resolve(LayoutSource(str(layout)), label="t", foreign=lambda _: None)
    assert err.value.line().endswith("choose one with bootc.platform=linux/amd64/v3")
