"""The boot-time entry point: obtain, verify, unpack, mount. `live_boot` is the table of contents.

Run by bootc-live.service in dracut's systemd initrd, or by the mount hook in the shell initrd:

    python3 -S -E /usr/lib/bootc-live/bootc-live-boot NEWROOT

Exit 0 with the live root mounted at NEWROOT, or exit 1 with one message on stderr and in
/run/bootc-live/error, nothing left mounted at NEWROOT (dracut then stops in its emergency path).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any, Callable, NoReturn

from . import (
    block,
    cmdline,
    handover,
    http,
    initcheck,
    kexec,
    memory,
    modules,
    mounts,
    packed,
    packedreg,
    policy,
    pyfiles,
    registriesd,
    registry,
    roots,
    signatures,
    status,
    tools,
    trust,
    urllib_dracut,
)
from . import run as runner
from .blobs import Descriptor
from .cmdline import BootSpec
from .errors import BootcLiveError, Stopped, console_line, stopping
from .oci import Image, resolve
from .registriesd import RegistriesD
from .sources import ArchiveSource, ImageSource, LayoutSource
from .status import Report
from .unpack import Progress, unpack_image

STATUS_DIR = status.STATUS_DIR  # module globals: host-side tests point them elsewhere
# In STATUS_DIR once the initramfs's spare files are being freed (free_spare); the unit and the
# dracut hook read it (bootc-live-lib.sh: bootc_live_freed).
FREED = "freed"
# In STATUS_DIR once the image or packed root in the initramfs is being deleted (a layer's
# blob once applied: InitramfsLayout; a packed root, by the undo of a failed boot): a second
# attempt in this boot would find it incomplete or gone, and says so (not_consumed).
CONSUMED = "consumed"
POLICY = policy.DEFAULT_PATH
REGISTRIES_D = registriesd.DEFAULT_DIR


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)  # bootc-live.service stopped, an isolate


def main(argv: list[str], read_spec: Callable[[], BootSpec] = cmdline.read) -> int:
    """The runtime's entry point: the boot, or one line and a failed status (exit 1)."""
    with stopping(STOP_SIGNALS):
        return _main(argv, read_spec)


def _main(argv: list[str], read_spec: Callable[[], BootSpec]) -> int:
    newroot = argv[1] if len(argv) > 1 else os.environ.get("NEWROOT", "/sysroot")
    report = Report(directory=STATUS_DIR)
    debug = False
    try:
        spec = read_spec()
        if spec.image is None:
            # Only the dracut hook and the generator's unit run this, once the shell side has
            # read root= as bootc-live's: returning would boot an empty root.
            raise BootcLiveError(
                "root= names no bootc-live image as the runtime reads the command line, yet "
                "the initramfs's scripts took it for one",
                "check root= on the kernel command line and in /etc/cmdline.d (a stray quote "
                "or an unusual space?)",
            )
        report.quiet, debug = spec.quiet, spec.debug
        runner.DEBUG = runner.DEBUG or debug  # every command traced
        live_boot(spec, newroot, report)
        return 0
    except BootcLiveError as err:
        message = f"bootc-live: {err.line()}"
    except Stopped as err:
        message = f"bootc-live: stopped by {err} before the live root was ready"
    except Exception as err:  # a bug: still one clear line, and never a partial boot
        if debug:
            traceback.print_exc()
        message = f"bootc-live: internal error: {type(err).__name__}: {err}; please report it" + (
            "" if debug else " (bootc.debug=1 shows where it happened)"
        )
    message = console_line(message)  # one line: dracut's hook reads the file's first
    print(message, file=sys.stderr, flush=True)
    try:
        os.makedirs(STATUS_DIR, exist_ok=True)
        with open(os.path.join(STATUS_DIR, "error"), "w", encoding="utf-8") as f:
            f.write(message + "\n")
    except OSError:
        pass
    with contextlib.suppress(Exception):  # the last resort: never a traceback from here
        report.state("failed", after=report.status.get("state", ""), message=message)
    return 1


