"""`bootc-live build`: boot artifacts from an image (SPEC.md §4)."""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import io
import json
import lzma
import os
import shutil
import stat
import sys
import tarfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from . import carried, dracut, footprint, hostpolicy, pack, scratch, selfcheck, toolfiles, zramsize
from .describe import describe
from .hostpolicy import TrustOptions
from .images import SourceRef
from .layout import LayoutWriter
from .pack import Packed, PackFormat
from .progress import Ticker, bytes_progress, say
from .runtime import initcheck, kernels, registry
from .runtime.blobs import Descriptor, VerifyingReader
from .runtime.cpio import CpioWriter, next_archive
from .runtime.errors import BootcLiveError, console_line, shown
from .runtime.handover import (
    OCI_LAYOUT,
    blobs_of,
    extra_blobs,
    index_json,
    kernel_arguments,
    verified,
    write_split_layout,
)
from .runtime.oci import Image, Platform
from .runtime.policy import DEFAULT_PATH as POLICY_PATH
from .runtime.policy import Policy
from .runtime.registriesd import DEFAULT_DIR as REGISTRIES_D
from .runtime.registriesd import RegistriesD
from .runtime.registry import AUTH_IN_INITRAMFS
from .runtime.run import CommandError, run
from .runtime.sources import blob_path
from .runtime.tarstream import SYMLINK
from .runtime.tools import MANIFEST as TOOLS_MANIFEST
from .runtime.unpack import Progress, unpack_image

CA_IN_INITRAMFS = "/etc/bootc-live/ca.pem"  # read by runtime.http besides the system bundle


class BuildError(BootcLiveError):
    """The artifacts cannot be built."""


@dataclass(frozen=True)
class BuildConfig:
    source: SourceRef
    output: Path
    host: bool = False
    kver: str | None = None
    flavour: str = "systemd"
    ca: Path | None = None  # a CA bundle for https, put into the initramfs
    auth_file: Path | None = None  # registry credentials, put into the initramfs (0600)
    # Whose of them: a docker:// SOURCE's registry and these (ALL_REGISTRIES: every one)
    auth_registries: tuple[str, ...] = ()
    # SOURCE is checked against it; an explicit --policy also goes into the initramfs
    trust: TrustOptions = field(default_factory=TrustOptions)
    # packed.img's format: None chooses by the kernel's config (the image's, or the host's)
    pack: PackFormat | Literal["none"] | None = None
    platform: Platform | None = None  # of a multi-platform SOURCE (default: this machine's)
    digest: str | None = None  # the manifest digest the image must have (or picks it)


# What a build writes into its output directory: all that a rebuild may replace.
ARTIFACTS = frozenset(
    {
        "vmlinuz",
        "initrd.img",
        "rootfs.img",
        "root.oci",
        "initrd-full.img",
        "cmdline.txt",
        "boot.ipxe",
        "packed.img",
        "packed.json",
        "cmdline-packed.txt",
    }
)
WORK_PREFIX = "bootc-live-build."


def check_output(output: Path) -> None:
    """Refuse an output a build did not write: a rebuild replaces DIR (by way of DIR.new and
    DIR.old) as a whole, so any of the three holding anything else would be lost."""
    if not output.name or output.name in (".", ".."):
        raise BuildError(f"{output} cannot be an output directory", "name a new directory")
    for path in (output, *(output.with_name(output.name + end) for end in (".new", ".old"))):
        if not os.path.lexists(path):
            continue
        if path.is_symlink() or not path.is_dir():
            raise BuildError(
                f"{path} exists and is not a directory bootc-live build wrote",
                "choose another output directory, or move it away",
            )
        foreign = sorted(
            name
            for name in os.listdir(path)
            if name not in ARTIFACTS and not name.startswith(WORK_PREFIX)
        )
        if foreign:
            more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
            raise BuildError(
                f"{path} is not a bootc-live build's output: it holds {shown(foreign[0])}{more}, "
                "which a build would delete",
                "choose a new output directory, or empty it yourself",
            )


