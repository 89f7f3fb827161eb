"""bootc.kexec: boot the image's own kernel and initramfs, handing the image over.

The boot kernel (a PXE server's, say) only obtains and verifies the image, then becomes a chain
loader:

1. With reuse (the default) every blob is copied once, verified, into the handover: a split
   layout (one cpio member per blob) that is appended to the image's initramfs as the next
   stage's initrd, with a record of what was verified (the next stage does not hash it again).
   The layers are then read from it, not from the network again.
2. The layers are read from the top down until a kernel (`usr/lib/modules/KVER/vmlinuz`, or a
   place `kernels.KERNEL_PLACES` names) and its `initramfs.img` are found (`kernels.KernelFinder`:
   whiteouts and opaque directories respected); lower layers are
   not read. Among the kernels complete at that point the highest version wins, unless
   bootc.kexec.kver= names one (then reading goes on until that one is complete).
3. The handover is appended to the image's initramfs (the kernel unpacks concatenated cpio
   archives in turn), and the command line is the running one without the bootc.kexec options;
   with reuse, root= names the handed-over layout instead.
4. kexec -s -l (kexec_file_load), or kexec -l when the kernel refuses that, then kexec -e.
"""

from __future__ import annotations

import os
import shlex
import shutil
import time
from dataclasses import dataclass, replace
from typing import Callable

from . import http, memory, mounts
from .cmdline import ROOT_PREFIX, BootSpec, split
from .errors import BootcLiveError
from .handover import (
    SplitLayoutSource,
    index_json,
    kernel_arguments,
    write_record,
    write_split_layout,
)
from .kernels import KernelFinder, version_key
from .oci import Image
from .run import CommandError, run
from .status import Report
from .streams import ChunkStream
from .tarstream import REGULAR, read_entries
from .unpack import layer_chunks

WORKDIR = "/run/bootc-live/kexec"
MIB = 1 << 20
SLACK = 64 * MIB  # the runtime and kexec-tools while loading
BOOT_FILES_GUESS = 96 * MIB  # the image's kernel and initramfs, until they are found


class KexecError(BootcLiveError):
    """The image's kernel cannot be found or loaded."""


@dataclass(frozen=True)
class BootFiles:
    kver: str
    kernel: str  # paths of the extracted files
    initramfs: str
    layers_read: int  # from the top


def find_boot_files(image: Image, wanted: str | None, workdir: str) -> BootFiles:
    """Read the layers from the top down until the kernel and its initramfs are known."""
    finder = KernelFinder()
    extracted: dict[tuple[str, str], str] = {}
    for read, index in enumerate(reversed(range(len(image.layers))), 1):
        stream = ChunkStream(layer_chunks(image, index))
        for entry in read_entries(stream):
            which = finder.entry(entry.name, entry.kind == REGULAR)
            if which is not None:
                extracted[which] = _extract(stream, entry.size, workdir, *which)
            elif entry.kind == REGULAR:
                stream.skip(entry.size)
        stream.drain()  # to the end: the blob's digest and diff_id are checked
        finder.end_layer()
        complete = finder.complete()
        if wanted:
            chosen = wanted if wanted in complete else ""
        else:
            chosen = complete[-1] if complete else ""
        if chosen:
            return BootFiles(
                chosen, extracted[(chosen, "vmlinuz")], extracted[(chosen, "initramfs.img")], read
            )
    return _missing(wanted, finder)


def _extract(stream: ChunkStream, size: int, workdir: str, kver: str, what: str) -> str:
    target = os.path.join(workdir, f"{kver}.{what}")
    with open(target, "wb") as out:
        left = size
        while left:
            chunk = stream.read_some(min(left, 1 << 20))
            out.write(chunk)
            left -= len(chunk)
    return target


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
        if (kver, "vmlinuz") not in finder.files:
            raise KexecError(
                f"bootc.kexec: the image has no usr/lib/modules/{kver}/vmlinuz",
                "install the kernel in the image, or boot without bootc.kexec",
            )
        raise KexecError(
            f"bootc.kexec: the image has no usr/lib/modules/{kver}/initramfs.img",
            "build it in the image with the bootc-live dracut modules (see docs/live-ready.md), "
            "or boot without bootc.kexec",
        )
    raise KexecError(
        "bootc.kexec: the image has no kernel (no usr/lib/modules/KVER/vmlinuz)",
        "boot without bootc.kexec, or use an image that carries its kernel",
    )


def next_command_line(
    current: str, reuse: bool, label: str, verified: str = "", pin: str = ""
) -> str:
    """The running command line without the kexec options; with reuse, root= (and bootclabel=)
    name the handed-over layout, and bootc.kexec.verified= the record of what was verified.
    bootc.digest= becomes `pin`: the image stage one checked, so that stage two boots that very
    image (a tag may name another by then; the handover names the platform's manifest)."""
    kept = []
    for arg in split(current):
        name = arg.split("=", 1)[0]
        if name == "bootc.kexec" or name.startswith("bootc.kexec."):
            continue
        if (reuse and name in ("root", "bootclabel")) or (pin and name == "bootc.digest"):
            continue
        kept.append(arg)
    if reuse:
        kept += kernel_arguments(label).split()
    if pin:
        kept.append(f"bootc.digest={pin}")
    if verified:
        kept.append(f"bootc.kexec.verified={verified}")
    return " ".join(shlex.quote(a) if " " in a else a for a in kept)


