"""bench/'s own code, without QEMU: a boot's figures come from bootc-live's status lines on a
console (kernel timestamps, ANSI noise, systemd's prefixes, two kernels for kexec), the rows'
figures from those boots, and the entry scripts start."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import debian_image
from bootc_live.runtime.policy import Policy
from bootc_live.vm import Boot
from signing import gpg_req, sigstore_req, write_policy
from unpackers import need

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from benchlib import boots, console, ramsearch, report, rows, signed  # noqa: E402
from benchlib.boots import (  # noqa: E402
    PHASES,
    SWITCH_ROOT,
    SWITCH_ROOT_HOST,
    BootRun,
    Target,
    read_boot,
)
from benchlib.common import MIB  # noqa: E402

HOST_KVER = "6.12.9-host"
IMAGE_KVER = "6.1.0-28-amd64"
MANIFEST = "sha256:" + "ab" * 32
EROFS_SHA = "sha256:" + "cd" * 32
SYSTEMD = "systemd 252.33-1~deb12u1 running in system mode (+PAM +AUDIT +SELINUX)"
# systemd's greeting, coloured as on a serial console.
WELCOME = "\x1b[0;1;39mWelcome to \x1b[0m\x1b[0;1;34mDebian GNU/Linux 12 (bookworm)\x1b[0m!\r"


class Status:
    """The runtime's status lines as it prints them: each carries its state and the fields that
    changed (the state last here, so that no reader can depend on where it stands); `doc` is
    status.json, what the lines add up to."""

    def __init__(self) -> None:
        self.doc: dict[str, Any] = {}

    def line(self, state: str, uptime: float, **fields: Any) -> str:
        self.doc.update(fields)
        self.doc.pop("state", None)
        self.doc.update(time=1764670000.0 + uptime, uptime=uptime, state=state)
        changed = {**fields, "time": self.doc["time"], "uptime": uptime, "state": state}
        return "bootc-live: status " + json.dumps(changed, separators=(",", ":"))


def stamp(seconds: float, text: str) -> str:
    return f"[{seconds:12.6f}] {text}"


def via_journal(seconds: float, text: str) -> str:
    """A runtime line as the initramfs's journald forwards it to the kernel log."""
    return stamp(seconds, f"bootc-live[301]: {text}")


def boot_of(timed: list[tuple[float, str]], ended: str = "marker", seconds: float = 95.5) -> Boot:
    """What vm.boot returns for a console: its output, how it ended, the verdict marker's rest."""
    output = "\n".join(line for _, line in timed)
    markers = {}
    for _, line in timed:
        if debian_image.MARKER in line:
            markers[debian_image.MARKER] = line.split(debian_image.MARKER, 1)[1].strip()
    return Boot(output, ended, seconds, markers)


def read(target: Target, timed: list[tuple[float, str]], **how: Any) -> BootRun:
    lines = [(host_s, console.clean(line)) for host_s, line in timed]
    return read_boot(target, 2048, boot_of(timed, **how), lines)


def verdict(fstype: str, kver: str = IMAGE_KVER) -> str:
    return (
        f"{debian_image.MARKER} root=ro etc=rw var=rw fstype={fstype} kernel={kver} "
        "target=multi-user memused=524288"
    )


def url_console(
    mode: str,
    root: dict[str, Any],
    status: Status | None = None,
    signatures: dict[str, Any] | None = None,
) -> list[tuple]:
    """A URL boot to its verdict: firmware noise, the kernel, the initramfs's systemd, the
    runtime's status lines (and its sentences, with other figures: they must not be read),
    switch root, the image's systemd, the verdict; `signatures` the planned status's verdict."""
    s = status or Status()
    checked = {} if signatures is None else {"signatures": signatures}
    return [
        (0.25, "SeaBIOS (version 1.16.2-debian-1.16.2-1)\r"),
        (
            1.0,
            f"\x1b[2J\x1b[01;01HBooting from ROM..[    0.000000] Linux version {IMAGE_KVER} (gcc)",
        ),
        (2.0, stamp(0.75, "Trying to unpack rootfs image as initramfs...")),
        (3.0, stamp(1.25, "Freeing initrd memory: 30000K")),
        (4.0, stamp(2.0, "Run /init as init process")),
        (4.5, stamp(2.5, f"systemd[1]: {SYSTEMD}")),
        (5.0, WELCOME),
        (6.0, via_journal(4.0, s.line("resolving", 3.9, root="bootc-live:http://10.0.2.100/x"))),
        (7.0, via_journal(4.0, "bootc-live: waiting for the network")),
        (
            10.0,
            via_journal(
                6.25,
                s.line(
                    "planned",
                    6.2,
                    manifest=MANIFEST,
                    layers=3,
                    compressed=180 * MIB + 4096,
                    unpacked_estimate=619 * MIB + 999,
                    estimate_how="recorded by bootc-live build",
                    mode=mode,
                    need=276 * MIB + 1,  # rounded up: 277
                    available=565 * MIB + 7,
                    modules_unused_bytes=21 * MIB,
                    **checked,
                ),
            ),
        ),
        (
            10.5,
            via_journal(6.25, "bootc-live: image x: 9 layers, 999 MiB compressed, 1 MiB available"),
        ),
        (
            11.0,
            via_journal(
                6.5, s.line("unpacking", 6.4, modules_freed=412, modules_freed_bytes=21 * MIB)
            ),
        ),
        (
            30.0,
            via_journal(
                26.75,
                s.line(
                    "ready",
                    26.7,
                    entries=12649,
                    bytes=562 * MIB + 123,
                    seconds=19.875,
                    peak_memory=628 * MIB + 5,
                    memory_before=344 * MIB,
                    memory_at_peak=dict(
                        in_use=628 * MIB + 5,
                        initramfs_files=50 * MIB + 7,
                        tmpfs=470 * MIB,
                        processes=33 * MIB,
                        kernel=35 * MIB,
                        other=40 * MIB + 5,
                    ),
                    root=root,
                ),
            ),
        ),
        (30.5, via_journal(26.75, "bootc-live: live root ready: x, 1 entries, 1 MiB in 1.0s")),
        (31.0, stamp(27.0, "systemd[1]: Switching root.")),
        (32.0, stamp(28.5, f"systemd[1]: {SYSTEMD}")),
        (33.5, WELCOME),
        (60.25, verdict({"zram": "ext4", "erofs": "erofs"}.get(mode, "tmpfs"))),
    ]


ZRAM_ROOT = {
    "mode": "zram",
    "device": "/dev/zram0",
    "algorithm": "zstd",
    "stored": 624_215_244,  # 595.3 MiB, as the runtime's sentence rounded it
    "memory": 217_579_520,  # 207.5 MiB exactly
}


def test_a_zram_boot_reads_its_figures_from_the_status_lines() -> None:
    run = read(Target("zram", Path("/nx"), fstype="ext4"), url_console("zram", ZRAM_ROOT))
    assert (run.ok, run.state, run.failure) == (True, "ready", "")
    assert (run.entries, run.written_mib, run.unpack_s) == (12649, 562, 19.875)
    assert (run.peak_mib, run.start_mib, run.freed_mib, run.above_start_mib) == (628, 344, 21, 305)
    at_peak = (run.peak_files_mib, run.peak_tmpfs_mib, run.peak_processes_mib, run.peak_kernel_mib)
    assert (*at_peak, run.peak_other_mib) == (50, 470, 33, 35, 40)
    assert (run.compressed_mib, run.estimate_mib, run.available_mib) == (180, 619, 565)
    assert (run.mode, run.need_mib) == ("zram", 277)
    assert run.root == ZRAM_ROOT
    assert run.zram_algorithm == "zstd"
    assert run.zram_stored_mib == 624_215_244 / MIB
    assert run.zram_ram_mib == 207.5
    assert run.erofs_sha256 is None and run.erofs_mib is None
    assert run.memused_mib == 512.0
    assert run.status["state"] == "ready" and run.status["modules_freed"] == 412
    assert run.verdict["fstype"] == "ext4"


def test_a_boots_events_are_its_console_lines_and_its_states() -> None:
    run = read(Target("url", Path("/nx"), fstype="tmpfs"), url_console("tmpfs", {"mode": "tmpfs"}))
    events = {name: (e.kernel_s, e.host_s) for name, e in run.events.items()}
    assert events == {
        "cpio_start": (0.75, 2.0),
        "cpio_end": (1.25, 3.0),
        "init": (2.0, 4.0),
        "runtime": (6.25, 10.0),  # planned: the console's timestamp, not the uptime field
        "ready": (26.75, 30.0),
        "switch_root": (28.5, 32.0),  # the second "running in system mode": the image's
        "welcome": (None, 33.5),
        "verdict": (None, 60.25),
    }
    phases = {label: f(run) for label, f in PHASES}
    assert phases[SWITCH_ROOT] == 26.5
    assert phases[SWITCH_ROOT_HOST] == 29.5
    assert phases["/init → image found (URL: network up)"] == 4.25
    assert phases["/init → live root ready"] == 24.75
    assert phases["kernel unpacks the initramfs cpio"] == 0.5
    assert phases["bootc-live unpack (its own figure)"] == 19.875
    assert phases["EROFS: packing → live root ready"] is None
    assert phases["kexec: stage one /init → kexec into"] is None
    assert (run.mode, run.root, run.zram_ram_mib) == ("tmpfs", {"mode": "tmpfs"}, None)