def build(config: BuildConfig) -> Path:
    """Write all artifacts into config.output, atomically (DIR.new, then rename)."""
    config = replace(config, output=Path(os.path.abspath(config.output)))
    check_output(config.output)
    auth_json(config)  # a file the boot could not use fails before any layer is read
    image = config.source.resolve(config.platform, config.digest)
    label = config.source.tag or "latest"
    tmp = config.output.with_name(config.output.name + ".new")
    try:
        checked = hostpolicy.check(config.source, image, config.trust, say)
        trusted = trust_files(config.trust)  # a missing key fails before any layer is read
        lock = claim(tmp, config.output)
        try:
            _build_in(config, image, label, tmp, checked, trusted)
        except BaseException:
            scratch.remove(tmp)
            raise
        finally:
            os.close(lock)
    finally:
        image.source.close()  # a temporary copy (containers-storage …) goes now
    return config.output


def claim(tmp: Path, output: Path) -> int:
    """Make DIR.new this build's: created if missing, locked (a second build writing the same
    output is refused, instead of the two deleting each other's files), emptied. Returns the
    lock's descriptor; the lock goes with it, or with the process."""
    scratch.make_parents(tmp)
    with contextlib.suppress(FileExistsError):
        tmp.mkdir()
    busy = BuildError(
        f"another bootc-live build is writing {output}",
        "wait for it to end, or choose another output directory",
    )
    try:
        fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except FileNotFoundError:  # published as DIR by another build since the mkdir
        raise busy from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        locked, now = os.fstat(fd), os.lstat(tmp)
        # Another build may have renamed what was DIR.new to DIR as it was opened.
        if (locked.st_dev, locked.st_ino) != (now.st_dev, now.st_ino):
            raise BlockingIOError
    except (BlockingIOError, FileNotFoundError):
        os.close(fd)
        raise busy from None
    except BaseException:
        os.close(fd)
        raise
    scratch.track(tmp)
    for name in os.listdir(tmp):  # a failed build's (check_output allowed only those)
        scratch.remove(tmp / name)
    return fd


def _build_in(
    config: BuildConfig,
    image: Image,
    label: str,
    tmp: Path,
    checked: hostpolicy.Checked,
    trusted: list[tuple[Path, str]],
) -> None:
    """The artifacts, written into `tmp` (DIR.new, claimed), then published as DIR."""
    # dracut's shell code cannot take a space in its own directories' paths (its work goes
    # with the artifacts, on the disk they go to, unless their path has one).
    work = scratch.make_dir(WORK_PREFIX, None if _spaced(tmp) else os.fspath(tmp))
    if _spaced(work):
        scratch.remove(work)
        raise BuildError(
            f"{work}: dracut cannot work in a directory whose path has a space",
            "set TMPDIR to a directory whose path has none",
        )
    try:
        kver, figures, packed = make_kernel_and_initramfs(config, image, tmp, Path(work), trusted)
    finally:
        scratch.remove(work)  # the image's tree it may hold can be deeper than shutil goes
    entries, documents = carried.entries(image, checked.found)
    recorded = packed.annotations() if packed else None
    index = index_json(
        image,
        label,
        figures.sizes,
        figures.zram,
        image.top,
        entries,
        recorded,
        tmpfs=figures.tmpfs,
    )
    with Ticker("packing rootfs.img, root.oci and initrd-full.img"):
        with open(tmp / "rootfs.img", "wb") as out:
            write_split_layout(image, index, out, documents)
        write_oci_archive(image, index, tmp / "root.oci", documents=documents)
        concatenate(tmp / "initrd-full.img", tmp / "initrd.img", tmp / "rootfs.img")
    arguments = boot_arguments(label, image.top.digest, identity(config))
    (tmp / "cmdline.txt").write_text(arguments + "\n")
    if packed is not None:
        (tmp / "packed.json").write_bytes(packed.record())
        (tmp / "cmdline-packed.txt").write_text(packed.arguments() + "\n")
    (tmp / "boot.ipxe").write_text(ipxe_script(arguments, image, kver, packed))
    publish(tmp, config.output)
    scratch.done(tmp)


def _spaced(path: str | Path) -> bool:
    return any(c.isspace() for c in os.fspath(path))


def identity(config: BuildConfig) -> str | None:
    """The registry name the boot checks the image's signatures under (bootc.identity=)."""
    if config.source.transport == "docker":
        return config.source.path
    return config.trust.identity


