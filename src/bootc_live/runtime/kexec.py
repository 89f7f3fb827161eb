"""bootc.kexec: boot the image's own kernel and initramfs, handing the image over.

The boot kernel (a PXE server's, say) only obtains and verifies the image, then becomes a chain
loader:

1. With reuse (the default) every blob is copied once, verified, into the handover: a split
   layout (one cpio member per blob) that is appended to the image's initramfs as the next
   stage's initrd, with a record of what was verified (the next stage does not hash it again).
   The layers are then read from it, not from the network again.
2. The layers are read from the top down (`kernels.KernelFinder`: whiteouts, opaque
   directories and hard links as an unpacker has them), keeping the bytes of the kernels
   (`usr/lib/modules/KVER/vmlinuz`, or a place `kernels.KERNEL_PLACES` names) and their
   `initramfs.img`. The highest version with both wins, so every layer is read; with
   bootc.kexec.kver= reading stops once that kernel's files are known in their first place.
3. The handover is appended to the image's initramfs (the kernel unpacks concatenated cpio
   archives in turn), and the command line is the running one without the bootc.kexec options;
   with reuse, root= names the handed-over layout instead.
4. kexec -s -l (kexec_file_load), or kexec -l when the kernel refuses that, then kexec -e.

A packed root (root=bootc-live:packed:…, `packed_kexec_boot`) is obtained and checked against
its pin as a packed boot does, mounted read-only to find the kernel and initramfs in its tree,
and is itself what is handed over: the next initrd is the image's initramfs and a cpio archive
holding the packed root as bootc-live/packed.root (parts past handover.PART_SIZE), its bytes
moved rather than copied; the next command line boots it from there, with the same pin (the
next stage checks it again).
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from typing import BinaryIO, Callable

from . import cmdline, errors, http, memory, mounts, packed, roots
from .apply import clean
from .blobs import odd_at
from .cmdline import ROOT_PREFIX, BootSpec, join, split
from .cpio import CpioWriter, next_archive
from .errors import BootcLiveError
from .handover import (
    SplitLayoutSource,
    index_json,
    kernel_arguments,
    write_record,
    write_split_layout,
)
from .kernels import KernelFinder, Where, in_tree, version_key
from .oci import Image
from .run import CommandError, run
from .status import Report
from .streams import ChunkStream
from .tarstream import HARDLINK, REGULAR, SYMLINK, TarEntry, read_entries
from .unpack import layer_chunks

WORKDIR = "/run/bootc-live/kexec"
MIB = 1 << 20
SLACK = 64 * MIB  # the runtime and kexec-tools while loading
BOOT_FILES_GUESS = 96 * MIB  # the image's kernel and initramfs, until they are found
PACKED_NEXT = f"{ROOT_PREFIX}packed:/{packed.MEMBER}"  # where the next stage finds a packed root
COMMAND_LINE_SIZE = 2048  # the kernel's, with its NUL (x86, arm64)
REUSE_HINT = (
    "add RAM, or boot with bootc.kexec.reuse-image=0 (the next stage fetches the image itself)"
)
IN_INITRAMFS_HINT = "add RAM (an image in the initramfs is always handed over)"


class KexecError(BootcLiveError):
    """The image's kernel cannot be found or loaded."""


@dataclass(frozen=True)
class BootFiles:
    kver: str
    kernel: str  # paths of the extracted files
    initramfs: str
    layers_read: int  # from the top
    passed_over: tuple[str, ...] = ()  # higher KVERs the image names, lacking a boot file

    def note(self) -> str:
        """What the console line adds when a higher kernel was passed over, or ""."""
        if not self.passed_over:
            return ""
        return (
            f" ({', '.join(self.passed_over)} passed over: no vmlinuz and initramfs.img both; "
            "bootc.kexec.kver= names the one to boot)"
        )


def find_boot_files(image: Image, wanted: str | None, workdir: str) -> BootFiles:
    """Read the layers from the top down, keeping the bytes the finder asks for (the boot
    files, hard links' targets), until the kernel to boot is settled: `wanted` once both its
    files are known in their first place, else with every layer read (the highest version may
    lie in any). The bytes of the files not chosen are freed."""
    finder = KernelFinder()
    kept: dict[Where, str] = {}
    try:
        return _find(image, wanted, workdir, finder, kept)
    except BaseException:
        _free(kept, ())  # a layer that fails its digest, say: nothing stays in RAM
        raise


