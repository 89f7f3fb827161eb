"""Root modes in QEMU (SPEC §6): zram, EROFS plain and compressed, and the RAM planner (§5).

The busybox demo image boots in each mode; its report (from inside the live system) gives the
root's filesystem type, which of /, /etc and /var are writable, and the memory in use. EROFS
boots must report the sha256 that `bootc-live erofs` computes on the host for the same image.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from unpackers import bootc_live
from vmboot import Result, assert_live, assert_stopped, build_artifacts, run

pytestmark = pytest.mark.vm

PLANNED = re.compile(
    r"not enough memory: image needs (\d+) MiB unpacked \(recorded by bootc-live build\), "
    r"(\d+) MiB available; add RAM or use (bootc\.zram=\d+M bootc\.zram\.algorithm=zstd): it "
    r"needs about (\d+) MiB"
)
MIB = 1 << 20


def found(result: Result, pattern: re.Pattern[str]) -> re.Match[str] | None:
    for message in result.messages:
        m = pattern.search(message)
        if m:
            return m
    return None


def ready(result: Result, pattern: re.Pattern[str]) -> re.Match[str]:
    m = found(result, pattern)
    if m is None:
        raise AssertionError("\n".join(result.messages) or result.boot.output[-3000:])
    return m


def root_made(result: Result) -> dict[str, Any]:
    """The root the boot reports in its last status, which must be `ready`."""
    status = result.status
    assert status["state"] == "ready", status
    return dict(status["root"])


def host_erofs(images: Path, compress: str | None = None) -> str:
    args = ["erofs", f"oci:{images}/layout:demo", "-q"]
    # Under a umask that would make its root 0700: the image is still the boot's.
    made = bootc_live(*args, *(["--compress", compress] if compress else []), umask=0o077)
    assert made.returncode == 0, made.stderr
    return made.stdout.split()[0]


@pytest.mark.parametrize("flavour", ["systemd", "shell"])
def test_zram_root(artifacts: dict[str, Path], flavour: str) -> None:
    result = run(artifacts[flavour], "bootc.zram=64M bootc.zram.algorithm=zstd")
    report = assert_live(result, root="ro", etc="rw", var="rw", fstype="ext4", whiteout="yes")
    assert "discard" in report["rootopts"]  # deleted files give their RAM back
    root = root_made(result)
    assert (root["mode"], root["algorithm"]) == ("zram", "zstd")
    assert root["device"].startswith("/dev/zram")
    assert 1 * MIB < root["stored"] < 20 * MIB and root["memory"] < root["stored"]
    # Those of the other compressors, erofs, loop, overlay: before the unpack, with zram and
    # ext4 loaded.
    assert result.status["modules_freed"] >= 4
    print(f"{flavour} zram: {root}; memused {report['memused']} KiB")


def test_zram_root_read_write(artifacts: dict[str, Path]) -> None:
    result = run(artifacts["shell"], "bootc.zram=15% rw bootc.live.etc.rw=0 bootc.keep-modules")
    assert_live(result, root="rw", etc="ro", var="rw", fstype="ext4")
    assert root_made(result)["algorithm"] == "lzo-rle"  # the kernel's default
    assert result.status["modules_freed"] == 0


def test_erofs_roots_are_reproducible(artifacts: dict[str, Path], images: Path) -> None:
    """Two boots (one per initramfs flavour) report the EROFS sha256 the host computes."""
    expected = host_erofs(images)
    for flavour in ("systemd", "shell"):
        result = run(artifacts[flavour], "bootc.live.erofs")
        report = assert_live(result, root="ro", etc="rw", var="rw", fstype="erofs", whiteout="yes")
        assert "overlay" not in report["rootopts"] and "upperdir=" in report["etcopts"]
        root = root_made(result)
        assert (root["sha256"], root["compress"]) == (expected, "none"), (flavour, root)
        # loop, erofs and overlay were loaded before the others were freed: the mounts work
        assert result.status["modules_freed"] > 0
        print(f"{flavour} EROFS: {root}; memused {report['memused']} KiB")


def test_compressed_erofs_root(artifacts: dict[str, Path], images: Path) -> None:
    # rw has no effect with EROFS; /var kept read-only as asked.
    result = run(
        artifacts["systemd"],
        "bootc.live.erofs=1 bootc.live.erofs.compress=lz4hc rw bootc.live.var.rw=0",
    )
    assert_live(result, root="ro", etc="rw", var="ro", fstype="erofs")
    root = root_made(result)
    assert (root["sha256"], root["compress"]) == (host_erofs(images, "lz4hc"), "lz4hc")
    assert root["sha256"] != host_erofs(images)


@pytest.mark.parametrize(
    ("append", "message"),
    [
        (
            "bootc.live.erofs bootc.live.erofs.compress=lzma",
            "compress=lzma: this mkfs.erofs offers",
        ),
        ("bootc.zram=64M bootc.zram.algorithm=nope", "bootc.zram.algorithm=nope: this kernel's "),
        ("bootc.zram=16M", "bootc.zram=16M is too small for this image: about "),
        ("bootc.zram=64M bootc.live.erofs", "bootc.zram and bootc.live.erofs were both given"),
    ],
)
def test_mode_errors_stop_the_boot(artifacts: dict[str, Path], append: str, message: str) -> None:
    assert_stopped(run(artifacts["shell"], append), message)


def test_planner_stops_early_and_names_a_mode_that_fits(images: Path, tmp_path: Path) -> None:
    """The big image (400 MiB of zeros unpacked): the planned message just below what the
    tmpfs root needs, a boot just above it, and the zram device it suggests boots below it."""
    big = build_artifacts(f"oci:{images}/big:big", tmp_path / "big", "shell")
    low = 320
    small = run(big, mem=low)
    assert_stopped(small, "not enough memory: image needs ")
    planned = ready(small, PLANNED)
    needs, has = int(planned.group(1)), int(planned.group(2))
    assert needs > 400 > has
    # The suggestion holds: the same machine boots the image on the zram device it names.
    zram = run(big, planned.group(3), mem=low)
    report = assert_live(zram, root="ro", fstype="ext4")
    assert int(report["memtotal"]) < 400 * 1024  # less RAM in all than the image unpacked
    # Where the tmpfs root starts to fit: MemAvailable varies by tens of MiB from boot to boot
    # (what udev and dracut hold at that moment), so the boundary is approached from the
    # planner's own figures: each refusal names its shortfall, each start what it had to spare.
    go: dict[str, Any] | None = None
    stop: re.Match[str] | None = None
    mem = low + (needs - has) + 24
    for _ in range(6):
        result = run(big, mem=mem)
        refused = found(result, PLANNED)
        if refused:
            assert_stopped(result, "not enough memory: image needs ")
            stop = refused
            mem += needs - int(refused.group(2)) + 24
        else:
            assert_live(result, root="ro", fstype="tmpfs")
            go = result.status
            mem -= go["available"] // MIB - needs + 24
        if go and stop:
            break
    assert go is not None and stop is not None, "no boot on both sides of the boundary"
    # Just above: the planner lets it go, with little to spare, and the image boots.
    assert -(-go["need"] // MIB) == needs and 0 <= go["available"] // MIB - needs <= 240, go
    # Just below: it stops early, as planned, short by little.
    assert int(stop.group(1)) == needs and 0 < needs - int(stop.group(2)) <= 240, stop.group(0)