def live_boot(spec: BootSpec, newroot: str, report: Report) -> Image | None:
    """The boot, step by step: the image, trusted; its root, planned, made, unpacked, mounted.
    A packed root goes its own way (`packed_boot`): there is no image to unpack."""
    assert spec.image is not None
    if spec.image.packed:
        if spec.kexec:
            packed_kexec(spec, report)  # does not return
        packed_boot(spec, newroot, report)
        return None
    with memory.PeakWatch() as peak:
        report.state("resolving", source=printable_root(spec))
        with contextlib.closing(open_source(spec, report)) as source:
            image = resolve_and_trust(spec, source, report)
            if spec.kexec:
                kexec_into_the_image(spec, image, report)  # does not return
            plan = plan_root(spec, image, source, report)
            with roots.make(
                spec.mode,
                newroot,
                mount_plan(spec),
                plan.mem.total,
                warn=report.summary,
                budget=plan.have,
            ) as root:
                report.state(
                    "unpacking", **free_spare(plan.unused, plan.spare, plan.imported, report)
                )
                stats = unpack_image(
                    image,
                    root.target,
                    progress=progress(image, report),
                    warn=report.say,
                    max_window=plan.window,
                )
                facts = root.mount(report)
                check_handover(spec, newroot, report)
    report.summary(
        f"live root ready: {image.manifest_digest}, {stats.entries} entries, "
        f"{stats.bytes_written >> 20} MiB in {stats.seconds:.1f}s ({stats.decompressor}); "
        f"{facts.describe()}; "
        f"peak memory in use {peak.peak >> 20} MiB ({peak.start >> 20} MiB before fetching)"
    )
    ready(
        report,
        facts,
        peak,
        entries=stats.entries,
        bytes=stats.bytes_written,
        seconds=stats.seconds,
        decompressor=stats.decompressor,
    )
    return image


def packed_boot(spec: BootSpec, newroot: str, report: Report) -> None:
    """A packed root, step by step: opened, planned, stored and checked against its pin,
    mounted; the initramfs's unused modules are freed once its own (loop, overlay, its
    filesystem) are loaded."""
    start = time.monotonic()
    with memory.PeakWatch() as peak:
        report.state("resolving", source=printable_root(spec))
        with contextlib.closing(open_packed(spec, report)) as source:
            pin = spec.packed_sha256
            image = source.image or spec.packed_image
            assert pin is not None  # cmdline.check_packed
            mem = plan_packed(spec, source, report)
            with (
                deleted_on_failure(source),
                roots.packed_root(
                    source,
                    newroot,
                    mount_plan(spec),
                    pin,
                    image,
                    mem.total,
                    mode=spec.mode,
                    warn=report.summary,
                ) as root,
            ):
                report.state("loading")
                stored = root.load(packed_progress(source, report))
                spare = unused_modules(spec), unused_tools(spec), unused_python(spec)
                freed = free_spare(*spare, report)
                facts = root.mount(report)
                check_handover(spec, newroot, report)
    seconds = time.monotonic() - start
    report.summary(
        f"live root ready: {facts.describe()} in {seconds:.1f}s; peak memory in use "
        f"{peak.peak >> 20} MiB ({peak.start >> 20} MiB before fetching)"
    )
    ready(
        report,
        facts,
        peak,
        manifest=image,
        bytes=stored.size,
        seconds=seconds,
        **freed,
    )


def packed_kexec(spec: BootSpec, report: Report) -> NoReturn:
    """bootc.kexec with a packed root: the packed root itself is handed over (kexec.py)."""
    report.state("resolving", source=printable_root(spec))
    with contextlib.closing(open_packed(spec, report)) as source:
        unused = unused_modules(spec)
        with deleted_on_failure(source):
            kexec.packed_kexec_boot(spec, source, report, lambda: free_modules(unused, report))
    raise AssertionError("packed_kexec_boot returned")  # it raises or never returns


def check_handover(spec: BootSpec, newroot: str, report: Report) -> None:
    """That the root can be switched into (initcheck): else a HandoverError, and the root is
    undone. With rd.break, rd.break=pre-pivot or =cleanup a shell after this one, before the
    switch, is asked for: only a warning then (dracut's earlier breaks are behind us)."""
    try:
        initcheck.check(newroot, spec.extra, rw=spec.rw)
    except initcheck.HandoverError as err:
        breaks = (spec.extra.get(name) for name in ("rd.break", "rdbreak") if name in spec.extra)
        if not any(value in ("", "pre-pivot", "cleanup") for value in breaks):
            raise
        report.summary(f"warning: {err.line()} (rd.break= given: the root is left to you)")


def ready(
    report: Report, facts: roots.RootFacts, peak: memory.PeakWatch, seconds: float, **fields: Any
) -> None:
    """The state `ready`: the root and the memory it took, and `fields` of the mode."""
    report.state(
        "ready",
        mode=facts.mode,
        root=facts.status(),
        **fields,
        seconds=round(seconds, 3),
        peak_memory=peak.peak,
        memory_before=peak.start,
        memory_at_peak=peak.at_peak,
    )