def boot_arguments(label: str, digest: str, identity: str | None) -> str:
    """cmdline.txt: boot the embedded image, only the one built (bootc.digest=, the document
    its signatures sign), checked under its registry name when it has one (bootc.identity=)."""
    named = [f"bootc.identity={identity}"] if identity else []
    return " ".join([kernel_arguments(label), f"bootc.digest={digest}", *named])


def write_oci_archive(
    image: Image,
    index: bytes,
    path: Path,
    progress: Progress | None = None,
    documents: Sequence[bytes] = (),
) -> None:
    """root.oci: an oci-archive of the one image (and `documents`: the top index, carried
    signatures), for URL boot."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:

        def add(name: str, size: int, data: io.RawIOBase | io.BytesIO | VerifyingReader) -> None:
            info = tarfile.TarInfo(name)
            info.size = size
            info.mode = 0o644
            tar.addfile(info, data)

        for name in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        add("oci-layout", len(OCI_LAYOUT), io.BytesIO(OCI_LAYOUT))
        add("index.json", len(index), io.BytesIO(index))
        for desc in blobs_of(image):
            with verified(image, desc) as reader:
                add(blob_path(desc.digest), desc.size, _counted(reader, desc, image, progress))
        for digest, data in extra_blobs(image, documents).items():
            add(blob_path(digest), len(data), io.BytesIO(data))


def write_oci_layout(
    image: Image,
    index: bytes,
    directory: Path,
    progress: Progress | None = None,
    documents: Sequence[bytes] = (),
) -> None:
    """An OCI image layout directory of the one image (and `documents`), every blob verified as
    it is copied."""
    out = LayoutWriter(directory)
    for desc in blobs_of(image):
        with verified(image, desc) as reader:
            out.copy_blob(desc.digest, _counted(reader, desc, image, progress))
    for data in extra_blobs(image, documents).values():
        out.add_blob(data)
    out.write_index(index)


class _Counted:
    """A blob being copied, reported to the progress line as bytes fetched (layers only)."""

    def __init__(self, reader: VerifyingReader, layer: int, before: int, progress: Progress):
        self._reader = reader
        self._layer = layer
        self._done = before
        self._progress = progress

    def read(self, n: int = -1) -> bytes:
        data = self._reader.read(n)
        self._done += len(data)
        self._progress.update(self._layer, self._done)
        return data


def _counted(
    reader: VerifyingReader, desc: Descriptor, image: Image, progress: Progress | None
) -> VerifyingReader:
    if progress is None or desc not in image.layers:
        return reader
    layer = list(image.layers).index(desc)
    before = sum(d.size for d in image.layers[:layer])
    return _Counted(reader, layer + 1, before, progress)  # type: ignore[return-value]


def find_kernel(root: Path, kver: str | None) -> tuple[str, Path]:
    """The image's kernel in its unpacked tree (see KERNEL_PLACES); the highest version wins."""
    finder = kernels.in_tree(os.fspath(root))
    found = {k: root / os.fsdecode(finder.files[(k, "vmlinuz")]) for k in finder.kernels()}
    if kver is not None:
        if kver not in found:
            raise BuildError(
                f"the image has no kernel {kver} (it has: {', '.join(found) or 'none'}; "
                f"looked in {kernels.KERNEL_PLACES}){_linked(finder, [kver])}",
                "give one of those to --kver, or leave --kver out for the highest",
            )
        return _with_modules(root, kver), found[kver]
    if not found:
        raise BuildError(
            f"the image has no kernel (looked in {kernels.KERNEL_PLACES})"
            f"{_linked(finder, finder.named)}",
            "install one in the image (a bootc image has its kernel), or use --host",
        )
    kvers = finder.kernels()
    best = ([k for k in kvers if has_modules(root, k)] or kvers)[-1]
    if best != kvers[-1]:
        say(
            f"warning: kernel {kvers[-1]} has no modules (no modules.dep in "
            f"usr/lib/modules/{kvers[-1]}): taking {best}, the highest that has"
        )
    return _with_modules(root, best), found[best]