def test_an_erofs_boot_reads_the_image_and_its_packing() -> None:
    status = Status()
    timed = url_console(
        "erofs",
        {
            "mode": "erofs",
            "sha256": EROFS_SHA,
            "bytes": 590_872_576,  # 563.5 MiB
            "compress": "lz4hc",
            "mkfs_erofs": "1.5",
        },
        status,
    )
    timed.insert(12, (24.0, stamp(20.25, "bootc-live[301]: " + status.line("packing", 20.2))))
    run = read(Target("erofs-lz4hc", Path("/nx"), fstype="erofs"), timed)
    assert run.ok
    assert (run.erofs_sha256, run.erofs_mib) == (EROFS_SHA, 563.5)
    assert (run.erofs_compress, run.mkfs_erofs) == ("lz4hc", "1.5")
    assert run.zram_stored_mib is None
    assert run.events["packing"] == console.Event(20.25, 24.0)
    assert dict((label, f(run)) for label, f in PHASES)["EROFS: packing → live root ready"] == 6.5


def kexec_console() -> list[tuple[float, str]]:
    """bootc.kexec: stage one (the host's kernel and initramfs) fetches the image, finds its
    kernel and kexecs; stage two (the image's kernel, timestamps from 0 again) boots it. Each
    initramfs's systemd announces itself and greets; stage two's runtime prints without a
    timestamp once (its status line's uptime times it)."""
    one, two = Status(), Status()
    return [
        (0.5, f"Booting from ROM..\x1b[2J[    0.000000] Linux version {HOST_KVER} (gcc) #1 SMP"),
        (1.0, stamp(0.5, "Trying to unpack rootfs image as initramfs...")),
        (1.5, stamp(1.0, "Freeing initrd memory: 40000K")),
        (2.0, stamp(1.5, "Run /init as init process")),
        (2.5, stamp(1.75, f"systemd[1]: {SYSTEMD}")),
        (3.0, WELCOME),
        (5.0, via_journal(3.5, one.line("resolving", 3.4, root="bootc-live:http://10.0.2.100/x"))),
        (
            12.0,
            via_journal(
                10.0,
                one.line(
                    "kexec",
                    9.9,
                    manifest=MANIFEST,
                    layers=4,
                    compressed=188_743_680,
                    kexec_kver=IMAGE_KVER,
                    kexec_layers_read=3,
                    kexec_handover_bytes=188_743_680,  # 180 MiB
                ),
            ),
        ),
        (12.5, via_journal(10.0, "bootc-live: kexec: kernel 9.9.9 found in the top 1 of 9 layers")),
        (
            33.0,
            via_journal(
                30.25,
                one.line(
                    "kexec-loaded",
                    30.2,
                    kexec_seconds=20.25,
                    kexec_loader="kexec_file_load",
                    kexec_memory_in_use=922 * MIB + 12345,
                    kexec_next_initrd_bytes=288 * MIB,
                    kexec_peak_before_loading=650 * MIB,
                    kexec_memory_at_start=360 * MIB,
                    kexec_peak_loading=1180 * MIB,
                    kexec_cmdline="console=ttyS0 root=bootc-live:http://10.0.2.100/x",
                ),
            ),
        ),
        (33.25, stamp(30.5, "kexec_core: Starting new kernel")),
        (34.0, stamp(0.0, f"Linux version {IMAGE_KVER} (debian-kernel@lists.debian.org) (gcc)")),
        (35.0, stamp(0.75, "Trying to unpack rootfs image as initramfs...")),
        (36.0, stamp(1.5, "Freeing initrd memory: 300000K")),
        (37.0, stamp(2.25, "Run /init as init process")),
        (37.5, stamp(2.5, f"systemd[1]: {SYSTEMD}")),
        (38.0, WELCOME),
        (
            40.0,
            two.line(
                "planned",
                5.25,
                manifest=MANIFEST,
                layers=4,
                compressed=188_743_680,
                mode="tmpfs",
                need=700 * MIB,
                available=1500 * MIB,
                handover_layers=4,
                handover_diff_ids=4,
            ),
        ),
        (41.0, via_journal(6.0, two.line("unpacking", 5.9, modules_freed_bytes=0))),
        (
            90.0,
            via_journal(
                60.5,
                two.line(
                    "ready",
                    60.4,
                    entries=12650,
                    bytes=563 * MIB,
                    seconds=50.125,
                    peak_memory=900 * MIB,
                    memory_before=520 * MIB,
                    root={"mode": "tmpfs"},
                ),
            ),
        ),
        # A status line cut on its way to the console: not a status, and not the last one.
        (90.5, via_journal(60.6, 'bootc-live: status {"state":"ready"')),
        (91.0, stamp(61.0, f"systemd[1]: {SYSTEMD}")),
        (92.0, WELCOME),
        (120.0, verdict("tmpfs")),
    ]


def test_a_kexec_boot_reads_each_stage_from_its_own_status_lines() -> None:
    run = read(Target("kexec", Path("/nx"), fstype="tmpfs", kexec=True), kexec_console())
    assert (run.ok, run.failure) == (True, "")
    assert run.kernels == [HOST_KVER, IMAGE_KVER]
    assert run.kexec_status["state"] == "kexec-loaded"
    assert (run.kexec_kver, run.kexec_layers_read, run.kexec_layers) == (IMAGE_KVER, 3, 4)
    assert (run.kexec_stage_one_s, run.kexec_loader) == (20.25, "kexec_file_load")
    assert (run.kexec_inuse_mib, run.kexec_initrd_mib, run.kexec_handover_mib) == (922, 288, 180)
    assert (run.kexec_work_peak_mib, run.kexec_work_start_mib) == (650, 360)
    assert run.kexec_loading_peak_mib == 1180
    assert run.kexec_command_line == "console=ttyS0 root=bootc-live:http://10.0.2.100/x"
    # The runtime's figures are stage two's.
    assert (run.state, run.entries, run.written_mib, run.unpack_s) == ("ready", 12650, 563, 50.125)
    assert (run.peak_mib, run.start_mib, run.freed_mib) == (900, 520, 0)
    assert (run.compressed_mib, run.mode, run.need_mib, run.available_mib) == (
        180,
        "tmpfs",
        700,
        1500,
    )
    assert run.status["handover_diff_ids"] == 4
    events = {name: (e.kernel_s, e.host_s) for name, e in run.events.items()}
    assert events == {
        "one_cpio_start": (0.5, 1.0),
        "one_cpio_end": (1.0, 1.5),
        "one_init": (1.5, 2.0),
        "one_runtime": (3.5, 5.0),
        "one_found": (10.0, 12.0),
        "one_kexec": (30.25, 33.0),
        "two_kernel": (0.0, 34.0),
        "cpio_start": (0.75, 35.0),
        "cpio_end": (1.5, 36.0),
        "init": (2.25, 37.0),
        "runtime": (5.25, 40.0),  # no timestamp on the line: its uptime
        "ready": (60.5, 90.0),
        "switch_root": (61.0, 91.0),
        "welcome": (None, 92.0),
        "verdict": (None, 120.0),
    }
    phases = {label: f(run) for label, f in PHASES}
    assert phases["kexec: stage one kernel start → /init"] == 1.5
    assert phases["kexec: stage one /init → resolving"] == 2.0
    assert phases["kexec: stage one /init → kernel found"] == 8.5
    assert phases["kexec: stage one /init → kexec into"] == 28.75
    assert phases["  same (stage one), host clock"] == 31.0
    assert phases["  stage one's work (its own figure)"] == 20.25
    assert phases["kexec into → next kernel (host clock)"] == 1.0
    assert phases["kexec: 1st /init → switch root (host)"] == 90.0
    assert phases[SWITCH_ROOT] == 58.75


def test_a_kexec_boot_into_the_wrong_kernel_fails_and_says_so() -> None:
    timed = kexec_console()
    timed[-1] = (120.0, verdict("tmpfs", kver=HOST_KVER))
    run = read(Target("kexec", Path("/nx"), fstype="tmpfs", kexec=True), timed)
    assert not run.ok
    assert run.failure == (
        f"booted kernel {HOST_KVER}, not the image's {IMAGE_KVER} through kexec (kernels seen: "
        f"{HOST_KVER}, {IMAGE_KVER}): root=ro etc=rw var=rw fstype=tmpfs kernel={HOST_KVER} "
        "target=multi-user memused=524288"
    )


