"""Booting the Debian test images (tests/debian_image.py) in QEMU: the verdict they print."""

from __future__ import annotations

import os
import subprocess
import sys
import zlib
from pathlib import Path

import debian_image
from bootc_live.vm import GUEST_SERVER, Boot, VmConfig, boot
from newc import read_archive
from servers import nginx
from unpackers import REPO, bootc_live, need, need_root_and

MEM = 2048  # MiB
BOOT_TIMEOUT = 600  # seconds, under TCG (about 1 minute here)


def tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.replace("\r", "").splitlines()[-lines:])


def cpio_names(data: bytes) -> tuple[list[str], bytes]:
    """Member names of the newc archive at the start of data, and what follows it."""
    members, end = read_archive(data)
    return [m.name for m in members], data[end:]


def initramfs_names(path: Path) -> list[str]:
    """Every member of an initramfs: cpio archives back to back, plain or gzip-compressed."""
    names: list[str] = []
    data = path.read_bytes()
    while data.strip(b"\0"):
        data = data.lstrip(b"\0")
        if data[:2] == b"\x1f\x8b":
            gz = zlib.decompressobj(16 + zlib.MAX_WBITS)
            inner = gz.decompress(data)
            while inner.strip(b"\0"):
                found, inner = cpio_names(inner.lstrip(b"\0"))
                names += found
            data = gz.unused_data
        else:
            found, data = cpio_names(data)
            names += found
    return names


# SPEC §9's reference image: bench/unpack's cache (its one-layer image), and its name in PREBUILD.
REFERENCE = "reference"
REFERENCE_CACHE = Path(os.environ.get("BOOTC_LIVE_BENCH_CACHE", "/var/cache/bootc-live-bench"))


def reference_build_argv() -> list[str]:
    """The command that builds (or finds cached) the reference image in REFERENCE_CACHE."""
    unpack = REPO / "bench" / "unpack"
    return [
        sys.executable,
        os.fspath(unpack),
        "--build-only",
        "--images",
        "single",
        "--cache",
        os.fspath(REFERENCE_CACHE),
    ]


def ensure(recipe: debian_image.Recipe = debian_image.BOOKWORM) -> debian_image.DebianImage:
    """The image of `recipe` (cached), or the test skipped where it cannot be built."""
    need_root_and(*debian_image.TOOLS, "chroot", "qemu-system-x86_64")
    need(os.path.exists("/usr/share/keyrings/debian-archive-keyring.gpg"), "needs Debian's keyring")
    return debian_image.ensure_image(recipe=recipe)


def built(
    image: debian_image.DebianImage, work: Path, pack: str = "none", *options: str
) -> tuple[Path, str]:
    """`bootc-live build` of the image in its own userland: the artifacts and what it said
    (`pack`: build's --pack; none by default, the packed root costs minutes to make; `options`:
    more of build's options)."""
    print(
        f"image {image.manifest_digest}: kernel {image.kver}, {image.entries} entries, "
        f"{image.unpacked_bytes / 1e6:.0f} MB unpacked, {image.compressed_bytes / 1e6:.0f} MB "
        f"in {len(image.layers)} gzip layers"
    )
    out = work / "artifacts"
    # TMPDIR set on purpose: the host's environment must not leak into the image's chroot.
    # -o relative, as a user types it (the initramfs's self-check runs in another directory).
    made: subprocess.CompletedProcess[str] = bootc_live(
        "build", image.source, "-o", out.name, "--pack", pack, *options, tmpdir=work, cwd=work
    )
    assert made.returncode == 0, f"bootc-live build failed:\n{tail(made.stderr)}"
    return out, made.stderr


def url_boot(
    artifacts: Path,
    tmp_path: Path,
    console: Path,
    *,
    mem: int,
    embedded: bool = True,
    extra: str = "",
    marker: str = debian_image.MARKER,
    packed: bool = False,
    rate: str = "",
) -> tuple[Boot, list[str]]:
    """Boot with root.oci (or `packed`, packed.img with its pin) of `artifacts` served by nginx
    over guestfwd (each connection held to `rate`, if given); nginx's access log."""
    root = (
        f"packed:http://{GUEST_SERVER}/packed.img" if packed else f"http://{GUEST_SERVER}/root.oci"
    )
    with nginx(artifacts, tmp_path / "nginx", rate=rate) as server:
        result = watch(
            VmConfig(
                artifacts,
                mem=mem,
                embedded=embedded,
                packed=packed,
                append=f"root=bootc-live:{root} {extra}".strip(),
                network=True,
                forwards=((80, server.port),),
            ),
            console,
            marker,
        )
        return result, server.requests()


def watch(config: VmConfig, console: Path, marker: str = debian_image.MARKER) -> Boot:
    """Boot `config` until the image prints `marker` (its verdict), the console kept in
    `console`."""
    return boot(config, timeout=BOOT_TIMEOUT, markers=(marker,), echo=None, log=console)


def verdict(result: Boot, console: Path) -> dict[str, str]:
    assert debian_image.MARKER in result.markers, (
        f"no verdict: the boot ended by {result.ended} after {result.seconds:.0f} s; "
        f"console log {console}:\n{tail(result.output)}"
    )
    seen = dict(
        item.split("=", 1) for item in result.markers[debian_image.MARKER].split() if "=" in item
    )
    seen.pop("memtotal", None)
    seen.pop("memused", None)
    return seen


def expected(image: debian_image.DebianImage, fstype: str) -> dict[str, str]:
    """The verdict of a healthy live boot of `image` on a root of `fstype`."""
    return {
        "root": "ro",
        "etc": "rw",
        "var": "rw",
        "fstype": fstype,
        "kernel": image.kver,  # the image's kernel, not the host's
        "target": "multi-user",
        "pid1": "systemd",
        "hostname": debian_image.HOSTNAME,  # /etc/hostname from the last layer
        "failed": "none",
    }