def _with_modules(root: Path, kver: str) -> str:
    """`kver`, unless the image lacks the modules its config says the kernel has: dracut
    then made an initramfs with none (no loop, overlay, zram, ext4), which the self-check
    cannot tell from a kernel with everything built in."""
    config = pack.kernel_config(root, kver)
    if has_modules(root, kver) or config is None or "CONFIG_MODULES" not in config.enabled:
        return kver
    raise BuildError(
        f"kernel {kver} has no modules in the image (no modules.dep in usr/lib/modules/{kver}), "
        f"though its config {config.path} builds them: its initramfs would load none",
        f"install the kernel's modules in the image (Debian: linux-image-{kver}), or give "
        "--kver a kernel that has them",
    )


def _linked(finder: kernels.KernelFinder, kvers: Iterable[str]) -> str:
    """What a message adds for the kernels `kvers` whose vmlinuz is a symbolic link."""
    for kver in sorted(kvers, key=kernels.version_key, reverse=True):
        place = finder.at_place((kver, "vmlinuz"))
        if place is not None and place[1] == SYMLINK:
            return (
                f": {shown(place[0])} is a symbolic link (to {shown(place[2])}), which is not "
                "followed"
            )
    return ""


def has_modules(root: Path, kver: str) -> bool:
    """Whether the image has kernel `kver`'s modules (its modules.dep; links followed in it)."""
    return any(
        toolfiles.has(root, f"{p}/{kver}/modules.dep") for p in ("usr/lib/modules", "lib/modules")
    )


@dataclass(frozen=True)
class Figures:
    """What build measured of the image, for the RAM planner (recorded in index.json)."""

    sizes: list[int]  # each layer's unpacked tar stream
    zram: int | None  # the files as zstd pages (zramsize); None without zstandard
    tmpfs: int  # what the root takes in a tmpfs (footprint)


def make_kernel_and_initramfs(
    config: BuildConfig,
    image: Image,
    out: Path,
    work: Path,
    trusted: Sequence[tuple[Path, str]] = (),
) -> tuple[str, Figures, Packed | None]:
    """vmlinuz, initrd.img and packed.img: from the image's own userland, or from the host
    (--host).

    Either way every blob and diff_id is verified once; returns the kernel version, the
    figures measured, and the packed root (None with --pack none).
    """
    progress = bytes_progress(image.compressed_size, len(image.layers))
    if config.host:
        kver = host_kernel(config.kver)
        shutil.copy2(Path("/boot") / f"vmlinuz-{kver}", out / "vmlinuz")
        with Ticker(f"building initrd.img with the host's dracut (kernel {kver})"), dracut_said():
            dracut.build_with_host(
                kver, config.flavour, out / "initrd.img", work, [*includes(config, work), *trusted]
            )
        check(out / "initrd.img", Path("/"), work)
        packed = make_packed(config, image, out, work, kver)
        facts = describe(image, progress)
        if not facts.kernels:
            warn(
                f"the image has no kernel (looked in {kernels.KERNEL_PLACES}): the artifacts "
                f"boot it with the host's {kver}, whose modules it lacks"
            )
        assert facts.tmpfs is not None  # describe measured it
        return kver, Figures(facts.layer_sizes or [], facts.zram, facts.tmpfs), packed
    root = work / "root"
    root.mkdir()
    unpacked_at = root.stat().st_mtime_ns  # by the file system's clock, as the tree's dates
    tmpfs = footprint.TmpfsMeter()
    stats = unpack_image(
        image, str(root), progress=progress, warn=lambda _m: None, observe=tmpfs.add
    )
    kver, kernel = find_kernel(root, config.kver)
    dracut.check_userland(root)
    shutil.copy2(kernel, out / "vmlinuz")
    switchable(root, config.flavour, image.config.get("architecture"))
    # Before dracut writes into the tree (our modules in its modules.d, its own files).
    packed = make_packed(config, image, out, work, kver, root, unpacked_at)
    with Ticker(f"building initrd.img with the image's dracut (kernel {kver})"), dracut_said():
        dracut.build_in_image(
            root, kver, config.flavour, out / "initrd.img", [*includes(config, work), *trusted]
        )
    check(out / "initrd.img", root, work)
    zram = zramsize.of_tree(root) if zramsize.available() else None
    return kver, Figures(stats.layer_sizes, zram, tmpfs.total), packed


