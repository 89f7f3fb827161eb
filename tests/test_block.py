"""root=bootc-live:block:DEV:/PATH on the host: the device's names, the wait, the mount's
lifetime and the path on the disk (the boot itself: test_vm.py's block tests)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from bootc_live.runtime import block, cmdline, mounts
from bootc_live.runtime.blobs import Descriptor
from bootc_live.runtime.errors import BootcLiveError, Stopped
from bootc_live.runtime.run import CommandError
from bootc_live.runtime.sources import ArchiveSource, LayoutSource
from imagegen import build_layout, f, layer_tar
from unpackers import need


def udev_fields(mkfs: list[str], tmp_path: Path) -> dict[str, str]:
    """What blkid tells udev of a filesystem image made by `mkfs` (ID_FS_LABEL_ENC, …)."""
    need(shutil.which(mkfs[0]) is not None, f"needs {mkfs[0]}")
    disk = tmp_path / "disk.img"
    with open(disk, "wb") as out:
        out.truncate(8 << 20)
    subprocess.run([*mkfs, str(disk)], check=True, capture_output=True)
    probed = subprocess.run(
        ["blkid", "-p", "-o", "udev", str(disk)], check=True, capture_output=True, text=True
    ).stdout
    return dict(line.split("=", 1) for line in probed.splitlines() if "=" in line)


@pytest.mark.parametrize(
    "label",
    [
        *("images", "bootc/images", "my images", "a\\b", "x'y\"z", "Bilder-Ünï", "t#+-.:=@_"),
        *("a$b%c", "a\uffffb", "a\ufdd0\ufdefb", "a\ufffeb", "\U0010ffff", "\U0001ffffz"),
    ],
)
def test_labels_are_named_as_udev_names_them(label: str, tmp_path: Path) -> None:
    # The oracle: blkid's ID_FS_LABEL_ENC, from which udev makes /dev/disk/by-label/NAME.
    fields = udev_fields(["mkfs.ext4", "-q", "-L", label], tmp_path)
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
    fields = udev_fields(mkfs, tmp_path)
    assert fields["ID_FS_UUID_ENC"] != given
    assert f"/dev/disk/by-uuid/{fields['ID_FS_UUID_ENC']}" in block.candidates(f"UUID={given}")


def test_a_label_may_be_written_with_dracuts_escapes() -> None:
    # dracut writes a space in LABEL= as \x20 (the kernel command line splits at spaces).
    by_label = "/dev/disk/by-label/my\\x20images\\x2fall"
    assert block.candidates("LABEL=my\\x20images/all") == [by_label]
    assert block.candidates("LABEL=my images\\x2Fall") == [by_label]
    assert block.candidates("LABEL=caf\\xc3\\xa9") == ["/dev/disk/by-label/café"]


def test_a_value_in_quotes_is_the_value_as_blkid_reads_a_tag() -> None:
    # LABEL="my disk" keeps its quotes on the kernel command line (they do not start the
    # value); findfs, blkid -t and mount(8) resolve it to the label my disk: it was looked
    # for as /dev/disk/by-label/\x22my\x20disk\x22 until the wait ran out.
    (word,) = cmdline.split('root=bootc-live:block:LABEL="my disk":/images/root.oci')
    location = cmdline.parse_root(word.partition("=")[2])
    assert block.candidates(location.device) == ["/dev/disk/by-label/my\\x20disk"]
    assert block.candidates("LABEL='my\\x20disk'") == ["/dev/disk/by-label/my\\x20disk"]
    assert block.candidates('UUID="ABCD-1234"')[:2] == [
        "/dev/disk/by-uuid/ABCD-1234",
        "/dev/disk/by-uuid/abcd-1234",
    ]
    assert block.candidates('LABEL="') == ["/dev/disk/by-label/\\x22"]  # a quote, no pair
    assert block.candidates("LABEL=x'y\"z") == ["/dev/disk/by-label/x\\x27y\\x22z"]


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


class FakeDisk:
    """The device /dev/vdz for open_disk: its read-only flag, and mount and umount recorded
    (the directory `mountpoint` stands for the mounted filesystem)."""

    def __init__(self, mountpoint: Path) -> None:
        self.mountpoint = mountpoint
        self.calls: list[list[str]] = []
        self.read_only = False
        self.is_mounted = False
        self.refuse: str = ""  # mount fails saying this
        self.stop_after_mount = False  # a stop signal lands once mount(2) has mounted

    def run(self, argv: list[str], **_: object) -> str:
        self.calls.append(argv)
        if argv[0] == "mount":
            assert self.read_only, "mounted while the device could be written"
            if self.refuse:
                raise CommandError("mount failed", detail=self.refuse)
            self.is_mounted = True
            if self.stop_after_mount:
                raise Stopped(signal.SIGTERM)
        elif argv[0] == "umount":
            self.is_mounted = False
        return ""

    def flag(self, device: str, value: bool | None = None) -> bool:
        assert device == "/dev/vdz"
        if value is not None:
            self.read_only = value
        return self.read_only

    def let_go(self) -> bool:
        """Whether the disk is as open_disk found it: unmounted, writable again."""
        return not self.is_mounted and not self.read_only


@pytest.fixture()
def disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeDisk:
    fake = FakeDisk(tmp_path / "mnt")
    monkeypatch.setattr(block, "MOUNTPOINT", str(fake.mountpoint))
    monkeypatch.setattr(block, "wait_for", lambda device, seconds, say: "/dev/vdz")
    monkeypatch.setattr(block, "run", fake.run)
    monkeypatch.setattr(block, "read_only_flag", fake.flag)
    monkeypatch.setattr(
        mounts, "is_mounted", lambda path: path == str(fake.mountpoint) and fake.is_mounted
    )
    return fake


def test_the_image_is_read_from_the_disk_and_nothing_on_it_is_deleted(disk: FakeDisk) -> None:
    layout = disk.mountpoint / "os" / "layout"
    build_layout(layout, [layer_tar([f("hello", b"hi")])], tag="t")
    blobs = sorted((layout / "blobs" / "sha256").iterdir())
    said: list[str] = []
    source = block.open_disk("LABEL=images", "/os/layout", 5, said.append)
    assert isinstance(source.inner, LayoutSource) and not source.inner.consume
    assert disk.calls == [
        ["mount", "-o", "ro,nosuid,nodev,noexec", "/dev/vdz", str(disk.mountpoint)]
    ]
    assert disk.read_only and disk.is_mounted
    assert said == [
        "reading the image from LABEL=images (/dev/vdz), mounted read-only, at /os/layout"
    ]
    assert source.index_json()
    for blob in blobs:
        source.release(_descriptor(blob))
    source.close()
    assert sorted((layout / "blobs" / "sha256").iterdir()) == blobs
    assert disk.calls[-1] == ["umount", str(disk.mountpoint)] and disk.let_go()


def _descriptor(blob: Path) -> Descriptor:
    return Descriptor("application/octet-stream", f"sha256:{blob.name}", blob.stat().st_size)


def test_an_archive_on_the_disk_is_read_in_place(disk: FakeDisk) -> None:
    layout = disk.mountpoint / "tmp-layout"
    build_layout(layout, [layer_tar([f("hello", b"hi")])], tag="t")
    archive = disk.mountpoint / "root.oci"
    subprocess.run(["tar", "-C", str(layout), "-cf", str(archive), "."], check=True)
    source = block.open_disk("/dev/vdz", "/root.oci", 5, print)
    assert isinstance(source.inner, ArchiveSource) and not source.inner.delete
    assert source.inner.description == "oci-archive:/dev/vdz:/root.oci"
    source.close()
    assert archive.exists() and disk.let_go()


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/nothere.oci", "LABEL=images:/nothere.oci: no such file or directory on the disk"),
        ("/escape", "LABEL=images:/escape leads out of the disk's filesystem (a symbolic link)"),
        ("/fifo", "LABEL=images:/fifo: neither a file nor a directory (a pipe, socket or"),
        ("/empty", "LABEL=images:/empty is not an OCI image layout (no index.json); give"),
        ("/loop", "LABEL=images:/loop could not be read: Too many levels of symbolic links"),
    ],
)
def test_a_missing_image_stops_with_the_disk_let_go(
    disk: FakeDisk, path: str, message: str
) -> None:
    disk.mountpoint.mkdir()
    (disk.mountpoint / "escape").symlink_to("/etc")
    (disk.mountpoint / "loop").symlink_to("loop")
    os.mkfifo(disk.mountpoint / "fifo")
    (disk.mountpoint / "empty").mkdir()
    with pytest.raises(BootcLiveError) as err:
        block.open_disk("LABEL=images", path, 5, print)
    assert message in err.value.line() and str(disk.mountpoint) not in err.value.line()
    assert disk.calls[0][0] == "mount" and disk.let_go()


def test_a_layouts_links_off_the_disk_are_not_followed(disk: FakeDisk, tmp_path: Path) -> None:
    # Every byte of this image lies outside the disk: its layout holds only links to it.
    outside = tmp_path / "outside"
    build_layout(outside, [layer_tar([f("hello", b"hi")])], tag="t")
    layout = disk.mountpoint / "layout"
    (layout / "blobs" / "sha256").mkdir(parents=True)
    (layout / "index.json").write_bytes((outside / "index.json").read_bytes())
    for blob in (outside / "blobs" / "sha256").iterdir():
        (layout / "blobs" / "sha256" / blob.name).symlink_to(blob)
    source = block.open_disk("LABEL=images", "/layout", 5, print)
    blob = next((outside / "blobs" / "sha256").iterdir())
    for read in (
        lambda: source.open_blob(_descriptor(blob)),
        lambda: source.tail(_descriptor(blob), 8),
    ):
        with pytest.raises(block.DiskError) as err:
            read()
        assert err.value.line() == (
            f"root=bootc-live:block:LABEL=images:/layout: /layout/blobs/sha256/{blob.name} is a "
            "link that leads off the disk's filesystem; copy the layout with its blobs as "
            "files (cp -rL)"
        )
    (layout / "index.json").unlink()
    (layout / "index.json").symlink_to(outside / "index.json")
    with pytest.raises(block.DiskError, match=r"index\.json is a link that leads off"):
        source.index_json()
    source.close()
    assert disk.let_go()


def test_a_layout_file_that_cannot_be_read_is_said_so(disk: FakeDisk) -> None:
    # A blob that is a directory or a loop of links: one line naming it, not an internal
    # error (IsADirectoryError) or a blob said to be missing.
    layout = disk.mountpoint / "layout"
    build_layout(layout, [layer_tar([f("hello", b"hi")])], tag="t")
    blobs = sorted((layout / "blobs" / "sha256").iterdir())
    blobs[0].unlink()
    blobs[0].mkdir()
    blobs[1].unlink()
    blobs[1].symlink_to(blobs[1].name)
    source = block.open_disk("LABEL=images", "/layout", 5, print)
    for blob, error in ((blobs[0], "Is a directory"), (blobs[1], "Too many levels of symbolic")):
        with pytest.raises(block.DiskError) as err:
            source.open_blob(Descriptor("application/octet-stream", f"sha256:{blob.name}", 2))
        assert err.value.line().startswith(
            f"root=bootc-live:block:LABEL=images:/layout: /layout/blobs/sha256/{blob.name} "
            f"could not be read: {error}"
        )
    source.close()
    assert disk.let_go()


def test_a_filesystem_that_does_not_mount_is_one_line(disk: FakeDisk) -> None:
    disk.refuse = "mount: /run/bootc-live/disk: wrong fs type, bad option, bad superblock."
    with pytest.raises(block.DiskError) as err:
        block.open_disk("LABEL=images", "/root.oci", 5, print)
    assert err.value.line().startswith(
        "root=bootc-live:block:LABEL=images: /dev/vdz could not be mounted read-only: "
        f"{disk.refuse[:-1]}; it must be a filesystem this initramfs mounts"
    )
    assert [argv[0] for argv in disk.calls] == ["mount"]  # nothing mounted, nothing to unmount
    assert disk.let_go()


def test_a_stop_signal_during_the_mount_still_lets_the_disk_go(disk: FakeDisk) -> None:
    # mount(2) cannot be interrupted: a signal that lands while mount(8) runs finds the
    # filesystem mounted.
    disk.stop_after_mount = True
    with pytest.raises(Stopped):
        block.open_disk("LABEL=images", "/root.oci", 5, print)
    assert disk.calls[-1] == ["umount", str(disk.mountpoint)] and disk.let_go()


# Run by the test below in a private mount namespace: open_disk on a real loop device.
CHILD = r"""
import json, sys
from bootc_live.runtime import block, errors
device, block.MOUNTPOINT = sys.argv[1], sys.argv[2]
out = {}
try:
    source = block.open_disk(device, "/images/root.oci", 5, lambda _: None)
    out["read_only_while_mounted"] = block.read_only_flag(device)
    out["index_json"] = len(source.index_json())
    source.close()