def failing_console(s: Status) -> list[tuple[float, str]]:
    """A URL boot up to its unpack."""
    return [
        (1.0, stamp(2.0, "Run /init as init process")),
        (2.0, via_journal(4.0, s.line("resolving", 4.0, root="bootc-live:http://10.0.2.100/x"))),
        (3.0, via_journal(6.0, s.line("planned", 6.0, mode="tmpfs", need=700 * MIB))),
        (4.0, via_journal(6.5, "bootc-live: layer 1/3: 12 MiB")),
    ]


MESSAGE = "bootc-live: the tmpfs root needs about 700 MiB, 412 MiB available; give it more RAM"


def test_a_failed_boot_gives_the_runtimes_message() -> None:
    s = Status()
    timed = failing_console(s)
    failed = via_journal(7.0, s.line("failed", 7.0, message=MESSAGE))
    panic = stamp(8.0, "Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100")
    timed += [(5.0, via_journal(7.0, MESSAGE)), (5.5, failed), (6.0, panic)]
    run = read(Target("url", Path("/nx"), fstype="tmpfs"), timed, ended="failure", seconds=9.0)
    assert (run.ok, run.state, run.failure) == (False, "failed", MESSAGE)
    assert (run.mode, run.need_mib, run.written_mib) == ("tmpfs", 700, None)
    assert run.console_tail.splitlines()[-1] == panic


def test_a_boot_killed_by_the_kernel_gives_the_kernels_line() -> None:
    oom = stamp(9.5, "Out of memory: Killed process 301 (python3) total-vm:900000kB")
    layer = stamp(9.75, "bootc-live[290]: bootc-live: layer 2/3: 40 MiB")
    timed = [*failing_console(Status()), (5.0, oom), (5.5, layer)]
    run = read(Target("url", Path("/nx"), fstype="tmpfs"), timed, ended="failure", seconds=9.0)
    assert run.failure == "Out of memory: Killed process 301 (python3) total-vm:900000kB"
    assert run.state == "planned"


def test_a_boot_whose_runtime_said_nothing_gives_the_last_line_of_ours() -> None:
    hook = stamp(3.0, "dracut-initqueue[250]: bootc-live: root=bootc-live:ftp://x: no such source")
    cut = via_journal(3.5, 'bootc-live: status {"state":"failed","message":"bootc-live: no')
    timed = [(1.0, stamp(2.0, "Run /init as init process")), (2.0, hook), (3.0, cut)]
    run = read(Target("url", Path("/nx")), timed, ended="failure", seconds=4.0)
    assert (
        run.failure == "dracut-initqueue[250]: bootc-live: root=bootc-live:ftp://x: no such source"
    )
    assert (run.state, run.status) == ("", {})


def test_a_boot_that_timed_out_says_so() -> None:
    run = read(
        Target("url", Path("/nx")), failing_console(Status()), ended="timeout", seconds=600.0
    )
    assert run.failure == "no verdict within 600 s"


def test_stage_ones_failure_names_its_stage() -> None:
    failed = via_journal(12.0, Status().line("failed", 12.0, message=MESSAGE))
    timed = [*kexec_console()[:7], (20.0, failed)]
    run = read(Target("kexec", Path("/nx"), kexec=True), timed, ended="failure", seconds=21.0)
    assert run.failure == f"stage one: {MESSAGE}"
    assert run.kernels == [HOST_KVER]
    assert run.entries is None and run.kexec_kver is None


def test_status_lines_are_found_anywhere_and_whole_only() -> None:
    doc = {"uptime": 1.5, "state": "ready", "root": {"mode": "tmpfs"}}
    line = "bootc-live: status " + json.dumps(doc, separators=(",", ":"))
    assert console.status_of(line) == doc
    assert console.status_of(via_journal(1.5, line)) == doc
    assert console.status_of(stamp(1.5, line) + "  ") == doc
    assert console.status_of(line[:-1]) is None
    assert console.status_of("bootc-live: status [1]") is None
    assert console.status_of("bootc-live: live root ready") is None
    assert console.READY_MARKER in line


def test_a_rows_figures_come_from_its_boots() -> None:
    run = read(Target("zram", Path("/nx"), fstype="ext4"), url_console("zram", ZRAM_ROOT))
    plan = rows.RowPlan(Target("zram", Path("/nx"), fstype="ext4"), 2048, 1, None)
    row = json.loads(json.dumps(rows.row_record(plan, [run], None)))  # as the JSON has it
    figures = rows.row_figures(row, 585 * MIB, 90 * MIB)
    assert (figures["switch_root_s"], figures["switch_root_host_s"]) == (26.5, 29.5)
    assert (figures["peak_mib"], figures["start_mib"], figures["freed_mib"]) == (628, 344, 21)
    assert (figures["need_mib"], figures["available_mib"], figures["estimate_mib"]) == (
        277,
        565,
        619,
    )
    assert (figures["booted"], figures["boots"], figures["fstype"]) == (1, 1, ["ext4"])
    assert figures["zram_algorithm"] == ["zstd"]
    assert figures["zram_ratio"] == 624_215_244 / 217_579_520
    assert (figures["above_start_mib"], figures["ratio"]) == (305, 305 / 562)
    assert "overhead_mib" not in figures  # a zram root: the tmpfs footprint is not its


def test_the_kexec_rows_figures_are_stage_ones_and_stage_twos() -> None:
    run = read(Target("kexec", Path("/nx"), fstype="tmpfs", kexec=True), kexec_console())
    plan = rows.RowPlan(Target("kexec", Path("/nx"), fstype="tmpfs", kexec=True), 2048, 1, None)
    row = json.loads(json.dumps(rows.row_record(plan, [run], None)))
    figures = rows.row_figures(row, None, 120 * MIB)
    assert (figures["stage_one_s"], figures["stage_one_console_s"]) == (20.25, 28.75)
    assert (figures["stage_one_peak_mib"], figures["stage_one_loading_peak_mib"]) == (650, 1180)
    assert (figures["handover_mib"], figures["next_initrd_mib"]) == (180, 288)
    assert (figures["layers_read"], figures["layers"]) == ([3], [4])
    assert figures["kernels"] == [f"{HOST_KVER} → {IMAGE_KVER}"]
    assert figures["switch_root_host_s"] == 90.0
    # Stage two starts with the handover in its initramfs: embedded's figures.
    assert figures["above_imageless_mib"] == 380 + 180
    assert figures["embedded_ratio"] == 560 / (563 + 120)


def test_the_ram_search_halves_in_steps_down_to_the_smallest_that_boots() -> None:
    tried: list[int] = []

    def try_boot(mem: int) -> BootRun:
        tried.append(mem)
        run = BootRun("url", "ready", mem, "marker", 1.0, {})
        run.state = "ready" if mem >= 700 else "failed"
        return run

    search = ramsearch.search_ram(try_boot, {2048: True}, ramsearch.RamSearch(256, 4096, 64, None))
    assert tried == [1088, 640, 832, 704]
    assert (search.found, search.failed, search.capped) == (704, 640, False)