def switchable(root: Path, flavour: str, architecture: object) -> None:
    """What the boot checks before switching root into the image (initcheck: os-release, the
    init, its loader, the mount points), checked on the unpacked tree, before the work: a
    warning, not a refusal, as init= (known at boot only) may name another init. The init's
    machine is checked against the image's architecture (the kernel booting it is the
    image's own), not when the architecture is one we do not know."""
    machine = initcheck.OCI_MACHINES.get(architecture) if isinstance(architecture, str) else None
    try:
        initcheck.check(
            str(root), {}, systemd=flavour == "systemd", machine=machine, any_machine=True
        )
    except initcheck.HandoverError as err:
        warn(f"{err.line()} (its boot stops there)")


def make_packed(
    config: BuildConfig,
    image: Image,
    out: Path,
    work: Path,
    kver: str,
    tree: Path | None = None,
    unpacked_at: int = 0,
) -> Packed | None:
    """packed.img, in the format the kernel `kver` mounts (the host's with --host), or none."""
    if config.pack == "none":
        return None
    where = work / "pack"
    where.mkdir()
    packed = pack.pack_image(
        image,
        out / "packed.img",
        config.pack,
        where,
        tree=tree,
        unpacked_at=unpacked_at,
        kver=kver,
        host=config.host,
    )
    shutil.rmtree(where)
    return packed


def check(initrd: Path, userland: Path, work: Path) -> None:
    """The self-check of the initramfs just built (selfcheck.py), and what it can boot; the
    record of its optional tools' files goes into it."""
    with Ticker("checking initrd.img"):
        verdict = selfcheck.check(initrd, userland, work / "check")
    say(f"the initramfs boots: {verdict.modes()}")
    record_tools(initrd, verdict.tools)


def record_tools(initrd: Path, tools: dict[str, list[str]]) -> None:
    """Append `tools` (toolfiles.manifest) to `initrd` at runtime.tools.MANIFEST: an archive
    of its own (the kernel unpacks archives back to back), compressed as the initramfs is, so
    that its decompressor reads the two as one stream (lsinitrd, and what else reads it, sees
    no trailing bytes); uncompressed, after 4 to 7 zeros (cpio.next_archive: they end an lz4
    stream), after one it cannot compress so."""
    if not tools:
        return
    archive = io.BytesIO()
    writer = CpioWriter(archive)
    writer.add_bytes(TOOLS_MANIFEST.lstrip("/"), json.dumps(tools, indent=1).encode() + b"\n")
    writer.close()
    data = archive.getvalue()
    kind = initramfs_compression(initrd)
    if kind == "gzip":
        data = gzip.compress(data, compresslevel=9, mtime=0)
    elif kind == "xz":
        data = lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32)
    elif kind == "zstd" and shutil.which("zstd"):
        plain, packed = initrd.with_name("tools.cpio"), initrd.with_name("tools.cpio.zst")
        try:
            plain.write_bytes(data)
            run(["zstd", "-q", "-19", "-f", "-o", packed, plain], hint="zstd compresses it")
            data = packed.read_bytes()
        finally:
            plain.unlink(missing_ok=True)
            packed.unlink(missing_ok=True)
    else:
        kind = "none"
    with open(initrd, "ab") as out:
        if kind == "none":
            out.write(b"\0" * (next_archive(out.tell()) - out.tell()))
        out.write(data)


def initramfs_compression(initrd: Path) -> str:
    """How the main archive of `initrd` is compressed (gzip, xz, zstd, or its magic in hex),
    past any uncompressed archive before it (early microcode) and the zeros that pad them."""
    return initramfs_main(initrd.read_bytes())[1]


