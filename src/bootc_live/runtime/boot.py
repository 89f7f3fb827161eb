"""The boot-time entry point: obtain, verify, unpack, mount.

Run by bootc-live.service in dracut's systemd initrd, or by the mount hook in the shell initrd:

    python3 -S -E /usr/lib/bootc-live/bootc-live-boot NEWROOT

Exit 0 with the live root mounted at NEWROOT, or exit 1 with one message on stderr and in
/run/bootc-live/error, nothing left mounted at NEWROOT (dracut then stops in its emergency path).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import replace
from typing import Any, Callable

from . import cmdline, handover, http, kexec, memory, modules, mounts, registry, roots
from .cmdline import BootSpec
from .errors import BootcLiveError, SpaceError
from .oci import Image, resolve
from .run import run
from .sources import ArchiveSource, ImageSource, LayoutSource
from .unpack import Progress, Stats, unpack_image

STATUS_DIR = "/run/bootc-live"


class NotSupportedYet(BootcLiveError):
    """A valid option whose feature this runtime does not have."""


class Console:
    """Messages to the console; with bootc.quiet only errors and the summary."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def say(self, message: str) -> None:
        if not self.quiet:
            print(f"bootc-live: {message}", file=sys.stderr, flush=True)

    def summary(self, message: str) -> None:
        print(f"bootc-live: {message}", file=sys.stderr, flush=True)


def write_status(state: str, **fields: Any) -> None:
    """The machine-readable status: /run/bootc-live/status.json."""
    os.makedirs(STATUS_DIR, exist_ok=True)
    tmp = os.path.join(STATUS_DIR, ".status.json")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"state": state, "time": time.time(), **fields}, f)
    os.replace(tmp, os.path.join(STATUS_DIR, "status.json"))


def open_source(spec: BootSpec, console: Console) -> ImageSource:
    """The image source named by root=bootc-live:…."""
    assert spec.root is not None
    if spec.root.kind == "url":
        return open_url_source(spec, console)
    if spec.root.kind == "docker":
        return open_registry_source(spec, console)
    if spec.root.kind != "path":
        raise NotSupportedYet(
            f"{spec.root} is not supported by this initramfs yet",
            "use root=bootc-live:/PATH, an http(s), ftp, tftp or nfs URL, or docker://REF",
        )
    path = spec.root.location
    if os.path.isdir(path):
        # Blobs inside the initramfs are deleted as their layers are applied: memory comes back.
        return LayoutSource(path, consume=True)
    if os.path.isfile(path):
        return ArchiveSource(path)
    raise BootcLiveError(
        f"no image at {path} in the initramfs",
        "append rootfs.img from bootc-live build as an extra initrd, or fix root=",
    )


def open_url_source(spec: BootSpec, console: Console) -> ImageSource:
    """http(s) natively (in place with Range); ftp, tftp and nfs through dracut's url-lib."""
    assert spec.root is not None
    url = spec.root.location
    policy = http.Policy(retries=spec.retries, stall=spec.timeout or http.Policy.stall)
    wait_for_route(policy.total, console)
    if url.startswith(("http://", "https://")):
        return http.open_url(url, policy, console.say, STATUS_DIR)
    path = os.path.join(STATUS_DIR, "download.oci")
    os.makedirs(STATUS_DIR, exist_ok=True)
    console.say(f"fetching {http.redact(url)} with dracut's url-lib")
    run(
        # url-lib needs dracut-lib, and sourcing it does not end with status 0: no && after it.
        # The URL goes in the environment: a password in it stays out of the logged argv.
        [
            "sh",
            "-c",
            '. /lib/dracut-lib.sh; . /lib/url-lib.sh; fetch_url "$BOOTC_URL" "$1"',
            "fetch_url",
            path,
        ],
        env={**os.environ, "BOOTC_URL": url},
        hint=f"check {http.redact(url)} and the network",
    )
    return ArchiveSource(path, delete=True)