def _find(
    image: Image, wanted: str | None, workdir: str, finder: KernelFinder, kept: dict[Where, str]
) -> BootFiles:
    read = 0
    for read, index in enumerate(reversed(range(len(image.layers))), 1):
        layer = read - 1
        _keep(image, index, layer, kept, workdir, finder.note)
        targets = finder.relink()
        found: set[bytes] = set()
        if targets:  # hard links to files earlier in this layer (ostree's objects): again
            found = _keep(image, index, layer, kept, workdir, targets=targets)
        finder.end_layer(found)
        if wanted and finder.final(wanted):
            break
    chosen = _chosen(finder, wanted)
    if not chosen:
        return _missing(wanted, finder)
    paths = [kept[_where(finder, (chosen, what))] for what in ("vmlinuz", "initramfs.img")]
    _free(kept, paths)
    named = [os.path.join(workdir, what) for what in ("vmlinuz", "initramfs.img")]
    if paths[0] == paths[1]:  # one file linked at both places
        shutil.copyfile(paths[0], named[1])
    else:
        os.rename(paths[1], named[1])
    os.rename(paths[0], named[0])
    return BootFiles(chosen, named[0], named[1], read, _passed_over(finder, chosen, wanted))


def _passed_over(finder: KernelFinder, chosen: str, wanted: str | None) -> tuple[str, ...]:
    """The kernels above `chosen` the image names, incomplete (none when one was `wanted`)."""
    if wanted:
        return ()
    above = [k for k in finder.named if version_key(k) > version_key(chosen)]
    return tuple(sorted(above, key=version_key, reverse=True))


def _keep(
    image: Image,
    index: int,
    layer: int,
    kept: dict[Where, str],
    workdir: str,
    ask: Callable[[TarEntry], bool] | None = None,
    targets: Collection[bytes] = (),
) -> set[bytes]:
    """Read layer `index` (`layer` from the top) to its end (its digests are checked), keeping
    in `kept` the bytes of the regular files that `ask` (told every entry) wants, or that are
    at `targets`; a later one at a path replaces. The paths of those it kept."""
    stream = ChunkStream(layer_chunks(image, index))
    paths = set()
    for entry in read_entries(stream):
        wanted = ask(entry) if ask is not None else _path(entry) in targets
        if wanted and entry.kind == REGULAR:
            where = (layer, _path(entry))
            kept[where] = kept.get(where) or os.path.join(workdir, f"boot-file-{len(kept)}")
            _extract(stream, entry, kept[where])
            paths.add(where[1])
        elif entry.kind == REGULAR:
            stream.skip(entry.size)
    stream.drain()
    return paths


def _path(entry: TarEntry) -> bytes:
    return b"/".join(clean(entry.name))


def _where(finder: KernelFinder, which: tuple[str, str]) -> Where:
    where = finder.where(which)
    assert where is not None  # _chosen takes only kernels whose bytes are known
    return where


def _free(kept: dict[Where, str], chosen: Sequence[str]) -> None:
    for path in set(kept.values()) - set(chosen):
        if os.path.exists(path):
            os.unlink(path)


def _chosen(finder: KernelFinder, wanted: str | None) -> str:
    """The kernel to boot among those complete, their bytes known: `wanted`, else the
    highest; "" if none."""
    complete = [
        k
        for k in finder.complete()
        if finder.where((k, "vmlinuz")) and finder.where((k, "initramfs.img"))
    ]
    if wanted:
        return wanted if wanted in complete else ""
    return complete[-1] if complete else ""


def boot_files_in_tree(tree: str, wanted: str | None, workdir: str) -> BootFiles:
    """The kernel and its initramfs in the mounted tree of a packed root, copied to `workdir`."""
    finder = in_tree(tree)
    chosen = _chosen(finder, wanted)
    if not chosen:
        return _missing(wanted, finder)
    copies = []
    for what in ("vmlinuz", "initramfs.img"):
        target = os.path.join(workdir, what)
        shutil.copyfile(os.path.join(tree, finder.files[(chosen, what)].decode()), target)
        copies.append(target)
    return BootFiles(chosen, copies[0], copies[1], 0, _passed_over(finder, chosen, wanted))


