"""The packed root: an image's root as one reproducible compressed read-only filesystem image.

`pack_image` unpacks the image (or takes the tree `build` unpacked), picks the format and
compressor that give the smallest image the image's own kernel can mount (its config decides,
or --pack), packs the tree with mksquashfs or mkfs.erofs so that the same tree always gives the
same bytes, and wraps the filesystem in a cpio archive to append as an initrd (the kernel
unpacks it to /bootc-live/packed.root). Used by `bootc-live pack` and `bootc-live build`;
docs/packed.md.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .progress import Ticker, bytes_progress, say
from .runtime import kernels, memory, roots
from .runtime.apply import rmtree
from .runtime.cpio import CpioWriter
from .runtime.errors import BootcLiveError
from .runtime.oci import Image
from .runtime.packed import MEMBER, members  # where the kernel unpacks the appended packed.img
from .runtime.run import run
from .runtime.unpack import unpack_image

SQUASHFS_BLOCK = "1M"  # the largest block squashfs allows: the smallest images
# Beyond the compressors' own defaults: zstd's strongest level before its --ultra range, and
# lz4's high-compression mode (smaller, as fast to read).
SQUASHFS_EXTRA = {"zstd": ("-Xcompression-level", "19"), "lz4": ("-Xhc",)}
SQUASHFS_XATTRS = ("user.", "trusted.", "security.")  # the namespaces squashfs can store
SQUASHFS_MISSING = "install squashfs-tools (apt-get install squashfs-tools, or ./setup)"
# What the kernel needs to mount each format with each compressor (y or m), xattrs included:
# an image without them would lose its file capabilities silently.
KERNEL_NEEDS = {
    ("squashfs", compressor): ("CONFIG_SQUASHFS", "CONFIG_SQUASHFS_XATTR", option)
    for compressor, option in (
        ("xz", "CONFIG_SQUASHFS_XZ"),
        ("zstd", "CONFIG_SQUASHFS_ZSTD"),
        ("gzip", "CONFIG_SQUASHFS_ZLIB"),
        ("lz4", "CONFIG_SQUASHFS_LZ4"),
        ("lzo", "CONFIG_SQUASHFS_LZO"),
    )
}
KERNEL_NEEDS.update(
    {
        ("erofs", compressor): ("CONFIG_EROFS_FS", "CONFIG_EROFS_FS_XATTR", *options)
        for compressor, options in (
            ("lz4", ("CONFIG_EROFS_FS_ZIP",)),
            ("lz4hc", ("CONFIG_EROFS_FS_ZIP",)),
            ("lzma", ("CONFIG_EROFS_FS_ZIP", "CONFIG_EROFS_FS_ZIP_LZMA")),
            ("deflate", ("CONFIG_EROFS_FS_ZIP", "CONFIG_EROFS_FS_ZIP_DEFLATE")),
            ("zstd", ("CONFIG_EROFS_FS_ZIP", "CONFIG_EROFS_FS_ZIP_ZSTD")),
        )
    }
)
FORMATS = ("squashfs", "erofs")
CONFIG_PLACES = ("usr/lib/modules/{kver}/config", "boot/config-{kver}")


class PackError(BootcLiveError):
    """The root cannot be packed (no format the kernel mounts, a tool missing, …)."""


@dataclass(frozen=True)
class PackFormat:
    """A filesystem and its compressor; `compressor` None: the best the kernel allows."""

    fs: str
    compressor: str | None = None

    @classmethod
    def parse(cls, text: str) -> PackFormat:
        """--pack FORMAT[:COMPRESSOR]; ValueError naming the option when it is neither."""
        fs, _, compressor = text.partition(":")
        if fs not in FORMATS:
            raise ValueError(f"--pack {text}: the format is {' or '.join(FORMATS)}")
        known = [c for f, c in KERNEL_NEEDS if f == fs]
        if compressor and compressor not in known:
            raise ValueError(f"--pack {text}: {fs} compressors are {', '.join(known)}")
        return cls(fs, compressor or None)

    def __str__(self) -> str:
        return f"{self.fs}:{self.compressor}" if self.compressor else self.fs


# Smallest first, as measured on the Debian test image (docs/packed.md); the EROFS lzma,
# deflate and zstd rows are placed by expectation (erofs-utils 1.5 has none of them).
PREFERENCE = tuple(
    PackFormat(fs, compressor)
    for fs, compressor in (
        ("squashfs", "xz"),
        ("squashfs", "zstd"),
        ("erofs", "lzma"),
        ("erofs", "zstd"),
        ("erofs", "deflate"),
        ("squashfs", "gzip"),
        ("squashfs", "lzo"),
        ("squashfs", "lz4"),
        ("erofs", "lz4hc"),
        ("erofs", "lz4"),
    )
)


@dataclass(frozen=True)
class KernelConfig:
    """What a kernel's build configuration enables (y or m), and where it was read."""

    kver: str
    path: str
    enabled: frozenset[str]

    @classmethod
    def parse(cls, kver: str, path: str, text: str) -> KernelConfig:
        found = re.findall(r"^(CONFIG_\w+)=[ym]$", text, re.MULTILINE)
        return cls(kver, path, frozenset(found))

    def missing(self, fmt: PackFormat) -> list[str]:
        """The options `fmt` needs that this kernel lacks."""
        assert fmt.compressor is not None
        return [o for o in KERNEL_NEEDS[(fmt.fs, fmt.compressor)] if o not in self.enabled]