@contextlib.contextmanager
def deleted_on_failure(source: packed.PackedSource) -> Iterator[None]:
    """Within, a failure undoes the packed root, which deletes one in the initramfs (its
    memory goes back): CONSUMED is marked then."""
    try:
        yield
    except BaseException:
        if isinstance(source, packed.FileSource):
            files = (source.path, *source.parts)
            if not any(os.path.lexists(p) for p in files):
                consumed(f"{source.path}: deleted by the undo of a failed boot")
        raise


def open_packed(spec: BootSpec, report: Report) -> packed.PackedSource:
    """The packed root root=bootc-live:packed:… names: its first bytes read where it can be."""
    assert spec.image is not None
    if spec.image.kind == "path":
        not_consumed(f"the packed root {spec.image.location}", "as it failed")
        return packed.FileSource(spec.image.location)
    if spec.image.kind == "docker":
        return open_registry_packed(spec, report)
    url = spec.image.location
    fetching = fetch_policy(spec)
    wait_for_route(fetching.total, report, _ipv6_host(url) or ipv6_asked(spec))
    if url.startswith(("http://", "https://")):
        report.say(f"fetching the packed root {http.redact(url)}")
        return packed.open_http(url, fetching, report.say)
    report.say(f"fetching the packed root {http.redact(url)} with dracut's url-lib")
    return packed.UrlLibSource(url, fetching)


def open_registry_packed(spec: BootSpec, report: Report) -> packed.PackedSource:
    """packed:docker://REF: the image resolved and trusted as a docker:// boot's (bootc.digest=,
    the policy), then the packed root artifact whose subject it is (packedreg)."""
    assert spec.packed_sha256 is not None  # cmdline.check_packed
    source = open_registry_source(spec, report)
    try:
        image = resolve_and_trust(spec, source, report)
        subject = image.manifest_digest
        if spec.packed_image and spec.packed_image != subject:
            raise packed.PackedError(
                f"{source.description} is the image {subject}, bootc.packed.image= says "
                f"{spec.packed_image}",
                "drop bootc.packed.image= (the registry names the image), or fix it",
            )
        found = packedreg.open_registry(source, subject, spec.packed_sha256, report.say)
    except BaseException:
        source.close()
        raise
    found.image = subject
    return found


def packed_progress(source: packed.PackedSource, report: Report) -> packed.Fetched:
    """Progress lines while a packed root of known size streams in (none when quiet)."""
    if report.quiet or source.in_place or not source.size:
        return lambda _: None
    lines = Progress(source.size, 1)
    return lambda done: lines.update(1, done)


def plan_packed(spec: BootSpec, source: packed.PackedSource, report: Report) -> memory.Memory:
    """Stop now, with the figures, unless the packed root and its overlays (on a zram device
    with bootc.zram) fit in memory."""
    reserve = lower_reserve(spec, report)
    mem = memory.Memory.read()
    stored = source.storing_takes
    need, what = memory.check_packed(mem, source.size, stored, source.description, spec.mode)
    have = mem.available - memory.RESERVE
    fs = source.format
    report.say(
        f"needs about {memory.mib_up(need)} MiB {what}, {have >> 20} MiB available"
        + (f"; it is {fs.name} ({fs.compressor})" if fs else "")
    )
    report.state(
        "planned",
        mode="packed",
        packed_bytes=source.size,
        format=fs.name if fs else None,
        compressor=fs.compressor if fs else None,
        need=need,
        available=have,
        memory_in_use=memory.in_use_by(),
        per_cpu_free=mem.per_cpu,
        min_free_kbytes=reserve,
    )
    return mem


def lower_reserve(spec: BootSpec, report: Report) -> list[int] | None:
    """In the initramfs, the kernel's own free-memory reserve instead of the one transparent
    hugepages raised (memory.lower_min_free): [was, now] in KiB, None if left as it was (also
    when the command line sets it: sysctl.vm.min_free_kbytes=)."""
    if not modules.in_initramfs() or "sysctl.vm.min_free_kbytes" in spec.extra:
        return None
    lowered = memory.lower_min_free(memory.Memory.read().total)
    if lowered is None:
        return None
    was, now = lowered
    report.say(
        f"vm.min_free_kbytes {was} -> {now}: {(was - now) >> 10} MiB more for the root (the "
        "kernel's reserve for this RAM; transparent hugepages had raised it)"
    )
    return [was, now]


