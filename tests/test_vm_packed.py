"""The packed root in QEMU (issue 18): packed.img, appended or from a URL, mounted from RAM.

The demo image's artifacts (host kernel and dracut) carry packed.img and cmdline-packed.txt; the
live system reports what it sees, its status says what was mounted, and a tampered byte, a wrong
pin and a kernel that cannot load the filesystem each stop the boot with one line. (The Debian
image's packed root, EROFS, boots appended, from a URL and from the registry in test_vm_debian.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bootc_live.vm import GUEST_SERVER
from servers import nginx
from vmboot import Result, assert_live, assert_stopped, run

pytestmark = pytest.mark.vm


def record(art: Path) -> dict[str, object]:
    return dict(json.loads((art / "packed.json").read_text()))


def packed_variant(good: Path, out: Path, packed: bytes, cmdline: str = "") -> Path:
    """Artifacts with good's kernel and initramfs and another packed.img (and command line)."""
    out.mkdir()
    for name in ("vmlinuz", "initrd.img", "cmdline.txt"):
        (out / name).symlink_to(good / name)
    (out / "cmdline-packed.txt").write_text(cmdline or (good / "cmdline-packed.txt").read_text())
    (out / "packed.img").write_bytes(packed)
    return out


def assert_packed(result: Result, art: Path, **expected: str) -> dict[str, object]:
    """A live packed root: the report, and a status naming the file the build recorded."""
    assert_live(result, **expected)
    status = result.status
    made = record(art)
    assert status["state"] == "ready", status
    assert status["mode"] == "packed", status
    root = status["root"]
    assert (root["sha256"], root["bytes"], root["format"]) == (
        made["sha256"],
        made["bytes"],
        made["format"],
    ), root
    assert status["manifest"] == made["image"], status
    # No layer was fetched or unpacked: the boot never went through those states.
    assert "unpacking" not in [s["state"] for s in result.statuses]
    return dict(root)


def test_packed_root_appended(artifacts: dict[str, Path]) -> None:
    art = artifacts["shell"]
    result = run(art, packed=True)
    root = assert_packed(result, art, root="ro", etc="rw", var="rw", fstype="squashfs")
    print(f"packed, appended: {root}; memused {result.report and result.report['memused']} KiB")


def test_packed_root_from_a_url_read_write_on_zram_uppers(
    artifacts: dict[str, Path], tmp_path: Path
) -> None:
    """packed.img from nginx, `rw` with bootc.zram: the whole root's overlay has its upper on
    ext4 on a zram device, which the status names with its figures."""
    art = artifacts["systemd"]
    url = f"root=bootc-live:packed:http://{GUEST_SERVER}/packed.img"
    append = f"{url} bootc.zram=64M bootc.zram.algorithm=zstd rw"
    with nginx(art, tmp_path / "nginx") as server:
        result = run(art, append, packed=True, network=True, forwards=((80, server.port),))
        requests = server.requests()
    root = assert_packed(result, art, root="rw", etc="rw", var="rw", fstype="overlay")
    # packed.img, and nothing else, came over the network.
    assert requests and all('"GET /packed.img ' in line for line in requests), requests
    assert (
        result.report and "upperdir=/run/bootc-live/live/root/upper" in (result.report["rootopts"])
    ), result.report
    zram = root["zram"]
    assert isinstance(zram, dict) and zram["device"].startswith("/dev/zram"), root
    assert zram["algorithm"] == "zstd" and zram["memory"] >= 0, root
    print(f"packed from a URL, rw on zram uppers: {root}; memused {result.report['memused']} KiB")


def test_tampered_packed_root_stops(artifacts: dict[str, Path], tmp_path: Path) -> None:
    good = artifacts["shell"]
    data = bytearray((good / "packed.img").read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the filesystem image, past the cpio header
    art = packed_variant(good, tmp_path / "bad", bytes(data))
    pinned = record(good)["sha256"]
    result = run(art, packed=True)
    assert_stopped(result, f"the command line pins {pinned}")


def test_wrong_pin_stops(artifacts: dict[str, Path]) -> None:
    wrong = "sha256:" + "0" * 64
    result = run(artifacts["systemd"], f"bootc.packed.sha256={wrong}", packed=True)
    assert_stopped(result, f"the command line pins {wrong}")


def test_kernel_without_the_filesystem_stops(artifacts: dict[str, Path]) -> None:
    # The kernel refuses to load squashfs: the boot names the filesystem it cannot mount.
    result = run(artifacts["shell"], "module_blacklist=squashfs", packed=True)
    assert_stopped(result, "squashfs")
