"""A boot's console, read: the lines and when they came, the phases' events, the runtime's
status lines, the kernels of a kexec boot and why a boot failed.

Only lines that are not bootc-live's are read as text (the kernel's, systemd's, the image's
verdict); bootc-live's own figures and phases come from its status lines,
`bootc-live: status {JSON}`, which add up to its status document (/run/bootc-live/status.json;
bootc_live.runtime.status.documents). Everything here but LineClock is a pure function of the lines.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import debian_image
from bootc_live.runtime import status

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
STAMP = re.compile(r"^\[\s*(\d+\.\d+)\]\s?(.*)$")
KERNEL_BANNER = re.compile(r"Linux version (?P<kver>\S+) \(")
STATUS = "bootc-live: status "
# The marker of the ready status line, for a boot watched until the live root is ready: the
# document is compact JSON, so its state reads exactly so.
READY_MARKER = '"state":"ready"'

# Console lines that are not ours and mark the phases of a boot: (event, text, which
# occurrence).
EVENTS = (
    ("cpio_start", "Trying to unpack rootfs image as initramfs", 1),
    ("cpio_end", "Freeing initrd memory", 1),
    ("init", "Run /init as init process", 1),
    # The image's own systemd announcing itself, right after switch root (the first one is
    # the initramfs's): printed to the kernel log, so it carries the kernel's timestamp.
    ("switch_root", "running in system mode", 2),
    ("welcome", "Welcome to ", 2),
    ("verdict", debian_image.MARKER, 1),
)
# bootc-live's phases: the first status line of a state, as an event.
STATE_EVENTS = {
    "planned": "runtime",  # the image found and its root planned (URL: the network is up)
    "packing": "packing",  # EROFS rows: mkfs.erofs starts (the tree is unpacked)
    "ready": "ready",
}
# bootc.kexec. Stage one's console (the host's kernel, up to the next kernel's banner, where
# the console is split: stage two's kernel timestamps restart at 0): its events are kept as
# "one_" + event.
STAGE_ONE_EVENTS = EVENTS[:3]
STAGE_ONE_STATE_EVENTS = {
    "resolving": "runtime",  # the runtime started: root= read, the network not waited for yet
    "kexec": "found",  # the image's kernel and initramfs found
    "kexec-loaded": "kexec",  # loaded, just before kexec -e
}
# The original pipeline (bench/original, the original-* rows): its own status lines,
# `original-live: status {JSON}`, one per step, each with the kernel's uptime and the memory in
# use; a state's first line as an event, like bootc-live's.
ORIGINAL_STATUS = "original-live: status "
ORIGINAL_STATE_EVENTS = {
    "fetching": "runtime",  # its work starts on the archive (a URL: the network is up)
    "ready": "ready",  # the root bound at /sysroot
}
# The original's steps, in order: each is timed from the state before it (its uptime field).
ORIGINAL_STATES = ("start", "fetching", "fetched", "extracted", "unpacked", "ready")
# The kernel's own lines that say why a boot failed (when bootc-live could not say it).
KERNEL_FAILURES = ("Out of memory", "Kernel panic", "Initramfs unpacking failed")


def other_qemus() -> set[int]:
    """QEMU processes on this machine that are not ours: a sign the timings are under load."""
    found = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if not (proc / "comm").read_text().startswith("qemu-system"):
                continue
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid != os.getpid():
            found.add(int(proc.name))
    return found


class LineClock:
    """Stands in for the console echo: notes when each line arrived, on the host's clock, and
    which other QEMU processes ran meanwhile (looked at every few seconds)."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.pending = ""
        self.lines: list[tuple[float, str]] = []
        self.others = other_qemus()
        self.looked = self.start

    def write(self, text: str) -> int:
        now = time.monotonic()
        if now - self.looked > 5:
            self.others |= other_qemus()
            self.looked = now
        *done, self.pending = (self.pending + text).split("\n")
        self.lines += [(now - self.start, clean(line)) for line in done]
        return len(text)

    def flush(self) -> None:
        pass


def clean(line: str) -> str:
    return ANSI.sub("", line).strip("\r")


def status_of(line: str) -> dict[str, Any] | None:
    """The status fields a console line carries, if it is a whole status line (the marker may
    follow a kernel timestamp or systemd's `bootc-live[PID]: `; a line cut or garbled on its
    way to the console carries none)."""
    return status.parse_line(line)


def original_status_of(line: str) -> dict[str, Any] | None:
    """The fields of the original pipeline's status line, if the line is a whole one (read as
    bootc-live's are: the same JSON after another marker)."""
    _, marker, rest = line.partition(ORIGINAL_STATUS)
    return status.parse_line(status.STATUS_LINE + rest) if marker else None


