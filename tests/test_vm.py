"""Live boots in QEMU of the busybox demo image: every option changes what the guest sees.

Each boot prints one verdict line (BOOTC-LIVE-REPORT …) from inside the live system, or ends
without it; the host asserts on that line and on bootc-live's one-line failure messages.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import BinaryIO

import pytest

from bootc_live.build import initramfs_compression
from bootc_live.demo import demo_layers
from bootc_live.layout import LayerTar, TreeEntry, write_layout
from bootc_live.runtime.cpio import CpioWriter
from bootc_live.runtime.handover import index_json, write_split_layout
from bootc_live.runtime.memory import UNPACK_RESERVE, ZSTD_RESERVED_WINDOW
from bootc_live.runtime.oci import resolve
from bootc_live.runtime.sources import LayoutSource
from imagegen import build_layout, f, layer_tar
from newc import read_archive
from unpackers import need
from vmboot import assert_live, assert_stopped, run, variant

pytestmark = pytest.mark.vm


# -- both flavours, embedded and PXE-style ---------------------------------------------------


@pytest.mark.parametrize("flavour", ["systemd", "shell"])
def test_embedded_boot(artifacts: dict[str, Path], flavour: str, tmp_path: Path) -> None:
    result = run(artifacts[flavour], log=tmp_path / "console.log")
    report = assert_live(result, root="ro", etc="rw", var="rw", fstype="tmpfs", whiteout="yes")
    assert "size=" in report["rootopts"]
    assert any(m.startswith("bootc-live: live root ready: sha256:") for m in result.messages)
    states = [status["state"] for status in result.statuses]
    assert states == ["resolving", "planned", "unpacking", "ready"], states
    # The imported modules' Python files went before the unpack, and the runtime still came to
    # the end: nothing it ran after needed them.
    planned, unpacking = result.statuses[1], result.statuses[2]
    assert unpacking["python_freed_bytes"] == planned["python_unused_bytes"] > 4 << 20, unpacking
    assert unpacking["python_freed"] > 200, unpacking
    assert result.status["root"] == {"mode": "tmpfs"} and result.status["entries"] > 0
    # ./setup installs isal: the host-built initramfs carries igzip, and the boot used it.
    assert result.status["decompressor"] == "igzip", result.status
    # ./setup installs zstd and Debian's kernel unpacks it: the initramfs that booted is zstd.
    assert initramfs_compression(artifacts[flavour] / "initrd.img") == "zstd"


def test_pxe_two_initrds(artifacts: dict[str, Path]) -> None:
    # initrd.img and rootfs.img as separate initrds, loaded back to back as iPXE does.
    assert_live(run(artifacts["shell"], pxe=True), root="ro", etc="rw", var="rw")


def test_oci_archive_inside_the_initramfs(artifacts: dict[str, Path], tmp_path: Path) -> None:
    # root= may name an oci-archive file in the initramfs instead of the split layout.
    good = artifacts["shell"]

    def write_rootfs(out: BinaryIO) -> None:
        with open(good / "root.oci", "rb") as oci:
            cpio = CpioWriter(out)
            cpio.add_dir("images")
            cpio.add_file("images/live.oci", oci, (good / "root.oci").stat().st_size)
            cpio.close()

    cmdline = "root=bootc-live:/images/live.oci bootclabel=demo"
    archive = variant(good, tmp_path / "archive", write_rootfs, cmdline)
    result = run(archive)
    assert_live(result, root="ro", etc="rw", var="rw", whiteout="yes")


# -- options change what the guest observes --------------------------------------------------


@pytest.mark.parametrize(
    ("append", "expected"),
    [
        ("rw", {"root": "rw", "etc": "rw", "var": "rw"}),
        ("rw ro rw=0", {"root": "ro", "etc": "rw", "var": "rw"}),
        ("bootc.live.etc.rw=0", {"root": "ro", "etc": "ro", "var": "rw"}),
        ("bootc.live.var.rw=0", {"root": "ro", "etc": "rw", "var": "ro"}),
        ("rw bootc.live.etc.rw=0", {"root": "rw", "etc": "ro", "var": "rw"}),
        ("rootflags=", {"root": "ro", "etc": "rw", "var": "rw"}),
    ],
)
def test_mount_options(artifacts: dict[str, Path], append: str, expected: dict[str, str]) -> None:
    assert_live(run(artifacts["shell"], append), **expected)


@pytest.mark.parametrize("flavour", ["systemd", "shell"])
def test_rootflags_reach_the_root_mount(artifacts: dict[str, Path], flavour: str) -> None:
    report = assert_live(run(artifacts[flavour], "rootflags=size=300m,nr_inodes=40000"))
    assert "size=307200k" in report["rootopts"] and "nr_inodes=40000" in report["rootopts"]


def test_quiet_prints_only_the_summary(artifacts: dict[str, Path]) -> None:
    result = run(artifacts["shell"], "bootc.quiet")
    assert_live(result, root="ro")
    assert [m.split(":")[1].strip() for m in result.messages] == ["live root ready"]
    # Only the last state is printed, whole: everything status.json gathered on the way (a
    # long state is spread over several lines of that one state, LINE_LIMIT).
    assert {status["state"] for status in result.statuses} == {"ready"}
    last = result.statuses[-1]
    for field in ("source", "manifest", "modules_freed", "tools_freed", "peak_memory"):
        assert field in last, (field, last)


# -- failures stop the boot with one clear message -------------------------------------------


@pytest.mark.parametrize("flavour", ["systemd", "shell"])
def test_wrong_label(artifacts: dict[str, Path], flavour: str) -> None:
    assert_stopped(
        run(artifacts[flavour], "bootclabel=nope"), "has no image tagged 'nope' (tags: demo)"
    )


def test_wrong_digest(artifacts: dict[str, Path]) -> None:
    assert_stopped(
        run(artifacts["shell"], "bootc.digest=sha256:" + "0" * 64),
        "not the pinned sha256:" + "0" * 64,
    )


def test_invalid_option(artifacts: dict[str, Path]) -> None:
    assert_stopped(run(artifacts["shell"], "bootc.zram=lots"), "invalid bootc.zram=lots")


def test_corrupt_blob(artifacts: dict[str, Path], tmp_path: Path) -> None:
    good = artifacts["shell"]
    data = bytearray((good / "rootfs.img").read_bytes())
    index = data.find(b"bootc-live/image/index.json")
    assert index > 0
    # The largest layer blob is busybox's: flip a byte well inside its data.
    layer = max(read_archive(bytes(data))[0], key=lambda m: m.size)
    data[layer.offset + layer.size // 2] ^= 0xFF
    bad = variant(good, tmp_path / "bad", lambda out: out.write(bytes(data)))
    result = run(bad)
    assert_stopped(result, f"sha256:{layer.name[-64:][:12]}… digest mismatch (expected ")
    assert any("the image on the server changed or is corrupt" in m for m in result.messages)


def test_kexec_without_a_kernel_in_the_image_stops(artifacts: dict[str, Path]) -> None:
    # The demo image carries no kernel: bootc.kexec stops before any kexec, with the reason.
    result = run(artifacts["shell"], "bootc.kexec")
    assert_stopped(result, "bootc.kexec: the image has no kernel (no usr/lib/modules/KVER/vmlinuz)")
    assert "kexec into" not in result.boot.output


KVER = "9.9.9-test"


@pytest.mark.parametrize(
    ("files", "append", "message"),
    [
        (["vmlinuz"], "", f"bootc.kexec: the image has no usr/lib/modules/{KVER}/initramfs.img"),
        (
            ["vmlinuz", "initramfs.img"],
            "bootc.kexec.kver=6.1.0-1",
            f"the image has no kernel 6.1.0-1 (kernels: {KVER})",
        ),
        # Not a kernel at all: kexec -l itself refuses to load it.
        (
            ["vmlinuz", "initramfs.img"],
            "",
            f"bootc.kexec: kexec could not load kernel {KVER} from the image: Cannot determine "
            "the file type of /run/bootc-live/kexec/vmlinuz",
        ),
    ],
    ids=["no-initramfs", "unknown-kver", "failed-load"],
)
def test_kexec_stops_when_the_images_kernel_cannot_be_used(
    artifacts: dict[str, Path], tmp_path: Path, files: list[str], append: str, message: str
) -> None:
    """The demo image with a top layer holding usr/lib/modules/KVER/ files that cannot boot:
    each stops with its one line, and nothing is executed."""
    top = [TreeEntry(d, kind="dir") for d in ("usr", "usr/lib", "usr/lib/modules")]
    top.append(TreeEntry(f"usr/lib/modules/{KVER}", kind="dir"))
    top += [TreeEntry(f"usr/lib/modules/{KVER}/{name}", data=b"not a kernel\n") for name in files]
    write_layout(tmp_path / "layout", [*demo_layers(), LayerTar(top).tar()], "demo")
    image = resolve(LayoutSource(str(tmp_path / "layout")), label="demo")
    index = index_json(image, "demo", None)
    out = variant(
        artifacts["shell"], tmp_path / "artifacts", lambda f: write_split_layout(image, index, f)
    )
    result = run(out, f"bootc.kexec {append}")
    assert_stopped(result, message)
    assert "kexec into" not in result.boot.output


def test_an_image_whose_init_is_not_in_it_stops_before_switch_root(
    artifacts: dict[str, Path], tmp_path: Path
) -> None:
    """The demo image whose /sbin/init is an absolute link to /usr/bin/python3, which the
    initramfs has and the image lacks: under systemd's initrd the boot stops with the
    runtime's one line (resolved inside the image), not at switch root in systemd's words."""
    top = [TreeEntry("sbin/init", "symlink", target="/usr/bin/python3", mode=0o777)]
    write_layout(tmp_path / "layout", [*demo_layers(), LayerTar(top).tar()], "demo")
    image = resolve(LayoutSource(str(tmp_path / "layout")), label="demo")
    index = index_json(image, "demo", None)
    out = variant(
        artifacts["systemd"], tmp_path / "artifacts", lambda w: write_split_layout(image, index, w)
    )
    result = run(out)
    assert_stopped(
        result,
        "bootc-live: the image's init cannot be run: /sbin/init is a link to nothing in the "
        "image; name the image's init with init=, or install systemd (systemd-sysv) in it",
    )
    assert result.status["state"] == "failed" and "live root ready" not in result.boot.output
    assert "Switching root" not in result.boot.output


def test_zstd_layers_boot_with_their_window_planned(
    artifacts: dict[str, Path], tmp_path: Path
) -> None:
    """The demo image in zstd layers whose frames declare a 32 MiB window (as zstd --long=25
    writes them from a pipe), decoded by the initramfs's zstd command: the plan holds the
    window beyond the 8 MiB its reserve has, and the image boots."""
    build_layout(
        tmp_path / "layout",
        demo_layers(),
        tag="demo",
        compression="zstd",
        compress_kw={"window_log": 25},
    )
    image = resolve(LayoutSource(str(tmp_path / "layout")), label="demo")
    index = index_json(image, "demo", None)
    out = variant(
        artifacts["shell"], tmp_path / "artifacts", lambda w: write_split_layout(image, index, w)
    )
    result = run(out)
    assert_live(result, root="ro", etc="rw", var="rw", whiteout="yes")
    planned = next(s for s in result.statuses if s["state"] == "planned")
    assert planned["reserve"] == UNPACK_RESERVE + (32 << 20) - ZSTD_RESERVED_WINDOW, planned
    assert result.status["decompressor"] == "zstd", result.status


def test_an_image_larger_than_planned_stops_at_the_roots_budget(
    artifacts: dict[str, Path], tmp_path: Path
) -> None:
    """The planner's estimate can be short (here a layer of two gzip members: the trailer
    gives the last one's size only). The tmpfs the image is unpacked into holds no more than
    the planner gave it, so the boot stops with one line when it is full, not with the
    machine out of memory (a tmpfs as large as RAM: the OOM killer cannot free its pages)."""
    bomb = layer_tar([f("bomb", bytes(400 << 20))])  # 400 MiB; the guest has 512
    build_layout(
        tmp_path / "layout", [*demo_layers(), bomb], tag="demo", compress_kw={"members": 2}
    )
    image = resolve(LayoutSource(str(tmp_path / "layout")), label="demo")
    index = index_json(image, "demo", None)
    out = variant(
        artifacts["shell"], tmp_path / "artifacts", lambda w: write_split_layout(image, index, w)
    )
    result = run(out)
    assert_stopped(result, "the root filesystem is full while writing /bomb")
    planned = next(s for s in result.statuses if s["state"] == "planned")
    assert planned["need"] < planned["available"] < 400 << 20, planned  # accepted, short
    line = next(m for m in result.messages if "/bomb" in m)
    assert line.endswith("add RAM or use bootc.zram="), line


# -- an image on a local disk: root=bootc-live:block:DEV:/PATH --------------------------------


def disk_image(path: Path, tree: Path, fstype: str, label: str, uuid: str) -> Path:
    """A filesystem image holding `tree`, made without mounting it: ext4 (mkfs.ext4 -d) or FAT
    (mkfs.vfat, then mtools' mcopy)."""
    with open(path, "wb") as out:
        out.truncate(32 << 20)
    if fstype == "ext4":
        need(shutil.which("mkfs.ext4") is not None, "needs mkfs.ext4 (e2fsprogs)")
        argv = ["mkfs.ext4", "-q", "-L", label, "-U", uuid, "-d", str(tree), str(path)]
        subprocess.run(argv, check=True)
        return path
    need(shutil.which("mkfs.vfat") is not None, "needs mkfs.vfat (dosfstools)")
    need(shutil.which("mcopy") is not None, "needs mcopy (mtools)")
    volume_id = uuid.replace("-", "")
    subprocess.run(["mkfs.vfat", "-n", label, "-i", volume_id, str(path)], check=True)
    top = [str(p) for p in sorted(tree.iterdir())]
    subprocess.run(["mcopy", "-s", "-i", str(path), *top, "::/"], check=True)
    return path


EXT4_UUID = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"


@pytest.mark.parametrize(
    ("flavour", "fstype", "device", "path"),
    [
        # ext4: a label udev names with an escape (bootc\x2fimages), the oci-archive on it.
        ("systemd", "ext4", "LABEL=bootc/images", "/images/root.oci"),
        # FAT, as on a USB stick: its UUID (blkid writes ABCD-1234) given in lower case, an OCI
        # layout on it.
        ("shell", "vfat", "UUID=abcd-1234", "/os/layout"),
    ],
)
def test_an_image_on_a_local_disk_boots_and_the_disk_is_let_go(
    artifacts: dict[str, Path],
    images: Path,
    flavour: str,
    fstype: str,
    device: str,
    path: str,
    tmp_path: Path,
) -> None:
    tree = tmp_path / "tree"
    (tree / "images").mkdir(parents=True)
    shutil.copy(artifacts[flavour] / "root.oci", tree / "images" / "root.oci")
    shutil.copytree(images / "layout", tree / "os" / "layout")
    uuid = EXT4_UUID if fstype == "ext4" else "ABCD-1234"
    label = "bootc/images" if fstype == "ext4" else "IMAGES"
    disk = disk_image(tmp_path / "disk.img", tree, fstype, label, uuid)
    root = f"root=bootc-live:block:{device}:{path} bootclabel=demo"
    result = run(artifacts[flavour], root, disks=(disk,), embedded=False)
    # The live system runs from RAM: its root a tmpfs, no disk of the guest's mounted.
    assert_live(result, root="ro", etc="rw", var="rw", fstype="tmpfs", whiteout="yes", disks="0")
    said = f"bootc-live: reading the image from {device} (/dev/vda), mounted read-only, at {path}"
    assert said in result.messages, result.messages
    assert result.statuses[0]["source"] == f"bootc-live:block:{device}:{path}"


@pytest.mark.parametrize(
    ("flavour", "append", "message"),
    [
        (
            "shell",
            "root=bootc-live:block:LABEL=absent:/images/root.oci bootc.timeout=2",
            "root=bootc-live:block:LABEL=absent: no such block device appeared in 2 s; check",
        ),
        (
            "systemd",
            "root=bootc-live:block:/dev/vda:/images/absent.oci",
            "root=bootc-live:block:/dev/vda:/images/absent.oci: no such file or directory on "
            "the disk; give the path",
        ),
    ],
)
def test_an_image_not_on_the_disk_stops_the_boot_with_the_reason(
    artifacts: dict[str, Path], flavour: str, append: str, message: str, tmp_path: Path
) -> None:
    (tmp_path / "tree" / "images").mkdir(parents=True)
    disk = disk_image(tmp_path / "disk.img", tmp_path / "tree", "ext4", "images", EXT4_UUID)
    result = run(artifacts[flavour], f"{append} bootclabel=demo", disks=(disk,), embedded=False)
    assert_stopped(result, message)