def resolve_and_trust(spec: BootSpec, source: ImageSource, report: Report) -> Image:
    """The image root= and bootclabel= name, its digest checked against bootc.digest and its
    signatures against the policy, before any layer is fetched; in a kexec'd stage two, with
    what the previous stage verified trusted."""
    assert spec.image is not None
    verified = spec.kexec_verified if spec.image.kind == "path" else None
    # A malformed policy stops the boot before any fetch. The image handed over by a kexec
    # stage one is local; whether it needs a policy at all is known from its record (stage
    # one's bootc.policy= may name a file only stage one's initramfs has).
    rules, registries = (None, None) if verified else load_policy(spec)
    image = resolve(source, label=spec.label, platform=spec.platform, digest=spec.digest)
    if verified:
        image = handover.trust_previous_stage(image, spec.image.location, verified, report.say)
        report.note(
            handover_layers=len(image.verified_blobs),
            handover_diff_ids=len(image.verified_diff_ids),
        )
        if not accepted_before(image):
            rules, registries = load_policy(spec)
    image = check_signatures(spec, source, image, rules, registries, report)
    report.note(
        manifest=image.manifest_digest,
        layers=len(image.layers),
        compressed=image.compressed_size,
    )
    return image


def load_policy(spec: BootSpec) -> tuple[policy.Policy | None, RegistriesD | None]:
    """bootc.policy=, else the initramfs's /etc/containers/policy.json if it has one, and its
    registries.d; (None, None) when there is no policy: nothing is checked."""
    path = spec.policy or (POLICY if os.path.exists(POLICY) else None)
    if path is None:
        return None, None
    return policy.Policy.load(path), RegistriesD.load(REGISTRIES_D)


def accepted_before(image: Image) -> bool:
    """Whether the kexec stage one that handed this image over accepted its signatures."""
    return bool(image.verified_blobs and image.signatures.get("accepted"))


def check_signatures(
    spec: BootSpec,
    source: ImageSource,
    image: Image,
    rules: policy.Policy | None,
    registries: RegistriesD | None,
    report: Report,
) -> Image:
    """The policy's verdict on the image's top document (docs/signatures.md), said, and noted
    for the status (and a kexec handover). A kexec'd stage two takes the verdict of the stage
    that checked this very manifest before it handed it over (its record says so)."""
    if accepted_before(image):
        found = dict(image.signatures, handover=True)
        verdict = policy.Verdict(found["scope"], tuple(found["keys"]))
        report.say(f"{verdict.line()}, by the previous stage (kexec handover)")
    elif rules is None:
        found = {"checked": False}
        report.say("signatures: not checked (no policy in the initramfs)")
    else:
        if isinstance(source, registry.RegistrySource):
            name = trust.policy_name(source)
        else:
            name = spec.identity or ""
        start = time.monotonic()  # the check's time (fetching signatures, gpgv, openssl)
        try:
            verdict = trust.check(
                rules, "docker", name, source, image, registries, fetch_policy(spec), report.say
            )
        except policy.PolicyError as err:
            report.note(signatures={"checked": True, "accepted": False, "reason": err.reason})
            raise policy.PolicyError(
                str(err), err.reason, err.hint or f"the policy is {rules.source}"
            ) from None
        except (signatures.SignatureError, trust.TrustError, http.FetchError) as err:
            # A store that cannot be read, a signature that is malformed: not accepted either.
            reason = err.reason if isinstance(err, signatures.SignatureError) else trust.UNREADABLE
            report.note(signatures={"checked": True, "accepted": False, "reason": reason})
            raise policy.PolicyError(
                str(err),
                reason,
                f"mend or remove that signature store of {source.description}, or change the "
                f"policy {rules.source}",
            ) from None
        report.say(verdict.line())
        found = {
            "checked": True,
            "accepted": True,
            "scope": verdict.scope,
            "keys": verdict.keys,
            "seconds": round(time.monotonic() - start, 3),
        }
    report.note(signatures=found)
    return replace(image, signatures=found)


def kexec_into_the_image(spec: BootSpec, image: Image, report: Report) -> NoReturn:
    """bootc.kexec: stage one loads no module, so all that are not loaded are freed first."""
    report.say(
        f"image {image.manifest_digest}: {len(image.layers)} layers, "
        f"{image.compressed_size >> 20} MiB {image.blobs_are}; bootc.kexec: looking for its "
        "kernel"
    )
    free_modules(unused_modules(spec), report)
    kexec.kexec_boot(spec, image, memory.Memory.read(), report)
    raise AssertionError("kexec_boot returned")  # it raises or never returns