except errors.BootcLiveError as err:
    out["error"] = err.line()
out["read_only_after"] = block.read_only_flag(device)
out["mounted_after"] = block.mounts.is_mounted(block.MOUNTPOINT)
print(json.dumps(out))
"""


@pytest.mark.parametrize("dirty", [False, True])
def test_a_real_disk_is_never_written_not_even_by_a_journal_replay(
    dirty: bool, tmp_path: Path
) -> None:
    # The kernel replays an ext4 journal even for a read-only mount (as for a USB stick pulled
    # while mounted), unless the device itself is read-only: open_disk makes it so while it is
    # mounted, and then as it was. Judged by the image's bytes, on a real loop device.
    need(os.geteuid() == 0, "loop devices and mount namespaces need root")
    for tool in ("mkfs.ext4", "debugfs", "losetup", "unshare"):
        need(shutil.which(tool) is not None, f"needs {tool}")
    layout = tmp_path / "layout"
    build_layout(layout, [layer_tar([f("hello", b"hi")])], tag="t")
    (tmp_path / "tree" / "images").mkdir(parents=True)
    archive = tmp_path / "tree" / "images" / "root.oci"
    subprocess.run(["tar", "-C", str(layout), "-cf", str(archive), "."], check=True)
    image = tmp_path / "disk.img"
    with open(image, "wb") as out:
        out.truncate(16 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-d", str(tmp_path / "tree"), str(image)], check=True)
    if dirty:
        argv = ["debugfs", "-w", "-R", "feature needs_recovery", str(image)]
        subprocess.run(argv, check=True, capture_output=True)
    before = hashlib.sha256(image.read_bytes()).hexdigest()
    loop = subprocess.run(
        ["losetup", "--find", "--show", str(image)], check=True, capture_output=True, text=True
    ).stdout.strip()
    try:
        mountpoint = tmp_path / "mnt"
        child = in_private_namespace(CHILD, loop, str(mountpoint))
    finally:
        subprocess.run(["losetup", "--detach", loop], check=True)
    assert child.returncode == 0, child.stderr
    seen = json.loads(child.stdout)
    assert seen["read_only_after"] is False and seen["mounted_after"] is False, seen
    if dirty:
        assert seen["error"].startswith(
            f"root=bootc-live:block:{loop}: {loop} could not be mounted read-only: "
        ), seen
        assert "clean: one left with a journal to replay" in seen["error"], seen
    else:
        assert seen["read_only_while_mounted"] is True and seen["index_json"] > 0, seen
    assert hashlib.sha256(image.read_bytes()).hexdigest() == before


# Run by the test below in a private mount namespace: each image on a damaged real disk.
DAMAGED_CHILD = r"""
import json, sys
from bootc_live.runtime import block, errors
from bootc_live.runtime.blobs import Descriptor
device, block.MOUNTPOINT, digest = sys.argv[1], sys.argv[2], sys.argv[3]
out = {}
for path in ("/layout", "/root.oci"):
    try:
        source = block.open_disk(device, path, 5, lambda _: None)
        try:
            with source.open_blob(Descriptor("x", f"sha256:{digest}", 4 << 20)) as blob:
                while blob.read(1 << 16):
                    pass
        finally:
            source.close()
    except errors.BootcLiveError as err:
        out[path] = err.line()