def _extract(stream: ChunkStream, entry: TarEntry, target: str) -> None:
    """A regular file's bytes into `target`; a sparse one with its holes."""
    chunks = entry.sparse if entry.sparse is not None else [(0, entry.size)]
    with open(target, "wb") as out:
        for offset, length in chunks:
            out.seek(offset)
            left = length
            while left:
                chunk = stream.read_some(min(left, 1 << 20))
                out.write(chunk)
                left -= len(chunk)
        out.truncate(entry.real_size if entry.sparse is not None else entry.size)


def _missing(wanted: str | None, finder: KernelFinder) -> BootFiles:
    kvers = finder.named
    if wanted and wanted not in kvers:
        offered = ", ".join(sorted(kvers, key=version_key)) or "none"
        raise KexecError(
            f"bootc.kexec.kver={wanted}: the image has no kernel {wanted} (kernels: {offered})",
            "fix bootc.kexec.kver= or drop it for the highest version",
        )
    for kver in sorted(kvers, key=version_key, reverse=True):
        if wanted and kver != wanted:
            continue
        for what in ("vmlinuz", "initramfs.img"):
            if finder.where((kver, what)) is None:
                raise _no_file(finder, kver, what)
    raise KexecError(
        "bootc.kexec: the image has no kernel (no usr/lib/modules/KVER/vmlinuz)",
        "boot without bootc.kexec, or use an image that carries its kernel",
    )


def _no_file(finder: KernelFinder, kver: str, what: str) -> KexecError:
    """Why kernel `kver` has no `what` whose bytes are known: none, or a link there."""
    place = finder.at_place((kver, what))
    if place is not None and place[1] == SYMLINK:
        return KexecError(
            f"bootc.kexec: the image's {errors.shown(place[0])} is a symbolic link (to "
            f"{errors.shown(place[2])}), which bootc.kexec does not follow",
            f"put the {what} itself there in the image, or boot without bootc.kexec",
        )
    if place is not None and place[1] == HARDLINK:
        return KexecError(
            f"bootc.kexec: the image's {errors.shown(place[0])} is a hard link to "
            f"{errors.shown(place[2])}, which no layer holds as a regular file",
            f"rebuild the image with the {what} itself there, or boot without bootc.kexec",
        )
    if what == "vmlinuz":
        return KexecError(
            f"bootc.kexec: the image has no usr/lib/modules/{kver}/vmlinuz",
            "install the kernel in the image, or boot without bootc.kexec",
        )
    return KexecError(
        f"bootc.kexec: the image has no usr/lib/modules/{kver}/initramfs.img",
        "build it in the image with the bootc-live dracut modules (see docs/live-ready.md), "
        "or boot without bootc.kexec",
    )


def next_command_line(
    current: str | Sequence[str],
    reuse: bool,
    label: str,
    verified: str = "",
    pin: str = "",
    replacing: Sequence[str] = (),
    dropping: Sequence[str] = (),
) -> str:
    """The running command line without the kexec options, and bootc.kexec=0 (the next
    stage's initramfs may be this one, its /etc/cmdline.d asking for bootc.kexec too); with
    reuse, root= (and bootclabel=) name the handed-over layout, and bootc.kexec.verified= the
    record of what was verified. bootc.digest= becomes `pin`: the image stage one checked, so
    that stage two boots that very image (a tag may name another by then; the handover names
    the platform's manifest). The arguments `replacing` take the place of those of the same
    names, and those named in `dropping` go. They all go before a `--`, after which the
    kernel passes arguments to init; those it replaces or drops go from after it too (dracut
    and the runtime read the whole line: stage two would take them, bootc.kexec and all).
    `current`: a command line, or its arguments."""
    new = list(replacing)
    if reuse:
        new += kernel_arguments(label).split()
    if pin:
        new.append(f"bootc.digest={pin}")
    if verified:
        new.append(f"bootc.kexec.verified={verified}")
    new.append("bootc.kexec=0")
    replaced = {arg.split("=", 1)[0] for arg in new} | set(dropping)
    args = split(current) if isinstance(current, str) else list(current)
    kept = []
    for arg in args:
        name = arg.split("=", 1)[0]
        if name == "bootc.kexec" or name.startswith("bootc.kexec.") or name in replaced:
            continue
        kept.append(arg)
    init = kept.index("--") if "--" in kept else len(kept)
    try:
        return join([*kept[:init], *new, *kept[init:]])
    except ValueError as err:  # a quote left open at the end of the line it came from
        raise KexecError(
            f"bootc.kexec: {err}, so the next kernel would not read it as this one did",
            "close its quote on the kernel command line, or boot without bootc.kexec",
        ) from None