def initramfs_main(data: bytes) -> tuple[int, str]:
    """Where the main archive of the initramfs `data` starts, past any uncompressed archive
    before it and the zeros that pad them, and how it is compressed (initramfs_compression)."""
    at = 0
    while data[at : at + 6] in (b"070701", b"070702"):
        try:
            namesize = int(data[at + 94 : at + 102], 16)
            filesize = int(data[at + 54 : at + 62], 16)
        except ValueError:
            break  # not a header after all: named by its bytes below
        name = data[at + 110 : at + 110 + namesize - 1]
        at += 110 + namesize
        at += -at % 4
        at += filesize + (-filesize % 4)
        if name == b"TRAILER!!!":
            while data[at : at + 1] == b"\0":
                at += 1
    head = data[at : at + 6]
    for kind, magic in (
        ("gzip", b"\x1f\x8b"),
        ("xz", b"\xfd7zXZ\0"),
        ("zstd", b"\x28\xb5\x2f\xfd"),
    ):
        if head.startswith(magic):
            return at, kind
    return at, head.hex() or "none"


@contextlib.contextmanager
def dracut_said() -> Iterator[None]:
    """dracut's failure as dracut's own last words, not as the command line that ran it."""
    try:
        yield
    except CommandError as err:
        raise BuildError(f"dracut failed: {err.detail}", err.hint) from None


def host_kernels() -> list[str]:
    """The host's kernels --host can use: /boot/vmlinuz-KVER with /lib/modules/KVER."""
    boot = sorted(p.name[len("vmlinuz-") :] for p in Path("/boot").glob("vmlinuz-*"))
    return [k for k in boot if (Path("/lib/modules") / k).is_dir()]


def host_kernel(kver: str | None) -> str:
    """--kver, checked against the host's kernels; without it, the highest of them."""
    there = host_kernels()
    if kver is None:
        if not there:
            raise BuildError(
                "--host needs a kernel here, and there is none "
                "(looked for /boot/vmlinuz-KVER with /lib/modules/KVER)",
                "install one (apt-get install linux-image-amd64)",
            )
        return max(there, key=kernels.version_key)
    if kver not in there:
        raise BuildError(
            f"--kver {kver}: this host has no such kernel (it has: {', '.join(there) or 'none'}; "
            "looked for /boot/vmlinuz-KVER with /lib/modules/KVER)",
            "give one of those, or leave --kver out for the highest",
        )
    return kver


def warn(message: str) -> None:
    print(console_line(f"bootc-live: warning: {message}"), file=sys.stderr, flush=True)


def includes(config: BuildConfig, work: Path) -> list[tuple[Path, str]]:
    """Files the initramfs gets besides the modules: (host path, path in the initramfs)."""
    files = []
    if config.ca is not None:
        if not config.ca.is_file():
            raise BuildError(f"no CA bundle at {config.ca}")
        files.append((config.ca, CA_IN_INITRAMFS))
    auth = auth_json(config)
    if auth is not None:
        staged = work / "auth.json"  # readable by root only, in the initramfs too
        staged.touch(mode=0o600)
        staged.chmod(0o600)
        staged.write_bytes(auth)
        files.append((staged, AUTH_IN_INITRAMFS))
    return files


ALL_REGISTRIES = "all"  # --auth-registry all: every registry's credentials of the file
_AUTH_HINT = (
    "name each registry the booted machine pulls from (its image's, its mirrors), by the name "
    "it knows it by, with --auth-registry HOST[:PORT] (or --auth-registry all), or leave out "
    "--auth-file"
)


def auth_json(config: BuildConfig) -> bytes | None:
    """--authfile as the initramfs gets it: the credentials of the registries the boot can
    pull from (a docker:// SOURCE's, --auth-registry's), and no one else's: an initramfs is
    served over PXE and copied about, and a registry it never names need not be exposed by it.
    Read as the boot reads it (bounded: /dev/zero is no file of credentials) and checked as
    the boot will use it: a credential helper or an identity token fails here, not at boot;
    a file with no entry for any of those registries too (the initramfs would get none)."""
    if config.auth_file is None:
        return None
    path = os.fspath(config.auth_file)
    obj = registry.read_auth_file(path)
    if not isinstance(obj.get("auths"), dict):
        raise BuildError(f'{config.auth_file} has no "auths" object')
    named = [r for r in config.auth_registries if r != ALL_REGISTRIES]
    wanted = list(named)
    if config.source.transport == "docker":
        ref = registry.Reference.parse(config.source.path)
        registry.credentials_in(obj, path, ref.registry, ref.repository)
        wanted.insert(0, ref.registry)
    for host in named:
        registry.credentials_in(obj, path, host, "")
    if ALL_REGISTRIES in config.auth_registries:
        return json.dumps(obj, indent=1).encode() + b"\n"  # what was checked, and nothing else
    if not wanted:
        raise BuildError(
            f"--authfile {path}: the image is not pulled from a registry, so no credentials of "
            "it would go into the initramfs",
            _AUTH_HINT,
        )
    keys = [key for host in wanted for key in registry.keys_of(obj, host)]
    if not keys:
        raise BuildError(
            f"--authfile {path} has no credentials for {', '.join(dict.fromkeys(wanted))}: "
            "the initramfs would get none",
            _AUTH_HINT,
        )
    auths = obj["auths"]
    assert isinstance(auths, dict)
    kept = {key: auths[key] for key in dict.fromkeys(keys)}
    return json.dumps({"auths": kept}, indent=1).encode() + b"\n"


