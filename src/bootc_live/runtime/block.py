"""root=bootc-live:block:DEV:/PATH: the image on a local disk.

The device is waited for under the name udev gives it (/dev/disk/by-label/…, by-uuid,
by-partuuid, or the /dev/… path given), made read-only (so that not even a journal replay
writes to it) and its filesystem mounted read-only at a directory of the runtime's own; the
image is read from there like one inside the initramfs, but never deleted and never through a
link that leaves the disk. Once the root is unpacked, before switch root, the filesystem is
unmounted and the device given its flag back: the machine runs from RAM and the disk is left as
it was found.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import stat
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from typing import BinaryIO

from . import mounts
from .blobs import Descriptor
from .errors import BootcLiveError, ImageError
from .run import CommandError, run
from .sources import ArchiveSource, ImageSource, LayoutSource, blob_path, part_files
from .streams import Reader

MOUNTPOINT = "/run/bootc-live/disk"  # a module global: host-side tests point it elsewhere
BY_TAG = {"LABEL=": "by-label", "UUID=": "by-uuid", "PARTUUID=": "by-partuuid"}
POLL = 0.2  # seconds between looks for the device
# What udev keeps of a label or UUID in its /dev/disk/by-* name (blkid's encoding): the rest,
# a space or a slash say, becomes \xNN.
_PLAIN = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz#+-.:=@_")


class DiskError(BootcLiveError):
    """The disk of root=bootc-live:block:… did not come, or does not hold the image."""


def _kept(c: str) -> bool:
    """Whether blkid keeps the character as it is: a plain one, or a non-ASCII one that is
    valid UTF-8 and no noncharacter (U+FDD0 to U+FDEF, U+FFFF, U+1FFFF …; not U+FFFE)."""
    n = ord(c)
    if n < 128:
        return c in _PLAIN
    return not (0xDC80 <= n <= 0xDCFF or 0xFDD0 <= n <= 0xFDEF or n & 0xFFFF == 0xFFFF)


def udev_name(value: str) -> str:
    """`value` as it appears in a /dev/disk/by-* name: plain characters and non-ASCII ones as
    they are, every other byte (and one that is not UTF-8) as \\xNN."""
    return "".join(
        c if _kept(c) else "".join(f"\\x{b:02x}" for b in c.encode("utf-8", "surrogateescape"))
        for c in value
    )


def unescaped(value: str) -> str:
    """A label as written on the command line, its \\xNN escapes (dracut's way to write a
    space: LABEL=my\\x20disk) turned back into the bytes they stand for."""
    escapes = re.compile(rb"\\x([0-9a-fA-F]{2})")
    raw = escapes.sub(lambda m: bytes([int(m[1], 16)]), value.encode("utf-8", "surrogateescape"))
    return raw.decode("utf-8", "surrogateescape")


def candidates(device: str) -> list[str]:
    """The paths `device` (LABEL=…, UUID=…, PARTUUID=… or /dev/…) may appear under: a UUID as
    written and in lower case (blkid writes most in lower case, FAT's in upper case). A value
    in quotes is the value they hold, as blkid reads a tag."""
    for tag, directory in BY_TAG.items():
        if device.startswith(tag):
            value = device[len(tag) :]
            if len(value) > 2 and value[0] in "\"'" and value[-1] == value[0]:
                value = value[1:-1]  # LABEL="my disk": blkid, findfs and mount(8) drop them
            forms = [unescaped(value)] if tag == "LABEL=" else [value, value.lower(), value.upper()]
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


# The block device's read-only flag (linux/fs.h): set while its filesystem is mounted, so that
# not even the kernel writes to it (a read-only ext4, XFS or btrfs mount still replays a
# journal otherwise).
BLKROSET, BLKROGET = 0x125D, 0x125E


def read_only_flag(device: str, value: bool | None = None) -> bool:
    """The device's read-only flag; with `value`, set to it first."""
    fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if value is not None:
            fcntl.ioctl(fd, BLKROSET, struct.pack("i", int(value)))
        return bool(struct.unpack("i", fcntl.ioctl(fd, BLKROGET, struct.pack("i", 0)))[0])
    finally:
        os.close(fd)


class Disk:
    """The device's filesystem, mounted read-only at `mountpoint` with the device itself made
    read-only; detach() undoes both, whatever part of attach() was done."""

    def __init__(self, found: str, device: str, mountpoint: str, say: Callable[[str], None]):
        self.found = found
        self.device = device
        self.mountpoint = mountpoint
        self.say = say
        self.was_read_only: bool | None = None  # None: the flag is as it was

    def attach(self) -> None:
        try:
            self.was_read_only = read_only_flag(self.found)
            if not self.was_read_only and not read_only_flag(self.found, True):
                raise OSError(errno.EPERM, "the flag did not stay set")
        except OSError as err:
            raise DiskError(
                f"root=bootc-live:block:{self.device}: {self.found} could not be made "
                f"read-only ({err.strerror})",
                "name a disk or partition (a device that takes BLKROSET)",
            ) from None
        os.makedirs(self.mountpoint, mode=0o700, exist_ok=True)
        try:
            run(["mount", "-o", "ro,nosuid,nodev,noexec", self.found, self.mountpoint])
        except CommandError as err:
            raise DiskError(
                f"root=bootc-live:block:{self.device}: {self.found} could not be mounted "
                f"read-only: {err.detail.rstrip('.')}",
                "it must be a filesystem this initramfs mounts (ext4, vfat, iso9660, or one "
                "the image's dracut configuration adds) and clean: one left with a journal to "
                "replay (a disk pulled while mounted) needs mounting read-write once elsewhere, "
                "or fsck; nothing is written to it here",
            ) from None

    def detach(self) -> None:
        """Unmount (a busy filesystem detached instead) and give the device its flag back. A
        disk that will not let go is warned about, never a reason to fail a boot whose root is
        made (a stick pulled once the image was read, say)."""
        try:
            if mounts.is_mounted(self.mountpoint):
                try:
                    run(["umount", self.mountpoint])
                except CommandError as err:
                    self.say(f"warning: {err.detail}: the disk's filesystem is detached instead")
                    run(["umount", "--lazy", self.mountpoint])
        except CommandError as err:
            self.say(f"warning: the disk's filesystem stays mounted: {err.detail}")
        finally:
            if self.was_read_only is False:
                try:
                    read_only_flag(self.found, False)
                except OSError as err:
                    self.say(f"warning: {self.found} stays read-only: {err.strerror}")
                self.was_read_only = None


def inside(top: str, path: str) -> bool:
    """Whether `path`, its links followed, stays under the directory `top`."""
    real_top = os.path.realpath(top)
    return os.path.commonpath([os.path.realpath(path), real_top]) == real_top


UNREADABLE_HINT = (
    "check the disk where it is attached (fsck) and the image on it: its files must be "
    "regular files on that filesystem"
)


def unreadable(shown: str, err: OSError) -> DiskError:
    """The file `shown` names could not be opened or read (a damaged disk or filesystem, one
    pulled, a loop of links, a blob that is a directory or a device): said so, not as an
    internal error or as a file that is missing."""
    return DiskError(f"{shown} could not be read: {err.strerror}", UNREADABLE_HINT)


class _DiskFile(Reader):
    """A file on the disk, its read errors said by `fail`."""

    def __init__(self, raw: BinaryIO, fail: Callable[[OSError], DiskError]) -> None:
        self._raw = raw
        self._fail = fail

    def read(self, n: int = -1) -> bytes:
        try:
            return self._raw.read(n)
        except OSError as err:
            raise self._fail(err) from None

    def close(self) -> None:
        self._raw.close()


class DiskSource:
    """The archive or layout at PATH on the mounted disk, read where it lies (nothing on it is
    deleted, no link followed off it); close() lets the disk go."""

    names_one_image = False

    def __init__(self, inner: ImageSource, disk: Disk, path: str) -> None:
        self.inner = inner
        self.disk = disk
        self.path = path
        self.description = f"{disk.device}:{path}"

    def _on_the_disk(self, names: Sequence[str]) -> None:
        """A layout's files are read through their links: refuse one that leaves the disk."""
        for name in names:
            if not inside(self.disk.mountpoint, name):
                shown = name[len(self.disk.mountpoint) :]
                raise DiskError(
                    f"root=bootc-live:block:{self.description}: {shown} is a link that leads "
                    "off the disk's filesystem",
                    "copy the layout with its blobs as files (cp -rL)",
                )

    def _layout_files(self, name: str) -> None:
        """A layout's file `name` (or its parts), refused if a link leads it off the disk (an
        archive is one file: PATH, checked when it was opened)."""
        if isinstance(self.inner, LayoutSource):
            whole = os.path.join(self.inner.path, name)
            with contextlib.suppress(FileNotFoundError):  # in parts, or missing: said next
                os.stat(whole)  # a corrupt inode or a loop of links: not "missing"
            self._on_the_disk(part_files(whole))

    @contextlib.contextmanager
    def _reading(self, name: str) -> Iterator[Callable[[OSError], DiskError]]:
        """Around the opening of the layout's file `name` (of the archive, for an archive): an
        OSError (a damaged disk, say) raised as one line naming it, by the function yielded
        (which the file's stream uses for its reads)."""
        layout = isinstance(self.inner, LayoutSource)
        where = os.path.join(self.path, name) if layout else self.path

        def fail(err: OSError) -> DiskError:
            return unreadable(f"root=bootc-live:block:{self.description}: {where}", err)

        try:
            yield fail
        except OSError as err:
            raise fail(err) from None

    def index_json(self) -> bytes:
        with self._reading("index.json"):
            self._layout_files("index.json")
            return self.inner.index_json()

    def open_blob(self, desc: Descriptor) -> BinaryIO:
        with self._reading(blob_path(desc.digest)) as fail:
            self._layout_files(blob_path(desc.digest))
            return _DiskFile(self.inner.open_blob(desc), fail)  # type: ignore[return-value]

    def tail(self, desc: Descriptor, n: int) -> bytes:
        with self._reading(blob_path(desc.digest)):
            self._layout_files(blob_path(desc.digest))
            return self.inner.tail(desc, n)

    def prefetch(self, layers: Sequence[Descriptor]) -> None:
        self.inner.prefetch(layers)

    def release(self, desc: Descriptor) -> None:
        pass  # the disk is the user's: nothing on it is deleted

    def close(self) -> None:
        try:
            self.inner.close()
        finally:
            self.disk.detach()


def open_disk(device: str, path: str, seconds: float, say: Callable[[str], None]) -> DiskSource:
    """Wait for the device, mount it read-only and open the image at `path` on it."""
    found = wait_for(device, seconds, say)
    disk = Disk(found, device, MOUNTPOINT, say)
    try:
        disk.attach()
        where = os.path.join(MOUNTPOINT, path.lstrip("/"))
        shown = f"root=bootc-live:block:{device}:{path}"
        if not inside(MOUNTPOINT, where):
            raise DiskError(
                f"{shown} leads out of the disk's filesystem (a symbolic link)",
                "name the image file or layout directory itself",
            )
        inner: ImageSource
        try:
            mode = os.stat(where).st_mode
            if stat.S_ISDIR(mode):
                inner = LayoutSource(where)
            elif stat.S_ISREG(mode):
                inner = ArchiveSource(where)
            else:
                raise DiskError(
                    f"{shown}: neither a file nor a directory (a pipe, socket or device)",
                    "give the path of the oci-archive file or OCI layout directory",
                )
        except (FileNotFoundError, NotADirectoryError):
            raise DiskError(
                f"{shown}: no such file or directory on the disk",
                "give the path of the oci-archive file or OCI layout directory on that "
                "filesystem, from its top",
            ) from None
        except OSError as err:  # a damaged disk, a loop of links: not "no such file"
            raise unreadable(shown, err) from None
        except ImageError as err:  # said of the mount's path: say it of the disk's
            raise ImageError(str(err).replace(where, f"{device}:{path}"), err.hint) from None
        kind = "oci" if isinstance(inner, LayoutSource) else "oci-archive"
        inner.description = f"{kind}:{device}:{path}"
        named = device if device == found else f"{device} ({found})"
        say(f"reading the image from {named}, mounted read-only, at {path}")
        return DiskSource(inner, disk, path)
    except BaseException:
        disk.detach()
        raise