def printable_root(spec: BootSpec) -> str:
    """root= fit to print: a URL without its password."""
    assert spec.root is not None
    if spec.root.kind == "url":
        return cmdline.ROOT_PREFIX + http.redact(spec.root.location)
    return str(spec.root)


def open_registry_source(spec: BootSpec, console: Console) -> ImageSource:
    """docker://REF with our own distribution client, through the mirrors first."""
    assert spec.root is not None
    ref = registry.Reference.parse(spec.root.location)
    policy = http.Policy(retries=spec.retries, stall=spec.timeout or http.Policy.stall)
    wait_for_route(policy.total, console)
    default = registry.AUTH_IN_INITRAMFS
    auth = spec.registry_auth or (default if os.path.exists(default) else None)
    console.say(
        f"pulling {ref}"
        + (f" (mirrors: {', '.join(spec.registry_mirrors)})" if spec.registry_mirrors else "")
    )
    return registry.RegistrySource(
        ref,
        policy,
        console.say,
        auth_file=auth,
        unsecure=spec.registry_unsecure,
        mirrors=spec.registry_mirrors,
        mirrors_digest_only=spec.registry_mirrors_digest_only,
    )


def wait_for_route(timeout: float, console: Console) -> None:
    """Wait until some interface is configured: has an IPv4 route (dracut brings links up).

    Not necessarily a default route: a server on the local subnet needs none.
    """
    deadline = time.monotonic() + timeout
    said = False
    while time.monotonic() < deadline:
        with open("/proc/net/route", encoding="ascii") as f:
            if any(line.split()[0] != "lo" for line in list(f)[1:] if line.strip()):
                return
        if not said:
            console.say("waiting for the network")
            said = True
        time.sleep(0.5)
    raise BootcLiveError(
        "no network: no interface was configured",
        "check the cable, DHCP, or ip= on the kernel command line",
    )


def root_choice(spec: BootSpec, mem: memory.Memory) -> memory.Choice:
    """The root mode the command line asks for."""
    if spec.zram is not None and spec.erofs:
        raise BootcLiveError("bootc.zram and bootc.live.erofs were both given", "pick one of them")
    if spec.zram is not None:
        return memory.Choice(
            "zram", spec.zram.bytes_for(mem.total), zram_algorithm=spec.zram_algorithm
        )
    if spec.erofs:
        return memory.Choice("erofs", erofs_compress=spec.erofs_compress)
    return memory.Choice()


def make_root(spec: BootSpec, choice: memory.Choice, newroot: str, size: int) -> roots.Root:
    plan = mounts.MountPlan(spec.rw, spec.etc_rw, spec.var_rw)
    if choice.mode == "zram":
        return roots.ZramRoot(
            newroot, choice.zram_size, choice.zram_algorithm, spec.rootflags, plan
        )
    if choice.mode == "erofs":
        return roots.ErofsRoot(newroot, size, choice.erofs_compress, spec.rootflags, plan)
    return roots.Root(newroot, size, spec.rootflags, plan)


def live_boot(spec: BootSpec, newroot: str, console: Console) -> Image:
    """The whole job, step by step."""
    with memory.PeakWatch() as peak:
        image, stats, root = obtain_and_unpack(spec, newroot, console)
    console.summary(
        f"live root ready: {image.manifest_digest}, {stats.entries} entries, "
        f"{stats.bytes_written >> 20} MiB in {stats.seconds:.1f}s; {root.describe()}; "
        f"peak memory in use {peak.peak >> 20} MiB ({peak.start >> 20} MiB before fetching)"
    )
    write_status(
        "ready",
        mode=root.name,
        **root.facts,
        manifest=image.manifest_digest,
        entries=stats.entries,
        bytes=stats.bytes_written,
        seconds=round(stats.seconds, 3),
        peak_memory=peak.peak,
        memory_before=peak.start,
    )
    return image