@dataclass(frozen=True)
class Plan:
    """What the root may take: the memory (the unused modules and tools counted as free) and
    its need."""

    mem: memory.Memory
    unused: modules.Unused  # the initramfs's modules freed once the root has loaded its own
    need: memory.Need
    spare: tools.Unused  # the initramfs's tools the rest of the boot will not run
    imported: modules.Unused  # the Python files of the modules imported (pyfiles.py)
    have: int = 0  # what the root may take: a tmpfs holds no more while the image is unpacked
    window: int = memory.ZSTD_RESERVED_WINDOW  # the zstd window planned for (memory.zstd_window)


def plan_root(spec: BootSpec, image: Image, source: ImageSource, report: Report) -> Plan:
    """Stop now, naming a mode that would fit, unless the image fits in the mode asked for."""
    unused = unused_modules(spec)
    spare = unused_tools(spec)
    imported = unused_python(spec)
    reserve = lower_reserve(spec, report)
    mem = memory.Memory.read()
    # The modules, tools and Python files freed once the root is prepared count as available
    # now (less the few modules the root loads itself: a MiB or two, within
    # memory.UNPACK_RESERVE).
    freed_next = unused.size + spare.files.size + imported.size
    mem = replace(mem, available=mem.available + freed_next)
    consumed = isinstance(source, LayoutSource) and source.consume
    # A zstd window beyond what memory.UNPACK_RESERVE holds is held on top, as the fetch's.
    window = memory.zstd_window(image)
    ahead = held_ahead(spec, image) + window - memory.ZSTD_RESERVED_WINDOW
    est, need = memory.check(
        image, mem, blobs_freed=consumed, mode=spec.mode, ahead=ahead, kinds=roots.usable_kinds()
    )
    have = memory.available(mem, image, blobs_freed=consumed, ahead=ahead)
    report.say(
        f"image {image.manifest_digest}: {len(image.layers)} layers, "
        f"{image.compressed_size >> 20} MiB {image.blobs_are}, about {est.unpacked >> 20} MiB "
        f"unpacked ({est.how}); {spec.mode.kind} root: needs about "
        f"{memory.mib_up(need.peak)} MiB, {have >> 20} MiB available"
        + (
            f" ({freed_next >> 20} MiB of it unused kernel modules, tools and Python files, "
            "freed next)"
            if freed_next
            else ""
        )
    )
    report.state(
        "planned",
        unpacked_estimate=est.unpacked,
        estimate_how=est.how,
        mode=spec.mode.kind,
        need=need.peak,
        available=have,
        reserve=memory.UNPACK_RESERVE + ahead,
        modules_unused_bytes=unused.size,
        tools_unused_bytes=spare.files.size,
        python_unused_bytes=imported.size,
        memory_in_use=memory.in_use_by(),
        per_cpu_free=mem.per_cpu,
        min_free_kbytes=reserve,
    )
    return Plan(mem, unused, need, spare, imported, have, window)


def held_ahead(spec: BootSpec, image: Image) -> int:
    """What a remote source holds ahead of the unpack, at most: the parts of a layer larger
    than http.PARALLEL_MIN fetched through bootc.connections (each of http.PART bytes, one more
    than the connections), a registry's fetch-ahead of the small layers (registry.PREFETCH_HELD
    at most)."""
    assert spec.image is not None
    if spec.image.kind not in ("url", "docker"):
        return 0
    ahead = 0
    connections = spec.connections or http.CONNECTIONS
    if connections > 1 and any(layer.size > http.PARALLEL_MIN for layer in image.layers):
        ahead += (connections + 1) * http.PART
    if spec.image.kind == "docker":
        # The first layer is read as the unpack starts; the small ones after it come ahead,
        # each held twice while its parts join.
        small = [x.size for x in image.layers[1:] if x.size <= registry.PREFETCH_MAX_BLOB]
        ahead += min(registry.PREFETCH_HELD, 2 * sum(small))
    return ahead


def mount_plan(spec: BootSpec) -> mounts.MountPlan:
    return mounts.MountPlan(spec.rw, spec.etc_rw, spec.var_rw, spec.rootflags)