def printable_command_line(command_line: str) -> str:
    """The command line fit to print: a URL in root= without its credentials and query."""
    args = split(command_line)
    for i, arg in enumerate(args):
        name, _, value = arg.partition("=")
        if name == "root" and value.startswith(ROOT_PREFIX + "docker://"):
            continue  # a registry reference holds no credentials
        if name == "root" and "://" in value and value.startswith(ROOT_PREFIX):
            args[i] = f"root={ROOT_PREFIX}{http.redact(value[len(ROOT_PREFIX) :])}"
    return " ".join(shlex.quote(a) if " " in a else a for a in args)


def _check_memory(need: int, mem: memory.Memory, what: str) -> None:
    have = mem.available - memory.RESERVE
    if need > have:
        raise memory.NotEnoughMemory(
            f"not enough memory for kexec: {what} needs about {need // MIB} MiB, "
            f"{max(have, 0) // MIB} MiB available",
            "add RAM, or boot with bootc.kexec.reuse-image=0 (the next stage fetches the image "
            "itself)",
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
    this does not return."""
    say = report.say
    # The next initrd (the image's initramfs + the handover) and the kernel are held in a tmpfs,
    # and loading copies them once or twice more (below). First the handover must fit; once the
    # kernel and initramfs are known, the exact check comes before anything is loaded.
    reuse = spec.kexec_reuse_image
    _need_kexec()
    _check_memory(
        (image.compressed_size if reuse else 0) + BOOT_FILES_GUESS + SLACK, mem, "the handover"
    )
    start = time.monotonic()
    os.makedirs(workdir, exist_ok=True)
    mounts.mount_tmpfs(workdir, mem.total)
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
    initrd = _next_initrd(files, handover if reuse else None, workdir)
    with open(proc_cmdline, encoding="utf-8", errors="replace") as f:
        # Reused, the handover's index names the platform's manifest; fetched again, the image
        # is named as stage one found it (an index for a multi-platform tag).
        pin = image.manifest_digest if reuse else image.top.digest
        command_line = next_command_line(f.read(), reuse, label, verified, pin)
    shown = printable_command_line(command_line)  # a URL's password stays out of every output
    what = [files.kernel, f"--initrd={initrd}", f"--command-line={command_line}"]
    next_initrd = os.path.getsize(initrd)
    with memory.PeakWatch(interval=0.05) as loading:
        loader = load(files, what, [*what[:2], f"--command-line={shown}"])
    # The kernel holds its own copy of both now: the files' memory goes back.
    for path in (initrd, files.kernel):
        os.unlink(path)
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
    say(
        f"kexec: stage one took {seconds:.1f}s, {files.layers_read} of {len(image.layers)} "
        f"layers read; peak memory in use {work.peak >> 20} MiB, {loading.peak >> 20} MiB while "
        f"loading by {loader}"
    )
    say(f"kexec into {files.kver}: {shown}")
    os.sync()
    run(["kexec", "-e"], hint="the kernel refused to execute the loaded image")
    raise KexecError(
        f"kexec -e returned without starting kernel {files.kver}", "boot without bootc.kexec"
    )


def _need_kexec() -> None:
    if shutil.which("kexec") is None:
        raise KexecError(
            "bootc.kexec: this initramfs has no kexec (kexec-tools)",
            "build it with kexec-tools installed (the bootc-live-kexec module), or boot without "
            "bootc.kexec",
        )


def _next_initrd(files: BootFiles, handover: str | None, workdir: str) -> str:
    """The initrd the next kernel gets: the image's initramfs, the handover appended (with
    reuse), once the exact check says that loading them fits."""
    # Loading takes two more copies at the peak, whichever loader: kexec_file_load (`kexec -s`)
    # reads the files into kernel buffers, then copies those into the pages the next kernel
    # will run from; kexec_load (`kexec -l`) reads them into kexec's memory, which the kernel
    # copies. The first is tried (it also works under lockdown with a signed kernel), the
    # second if the kernel refuses it.
    loaded = sum(os.path.getsize(p) for p in (files.initramfs, files.kernel))
    loaded += os.path.getsize(handover) if handover else 0
    _check_memory(
        2 * loaded + SLACK,
        memory.Memory.read(),
        f"loading kernel {files.kver} (kexec holds two more copies of it and its initrd)",
    )
    if not handover:
        return files.initramfs
    initrd = os.path.join(workdir, "initrd")
    os.rename(files.initramfs, initrd)
    append_moving(initrd, handover)
    return initrd


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
        f"{len(image.layers)} layers"
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


def append_moving(target: str, part: str, chunk: int = 4 * MIB) -> None:
    """Append file `part` to `target` after 4 to 7 zero bytes, at a 4-byte boundary (where the
    kernel looks for the next cpio archive; the zeros end an lz4 legacy stream, which has no
    end mark of its own), then delete `part`. It is copied from its end backwards and cut short
    behind each chunk, so on a tmpfs the two never hold its bytes twice."""
    with open(target, "r+b") as out, open(part, "r+b") as src:
        base = out.seek(0, os.SEEK_END) + 4
        base += -base % 4
        end = os.fstat(src.fileno()).st_size
        out.truncate(base + end)  # a hole until filled: no memory yet
        while end:
            begin = (end - 1) // chunk * chunk
            src.seek(begin)
            data = src.read(end - begin)
            out.seek(base + begin)
            out.write(data)
            src.truncate(begin)
            end = begin
    os.unlink(part)