def original_steps(lines: list[str]) -> list[dict[str, Any]]:
    """The original pipeline's status lines, in order (each as it printed it: they do not
    add up, each says where it stands)."""
    return [doc for line in lines if (doc := original_status_of(line)) is not None]


def last_status(lines: list[str]) -> dict[str, Any]:
    """The status document at the last status line (the lines add up: it holds what the
    earlier ones carried), or an empty one."""
    found = status.documents(lines)
    return found[-1] if found else {}


@dataclass
class Event:
    kernel_s: float | None  # the kernel timestamp on the line (guest clock), when it has one
    host_s: float  # when the line reached the host, from QEMU's start


def timeline(
    lines: list[tuple[float, str]],
    events: tuple[tuple[str, str, int], ...] = EVENTS,
    states: dict[str, str] = STATE_EVENTS,
    parse: Callable[[str], dict[str, Any] | None] = status_of,
) -> dict[str, Event]:
    """The events of a boot (one kernel's): the console lines of `events`, and the first
    status line (read by `parse`: bootc-live's, or the original's) of each of `states`, timed
    by the kernel's timestamp on the line (a status line without one: its own uptime, the same
    clock) and on the host's clock."""
    found: dict[str, Event] = {}
    seen: dict[str, int] = {}
    for host_s, line in lines:
        m = STAMP.match(line)
        kernel_s = float(m.group(1)) if m else None
        doc = parse(line)
        if doc is not None:
            event = states.get(doc["state"])
            if event is not None and event not in found:
                uptime = doc.get("uptime")
                if kernel_s is None and isinstance(uptime, (int, float)):
                    kernel_s = float(uptime)
                found[event] = Event(kernel_s, host_s)
            continue
        for event, text, nth in events:
            if event not in found and text in line:
                seen[event] = seen.get(event, 0) + 1
                if seen[event] == nth:
                    found[event] = Event(kernel_s, host_s)
    return found


def kernels(lines: list[str]) -> list[str]:
    """The kernels that booted, from their banners, in order."""
    return [m["kver"] for line in lines if (m := KERNEL_BANNER.search(line))]


def second_kernel(lines: list[str]) -> int | None:
    """The index of the line with the second kernel's banner (kexec's next stage), if any."""
    banners = [i for i, line in enumerate(lines) if KERNEL_BANNER.search(line)]
    return banners[1] if len(banners) > 1 else None


def kexec_timeline(lines: list[tuple[float, str]]) -> dict[str, Event]:
    """A kexec boot's events: stage one's (the host's kernel) as "one_" + event, then the
    usual events of stage two (the image's kernel and initramfs: a boot of its own, whose kernel
    timestamps restart at 0 and whose initramfs's systemd announces itself again), and
    "two_kernel", the second kernel's banner."""
    cut = second_kernel([line for _, line in lines])
    one, two = (lines, []) if cut is None else (lines[:cut], lines[cut:])
    found = {
        f"one_{k}": v for k, v in timeline(one, STAGE_ONE_EVENTS, STAGE_ONE_STATE_EVENTS).items()
    }
    found.update(timeline(two))
    if cut is not None:
        host_s, line = lines[cut]
        m = STAMP.match(line)
        found["two_kernel"] = Event(float(m.group(1)) if m else None, host_s)
    return found


def failure_reason(lines: list[str], ended: str, seconds: float, original: bool = False) -> str:
    """Why a boot did not reach its goal: the timeout; else bootc-live's own word (the
    message of its last `failed` status; for the original pipeline, its own); else the
    kernel's last line that says so; else the last other line bootc-live's (or the original's)
    side printed (a dracut hook's: status lines, whole or cut, are not reasons); else how QEMU
    ended."""
    if ended == "timeout":
        return f"no verdict within {seconds:.0f} s"
    if original:
        steps = original_steps(lines)
        failed = steps[-1] if steps else {}
    else:
        failed = last_status(lines)
    if failed.get("state") == "failed" and failed.get("message"):
        return str(failed["message"])[:200]
    for line in reversed(lines):
        if any(t in line for t in KERNEL_FAILURES):
            return STAMP.sub(r"\2", line).strip()[:200]
    # The original's script and the tools it runs print under its name (original-live-root[PID]).
    ours = ("original-live", ORIGINAL_STATUS) if original else ("bootc-live: ", STATUS)
    for line in reversed(lines):
        if ours[0] in line and ours[1] not in line:
            return STAMP.sub(r"\2", line).strip()[:200]
    return f"ended by {ended}"
