"""Booting the demo image in QEMU from tests: fixtures' helpers and verdict assertions.

Each boot prints one verdict line (BOOTC-LIVE-REPORT …) from inside the live system, or ends
without it; the host asserts on that line and on bootc-live's one-line failure messages.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable

from bootc_live.build import BuildConfig, build, concatenate
from bootc_live.demo import MARKER, demo_layers, host_kernel, parse_report
from bootc_live.images import RegistryOptions, SourceRef
from bootc_live.layout import LayerTar, TreeEntry, write_layout
from bootc_live.runtime.status import STATUS_LINE, documents
from bootc_live.vm import Boot, VmConfig, boot
from unpackers import need

TIMEOUT = 300


@dataclass
class Result:
    boot: Boot
    report: dict[str, str] | None

    @property
    def messages(self) -> list[str]:
        """bootc-live's own console lines for people (the prefix of journal lines stripped)."""
        return messages(self.boot.output)

    @property
    def statuses(self) -> list[dict[str, Any]]:
        """bootc-live's status lines (README "Status"), in order: one per state change."""
        return statuses(self.boot.output)

    @property
    def status(self) -> dict[str, Any]:
        """The last status the boot printed: status.json as it was at the end."""
        found = self.statuses
        assert found, "no status line:\n" + self.boot.output[-3000:]
        return found[-1]


def messages(output: str) -> list[str]:
    lines = output.replace("\r", "").splitlines()
    return [
        ln[ln.index("bootc-live: ") :]
        for ln in lines
        if "bootc-live: " in ln and STATUS_LINE not in ln
    ]


def ready(output: str) -> dict[str, Any]:
    """The status of a boot that made its live root: its last status line, `ready`."""
    found = statuses(output)
    assert found and found[-1]["state"] == "ready", (found[-1:], output[-3000:])
    return found[-1]


def statuses(output: str) -> list[dict[str, Any]]:
    """status.json as it was at each status line (a kexec'd stage two starts afresh)."""
    return documents(output.replace("\r", "").splitlines())


def need_vm_tools() -> None:
    need(os.geteuid() == 0, "building an initramfs needs root")
    for tool in ("qemu-system-x86_64", "dracut", "busybox"):
        need(shutil.which(tool) is not None, f"needs {tool}")
    need(any(Path("/boot").glob("vmlinuz-*")), "needs a kernel in /boot (linux-image-amd64)")


def write_demo_images(base: Path) -> Path:
    """The demo image (layout, tag demo) and a big-when-unpacked one (big, tag big)."""
    write_layout(base / "layout", demo_layers(), "demo")
    big = LayerTar([TreeEntry("big.img", data=bytes(400 << 20))])  # 400 MiB, compresses to ~0.4
    write_layout(base / "big", [*demo_layers(), big.tar()], "big")
    return base


def build_artifacts(
    source: str,
    out: Path,
    flavour: str,
    ca: Path | None = None,
    auth_file: Path | None = None,
    auth_registries: tuple[str, ...] = (),
) -> Path:
    """Artifacts with the host's kernel and dracut (the demo image carries no kernel)."""
    return build(
        BuildConfig(
            # For a docker:// source the host pulls with the same CA and credentials.
            SourceRef.parse(
                source,
                RegistryOptions(
                    auth_file=str(auth_file) if auth_file else None, ca=str(ca) if ca else None
                ),
            ),
            out,
            host=True,
            kver=host_kernel(),
            flavour=flavour,
            ca=ca,
            auth_file=auth_file,
            auth_registries=auth_registries,
        )
    )


def variant(
    good: Path, out: Path, write_rootfs: Callable[[BinaryIO], object], cmdline: str = ""
) -> Path:
    """Artifacts at `out` with the kernel and initramfs of `good`, another rootfs.img (written
    by `write_rootfs`) and, if given, another command line (else good's, without the pin of
    good's image: this is another)."""
    out.mkdir()
    for name in ("vmlinuz", "initrd.img"):
        (out / name).symlink_to(good / name)
    if not cmdline:
        kept = (good / "cmdline.txt").read_text().split()
        cmdline = " ".join(
            a for a in kept if a.split("=", 1)[0] not in ("bootc.digest", "bootc.identity")
        )
    (out / "cmdline.txt").write_text(cmdline + "\n")
    with open(out / "rootfs.img", "wb") as rootfs:
        write_rootfs(rootfs)
    concatenate(out / "initrd-full.img", good / "initrd.img", out / "rootfs.img")
    return out


def run(
    artifacts: Path,
    append: str = "",
    *,
    mem: int = 512,
    pxe: bool = False,
    packed: bool = False,
    log: Path | None = None,
    **network: Any,
) -> Result:
    """Boot under TCG (deterministic) and collect the verdict, if any."""
    result = boot(
        VmConfig(artifacts, append=append, mem=mem, pxe=pxe, packed=packed, accel="tcg", **network),
        timeout=TIMEOUT,
        markers=(MARKER,),
        echo=None,
        log=log,
    )
    report = parse_report(result.markers[MARKER]) if MARKER in result.markers else None
    return Result(result, report)


def assert_live(result: Result, **expected: str) -> dict[str, str]:
    assert result.report is not None, "\n".join(result.boot.output.splitlines()[-40:])
    for key, value in expected.items():
        assert result.report.get(key) == value, (key, result.report)
    return result.report


def assert_stopped(result: Result, message: str) -> None:
    """The boot ended in dracut's emergency path with our one-line message, never booted."""
    assert result.report is None, "the image booted although it must not"
    assert result.boot.ended in ("failure", "exit"), result.boot.ended
    ours = [m for m in result.messages if message in m]
    assert ours, "\n".join(result.messages) or result.boot.output[-3000:]
