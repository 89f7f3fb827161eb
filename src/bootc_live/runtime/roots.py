"""Where the live root is kept: a tmpfs, a filesystem on zram, or a reproducible EROFS image.

`make(mode, …)` gives the `Root` a RootMode asks for, as a context manager: `root.target` is the
directory the image is unpacked into, `root.mount()` mounts the final layout at $NEWROOT
(read-only root, /etc and /var writable unless told otherwise) and says what the root is (a
`RootFacts`); an exception anywhere in the block undoes everything, so that nothing partial is
ever booted.

- tmpfs (default): the unpacked tree is the root; read-only by a bind remount.
- zram: a compressed RAM block device with ext4 on it, the image unpacked straight onto it.
- EROFS: the image is unpacked into a staging tmpfs, packed by mkfs.erofs into a reproducible
  image (null UUID, every timestamp at the epoch), the staging tree is freed, and the image is
  mounted read-only from a loop device; /etc and /var are overlays with a tmpfs upper.
- packed (`PackedRoot`, made by `packed_root`, not by a RootMode): the squashfs or EROFS image
  `bootc-live build` made, obtained whole (packed.py), mounted like the EROFS image; with
  bootc.zram the overlays' uppers are on a zram device made as the zram mode's (`ZramDevice`).
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any, Protocol

from . import memory, mounts, packed
from .cmdline import TMPFS, RootMode
from .errors import BootcLiveError, SpaceError
from .mounts import MountPlan
from .run import CommandError, run
from .sources import part_files

WORKDIR = "/run/bootc-live"
MIB = 1 << 20
NULL_UUID = "00000000-0000-0000-0000-000000000000"
# No journal (nothing survives a reboot anyway), no reserved blocks, 4 KiB blocks (as a
# tmpfs's pages, which the device is sized from; mke2fs takes 1 KiB below 512 MiB), an inode
# per block (every file takes a block at least: the inodes never run out before the
# blocks, as they did at one per 8 KiB with many small files; unused inode tables are
# zero pages, which zram stores for free), discard at mount so that deleted files give
# their memory back.
MKFS_EXT4 = [
    "mkfs.ext4", "-q", "-F", "-m", "0", "-b", "4096", "-i", "4096", "-O", "^has_journal",
    "-L", "bootc-live", "-E", "nodiscard",
]  # fmt: skip
# Module globals: host-side tests point them at directories of their own.
SYS_BLOCK = "/sys/block"
ZRAM_CONTROL = "/sys/class/zram-control"


class RootError(BootcLiveError):
    """The root filesystem could not be made or mounted."""


def mkfs_erofs_argv(image: str, tree: str, compress: str | None) -> list[str]:
    """mkfs.erofs for a reproducible image: the same tree always gives the same bytes.

    Shared by the runtime and `bootc-live erofs` on the host, so that both compute the same
    sha256 with the same mkfs.erofs.
    """
    argv = ["mkfs.erofs", "-T0", f"-U{NULL_UUID}"]
    if compress:
        argv.append(f"-z{compress}")
    return [*argv, image, tree]


@dataclass(frozen=True)
class Erofs:
    """An EROFS image made by `make_erofs`."""

    path: str
    sha256: str  # "sha256:HEX"
    size: int
    mkfs_version: str  # the sha256 depends on it


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                return "sha256:" + digest.hexdigest()
            digest.update(chunk)


MKFS_EROFS_MISSING = "install erofs-utils where the initramfs is built (bootc-live-erofs module)"


def check_compressor(compress: str | None) -> None:
    """Refuse, before any work, a compressor the installed mkfs.erofs does not offer."""
    if not compress:
        return
    offered = erofs_compressors()
    if compress not in offered:
        raise RootError(
            f"bootc.live.erofs.compress={compress}: this mkfs.erofs offers "
            f"{', '.join(offered) or 'no compression'}",
            "pick one of those",
        )


def erofs_compressors() -> list[str]:
    """The compressors the installed mkfs.erofs offers, as its --help lists them: on one line
    up to erofs-utils 1.7 ("Available compressors are: lz4hc, lz4"), from 1.8 one a line under
    -z's description, each followed by its options' ranges ("[,level=<0-12>]")."""
    usage = run(["mkfs.erofs", "--help"], capture=True, hint=MKFS_EROFS_MISSING)
    text = usage.stdout + usage.stderr
    listed = re.search(r"Available compressors are:([^\n]*)", text)
    if listed:
        return listed.group(1).replace(",", " ").split()
    _, found, after = text.partition("supported compressors and their option ranges are:\n")
    names = []
    for line in after.splitlines() if found else []:
        if line.startswith(" -"):  # the next option
            break
        if re.fullmatch(r"\s+[\w-]+", line):  # not a range, nor a note
            names.append(line.strip())
    return names


def make_erofs(tree: str, image: str, compress: str | None) -> Erofs:
    """Pack `tree` into the EROFS file `image` (check_compressor first, before the work)."""
    argv = mkfs_erofs_argv(image, tree, compress)
    try:
        out = run(argv, capture=True, hint=MKFS_EROFS_MISSING).stdout
    except CommandError as err:
        if os.strerror(errno.ENOSPC) not in err.detail:
            raise
        written = os.path.getsize(image) if os.path.exists(image) else 0
        raise SpaceError(
            f"no space left for the EROFS image of the root ({written >> 20} MiB written)",
            "free space where it is written",
        ) from None
    # Its banner: "mkfs.erofs 1.5", or "mkfs.erofs (erofs-utils) 1.7.1" in later versions.
    m = re.search(r"mkfs\.erofs(?:\s+\(erofs-utils\))?\s+(\S+)", out)
    return Erofs(image, sha256_file(image), os.path.getsize(image), m.group(1) if m else "unknown")


def usable_kinds() -> tuple[str, ...]:
    """The root modes this initramfs can make: zram's needs mkfs.ext4, EROFS's mkfs.erofs (the
    bootc-live-zram and bootc-live-erofs modules, left out where the image lacks them)."""
    tools = {"zram": "mkfs.ext4", "erofs": "mkfs.erofs"}
    return ("tmpfs", *(kind for kind, tool in tools.items() if shutil.which(tool)))


PROC_FILESYSTEMS = "/proc/filesystems"
SYS_MODULE = "/sys/module"  # a built-in driver with parameters (zram, loop) is there too


def modprobe(*names: str, hint: str) -> None:
    """Load the modules; one that cannot be loaded is fine if its feature is there already
    (built into the kernel, with no /lib/modules in the initramfs)."""
    for name in names:
        try:
            run(["modprobe", name], hint=hint)
        except CommandError:
            if not _built_in(name):
                raise


def _built_in(name: str) -> bool:
    if os.path.isdir(os.path.join(SYS_MODULE, name)):
        return True
    try:
        with open(PROC_FILESYSTEMS, encoding="ascii", errors="replace") as f:
            return any(line.split()[-1:] == [name] for line in f)
    except OSError:
        return False


@dataclass(frozen=True)
class RootFacts:
    """What a root is once mounted: status.json's "root" (the subclasses add their figures)."""

    mode: str

    def describe(self) -> str:
        return self.mode

    def status(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ZramFacts(RootFacts):
    device: str  # /dev/zramN
    algorithm: str  # the compressor the kernel used
    stored: int  # bytes of data on the device (-1: the kernel did not say)
    memory: int  # bytes of RAM the device takes for them (-1: the kernel did not say)

    def describe(self) -> str:
        if self.stored < 0:
            return f"zram {self.device} ({self.algorithm})"
        return (
            f"zram {self.device} ({self.algorithm}): {self.stored / MIB:.1f} MiB stored in "
            f"{self.memory / MIB:.1f} MiB of RAM"
        )


@dataclass(frozen=True)
class ErofsFacts(RootFacts):
    sha256: str  # "sha256:HEX" of the image
    bytes: int
    compress: str  # "none" or the compressor
    mkfs_erofs: str  # its version: the sha256 depends on it

    def describe(self) -> str:
        return (
            f"EROFS image {self.sha256} ({self.bytes / MIB:.1f} MiB, compression "
            f"{self.compress}, mkfs.erofs {self.mkfs_erofs})"
        )


@dataclass(frozen=True)
class PackedFacts(RootFacts):
    sha256: str  # "sha256:HEX" of the filesystem image, as pinned
    bytes: int
    format: str  # "squashfs" or "erofs"
    compressor: str
    image: str | None  # bootc.packed.image: the manifest digest it was made from
    zram: ZramFacts | None = None  # bootc.zram: the device the overlays' uppers are on

    def describe(self) -> str:
        uppers = f"; uppers on {self.zram.describe()}" if self.zram else ""
        return (
            f"packed root {self.sha256} ({self.bytes / MIB:.1f} MiB, {self.format} "
            f"{self.compressor}){uppers}"
        )

    def status(self) -> dict[str, Any]:
        fields = asdict(self)
        if self.zram is None:
            del fields["zram"]
        else:
            del fields["zram"]["mode"]
        return fields


class Say(Protocol):
    """What a root reports through: a sentence, and a state change (status.Report)."""

    def say(self, message: str) -> None: ...

    def state(self, state: str, **fields: Any) -> None: ...


class Root:
    """The default: a tmpfs that holds the unpacked tree, which becomes the root."""

    def __init__(self, newroot: str, size: int, plan: MountPlan, budget: int = 0) -> None:
        zram = " or use bootc.zram=" if "zram" in usable_kinds() else ""  # mkfs.ext4 is there
        self.full_hint = f"the image is larger than the memory given to it: add RAM{zram}"
        self.newroot = newroot
        self.size = size  # the tmpfs's limit once booted
        # While the image is unpacked: what the planner gave it (0: `size`). The unpack then
        # stops at "the root filesystem is full" rather than the machine out of memory, if
        # the image is larger than planned (the kernel's tmpfs.rst: an oversized tmpfs
        # deadlocks, the OOM killer cannot free its pages).
        self.budget = min(budget, size) if budget > 0 else size
        self.plan = plan
        self.target = newroot  # where the image is unpacked, once prepare() has run

    def prepare(self) -> str:
        """Make the empty filesystem the image is unpacked into; its path."""
        mounts.mount_tmpfs(self.newroot, self.budget, self.plan.rootflags, tree=True)
        limits = [
            f for f in self.plan.rootflags if f.startswith(("size=", "nr_blocks=", "nr_inodes="))
        ]
        if limits:  # the user's limit, not the machine's memory, is what a full root meets
            self.full_hint = (
                f"rootflags={','.join(limits)} limits the root's tmpfs: raise it, or drop it "
                "(the root is then sized to the memory)"
            )
        return self.newroot

    def mount(self, report: Say) -> RootFacts:
        """Mount the final layout at newroot, the image unpacked; what the root is."""
        sized = any(f.startswith(("size=", "nr_blocks=")) for f in self.plan.rootflags)
        inodes = not any(f.startswith("nr_inodes=") for f in self.plan.rootflags)
        if self.budget < self.size and not sized:  # the live system's writes have the rest
            # (rootflags=size= and nr_inodes= were the user's)
            mounts.resize_tmpfs(self.newroot, self.size, tree=inodes)
        mounts.finish_root(self.newroot, self.plan)
        return RootFacts("tmpfs")

    def undo(self) -> list[str]:
        """Unmount and free everything this root made, whatever step it had reached: every
        step is tried, whatever the others did; what could not be undone."""
        return _attempt(lambda: _unmount(self.newroot))


class ZramDevice:
    """A zram device with ext4 on it, mounted: what the zram mode keeps the root on, and a
    packed root its overlays' uppers."""

    def __init__(self, size: int, algorithm: str | None) -> None:
        self.size = size
        self.algorithm = algorithm
        self.device = ""  # /dev/zramN, once one was taken

    def make(self, target: str, flags: tuple[str, ...] = ()) -> None:
        """Take a free device, size it, make ext4 on it and mount that at `target`."""
        modprobe(
            "zram",
            "ext4",
            hint="the initramfs lacks zram (the bootc-live-zram module: rebuild it with "
            "bootc-live build)",
        )
        sysfs = self._free_device()
        self.device = "/dev/" + os.path.basename(sysfs)
        if self.algorithm:
            self._set_algorithm(sysfs, self.algorithm)
        try:
            with open(os.path.join(sysfs, "disksize"), "w", encoding="ascii") as f:
                f.write(str(self.size))
        except OSError as err:  # ENOMEM: no room for the table of a device that large
            raise RootError(
                f"the kernel refused a zram device of {self.size >> 20} MiB ({err.strerror})",
                "give bootc.zram= a percentage of RAM, or a size such as 8G",
            ) from None
        run(
            [
                *MKFS_EXT4,
                self.device,
            ],
            hint="mkfs.ext4 must be in the initramfs (e2fsprogs where the initramfs is built)",
        )
        options = ["discard", *flags]
        argv = ["mount", "-t", "ext4", "-o", ",".join(options), self.device, target]
        run(argv, hint=mounts.flags_hint(flags))

    def facts(self, mode: str) -> ZramFacts:
        """Its figures now (written data synced to the device first)."""
        os.sync()  # what was written leaves the page cache for the device: its figures become true
        sysfs = self._sysfs()
        try:
            algorithm = _selected(_read(os.path.join(sysfs, "comp_algorithm")))
            # mm_stat: data stored, its compressed size, the RAM the device takes, …
            stored, _, used = (int(n) for n in _read(os.path.join(sysfs, "mm_stat")).split()[:3])
        except (OSError, ValueError):  # figures only: the root is as good without them
            algorithm, stored, used = "unknown", -1, -1
        return ZramFacts(mode, self.device, algorithm, stored, used)

    def undo(self) -> list[str]:
        """Give the device back, if one was taken (what is on it unmounted first)."""
        return _attempt(self._reset) if self.device else []

    def _reset(self) -> None:
        with open(os.path.join(self._sysfs(), "reset"), "w", encoding="ascii") as f:
            f.write("1")  # give the memory back

    def _sysfs(self) -> str:
        return os.path.join(SYS_BLOCK, os.path.basename(self.device))

    @staticmethod
    def _free_device() -> str:
        """An unused zram device: zram0 when the module just made it, else a new one."""
        for name in sorted(os.listdir(SYS_BLOCK)):
            if name.startswith("zram"):
                sysfs = os.path.join(SYS_BLOCK, name)
                if _read(os.path.join(sysfs, "disksize")) == "0":
                    return sysfs
        try:
            number = _read(os.path.join(ZRAM_CONTROL, "hot_add"))
        except OSError as err:
            raise RootError(f"cannot add a zram device: {err}", "is zram in use already?") from None
        return os.path.join(SYS_BLOCK, f"zram{number}")

    @staticmethod
    def _set_algorithm(sysfs: str, algorithm: str) -> None:
        path = os.path.join(sysfs, "comp_algorithm")
        offered = _read(path).replace("[", "").replace("]", "").split()
        if algorithm not in offered:
            raise RootError(
                f"bootc.zram.algorithm={algorithm}: this kernel's zram offers {', '.join(offered)}",
                "pick one of those",
            )
        try:
            with open(path, "w", encoding="ascii") as f:
                f.write(algorithm)
        except OSError as err:
            raise RootError(
                f"bootc.zram.algorithm={algorithm}: the kernel refused it ({err.strerror})",
                f"pick another of {', '.join(offered)}, or add its crypto module to the initramfs",
            ) from None


class ZramRoot(Root):
    """ext4 on a zram device: the root stays compressed in RAM."""

    def __init__(self, newroot: str, size: int, algorithm: str | None, plan: MountPlan) -> None:
        super().__init__(newroot, size, plan)
        self.zram = ZramDevice(size, algorithm)
        self.full_hint = (
            f"the zram device ({size >> 20} MiB) is too small for the image: "
            "give bootc.zram= a larger size"
        )

    def prepare(self) -> str:
        self.zram.make(self.newroot, self.plan.rootflags)
        return self.newroot

    def mount(self, report: Say) -> RootFacts:
        facts = self.zram.facts("zram")
        mounts.finish_root(self.newroot, self.plan)
        return facts

    def undo(self) -> list[str]:
        return super().undo() + self.zram.undo()


class ErofsRoot(Root):
    """A reproducible EROFS image of the unpacked tree, read-only; /etc and /var overlays."""

    def __init__(
        self,
        newroot: str,
        size: int,
        compress: str | None,
        plan: MountPlan,
        workdir: str,
        budget: int = 0,
    ) -> None:
        super().__init__(newroot, size, plan, budget)
        self.compress = compress
        self.tree = os.path.join(workdir, "tree")  # staging: the unpacked tree, freed later
        self.rw = os.path.join(workdir, "live")  # root.erofs and the overlays' upper dirs
        self.image = os.path.join(self.rw, "root.erofs")

    def prepare(self) -> str:
        modprobe(
            "loop",
            "erofs",
            "overlay",
            hint="the initramfs lacks EROFS support (the bootc-live-erofs module: rebuild it "
            "with bootc-live build)",
        )
        check_compressor(self.compress)  # before the work, not after it
        os.makedirs(self.tree, exist_ok=True)
        mounts.mount_tmpfs(self.tree, self.budget, tree=True)  # freed once packed: never resized
        return self.tree

    def mount(self, report: Say) -> RootFacts:
        os.makedirs(self.rw, exist_ok=True)
        # While the tree is there, the image may take what memory is left (as a packed root
        # stored: the planner's reserve aside): one larger than planned (a sparse file's holes,
        # which mkfs.erofs writes out) then stops at "no space", not at the OOM killer.
        room = memory.Memory.read().available - memory.RESERVE
        mounts.mount_tmpfs(self.rw, min(max(room, MIB), self.size))
        report.state("packing")
        report.say(
            "packing the root into an EROFS image"
            + (f" ({self.compress})" if self.compress else "")
        )
        made = make_erofs(self.tree, self.image, self.compress)
        mounts.umount(self.tree)  # the unpacked tree is no longer needed: its memory comes back
        mounts.resize_tmpfs(self.rw, self.size)  # the overlays' uppers: the live system's writes
        options = ",".join(["loop", "ro", *self.plan.rootflags])
        argv = ["mount", "-t", "erofs", "-o", options, self.image, self.newroot]
        run(argv, hint=mounts.flags_hint(self.plan.rootflags) or EROFS_MOUNT_HINT)
        overlay_etc_var(self.newroot, self.rw, self.plan)
        return ErofsFacts(
            "erofs", made.sha256, made.size, self.compress or "none", made.mkfs_version
        )

    def undo(self) -> list[str]:
        return _attempt(*(partial(_unmount, path) for path in (self.newroot, self.tree, self.rw)))


EROFS_MOUNT_HINT = (
    "the kernel did not mount the root's EROFS image from a loop device: check that this "
    "initramfs has loop devices and erofs (rebuild it with bootc-live build), or boot without "
    "bootc.live.erofs"
)


def overlay(lower: str, target: str, uppers: str, name: str) -> None:
    """Make `lower` writable at `target`: an overlay whose upper is `uppers`/`name` (a tmpfs)."""
    upper, work = os.path.join(uppers, name, "upper"), os.path.join(uppers, name, "work")
    os.makedirs(upper)
    os.makedirs(work, mode=0o700)
    st = os.stat(lower)  # the overlay's top directory is the upper one: same owner, mode
    os.chown(upper, st.st_uid, st.st_gid)
    os.chmod(upper, st.st_mode & 0o7777)
    options = f"lowerdir={lower},upperdir={upper},workdir={work}"
    hint = (
        f"the kernel did not make {'the root' if name == 'root' else '/' + name} writable with "
        "overlayfs: check that this initramfs has overlay (rebuild it with bootc-live build)"
    )
    run(["mount", "-t", "overlay", "-o", options, f"bootc-live-{name}", target], hint=hint)


def overlay_etc_var(newroot: str, uppers: str, plan: MountPlan) -> None:
    """A read-only root's /etc and /var made writable, unless bootc.live.{etc,var}.rw=0 (where
    one is a symbolic link, the directory it leads to inside the root: mounts.places)."""
    read_only = MountPlan(etc_rw=plan.etc_rw, var_rw=plan.var_rw)
    for path, name, writable in mounts.places(newroot, read_only, make=False):
        if writable:
            overlay(path, path, uppers, name)
        else:  # inside the other, writable
            run(["mount", "--bind", path, path])
            run(["mount", "-o", "remount,bind,ro", path])


class PackedRoot(Root):
    """A packed root (the squashfs or EROFS image of bootc-live build) mounted read-only from a
    loop device, nothing unpacked; /etc and /var overlays with a tmpfs upper, as in EROFS mode,
    or with `rw` one overlay over the whole root (bootc.live.{etc,var}.rw=0 then bind read-only).
    With bootc.zram the uppers are on ext4 on a zram device instead: what the live system
    writes stays compressed. A streamed one is stored on a tmpfs of its own size first."""

    def __init__(
        self,
        newroot: str,
        size: int,
        plan: MountPlan,
        source: packed.PackedSource,
        pin: str,
        image: str | None,
        workdir: str,
        zram: ZramDevice | None = None,
    ) -> None:
        super().__init__(newroot, size, plan)
        self.full_hint = "the packed root is larger than the memory given to it: add RAM"
        self.zram = zram  # the uppers' device, or None: a tmpfs
        self.source = source
        self.pin = pin
        self.image = image  # bootc.packed.image: the manifest it was made from, if given
        self.files = os.path.join(workdir, "packed")  # the tmpfs a streamed root is stored on
        self.rw = os.path.join(workdir, "live")  # the overlays' upper dirs
        self.lower = os.path.join(workdir, "lower")  # rw: the image, under the root's overlay
        if isinstance(source, packed.FileSource):
            self.file = source.path  # used where the kernel unpacked it
        else:
            self.file = os.path.join(self.files, "packed.root")
        self.stored: packed.Stored | None = None
        if not source.in_place and source.size is not None:
            # Its tmpfs holds the size announced (and a MiB): full, more came than that.
            self.full_hint = (
                f"the server sent more than the {source.size} bytes it announced (the file "
                "changed while it was read?): boot again once it is whole"
            )

    def prepare(self) -> str:
        modprobe(
            "loop",
            "overlay",
            hint="the initramfs lacks loop or overlay: rebuild it with bootc-live build",
        )
        if self.zram:  # now: zram and its compressor load before the unused modules are freed
            os.makedirs(self.rw, exist_ok=True)
            self.zram.make(self.rw)
        if not self.source.in_place:
            os.makedirs(self.files, exist_ok=True)
            if self.source.size is None:
                # Not known before it is fetched: what memory leaves (the planner's figure),
                # so that a server sending without end fills this tmpfs, not the machine.
                have = memory.Memory.read().available - memory.RESERVE - memory.PACKED_UPPERS
                size = max(have, MIB)
            else:
                size = self.source.size + MIB
            mounts.mount_tmpfs(self.files, -(-size // MIB) * MIB)
        return self.file

    def load(self, fetched: packed.Fetched = lambda _: None) -> packed.Stored:
        """The packed root stored in its file and hashed (`fetched` told the bytes as they
        come), its pin checked, its filesystem's module loaded."""
        stored = self.source.store(self.file, fetched)
        packed.check_pin(stored, self.pin, self.source.description)
        fs = self.source.format
        assert fs is not None  # known once stored
        try:
            modprobe(fs.name, hint="")  # built into the kernel (no module to load) is as good
        except BootcLiveError:
            raise RootError(
                f"this kernel cannot mount the packed root: no {fs.name} module "
                f"(modprobe {fs.name} failed)",
                "rebuild the initramfs with bootc-live build",
            ) from None
        self.stored = stored
        return stored

    def mount(self, report: Say) -> RootFacts:
        fs, stored = self.source.format, self.stored
        assert fs is not None and stored is not None, "load() comes first"
        if not self.zram:
            os.makedirs(self.rw, exist_ok=True)
            mounts.mount_tmpfs(self.rw, self.size)
        self.mount_image(self.lower if self.plan.rw else self.newroot)
        if self.plan.rw:
            overlay(self.lower, self.newroot, self.rw, "root")
            mounts.finish_root(self.newroot, self.plan)
        else:
            overlay_etc_var(self.newroot, self.rw, self.plan)
        zram = self.zram.facts("zram") if self.zram else None
        return PackedFacts(
            "packed", stored.sha256, stored.size, fs.name, fs.compressor, self.image, zram
        )

    def mount_image(self, at: str) -> None:
        """Mount the loaded packed root read-only at `at` (through a loop device)."""
        fs, stored = self.source.format, self.stored
        assert fs is not None and stored is not None, "load() comes first"
        os.makedirs(at, exist_ok=True)
        options = ",".join(["loop", "ro", *self.plan.rootflags])
        run(
            ["mount", "-t", fs.name, "-o", options, stored.path, at],
            hint=mounts.flags_hint(self.plan.rootflags) or packed.kernel_hint(fs),
        )

    def undo(self) -> list[str]:
        # A loop device made by mount -o loop is detached when it is unmounted (autoclear).
        unmounts = (partial(_unmount, p) for p in (self.newroot, self.lower, self.rw, self.files))
        return _attempt(*unmounts, self._remove) + (self.zram.undo() if self.zram else [])

    def _remove(self) -> None:
        parts = self.source.parts if isinstance(self.source, packed.FileSource) else []
        for path in [self.file, *part_files(self.file), *parts]:
            if os.path.lexists(path):
                os.unlink(path)


@contextmanager
def make(
    mode: RootMode,
    newroot: str,
    plan: MountPlan,
    mem_total: int,
    workdir: str | None = None,
    warn: Callable[[str], None] = lambda _: None,
    budget: int = 0,
) -> Iterator[Root]:
    """The root `mode` asks for, prepared: `root.target` is where the image goes; a tmpfs the
    image is unpacked into holds at most `budget` bytes (the planner's) until then. Any
    exception inside the block (or while preparing) undoes everything, so nothing partial is
    booted; what could not be undone is passed to `warn`, and the exception goes on as it
    was."""
    root: Root
    if mode.zram_size is not None:
        root = ZramRoot(newroot, mode.zram_size.bytes_for(mem_total), mode.zram_algorithm, plan)
    elif mode.kind == "erofs":
        root = ErofsRoot(newroot, mem_total, mode.erofs_compress, plan, workdir or WORKDIR, budget)
    else:
        root = Root(newroot, mem_total, plan, budget)
    with prepared(root, warn):
        yield root


@contextmanager
def packed_root(
    source: packed.PackedSource,
    newroot: str,
    plan: MountPlan,
    pin: str,
    image: str | None,
    mem_total: int,
    *,
    mode: RootMode = TMPFS,
    workdir: str | None = None,
    warn: Callable[[str], None] = lambda _: None,
) -> Iterator[PackedRoot]:
    """The packed root's PackedRoot, prepared (a tmpfs for a streamed one), undone as `make`'s;
    with a zram `mode` its uppers go on a zram device of that size."""
    zram = None
    if mode.zram_size is not None:
        zram = ZramDevice(mode.zram_size.bytes_for(mem_total), mode.zram_algorithm)
    root = PackedRoot(newroot, mem_total, plan, source, pin, image, workdir or WORKDIR, zram)
    with prepared(root, warn):
        yield root


@contextmanager
def prepared(root: Root, warn: Callable[[str], None] = lambda _: None) -> Iterator[Root]:
    """`root` prepared; undone if anything in the block (or preparing) fails, as `make` says."""
    try:
        root.target = root.prepare()
        yield root
    except BaseException as err:
        for problem in root.undo():
            warn(f"could not undo the root: {problem}")
        if isinstance(err, SpaceError):
            raise SpaceError(str(err), root.full_hint) from None
        raise


def _unmount(path: str) -> None:
    if mounts.is_mounted(path):
        mounts.umount(path)


def _attempt(*steps: Callable[[], None]) -> list[str]:
    """Run every step, whatever the others do; why those that failed did."""
    problems = []
    for step in steps:
        try:
            step()
        except (BootcLiveError, OSError) as err:
            problems.append(str(err))
    return problems


def _read(path: str) -> str:
    with open(path, encoding="ascii") as f:
        return f.read().strip()


def _selected(algorithms: str) -> str:
    m = re.search(r"\[([^\]]+)\]", algorithms)
    return m.group(1) if m else algorithms
