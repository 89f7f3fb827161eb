"""root=bootc-live:block:DEV:/PATH: the image on a local disk.

The device is waited for under the name udev gives it (/dev/disk/by-label/…, by-uuid,
by-partuuid, or the /dev/… path given), its filesystem is mounted read-only at a directory of
the runtime's own, the image is read from there like one inside the initramfs (never deleted),
and the filesystem is unmounted once the root is unpacked, before switch root: the machine runs
from RAM and the disk is left as it was found.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Sequence
from typing import BinaryIO

from .blobs import Descriptor
from .errors import BootcLiveError
from .run import CommandError, run
from .sources import ArchiveSource, ImageSource, LayoutSource

MOUNTPOINT = "/run/bootc-live/disk"  # a module global: host-side tests point it elsewhere
BY_TAG = {"LABEL=": "by-label", "UUID=": "by-uuid", "PARTUUID=": "by-partuuid"}
POLL = 0.2  # seconds between looks for the device
# What udev keeps of a label or UUID in its /dev/disk/by-* name (blkid's encoding): the rest,
# a space or a slash say, becomes \xNN.
_PLAIN = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz#+-.:=@_")


class DiskError(BootcLiveError):
    """The disk of root=bootc-live:block:… did not come, or does not hold the image."""


def udev_name(value: str) -> str:
    """`value` as it appears in a /dev/disk/by-* name: plain characters and non-ASCII ones as
    they are, every other byte as \\xNN."""
    return "".join(
        c if c in _PLAIN or ord(c) > 127 else "".join(f"\\x{b:02x}" for b in c.encode())
        for c in value
    )


def candidates(device: str) -> list[str]:
    """The paths `device` (LABEL=…, UUID=…, PARTUUID=… or /dev/…) may appear under: a UUID as
    written and in lower case (blkid writes most in lower case, FAT's in upper case)."""
    for tag, directory in BY_TAG.items():
        if device.startswith(tag):
            value = device[len(tag) :]
            forms = [value] if tag == "LABEL=" else [value, value.lower(), value.upper()]
            names = dict.fromkeys(f"/dev/disk/{directory}/{udev_name(v)}" for v in forms)
            return list(names)
    return [device]


def wait_for(
    device: str,
    seconds: float,
    say: Callable[[str], None],
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """The block device `device` names, once it is there (udev makes the by-* names as it finds
    filesystems); DiskError after `seconds` without it."""
    paths = candidates(device)
    deadline = clock() + seconds
    said = False
    while True:
        for path in paths:
            try:
                mode = os.stat(path).st_mode
            except OSError:
                continue
            if not stat.S_ISBLK(mode):
                raise DiskError(
                    f"root=bootc-live:block:{device}: {path} is not a block device",
                    "name a disk or partition: LABEL=, UUID=, PARTUUID= or /dev/…",
                )
            return os.path.realpath(path)
        if clock() >= deadline:
            raise DiskError(
                f"root=bootc-live:block:{device}: no such block device appeared in {seconds:g} s",
                "check the label or UUID with blkid where the disk is attached (and that this "
                "initramfs has its driver); a slow disk needs bootc.timeout=SECONDS",
            )
        if not said:
            say(f"waiting up to {seconds:g} s for the disk {device}")
            said = True
        sleep(POLL)


def mount(found: str, device: str, mountpoint: str) -> None:
    """The filesystem on `found` (what `device` named) read-only at `mountpoint`, its type as
    mount finds it."""
    os.makedirs(mountpoint, mode=0o700, exist_ok=True)
    try:
        run(["mount", "-o", "ro,nosuid,nodev,noexec", found, mountpoint])
    except CommandError as err:
        raise DiskError(
            f"root=bootc-live:block:{device}: {found} could not be mounted read-only: "
            f"{err.detail.rstrip('.')}",
            "the image must be on a filesystem this initramfs's kernel mounts (ext4, vfat, "
            "iso9660, or one the image's dracut configuration adds) and not need repair",
        ) from None


def unmount(mountpoint: str, say: Callable[[str], None]) -> None:
    """Unmount; when the filesystem is busy, detach it (it goes once nothing holds it)."""
    try:
        run(["umount", mountpoint])
    except CommandError as err:
        say(f"warning: {err.detail}: the disk's filesystem is detached instead")
        run(["umount", "--lazy", mountpoint])


def image_path(mountpoint: str, path: str, device: str) -> str:
    """PATH on the mounted filesystem, its links followed inside it only."""
    top = os.path.realpath(mountpoint)
    inside = os.path.realpath(os.path.join(top, path.lstrip("/")))
    if os.path.commonpath([inside, top]) != top:
        raise DiskError(
            f"root=bootc-live:block:{device}:{path} leads out of the disk's filesystem "
            "(a symbolic link)",
            "name the image file or layout directory itself",
        )
    return inside


class DiskSource:
    """The archive or layout at PATH on the mounted disk; close() unmounts it."""

    names_one_image = False

    def __init__(
        self, inner: ImageSource, mountpoint: str, shown: str, say: Callable[[str], None]
    ) -> None:
        self.inner = inner
        self.mountpoint = mountpoint
        self.description = shown
        self.say = say

    def index_json(self) -> bytes:
        return self.inner.index_json()

    def open_blob(self, desc: Descriptor) -> BinaryIO:
        return self.inner.open_blob(desc)

    def tail(self, desc: Descriptor, n: int) -> bytes:
        return self.inner.tail(desc, n)

    def prefetch(self, layers: Sequence[Descriptor]) -> None:
        self.inner.prefetch(layers)

    def release(self, desc: Descriptor) -> None:
        pass  # the disk is the user's: nothing on it is deleted

    def close(self) -> None:
        try:
            self.inner.close()
        finally:
            unmount(self.mountpoint, self.say)


def open_disk(device: str, path: str, seconds: float, say: Callable[[str], None]) -> DiskSource:
    """Wait for the device, mount it and open the image at `path` on it."""
    found = wait_for(device, seconds, say)
    mountpoint = MOUNTPOINT
    mount(found, device, mountpoint)
    try:
        where = image_path(mountpoint, path, device)
        inner: ImageSource
        if os.path.isdir(where):
            inner = LayoutSource(where)
        elif os.path.isfile(where):
            inner = ArchiveSource(where)
        else:
            raise DiskError(
                f"root=bootc-live:block:{device}:{path}: no such file or directory on the disk",
                "give the path of the oci-archive file or OCI layout directory on that "
                "filesystem, from its top",
            )
        named = device if device == found else f"{device} ({found})"
        say(f"reading the image from {named}, mounted read-only, at {path}")
        return DiskSource(inner, mountpoint, f"{device}:{path} ({inner.description})", say)
    except BaseException:
        unmount(mountpoint, say)
        raise