def progress(image: Image, report: Report) -> Progress | None:
    return None if report.quiet else Progress(image.compressed_size, len(image.layers))


def unused_modules(spec: BootSpec) -> modules.Unused:
    """The initramfs's kernel modules that are not loaded, unless bootc.keep-modules."""
    if spec.keep_modules or not modules.in_initramfs():
        return modules.Unused()
    return modules.unused()


def unused_tools(spec: BootSpec) -> tools.Unused:
    """The initramfs's tools (tools.py) the rest of this boot will not run: all but EROFS's
    mkfs.erofs, unless bootc.keep-modules."""
    if spec.keep_modules or not modules.in_initramfs():
        return tools.Unused()
    return tools.unused(keep=tools.still_run(spec.mode.kind))


def unused_python(spec: BootSpec) -> modules.Unused:
    """The Python files of the modules imported so far (pyfiles.py), unless
    bootc.keep-modules."""
    if spec.keep_modules or not modules.in_initramfs():
        return modules.Unused()
    return pyfiles.unused()


def free_spare(
    unused: modules.Unused, spare: tools.Unused, imported: modules.Unused, report: Report
) -> dict[str, Any]:
    """Free the unused modules, the tools and the imported modules' Python files; what was
    freed, as the status says it. FREED marks it first: the runtime cannot run again in this
    initramfs (systemd's emergency shell starts bootc-live.service again when it is left; the
    unit and the shell hook stop then, saying why)."""
    if unused.paths or spare.files.paths or imported.paths:
        with contextlib.suppress(OSError):
            os.makedirs(STATUS_DIR, exist_ok=True)
            with open(os.path.join(STATUS_DIR, FREED), "w", encoding="utf-8") as f:
                f.write("modules, tools and Python files freed: the runtime cannot run again\n")
    freed = free_modules(unused, report)
    gone = free_tools(spare, report)
    python = free_python(imported, report)
    return {
        "modules_freed": len(freed.paths),
        "modules_freed_bytes": freed.size,
        "tools_freed": list(gone.tools),
        "tools_freed_bytes": gone.files.size,
        "python_freed": len(python.paths),
        "python_freed_bytes": python.size,
    }


def free_python(imported: modules.Unused, report: Report) -> modules.Unused:
    """Delete the imported modules' source and bytecode; what was freed."""
    if not imported.paths:
        return imported
    freed = modules.delete(imported.paths)
    if freed.paths:
        report.say(
            f"freed {freed.size >> 20} MiB: the Python source and bytecode of the modules the "
            "runtime has imported, read no more (bootc.keep-modules=1 keeps them)"
        )
    return freed


def free_tools(unused: tools.Unused, report: Report) -> tools.Unused:
    """Delete their files; what was freed."""
    if not unused.files.paths:
        return unused
    gone = tools.free(unused)
    if gone.files.paths:
        which = ", ".join(gone.tools) or "tools (in part: the rest cannot be deleted)"
        report.say(
            f"freed {gone.files.size >> 20} MiB: the initramfs's {which} and the libraries "
            "only they load: this boot runs them no more (bootc.keep-modules=1 keeps them)"
        )
    return gone


def free_modules(unused: modules.Unused, report: Report) -> modules.Unused:
    """Delete them (keeping any loaded since they were counted); what was freed."""
    if not unused.paths:
        return unused
    freed = modules.free(unused)
    if freed.paths:
        report.say(
            f"freed {freed.size >> 20} MiB: the initramfs's {len(freed.paths)} kernel modules "
            "that are not loaded (bootc.keep-modules=1 keeps them)"
        )
    return freed


# -- the sources -----------------------------------------------------------------------------


def open_source(spec: BootSpec, report: Report) -> ImageSource:
    """The image source named by root=bootc-live:…."""
    assert spec.image is not None
    if spec.image.kind == "url":
        return open_url_source(spec, report)
    if spec.image.kind == "docker":
        return open_registry_source(spec, report)
    path = spec.image.location
    if spec.image.kind == "block":
        seconds = spec.timeout or cmdline.BLOCK_WAIT
        return block.open_disk(spec.image.device, path, seconds, report.say)
    if os.path.isdir(path):
        not_consumed(f"layers of {path}", "as it applied them")
        return InitramfsLayout(path)
    if os.path.isfile(path):
        return ArchiveSource(path)
    raise BootcLiveError(
        f"no image at {path} in the initramfs",
        "append rootfs.img from bootc-live build as an extra initrd, or fix root=",
    )