def packed_command_line(current: str | Sequence[str], pin: str, image: str | None) -> str:
    """The next command line of a packed root: the one handed over, with the same pin."""
    args = [f"root={PACKED_NEXT}", f"bootc.packed.sha256={pin}"]
    args += [f"bootc.packed.image={image}"] if image else []
    # The handed-over root is a file: the image's options were stage one's (checked there),
    # and stage two refuses them with a packed root from a file (cmdline.check_packed).
    image_options = [name for name, _ in cmdline.IMAGE_OPTIONS]
    return next_command_line(current, False, "", replacing=args, dropping=image_options)


def printable_command_line(command_line: str) -> str:
    """The command line fit to print: in every argument (root=, dracut's proxy= and netroot=,
    any other's) and every comma-separated item of it, a URL without its credentials and
    query, and any other USER:PASS@ hidden; a digest's @ (registry references) is kept."""
    args = split(command_line)
    for i, arg in enumerate(args):
        name, eq, value = arg.partition("=")
        if eq:
            args[i] = name + eq + ",".join(_printable_item(item) for item in value.split(","))
    return join(args)


_URL_IN_ARG = re.compile(r"(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]*://.*")


def _printable_item(item: str) -> str:
    url = _URL_IN_ARG.search(item)
    if url and not url.group().startswith("docker://"):
        return item[: url.start()] + http.redact(url.group())
    if odd_at(item):  # user:secret@host, in any form (not a digest's @)
        return "***@" + item.rpartition("@")[2]
    return item


def _check_memory(need: int, mem: memory.Memory, what: str, hint: str = REUSE_HINT) -> None:
    have = mem.available - memory.RESERVE
    if need > have:
        raise memory.NotEnoughMemory(
            f"not enough memory for kexec: {what} needs about {need // MIB} MiB, "
            f"{max(have, 0) // MIB} MiB available",
            hint,
        )


def kexec_boot(
    spec: BootSpec,
    image: Image,
    mem: memory.Memory,
    report: Report,
    workdir: str = WORKDIR,
    proc_cmdline: str = "/proc/cmdline",
) -> None:
    """Obtain the boot files (and the handover), load them with kexec and execute: on success
    this does not return; whatever fails leaves nothing mounted."""
    # The next initrd (the image's initramfs + the handover) and the kernel are held in a tmpfs,
    # and loading copies them once or twice more (below). First the handover must fit; once the
    # kernel and initramfs are known, the exact check comes before anything is loaded.
    reuse = spec.kexec_reuse_image
    in_initramfs = spec.image is not None and spec.image.kind == "path"
    hint = IN_INITRAMFS_HINT if in_initramfs else REUSE_HINT
    _need_kexec()
    _check_memory(
        (image.compressed_size if reuse else 0) + BOOT_FILES_GUESS + SLACK,
        mem,
        "the handover",
        hint,
    )
    start = time.monotonic()
    os.makedirs(workdir, exist_ok=True)
    mounts.mount_tmpfs(workdir, mem.total)
    try:
        _stage_one(spec, image, report, workdir, proc_cmdline, start, hint)
    finally:  # returns only when it failed: the handover's memory goes back
        _give_back(workdir, report)


def _stage_one(
    spec: BootSpec,
    image: Image,
    report: Report,
    workdir: str,
    proc_cmdline: str,
    start: float,
    hint: str,
) -> None:
    """kexec_boot's work in its mounted `workdir`."""
    say = report.say
    reuse = spec.kexec_reuse_image
    handover = os.path.join(workdir, "handover")
    label = "handover"
    with memory.PeakWatch() as work:  # stage one's own work: the handover and the search
        files, verified = _hand_over_and_search(spec, image, handover, label, workdir, say)
    report.state(
        "kexec",
        kexec_kver=files.kver,
        kexec_layers_read=files.layers_read,
        kexec_handover_bytes=os.path.getsize(handover) if reuse else 0,
    )
    initrd = _next_initrd(files, handover if reuse else None, workdir, hint)
    # Reused, the handover's index names the platform's manifest; fetched again, the image is
    # named as stage one found it (an index for a multi-platform tag).
    pin = image.manifest_digest if reuse else image.top.digest
    command_line = next_command_line(cmdline.running(proc_cmdline), reuse, label, verified, pin)
    done = f"{files.layers_read} of {len(image.layers)} layers read"
    load_and_execute(files, initrd, command_line, start, work, report, done)