def image_kernel_config(tree: Path, kver: str | None = None) -> KernelConfig | None:
    """The config of the image's kernel `kver` (default: its highest), from its unpacked tree."""
    if kver is None:
        found = kernels.in_tree(os.fspath(tree)).kernels()
        if not found:
            return None
        kver = found[-1]
    return kernel_config(tree, kver)


def kernel_config(root: Path, kver: str) -> KernelConfig | None:
    """The config of kernel `kver` under `root` (CONFIG_PLACES; never through a link, whose
    target would be this machine's), or None."""
    for place in CONFIG_PLACES:
        relative = place.format(kver=kver)
        text = _read_in_tree(root, relative)
        if text is not None:
            return KernelConfig.parse(kver, "/" + relative, text)
    return None


def _read_in_tree(root: Path, relative: str) -> str | None:
    path = root
    for part in relative.split("/"):
        path = path / part
        if path.is_symlink():
            return None
    if not path.is_file():
        return None
    return path.read_text(errors="replace")


def offered() -> dict[str, list[str]]:
    """The compressors this machine's mksquashfs and mkfs.erofs offer (none without the tool)."""
    tools: dict[str, list[str]] = {"squashfs": [], "erofs": []}
    if shutil.which("mksquashfs"):
        usage = run(["mksquashfs", "-help"], capture=True, hint=SQUASHFS_MISSING)
        tools["squashfs"] = squashfs_compressors(usage.stdout + usage.stderr)
    if shutil.which("mkfs.erofs"):
        tools["erofs"] = roots.erofs_compressors()
    return tools


def squashfs_compressors(usage: str) -> list[str]:
    """The compressors `mksquashfs -help` lists: indented names below "Compressors available"."""
    listed = re.search(r"Compressors available:\n((?:\t\t\t\t\S.*\n)+)", usage)
    return [line.split()[0] for line in listed.group(1).splitlines()] if listed else []


