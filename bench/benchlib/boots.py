"""One boot: how a row boots (Target), what it showed (BootRun: the verdict, the events, the
runtime's figures from its status lines) and the phases computed from it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import debian_image
from benchlib.common import MIB
from benchlib.console import (
    EVENTS,
    ORIGINAL_STATE_EVENTS,
    ORIGINAL_STATES,
    Event,
    LineClock,
    clean,
    failure_reason,
    kernels,
    kexec_timeline,
    last_status,
    original_status_of,
    original_steps,
    other_qemus,
    second_kernel,
    timeline,
)
from bootc_live.vm import Boot, VmConfig, boot


@dataclass(frozen=True)
class Target:
    """How one row boots: which artifacts, what is appended, what counts as success."""

    row: str
    artifacts: Path  # a directory for VmConfig (for URL rows: initrd-full.img is initrd.img)
    append: str = ""
    port: int | None = None  # nginx or docker-registry on 127.0.0.1, seen by the guest at
    # GUEST_SERVER:guest_port (QEMU's guestfwd)
    goal: str = "verdict"  # "verdict", "switch-root" (marker = the image's greeting) or "ready"
    marker: str = debian_image.MARKER
    fstype: str = ""  # for "verdict": the root's fstype the verdict must report (the root mode)
    guest_port: int = 80  # 80 for nginx, REGISTRY_PORT for the registry
    kexec: bool = False  # a bootc.kexec boot: two kernels, the console read per stage
    original: bool = False  # the original pipeline (bench/original): its own status lines
    packed: bool = False  # the packed root: cmdline-packed.txt's pin, packed.img from the URL
    # that `append`'s root= names
    # Other servers the guest reaches, (port on GUEST_SERVER, port on 127.0.0.1): the
    # registry-signed row's lookaside nginx.
    more_forwards: tuple[tuple[int, int], ...] = ()


@dataclass
class BootRun:
    row: str
    goal: str
    mem: int
    ended: str
    seconds: float
    verdict: dict[str, str]
    events: dict[str, Event] = field(default_factory=dict)
    want_fstype: str = ""  # the verdict's fstype must be this one (when set)
    # The runtime's own figures, from its last status document (stage two's for kexec; byte
    # figures in MiB, rounded down).
    state: str = ""  # its last state: "ready", "failed", … ("": no status line seen)
    status: dict[str, Any] = field(default_factory=dict)  # that document, as it was
    entries: int | None = None
    written_mib: int | None = None  # regular-file data written ("bytes")
    unpack_s: float | None = None  # "seconds"
    peak_mib: int | None = None  # "peak_memory": MemTotal - MemAvailable - per-CPU lists
    start_mib: int | None = None  # "memory_before": the same, when the runtime began
    # "memory_at_peak": what held the peak's memory in use (AT_PEAK: the status's names)
    peak_files_mib: int | None = None
    peak_tmpfs_mib: int | None = None
    peak_processes_mib: int | None = None
    peak_kernel_mib: int | None = None
    peak_other_mib: int | None = None
    freed_mib: int | None = None  # the unused kernel modules and tools freed
    compressed_mib: int | None = None
    available_mib: int | None = None  # what the root may take ("available")
    estimate_mib: int | None = None  # "unpacked_estimate": the planner's estimate
    mode: str | None = None  # the root mode planned
    # The policy's verdict ("signatures"): the check's own seconds (fetching the signatures,
    # gpgv, openssl) and the keys that verified the image, when a policy was checked.
    signatures_s: float | None = None
    signatures_keys: list[str] = field(default_factory=list)
    need_mib: int | None = None  # "need": what the mode needs at the peak (rounded up)
    root: dict[str, Any] | None = None  # the ready document's root
    zram_algorithm: str | None = None
    zram_stored_mib: float | None = None  # the data on the zram device ("stored")
    zram_ram_mib: float | None = None  # the RAM the device takes ("memory")
    erofs_sha256: str | None = None  # the EROFS image's sha256 (reproducible: the same each boot)
    erofs_mib: float | None = None
    erofs_compress: str | None = None
    mkfs_erofs: str | None = None
    # The packed root: the file mounted (its pin, the same in every boot), its size and format,
    # and the runtime's seconds from its start to the root mounted ("seconds").
    packed_sha256: str | None = None
    packed_mib: float | None = None
    packed_format: str | None = None  # FORMAT:COMPRESSOR
    packed_s: float | None = None
    memused_mib: float | None = None  # the verdict's memused: in use once booted (MemTotal -
    # MemAvailable, when the verdict unit runs)
    other_qemus: int = 0  # other QEMU processes seen during the boot
    # bootc.kexec (the kexec row): stage one's own figures, from its last status document
    # (its "kexec" and "kexec-loaded" states).
    kexec: bool = False
    kernels: list[str] = field(default_factory=list)  # the kernels' banners, in order
    kexec_status: dict[str, Any] = field(default_factory=dict)  # stage one's last document
    kexec_kver: str | None = None  # the image's kernel stage one found
    kexec_layers_read: int | None = None  # the top layers read to find it
    kexec_layers: int | None = None  # of the image's layers
    kexec_stage_one_s: float | None = None  # "kexec_seconds": stage one's work
    kexec_loader: str | None = None  # kexec_file_load or kexec_load
    kexec_inuse_mib: int | None = None  # memory in use with the next kernel loaded
    kexec_initrd_mib: int | None = None  # the next initrd: its initramfs + the handover
    kexec_handover_mib: int | None = None  # the blobs handed over
    kexec_work_peak_mib: int | None = None  # the peak in use before loading
    kexec_work_start_mib: int | None = None  # in use at stage one's start
    kexec_loading_peak_mib: int | None = None  # the peak while loading
    kexec_command_line: str | None = None  # stage two's, as stage one passed it
    # The original pipeline (the original-* rows): its steps' seconds, from the uptime on its
    # status lines (start → fetching → fetched → extracted → unpacked → ready).
    original: bool = False
    original_steps: list[dict[str, Any]] = field(default_factory=list)  # its status lines
    original_fetch_s: float | None = None  # the archive into RAM (copy/download)
    original_extract_s: float | None = None  # tar -x: the layout into RAM
    original_umoci_s: float | None = None  # umoci unpack into the tmpfs
    original_bind_s: float | None = None  # the bind mounts (and the layout removed)
    original_work_s: float | None = None  # start → ready: all of its work
    failure: str = ""
    console_tail: str = ""  # the end of the console, for a failed boot

    @property
    def ok(self) -> bool:
        if self.ended != "marker":
            return False
        if self.goal == "verdict":
            v = self.verdict
            if self.want_fstype and v.get("fstype") != self.want_fstype:
                return False  # booted, but not on the root mode asked for
            if self.kexec and (
                self.kexec_kver is None
                or len(self.kernels) < 2
                or v.get("kernel") != self.kexec_kver
            ):
                return False  # booted, but not through kexec into the image's kernel
            return (v.get("root"), v.get("etc"), v.get("var")) == ("ro", "rw", "rw") and v.get(
                "target"
            ) == "multi-user"
        return self.state == "ready"  # the live root was ready (and, for switch-root, the
        # image's own systemd greeted the console: the marker)

    @property
    def above_start_mib(self) -> int | None:
        """What the fetch and unpack added: the peak above the baseline, which is what was in
        use at the start less the unused modules and tools the runtime freed before unpacking."""
        if self.peak_mib is None or self.start_mib is None:
            return None
        return self.peak_mib - (self.start_mib - (self.freed_mib or 0))

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok, "above_start_mib": self.above_start_mib}


def boot_once(target: Target, mem: int, timeout: float, console: Path) -> BootRun:
    clock = LineClock()
    result = boot(
        VmConfig(
            target.artifacts,
            append=target.append,
            mem=mem,
            network=target.port is not None,
            packed=target.packed,
            embedded=not target.packed,  # a packed root from a URL: initrd.img alone
            forwards=()
            if target.port is None
            else ((target.guest_port, target.port), *target.more_forwards),
        ),
        timeout=timeout,
        markers=(target.marker,),
        echo=clock,  # type: ignore[arg-type]
        log=console,
    )
    clock.write("\n")
    run = read_boot(target, mem, result, clock.lines)
    run.other_qemus = len(clock.others | other_qemus())
    return run


def read_boot(target: Target, mem: int, result: Boot, timed: list[tuple[float, str]]) -> BootRun:
    """What a boot showed: `result` (its console, how it ended) and `timed`, its console
    lines with the host seconds each arrived at."""
    rest = result.markers.get(debian_image.MARKER, "")
    verdict = dict(item.split("=", 1) for item in rest.split() if "=" in item)
    if target.kexec:
        events = kexec_timeline(timed)
    elif target.original:
        events = timeline(timed, EVENTS, ORIGINAL_STATE_EVENTS, original_status_of)
    else:
        events = timeline(timed)
    run = BootRun(
        target.row,
        target.goal,
        mem,
        result.ended,
        result.seconds,
        verdict,
        events,
        target.fstype,
        kexec=target.kexec,
        original=target.original,
    )
    if verdict.get("memused", "").isdigit():
        run.memused_mib = int(verdict["memused"]) / 1024  # KiB
    lines = [clean(line) for line in result.output.splitlines()]
    if target.kexec:
        # Stage one's status lines, then stage two's: the runtime's figures are stage two's.
        run.kernels = kernels(lines)
        cut = second_kernel(lines)
        read_stage_one(run, last_status(lines if cut is None else lines[:cut]))
        read_status(run, last_status([] if cut is None else lines[cut:]))
    elif target.original:
        read_original(run, original_steps(lines))
    else:
        read_status(run, last_status(lines))
    if not run.ok:
        run.failure = failure_reason(lines, result.ended, result.seconds, target.original)
        if verdict and run.want_fstype and verdict.get("fstype") != run.want_fstype:
            run.failure = f"the root is {verdict.get('fstype')}, not {run.want_fstype}: {rest}"
        elif run.kexec and verdict and verdict.get("kernel") != run.kexec_kver:
            run.failure = (
                f"booted kernel {verdict.get('kernel')}, not the image's {run.kexec_kver} "
                f"through kexec (kernels seen: {', '.join(run.kernels) or 'none'}): {rest}"
            )
        elif run.kexec:
            stage = "stage two" if len(run.kernels) > 1 else "stage one"
            run.failure = f"{stage}: {run.failure}"
        run.console_tail = "\n".join(lines[-30:])
    return run


def mib(doc: dict[str, Any], key: str) -> int | None:
    """A byte figure of a status document in MiB, rounded down."""
    value = doc.get(key)
    return value >> 20 if isinstance(value, int) and not isinstance(value, bool) else None


# The parts of the ready status's memory_at_peak, each as the BootRun field it goes to.
AT_PEAK = {
    "initramfs_files": "peak_files_mib",
    "tmpfs": "peak_tmpfs_mib",
    "processes": "peak_processes_mib",
    "kernel": "peak_kernel_mib",
    "other": "peak_other_mib",
}


def read_status(run: BootRun, doc: dict[str, Any]) -> None:
    """The runtime's own figures, from its last status document: the plan's, the modules and
    tools freed, and once ready, the unpack's, the memory's and the root's."""
    run.status = doc
    run.state = doc.get("state", "")
    run.compressed_mib = mib(doc, "compressed")
    run.available_mib = mib(doc, "available")
    run.estimate_mib = mib(doc, "unpacked_estimate")
    run.mode = doc.get("mode")
    need = doc.get("need")
    run.need_mib = -(-need // MIB) if isinstance(need, int) else None
    modules_freed = doc.get("modules_freed_bytes")
    if isinstance(modules_freed, int) and not isinstance(modules_freed, bool):
        for also in ("tools_freed_bytes", "python_freed_bytes"):
            freed = doc.get(also)
            if isinstance(freed, int) and not isinstance(freed, bool):
                modules_freed += freed
        run.freed_mib = modules_freed >> 20
    signatures = doc.get("signatures")
    if isinstance(signatures, dict) and signatures.get("checked"):
        seconds = signatures.get("seconds")
        run.signatures_s = float(seconds) if isinstance(seconds, (int, float)) else None
        run.signatures_keys = [str(k) for k in signatures.get("keys") or []]
    if run.state != "ready":
        return
    run.entries = doc.get("entries")
    run.written_mib = mib(doc, "bytes")
    run.unpack_s = doc.get("seconds")
    run.peak_mib = mib(doc, "peak_memory")
    run.start_mib = mib(doc, "memory_before")
    at_peak = doc.get("memory_at_peak")
    if isinstance(at_peak, dict):
        for part, name in AT_PEAK.items():
            setattr(run, name, mib(at_peak, part))
    root = doc.get("root")
    run.root = root if isinstance(root, dict) else None
    if run.root is None:
        return
    if run.root.get("mode") == "zram":
        run.zram_algorithm = run.root.get("algorithm")
        run.zram_stored_mib = run.root["stored"] / MIB if "stored" in run.root else None
        run.zram_ram_mib = run.root["memory"] / MIB if "memory" in run.root else None
    if run.root.get("mode") == "packed":
        # Nothing was unpacked: "bytes" is the packed root's, "seconds" the whole load's.
        run.written_mib, run.unpack_s = None, None
        run.packed_sha256 = run.root.get("sha256")
        run.packed_mib = run.root["bytes"] / MIB if "bytes" in run.root else None
        run.packed_format = f"{run.root.get('format')}:{run.root.get('compressor')}"
        run.packed_s = doc.get("seconds")
    if run.root.get("mode") == "erofs":
        run.erofs_sha256 = run.root.get("sha256")
        run.erofs_mib = run.root["bytes"] / MIB if "bytes" in run.root else None
        run.erofs_compress = run.root.get("compress")
        run.mkfs_erofs = run.root.get("mkfs_erofs")


def read_original(run: BootRun, steps: list[dict[str, Any]]) -> None:
    """The original pipeline's figures, from its status lines: its last state, each step's
    seconds (the uptime between a state's first line and the next state's), the archive's size,
    the memory in use when it started and the most its lines saw (sampled at its steps only)."""
    run.original_steps = steps
    run.state = steps[-1]["state"] if steps else ""
    run.status = steps[-1] if steps else {}
    at: dict[str, float] = {}
    for doc in steps:
        uptime = doc.get("uptime")
        if isinstance(uptime, (int, float)) and doc["state"] not in at:
            at[doc["state"]] = float(uptime)

    def between(a: str, b: str) -> float | None:
        return at[b] - at[a] if a in at and b in at else None

    s = ORIGINAL_STATES  # start, fetching, fetched, extracted, unpacked, ready
    run.original_fetch_s = between(s[1], s[2])
    run.original_extract_s = between(s[2], s[3])
    run.original_umoci_s = between(s[3], s[4])
    run.original_bind_s = between(s[4], s[5])
    run.original_work_s = between(s[0], s[5])
    in_use = [m for doc in steps if (m := mib(doc, "memory_in_use")) is not None]
    run.peak_mib = max(in_use) if in_use else None
    run.start_mib = in_use[0] if in_use else None
    run.compressed_mib = next(
        (m for doc in steps if (m := mib(doc, "archive_bytes")) is not None), None
    )


def read_stage_one(run: BootRun, doc: dict[str, Any]) -> None:
    """Stage one's own figures (bootc.kexec), from its last status document."""
    run.kexec_status = doc
    run.kexec_kver = doc.get("kexec_kver")
    run.kexec_layers_read, run.kexec_layers = doc.get("kexec_layers_read"), doc.get("layers")
    run.kexec_handover_mib = mib(doc, "kexec_handover_bytes")
    run.kexec_stage_one_s = doc.get("kexec_seconds")
    run.kexec_loader = doc.get("kexec_loader")
    run.kexec_inuse_mib = mib(doc, "kexec_memory_in_use")
    run.kexec_initrd_mib = mib(doc, "kexec_next_initrd_bytes")
    run.kexec_work_peak_mib = mib(doc, "kexec_peak_before_loading")
    run.kexec_work_start_mib = mib(doc, "kexec_memory_at_start")
    run.kexec_loading_peak_mib = mib(doc, "kexec_peak_loading")
    run.kexec_command_line = doc.get("kexec_cmdline")


def span(run: BootRun, start: str, end: str, clock: str = "kernel") -> float | None:
    a, b = run.events.get(start), run.events.get(end)
    if a is None or b is None:
        return None
    if clock == "host":
        return b.host_s - a.host_s
    if a.kernel_s is None or b.kernel_s is None:
        return None
    return b.kernel_s - a.kernel_s


def since_start(run: BootRun, event: str) -> float | None:
    """Host seconds from QEMU's start to an event's line."""
    found = run.events.get(event)
    return None if found is None else found.host_s


SWITCH_ROOT = "/init → switch root (SPEC)"
SIGNATURE_CHECK = "signature check (its own figure)"
SWITCH_ROOT_HOST = "  same, host clock"
QEMU_SWITCH_ROOT = "QEMU start → switch root (host clock)"
KEXEC_SWITCH_ROOT = "kexec: 1st /init → switch root (host)"
# (label, how to compute it from a run); the line marked SPEC is the §9 figure. For the kexec
# row, the lines after its own (KEXEC_PHASES) are stage two's: its kernel, its initramfs.
KEXEC_PHASES: tuple[tuple[str, Callable[[BootRun], float | None]], ...] = (
    (
        "kexec: stage one kernel start → /init",
        lambda r: r.events["one_init"].kernel_s if "one_init" in r.events else None,
    ),
    ("kexec: stage one /init → resolving", lambda r: span(r, "one_init", "one_runtime")),
    ("kexec: stage one /init → kernel found", lambda r: span(r, "one_init", "one_found")),
    ("kexec: stage one /init → kexec into", lambda r: span(r, "one_init", "one_kexec")),
    ("  same (stage one), host clock", lambda r: span(r, "one_init", "one_kexec", "host")),
    ("  stage one's work (its own figure)", lambda r: r.kexec_stage_one_s),
    ("kexec into → next kernel (host clock)", lambda r: span(r, "one_kexec", "two_kernel", "host")),
    (KEXEC_SWITCH_ROOT, lambda r: span(r, "one_init", "welcome", "host")),
)
# The original pipeline's own steps (the original-* rows), from its status lines.
ORIGINAL_PHASES: tuple[tuple[str, Callable[[BootRun], float | None]], ...] = (
    ("original: archive into RAM", lambda r: r.original_fetch_s),
    ("original: tar -x (layout into RAM)", lambda r: r.original_extract_s),
    ("original: umoci unpack (into tmpfs)", lambda r: r.original_umoci_s),
    ("original: bind mounts", lambda r: r.original_bind_s),
    ("original: its work, start → ready", lambda r: r.original_work_s),
)
PHASES: tuple[tuple[str, Callable[[BootRun], float | None]], ...] = (
    *KEXEC_PHASES,
    ("kernel unpacks the initramfs cpio", lambda r: span(r, "cpio_start", "cpio_end")),
    ("kernel start → /init", lambda r: r.events["init"].kernel_s if "init" in r.events else None),
    ("/init → image found (URL: network up)", lambda r: span(r, "init", "runtime")),
    (SIGNATURE_CHECK, lambda r: r.signatures_s),
    ("bootc-live unpack (its own figure)", lambda r: r.unpack_s),
    *ORIGINAL_PHASES,
    ("EROFS: packing → live root ready", lambda r: span(r, "packing", "ready")),
    ("/init → live root ready", lambda r: span(r, "init", "ready")),
    (SWITCH_ROOT, lambda r: span(r, "init", "switch_root")),
    (SWITCH_ROOT_HOST, lambda r: span(r, "init", "welcome", "host")),
    ("switch root → verdict (host clock)", lambda r: span(r, "welcome", "verdict", "host")),
    (QEMU_SWITCH_ROOT, lambda r: since_start(r, "welcome")),
    ("QEMU start → end (host clock)", lambda r: r.seconds),
)