def load_and_execute(
    files: BootFiles,
    initrd: str,
    command_line: str,
    start: float,
    work: memory.PeakWatch,
    report: Report,
    done: str,
    release: Callable[[], None] = lambda: None,
) -> None:
    """Load the kernel and initrd, free their files and then what `release` frees, and execute;
    on success this does not return. `done`: what stage one did, for its last line."""
    shown = printable_command_line(command_line)  # a URL's password stays out of every output
    size = len(command_line.encode()) + 1
    if size > COMMAND_LINE_SIZE:
        raise KexecError(
            f"bootc.kexec: the next kernel's command line would be {size} bytes, over the "
            f"kernel's {COMMAND_LINE_SIZE} (stage one adds root=, bootc.digest= and the like)",
            f"shorten the kernel command line or /etc/cmdline.d by {size - COMMAND_LINE_SIZE} "
            "bytes, or boot without bootc.kexec",
        )
    what = [files.kernel, f"--initrd={initrd}", f"--command-line={command_line}"]
    next_initrd = os.path.getsize(initrd)
    with memory.PeakWatch(interval=0.05) as loading:
        loader = load(files, what, [*what[:2], f"--command-line={shown}"])
    # The kernel holds its own copy of both now: the files' memory goes back.
    for path in (initrd, files.kernel):
        os.unlink(path)
    release()
    now = memory.Memory.read()
    seconds = time.monotonic() - start
    report.state(
        "kexec-loaded",
        kexec_seconds=round(seconds, 3),
        kexec_loader=loader,
        kexec_memory_in_use=now.total - now.available,
        kexec_next_initrd_bytes=next_initrd,
        kexec_peak_before_loading=work.peak,
        kexec_memory_at_start=work.start,
        kexec_peak_loading=loading.peak,
        kexec_cmdline=shown,
    )
    report.say(
        f"kexec: stage one took {seconds:.1f}s, {done}; peak memory in use {work.peak >> 20} "
        f"MiB, {loading.peak >> 20} MiB while loading by {loader}"
    )
    report.say(f"kexec into {files.kver}: {shown}")
    os.sync()
    run(["kexec", "-e"], hint="the kernel refused to execute the loaded image")
    raise KexecError(
        f"kexec -e returned without starting kernel {files.kver}", "boot without bootc.kexec"
    )


PACKED_HINT = "add RAM, or boot the packed root without bootc.kexec"