def choose(
    requested: PackFormat | None, kernel: KernelConfig | None, tools: dict[str, list[str]]
) -> PackFormat:
    """The format to pack with: the first of PREFERENCE (of the requested filesystem, or the
    requested one itself) that the kernel mounts and this machine's tools make."""
    if requested is None and kernel is None:
        raise PackError(
            f"the image has no kernel config (looked for "
            f"{', '.join(p.format(kver='KVER') for p in CONFIG_PLACES)}), so "
            "nothing says which packed formats its kernel mounts",
            "give --pack FORMAT[:COMPRESSOR] (e.g. --pack squashfs:xz; build takes --pack none)",
        )
    candidates = [
        f
        for f in PREFERENCE
        if requested is None
        or (f.fs == requested.fs and requested.compressor in (None, f.compressor))
    ]
    made = [f for f in candidates if f.compressor in tools[f.fs]]
    if not made:
        wanted = str(requested) if requested else "any packed root"
        raise PackError(
            f"this machine cannot make {wanted}: mksquashfs offers "
            f"{', '.join(tools['squashfs']) or 'nothing'}, mkfs.erofs "
            f"{', '.join(tools['erofs']) or 'nothing'}",
            "install squashfs-tools and erofs-utils (./setup), or pick another --pack",
        )
    if kernel is None:
        return made[0]
    mountable = [f for f in made if not kernel.missing(f)]
    if not mountable:
        lacks = "; ".join(f"{', '.join(kernel.missing(f))} for {f}" for f in made)
        raise PackError(
            f"the kernel {kernel.kver} cannot mount {requested or 'any packed root made here'}: "
            f"its config ({kernel.path}) lacks {lacks}",
            "pick another --pack, or build the kernel with that option",
        )
    return mountable[0]


@dataclass(frozen=True)
class Packed:
    """A packed root: what packed.json records."""

    image: str  # the manifest digest it was made from
    sha256: str  # of the filesystem image (not of the cpio wrapper)
    size: int  # of the filesystem image
    format: PackFormat
    tool: str  # e.g. "mksquashfs 4.5.1": the bytes depend on it
    kernel: str | None  # the kernel whose config chose the format

    def record(self) -> bytes:
        return (
            json.dumps(
                {
                    "image": self.image,
                    "sha256": self.sha256,
                    "bytes": self.size,
                    "format": self.format.fs,
                    "compressor": self.format.compressor,
                    "tool": self.tool,
                    "kernel": self.kernel,
                },
                indent=1,
            ).encode()
            + b"\n"
        )

    def annotations(self) -> dict[str, str]:
        """What `build` records of it in the image index (memory.recorded_packed reads it)."""
        return {
            memory.PACKED_BYTES_ANNOTATION: str(self.size),
            memory.PACKED_SHA256_ANNOTATION: self.sha256,
            memory.PACKED_FORMAT_ANNOTATION: str(self.format),
        }

    def arguments(self, location: str = "/" + MEMBER) -> str:
        """The kernel arguments that boot it from `location` (a path in the initramfs, or a
        URL serving packed.img or the bare filesystem image)."""
        return (
            f"root=bootc-live:packed:{location} bootc.packed.sha256={self.sha256} "
            f"bootc.packed.image={self.image}"
        )


def pack_image(
    image: Image,
    output: Path,
    fmt: PackFormat | None,
    work: Path,
    *,
    tree: Path | None = None,
    unpacked_at: int = 0,
    kver: str | None = None,
    host: bool = False,
) -> Packed:
    """Write `output` (the cpio archive) from the image's root: `tree` when it is unpacked
    already (`unpacked_at`: the mtime its directory had when made, by the file system's clock;
    it must stay unchanged until this returns), else unpacked into `work`. The format is
    `fmt`, completed or chosen by the config of the image's kernel `kver` (default: its
    highest), or of this machine's kernel `kver` with `host`."""
    tools = offered()
    if fmt is not None:
        choose(fmt, None, tools)  # a tool missing fails before the unpack
    unpacked = tree is None
    if tree is None:
        tree = work / "tree"
        tree.mkdir()
        tree.chmod(0o755)  # the root's own mode, whatever the umask: the same image
        unpacked_at = tree.stat().st_mtime_ns
        unpack_image(
            image,
            os.fspath(tree),
            progress=bytes_progress(image.compressed_size, len(image.layers)),
            warn=lambda _m: None,
        )
    if host:
        assert kver is not None
        kernel = kernel_config(Path("/"), kver)
    else:
        kernel = image_kernel_config(tree, kver)
    chosen = choose(fmt, kernel, tools)
    date_implied_directories(tree, unpacked_at)
    if chosen.fs == "squashfs":
        warn_of_dropped_xattrs(tree)
    filesystem = work / "packed.root"
    with Ticker(f"packing the root as {chosen}"):
        tool = make_filesystem(tree, filesystem, chosen)
    if unpacked:
        rmtree(os.fspath(tree))  # shutil's recurses: an image's tree may be deeper
    packed = Packed(
        image.manifest_digest,
        roots.sha256_file(os.fspath(filesystem)),
        filesystem.stat().st_size,
        chosen,
        tool,
        kernel.kver if kernel else None,
    )
    with open(filesystem, "rb") as src, open(output, "wb") as out:
        write_wrapper(src, packed.size, out)
    filesystem.unlink()
    return packed


