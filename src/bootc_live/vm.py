"""`bootc-live vm`: boot the artifacts in QEMU on the serial console."""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import shutil
import signal
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO

from . import scratch
from .build import concatenate
from .runtime import run as _run
from .runtime.errors import BootcLiveError
from .runtime.kexec import printable_command_line

QEMU = "qemu-system-x86_64"
GUEST_SERVER = "10.0.2.100"  # what the guest sees of a host server (guestfwd to 127.0.0.1)
KVM_PROBE_CACHE = Path("/run/bootc-live-kvm-usable")
QEMU_GRACE = 5.0  # seconds QEMU has to end on SIGTERM before SIGKILL
# What the console shows when a boot failed, and when the machine stopped (QEMU may not exit
# on a halt): a boot that shows the first and then the second has ended in failure.
FAILURES = (
    "dracut: Refusing to continue",
    "Kernel panic - not syncing",
    "Failed to start bootc-live",  # systemd shows the unit's description, cut
)
STOPS = ("reboot: System halted", "reboot: Power down")


class VmError(BootcLiveError):
    """QEMU could not run the artifacts."""


@dataclass(frozen=True)
class VmConfig:
    artifacts: Path
    append: str = ""
    mem: int = 1024  # MiB
    pxe: bool = False  # initrd.img and rootfs.img as two initrds, as iPXE does
    embedded: bool = True  # False: initrd.img alone (the image comes from a URL)
    accel: str = "auto"
    cpus: int = 2
    extra: tuple[str, ...] = ()
    network: bool = False  # a NIC on QEMU's user network, restricted to the forwards below
    forwards: tuple[tuple[int, int], ...] = ()  # (port on GUEST_SERVER, port on 127.0.0.1)
    tftp: Path | None = None  # served by QEMU itself at tftp://10.0.2.2/
    dead_nic: bool = False  # an extra NIC first, whose link is up but never gets an address
    packed: bool = False  # the packed root: cmdline-packed.txt, packed.img as the second initrd
    disks: tuple[Path, ...] = ()  # raw disk images, attached read-only (root=bootc-live:block:…)


@dataclass
class Boot:
    """What one boot printed, and how it ended."""

    output: str
    ended: str  # "marker", "failure", "exit", "timeout", "stalled", "crashed" or "qemu"
    seconds: float
    markers: dict[str, str] = field(default_factory=dict)
    status: int = 0  # QEMU's exit status ("qemu": it failed, the guest never stopped)

    def verdict(self, timeout: float) -> str | None:
        """What went wrong, in one line for the user; None when the guest came up or stopped."""
        if self.ended in ("marker", "exit"):
            return None
        if self.ended == "qemu":
            how = f"exit status {self.status}"
            if self.status < 0:
                how = f"killed by {_signal_name(-self.status)}"
            hint = "check --mem, --accel and the artifacts"
            return f"{QEMU} failed ({how}): its message is above; {hint}"
        if self.ended == "timeout":
            return f"no verdict after {timeout:g} s, so the guest was stopped (raise --timeout)"
        if self.ended == "stalled":
            return AGAIN["stalled"] + ", twice: boot it again"
        return "the guest's boot failed: the console above says why"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


# The arguments of cmdline.txt that name the image built: an appended root= names another.
IMAGE_ARGUMENTS = ("root", "bootclabel", "bootc.digest", "bootc.identity")


def kernel_command_line(config: VmConfig) -> str:
    # Its bytes as they are (edited in another encoding, say): QEMU passes bytes on.
    arguments = (config.artifacts / command_line_file(config)).read_text(errors="surrogateescape")
    arguments = arguments.strip()
    if any(a.startswith("root=") for a in config.append.split()):
        # A packed root elsewhere (a URL) is the same file: only its location changes.
        arguments = (without_root if config.packed else without_image_arguments)(arguments)
    return " ".join(
        a
        for a in (
            "console=ttyS0 panic=-1 rd.shell=0 rd.emergency=poweroff",
            arguments,
            config.append,
        )
        if a
    )


def without_image_arguments(arguments: str) -> str:
    """A command line without what names the image built (its root=, bootclabel=, pin and
    identity): the arguments that boot these artifacts with another image."""
    return " ".join(a for a in arguments.split() if a.split("=", 1)[0] not in IMAGE_ARGUMENTS)


def without_root(arguments: str) -> str:
    return " ".join(a for a in arguments.split() if not a.startswith("root="))