def trust_files(trust: TrustOptions) -> list[tuple[Path, str]]:
    """What an explicit --policy FILE puts into the initramfs: FILE at /etc/containers/policy.json,
    the registries.d files at /etc/containers/registries.d/, and every key the policy names at
    its own path (a missing one is an error naming it)."""
    if trust.policy is None:
        return []
    source = Path(trust.policy)
    named = Policy.load(trust.policy)
    directory = Path(trust.registries_dir())
    RegistriesD.load(os.fspath(directory))  # a malformed file fails here, not at boot
    files = [(source, POLICY_PATH)]
    if directory.is_dir():
        for path in sorted(directory.glob("*.yaml")):
            files.append((path, f"{REGISTRIES_D}/{path.name}"))
    for key in named.key_paths():
        if not os.path.isfile(key):
            raise BuildError(
                f"{trust.policy} names the key {key}, which is missing",
                "put the key there, or fix the policy's keyPath (the boot reads it at that path)",
            )
        files.append((Path(key), key))
    return files


def concatenate(target: Path, *parts: Path) -> None:
    """Initrds back to back, each after 4 to 7 zero bytes at a 4-byte boundary, as the kernel
    reads them (cpio.next_archive: an lz4-compressed initrd.img needs the zeros).

    The whole is no more readable than its most private part: initrd.img (0600) can hold
    registry credentials (--auth-file).
    """
    mode = 0o666
    for part in parts:
        mode &= stat.S_IMODE(os.stat(part).st_mode)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    os.fchmod(fd, mode)
    with open(fd, "wb") as out:
        for part in parts:
            if out.tell():
                out.write(b"\0" * (next_archive(out.tell()) - out.tell()))
            with open(part, "rb") as f:
                shutil.copyfileobj(f, out, 1 << 20)


def ipxe_script(arguments: str, image: Image, kver: str, packed: Packed | None = None) -> str:
    url_arguments = " ".join(a for a in arguments.split() if not a.startswith("root="))
    packed_lines = (
        ""
        if packed is None
        else "# The packed root (nothing unpacked at boot), appended: kernel vmlinuz "
        "initrd=initrd.img initrd=packed.img " + packed.arguments() + "\n"
        "# or by URL: kernel vmlinuz initrd=initrd.img "
        + packed.arguments("${base-url}/packed.img")
        + "\n"
    )
    return (
        "#!ipxe\n"
        f"# bootc-live: {image.manifest_digest} (kernel {kver})\n"
        "# PXE: the initramfs and the image as two initrds (iPXE concatenates them).\n"
        "# For URL boot instead: kernel vmlinuz initrd=initrd.img "
        "root=bootc-live:${base-url}/root.oci " + url_arguments + "\n"
        "# (drop bootc.digest= to follow whatever image the tag or URL holds)\n"
        + packed_lines
        + "kernel vmlinuz initrd=initrd.img initrd=rootfs.img "
        + arguments
        + "\n"
        "initrd initrd.img\n"
        "initrd rootfs.img\n"
        "boot\n"
    )


def publish(tmp: Path, output: Path) -> None:
    """Replace output with tmp in one rename, so a failed build leaves the old artifacts."""
    old = output.with_name(output.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if output.exists():
        os.rename(output, old)
    os.rename(tmp, output)
    shutil.rmtree(old, ignore_errors=True)