def packed_kexec_boot(
    spec: BootSpec,
    source: packed.PackedSource,
    report: Report,
    free_modules: Callable[[], object] = lambda: None,
    workdir: str | None = None,
    proc_cmdline: str = "/proc/cmdline",
) -> None:
    """bootc.kexec with a packed root: obtain it and check its pin, find the image's kernel in
    its mounted tree, hand the packed root itself over (`packed_initrd`), load and execute. On
    success this does not return; whatever fails leaves nothing mounted."""
    pin = spec.packed_sha256
    image = source.image or spec.packed_image
    assert pin is not None  # cmdline.check_packed
    workdir = workdir or WORKDIR
    _need_kexec()
    mem = memory.Memory.read()
    stored = source.storing_takes
    _check_memory(stored + BOOT_FILES_GUESS + SLACK, mem, "the packed root", PACKED_HINT)
    start = time.monotonic()
    os.makedirs(workdir, exist_ok=True)
    mounts.mount_tmpfs(workdir, mem.total)
    try:
        with (
            memory.PeakWatch() as work,
            roots.packed_root(
                source,
                os.path.join(workdir, "tree"),
                mounts.MountPlan(),
                pin,
                image,
                mem.total,
                workdir=workdir,
                warn=report.summary,
            ) as root,
        ):
            report.state("loading")
            loaded = root.load()
            free_modules()  # those of loop and the packed root's filesystem are loaded now
            root.mount_image(root.newroot)
            try:
                files = boot_files_in_tree(root.newroot, spec.kexec_kver, workdir)
            finally:
                mounts.umount(root.newroot)  # the loop device goes with it (autoclear)
            fs = source.format
            assert fs is not None  # known once loaded
            report.say(
                f"kexec: kernel {files.kver} found in the packed root ({fs.name}){files.note()}"
            )
            reuse = spec.kexec_reuse_image
            report.state(
                "kexec",
                kexec_kver=files.kver,
                kexec_layers_read=0,
                kexec_handover_bytes=loaded.size if reuse else 0,
                manifest=image,
                packed_sha256=loaded.sha256,
                format=fs.name,
                compressor=fs.compressor,
            )
            running = cmdline.running(proc_cmdline)
            if reuse:
                initrd = packed_initrd(files, loaded, workdir)
                command_line = packed_command_line(running, loaded.sha256, image)
                done = f"packed root {loaded.size >> 20} MiB handed over"
            else:
                # bootc.kexec.reuse-image=0: the next stage fetches the packed root again from
                # where root= names it, against the same bootc.packed.sha256=.
                _check_loading(files, 0, PACKED_HINT)
                initrd = os.path.join(workdir, "initrd")
                os.rename(files.initramfs, initrd)
                command_line = next_command_line(running, False, "")
                done = "the packed root not handed over (bootc.kexec.reuse-image=0)"
            load_and_execute(
                files,
                initrd,
                command_line,
                start,
                work,
                report,
                done,
                lambda: _release(root, workdir, report),
            )
    finally:
        _give_back(workdir, report)


def _give_back(workdir: str, report: Report) -> None:
    """Unmount the work tmpfs of a stage one that failed (kexec -e does not return otherwise):
    the handover, the boot files, what was written, give their memory back to the emergency
    shell or a retry; if that fails too, it is said, and the failure's own line stays."""
    try:
        if mounts.is_mounted(workdir):
            mounts.umount(workdir)
    except BootcLiveError as err:
        report.summary(f"could not undo the kexec work directory: {err}")


def _release(root: roots.PackedRoot, workdir: str, report: Report) -> None:
    """Once loaded, stage one needs none of its mounts (the packed root's file was moved)."""
    for problem in root.undo():
        report.summary(f"could not undo the packed root: {problem}")
    mounts.umount(workdir)


def packed_initrd(files: BootFiles, loaded: packed.Stored, workdir: str) -> str:
    """The next initrd: the image's initramfs, then a cpio archive holding the packed root as
    the next stage finds it, its bytes moved out of its file (`move_into`) once the exact check
    says that loading them fits."""
    _check_loading(files, loaded.size, PACKED_HINT)
    initrd = os.path.join(workdir, "initrd")
    os.rename(files.initramfs, initrd)
    with open(initrd, "r+b") as out:
        base = _next_archive(out)
        out.truncate(base)
        out.seek(base)
        cpio = CpioWriter(out)
        cpio.add_dir(os.path.dirname(packed.MEMBER))
        places = [
            (base + cpio.reserve_file(name, size), size)
            for name, size in packed.members(loaded.size)
        ]
        cpio.close()
    move_into(loaded.path, initrd, places)
    return initrd


def _need_kexec() -> None:
    if shutil.which("kexec") is None:
        raise KexecError(
            "bootc.kexec: this initramfs has no kexec (kexec-tools)",
            "build it with kexec-tools installed (the bootc-live-kexec module), or boot without "
            "bootc.kexec",
        )


def _next_initrd(files: BootFiles, handover: str | None, workdir: str, hint: str) -> str:
    """The initrd the next kernel gets: the image's initramfs, the handover appended (with
    reuse), once the exact check says that loading them fits."""
    # Loading takes two more copies at the peak, whichever loader: kexec_file_load (`kexec -s`)
    # reads the files into kernel buffers, then copies those into the pages the next kernel
    # will run from; kexec_load (`kexec -l`) reads them into kexec's memory, which the kernel
    # copies. The first is tried (it also works under lockdown with a signed kernel), the
    # second if the kernel refuses it.
    _check_loading(files, os.path.getsize(handover) if handover else 0, hint)
    if not handover:
        return files.initramfs
    initrd = os.path.join(workdir, "initrd")
    os.rename(files.initramfs, initrd)
    append_moving(initrd, handover)
    return initrd