def printable_argv(argv: list[str]) -> list[str]:
    """QEMU's command line as --debug shows it: the kernel's (-append) without the
    credentials and signed queries of the URLs in it (root=bootc-live:https://USER:PASS@…)."""
    return [
        printable_command_line(arg) if i and argv[i - 1] == "-append" else arg
        for i, arg in enumerate(argv)
    ]


def command_line_file(config: VmConfig) -> str:
    return "cmdline-packed.txt" if config.packed else "cmdline.txt"


def qemu_argv(config: VmConfig, initrd: Path, accel: str) -> list[str]:
    """The QEMU command line: direct kernel boot, serial console, no devices we do not need."""
    return [
        QEMU,
        "-machine", "q35",
        "-accel", accel,
        "-cpu", "host" if accel == "kvm" else "max",
        "-smp", str(config.cpus),
        "-m", str(config.mem),
        "-nodefaults", "-no-reboot", "-nographic",
        "-serial", "stdio",
        "-kernel", str(config.artifacts / "vmlinuz"),
        "-initrd", str(initrd),
        "-append", kernel_command_line(config),
        *network_args(config),
        *disk_args(config.disks),
        *config.extra,
    ]  # fmt: skip


def network_args(config: VmConfig) -> list[str]:
    """QEMU user networking with restrict=on: the guest reaches only the forwarded ports."""
    if not config.network:
        return []
    user = "user,id=n0,restrict=on"
    for guest_port, host_port in config.forwards:
        # cmd: runs a bridge per guest connection (a tcp: chardev would share one connection).
        bridge = f"{sys.executable} -m bootc_live.bridge 127.0.0.1 {host_port}"
        user += f",guestfwd=tcp:{GUEST_SERVER}:{guest_port}-cmd:{option_value(bridge)}"
    if config.tftp is not None:
        user += f",tftp={option_value(str(config.tftp))}"
    args = []
    if config.dead_nic:
        # A hub with nothing else on it: carrier up, but DHCP never answers.
        args += ["-netdev", "hubport,id=dead,hubid=7", "-device", "virtio-net-pci,netdev=dead"]
    return [*args, "-netdev", user, "-device", "virtio-net-pci,netdev=n0"]


def disk_args(disks: tuple[Path, ...]) -> list[str]:
    """Each file as a read-only virtio disk (the guest cannot change it), in order: vda, vdb…"""
    args = []
    for n, disk in enumerate(disks):
        # Absolute: QEMU reads a relative name's "NAME:" as a protocol (nbd:, json:, …).
        drive = f"file={option_value(str(disk.absolute()))},if=none,id=disk{n},format=raw"
        drive += ",readonly=on"
        args += ["-drive", drive, "-device", f"virtio-blk-pci,drive=disk{n}"]
    return args


def option_value(text: str) -> str:
    """`text` as the value of a QEMU option (key=value,…): a comma doubled, else it would end
    the value and start an option of its own (",restrict=off")."""
    return text.replace(",", ",,")


