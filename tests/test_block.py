"""root=bootc-live:block:DEV:/PATH on the host: the device's names, the wait, the mount's
lifetime and the path on the disk (the boot itself: test_vm.py's block tests)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from bootc_live.runtime import block
from bootc_live.runtime.blobs import Descriptor
from bootc_live.runtime.run import CommandError
from bootc_live.runtime.sources import ArchiveSource, LayoutSource
from imagegen import build_layout, f, layer_tar
from unpackers import need


@pytest.mark.parametrize(
    "label",
    ["images", "bootc/images", "my images", "a\\b", "x'y\"z", "Bilder-Ünï", "t#+-.:=@_", "a$b%c"],
)
def test_labels_are_named_as_udev_names_them(label: str, tmp_path: Path) -> None:
    # The oracle: blkid's ID_FS_LABEL_ENC, from which udev makes /dev/disk/by-label/NAME.
    need(shutil.which("mkfs.ext4") is not None, "needs mkfs.ext4 (e2fsprogs)")
    disk = tmp_path / "disk.img"
    with open(disk, "wb") as out:
        out.truncate(8 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-L", label, str(disk)], check=True)
    probed = subprocess.run(
        ["blkid", "-p", "-o", "udev", str(disk)], check=True, capture_output=True, text=True
    ).stdout
    fields = dict(line.split("=", 1) for line in probed.splitlines() if "=" in line)
    assert block.udev_name(label) == fields["ID_FS_LABEL_ENC"]
    assert block.candidates(f"LABEL={label}") == [f"/dev/disk/by-label/{fields['ID_FS_LABEL_ENC']}"]


@pytest.mark.parametrize(
    ("mkfs", "given"),
    [
        (
            ["mkfs.ext4", "-q", "-U", "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"],
            "0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0",
        ),
        (["mkfs.vfat", "-i", "ABCD1234"], "abcd-1234"),
    ],
)
def test_uuids_in_the_other_case_find_udevs_name(
    mkfs: list[str], given: str, tmp_path: Path
) -> None:
    # The oracle: blkid's ID_FS_UUID_ENC (ext4's in lower case, FAT's in upper case), from
    # which udev makes /dev/disk/by-uuid/NAME.
    need(shutil.which(mkfs[0]) is not None, f"needs {mkfs[0]}")
    disk = tmp_path / "disk.img"
    with open(disk, "wb") as out:
        out.truncate(8 << 20)
    subprocess.run([*mkfs, str(disk)], check=True, capture_output=True)
    probed = subprocess.run(
        ["blkid", "-p", "-o", "udev", str(disk)], check=True, capture_output=True, text=True
    ).stdout
    fields = dict(line.split("=", 1) for line in probed.splitlines() if "=" in line)
    assert fields["ID_FS_UUID_ENC"] != given
    assert f"/dev/disk/by-uuid/{fields['ID_FS_UUID_ENC']}" in block.candidates(f"UUID={given}")


def test_uuids_are_looked_for_as_written_and_in_either_case() -> None:
    assert block.candidates("UUID=0F1E-aB") == [
        "/dev/disk/by-uuid/0F1E-aB",
        "/dev/disk/by-uuid/0f1e-ab",
        "/dev/disk/by-uuid/0F1E-AB",
    ]
    assert block.candidates("PARTUUID=6e0a0a53-01") == [
        "/dev/disk/by-partuuid/6e0a0a53-01",
        "/dev/disk/by-partuuid/6E0A0A53-01",
    ]
    assert block.candidates("/dev/vdb1") == ["/dev/vdb1"]


class Clock:
    """A clock that moves only when slept on; `on_sleep` runs at each sleep."""

    def __init__(self, on_sleep: Callable[[int], None] | None = None) -> None:
        self.now = 0.0
        self.sleeps = 0
        self.on_sleep = on_sleep

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.sleeps += 1
        if self.on_sleep is not None:
            self.on_sleep(self.sleeps)


def test_the_device_is_waited_for_until_it_appears(tmp_path: Path) -> None:
    need(os.geteuid() == 0, "making a block device node needs root")
    node = tmp_path / "disk"
    link = tmp_path / "by-label-images"

    def appear(sleeps: int) -> None:
        if sleeps == 3:  # udev makes the node and its by-label link a while after the boot asks
            os.mknod(node, stat.S_IFBLK | 0o600, os.makedev(7, 200))
            link.symlink_to(node)

    clock = Clock(appear)
    said: list[str] = []
    found = block.wait_for(str(link), 90, said.append, clock.time, clock.sleep)
    assert found == str(node) and clock.sleeps == 3
    assert said == [f"waiting up to 90 s for the disk {link}"]


def test_a_device_that_never_comes_stops_after_the_timeout(tmp_path: Path) -> None:
    clock = Clock()
    said: list[str] = []
    with pytest.raises(block.DiskError) as err:
        block.wait_for(str(tmp_path / "absent"), 2.5, said.append, clock.time, clock.sleep)
    assert err.value.line() == (
        f"root=bootc-live:block:{tmp_path}/absent: no such block device appeared in 2.5 s; "
        "check the label or UUID with blkid where the disk is attached (and that this "
        "initramfs has its driver); a slow disk needs bootc.timeout=SECONDS"
    )
    assert 2.5 <= clock.now < 2.5 + 2 * block.POLL and len(said) == 1


def test_a_path_that_is_no_block_device_is_refused_at_once(tmp_path: Path) -> None:
    plain = tmp_path / "disk.img"
    plain.write_bytes(b"\0" * 4096)
    clock = Clock()
    with pytest.raises(block.DiskError, match="is not a block device"):
        block.wait_for(str(plain), 90, print, clock.time, clock.sleep)
    assert clock.sleeps == 0


@pytest.fixture()
def disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[list[str]]]:
    """A directory standing for the mounted disk (mount and umount recorded, not run)."""
    mountpoint = tmp_path / "mnt"
    monkeypatch.setattr(block, "MOUNTPOINT", str(mountpoint))
    monkeypatch.setattr(block, "wait_for", lambda device, seconds, say: "/dev/vdz")
    calls: list[list[str]] = []

    def run(argv: list[str], **_: object) -> str:
        calls.append(argv)
        return ""

    monkeypatch.setattr(block, "run", run)
    return mountpoint, calls


def test_the_image_is_read_from_the_disk_and_nothing_on_it_is_deleted(
    disk: tuple[Path, list[list[str]]], tmp_path: Path
) -> None:
    mountpoint, calls = disk
    build_layout(mountpoint / "os" / "layout", [layer_tar([f("hello", b"hi")])], tag="t")
    blobs = sorted((mountpoint / "os" / "layout" / "blobs" / "sha256").iterdir())
    said: list[str] = []
    source = block.open_disk("LABEL=images", "/os/layout", 5, said.append)
    assert isinstance(source.inner, LayoutSource) and not source.inner.consume
    assert calls == [["mount", "-o", "ro,nosuid,nodev,noexec", "/dev/vdz", str(mountpoint)]]
    assert said == [
        "reading the image from LABEL=images (/dev/vdz), mounted read-only, at /os/layout"
    ]
    assert source.index_json()
    for blob in blobs:
        source.release(_descriptor(blob))
    source.close()
    assert sorted((mountpoint / "os" / "layout" / "blobs" / "sha256").iterdir()) == blobs
    assert calls[-1] == ["umount", str(mountpoint)]


def _descriptor(blob: Path) -> Descriptor:
    return Descriptor("application/octet-stream", f"sha256:{blob.name}", blob.stat().st_size)


def test_an_archive_on_the_disk_is_read_in_place(disk: tuple[Path, list[list[str]]]) -> None:
    mountpoint, calls = disk
    layout = mountpoint / "tmp-layout"
    build_layout(layout, [layer_tar([f("hello", b"hi")])], tag="t")
    archive = mountpoint / "root.oci"
    subprocess.run(["tar", "-C", str(layout), "-cf", str(archive), "."], check=True)
    source = block.open_disk("/dev/vdz", "/root.oci", 5, print)
    assert isinstance(source.inner, ArchiveSource) and not source.inner.delete
    source.close()
    assert archive.exists() and calls[-1] == ["umount", str(mountpoint)]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/nothere.oci", "/nothere.oci: no such file or directory on the disk"),
        ("/escape", ":/escape leads out of the disk's filesystem (a symbolic link)"),
    ],
)
def test_a_missing_image_stops_with_the_disk_unmounted(
    disk: tuple[Path, list[list[str]]], path: str, message: str
) -> None:
    mountpoint, calls = disk
    mountpoint.mkdir()
    (mountpoint / "escape").symlink_to("/etc")
    with pytest.raises(block.DiskError) as err:
        block.open_disk("LABEL=images", path, 5, print)
    assert message in err.value.line()
    assert calls[0][0] == "mount" and calls[-1] == ["umount", str(mountpoint)]


def test_a_filesystem_that_does_not_mount_is_one_line(
    disk: tuple[Path, list[list[str]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, calls = disk
    detail = "mount: /run/bootc-live/disk: wrong fs type, bad option, bad superblock on /dev/vdz."

    def refuse(argv: list[str], **_: object) -> str:
        calls.append(argv)
        raise CommandError("mount failed", detail=detail)

    monkeypatch.setattr(block, "run", refuse)
    with pytest.raises(block.DiskError) as err:
        block.open_disk("LABEL=images", "/root.oci", 5, print)
    assert err.value.line().startswith(
        "root=bootc-live:block:LABEL=images: /dev/vdz could not be mounted read-only: "
        f"{detail[:-1]}; the image must be on a filesystem"
    )
    assert [argv[0] for argv in calls] == ["mount"]  # nothing mounted, nothing to unmount