class InitramfsLayout(LayoutSource):
    """The layout in the initramfs: its blobs are deleted as their layers are applied (memory
    comes back) where they can be, CONSUMED marked first: an attempt after a failed one (from
    the emergency shell, with bootc.keep-modules=1) says why it cannot read the image, not
    that the image lacks a blob."""

    def __init__(self, path: str) -> None:
        # Not where nothing can be deleted (a layout on a read-only filesystem dracut mounted,
        # a live CD's): its blobs hold no RAM to give back, and stay.
        super().__init__(path, consume=os.access(os.path.join(path, "blobs"), os.W_OK))

    def release(self, desc: Descriptor) -> None:
        if self.consume:
            consumed(f"{self.path}: layers deleted as they were applied")
        super().release(desc)


def consumed(what: str) -> None:
    """Mark CONSUMED: what in the initramfs is being deleted (`what` says)."""
    with contextlib.suppress(OSError):  # as FREED: the boot goes on without the mark
        os.makedirs(STATUS_DIR, exist_ok=True)
        with open(os.path.join(STATUS_DIR, CONSUMED), "w", encoding="utf-8") as f:
            f.write(what + "\n")


def not_consumed(what: str, when: str) -> None:
    """Refuse to read `what` from the initramfs again once an earlier attempt deleted it (`when`
    it did), rather than call it missing."""
    if os.path.exists(os.path.join(STATUS_DIR, CONSUMED)):
        raise BootcLiveError(
            f"an earlier attempt in this boot deleted {what} from the initramfs {when} (their "
            "memory went to the root): it is not whole any more",
            "reboot to try again",
        )


def open_url_source(spec: BootSpec, report: Report) -> ImageSource:
    """http(s) natively (in place with Range); ftp, tftp and nfs through dracut's url-lib."""
    assert spec.image is not None
    url = spec.image.location
    fetching = fetch_policy(spec)
    wait_for_route(fetching.total, report, _ipv6_host(url) or ipv6_asked(spec))
    spool = RamSpool(os.path.join(STATUS_DIR, "download"), http.redact(url))
    if url.startswith(("http://", "https://")):
        return http.open_url(url, fetching, report.say, spool)
    report.say(f"fetching {http.redact(url)} with dracut's url-lib")
    path = os.path.join(spool.directory, "download.oci")
    try:
        spool.take(None)
        urllib_dracut.fetch(url, path, fetching, URL_LIB_FULL_HINT)
        return ArchiveSource(path, delete=True, name=http.redact(url), release=spool.release)
    except BaseException:  # no oci-archive: the download goes (it is in RAM)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        spool.release()
        raise


# url-lib stores the whole archive before it is read: over http(s) it is read in place.
URL_LIB_FULL_HINT = "add RAM, or serve the archive over http(s) with Range support"


class RamSpool(http.Spool):
    """Where an archive that cannot be read in place is downloaded at boot: a tmpfs of its
    own, mounted when first needed, sized to the memory free then less memory.RESERVE, gone
    once the archive is. The initramfs's /run is systemd's, 20% of RAM: a 400 MB archive on
    a 1.5 GiB machine did not fit there, and an endless answer would fill RAM anywhere
    unbounded."""

    full_hint = (
        "add RAM, or serve the archive with Range support (it is then read in place, not stored)"
    )

    def __init__(self, directory: str, name: str) -> None:
        super().__init__(directory)
        self.name = name
        self.mounted = False

    def take(self, length: int | None) -> str:
        mem = memory.Memory.read()
        room = max(mem.available - memory.RESERVE, 0)
        if length is not None and length > room:
            raise memory.NotEnoughMemory(
                f"{self.name} must be downloaded whole (the server does not read it in parts) "
                f"and is {memory.mib_up(length)} MiB; {room >> 20} MiB of memory are free for it",
                self.full_hint,
            )
        os.makedirs(self.directory, exist_ok=True)
        if not self.mounted:
            mounts.mount_tmpfs(self.directory, max(room, 1 << 20))
            self.mounted = True
        return self.directory

    def release(self) -> None:
        if self.mounted:
            self.mounted = False
            mounts.umount(self.directory)


def fetch_policy(spec: BootSpec) -> http.Policy:
    """The deadlines, retries and connections of every fetch: bootc.retries=, bootc.timeout=,
    bootc.connections=."""
    return http.Policy(
        retries=spec.retries,
        stall=spec.timeout or http.Policy.stall,
        connections=spec.connections or http.CONNECTIONS,
    )