def kvm_usable() -> bool:
    """Whether KVM really runs a guest here: /dev/kvm can exist and still fail (probed once,
    by whoever asked first; this user's access is checked each time)."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    if KVM_PROBE_CACHE.exists():
        return KVM_PROBE_CACHE.read_text().strip() == "yes"
    usable = False
    kernels = sorted(Path("/boot").glob("vmlinuz-*"))
    if kernels and shutil.which(QEMU):
        argv = [
            QEMU,
            "-machine",
            "q35",
            "-accel",
            "kvm",
            "-cpu",
            "host",
            "-m",
            "256",
            "-nodefaults",
            "-no-reboot",
            "-nographic",
            "-serial",
            "stdio",
            "-kernel",
            str(kernels[-1]),
            "-append",
            "console=ttyS0 panic=-1 init=/none",
        ]
        boot = watch(argv, timeout=15, markers=("Linux version",), echo=None)
        usable = boot.ended == "marker"
    with contextlib.suppress(OSError):
        KVM_PROBE_CACHE.write_text("yes\n" if usable else "no\n")
    return usable


def choose_accel(requested: str) -> str:
    if requested != "auto":
        return requested
    return "kvm" if kvm_usable() else "tcg"


INIT_STARTED = "Run /init as init process"  # the kernel hands over to the initramfs
STALL_BEFORE_INIT = 60.0  # seconds of console silence before /init that count as a stall
# What ends a boot before anything of ours has run, and is tried once more. QEMU's TCG (7.2,
# Debian 12's) occasionally hangs there, or runs code the kernel has just patched in its old
# form (seen: Debian 13's kernel, "Oops: int3" in sched_clock_cpu, a static key being switched,
# one boot in a CI run); a kernel that cannot boot panics the second time too, and that boot is
# the result.
AGAIN = {
    "stalled": f"the guest's kernel printed nothing for {STALL_BEFORE_INIT:.0f}s before it ran "
    "/init (a QEMU stall, before bootc-live runs)",
    "crashed": "the guest's kernel panicked before it ran /init (before bootc-live runs)",
}


class Console:
    """The console read so far, judged against the limits of a watch (times from its clock)."""

    def __init__(
        self, markers: tuple[str, ...], *, timeout: float, stall: float, start: float
    ) -> None:
        self.markers = markers
        self.timeout = timeout
        self.stall = stall
        self.start = start
        self.last_output = start
        self.chunks: list[str] = []
        self.found: dict[str, str] = {}
        self.pending = ""  # the start of a line not yet complete
        self.failed = False
        self.ended: str | None = None  # "marker" or "stopped" once the console shows one
        self.in_init = False
        self.recent = ""  # the end of the output so far, as long as INIT_STARTED

    def feed(self, text: str, now: float) -> None:
        self.last_output = now
        # The line may come in any number of pieces: look at its end and what came before.
        seen = self.recent + text
        self.in_init = self.in_init or INIT_STARTED in seen
        self.recent = seen[-len(INIT_STARTED) :]
        self.chunks.append(text)
        lines = (self.pending + text).split("\n")
        self.pending = lines.pop()
        self.ended, self.failed = _scan(lines, self.markers, self.found, self.failed)

    def overdue(self, now: float) -> str | None:
        """ "timeout", or "stalled" (silent for longer than `stall` before /init), at `now`."""
        if now - self.start >= self.timeout:
            return "timeout"
        if not self.in_init and now - self.last_output > self.stall:
            return "stalled"
        return None


def watch(
    argv: list[str],
    *,
    timeout: float,
    markers: tuple[str, ...] = (),
    echo: IO[str] | None = sys.stdout,
    log: Path | None = None,
    stall: float = STALL_BEFORE_INIT,
    clock: Callable[[], float] = time.monotonic,
) -> Boot:
    """Run QEMU, tee its console, and stop at the first marker, the guest's stop, or the timeout.

    Boot.ended is "marker", "exit" (the guest stopped), "failure" (it stopped after a boot
    failure), "timeout", "stalled": the kernel printed nothing for `stall` seconds before it
    ran /init (QEMU's TCG occasionally hangs there, before anything of ours runs),
    "crashed": the kernel panicked before it ran /init, or "qemu": QEMU itself failed (a
    non-zero exit status; a guest that powers off, reboots or panics makes it exit with 0).

    A marker line looks like `MARKER rest`; the rest of the line is kept in Boot.markers.
    """
    console = Console(markers, timeout=timeout, stall=stall, start=clock())
    proc = _run.start(argv, stdout=_run.PIPE, stderr=_run.STDOUT, shown=printable_argv(argv))
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    ended: str | None = None
    logf = open(log, "w", encoding="utf-8") if log else None  # noqa: SIM115
    try:
        while ended is None:
            now = clock()
            ended = console.overdue(now)
            if ended:
                break
            left = timeout - (now - console.start)
            if not sel.select(min(left, 1.0)) or not (data := proc.stdout.read()):
                if proc.poll() is not None:
                    break  # QEMU exited: the guest powered off, rebooted or panicked
                continue
            text = data.decode("utf-8", "replace")
            console.feed(text, clock())
            for out in (echo, logf):
                if out:
                    out.write(text)
                    out.flush()
            ended = console.ended
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if logf:
            logf.close()
    output, seconds = "".join(console.chunks), clock() - console.start
    if ended is None and proc.returncode:
        return Boot(output, "qemu", seconds, console.found, proc.returncode)
    if ended in (None, "stopped"):
        ended = "failure" if console.failed else "exit"
    if ended == "failure" and not console.in_init:
        ended = "crashed"
    return Boot(output, ended, seconds, console.found)


def _scan(
    lines: list[str], markers: tuple[str, ...], found: dict[str, str], failed: bool
) -> tuple[str | None, bool]:
    """Read console lines: ("marker" | "stopped" | None, whether a failure was seen)."""
    for raw in lines:
        line = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw).strip("\r")
        for marker in markers:
            pos = line.find(marker)
            if pos >= 0:
                found[marker] = line[pos + len(marker) :].strip()
                return "marker", failed
        failed = failed or any(failure in line for failure in FAILURES)
        if any(stop in line for stop in STOPS):
            return "stopped", failed  # a halted guest does not make QEMU exit
    return None, failed


def boot(
    config: VmConfig,
    *,
    timeout: float,
    markers: tuple[str, ...] = (),
    echo: IO[str] | None = sys.stdout,
    log: Path | None = None,
    interactive: bool = False,
) -> Boot:
    """Boot the artifacts in config.artifacts and watch the console.

    `interactive` gives QEMU this terminal instead (to log in to the live system).
    """
    second = "packed.img" if config.packed else "rootfs.img"
    # What this boot loads: the image comes over the network, or as a second initrd, or
    # inside initrd-full.img.
    needed = ["vmlinuz", command_line_file(config)]
    if not config.embedded:
        needed.append("initrd.img")
    elif config.pxe or config.packed:
        needed += ["initrd.img", second]
    else:
        needed.append("initrd-full.img")
    for name in needed:
        path = config.artifacts / name
        if not path.is_file():
            raise VmError(
                f"{path} is {'not a file' if os.path.lexists(path) else 'missing'}",
                "make the artifacts with bootc-live build SOURCE -o DIR",
            )
    if shutil.which(QEMU) is None:
        raise VmError(f"{QEMU} is not installed", "apt-get install qemu-system-x86")
    initrd = config.artifacts / ("initrd-full.img" if config.embedded else "initrd.img")
    tmp: str | None = None
    if (config.pxe or config.packed) and config.embedded:
        # iPXE loads both initrds back to back; QEMU takes one file, so do the same here: in a
        # private directory of this boot's (the artifacts may be read-only, or booted by
        # another `vm` at the same time).
        tmp = scratch.make_dir("bootc-live-vm.")
        initrd = Path(tmp) / "initrds.img"
        concatenate(initrd, config.artifacts / "initrd.img", config.artifacts / second)
    try:
        argv = qemu_argv(config, initrd, choose_accel(config.accel))
        if interactive:
            return run_interactive(argv, timeout)
        result = watch(argv, timeout=timeout, markers=markers, echo=echo, log=log)
        if result.ended in AGAIN:
            print(f"bootc-live: {AGAIN[result.ended]}; booting it again", file=sys.stderr)
            result = watch(argv, timeout=timeout, markers=markers, echo=echo, log=log)
        return replace(result, ended="failure") if result.ended == "crashed" else result
    finally:
        if tmp is not None:
            scratch.remove(tmp)


def run_interactive(argv: list[str], timeout: float) -> Boot:
    """QEMU on this terminal (to log in to the live system), stopped at the timeout or when
    this command is interrupted."""
    start = time.monotonic()
    proc = _run.start(argv, stdin=None, shown=printable_argv(argv))
    try:
        code = proc.wait(timeout)
    except _run.TimeoutExpired:
        return Boot("", "timeout", time.monotonic() - start)
    finally:
        if proc.poll() is None:
            # SIGTERM: QEMU gives the terminal back as it was (raw mode, no echo after a kill).
            proc.terminate()
            try:
                proc.wait(QEMU_GRACE)
            except _run.TimeoutExpired:
                proc.kill()
        proc.wait()
    return Boot("", "exit" if code == 0 else "qemu", time.monotonic() - start, status=code)


class _RangeHandler(BaseHTTPRequestHandler):
    """Serves one file with Range support (for `bootc-live vm --serve`)."""

    path_served: Path

    def log_message(self, fmt: str, *args: object) -> None:
        print("bootc-live vm: served " + fmt % args, file=sys.stderr)

    def do_GET(self) -> None:
        asked = urllib.parse.unquote_to_bytes(self.path.partition("?")[0].lstrip("/"))
        if asked != os.fsencode(self.path_served.name):
            self.send_error(404)
            return
        size = self.path_served.stat().st_size
        start, end = 0, size
        ranged = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if ranged:
            start = int(ranged.group(1))
            end = min(size, int(ranged.group(2)) + 1) if ranged.group(2) else size
            if start >= size:
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        else:
            self.send_response(200)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start))
        self.end_headers()
        with open(self.path_served, "rb") as f:
            f.seek(start)
            left = end - start
            while left:
                data = f.read(min(left, 1 << 20))
                if not data:
                    break
                self.wfile.write(data)
                left -= len(data)


def served_url(path: Path) -> str:
    """The guest's URL of `path` served by serve(): its name percent-encoded, as a URL's path
    must be (a space would end root= on the kernel command line, a # start a fragment)."""
    return f"http://{GUEST_SERVER}/{urllib.parse.quote(os.fsencode(path.name))}"


@contextlib.contextmanager
def serve(path: Path) -> Iterator[int]:
    """Serve `path` over HTTP on 127.0.0.1 (a free port, yielded) while the block runs."""
    handler = type("Handler", (_RangeHandler,), {"path_served": path})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