def _check_loading(files: BootFiles, handed_over: int, hint: str) -> None:
    """Loading takes two more copies of the kernel and the next initrd (_next_initrd)."""
    loaded = sum(os.path.getsize(p) for p in (files.initramfs, files.kernel)) + handed_over
    _check_memory(
        2 * loaded + SLACK,
        memory.Memory.read(),
        f"loading kernel {files.kver} (kexec holds two more copies of it and its initrd)",
        hint,
    )


def _hand_over_and_search(
    spec: BootSpec,
    image: Image,
    handover: str,
    label: str,
    workdir: str,
    say: Callable[[str], None],
) -> tuple[BootFiles, str]:
    """With reuse, write the handover (every blob verified); find the boot files in it (else in
    the source) from the top layer down; with reuse, append the record of what was verified.
    The boot files, and the record's digest ("" without reuse)."""
    searched = image
    if spec.kexec_reuse_image:
        say(f"handing the image over: copying {image.compressed_size >> 20} MiB of blobs")
        index = index_json(image, label, None)
        with open(handover, "wb") as out:
            extents = write_split_layout(image, index, out)  # every blob verified
        searched = replace(
            image,
            source=SplitLayoutSource(handover, index, extents),
            verified_blobs=frozenset(range(len(image.layers))),
        )
    files = find_boot_files(searched, spec.kexec_kver, workdir)
    say(
        f"kexec: kernel {files.kver} found in the top {files.layers_read} of "
        f"{len(image.layers)} layers{files.note()}"
    )
    verified = ""
    if spec.kexec_reuse_image:
        with open(handover, "ab") as out:  # the diff_ids of the layers read were checked too
            verified = write_record(image, files.layers_read, out)
    return files, verified


def load(files: BootFiles, what: list[str], shown: list[str]) -> str:
    """Load the next kernel with kexec_file_load, else kexec_load; the loader that worked.
    `shown`: `what` as traced with bootc.debug (without secrets)."""
    try:
        run(["kexec", "-s", "-l", *what], shown=["kexec", "-s", "-l", *shown])
        return "kexec_file_load"
    except CommandError:
        pass
    try:
        run(["kexec", "-l", *what], shown=["kexec", "-l", *shown])
        return "kexec_load"
    except CommandError as err:
        raise KexecError(
            f"bootc.kexec: kexec could not load kernel {files.kver} from the image: {err.detail}",
            "check that the image's vmlinuz is a kernel for this machine and that this "
            "kernel allows kexec (no lockdown, kexec_load_disabled=0), or boot without "
            "bootc.kexec",
        ) from None


def _next_archive(out: BinaryIO) -> int:
    """Where the next cpio archive appended to `out` starts (cpio.next_archive)."""
    return next_archive(out.seek(0, os.SEEK_END))


def append_moving(target: str, part: str, chunk: int = 4 * MIB) -> None:
    """Append file `part` to `target` as the next archive (`_next_archive`), moving it."""
    size = os.path.getsize(part)
    with open(target, "r+b") as out:
        base = _next_archive(out)
        out.truncate(base + size)  # a hole until filled: no memory yet
    move_into(part, target, [(base, size)], chunk)


def move_into(
    part: str, target: str, places: Sequence[tuple[int, int]], chunk: int = 4 * MIB
) -> None:
    """Move the bytes of file `part` into `target` at `places` ((offset, size) each, in order,
    their sizes adding up to `part`'s), then delete `part`. They are copied from its end
    backwards and `part` cut short behind each chunk, so on a tmpfs the two never hold its
    bytes twice."""
    spans = []
    start = 0
    for offset, size in places:
        spans.append((start, offset, size))
        start += size
    with open(target, "r+b") as out, open(part, "r+b") as src:
        assert os.fstat(src.fileno()).st_size == start, "places cover the file"
        for origin, offset, size in reversed(spans):
            end = size
            while end:
                begin = (end - 1) // chunk * chunk
                src.seek(origin + begin)
                data = src.read(end - begin)
                out.seek(offset + begin)
                out.write(data)
                src.truncate(origin + begin)
                end = begin
    os.unlink(part)