def date_implied_directories(tree: Path, unpacked_at: int) -> None:
    """Directories dated at or after the unpack (the root, and those no layer has an entry for,
    made as parents of others) take the epoch: the unpack's clock must not change the bytes."""
    for directory in _entries(tree, files=False):
        st = os.lstat(directory)
        if stat.S_ISDIR(st.st_mode) and st.st_mtime_ns >= unpacked_at:
            os.utime(directory, ns=(0, 0), follow_symlinks=False)


def warn_of_dropped_xattrs(tree: Path) -> None:
    """Say which xattrs squashfs leaves out (system.posix_acl_*: ACLs), rather than lose them
    silently."""
    dropped = [
        f"{attr} of /{os.path.relpath(name, tree)}"
        for name in _entries(tree)
        for attr in os.listxattr(name, follow_symlinks=False)
        if not attr.startswith(SQUASHFS_XATTRS)
    ]
    if dropped:
        say(
            f"warning: squashfs stores no {dropped[0]}"
            + (f" (nor {len(dropped) - 1} more)" if len(dropped) > 1 else "")
            + ": the packed root lacks it; --pack erofs keeps every xattr"
        )


def _entries(tree: Path, files: bool = True) -> Iterator[str]:
    """Every path of the tree, itself included, each once; links not followed (a link to a
    directory is given as an entry, never entered)."""
    yield os.fspath(tree)
    for path, directories, names in os.walk(tree):
        for name in [*directories, *(names if files else ())]:
            yield os.path.join(path, name)


def mksquashfs_argv(tree: Path, image: Path, compressor: str) -> list[str]:
    """mksquashfs for a reproducible image that keeps every owner, mode, mtime (in whole
    seconds: squashfs has no more) and xattr."""
    return [
        "mksquashfs",
        os.fspath(tree),
        os.fspath(image),
        "-noappend",
        "-reproducible",
        "-mkfs-time",
        "0",
        "-b",
        SQUASHFS_BLOCK,
        "-comp",
        compressor,
        *SQUASHFS_EXTRA.get(compressor, ()),
        "-quiet",
        "-no-progress",
    ]


def make_filesystem(tree: Path, image: Path, fmt: PackFormat) -> str:
    """Pack `tree` into `image`; return the tool and version that made it."""
    assert fmt.compressor is not None
    if fmt.fs == "erofs":
        # Every mtime at the epoch, as bootc.live.erofs: erofs-utils 1.5 cannot fix the build
        # time (-T, SOURCE_DATE_EPOCH) without fixing every file's mtime too.
        made = roots.make_erofs(os.fspath(tree), os.fspath(image), fmt.compressor)
        return f"mkfs.erofs {made.mkfs_version}"
    run(mksquashfs_argv(tree, image, fmt.compressor), capture=True, hint=SQUASHFS_MISSING)
    banner = run(["mksquashfs", "-version"], capture=True, hint=SQUASHFS_MISSING).stdout
    m = re.search(r"mksquashfs version (\S+)", banner)
    return f"mksquashfs {m.group(1) if m else 'unknown'}"


def write_wrapper(src: BinaryIO, size: int, out: BinaryIO) -> None:
    """packed.img: directory bootc-live, the filesystem as MEMBER, or past PART_SIZE as
    MEMBER.0, MEMBER.1, … of PART_SIZE each; trailer."""
    cpio = CpioWriter(out)
    cpio.add_dir(os.path.dirname(MEMBER))
    for name, part in members(size):
        cpio.add_file(name, src, part)
    cpio.close()