def printable_root(spec: BootSpec) -> str:
    """root= fit to print: a URL without its password."""
    assert spec.image is not None
    if spec.image.kind == "url":
        return str(replace(spec.image, location=http.redact(spec.image.location)))
    return str(spec.image)


def open_registry_source(spec: BootSpec, report: Report) -> registry.RegistrySource:
    """docker://REF with our own distribution client, through the mirrors first."""
    assert spec.image is not None
    ref = registry.Reference.parse(spec.image.location)
    fetching = fetch_policy(spec)
    wait_for_route(fetching.total, report, ref.registry.startswith("[") or ipv6_asked(spec))
    default = registry.AUTH_IN_INITRAMFS
    auth = spec.registry_auth or (default if os.path.exists(default) else None)
    report.say(
        f"pulling {ref}"
        + (f" (mirrors: {', '.join(spec.registry_mirrors)})" if spec.registry_mirrors else "")
    )
    return registry.RegistrySource(
        ref,
        fetching,
        report.say,
        auth_file=auth,
        unsecure=spec.registry_unsecure,
        mirrors=spec.registry_mirrors,
        mirrors_digest_only=spec.registry_mirrors_digest_only,
    )


ROUTES4, ROUTES6 = "/proc/net/route", "/proc/net/ipv6_route"


IPV6_ONLY_GRACE = 20.0  # seconds an IPv6 route waits for an IPv4 one (wait_for_route)


def _ipv6_host(url: str) -> bool:
    """Whether a URL's server is an IPv6 address (`[…]`): then an IPv6 route is what it needs."""
    authority = re.split(r"[/?#]", url.partition("://")[2], maxsplit=1)[0]
    return authority.rpartition("@")[2].startswith("[")


def ipv6_asked(spec: BootSpec) -> bool:
    """Whether ip= asks for IPv6 only (dracut's dhcp6, auto6, either6): then an IPv6 route
    is all there will be."""
    words = re.split(r"[:,]", spec.extra.get("ip", ""))
    return any(w in ("dhcp6", "auto6", "either6") for w in words) and not any(
        w in ("dhcp", "on", "any", "single-dhcp") for w in words
    )


def configured(routes4: str, routes6: str, ipv6: bool = False) -> bool:
    """Whether the kernel's route tables (their /proc/net texts) show an interface other
    than lo configured: any IPv4 route, or, for a server at an IPv6 address, an IPv6 route
    that is not fe80::/10 nor ff00::/8 (not for others: a dual-stack link has its IPv6 route
    from the router before DHCP gives IPv4, and a fetch then would fail and back off)."""
    if any(line.split()[0] != "lo" for line in routes4.splitlines()[1:] if line.strip()):
        return True
    if not ipv6:
        return False
    for line in routes6.splitlines():
        fields = line.split()
        if len(fields) == 10 and fields[9] != "lo":
            dest = fields[0].lower()
            if not (dest.startswith("ff") or dest[:3] in ("fe8", "fe9", "fea", "feb")):
                return True
    return False


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    except FileNotFoundError:  # a kernel without IPv6
        return ""


def wait_for_route(
    timeout: float, report: Report, ipv6: bool = False, grace: float = IPV6_ONLY_GRACE
) -> None:
    """Wait until some interface is configured: has an IPv4 route, or an IPv6 one beyond the
    link-local and multicast ones every link has when up (dracut brings links up). An IPv6
    route alone counts at once for an IPv6 server or ip=dhcp6|auto6, else once no IPv4 route
    has come for `grace` seconds after it (a network of IPv6 only, with SLAAC).

    Not necessarily a default route: a server on the local subnet needs none.
    """
    deadline = time.monotonic() + timeout
    said = False
    only6_since: float | None = None
    while time.monotonic() < deadline:
        routes4, routes6 = _read_text(ROUTES4), _read_text(ROUTES6)
        if configured(routes4, routes6, ipv6):
            return
        if configured("", routes6, True):
            only6_since = time.monotonic() if only6_since is None else only6_since
            if time.monotonic() - only6_since >= grace:
                report.say(f"no IPv4 route after {grace:.0f}s, an IPv6 one: going on with IPv6")
                return
        if not said:
            report.say("waiting for the network")
            said = True
        time.sleep(min(0.5, max(0.01, grace / 4)))
    raise BootcLiveError(
        "no network: no interface was configured",
        "check the cable, DHCP, or ip= on the kernel command line",
    )