out["read_only_after"] = block.read_only_flag(device)
out["mounted_after"] = block.mounts.is_mounted(block.MOUNTPOINT)
print(json.dumps(out))
"""


def test_a_damaged_disk_is_one_line_naming_the_file_not_an_internal_error(
    tmp_path: Path,
) -> None:
    # A disk whose filesystem breaks in the middle of a file (an extent block gone bad): the
    # kernel answers reads with EIO, which stopped the boot as an "internal error".
    need(os.geteuid() == 0, "loop devices and mount namespaces need root")
    for tool in ("mkfs.ext4", "debugfs", "losetup", "unshare"):
        need(shutil.which(tool) is not None, f"needs {tool}")
    tree = tmp_path / "tree"
    data = os.urandom(4 << 20)
    digest = hashlib.sha256(data).hexdigest()
    (tree / "layout" / "blobs" / "sha256").mkdir(parents=True)
    (tree / "layout" / "blobs" / "sha256" / digest).write_bytes(data)
    (tree / "layout" / "index.json").write_text("{}")
    subprocess.run(
        ["tar", "-C", str(tree / "layout"), "-cf", str(tree / "root.oci"), "."], check=True
    )
    image = tmp_path / "disk.img"
    with open(image, "wb") as out:
        out.truncate(16 << 20)
    # 1 KiB blocks in groups of 1 MiB, each with its own metadata: files of 4 MiB need more
    # extents than an inode holds, so the kernel reads their extent tree from a block.
    mkfs = ["mkfs.ext4", "-q", "-b", "1024", "-g", "1024", "-O", "^flex_bg", "-d", str(tree)]
    subprocess.run([*mkfs, str(image)], check=True)
    for name in (f"/layout/blobs/sha256/{digest}", "/root.oci"):
        argv = ["debugfs", "-R", f"stat {name}", str(image)]
        extents = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
        tree_block = int(extents.split("(ETB0):")[1].split(",")[0])
        with open(image, "r+b") as disk:
            disk.seek(tree_block * 1024)
            disk.write(bytes(1024))
    before = hashlib.sha256(image.read_bytes()).hexdigest()
    loop = subprocess.run(
        ["losetup", "--find", "--show", str(image)], check=True, capture_output=True, text=True
    ).stdout.strip()
    try:
        child = in_private_namespace(DAMAGED_CHILD, loop, str(tmp_path / "mnt"), digest)
    finally:
        subprocess.run(["losetup", "--detach", loop], check=True)
    assert child.returncode == 0, child.stderr
    seen = json.loads(child.stdout)
    hint = f"; {block.UNREADABLE_HINT}"
    assert seen == {
        "/layout": f"root=bootc-live:block:{loop}:/layout: /layout/blobs/sha256/{digest} could "
        f"not be read: Input/output error{hint}",
        "/root.oci": f"root=bootc-live:block:{loop}:/root.oci could not be read: Input/output "
        f"error{hint}",
        "read_only_after": False,
        "mounted_after": False,
    }
    assert hashlib.sha256(image.read_bytes()).hexdigest() == before


def test_a_disk_that_will_not_let_go_is_a_warning_not_a_failed_boot(
    disk: FakeDisk, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The root is made by the time the source closes: a stick pulled by then (its flag can no
    # longer be set back, its filesystem not unmounted) must not fail the boot.
    (disk.mountpoint / "images").mkdir(parents=True)
    build_layout(disk.mountpoint / "images", [layer_tar([f("hello", b"hi")])], tag="t")
    said: list[str] = []
    source = block.open_disk("LABEL=images", "/images", 5, said.append)

    def gone(argv: list[str], **_: object) -> str:
        raise CommandError("umount failed", detail=f"umount: {argv[-1]}: not mounted")

    def no_flag(device: str, value: bool | None = None) -> bool:
        raise OSError(errno.ENODEV, os.strerror(errno.ENODEV))

    monkeypatch.setattr(block, "run", gone)
    monkeypatch.setattr(block, "read_only_flag", no_flag)
    source.close()
    assert said[1:] == [
        f"warning: umount: {disk.mountpoint}: not mounted: the disk's filesystem is detached "
        "instead",
        f"warning: the disk's filesystem stays mounted: umount: {disk.mountpoint}: not mounted",
        "warning: /dev/vdz stays read-only: No such device",
    ]


def in_private_namespace(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Python `code` run with `args` in a private mount namespace, the runtime importable."""
    src = Path(block.__file__).parents[2]
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", sys.executable, "-c", code, *args],
        env={**os.environ, "PYTHONPATH": str(src)},
        capture_output=True,
        text=True,
        timeout=120,
    )