@pytest.mark.parametrize(
    ("script", "usage"),
    [
        ("boot", "usage: bench/boot [-h] [--rows ROWS]"),
        ("unpack", "usage: bench/unpack [-h] [--cache CACHE]"),
        ("userlands", "usage: userlands [-h] [--userlands USERLANDS]"),
        ("fetch", "usage: bench/fetch [-h] [--cache CACHE]"),
        ("initramfs", "usage: bench/initramfs [-h] [--repeat REPEAT]"),
    ],
)
def test_the_entry_scripts_start(script: str, usage: str) -> None:
    done = subprocess.run(
        [REPO / "bench" / script, "--help"], capture_output=True, text=True, check=False
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.startswith(usage)


def test_fetch_compares_connections_on_the_blob_it_checks(tmp_path: Path) -> None:
    """bench/fetch on a small layout of its own: both servers, each count, ratios to one."""
    data = os.urandom(12 << 20)
    blobs = tmp_path / "images" / "single" / "layout" / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    (blobs / hashlib.sha256(data).hexdigest()).write_bytes(data)
    args = ["--cache", tmp_path, "--connections", "1,4", "--rate", "40m", "--repeat", "1"]
    out = tmp_path / "fetch.json"
    done = subprocess.run(
        [REPO / "bench" / "fetch", *args, "--json", out], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads(out.read_text())
    assert (record["blob"], record["bytes"]) == (
        f"sha256:{hashlib.sha256(data).hexdigest()}",
        12 << 20,
    )
    assert {k: set(v) for k, v in record["seconds"].items()} == {
        "unlimited": {"1", "4"},
        "40m/connection": {"1", "4"},
    }
    rows = done.stdout.splitlines()[1:]
    assert [r.split()[0] for r in rows] == ["unlimited", "40m/connection"]
    assert all(" (1.00) " in r for r in rows), done.stdout  # each row against its one connection
    # Each run checked the blob's sha256: a blob that is not what its name says stops the bench.
    # (The last byte changed: a random one was b"x" once in 256 runs, and the bench passed.)
    (blobs / hashlib.sha256(data).hexdigest()).write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    bad = subprocess.run([REPO / "bench" / "fetch", *args], capture_output=True, text=True)
    assert (
        bad.returncode != 0 and "the blob read through 1 connections is not sha256:" in bad.stderr
    )


def row_of(target: Target, timed: list[tuple[float, str]], search: Any = None) -> dict[str, Any]:
    """A row's record and figures as bench/boot makes them, from one timed boot."""
    plan = rows.RowPlan(target, 2048, 1, search)
    row = json.loads(json.dumps(rows.row_record(plan, [read(target, timed)], None)))
    row["artifacts_of"] = "debian-kexec" if target.kexec else "debian"
    row["figures"] = rows.row_figures(row, 585 * MIB, 90 * MIB)
    return row


def test_the_report_prints_the_figures_read(capsys: pytest.CaptureFixture[str]) -> None:
    searched = ramsearch.RamSearch(256, 4096, 64, None, found=448, failed=384)
    by_row = {
        "url": row_of(Target("url", Path("/nx"), fstype="tmpfs"), url_console("tmpfs", {})),
        "zram": row_of(
            Target("zram", Path("/nx"), fstype="ext4"), url_console("zram", ZRAM_ROOT), searched
        ),
        "kexec": row_of(Target("kexec", Path("/nx"), fstype="tmpfs", kexec=True), kexec_console()),
    }
    sizes = {"initrd.img": 58 * MIB, "root.oci": 180 * MIB, "rootfs.img": 180 * MIB}
    report.print_report(
        {
            "rows": by_row,
            "accel": "tcg",
            "cpus": 2,
            "sizes": {"debian": sizes, "debian-kexec": sizes},
            "build_seconds": {},
            "sources": rows.source_comparison(by_row),
            "modes": rows.mode_comparison(by_row),
            "kexec": rows.kexec_comparison(by_row),
        }
    )
    lines = capsys.readouterr().out.splitlines()
    for line in (
        "/init → switch root (SPEC)                       26.5 s         26.5 s         58.8 s",
        "kexec: stage one /init → kernel found                 -              -          8.5 s",
        "smallest RAM that boots                    not searched        448 MiB   not searched"
        "   <= 1280 MiB from a URL; the original ~2048 MiB",
        "peak memory in use (runtime)                    628 MiB        628 MiB        900 MiB"
        "   MemTotal - MemAvailable - per-CPU lists, peak during fetch + unpack",
        "  the mode needs (runtime's planner)            277 MiB        277 MiB        700 MiB"
        "   status 'need': at the peak; it refuses to start below",
        "zram: data stored on the device                       -      595.3 MiB              -"
        "   the root's 'stored' (/sys/block/zram*/mm_stat)",
        "  smallest RAM, zram / unpacked size: 448 / 562 MiB = 0.80   met (at most 0.9: clearly"
        " less RAM than the unpacked file data)",
        f"  kexec stage one ({HOST_KVER} → {IMAGE_KVER}): /init → kexec into 28.8 s (console),"
        " stage one's work 20.2 s (its own figure); 3 of 4 layers read; memory in use before"
        " kexec 922 MiB (next initrd 288 MiB, handover 180 MiB); kexec into → next kernel's"
        " banner 1.0 s (host clock)",
    ):
        assert line in lines


# The original pipeline (bench/original, the original-* rows): its own status lines, through
# the kernel's log (with the kernel's timestamp), one per step.
def original_line(seconds: float, state: str, in_use_mib: int, **fields: Any) -> str:
    doc = {"state": state, "uptime": seconds, "memory_in_use": in_use_mib * MIB, **fields}
    return stamp(seconds, "original-live: status " + json.dumps(doc, separators=(",", ":")))


def original_console(failed: str = "") -> list[tuple[float, str]]:
    """An embedded boot of the original pipeline to its verdict (or to its failure)."""
    head = [
        (1.0, f"Booting from ROM..[    0.000000] Linux version {IMAGE_KVER} (gcc)"),
        (2.0, stamp(0.75, "Trying to unpack rootfs image as initramfs...")),
        (3.0, stamp(2.5, "Freeing initrd memory: 230000K")),
        (4.0, stamp(3.0, "Run /init as init process")),
        (4.5, stamp(3.5, f"systemd[1]: {SYSTEMD}")),
        (5.0, WELCOME),
        (6.0, original_line(5.25, "start", 420, source="path")),
        (6.5, original_line(5.5, "fetching", 421)),
        (7.0, original_line(5.75, "fetched", 421, archive_bytes=180 * MIB + 99)),
        (8.0, "original-live-root[290]: tar: a warning of its own"),
    ]
    if failed:
        return [*head, (20.0, original_line(19.0, "failed", 700, message=failed))]
    return [
        *head,
        (20.0, original_line(19.25, "extracted", 601)),
        (50.0, original_line(49.5, "unpacked", 1190)),
        (51.0, original_line(50.0, "ready", 1188)),
        (52.0, stamp(50.5, "systemd[1]: Switching root.")),
        (53.0, stamp(52.0, f"systemd[1]: {SYSTEMD}")),
        (54.0, WELCOME),
        (80.0, verdict("tmpfs")),
    ]


ORIGINAL = Target("original-embedded", Path("/nx"), fstype="tmpfs", original=True)


def test_an_original_boot_reads_its_own_status_lines_and_steps() -> None:
    run = read(ORIGINAL, original_console())
    assert (run.ok, run.state, run.failure) == (True, "ready", "")
    assert run.events["runtime"] == console.Event(5.5, 6.5)  # its work on the archive starts
    assert run.events["ready"] == console.Event(50.0, 51.0)
    assert run.events["switch_root"] == console.Event(52.0, 53.0)
    phases = {label: f(run) for label, f in PHASES}
    assert phases[SWITCH_ROOT] == 49.0  # /init (3.0) → the image's systemd (52.0), as ours
    assert phases[SWITCH_ROOT_HOST] == 50.0
    assert phases["/init → live root ready"] == 47.0
    assert phases["bootc-live unpack (its own figure)"] is None
    assert phases["original: archive into RAM"] == 0.25
    assert phases["original: tar -x (layout into RAM)"] == 13.5
    assert phases["original: umoci unpack (into tmpfs)"] == 30.25
    assert phases["original: bind mounts"] == 0.5
    assert phases["original: its work, start → ready"] == 44.75
    # Its memory: sampled at its steps (the peak after umoci); the archive's size.
    assert (run.peak_mib, run.start_mib, run.compressed_mib) == (1190, 420, 180)
    assert run.memused_mib == 512.0
    # bootc-live's status lines are not the original's: a boot of ours reads none of them.
    ours = read(Target("embedded", Path("/nx"), fstype="tmpfs"), original_console())
    assert (ours.state, ours.original_steps, ours.peak_mib) == ("", [], None)
    assert "runtime" not in ours.events


def test_an_original_boot_that_failed_gives_its_message() -> None:
    message = "umoci cannot unpack /run/initramfs/original-live/img:debian-live"
    run = read(ORIGINAL, original_console(message), ended="failure", seconds=30.0)
    assert (run.ok, run.state, run.failure) == (False, "failed", message)
    # Without a failed status line: the last line of its side that is not a status line.
    run = read(ORIGINAL, original_console()[:10], ended="failure", seconds=30.0)
    assert run.failure == "original-live-root[290]: tar: a warning of its own"
    assert console.original_status_of(original_line(1.0, "ready", 1)[:-1]) is None


def test_the_original_module_reads_root_as_the_bench_writes_it() -> None:
    """The module's root= grammar (original-live-lib.sh) and the bench's command lines."""
    from benchlib import original

    lib = REPO / "bench" / "original" / "90original-live" / "original-live-lib.sh"
    roots = {
        original.command_line("debian-live").split()[0]: "path",
        f"root={rows.ORIGINAL_ROOT}:http://10.0.2.100/root.oci": "url",
        "root=bootc-live:/root.oci": "",
        "root=original-live:relative": "",
    }
    for arg, kind in roots.items():
        done = subprocess.run(
            ["sh", "-c", '. "$1"; original_live_kind "$2"', "sh", lib, arg.split("=", 1)[1]],
            capture_output=True,
            text=True,
            check=True,
        )
        assert (arg, done.stdout.strip()) == (arg, kind)


def test_the_originals_artifacts_are_ours_with_its_initramfs(tmp_path: Path) -> None:
    from benchlib import original

    ours, out = tmp_path / "ours", tmp_path / "original"
    ours.mkdir()
    out.mkdir()
    for name, data in (("vmlinuz", b"kernel"), ("root.oci", b"A" * 1001), ("rootfs.img", b"")):
        (ours / name).write_bytes(data)
    (ours / "cmdline.txt").write_text("root=bootc-live:/bootc-live/image bootclabel=debian-live\n")
    (out / "initrd.img").write_bytes(b"I" * 10)
    original.assemble(ours, out, embed=True)
    assert (
        out / "cmdline.txt"
    ).read_text() == "root=original-live:/root.oci bootclabel=debian-live\n"
    assert (out / "vmlinuz").read_bytes() == b"kernel"
    listed = subprocess.run(
        ["cpio", "-t", "--quiet"], input=(out / "rootfs.img").read_bytes(), capture_output=True
    )
    assert listed.stdout.decode().split() == ["root.oci"]
    full = (out / "initrd-full.img").read_bytes()
    # 4 to 7 zeros, then 4-byte aligned (cpio.next_archive)
    assert full == b"I" * 10 + bytes(6) + (out / "rootfs.img").read_bytes()


def original_rows(ours_s: float = 26.5) -> dict[str, Any]:
    """embedded and original-embedded, as bench/boot records them."""
    embedded = row_of(Target("embedded", Path("/nx"), fstype="tmpfs"), url_console("tmpfs", {}))
    embedded["figures"]["switch_root_s"] = ours_s
    theirs = row_of(ORIGINAL, original_console())
    theirs["artifacts_of"] = "debian-original"
    return {"embedded": embedded, "original-embedded": theirs}


def test_ours_against_the_original_is_a_ratio_of_this_run() -> None:
    by_row = original_rows()
    pair = rows.original_comparison(by_row)["original-embedded"]
    assert (pair["ours"], pair["switch_root_s"], pair["original_switch_root_s"]) == (
        "embedded",
        26.5,
        49.0,
    )
    assert pair["switch_root_s_ratio"] == 26.5 / 49.0
    assert (pair["peak_mib_ratio"], pair["met"]) == (628 / 1190, False)
    assert rows.original_comparison(original_rows(24.0))["original-embedded"]["met"] is True
    assert by_row["original-embedded"]["figures"]["original_umoci_s"] == 30.25
    assert "above_start_mib" not in by_row["original-embedded"]["figures"]
    assert rows.original_comparison({"url": by_row["embedded"]}) == {}
    # An original row that did not boot gives no ratio (and no fallback either).
    by_row["original-embedded"]["figures"]["switch_root_s"] = None
    pair = rows.original_comparison(by_row)["original-embedded"]
    assert (pair["met"], "switch_root_s_ratio" in pair) == (None, False)
    cells = report.Cells({"rows": by_row, "original": {"original-embedded": pair}})
    assert cells.vs_original("embedded") == "-"


def report_of(by_row: dict[str, Any]) -> None:
    """bench/boot's report of these rows (the original's initramfs: 40 MiB, ours 58 MiB)."""
    sizes = {"initrd.img": 58 * MIB, "root.oci": 180 * MIB, "rootfs.img": 180 * MIB}
    theirs = {**sizes, "initrd.img": 40 * MIB}
    report.print_report(
        {
            "rows": by_row,
            "accel": "tcg",
            "cpus": 2,
            "sizes": {"debian": sizes, "debian-original": theirs},
            "build_seconds": {},
            "sources": rows.source_comparison(by_row),
            "modes": rows.mode_comparison(by_row),
            "kexec": rows.kexec_comparison(by_row),
            "original": rows.original_comparison(by_row),
        }
    )


def test_the_report_prints_ours_against_the_original_of_this_run(
    capsys: pytest.CaptureFixture[str],
) -> None:
    by_row = original_rows()
    by_row["url"] = row_of(Target("url", Path("/nx"), fstype="tmpfs"), url_console("tmpfs", {}))
    report_of(by_row)
    lines = capsys.readouterr().out.splitlines()
    for line in (
        "original: umoci unpack (into tmpfs)                       -             30.2 s"
        "                  -",
        # embedded: against its original row; url (no original-url ran): the fallback, marked.
        "  / the original's, this run                           0.54                  -"
        "              0.50*   ours / its original-* row (same kernel, image, RAM); *: no such "
        "row ran, the fallback: / 53 s, remembered",
        "embedded / original-embedded                  26.5 s / 49.0 s = 0.54"
        "      29.5 s / 50.0 s = 0.59       628 MiB / 1190 MiB = 0.53"
        "        512 MiB / 512 MiB = 1.00",
        "  embedded: /init → switch root 0.54 x the original's   target <= 0.5 (NOT MET); "
        "smallest RAM not searched / not searched; initrd.img 58.0 / 40.0 MiB = 1.45   target "
        "<= 1, same dracut (NOT MET)",
        "  original-embedded: archive into RAM 0.2 s, tar -x 13.5 s, umoci unpack 30.2 s, bind "
        "mounts 0.5 s: its work 44.8 s; archive 180 MiB (kept in RAM, as the original does); its "
        "memory sampled at its steps only",
    ):
        assert line in lines, "\n".join(lines)


def test_without_an_original_row_the_report_says_its_figure_is_the_fallback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = row_of(Target("url", Path("/nx"), fstype="tmpfs"), url_console("tmpfs", {}))
    report_of({"url": url})
    out = capsys.readouterr().out
    assert (
        "  / the original's ~53 s (fallback)                0.50   the fallback (no original-* "
        "row ran): 53 s = its TCG unpacking of the test image alone, remembered from another "
        "run; 0.5 x = 26.5 s"
    ) in out.splitlines()
    assert "original:" not in out and "The original pipeline" not in out


# registry-signed: the signature check's figures, against registry in the same run.
SIGNED_KEYS = [
    "GPG key 0123ABCD (/var/tmp/x/registry-signed/gnupg/bench-signer.gpg)",
    "sigstore key /var/tmp/x/registry-signed/cosign.pub (ecdsa P-256)",
]
ACCEPTED = {
    "checked": True,
    "accepted": True,
    "scope": 'docker "10.0.2.100:5000/bench/debian-signed"',
    "keys": SIGNED_KEYS,
    "seconds": 0.875,
}
SIGNED_TARGET = Target(
    "registry-signed", Path("/nx"), fstype="tmpfs", port=5001, guest_port=5000,
    more_forwards=((8080, 8081),),
)  # fmt: skip


def test_a_signed_boot_reads_the_checks_own_seconds_and_keys() -> None:
    run = read(SIGNED_TARGET, url_console("tmpfs", {"mode": "tmpfs"}, signatures=ACCEPTED))
    assert (run.ok, run.signatures_s, run.signatures_keys) == (True, 0.875, SIGNED_KEYS)
    phases = {label: f(run) for label, f in PHASES}
    assert phases["signature check (its own figure)"] == 0.875
    # Without a policy (or before the check) there is no figure: not a zero.
    for checked in (None, {"checked": False}):
        plain = read(Target("registry", Path("/nx")), url_console("tmpfs", {}, signatures=checked))
        assert (plain.signatures_s, plain.signatures_keys) == (None, [])


def test_a_signed_row_boots_with_the_lookaside_forwarded_too(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen = []

    def boot(config: Any, **how: Any) -> Boot:
        seen.append(config)
        return Boot("", "timeout", 1.0, {})

    monkeypatch.setattr(boots, "boot", boot)
    boots.boot_once(SIGNED_TARGET, 2048, 10.0, tmp_path / "console.log")
    boots.boot_once(Target("embedded", Path("/nx")), 2048, 10.0, tmp_path / "console.log")
    assert [(c.network, c.forwards) for c in seen] == [
        (True, ((5000, 5001), (8080, 8081))),
        (False, ()),
    ]


def signed_rows() -> dict[str, Any]:
    """registry and registry-signed as bench/boot records them: the signed boot 1.25 s slower
    (1.5 s on the host's clock)."""
    plain = row_of(Target("registry", Path("/nx"), fstype="tmpfs"), url_console("tmpfs", {}))
    plain["figures"].update(switch_root_s=25.25, switch_root_host_s=28.0)
    plain["artifacts_of"] = "debian-registry"
    signed = row_of(SIGNED_TARGET, url_console("tmpfs", {}, signatures=ACCEPTED))
    signed["artifacts_of"] = "debian-registry-signed"
    return {"registry": plain, "registry-signed": signed}


SIGNED_SIZES = {
    "debian-registry": {"initrd.img": 58 * MIB, "root.oci": 0, "rootfs.img": 0},
    "debian-registry-signed": {"initrd.img": 58 * MIB + 632_266, "root.oci": 0, "rootfs.img": 0},
}


# lsinitrd's listing (its header, then ls -l lines) of registry's and registry-signed's initramfs.
LSINITRD = """Image: /var/tmp/x/debian-registry-signed/initrd.img: 60M
========================================================================
Version: dracut-059-4

Arguments: --kver '6.1.0-50-amd64'
========================================================================
drwxr-xr-x  12 root     root            0 Dec  2 16:50 .
lrwxrwxrwx   1 root     root            7 Dec  2 16:50 bin -> usr/bin
-rw-r--r--   1 root     root         1200 Dec  2 16:50 etc/containers/policy.json
-rwxr-xr-x   1 root     root       474112 Jan  4  2023 usr/bin/gpgv
-rwxr-xr-x   1 root     root       976136 Feb 11 09:12 usr/bin/openssl
-rw-r--r--   1 root     root          178 Dec  2 16:49 var/tmp/x/cosign.pub
-rw-r--r--   1 root     root          177 Dec  2 16:49 var/tmp/x/gnupg/bench-signer.gpg
-rw-r--r--   1 root     root           12 Dec  2 16:50 etc/my file with spaces
========================================================================
"""
PLAIN_FILES = {
    "usr/bin/gpgv": 474112,
    "usr/bin/openssl": 976136,
    "etc/my file with spaces": 12,
}
INITRD_FILES = signed.initrd_difference(PLAIN_FILES, signed.parse_lsinitrd(LSINITRD))


def test_the_initramfs_files_for_the_check_come_from_lsinitrd() -> None:
    files = signed.parse_lsinitrd(LSINITRD)
    assert files == {
        **PLAIN_FILES,
        "etc/containers/policy.json": 1200,
        "var/tmp/x/cosign.pub": 178,
        "var/tmp/x/gnupg/bench-signer.gpg": 177,
    }
    assert INITRD_FILES == {
        "verifiers": {"usr/bin/gpgv": 474112, "usr/bin/openssl": 976136},
        "verifiers_in_plain": True,
        "only_signed": {
            "etc/containers/policy.json": 1200,
            "var/tmp/x/cosign.pub": 178,
            "var/tmp/x/gnupg/bench-signer.gpg": 177,
        },
        "only_signed_bytes": 1555,
    }
    # Verifiers the plain initramfs lacks are said to be the signed one's only.
    alone = signed.initrd_difference({}, {"usr/bin/gpgv": 9})
    assert (alone["verifiers_in_plain"], alone["only_signed_bytes"]) == (False, 9)


def test_what_the_check_adds_is_a_difference_of_this_run() -> None:
    by_row = signed_rows()
    sig = rows.signature_comparison(by_row, SIGNED_SIZES)
    assert sig["ran"] is True
    assert (sig["signed_switch_root_s"], sig["switch_root_s"]) == (26.5, 25.25)
    assert (sig["switch_root_s_added"], sig["switch_root_host_s_added"]) == (1.25, 1.5)
    assert (sig["signatures_s"], sig["signatures_keys"]) == (0.875, [" + ".join(SIGNED_KEYS)])
    assert (sig["initrd_bytes"], sig["initrd_bytes_added"]) == (58 * MIB, 632_266)
    # registry did not run: the signed row's figures, no difference.
    alone = rows.signature_comparison({"registry-signed": by_row["registry-signed"]}, {})
    assert (alone["ran"], alone["switch_root_s_added"], alone["initrd_bytes_added"]) == (
        False,
        None,
        None,
    )
    assert alone["signatures_s"] == 0.875
    assert rows.signature_comparison({"registry": by_row["registry"]}, SIGNED_SIZES) == {}


def test_the_report_prints_what_the_check_adds(capsys: pytest.CaptureFixture[str]) -> None:
    by_row = signed_rows()
    guest = "docker://10.0.2.100:5000/bench/debian-signed:live"
    report.print_report(
        {
            "rows": by_row,
            "accel": "tcg",
            "cpus": 2,
            "sizes": SIGNED_SIZES,
            "build_seconds": {},
            "registry": {
                "server": "docker-registry",
                "host": "127.0.0.1:5001",
                "guest_ref": "docker://10.0.2.100:5000/bench/debian:live",
                "push_seconds": 3.0,
                "compressed_bytes": 180 * MIB,
            },
            "registry_signed": {
                "guest_ref": guest,
                "sign_seconds": 4.0,
                "gpg_fingerprint": "0123ABCD",
                "lookaside": "http://10.0.2.100:8080 (nginx on 8081)",
                "cosign_public": "/var/tmp/x/registry-signed/cosign.pub",
                "guest_blob_requests": {"responses": 5, "statuses": ["200"], "blobs": 5},
                "lookaside_requests": 1,
            },
            "sources": rows.source_comparison(by_row),
            "modes": rows.mode_comparison(by_row),
            "kexec": rows.kexec_comparison(by_row),
            "signatures": rows.signature_comparison(by_row, SIGNED_SIZES, INITRD_FILES),
        }
    )
    lines = capsys.readouterr().out.splitlines()
    for line in (
        f"{'signature check (its own figure)':<40}" + "-".rjust(17) + "0.9 s".rjust(17),
        "medians                           26.5 s / 25.2 s = +1.2 s      29.5 s / 28.0 s = +1.5 s"
        "              0.88 s   58.60 MiB / 58.00 MiB = +0.60 MiB",
        "  initrd.img (compressed): 61,449,674 / 60,817,408 bytes = +632,266",
        "  verifiers in both builds (the dracut module installs them whenever the userland has "
        "them): usr/bin/gpgv 474,112, usr/bin/openssl 976,136 bytes (uncompressed)",
        "  only in registry-signed's: 1,555 bytes (uncompressed): etc/containers/policy.json 1,"
        "200, var/tmp/x/cosign.pub 178, var/tmp/x/gnupg/bench-signer.gpg 177",
        f"  verified by {' + '.join(SIGNED_KEYS)}",
        f"registry-signed  {guest:<52}" + "not searched".rjust(20) + "26.5 s".rjust(18),
    ):
        assert any(printed.startswith(line) for printed in lines), "\n".join(lines)
    assert any(
        printed.startswith(
            f"registry-signed: the same image pushed again as {guest}, signed in 4 s"
        )
        and printed.endswith(
            "the guest fetched 5 blobs in 5 responses (status 200), 1 signature files from the "
            "lookaside"
        )
        for printed in lines
    ), "\n".join(lines)


def test_the_signed_rows_policy_requires_both_of_the_guest_and_accepts_the_build_source(
    tmp_path: Path,
) -> None:
    layout = tmp_path / "layout"
    layout.mkdir()
    (tmp_path / "link").symlink_to(layout)
    policy = write_policy(
        tmp_path / "policy.json",
        {signed.SIGNED_SCOPE: [gpg_req(tmp_path / "k.gpg"), sigstore_req(tmp_path / "c.pub")]},
    )
    signed.trust_oci_layout(policy, tmp_path / "link")
    parsed = Policy.load(str(policy))
    scope, reqs = parsed.requirements_for("oci", str(layout))
    assert (scope, [r.type for r in reqs]) == (f'oci "{layout}"', ["insecureAcceptAnything"])
    scope, reqs = parsed.requirements_for("docker", signed.SIGNED_GUEST_REF)
    assert scope == 'docker "10.0.2.100:5000/bench/debian-signed"'
    assert [r.type for r in reqs] == ["signedBy", "sigstoreSigned"]
    assert parsed.requirements_for("docker", "10.0.2.100:5000/bench/debian:live")[0] == "default"
    assert [r.type for r in parsed.default] == ["reject"]


# The packed root (issue 18): packed / tmpfs, / zram and / the original's, from one run.
PACKED_SHA = "sha256:" + "ef" * 32
PACKED_ROOT = {
    "mode": "packed",
    "sha256": PACKED_SHA,
    "bytes": 170_131_456,  # 162.25 MiB
    "format": "squashfs",
    "compressor": "xz",
    "image": MANIFEST,
}


def packed_console(status: Status | None = None) -> list[tuple[float, str]]:
    """A packed root from a URL to the verdict: planned, loading, ready (nothing unpacked)."""
    s = status or Status()
    url = "bootc-live:packed:http://10.0.2.100/packed.img"
    return [
        *url_console("packed", PACKED_ROOT)[:7],  # the firmware, the kernel, the initramfs
        (6.0, via_journal(4.0, s.line("resolving", 3.9, source=url))),
        (
            10.0,
            via_journal(
                6.25,
                s.line(
                    "planned",
                    6.2,
                    mode="packed",
                    packed_bytes=170_131_456,
                    format="squashfs",
                    compressor="xz",
                    need=214 * MIB + 1,  # rounded up: 215
                    available=1000 * MIB,
                ),
            ),
        ),
        (11.0, via_journal(6.5, s.line("loading", 6.4))),
        (
            20.0,
            via_journal(
                12.75,
                s.line(
                    "ready",
                    12.7,
                    mode="packed",
                    root=PACKED_ROOT,
                    manifest=MANIFEST,
                    bytes=170_131_456,
                    modules_freed=400,
                    modules_freed_bytes=20 * MIB,
                    tools_freed=["curl"],
                    tools_freed_bytes=7 * MIB,
                    python_freed=300,
                    python_freed_bytes=6 * MIB,
                    seconds=8.875,
                    peak_memory=520 * MIB + 5,
                    memory_before=330 * MIB,
                ),
            ),
        ),
        (21.0, stamp(13.0, "systemd[1]: Switching root.")),
        (22.0, stamp(14.5, f"systemd[1]: {SYSTEMD}")),
        (23.5, WELCOME),
        (40.0, verdict("squashfs")),
    ]


PACKED_TARGET = Target("packed", Path("/nx"), rows.PACKED_URL, 8080, fstype="squashfs", packed=True)


def test_a_packed_boot_reads_the_file_it_mounted_and_unpacks_nothing() -> None:
    run = read(PACKED_TARGET, packed_console())
    assert (run.ok, run.state, run.mode, run.failure) == (True, "ready", "packed", "")
    assert (run.packed_sha256, run.packed_mib, run.packed_format) == (
        PACKED_SHA,
        170_131_456 / MIB,
        "squashfs:xz",
    )
    assert run.packed_s == 8.875
    # "bytes" is the packed root's and "seconds" the whole load's: nothing was unpacked.
    assert (run.written_mib, run.unpack_s, run.entries) == (None, None, None)
    # 33: the modules, the tools and the Python files freed
    assert (run.peak_mib, run.start_mib, run.freed_mib, run.above_start_mib) == (520, 330, 33, 223)
    assert run.need_mib == 215
    phases = {label: f(run) for label, f in PHASES}
    assert (phases[SWITCH_ROOT], phases["/init → live root ready"]) == (12.5, 10.75)
    # Booted, but on another root than the packed one's filesystem: not this row's success.
    other = read(PACKED_TARGET, [*packed_console()[:-1], (40.0, verdict("tmpfs"))])
    assert (other.ok, other.failure.split(":")[0]) == (False, "the root is tmpfs, not squashfs")


def test_a_packed_row_boots_initrd_img_alone_with_the_packed_command_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: list[Any] = []

    def fake_boot(config: Any, **how: Any) -> Boot:
        seen.append(config)
        return boot_of(packed_console())

    monkeypatch.setattr(boots, "boot", fake_boot)
    run = boots.boot_once(PACKED_TARGET, 640, 600, tmp_path / "console.log")
    assert run.ok
    ((config,),) = [seen]
    assert (config.packed, config.embedded, config.mem) == (True, False, 640)
    assert config.append == "root=bootc-live:packed:http://10.0.2.100/packed.img"
    assert config.forwards == ((80, 8080),)


def test_only_the_packed_rows_builds_pack(monkeypatch: pytest.MonkeyPatch) -> None:
    from benchlib import artifacts

    argvs: list[list[str]] = []
    monkeypatch.setattr(artifacts, "run_step", lambda argv, what: (argvs.append(argv) or 2.5, ""))
    assert artifacts.build_artifacts(["bl"], "oci:L:t", Path("/o"), "--host") == 2.5
    artifacts.build_artifacts(["bl"], "oci:L:t", Path("/p"), "--host", pack=True)
    assert argvs == [
        ["bl", "build", "oci:L:t", "-o", "/o", "--host", "--pack", "none"],
        ["bl", "build", "oci:L:t", "-o", "/p", "--host"],
    ]


def plan_reference(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, asked: list[str]
) -> tuple[Any, list[tuple[str, bool]]]:
    """bootbench.reference_plans for these rows, with the builds, the host's unpack and the
    servers faked: the Setup and each build made (its directory, whether it packed)."""
    import argparse
    from contextlib import ExitStack, contextmanager

    from benchlib import bootbench

    built: list[tuple[str, bool]] = []

    def build(bootc_live: Any, source: str, out: Path, *options: str, pack: bool = False) -> float:
        assert (source, options) == ("oci:/ref:latest", ("--host", "--kver", HOST_KVER))
        built.append((out.name, pack))
        out.mkdir()
        if pack:
            for name in ("packed.img", "cmdline-packed.txt", "root.oci", "initrd.img"):
                (out / name).write_bytes(b"x")
            record = {"format": "squashfs", "compressor": "xz", "bytes": 1, "sha256": PACKED_SHA}
            (out / "packed.json").write_text(json.dumps(record))
        return 300.0 if pack else 80.0

    @contextmanager
    def serving(art: Path, workdir: Path) -> Any:
        yield {"reference": 8001, "reference-packed": 8002}[art.name]

    monkeypatch.setattr(bootbench, "build_artifacts", build)
    monkeypatch.setattr(bootbench, "tmpfs_footprint", lambda *a: 900 * MIB)
    monkeypatch.setattr(bootbench, "sizes_of", lambda art: {"art": art.name})
    monkeypatch.setattr(bootbench, "serving", serving)
    monkeypatch.setattr(bootbench, "url_view", lambda art, view: view)
    args = argparse.Namespace(
        rows=asked,
        reference_mem=1280,
        reference_repeat=1,
        reference_ram_min=768,
        reference_packed_ram_min=256,
        reference_ram_max=2048,
        reference_ram_boots=5,
        original_reference_mem=3072,
        ram_step=64,
        no_ram_search=False,
        no_baseline=True,
    )
    report = {"reference": {"kver": HOST_KVER}, "build_seconds": {}, "sizes": {}}
    report.update(tmpfs_bytes={}, packed={})
    b = bootbench.Setup(args, "bl", tmp_path, report, ExitStack())
    ref = {"source": "oci:/ref:latest", "layers": [{"size": 5}], "greeting": "Welcome to Ref!"}
    bootbench.reference_plans(b, ref)
    return b, built


def test_reference_packed_is_planned_from_a_build_that_packs_beside_one_that_does_not(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    b, built = plan_reference(monkeypatch, tmp_path, ["reference-url", "reference-packed"])
    assert built == [("reference-packed", True), ("reference", False)]
    assert b.report["build_seconds"] == {"reference-packed": 300.0, "reference": 80.0}
    assert b.report["packed"]["reference-packed"]["format"] == "squashfs"
    plan = b.plans["reference-packed"]
    assert plan.target == Target(
        "reference-packed",
        tmp_path / "reference-packed-url",
        "root=bootc-live:packed:http://10.0.2.100/packed.img",
        8002,
        "switch-root",
        "Welcome to Ref!",
        packed=True,
    )
    assert (plan.mem, plan.repeat, plan.baseline) == (1280, 1, None)
    assert plan.search is not None
    assert (plan.search.floor, plan.search.ceiling, plan.search.max_boots) == (256, 2048, 5)
    url = b.plans["reference-url"]
    assert (url.target.append, url.target.port, url.target.packed) == (
        "root=bootc-live:http://10.0.2.100/root.oci",
        8001,
        False,
    )
    assert url.search is not None and url.search.floor == 768
    # reference-packed alone: no build with --pack none.
    (tmp_path / "alone").mkdir()
    _, built = plan_reference(monkeypatch, tmp_path / "alone", ["reference-packed"])
    assert built == [("reference-packed", True)]


def packed_rows(
    packed_ram: int = 576, packed_failed: int | None = 512, tmpfs_ram: int = 1216
) -> dict[str, Any]:
    """reference-packed beside reference-url, reference-zram and original-reference-url, as
    bench/boot records them (figures set to fixed values)."""

    def row(name: str, target: Target, timed: Any, ram: int, failed: int | None, **f: Any) -> Any:
        search = ramsearch.RamSearch(256, 2048, 64, 5, found=ram, failed=failed)
        made = row_of(target, timed, search)
        made["artifacts_of"] = name
        made["figures"].update(f)
        return made

    url = Target("reference-url", Path("/nx"), fstype="tmpfs")
    return {
        "reference-url": row(
            "reference", url, url_console("tmpfs", {}), tmpfs_ram, tmpfs_ram - 64,
            switch_root_s=43.5, peak_mib=1122, memused_mib=None,
        ),
        "reference-zram": row(
            "reference", url, url_console("zram", ZRAM_ROOT), 768, 704,
            switch_root_s=49.25, peak_mib=714, memused_mib=None,
        ),
        "reference-packed": row(
            "reference-packed", PACKED_TARGET, packed_console(), packed_ram, packed_failed,
            switch_root_s=12.0, peak_mib=430, memused_mib=None,
        ),
        "original-reference-url": row(
            "reference-original", ORIGINAL, original_console(), 2560, 2496,
            switch_root_s=92.0, peak_mib=2100, memused_mib=None,
        ),
    }  # fmt: skip


def test_packed_against_tmpfs_zram_and_the_original_is_a_ratio_of_this_run() -> None:
    pair = rows.packed_comparison(packed_rows())["reference-packed"]
    assert (pair["min_ram_mib"], pair["switch_root_s"], pair["format"]) == (
        576,
        12.0,
        ["squashfs:xz"],
    )
    assert pair["tmpfs"]["min_ram_mib_ratio"] == 576 / 1216
    assert pair["original"]["switch_root_s_ratio"] == 12.0 / 92.0
    assert pair["zram"]["min_ram_mib_ratio"] == 576 / 768
    assert pair["zram"]["peak_mib_ratio"] == 430 / 714
    assert (pair["ram_met"], pair["switch_root_met"]) == (True, True)
    assert rows.packed_comparison(packed_rows(800, 736))["reference-packed"]["ram_met"] is False
    # The packed search reached its floor: above the target, only an upper bound.
    floor = rows.packed_comparison(packed_rows(800, None))["reference-packed"]
    assert (floor["min_ram_upper_bound"], floor["ram_met"]) == (True, None)
    by_row = packed_rows()
    del by_row["original-reference-url"]
    pair = rows.packed_comparison(by_row)["reference-packed"]
    assert (pair["original"]["ran"], pair["switch_root_met"]) == (False, None)
    assert rows.packed_comparison({"url": by_row["reference-url"]}) == {}


def test_the_report_prints_packed_against_the_others_of_this_run(
    capsys: pytest.CaptureFixture[str],
) -> None:
    by_row = packed_rows()
    record = {
        "bytes": 170_131_456,
        "format": "squashfs",
        "compressor": "xz",
        "tool": "mksquashfs 4.5.1",
        "kernel": HOST_KVER,
        "sha256": PACKED_SHA,
    }
    sizes = {"initrd.img": 35 * MIB, "root.oci": 380 * MIB, "rootfs.img": 0}
    report.print_report(
        {
            "rows": by_row,
            "accel": "tcg",
            "cpus": 2,
            "sizes": {
                "reference": sizes,
                "reference-packed": {**sizes, "packed.img": 170_131_456},
                "reference-original": {**sizes, "initrd.img": 30 * MIB},
            },
            "build_seconds": {"reference": 80.0, "reference-packed": 300.0},
            "packed": {"reference-packed": record},
            "modes": rows.mode_comparison(by_row),
            "original": rows.original_comparison(by_row),
            "packed_rows": rows.packed_comparison(by_row),
        }
    )
    lines = capsys.readouterr().out.splitlines()
    for line in (
        f"reference-packed: built in 300 s with packing, 220 s more than reference's with --pack "
        f"none (80 s): packing adds x3.75; packed.img 162.2 MiB, squashfs:xz by mksquashfs 4.5.1 "
        f"for kernel {HOST_KVER}, {PACKED_SHA}",
        "Packed root (reference-packed, squashfs:xz, 162.2 MiB), this run: packed / the same "
        "image from the same URL",
        "  / reference-url (tmpfs): smallest RAM 576 MiB / 1216 MiB = 0.47; /init → switch root "
        "12.0 s / 43.5 s = 0.28; peak memory 430 MiB / 1122 MiB = 0.38; once booted - / - = -",
        "  / reference-zram (zram): smallest RAM 576 MiB / 768 MiB = 0.75; /init → switch root "
        "12.0 s / 49.2 s = 0.24; peak memory 430 MiB / 714 MiB = 0.60; once booted - / - = -",
        "  / original-reference-url (the original): smallest RAM 576 MiB / 2560 MiB = 0.23; "
        "/init → switch root 12.0 s / 92.0 s = 0.13; peak memory 430 MiB / 2100 MiB = 0.20; "
        "once booted - / - = -",
        "  target: smallest RAM <= 0.6 x reference-url's: 0.47 (met); /init → switch root <= "
        "0.3 x original-reference-url's: 0.13 (met)",
        f"  mounted {PACKED_SHA} in all 1 boots that got there",
        "packed root (packed.img)                                       -                       -"
        "               162.2 MiB                       -   its size: the root stays in RAM as "
        "this file; nothing unpacked",
    ):
        assert line in lines, "\n".join(lines)


@pytest.mark.parametrize(
    ("method", "decoder"), [("bootc-live-initramfs", "igzip"), ("bootc-live-stdlib", "zlib")]
)
def test_bench_unpack_runs_bootc_live_as_an_initramfs_would(
    tmp_path: Path, method: str, decoder: str
) -> None:
    """No accelerator module, and igzip or nothing on PATH: the decoder gzip layers then get."""
    from benchlib.unpacking import initramfs_commands

    probe = "from bootc_live.runtime import decompress as d; print(d.decoder_of('gzip'))"
    argv = initramfs_commands(tmp_path, [sys.executable, "-c", probe])[method]
    said = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    assert said.strip() == decoder


def test_an_original_url_row_boots_the_images_label(tmp_path: Path) -> None:
    """A URL boot's command line is the row's own, not cmdline.txt's: the original's row names
    the image's label itself (the test image's is not umoci's default, `latest`)."""
    import argparse
    from contextlib import ExitStack

    from benchlib import bootbench

    original = tmp_path / "original"
    original.mkdir()
    for name in ("vmlinuz", "initrd.img", "rootfs.img"):
        (original / name).write_bytes(b"x")
    (original / "cmdline.txt").write_text("root=original-live:/root.oci bootclabel=debian-live\n")
    b = bootbench.Setup(argparse.Namespace(), "bl", tmp_path, {}, ExitStack())
    target = bootbench.original_url(b, "original-url", original, 8080)
    assert target.append.split() == [
        "root=original-live:http://10.0.2.100/root.oci",
        "bootclabel=debian-live",
    ]


def test_issue_19_ram_targets_are_the_smallest_ram_against_the_roots_tmpfs_footprint(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """reference-url at most 1.25, reference-zram at most 0.8 x the root's footprint in a tmpfs
    (the host's df, this run): met, not met (a boot at or above the limit failed) or undecided
    (the step straddles it, or only an upper bound is known), and printed so."""

    def targets(url: tuple[int, int | None], zram: tuple[int, int | None]) -> dict[str, Any]:
        by_row = packed_rows()
        for name, (found, failed) in (("reference-url", url), ("reference-zram", zram)):
            by_row[name]["figures"].update(
                tmpfs_mib=853.0, min_ram_mib=found, ram_failed_mib=failed
            )
            by_row[name]["ram_search"].update(found=found, failed=failed)
        return {t["row"]: t for t in rows.mode_comparison(by_row)["ram_targets"]}

    found = targets((1152, 1088), (672, 656))
    assert (found["reference-url"]["ratio"], found["reference-url"]["met"]) == (1152 / 853, False)
    assert (found["reference-zram"]["ratio"], found["reference-zram"]["met"]) == (672 / 853, True)
    found = targets((1088, 1024), (704, 640))
    assert found["reference-url"]["met"] is None and found["reference-zram"]["met"] is None
    found = targets((1024, None), (704, 688))
    assert found["reference-url"]["upper_bound"] and found["reference-url"]["met"] is True
    assert found["reference-zram"]["met"] is False

    report.print_ram_target(targets((1152, 1088), (672, 656))["reference-zram"])
    report.print_ram_target(targets((1152, 1088), (672, 656))["reference-url"])
    assert capsys.readouterr().out.splitlines() == [
        "issue 19 (reference-zram): smallest RAM / the root's tmpfs footprint (host, this run): "
        "672 / 853 MiB = 0.79   met (at most 0.8); 656 MiB did not boot",
        "issue 19 (reference-url): smallest RAM / the root's tmpfs footprint (host, this run): "
        "1152 / 853 MiB = 1.35   NOT MET (at most 1.25); 1088 MiB did not boot",
    ]


def test_initramfs_bench_recompresses_after_the_early_archive(tmp_path: Path) -> None:
    """bench/initramfs's variants: the early (uncompressed) archive kept in front, the rest
    decompressed whole and compressed again by each compressor, initrd-full.img made anew."""
    from importlib.machinery import SourceFileLoader
    from importlib.util import module_from_spec, spec_from_loader

    from bootc_live.build import initramfs_compression
    from bootc_live.runtime.cpio import CpioWriter

    loader = SourceFileLoader("initramfs_bench", str(REPO / "bench" / "initramfs"))
    spec = spec_from_loader(loader.name, loader)
    assert spec is not None
    bench = module_from_spec(spec)
    loader.exec_module(bench)
    for tool in ("pigz", "zstd"):
        need(shutil.which(tool) is not None, f"needs {tool}")

    def archive(name: str, data: bytes) -> bytes:
        out = io.BytesIO()
        writer = CpioWriter(out)
        writer.add_bytes(name, data)
        writer.close()
        return out.getvalue()

    early = archive("kernel/x86/microcode/GenuineIntel.bin", b"u" * 100)
    main, tools = archive("init", os.urandom(5000) * 20), archive("tools.json", b"{}\n")
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    # dracut's initramfs after the early archive, and build's tools record as a member of its own
    (artifacts / "initrd.img").write_bytes(early + gzip.compress(main) + gzip.compress(tools))
    (artifacts / "rootfs.img").write_bytes(archive("image", b"i" * 10))
    (artifacts / "vmlinuz").write_bytes(b"kernel")
    plain = tmp_path / "plain.cpio"
    assert bench.plain_archive(artifacts / "initrd.img", plain) == early
    assert plain.read_bytes() == main + tools
    for kind, command in bench.COMPRESSORS.items():
        out = tmp_path / kind
        figures = bench.compress(command, plain, out)
        assert figures["bytes"] == out.stat().st_size and figures["wall_s"] > 0
        bench.variant(artifacts, early, out, tmp_path / f"v-{kind}")
        made = (tmp_path / f"v-{kind}" / "initrd.img").read_bytes()
        assert made == early + out.read_bytes()
        assert initramfs_compression(tmp_path / f"v-{kind}" / "initrd.img") == kind
        full = (tmp_path / f"v-{kind}" / "initrd-full.img").read_bytes()
        assert full.startswith(made) and full.endswith((artifacts / "rootfs.img").read_bytes())
        assert (tmp_path / f"v-{kind}" / "vmlinuz").read_bytes() == b"kernel"