def obtain_and_unpack(
    spec: BootSpec, newroot: str, console: Console
) -> tuple[Image, Stats, roots.Root]:
    """Open the source, resolve and check the image, unpack it and mount the root."""
    source = open_source(spec, console)
    try:
        write_status("resolving", root=printable_root(spec))
        image = resolve(source, label=spec.label, platform=spec.platform, digest=spec.digest)
        if spec.kexec_verified and spec.root is not None and spec.root.kind == "path":
            image = handover.trust_previous_stage(
                image, spec.root.location, spec.kexec_verified, console.say
            )
        mem = memory.Memory.read()
        # The initramfs's unused modules, counted once: freed before the root's work starts.
        frees = not spec.keep_modules and modules.in_initramfs()
        unused = modules.unused() if frees else modules.Unused()
        if spec.kexec:
            write_status("kexec", manifest=image.manifest_digest)
            console.say(
                f"image {image.manifest_digest}: {len(image.layers)} layers, "
                f"{image.compressed_size >> 20} MiB compressed; bootc.kexec: looking for its "
                "kernel"
            )
            if frees:  # stage one loads no module
                free_modules(unused, console)
                mem = memory.Memory.read()
            kexec.kexec_boot(spec, image, mem, console.say)
        # The modules freed once the root is prepared count as available now (less the few
        # the root loads itself: a MiB or two, within memory.RESERVE).
        spare = unused.size
        mem = replace(mem, available=mem.available + spare)
        choice = root_choice(spec, mem)
        consumable = isinstance(source, LayoutSource) and source.consume
        est, need = memory.check(image, mem, blobs_freed=consumable, choice=choice)
        have = memory.available(mem, image, blobs_freed=consumable)
        console.say(
            f"image {image.manifest_digest}: {len(image.layers)} layers, "
            f"{image.compressed_size >> 20} MiB compressed, about {est.unpacked >> 20} MiB "
            f"unpacked ({est.how}); {choice.mode} root: needs about "
            f"{memory.mib_up(need.peak)} MiB, {have >> 20} MiB available"
            + (f" ({spare >> 20} MiB of it unused kernel modules, freed next)" if spare else "")
        )
        write_status("unpacking", manifest=image.manifest_digest, layers=len(image.layers))
        root = make_root(spec, choice, newroot, mem.total)
        try:
            target = root.prepare()
            if frees:  # the root has loaded its own modules: free_modules keeps them
                free_modules(unused, console)
            stats = unpack_image(
                image,
                target,
                progress=None
                if console.quiet
                else Progress(image.compressed_size, len(image.layers)),
                warn=console.say,
            )
            root.finish(console.say)
        except SpaceError as err:
            root.abort()
            raise SpaceError(str(err), root.full_hint) from None
        except BaseException:
            root.abort()  # never leave a partial root for dracut to boot
            raise
    finally:
        source.close()
    return image, stats, root


def free_modules(unused: modules.Unused, console: Console) -> None:
    freed = modules.free(unused)
    if freed.paths:
        console.say(
            f"freed {freed.size >> 20} MiB: the initramfs's {len(freed.paths)} kernel modules "
            "that are not loaded (bootc.keep-modules=1 keeps them)"
        )


def main(argv: list[str], read_spec: Callable[[], BootSpec] = cmdline.read) -> int:
    newroot = argv[1] if len(argv) > 1 else os.environ.get("NEWROOT", "/sysroot")
    try:
        spec = read_spec()
        if spec.root is None:
            return 0  # not a bootc-live root
        live_boot(spec, newroot, Console(spec.quiet))
        return 0
    except BootcLiveError as err:
        message = f"bootc-live: {err.line()}"
    except Exception as err:  # a bug: still one clear line, and never a partial boot
        message = f"bootc-live: internal error: {type(err).__name__}: {err}; please report it"
    print(message, file=sys.stderr, flush=True)
    try:
        os.makedirs(STATUS_DIR, exist_ok=True)
        with open(os.path.join(STATUS_DIR, "error"), "w", encoding="utf-8") as f:
            f.write(message + "\n")
        write_status("failed", message=message)
    except OSError:
        pass
    return 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
